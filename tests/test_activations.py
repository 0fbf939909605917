"""robust_zoo's activations: formulas, gradients, smoothness, Sparta's attention, timm registration, errors."""
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import activations as timm_act
from torch import nn
from torch.autograd import gradcheck

import robust_zoo
from robust_zoo.layers import (
    ACTIVATIONS, ROBUST_ACTIVATIONS, CappedReLU, ParametricSoftplus, PSoftplus, PSSiLU, ReLUSmoothGrad,
    SmoothReLU, Sparta, create_act_layer,
)

BASELINES = {'relu': nn.ReLU, 'silu': nn.SiLU, 'gelu': timm_act.GELU, 'elu': nn.ELU}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _sparta_with_attention(kernel_size: int = 3, beta: float = 1.0) -> Sparta:
    """A Sparta whose attention conv is non-zero (at init it is zero, and Sparta is plain SiLU)."""
    act = Sparta(kernel_size=kernel_size, beta_init=beta)
    with torch.no_grad():
        act.attn.weight.normal_()
        act.attn.bias.normal_()
    return act


def _act(name: str) -> nn.Module:
    """A float64 instance of `name`, parameters away from their initial special values.

    Sparta gets non-zero attention so its attention path is exercised; PSSiLU's beta moves from 1e-8 so
    finite differences do not straddle the kink of |beta| at 0.
    """
    if name == 'sparta':
        act = _sparta_with_attention()
    elif name == 'pssilu':
        act = PSSiLU(alpha_init=1.3, beta_init=0.2)
    else:
        act = create_act_layer(name)
    return act.double()


# --- formulas ---------------------------------------------------------------------------------------------

FORMULAS = [
    # name, constructor kwargs, reference formula
    ('softplus', {}, lambda x: torch.log(1 + torch.exp(10 * x)) / 10),
    ('softplus', {'alpha': 4.0}, lambda x: torch.log(1 + torch.exp(4 * x)) / 4),
    ('smoothrelu', {}, lambda x: torch.relu(x - torch.log(400 * x.abs() + 1) / 400)),
    # b = beta_raw ** 2, so a negative beta_raw still gives a positive b
    ('smoothrelu', {'beta_raw_init': -3.0}, lambda x: torch.relu(x - torch.log(9 * x.abs() + 1) / 9)),
    ('pssilu', {}, lambda x: x * (torch.sigmoid(x) - 1e-8) / (1 - 1e-8)),
    # |a| and |b| are used
    ('pssilu', {'alpha_init': -1.5, 'beta_init': -0.25}, lambda x: x * (torch.sigmoid(1.5 * x) - 0.25) / 0.75),
    ('psoftplus', {}, lambda x: torch.log(1 + torch.exp(x))),
    ('psoftplus', {'alpha_init': 2.5}, lambda x: torch.log(1 + torch.exp(2.5 * x)) / 2.5),
    ('capped_relu', {}, lambda x: torch.where(x < 0, 0.0, torch.where(x > 1, 1.0, x))),
    ('capped_relu', {'beta': 0.5}, lambda x: torch.where(x < 0, 0.0, torch.where(x > 0.5, 0.5, x))),
    ('relu_smoothgrad', {}, lambda x: torch.where(x > 0, x, 0.0)),
]


@pytest.mark.parametrize('name, kwargs, formula', FORMULAS,
                         ids=[f'{n}-{k or "default"}' for n, k, _ in FORMULAS])
def test_activation_matches_its_formula(name, kwargs, formula):
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64) * 3
    act = create_act_layer(name, **kwargs).double()
    torch.testing.assert_close(act(x), formula(x))


def test_sparta_matches_its_formula():
    # x * sigmoid(beta * x + conv_kxk(mean_c(x))), same (zero) padding
    act = _sparta_with_attention(kernel_size=3, beta=1.7).double()
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    attention = F.conv2d(x.mean(dim=1, keepdim=True), act.attn.weight, act.attn.bias, padding=1)
    torch.testing.assert_close(act(x), x * torch.sigmoid(1.7 * x + attention))


@pytest.mark.parametrize('name, learnable', [
    ('softplus', set()),
    ('smoothrelu', {'beta_raw'}),
    ('pssilu', {'alpha', 'beta'}),
    ('psoftplus', {'alpha'}),
    ('sparta', {'beta', 'attn.weight', 'attn.bias'}),
    ('capped_relu', set()),
    ('relu_smoothgrad', set()),
])
def test_learnable_parameters(name, learnable):
    act = create_act_layer(name)
    assert {n for n, p in act.named_parameters() if p.requires_grad} == learnable


@pytest.mark.parametrize('name', list(ROBUST_ACTIVATIONS))
def test_inplace_is_accepted_and_ignored(name):
    x = torch.randn(2, 3, 4, 4)
    x_before = x.clone()
    out = timm.layers.get_act_layer(name)(inplace=True)(x)
    assert torch.equal(x, x_before)
    assert out.shape == x.shape


