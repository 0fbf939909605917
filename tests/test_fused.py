"""Fused (compiled) activation kernels compute the same values and gradients as the eager ones."""
import pytest
import torch

from robust_zoo.layers import PSSiLU, Sparta, fused_activations_enabled, set_fused_activations


@pytest.fixture
def fused():
    set_fused_activations(True)
    yield
    set_fused_activations(False)


def _values_and_grads(act, x):
    x = x.clone().requires_grad_()
    y = act(x)
    y.backward(torch.ones_like(y))
    return [y.detach(), x.grad, *[p.grad.clone() for p in act.parameters()]]


def test_off_by_default():
    assert not fused_activations_enabled()


@pytest.mark.parametrize('make', [lambda: PSSiLU(alpha_init=1.3, beta_init=0.2), lambda: Sparta(beta_init=1.5)],
                         ids=['pssilu', 'sparta'])
def test_fused_matches_eager(fused, make, monkeypatch):
    from robust_zoo.layers import fused as fused_module
    monkeypatch.setattr(fused_module, '_compiled', {})  # the kernels this test compiles, and no others
    torch.manual_seed(0)
    act = make()
    if isinstance(act, Sparta):
        torch.nn.init.normal_(act.attn.weight)
    x = torch.randn(4, 8, 6, 6)
    set_fused_activations(False)
    eager = _values_and_grads(act, x)
    assert fused_module._compiled == {}  # the eager pass compiled nothing
    act.zero_grad()
    set_fused_activations(True)
    fused_out = _values_and_grads(act, x)
    assert fused_module._compiled  # the fused pass ran a compiled kernel
    for e, f in zip(eager, fused_out):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5)
