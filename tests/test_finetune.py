"""Fine-tuning a robust backbone with timm's usual calls: pretrained trunk, fresh head, for every family."""
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import robust_zoo  # noqa: F401

# one model per family, with the input of its default cfg (ImageNet models at 64x64 to keep the test small)
FAMILIES = {
    'resnet20_relu_at': (1, 28, 28),
    'mlp3_relu_at': (1, 28, 28),
    'lenet_small_relu_at': (1, 28, 28),
    'preact_resnet18_relu_at': (3, 32, 32),
    'wrn_28_10_relu_at': (3, 32, 32),
    'resnet18_relu_at': (3, 64, 64),
    'efficientnet_b0_relu_at': (3, 64, 64),
}


def _head_keys(model):
    prefix = model.pretrained_cfg['classifier']
    return {k for k in model.state_dict() if k.startswith(prefix + '.')}


def _check_trunk_kept_head_fresh(model, source_state, num_classes):
    state, head = model.state_dict(), _head_keys(model)
    assert head and model.get_classifier().out_features == num_classes
    for key, value in state.items():
        if key not in head:
            torch.testing.assert_close(value, source_state[key], rtol=0, atol=0, msg=key)
    for key in head:
        old = source_state.get(key)
        assert old is None or old.shape != state[key].shape or not torch.equal(state[key], old), \
            f'{key} kept the pretrained head'


@pytest.mark.parametrize('name', FAMILIES)
def test_new_num_classes_keeps_the_trunk_and_makes_a_fresh_head(tmp_path, name):
    with torch.device('cpu'):
        source = timm.create_model(name, pretrained=False)
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    model = timm.create_model(f'robust_zoo/{name}', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              num_classes=7)
    _check_trunk_kept_head_fresh(model, source.state_dict(), 7)
    assert model.eval()(torch.rand(2, *FAMILIES[name])).shape == (2, 7)


def test_published_backbone_with_a_new_head():
    """The README's fine-tuning call on a published model: its trunk is the published file, its head is new."""
    model = timm.create_model('robust_zoo/resnet20_relu_at', pretrained=True, num_classes=7)
    published = load_file(model.pretrained_cfg['file'])
    assert model.pretrained_cfg['tag'] == 'fmnist_s0'
    _check_trunk_kept_head_fresh(model, published, 7)


def test_same_number_of_classes_keeps_the_head_until_reset_classifier():
    """Fashion-MNIST -> digits has 10 classes on both sides: timm loads the old head; reset_classifier renews it."""
    model = timm.create_model('robust_zoo/resnet20_relu_at', pretrained=True, num_classes=10)
    published = load_file(model.pretrained_cfg['file'])
    torch.testing.assert_close(model.get_classifier().weight, published['head.fc.weight'], rtol=0, atol=0)
    model.reset_classifier(10)
    _check_trunk_kept_head_fresh(model, published, 10)
