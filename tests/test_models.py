"""robust_zoo's model families as timm models: registry, configs, inputs in [0, 1], activations, weights,
fine-tuning."""
import json

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data import IMAGENET_DEFAULT_MEAN, create_transform, resolve_data_config
from torch import nn
from torchvision.transforms.functional import to_tensor

import robust_zoo
from robust_zoo.layers import ACTIVATIONS, SharedActivation
from robust_zoo.models import InputNormalize, RobustPretrainedCfg

ARCHS = (
    'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext152_32x8d', 'wide_resnet50_2',
    *(f'efficientnet_{s}' for s in ('b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'l1')),
    'resnet20', 'resnet32', 'resnet56', 'preact_resnet18', 'wrn_28_10', 'wrn_34_10', 'wrn_70_16', 'mlp3',
    'lenet_small', 'lenet_wide',
)
EFFICIENTNET_ALIASES = tuple(f'efficientnet_{s}_at' for s in ('b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'l1'))
ALL_MODELS = sorted({f'{arch}_{act}_at' for arch in ARCHS for act in ACTIVATIONS} | set(EFFICIENTNET_ALIASES))

# one small model per family, with an input of its default size (ImageNet models run at 64x64)
FAMILIES = {
    'resnet20_relu_at': (1, 28, 28),
    'preact_resnet18_relu_at': (3, 32, 32),
    'mlp3_relu_at': (1, 28, 28),
    'lenet_small_relu_at': (1, 28, 28),
    'resnet18_relu_at': (3, 64, 64),
    'efficientnet_b0_relu_at': (3, 64, 64),
}

ACT_CLASSES = {act: robust_zoo.get_act_layer(act) for act in ACTIVATIONS}


def _activation_in_name(name):
    if name in EFFICIENTNET_ALIASES:
        return 'silu'
    return next(act for act in sorted(ACTIVATIONS, key=len, reverse=True) if name.endswith(f'_{act}_at'))


def _activation_classes(model):
    """The robust_zoo activation classes that occur in `model` (shared ones through `model.shared_act`)."""
    return {type(m) for m in model.modules()} & set(ACT_CLASSES.values())


def _images(shape, batch=2, seed=0):
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


# --- registry --------------------------------------------------------------------------------------------

def test_timm_lists_every_architecture_with_every_activation():
    assert len(ALL_MODELS) == 295
    assert sorted(timm.list_models('*_at')) == ALL_MODELS


def test_every_entrypoint_builds_with_the_activation_in_its_name():
    """All 295 entrypoints, built without memory on device='meta'."""
    for name in ALL_MODELS:
        model = timm.create_model(name, device='meta')
        act = _activation_in_name(name)
        assert _activation_classes(model) == {ACT_CLASSES[act]}, name
        assert next(iter(model.children())) is model.normalize, name
        assert isinstance(model.normalize, InputNormalize), name
        assert model.num_classes == model.pretrained_cfg['num_classes'], name


def test_entrypoints_are_grouped_by_family_module_and_documented():
    assert len(timm.list_models(module='rz_cifar_resnet')) == 33
    assert len(timm.list_models(module='rz_efficientnet')) == 9 * 12
    entrypoint = timm.models.model_entrypoint('resnet20_silu_at')
    assert entrypoint.__module__ == 'robust_zoo.models.rz_cifar_resnet'
    assert 'ResNet-20' in entrypoint.__doc__ and entrypoint.__doc__.endswith('Activation: silu.')


def test_efficientnet_alias_is_the_silu_model():
    alias = timm.create_model('efficientnet_l1_at', device='meta')
    silu = timm.create_model('efficientnet_l1_silu_at', device='meta')
    assert _activation_classes(alias) == {nn.SiLU}
    assert {k: v.shape for k, v in alias.state_dict().items()} == {k: v.shape for k, v in silu.state_dict().items()}


@pytest.mark.parametrize('name, kwargs, n_params', [
    ('resnet50_relu_at', {}, 25_557_032),
    ('resnext152_32x8d_relu_at', {}, 122_372_392),
    ('efficientnet_l1_at', {}, 272_630_564),  # SAT: ~273M
    ('resnet20_relu_at', {}, 269_434),  # Fashion-MNIST, in_chans=1
    ('resnet20_relu_at', {'in_chans': 3}, 269_722),  # He et al.: ~0.27M
    ('preact_resnet18_relu_at', {}, 11_172_170),
    ('wrn_28_10_relu_at', {}, 36_479_194),
    ('wrn_70_16_relu_at', {}, 266_796_506),
    ('lenet_small_relu_at', {}, 166_406),  # Croce et al.: 16*1*16+16, 32*16*16+32, 7*7*32*100+100, 100*10+10
    ('lenet_wide_relu_at', {}, 1_644_650),
])
def test_parameter_counts(name, kwargs, n_params):
    assert _n_params(timm.create_model(name, device='meta', **kwargs)) == n_params


# --- pretrained cfgs -----------------------------------------------------------------------------------

def test_every_cfg_names_its_dataset_and_a_standard_threat_model():
    for name in ALL_MODELS:
        cfg = timm.models.get_pretrained_cfg(name)
        assert isinstance(cfg, RobustPretrainedCfg), name
        assert cfg.threat_model in robust_zoo.THREAT_MODELS, name
        assert robust_zoo.get_threat_model(cfg.threat_model).dataset == cfg.dataset, name


def test_every_cfg_leaves_normalization_to_the_model():
    for name in ALL_MODELS:
        cfg = timm.models.get_pretrained_cfg(name)
        chans = cfg.input_size[0]
        assert cfg.mean == (0.0,) * chans and cfg.std == (1.0,) * chans, name
        assert len(cfg.input_mean) == len(cfg.input_std) == chans, name
        assert all(0 < m < 1 for m in cfg.input_mean) and all(0 < s < 1 for s in cfg.input_std), name


@pytest.mark.parametrize('name, dataset, threat_model, input_size, num_classes', [
    ('resnet50_silu_at', 'imagenet-1k', 'imagenet-linf', (3, 224, 224), 1000),
    ('efficientnet_l1_at', 'imagenet-1k', 'imagenet-linf', (3, 600, 600), 1000),
    ('resnet20_silu_at', 'fashion-mnist', 'fashion-mnist-linf', (1, 28, 28), 10),
    ('mlp3_relu_at', 'fashion-mnist', 'fashion-mnist-linf', (1, 28, 28), 10),
    ('lenet_small_relu_at', 'fashion-mnist', 'fashion-mnist-linf', (1, 28, 28), 10),
    ('wrn_28_10_relu_at', 'cifar10', 'cifar10-linf', (3, 32, 32), 10),
    ('preact_resnet18_relu_at', 'cifar10', 'cifar10-linf', (3, 32, 32), 10),
])
def test_family_default_cfg(name, dataset, threat_model, input_size, num_classes):
    cfg = timm.models.get_pretrained_cfg(name)
    assert (cfg.dataset, cfg.threat_model, cfg.input_size, cfg.num_classes) == (
        dataset, threat_model, input_size, num_classes)


def test_mlp_has_a_fixed_input_size():
    assert timm.models.get_pretrained_cfg('mlp3_relu_at').fixed_input_size
    assert not timm.models.get_pretrained_cfg('resnet20_relu_at').fixed_input_size


@pytest.mark.parametrize('name', FAMILIES)
def test_cfg_names_the_first_layer_and_the_classifier(name):
    """timm adapts these two when weights are loaded with another in_chans / num_classes."""
    model = timm.create_model(name, device='meta')
    first = model.get_submodule(model.pretrained_cfg['first_conv'])
    assert isinstance(first, (nn.Conv2d, nn.Linear))
    assert model.get_submodule(model.pretrained_cfg['classifier']) is model.get_classifier()


# --- inputs in [0, 1] ------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, mean, std', [
    ('resnet20_relu_at', (0.2860,), (0.3530,)),
    ('preact_resnet18_relu_at', (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    ('resnet18_relu_at', IMAGENET_DEFAULT_MEAN, (0.229, 0.224, 0.225)),
])
def test_normalize_holds_the_dataset_constants_as_saved_buffers(name, mean, std):
    model = timm.create_model(name)
    assert next(iter(model.children())) is model.normalize
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor(mean))
    torch.testing.assert_close(model.normalize.std.flatten(), torch.tensor(std))
    assert {'normalize.mean', 'normalize.std'} <= set(model.state_dict())


@pytest.mark.parametrize('name, first', [('resnet20_relu_at', 'conv_stem'), ('resnet18_relu_at', 'conv1'),
                                         ('efficientnet_b0_relu_at', 'conv_stem')])
def test_forward_normalizes_images_before_the_first_layer(name, first):
    model = timm.create_model(name).eval()
    seen = []
    model.get_submodule(first).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = _images(FAMILIES[name])
    model(x)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg['input_mean']).view(1, -1, 1, 1)
    std = torch.tensor(cfg['input_std']).view(1, -1, 1, 1)
    torch.testing.assert_close(seen[0], (x - mean) / std)


def test_out_of_range_input_raises_on_first_forward():
    model = timm.create_model('resnet20_relu_at').eval()
    with pytest.raises(ValueError, match=r'images in \[0, 1\].*check_range = False'):
        model(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))


def test_range_check_stays_armed_until_a_valid_batch():
    model = timm.create_model('resnet20_relu_at').eval()
    bad = torch.full((1, 1, 28, 28), 255.0)
    for _ in range(2):
        with pytest.raises(ValueError, match=r'images in \[0, 1\]'):
            model(bad)
    model(_images((1, 28, 28)))
    with pytest.raises(ValueError, match=r'images in \[0, 1\]'):  # on a CPU every forward is checked
        model(bad)
    model(_images((1, 28, 28)))
    model.normalize.check_every_forward = False  # as on a GPU: checked once, no sync per step afterwards
    assert model(bad).shape == (1, 10)


def test_check_range_false_accepts_any_input():
    model = timm.create_model('resnet20_relu_at').eval()
    model.normalize.check_range = False
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_timm_data_pipeline_gives_unnormalized_images_in_unit_range():
    model = timm.create_model('preact_resnet18_relu_at').eval()
    cfg = resolve_data_config(model=model)
    assert cfg['mean'] == (0.0, 0.0, 0.0) and cfg['std'] == (1.0, 1.0, 1.0)
    transform = create_transform(**cfg)
    pixels = torch.randint(0, 256, (32, 32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())
    x = transform(image)
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x, to_tensor(image))  # exactly the image's pixels / 255
    assert model(x[None]).shape == (1, 10)  # and the model's range check accepts it


def test_imagenet_pipeline_resizes_a_pil_image_into_unit_range():
    model = timm.create_model('robust_zoo/resnet50_silu_at', device='meta')
    transform = create_transform(**resolve_data_config(model=model))
    pixels = torch.randint(0, 256, (40, 50, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = transform(Image.fromarray(pixels.numpy()))
    assert x.shape == (3, 224, 224) and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5


# --- activations -------------------------------------------------------------------------------------------

def test_act_layer_name_overrides_the_default_activation():
    model = timm.create_model('resnet20_relu_at', act_layer='silu')
    assert _activation_classes(model) == {nn.SiLU}


def test_act_layer_accepts_a_class():
    model = timm.create_model('resnet20_relu_at', act_layer=robust_zoo.layers.CappedReLU)
    assert _activation_classes(model) == {robust_zoo.layers.CappedReLU}


def test_act_layer_accepts_a_class_without_inplace():
    """timm blocks call act_layer(inplace=True); classes like nn.GELU / nn.Tanh do not take it."""
    model = timm.create_model('resnet20_relu_at', act_layer=nn.GELU, act_kwargs={'approximate': 'tanh'})
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(m.approximate == 'tanh' for m in gelus)


def test_mlp_features_only_says_it_has_no_feature_maps():
    with pytest.raises(ValueError, match='no feature maps'):
        timm.create_model('mlp3_relu_at', features_only=True)


def test_act_kwargs_reach_every_activation():
    model = timm.create_model('resnet20_capped_relu_at', act_kwargs={'beta': 0.5})
    caps = [m for m in model.modules() if isinstance(m, robust_zoo.layers.CappedReLU)]
    assert len(caps) == 1 + 2 * 9 and all(m.beta == 0.5 for m in caps)


def test_pssilu_is_one_instance_shared_by_the_whole_network():
    model = timm.create_model('resnet20_pssilu_at')
    sites = [m for m in model.modules() if isinstance(m, SharedActivation)]
    assert len(sites) == 19 and all(s.shared is model.shared_act for s in sites)
    assert [k for k in model.state_dict() if k.endswith(('alpha', 'beta'))] == ['shared_act.alpha', 'shared_act.beta']


def test_act_shared_false_gives_each_layer_its_own_parameters():
    model = timm.create_model('resnet20_pssilu_at', act_shared=False)
    assert not hasattr(model, 'shared_act')
    assert sum(isinstance(m, robust_zoo.layers.PSSiLU) for m in model.modules()) == 19


def test_act_shared_true_shares_any_activation():
    model = timm.create_model('resnet20_capped_relu_at', act_shared=True)
    assert isinstance(model.shared_act, robust_zoo.layers.CappedReLU)
    assert all(s.shared is model.shared_act for s in model.modules() if isinstance(s, SharedActivation))


def test_features_only_with_shared_activation_raises():
    with pytest.raises(ValueError, match='act_shared=False'):
        timm.create_model('resnet20_pssilu_at', features_only=True)


def test_unknown_activation_raises_with_the_valid_names():
    with pytest.raises(ValueError, match=r"Unknown activation 'relux'.*Did you mean 'relu'.*capped_relu"):
        timm.create_model('resnet20_relu_at', act_layer='relux')


# --- construction kwargs -----------------------------------------------------------------------------------

@pytest.mark.parametrize('name', FAMILIES)
def test_num_classes(name):
    model = timm.create_model(name, num_classes=7).eval()
    assert model.num_classes == 7
    assert model(_images(FAMILIES[name])).shape == (2, 7)


@pytest.mark.parametrize('name', ['resnet20_relu_at', 'preact_resnet18_relu_at', 'resnet18_relu_at',
                                  'efficientnet_b0_relu_at'])
def test_in_chans(name):
    chans = 3 if FAMILIES[name][0] == 1 else 1
    model = timm.create_model(name, in_chans=chans).eval()
    assert model.normalize.mean.shape == (1, chans, 1, 1)
    assert model(_images((chans, *FAMILIES[name][1:]))).shape == (2, model.num_classes)


def test_in_chans_uses_the_channel_average_of_the_dataset_constants():
    model = timm.create_model('resnet18_relu_at', in_chans=1)
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor([sum(IMAGENET_DEFAULT_MEAN) / 3]))


def test_device_meta_allocates_nothing():
    model = timm.create_model('resnet20_relu_at', device='meta')
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {'meta'}


def test_dtype():
    model = timm.create_model('resnet20_relu_at', dtype=torch.float64).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.normalize.mean.dtype == torch.float64
    assert model(_images((1, 28, 28)).double()).dtype == torch.float64


def test_model_args_record_the_activation_arguments():
    model = timm.create_model('resnet20_relu_at', act_layer='capped_relu', act_kwargs={'beta': 0.5},
                              act_shared=False, num_classes=5)
    assert model._model_args == {'act_layer': 'capped_relu', 'act_kwargs': {'beta': 0.5}, 'act_shared': False,
                                 'num_classes': 5}


# --- weights -----------------------------------------------------------------------------------------------

def test_pretrained_without_published_weights_raises():
    with pytest.raises(RuntimeError, match='No pretrained weights'):
        timm.create_model('preact_resnet18_gelu_at', pretrained=True)


def test_pretrained_cfg_overlay_file_loads_safetensors_weights(tmp_path):
    source = timm.create_model('resnet20_relu_at').eval()
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), path)
    model = timm.create_model('resnet20_relu_at', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = _images((1, 28, 28))
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_shared_activation_parameters_round_trip_through_safetensors(tmp_path):
    source = timm.create_model('resnet20_pssilu_at').eval()
    with torch.no_grad():
        source.shared_act.alpha.fill_(2.5)
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), path)  # raises if a tensor were stored twice
    assert load_file(path)['shared_act.alpha'] == 2.5
    model = timm.create_model('resnet20_pssilu_at', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.shared_act.alpha.item() == 2.5
    x = _images((1, 28, 28))
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_pretrained_weights_with_a_new_head_keep_the_trunk(tmp_path):
    source = timm.create_model('resnet20_relu_at')
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), path)
    model = timm.create_model('resnet20_relu_at', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              num_classes=3)
    assert model.get_classifier().out_features == 3
    torch.testing.assert_close(model.conv_stem.weight, source.conv_stem.weight, rtol=0, atol=0)


