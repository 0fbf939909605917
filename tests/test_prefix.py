"""The `robust_zoo/` model-name prefix for `timm.create_model`, and that timm's own name sources still work."""
import inspect
import json

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from timm.models import _factory
from timm.models.resnet import ResNet

import robust_zoo
from robust_zoo.models import install_prefix, robust_model_names
from robust_zoo.models.rz_cifar_resnet import CifarResNet
from robust_zoo.models.rz_resnet import ResNetAT


def _images(batch=2):
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_prefixed_name_creates_the_robust_zoo_model():
    model = timm.create_model('robust_zoo/resnet20_silu_at')
    assert isinstance(model, CifarResNet)
    assert model.pretrained_cfg['architecture'] == 'resnet20_silu_at'


def test_prefixed_name_passes_kwargs_through():
    model = timm.create_model('robust_zoo/resnet50_silu_at', num_classes=3, device='meta')
    assert isinstance(model, ResNetAT) and model.get_classifier().out_features == 3


def test_prefixed_name_keeps_its_pretrained_tag():
    tag = robust_zoo.list_models('resnet50_silu_at.*', pretrained=True) or ['robust_zoo/resnet50_silu_at.sat_in1k']
    name = tag[0].removeprefix('robust_zoo/')
    assert _factory.parse_model_name(f'robust_zoo/{name}') == (None, name)


def test_unknown_tag_raises_with_the_tags_that_exist():
    published = [n.split('.', 1)[1] for n in robust_zoo.list_models('resnet20_silu_at.*', pretrained=True)]
    with pytest.raises(RuntimeError, match=r'Invalid pretrained tag \(some_tag\) for robust_zoo/resnet20_silu_at: '
                                           r'its tags are ') as info:
        timm.create_model('robust_zoo/resnet20_silu_at.some_tag')
    assert all(t in str(info.value) for t in published) and "robust-zoo list --results 'resnet20_silu_at.*'" \
        in str(info.value)
    with pytest.raises(RuntimeError, match=r'for robust_zoo/mlp3_gelu_at: it has no tagged weights; use '
                                           r'robust_zoo/mlp3_gelu_at\.$'):
        timm.create_model('robust_zoo/mlp3_gelu_at.some_tag')


@pytest.mark.parametrize('name, close', [
    ('robust_zoo/resnet50_silo_at', 'robust_zoo/resnet50_silu_at'),
    ('robust_zoo/resnet18', 'robust_zoo/resnet18_relu_at'),
])
def test_unknown_robust_zoo_name_raises_with_close_matches(name, close):
    with pytest.raises(RuntimeError, match='Unknown model') as info:
        timm.create_model(name)
    assert 'Did you mean' in str(info.value) and close in str(info.value)


def test_unknown_robust_zoo_name_without_close_match_points_to_list_models():
    with pytest.raises(RuntimeError, match=r"robust_zoo has no model 'zzzz'.*list_models") as info:
        timm.create_model('robust_zoo/zzzz')
    assert 'Did you mean' not in str(info.value)


@pytest.mark.parametrize('name', ['foo/resnet18', 'timm/resnet18', 'Robust_zoo/resnet20_relu_at',
                                  'robust_zoo_x/resnet20_relu_at'])
def test_other_names_with_a_slash_keep_timms_error(name):
    with pytest.raises(ValueError, match='has no source prefix'):
        timm.create_model(name)


def test_plain_timm_names_still_work():
    model = timm.create_model('resnet18', device='meta')
    assert type(model) is ResNet


def test_robust_zoo_names_work_without_the_prefix():
    assert isinstance(timm.create_model('resnet20_silu_at'), CifarResNet)


def test_install_prefix_is_idempotent():
    install_prefix()
    install_prefix()
    wrapper = _factory.parse_model_name
    assert wrapper.__wrapped__ is inspect.unwrap(wrapper)  # wrapped once: the next layer is timm's own parser
    assert wrapper.__wrapped__.__module__ == 'timm.models._factory'
    assert not hasattr(wrapper.__wrapped__, '_robust_zoo')
    assert isinstance(timm.create_model('robust_zoo/resnet20_relu_at'), CifarResNet)


def test_list_models_returns_prefixed_names():
    names = robust_zoo.list_models('resnet20_*')
    assert len(names) == 11
    assert all(n.startswith('robust_zoo/resnet20_') and n.endswith('_at') for n in names)
    assert 'robust_zoo/resnet20_silu_at' in names


def test_list_models_accepts_the_pattern_with_the_prefix():
    assert robust_zoo.list_models('robust_zoo/resnet20_*') == robust_zoo.list_models('resnet20_*')


def test_list_models_lists_only_robust_zoo_models():
    names = robust_zoo.list_models()
    assert len(names) == 295
    assert 'robust_zoo/resnet18' not in names and 'robust_zoo/resnet18_relu_at' in names
    assert [n[len('robust_zoo/'):] for n in names] == robust_model_names()


def test_listed_names_create_models():
    for name in robust_zoo.list_models('*_b0_*') + robust_zoo.list_models('mlp3_*'):
        assert timm.create_model(name, device='meta').pretrained_cfg['architecture'] == name[len('robust_zoo/'):]


def test_list_models_pretrained_lists_only_models_with_weights():
    from robust_zoo.models._pretrained import load_published
    assert robust_zoo.list_models(pretrained=True) == sorted(f'robust_zoo/{n}' for n in load_published())


def test_local_dir_still_works(tmp_path):
    source = timm.create_model('robust_zoo/resnet20_relu_at').eval()
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    # the saved architecture is the registry name, loadable without robust_zoo's prefix
    assert json.loads((tmp_path / 'config.json').read_text())['architecture'] == 'resnet20_relu_at'
    model = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    x = _images()
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def _hub_cache(tmp_path, repo_id, model):
    """A Hugging Face Hub cache holding `repo_id` at one commit, as `hf_hub_download` leaves it."""
    cache = tmp_path / 'hub'
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = '0123456789abcdef0123456789abcdef01234567'
    snapshot = repo / 'snapshots' / commit
    snapshot.mkdir(parents=True)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    timm.models.save_for_hf(model, snapshot, safe_serialization=True)
    return cache


@pytest.fixture
def hf_offline(monkeypatch):
    """Offline mode; huggingface_hub reads HF_HUB_OFFLINE when it is imported, so set its constant too."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)


def test_hf_hub_loads_offline_from_the_cache(tmp_path, hf_offline):
    source = timm.create_model('robust_zoo/resnet20_relu_at', act_layer='softplus', act_kwargs={'alpha': 5.0}).eval()
    cache = _hub_cache(tmp_path, 'acme/rz-resnet20', source)
    model = timm.create_model('hf-hub:acme/rz-resnet20', pretrained=True, cache_dir=cache).eval()
    assert model.pretrained_cfg['hf_hub_id'] == 'acme/rz-resnet20'
    assert model.act1.alpha == 5.0
    x = _images()
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_hf_hub_uses_the_hub_cache_setting(tmp_path, hf_offline, monkeypatch):
    source = timm.create_model('robust_zoo/resnet20_relu_at').eval()
    cache = _hub_cache(tmp_path, 'acme/rz-resnet20', source)
    # huggingface_hub also reads HF_HUB_CACHE at import: set the environment and the constant it became
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    model = timm.create_model('hf-hub:acme/rz-resnet20', pretrained=True).eval()
    x = _images()
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
