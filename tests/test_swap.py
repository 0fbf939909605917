"""swap_activations, shared activations and make_act_factory: on timm, robust_zoo and plain torch models."""
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.layers import BatchNormAct2d
from torch import nn

import robust_zoo  # noqa: F401  (registers the activations and robust_zoo/ models with timm)
from robust_zoo.layers import (
    ROBUST_ACTIVATIONS, CappedReLU, ParametricSoftplus, PSoftplus, PSSiLU, SharedActivation, Sparta,
    is_activation, make_act_factory, swap_activations,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _count(model: nn.Module, cls) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def _sites(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, SharedActivation)]


# --- swapping ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['pssilu', 'sparta', 'capped_relu', 'softplus'])
def test_swap_replaces_every_relu_of_timm_resnet18(name):
    model = timm.create_model('resnet18', num_classes=10).eval()
    n_relu = _count(model, nn.ReLU)
    assert swap_activations(model, name) is model
    assert _count(model, nn.ReLU) == 0
    assert _count(model, ROBUST_ACTIVATIONS[name]) == n_relu == 17  # stem + 2 per basic block
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_swap_passes_act_kwargs_to_every_site():
    model = swap_activations(_mlp(), 'capped_relu', act_kwargs={'beta': 0.5})
    assert [m.beta for m in model.modules() if isinstance(m, CappedReLU)] == [0.5, 0.5]


def test_swap_plain_sequential():
    model = _mlp()
    swap_activations(model, 'softplus')
    assert [type(m) for m in model] == [nn.Linear, ParametricSoftplus, nn.Linear, ParametricSoftplus, nn.Linear]
    x = torch.randn(4, 6)
    expected = model[4](F.softplus(model[2](F.softplus(model[0](x), beta=10)), beta=10))
    torch.testing.assert_close(model(x), expected)


def test_swap_replaces_an_instance_registered_at_several_places():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu)
    swap_activations(model, 'pssilu')
    assert isinstance(model[1], PSSiLU) and isinstance(model[3], PSSiLU)


def test_swap_only_given_types():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.GELU())
    swap_activations(model, 'sparta', types=(nn.GELU,))
    assert isinstance(model[1], nn.ReLU)
    assert isinstance(model[3], Sparta)


def test_swap_keeps_gates_and_non_activations():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1), nn.Sigmoid())
    swap_activations(model, 'silu')
    assert [type(m) for m in model] == [nn.Linear, nn.SiLU, nn.Linear, nn.Tanh, nn.Linear, nn.Sigmoid]


@pytest.mark.parametrize('model_name', ['efficientnet_b0', 'robust_zoo/efficientnet_b0_relu_at'])
def test_swap_efficientnet_keeps_sigmoid_gates_and_swaps_batchnormact(model_name):
    model = timm.create_model(model_name, num_classes=10).eval()
    gates = {n: m for n, m in model.named_modules() if isinstance(m, nn.Sigmoid)}
    norm_acts = [m for m in model.modules() if isinstance(m, BatchNormAct2d) and is_activation(m.act)]
    assert len(gates) == 16 and len(norm_acts) > 0  # one gate per SqueezeExcite

    swap_activations(model, 'capped_relu')
    assert {n: m for n, m in model.named_modules() if isinstance(m, nn.Sigmoid)} == gates  # the same modules
    assert all(isinstance(m.act, CappedReLU) for m in norm_acts)
    assert _count(model, (nn.SiLU, nn.ReLU)) == 0
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_swap_model_with_only_functional_relu_raises():
    class FunctionalMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    with pytest.raises(ValueError, match=r'No activation modules .* found in FunctionalMLP.*F\.relu'):
        swap_activations(FunctionalMLP(), 'pssilu')