@pytest.mark.parametrize('name, in_chans', [('resnet18_relu_at', 1), ('resnet20_relu_at', 3)])
def test_pretrained_weights_load_into_another_in_chans(tmp_path, name, in_chans):
    """timm adapts the first conv; the saved normalization constants follow the channel-average rule."""
    source = timm.create_model(name)
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), in_chans=in_chans)
    expected = timm.create_model(name, in_chans=in_chans, device='meta')
    assert model.normalize.mean.shape == expected.normalize.mean.shape == (1, in_chans, 1, 1)
    mean, std = source.normalize.mean, source.normalize.std
    torch.testing.assert_close(model.normalize.mean, mean.mean(1, keepdim=True).expand(1, in_chans, 1, 1))
    torch.testing.assert_close(model.normalize.std, std.mean(1, keepdim=True).expand(1, in_chans, 1, 1))


def test_save_for_hf_and_local_dir_rebuild_the_same_model(tmp_path):
    source = timm.create_model('resnet20_relu_at', act_layer='capped_relu', act_kwargs={'beta': 0.5},
                               num_classes=5).eval()
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    assert {p.name for p in tmp_path.iterdir()} >= {'config.json', 'model.safetensors'}
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['architecture'] == 'resnet20_relu_at'
    assert config['pretrained_cfg']['threat_model'] == 'fashion-mnist-linf'

    model = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    caps = [m for m in model.modules() if isinstance(m, robust_zoo.layers.CappedReLU)]
    assert caps and all(m.beta == 0.5 for m in caps)
    assert model.num_classes == 5
    assert model.pretrained_cfg['dataset'] == 'fashion-mnist'
    x = _images((1, 28, 28))
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_save_for_hf_keeps_a_shared_activation_shared(tmp_path):
    source = timm.create_model('resnet20_pssilu_at').eval()
    with torch.no_grad():
        source.shared_act.beta.fill_(0.25)
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    model = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    assert model.shared_act.beta.item() == 0.25
    assert all(s.shared is model.shared_act for s in model.modules() if isinstance(s, SharedActivation))
    x = _images((1, 28, 28))
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