# --- gradients --------------------------------------------------------------------------------------------

def _gradcheck_with_params(act: nn.Module, x: torch.Tensor) -> bool:
    """gradcheck with respect to the input and every learnable parameter of `act`."""
    names = [n for n, _ in act.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in act.named_parameters()]

    def fn(inp, *ps):
        return torch.func.functional_call(act, dict(zip(names, ps)), (inp,))

    return gradcheck(fn, (x, *params))


@pytest.mark.parametrize('name', ['softplus', 'smoothrelu', 'pssilu', 'psoftplus', 'sparta'])
def test_gradcheck(name):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_()  # keep |x| >= 0.1, away from smoothrelu's |x|
    assert _gradcheck_with_params(_act(name), x)


def test_gradcheck_capped_relu_away_from_kinks():
    mags = torch.rand(20, dtype=torch.float64) * 0.8 + 0.1  # in [0.1, 0.9]
    x = torch.cat([-mags, mags, 1 + mags]).requires_grad_()  # below 0, between 0 and beta=1, above beta
    assert gradcheck(CappedReLU(beta=1.0).double(), (x,))


def _derivative_at_zero_from_both_sides(act: nn.Module, h: float = 1e-6):
    x = torch.tensor([-h, h], dtype=torch.float64).view(2, 1, 1, 1).requires_grad_()
    (grad,) = torch.autograd.grad(act(x).sum(), x)
    return grad.flatten().tolist()


@pytest.mark.parametrize('name', ['softplus', 'smoothrelu', 'pssilu', 'psoftplus', 'sparta', 'silu', 'gelu', 'elu'])
def test_smooth_activations_are_c1_at_zero(name):
    left, right = _derivative_at_zero_from_both_sides(_act(name))
    assert left == pytest.approx(right, abs=1e-3)


@pytest.mark.parametrize('name', ['relu', 'capped_relu'])
def test_relu_derivative_jumps_at_zero(name):
    left, right = _derivative_at_zero_from_both_sides(_act(name))
    assert (left, right) == (0.0, 1.0)


# --- ReLU with a smooth backward pass ---------------------------------------------------------------------

def test_relu_smoothgrad_forward_is_relu():
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(ReLUSmoothGrad()(x), F.relu(x))


@pytest.mark.parametrize('kwargs, alpha', [({}, 10.0), ({'alpha': 3.0}, 3.0)])
def test_relu_smoothgrad_backward_is_sigmoid_of_alpha_x(kwargs, alpha):
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    grad_out = torch.randn_like(x)
    ReLUSmoothGrad(**kwargs)(x).backward(grad_out)
    torch.testing.assert_close(x.grad, torch.sigmoid(alpha * x.detach()) * grad_out)


def test_relu_smoothgrad_without_smooth_backward_has_relu_gradient():
    act = ReLUSmoothGrad()
    act.smooth_backward = False  # a training loop flips the attribute between attack and update
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    grad_out = torch.randn_like(x)
    act(x).backward(grad_out)
    assert torch.equal(x.grad, (x.detach() > 0) * grad_out)


# --- Sparta -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kernel_size', [3, 5])
def test_sparta_is_silu_at_init(kernel_size):
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(Sparta(kernel_size=kernel_size)(x), F.silu(x))


@pytest.mark.parametrize('beta', [1.0, 10.0, 100.0, 1000.0])
def test_sparta_approaches_relu_as_beta_grows(beta):
    # zero attention: x * sigmoid(beta x), whose distance to ReLU is max_x x sigmoid(-beta x) = 0.2785 / beta
    x = torch.linspace(-3, 3, 6001, dtype=torch.float64).view(1, 1, 1, -1)
    err = (Sparta(beta_init=beta).double()(x) - F.relu(x)).abs().max().item()
    assert err <= 0.2785 / beta + 1e-9


@pytest.mark.parametrize('kernel_size', [3, 5])
def test_sparta_is_spatially_local(kernel_size):
    act = _sparta_with_attention(kernel_size).double()
    x = torch.randn(1, 4, 11, 11, dtype=torch.float64)
    x_perturbed = x.clone()
    x_perturbed[0, 1, 5, 5] += 3.0
    changed = act(x_perturbed) != act(x)
    r = kernel_size // 2
    neighbourhood = torch.zeros_like(changed)
    neighbourhood[:, :, 5 - r:5 + r + 1, 5 - r:5 + r + 1] = True
    assert torch.equal(changed, neighbourhood)


def test_sparta_is_input_dependent():
    # the same value at a pixel gives a different output when the pixel's neighbourhood differs
    act = _sparta_with_attention(3).double()
    a = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    b = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    b[:, :, 2, 2] = a[:, :, 2, 2]
    out_a, out_b = act(a)[:, :, 2, 2], act(b)[:, :, 2, 2]
    assert not torch.allclose(out_a, out_b)