# --- shared activations -----------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['pssilu', 'smoothrelu', 'sparta'])
def test_shared_swap_adds_the_parameters_of_one_instance(name):
    model = timm.create_model('resnet18', num_classes=10)
    n_before = _n_params(model)
    swap_activations(model, name, shared=True)
    cls = ROBUST_ACTIVATIONS[name]
    assert isinstance(model.shared_act, cls)
    assert _n_params(model) == n_before + _n_params(cls())
    sites = _sites(model)
    assert len(sites) == 17
    assert all(site.shared is model.shared_act for site in sites)


def test_shared_state_dict_holds_each_tensor_once_and_saves_with_safetensors(tmp_path):
    model = swap_activations(timm.create_model('resnet18', num_classes=10), 'pssilu', shared=True)
    state = model.state_dict()
    assert [k for k in state if k.endswith(('.alpha', '.beta'))] == ['shared_act.alpha', 'shared_act.beta']
    assert len({t.data_ptr() for t in state.values()}) == len(state)
    save_file(state, tmp_path / 'model.safetensors')  # refuses tensors that share memory
    loaded = load_file(tmp_path / 'model.safetensors')
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded['shared_act.alpha'], state['shared_act.alpha'])


def test_shared_parameter_trains_and_every_site_sees_it():
    model = swap_activations(_mlp(), 'pssilu', shared=True)
    alpha_before = model.shared_act.alpha.item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = F.cross_entropy(model(torch.randn(16, 6)), torch.randint(0, 3, (16,)))
    loss.backward()
    optimizer.step()

    alpha, beta = model.shared_act.alpha.item(), model.shared_act.beta.item()
    assert alpha != alpha_before
    expected = PSSiLU(alpha_init=alpha, beta_init=beta)
    x = torch.randn(5, 8)
    for site in (model[1], model[3]):
        torch.testing.assert_close(site(x), expected(x))