# --- fine-tuning API ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', FAMILIES)
def test_reset_classifier(name):
    model = timm.create_model(name).eval()
    model.reset_classifier(4)
    assert model.num_classes == 4 and model.get_classifier().out_features == 4
    assert model(_images(FAMILIES[name])).shape == (2, 4)


@pytest.mark.parametrize('name', FAMILIES)
def test_reset_classifier_zero_returns_pooled_features(name):
    model = timm.create_model(name).eval()
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(_images(FAMILIES[name])).shape == (2, model.num_features)


@pytest.mark.parametrize('name', FAMILIES)
def test_forward_is_forward_features_then_forward_head(name):
    model = timm.create_model(name).eval()
    x = _images(FAMILIES[name])
    features = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(features), model(x))
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pre_logits), model(x))


def test_resnet20_features_only_returns_four_maps():
    model = timm.create_model('resnet20_relu_at', features_only=True).eval()
    maps = model(_images((1, 28, 28)))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7)]
    assert model.feature_info.channels() == [16, 16, 32, 64]
    assert model.feature_info.reduction() == [1, 1, 2, 4]


@pytest.mark.parametrize('name', ['resnet20_relu_at', 'preact_resnet18_relu_at', 'resnet18_relu_at',
                                  'efficientnet_b0_relu_at'])