@pytest.mark.parametrize('kernel_size', [1, 3, 5])
def test_sparta_parameters_do_not_depend_on_channels_or_size(kernel_size):
    act = Sparta(kernel_size=kernel_size)
    n_params = kernel_size ** 2 + 2  # conv weights, conv bias, beta
    for shape in [(1, 3, 8, 8), (2, 64, 5, 7), (1, 512, 1, 1)]:
        x = torch.randn(shape)
        assert act(x).shape == x.shape
        assert sum(p.numel() for p in act.parameters()) == n_params


def test_sparta_on_features_gates_with_the_samples_channel_statistics():
    # on (N, C) the neighbourhood is the single position: only the conv's centre weights act
    act = _sparta_with_attention(3, beta=1.3).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    w, bias = act.attn.weight[0, 0, 1, 1], act.attn.bias[0]
    attention = w * x.mean(dim=1, keepdim=True) + bias
    torch.testing.assert_close(act(x), x * torch.sigmoid(1.3 * x + attention))


def test_sparta_rejects_token_sequences():
    with pytest.raises(ValueError,
                       match=r'sparta expects NCHW feature maps or \(N, C\) features, got shape \(2, 3, 4\)'):
        Sparta()(torch.randn(2, 3, 4))


# --- timm registration ------------------------------------------------------------------------------------

def test_activations_lists_every_name():
    assert ACTIVATIONS == ('relu', 'softplus', 'smoothrelu', 'silu', 'gelu', 'elu', 'pssilu', 'psoftplus',
                           'sparta', 'capped_relu', 'relu_smoothgrad')
    assert robust_zoo.layers.ACTIVATIONS is ACTIVATIONS


@pytest.mark.parametrize('name, cls', [*ROBUST_ACTIVATIONS.items(), *BASELINES.items()])
def test_timm_factory_resolves_name(name, cls):
    assert timm.layers.get_act_layer(name) is cls
    assert robust_zoo.get_act_layer(name.upper()) is cls  # robust_zoo's lookup is case-insensitive
    assert isinstance(timm.layers.create_act_layer(name, inplace=True), cls)


@pytest.mark.parametrize('name', ACTIVATIONS)
def test_timm_create_model_with_act_layer(name):
    model = timm.create_model('resnet18', act_layer=name, num_classes=10).eval()
    assert isinstance(model.act1, timm.layers.get_act_layer(name))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


# --- errors -----------------------------------------------------------------------------------------------

def test_unknown_name_suggests_close_matches_and_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown activation 'silo'. Did you mean 'silu'") as info:
        robust_zoo.get_act_layer('silo')
    assert all(name in str(info.value) for name in ACTIVATIONS)


def test_bad_keyword_names_activation_and_accepted_arguments():
    with pytest.raises(TypeError, match=r"activation 'capped_relu'.*It accepts: beta\.$"):
        robust_zoo.create_act_layer('capped_relu', alpha=2.0)


@pytest.mark.parametrize('build, message', [
    (lambda: CappedReLU(beta=0), r'capped_relu: beta must be > 0 \(got 0\)'),
    (lambda: ParametricSoftplus(alpha=-1), r'softplus: alpha must be > 0 \(got -1\)'),
    (lambda: SmoothReLU(beta_raw_init=0), r'smoothrelu: beta_raw_init must be non-zero'),
    (lambda: PSSiLU(beta_init=1.5), r'pssilu: \|beta_init\| must be in \[0, 1\) \(got 1.5\)'),
    (lambda: PSoftplus(alpha_init=0), r'psoftplus: alpha_init must be > 0 \(got 0\)'),
    (lambda: Sparta(kernel_size=2), r'sparta: kernel_size must be a positive odd number \(got 2\)'),
    (lambda: Sparta(beta_init=0), r'sparta: beta_init must be > 0 \(got 0\)'),
    (lambda: ReLUSmoothGrad(alpha=0), r'relu_smoothgrad: alpha must be > 0 \(got 0\)'),
], ids=['capped_relu', 'softplus', 'smoothrelu', 'pssilu', 'psoftplus', 'sparta-kernel', 'sparta-beta',
        'relu_smoothgrad'])
def test_constructor_rejects_bad_values(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_create_act_layer_passes_value_errors_through():
    with pytest.raises(ValueError, match='sparta: kernel_size'):
        robust_zoo.create_act_layer('sparta', kernel_size=4)


def test_softplus_overflow_guard_returns_x():
    # documented: above alpha * x > 20 the output is exactly x
    x = torch.tensor([2.01, 10.0, 100.0], dtype=torch.float64)
    assert torch.equal(ParametricSoftplus().double()(x), x)