def test_shared_sites_follow_dtype_conversion():
    model = swap_activations(_cnn(), 'sparta', shared=True)
    model.to(torch.float64)
    for site in _sites(model):
        assert site.shared.attn.weight is model.shared_act.attn.weight
        assert site.shared.attn.weight.dtype == torch.float64
    assert model(torch.rand(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_per_layer_swap_gives_independent_parameters():
    model = _mlp()
    n_before = _n_params(model)
    swap_activations(model, 'pssilu')
    assert not hasattr(model, 'shared_act')
    first, second = model[1], model[3]
    assert first is not second
    assert _n_params(model) == n_before + 2 * 2
    x = torch.randn(5, 8)
    out_second = second(x)
    with torch.no_grad():
        first.alpha.fill_(3.0)
    assert torch.equal(second(x), out_second)
    assert not torch.equal(first(x), out_second)


def test_swap_shared_to_per_layer_removes_shared_act():
    model = timm.create_model('robust_zoo/resnet20_pssilu_at')  # shares one PSSiLU by default
    swap_activations(model, 'relu')
    assert 'shared_act' not in dict(model.named_children())
    assert not _sites(model)
    assert not [k for k in model.state_dict() if k.startswith('shared_act')]
    assert _n_params(model) == _n_params(timm.create_model('robust_zoo/resnet20_relu_at'))


def test_swap_shared_to_another_shared_replaces_shared_act():
    model = timm.create_model('robust_zoo/resnet20_pssilu_at')
    swap_activations(model, 'psoftplus', shared=True)
    assert isinstance(model.shared_act, PSoftplus)
    assert all(site.shared is model.shared_act for site in _sites(model))
    assert [k for k in model.state_dict() if k.startswith('shared_act')] == ['shared_act.alpha']


def test_swap_of_types_missing_the_shared_sites_raises():
    model = timm.create_model('robust_zoo/resnet20_pssilu_at')  # one PSSiLU owned as shared_act, used everywhere
    with pytest.raises(ValueError, match=r"No activation modules of types \['PSSiLU'\]"):
        swap_activations(model, 'relu', types=(PSSiLU,))  # the owner is not a use site; the sites are not PSSiLU
    assert isinstance(model.shared_act, PSSiLU)
    assert all(site.shared is model.shared_act for site in _sites(model))


def test_swap_that_would_orphan_a_shared_activation_raises():
    shared = PSSiLU()
    model = nn.Sequential(nn.Linear(4, 4), SharedActivation(shared), nn.Linear(4, 4), nn.ReLU())
    model.shared_act = shared
    with pytest.raises(ValueError, match='include SharedActivation in `types`'):
        swap_activations(model, 'silu', types=(nn.ReLU,))
    assert isinstance(model[3], nn.ReLU)
    assert model.shared_act is shared


def test_make_act_factory_shared_returns_views_of_one_instance():
    factory, proto = make_act_factory('pssilu', {'alpha_init': 2.0}, shared=True)
    a, b = factory(inplace=True), factory(inplace=True)
    assert isinstance(proto, PSSiLU) and proto.alpha.item() == 2.0
    assert isinstance(a, SharedActivation) and a is not b
    assert a.shared is proto and b.shared is proto
    x = torch.randn(3, 4)
    torch.testing.assert_close(a(x), proto(x))


def test_make_act_factory_per_layer_builds_new_instances():
    factory, proto = make_act_factory('capped_relu', {'beta': 0.5}, shared=False)
    a, b = factory(inplace=True), factory(inplace=True)
    assert proto is None
    assert isinstance(a, CappedReLU) and a is not b
    assert a.beta == b.beta == 0.5


def test_make_act_factory_validates_arguments_immediately():
    with pytest.raises(ValueError, match='capped_relu: beta must be > 0'):
        make_act_factory('capped_relu', {'beta': 0})
    with pytest.raises(TypeError, match="activation 'pssilu'"):
        make_act_factory('pssilu', {'beta': 0.1}, shared=True)


def test_shared_activation_does_not_register_the_shared_instance():
    proto = PSSiLU()
    site = SharedActivation(proto)
    assert list(site.parameters()) == [] and site.state_dict() == {}
    x = torch.randn(3, 4)
    torch.testing.assert_close(site(x), proto(x))


# --- robust_zoo models: recorded args and save / reload ---------------------------------------------------

def test_shared_swap_of_relu_model_matches_pssilu_entrypoint():
    swapped = swap_activations(timm.create_model('robust_zoo/resnet20_relu_at'), 'pssilu', shared=True)
    built = timm.create_model('robust_zoo/resnet20_pssilu_at')
    assert {k: v.shape for k, v in swapped.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}
    built.load_state_dict(swapped.state_dict())


def test_swap_records_act_args_on_robust_zoo_models():
    model = timm.create_model('robust_zoo/resnet20_relu_at')
    swap_activations(model, 'capped_relu', act_kwargs={'beta': 0.5})
    assert model._model_args == {'act_layer': 'capped_relu', 'act_shared': False, 'act_kwargs': {'beta': 0.5}}
    swap_activations(model, 'pssilu', shared=True)
    assert model._model_args == {'act_layer': 'pssilu', 'act_shared': True}


@pytest.mark.parametrize('name, shared, act_kwargs', [
    ('pssilu', True, None),
    ('sparta', False, None),
    ('capped_relu', False, {'beta': 0.5}),
])
def test_save_for_hf_round_trip_after_swap(tmp_path, monkeypatch, name, shared, act_kwargs):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    model = timm.create_model('robust_zoo/resnet20_relu_at')
    swap_activations(model, name, shared=shared, act_kwargs=act_kwargs)
    with torch.no_grad():  # trained-looking activation parameters, so reloading them is checked
        for p in (p for n, p in model.named_parameters() if 'act' in n):
            p.uniform_(0.2, 0.6)
    model.eval()

    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    reloaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()

    assert type(reloaded) is type(model)
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    assert type(reloaded.stages[0][0].act1) is type(model.stages[0][0].act1)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