def test_features_only_maps_are_the_models_own_intermediate_outputs(name):
    """The feature maps are what the classifier computes at those layers: normalization included."""
    model = timm.create_model(name).eval()
    features = timm.create_model(name, features_only=True).eval()
    weights = model.state_dict()
    features.load_state_dict({k: weights[k if k in weights else k.replace('_', '.', 1)]
                              for k in features.state_dict()})
    seen = {}
    for module_name in features.feature_info.module_name():
        model.get_submodule(module_name).register_forward_hook(
            lambda m, args, out, n=module_name: seen.__setitem__(n, out.clone()))
    x = _images(FAMILIES[name])
    model(x)
    maps = features(x)
    assert len(maps) == len(seen)
    for module_name, feature_map in zip(features.feature_info.module_name(), maps):
        torch.testing.assert_close(feature_map, seen[module_name], rtol=0, atol=0)


def test_saved_config_without_robust_keys_takes_them_from_the_registry(tmp_path):
    """A config.json written without robust_zoo's cfg fields (e.g. by another tool) still rebuilds the model."""
    source = timm.create_model('resnet20_relu_at').eval()
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / 'config.json').read_text())
    for key in ('dataset', 'threat_model', 'input_mean', 'input_std'):
        config['pretrained_cfg'].pop(key)
    (tmp_path / 'config.json').write_text(json.dumps(config))
    model = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    assert model.pretrained_cfg['threat_model'] == 'fashion-mnist-linf'
    x = _images((1, 28, 28))
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
