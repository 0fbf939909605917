"""TRADES: the adversary stays in budget and raises the KL term; trades_kl is KL(clean || adv)."""
import pytest
import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401
from robust_zoo.attacks import trades_adversary, trades_kl


@pytest.fixture(scope='module')
def model_and_batch():
    torch.manual_seed(0)
    model = timm.create_model('robust_zoo/mlp3_silu_at').eval()  # no BatchNorm: useful gradients untrained
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(8, 1, 28, 28, generator=g)


@pytest.mark.parametrize('norm,eps', [('Linf', 0.1), ('L2', 1.0)])
def test_trades_adversary_stays_in_budget_and_image_range(model_and_batch, norm, eps):
    model, x = model_and_batch
    x_adv = trades_adversary(model, x, eps=eps, steps=3, norm=norm)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_trades_adversary_raises_the_kl(model_and_batch):
    model, x = model_and_batch
    torch.manual_seed(0)
    x_adv = trades_adversary(model, x, eps=0.1, steps=10)
    with torch.no_grad():
        clean = model(x)
        kl_adv = trades_kl(model(x_adv), clean)
        kl_start = trades_kl(model((x + 0.001 * torch.randn_like(x)).clamp(0, 1)), clean)  # the adversary's start
        # random corners of the same Linf ball: sign steps alone, without the gradient, do not get there
        kl_random = max(trades_kl(model((x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)), clean)
                        for _ in range(3))
    assert kl_adv > 1e-3 and kl_adv > 1e4 * kl_start.abs()
    assert kl_adv > 10 * kl_random


def test_trades_adversary_takes_no_parameter_gradients(model_and_batch):
    model, x = model_and_batch
    trades_adversary(model, x, eps=0.1, steps=1)
    assert all(p.grad is None for p in model.parameters())


def test_trades_adversary_rejects_unknown_norm(model_and_batch):
    model, x = model_and_batch
    with pytest.raises(ValueError, match='norm'):
        trades_adversary(model, x, eps=0.1, norm='L1')


def test_trades_kl_is_zero_for_identical_logits():
    logits = torch.randn(16, 10) * 5
    assert trades_kl(logits, logits.clone()).abs() < 1e-6


def test_trades_kl_is_kl_of_clean_to_adv_and_non_negative():
    g = torch.Generator().manual_seed(0)
    adv, clean = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    p, log_p, log_q = F.softmax(clean, 1), F.log_softmax(clean, 1), F.log_softmax(adv, 1)
    expected = (p * (log_p - log_q)).sum(1).mean()
    torch.testing.assert_close(trades_kl(adv, clean), expected)
    assert trades_kl(adv, clean) > 0
    assert not torch.allclose(trades_kl(adv, clean), trades_kl(clean, adv))  # direction matters
    for _ in range(5):
        a, c = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
        assert trades_kl(a, c) >= 0


def test_trades_kl_differentiates_through_both_logits():
    # the official TRADES loss does not detach the clean prediction inside the KL term
    adv, clean = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10, requires_grad=True)
    trades_kl(adv, clean).backward()
    assert adv.grad.abs().sum() > 0 and clean.grad.abs().sum() > 0


def test_trades_kl_computes_in_float32():
    adv, clean = torch.randn(4, 10).bfloat16(), torch.randn(4, 10).bfloat16()
    assert trades_kl(adv, clean).dtype == torch.float32
