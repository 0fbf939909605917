"""lenet_small: Croce, Andriushchenko and Hein's LeNetSmall (AISTATS 2019, models.py), as a timm family."""
import math

import pytest
import timm
import torch
from torch import nn

import robust_zoo
from robust_zoo.layers import ACTIVATIONS


def _tf_same_out(size: int, stride: int = 2) -> int:
    return math.ceil(size / stride)


def test_lenet_small_is_their_network_layer_by_layer():
    model = timm.create_model('robust_zoo/lenet_small_relu_at')
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 16, (4, 4), (2, 2)), (16, 32, (4, 4), (2, 2))]
    assert [(f.in_features, f.out_features) for f in fcs] == [(7 * 7 * 32, 100), (100, 10)]
    assert all(m.bias is not None for m in convs + fcs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_padding_gives_tf_same_feature_maps():
    """TF 'SAME' with a 4x4 kernel and stride 2 gives ceil(n / 2): 28 -> 14 -> 7."""
    model = timm.create_model('robust_zoo/lenet_small_relu_at')
    x = torch.rand(2, 1, 28, 28)
    h1 = model.stages[1](model.stages[0](model.normalize(x)))
    h2 = model.stages[3](model.stages[2](h1))
    assert h1.shape[-2:] == (_tf_same_out(28),) * 2 and h2.shape[-2:] == (_tf_same_out(14),) * 2


def test_init_is_he_truncated_normal_with_zero_biases():
    torch.manual_seed(0)
    model = timm.create_model('robust_zoo/lenet_wide_relu_at')
    fc1 = model.stages[5]
    std = math.sqrt(2.0 / fc1.in_features)
    assert fc1.weight.abs().max() <= 2 * std + 1e-7  # cut at 2 std, as TF's truncated_normal
    assert 0.8 * std < fc1.weight.std() < std  # a normal cut at 2 std has 0.88 of the std
    assert all(float(m.bias.detach().abs().max()) == 0
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize('act', ACTIVATIONS)
def test_every_activation_sits_after_every_hidden_layer(act):
    model = timm.create_model(f'robust_zoo/lenet_small_{act}_at')
    cls = robust_zoo.get_act_layer(act)
    found = [m for m in model.stages if isinstance(m, cls)]
    shared = getattr(model, 'shared_act', None)
    assert len(found) == 3 or (shared is not None and isinstance(shared, cls))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_takes_unit_range_images_and_normalizes_inside():
    model = timm.create_model('robust_zoo/lenet_small_relu_at')
    assert model.pretrained_cfg['mean'] == (0.0,) and model.pretrained_cfg['std'] == (1.0,)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        model(torch.full((1, 1, 28, 28), 255.0))


def test_swap_activations_on_lenet():
    model = timm.create_model('robust_zoo/lenet_small_relu_at')
    robust_zoo.swap_activations(model, 'pssilu')
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
