"""SAT converters (robust_zoo/convert/sat.py) against TensorFlow, without the real files: checkpoints written
in the source's format (TF1 name-based Saver) with the source's variable names and shapes and random values,
converted, and compared with a forward pass of the source's architecture written with TensorFlow ops."""
import importlib.util
import math
import sys

import numpy as np
import pytest
import timm
import torch
from timm.layers.activations import GELUTanh
from timm.layers.pool2d_same import MaxPool2dSame
from torch import nn

import robust_zoo
from robust_zoo.models import _pretrained
from robust_zoo.cli import main as cli
from robust_zoo.convert import SOURCES, TARGETS, ConversionError, convert, list_targets, missing_weights_message
from robust_zoo.convert import sat
from robust_zoo.layers import ParametricSoftplus, SmoothReLU

HAS_TF = importlib.util.find_spec('tensorflow') is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason='TensorFlow is not installed: run `make .venv/.test-extras`')

SAT_ACTS = ('relu', 'silu', 'gelu', 'elu', 'smoothrelu', 'softplus')
SMALL = (8, 16, 32, 64)  # ResNet-50's blocks and names at 1/8 width: fast, and every name still maps
ATOL = 1e-4


@pytest.fixture(scope='module')
def tf():
    if not HAS_TF:
        pytest.skip('TensorFlow is not installed: run `make .venv/.test-extras`')
    import os
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow
    return tensorflow


def _images(n=2, size=64, seed=0):
    """Smooth random images: unlike pixel noise, their pooled features (and logits) differ from image to image."""
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode='bilinear', align_corners=False).clamp(0, 1)


# --- the source's format --------------------------------------------------------------------------------------

def write_tf1_checkpoint(tf, prefix, variables, graph_saver=True):
    """A name-based checkpoint (.index, .data) as tensorpack's ModelSaver writes it: TF1 `tf.train.Saver` in a
    graph (also writes the .meta), or, faster, the SaveV2 op that Saver runs."""
    if not graph_saver:
        tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=list(variables), shape_and_slices=[''] * len(variables),
                          tensors=[tf.constant(np.asarray(a)) for a in variables.values()])
        return prefix
    graph = tf.Graph()
    with graph.as_default():
        feeds, tf_vars = {}, []
        for name, value in variables.items():
            value = np.asarray(value)
            placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            tf_vars.append(tf.compat.v1.Variable(placeholder, name=name))
            feeds[placeholder] = value
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer(), feed_dict=feeds)
            saver.save(session, str(prefix))
    return prefix


def _bn(v, rng, scope, c, gamma=1.0, shape=None):
    shape = shape or (c,)
    v[f'{scope}/gamma'] = (gamma * (1 + 0.1 * rng.standard_normal(c))).reshape(shape).astype(np.float32)
    v[f'{scope}/beta'] = (0.1 * rng.standard_normal(c)).reshape(shape).astype(np.float32)
    return shape


def _conv(rng, k, cin, cout):
    return (rng.standard_normal((k, k, cin, cout)) / math.sqrt(k * k * cin)).astype(np.float32)


def sat_resnet_variables(act, widths=(64, 128, 256, 512), layers=(3, 4, 6, 3), num_classes=1000, seed=0, extras=True):
    """tensorpack ResNet-50 variables (ResNet/resnet_model.py): conv0, group{g}/block{b}/conv{1,2,3},
    convshortcut, <conv>/bn/{gamma,beta,mean/EMA,variance/EMA}, SmoothReLU's smoothrelu_beta per site, linear."""
    rng = np.random.default_rng(seed)
    v = {}

    def conv_bn_act(scope, k, cin, cout, gamma=1.0, with_act=True):
        v[f'{scope}/W'] = _conv(rng, k, cin, cout)
        _bn(v, rng, f'{scope}/bn', cout, gamma)
        v[f'{scope}/bn/mean/EMA'] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        v[f'{scope}/bn/variance/EMA'] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        if with_act:
            site(scope)

    def site(scope):
        if act == 'smoothrelu':  # small b (SAT starts at 20), so that a wrongly placed beta changes the logits
            v[f'{scope}/smoothrelu_beta'] = rng.uniform(2.0, 4.0, 1).astype(np.float32)

    conv_bn_act('conv0', 7, 3, 64)
    cin = 64
    for g, (n, w) in enumerate(zip(layers, widths)):
        for b in range(n):
            s = f'group{g}/block{b}'
            conv_bn_act(f'{s}/conv1', 1, cin, w)
            conv_bn_act(f'{s}/conv2', 3, w, w)
            conv_bn_act(f'{s}/conv3', 1, w, 4 * w, gamma=0.3, with_act=False)
            if cin != 4 * w:
                conv_bn_act(f'{s}/convshortcut', 1, cin, 4 * w, with_act=False)
            site(s)
            cin = 4 * w
    v['linear/W'] = (rng.standard_normal((cin, num_classes)) / math.sqrt(cin)).astype(np.float32)
    v['linear/b'] = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    if extras:  # in every tensorpack training checkpoint, and ignored by design
        v['global_step'] = np.int64(312_500)
        v['learning_rate'] = np.float32(0.001)
        v['conv0/W/Momentum'] = np.zeros_like(v['conv0/W'])
        v['linear/W/Momentum'] = np.zeros_like(v['linear/W'])
        v['EMA/xentropy-loss'] = np.float32(2.5)
    return v


def _tf_activation(tf, act, v, scope):
    """resnet_model.activation_list, on the variables of the activation's variable scope."""
    if act == 'smoothrelu':
        beta = tf.math.square(tf.constant(v[f'{scope}/smoothrelu_beta']))
        return lambda x: tf.nn.relu(x - (1. / beta) * tf.math.log(tf.abs(x) * beta + 1.))
    if act == 'gelu':
        return lambda x: x * 0.5 * (1.0 + tf.tanh(float(np.sqrt(2 / np.pi)) * (x + 0.044715 * tf.pow(x, 3))))
    return {'relu': tf.nn.relu, 'silu': tf.nn.swish, 'elu': tf.nn.elu, 'softplus': tf.nn.softplus}[act]


def _calibrate(tf, v, h, mean, var):
    """Random weights with BN statistics of the network's own activations (as after training), so that the
    activations keep their scale through 50 layers and the logits depend on the image."""
    m, s = tf.nn.moments(h, axes=[0, 1, 2])
    v[mean], v[var] = m.numpy().reshape(v[mean].shape), s.numpy().reshape(v[var].shape)


def tf_sat_resnet(tf, v, x, act, layers=(3, 4, 6, 3), calibrate=False):
    """SAT's resnet_backbone (NHWC here: TF's CPU convs take no NCHW) on RGB images in [0, 1] (N, 3, H, W).
    With `calibrate`, first sets every BN's moving statistics to the batch's."""
    image = np.transpose(x.numpy(), (0, 2, 3, 1))[..., ::-1] * 255.0  # the dataflow's BGR uint8 range
    h = tf.constant(image * (2.0 / 255) - 1.0, tf.float32)  # adv_model.image_preprocess

    def bn(h, scope):
        if calibrate:
            _calibrate(tf, v, h, f'{scope}/bn/mean/EMA', f'{scope}/bn/variance/EMA')
        return tf.nn.batch_normalization(h, v[f'{scope}/bn/mean/EMA'], v[f'{scope}/bn/variance/EMA'],
                                         v[f'{scope}/bn/beta'], v[f'{scope}/bn/gamma'], 1e-5)

    def conv(h, scope, stride=1, padding='SAME'):
        return tf.nn.conv2d(h, v[f'{scope}/W'], stride, padding)

    def fixed_padding(h, k):
        beg = (k - 1) // 2
        return tf.pad(h, [[0, 0], [beg, k - 1 - beg], [beg, k - 1 - beg], [0, 0]])

    h = _tf_activation(tf, act, v, 'conv0')(bn(conv(fixed_padding(h, 7), 'conv0', 2, 'VALID'), 'conv0'))
    h = tf.nn.max_pool2d(h, 3, 2, 'SAME')
    for g, n in enumerate(layers):
        for b in range(n):
            s, stride = f'group{g}/block{b}', (2 if g > 0 and b == 0 else 1)
            y = _tf_activation(tf, act, v, f'{s}/conv1')(bn(conv(h, f'{s}/conv1'), f'{s}/conv1'))
            y = conv(fixed_padding(y, 3), f'{s}/conv2', 2, 'VALID') if stride == 2 else conv(y, f'{s}/conv2')
            y = _tf_activation(tf, act, v, f'{s}/conv2')(bn(y, f'{s}/conv2'))
            y = bn(conv(y, f'{s}/conv3'), f'{s}/conv3')
            shortcut = (bn(conv(h, f'{s}/convshortcut', stride), f'{s}/convshortcut') if f'{s}/convshortcut/W' in v
                        else h)
            h = _tf_activation(tf, act, v, s)(y + shortcut)
    h = tf.reduce_mean(h, [1, 2])
    return torch.from_numpy((tf.matmul(h, v['linear/W']) + v['linear/b']).numpy())


# EfficientNet/efficientnet_builder.py: _DEFAULT_BLOCKS_ARGS as (repeats, kernel, stride, expand, in, out), se 0.25
_BLOCKS_ARGS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
_PARAMS = {'b0': (1.0, 1.0), 'b1': (1.0, 1.1), 'b2': (1.1, 1.2), 'b3': (1.2, 1.4), 'b4': (1.4, 1.8),
           'b5': (1.6, 2.2), 'b6': (1.8, 2.6), 'b7': (2.0, 3.1), 'l1': (3.9, 3.7)}
_MODEL_NAME = {**{s: f'efficientnet-{s}' for s in _PARAMS}, 'l1': 'efficientnet-bL1'}


def _round_filters(filters, width):
    filters *= width
    new = max(8, int(filters + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * filters else new)


def sat_efficientnet_blocks(size):
    width, depth = _PARAMS[size]
    blocks = []
    for r, k, s, e, cin, cout in _BLOCKS_ARGS:
        cin, cout = _round_filters(cin, width), _round_filters(cout, width)
        for i in range(int(math.ceil(depth * r))):
            blocks.append(dict(k=k, s=s if i == 0 else 1, e=e, cin=cin if i == 0 else cout, cout=cout))
    return blocks


def sat_efficientnet_shapes(size, bn_shape=lambda c: (1, 1, 1, 1, c)):
    """name -> shape of efficientnet_model.Model's variables, layers named in call order as tf.layers does."""
    width, _ = _PARAMS[size]
    p, shapes = _MODEL_NAME[size], {}

    def bn(scope, c):
        for leaf in ('gamma', 'beta', 'moving_mean', 'moving_variance'):
            shapes[f'{scope}/{leaf}'] = bn_shape(c)

    stem = _round_filters(32, width)
    shapes[f'{p}/stem/conv2d/kernel'] = (3, 3, 3, stem)
    bn(f'{p}/stem/tpu_batch_normalization', stem)
    for i, b in enumerate(sat_efficientnet_blocks(size)):
        q, mid = f'{p}/blocks_{i}', b['cin'] * b['e']
        convs = iter(('conv2d', 'conv2d_1'))
        bns = iter(('tpu_batch_normalization', 'tpu_batch_normalization_1', 'tpu_batch_normalization_2'))
        if b['e'] != 1:
            shapes[f'{q}/{next(convs)}/kernel'] = (1, 1, b['cin'], mid)
            bn(f'{q}/{next(bns)}', mid)
        shapes[f'{q}/depthwise_conv2d/depthwise_kernel'] = (b['k'], b['k'], mid, 1)
        bn(f'{q}/{next(bns)}', mid)
        reduced = max(1, int(b['cin'] * 0.25))
        shapes[f'{q}/se/conv2d/kernel'], shapes[f'{q}/se/conv2d/bias'] = (1, 1, mid, reduced), (reduced,)
        shapes[f'{q}/se/conv2d_1/kernel'], shapes[f'{q}/se/conv2d_1/bias'] = (1, 1, reduced, mid), (mid,)
        shapes[f'{q}/{next(convs)}/kernel'] = (1, 1, mid, b['cout'])
        bn(f'{q}/{next(bns)}', b['cout'])
    head = _round_filters(1280, width)
    shapes[f'{p}/head/conv2d/kernel'] = (1, 1, _round_filters(320, width), head)
    bn(f'{p}/head/tpu_batch_normalization', head)
    shapes[f'{p}/head/dense/kernel'], shapes[f'{p}/head/dense/bias'] = (head, 1000), (1000,)
    return shapes


def sat_efficientnet_variables(size, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    v = {}
    for name, shape in sat_efficientnet_shapes(size, **kwargs).items():
        leaf = name.rsplit('/', 1)[1]
        if leaf in ('kernel', 'depthwise_kernel') and len(shape) == 2:  # head/dense: logits of order 1 (pooled
            value = 0.05 * rng.standard_normal(shape) / math.sqrt(shape[0])  # swish features reach ~50 here)
        elif leaf in ('kernel', 'depthwise_kernel'):
            fan_in = shape[0] * shape[1] * (1 if leaf == 'depthwise_kernel' else shape[2])
            value = rng.standard_normal(shape) / math.sqrt(fan_in)
        elif leaf == 'gamma':
            value = 1 + 0.1 * rng.standard_normal(shape)
        elif leaf == 'moving_variance':
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        v[name] = value.astype(np.float32)
    v['global_step'] = np.int64(218_949)
    return v


def tf_sat_efficientnet(tf, v, x, size, calibrate=False):
    """efficientnet_model.Model (eval: BN eps 1e-5 as the README runs it, swish, TF 'SAME') on RGB [0, 1] images."""
    p = _MODEL_NAME[size]
    h = tf.constant(np.transpose(x.numpy(), (0, 2, 3, 1)) * 255.0 * (2.0 / 255) - 1.0, tf.float32)  # sat_preprocessing

    def bn(h, scope):
        if calibrate:
            _calibrate(tf, v, h, f'{scope}/moving_mean', f'{scope}/moving_variance')
        g = {k: v[f'{scope}/{k}'].reshape(-1) for k in ('gamma', 'beta', 'moving_mean', 'moving_variance')}
        return tf.nn.batch_normalization(h, g['moving_mean'], g['moving_variance'], g['beta'], g['gamma'], 1e-5)

    h = tf.nn.swish(bn(tf.nn.conv2d(h, v[f'{p}/stem/conv2d/kernel'], 2, 'SAME'), f'{p}/stem/tpu_batch_normalization'))
    for i, b in enumerate(sat_efficientnet_blocks(size)):
        q, inputs = f'{p}/blocks_{i}', h
        convs = iter(('conv2d', 'conv2d_1'))
        bns = iter(('tpu_batch_normalization', 'tpu_batch_normalization_1', 'tpu_batch_normalization_2'))
        if b['e'] != 1:
            h = tf.nn.swish(bn(tf.nn.conv2d(h, v[f'{q}/{next(convs)}/kernel'], 1, 'SAME'), f'{q}/{next(bns)}'))
        h = tf.nn.depthwise_conv2d(h, v[f'{q}/depthwise_conv2d/depthwise_kernel'], [1, b['s'], b['s'], 1], 'SAME')
        h = tf.nn.swish(bn(h, f'{q}/{next(bns)}'))
        se = tf.reduce_mean(h, [1, 2], keepdims=True)
        se = tf.nn.swish(tf.nn.conv2d(se, v[f'{q}/se/conv2d/kernel'], 1, 'SAME') + v[f'{q}/se/conv2d/bias'])
        se = tf.nn.conv2d(se, v[f'{q}/se/conv2d_1/kernel'], 1, 'SAME') + v[f'{q}/se/conv2d_1/bias']
        h = tf.sigmoid(se) * h
        h = bn(tf.nn.conv2d(h, v[f'{q}/{next(convs)}/kernel'], 1, 'SAME'), f'{q}/{next(bns)}')
        if b['s'] == 1 and b['cin'] == b['cout']:
            h = h + inputs
    h = tf.nn.swish(bn(tf.nn.conv2d(h, v[f'{p}/head/conv2d/kernel'], 1, 'SAME'), f'{p}/head/tpu_batch_normalization'))
    h = tf.reduce_mean(h, [1, 2])
    return torch.from_numpy((tf.matmul(h, v[f'{p}/head/dense/kernel']) + v[f'{p}/head/dense/bias']).numpy())


def _assert_same_logits(got, expected):
    spread = float((expected[0] - expected[1]).abs().max())
    assert spread > 0.1, f'the logits hardly depend on the image ({spread:.2e}): the comparison would mean little'
    err = float((got - expected).abs().max())
    assert err <= ATOL, f'max |logit difference| {err:.2e}, logits up to {float(expected.abs().max()):.2f}'


def _shapes(variables):
    return {k: tuple(np.shape(a)) for k, a in variables.items()}


def _small_resnet(act, **kwargs):
    return timm.create_model(f'robust_zoo/resnet50_{act}_at.sat_in1k', channels=SMALL, num_classes=10, **kwargs).eval()


# --- the tagged models --------------------------------------------------------------------------------------------

def test_targets_and_sources_are_registered_with_tf_as_an_optional_requirement():
    names = {t.name for t in list_targets() if t.source.startswith('sat-')}
    assert {f'resnet50_{a}_at.sat_in1k' for a in SAT_ACTS} <= names
    assert ({f'efficientnet_{s}_silu_at.sat_in1k' for s in _PARAMS}
            | {'efficientnet_l1_silu_at.sat_enhanced_in1k'}) <= names
    assert SOURCES['sat-resnet50'].requires == SOURCES['sat-efficientnet'].requires == 'robust-zoo[convert-tf]'
    for name in names:
        target = TARGETS[name]
        assert target.license == 'mit' and target.eval_threat_models == ('imagenet-linf-sat',), name
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.threat_model == 'imagenet-linf-sat' and cfg.hf_hub_id is None, name  # filled at load time
        assert cfg.input_mean == cfg.input_std == (0.5, 0.5, 0.5), name
        assert all(r.threat_model == 'imagenet-linf-sat' and r.n_examples == 50000 for r in target.reported), name


def test_converted_targets_are_not_listed_as_published_weights():
    listed = robust_zoo.list_models(pretrained=True)
    assert not any('.sat_' in name for name in listed)


def test_reported_numbers_are_the_readme_table():
    silu = {r.attack: (r.clean, r.robust) for r in TARGETS['resnet50_silu_at.sat_in1k'].reported}
    assert silu['PGD-10'] == (0.697, 0.430) and silu['PGD-20'] == (0.697, 0.422) and silu['PGD-50'] == (0.697, 0.419)
    relu = {r.attack: r.robust for r in TARGETS['resnet50_relu_at.sat_in1k'].reported}
    assert relu['PGD-10'] == 0.353 and relu['PGD-50'] == 0.331
    assert TARGETS['resnet50_softplus_at.sat_in1k'].reported == ()
    (l1,) = TARGETS['efficientnet_l1_silu_at.sat_enhanced_in1k'].reported
    assert (l1.clean, l1.robust) == (0.822, 0.586)
    assert TARGETS['efficientnet_l1_silu_at.sat_enhanced_in1k'].extra['ema'] is True
    assert TARGETS['efficientnet_l1_silu_at.sat_in1k'].extra['ema'] is False


def test_untagged_models_stay_the_default_and_tags_build_the_sat_network_without_weights():
    plain = timm.create_model('resnet50_gelu_at', device='meta')
    assert type(plain.maxpool) is nn.MaxPool2d and plain.pretrained_cfg['threat_model'] == 'imagenet-linf'
    assert timm.models.get_pretrained_cfg('efficientnet_b0_silu_at').threat_model == 'imagenet-linf'
    gelu = timm.create_model('robust_zoo/resnet50_gelu_at.sat_in1k', device='meta')
    assert isinstance(gelu.maxpool, MaxPool2dSame) and isinstance(gelu.act1, GELUTanh)
    assert isinstance(gelu.layer4[2].act3, GELUTanh)
    softplus = timm.create_model('robust_zoo/resnet50_softplus_at.sat_in1k', device='meta')
    assert isinstance(softplus.act1, ParametricSoftplus) and softplus.act1.alpha == 1.0
    smooth = timm.create_model('robust_zoo/resnet50_smoothrelu_at.sat_in1k', device='meta')
    assert smooth.act1 is not smooth.layer1[0].act1 and isinstance(smooth.layer1[0].act3, SmoothReLU)
    from timm.layers import Conv2dSame
    eff = timm.create_model('robust_zoo/efficientnet_b0_silu_at.sat_in1k', device='meta')
    assert isinstance(eff.conv_stem, Conv2dSame) and eff.pretrained_cfg['crop_pct'] == pytest.approx(224 / 256)


def test_resnet_options_reject_unknown_values():
    with pytest.raises(ValueError, match='stem_pool'):
        timm.create_model('resnet18_relu_at', stem_pool='same', device='meta')
    with pytest.raises(ValueError, match='gelu_approximate'):
        timm.create_model('resnet18_gelu_at', gelu_approximate='erf', device='meta')


# --- names and shapes (no TensorFlow needed) ---------------------------------------------------------------------

def test_resnet50_names_map_one_to_one_and_design_extras_are_ignored():
    model = timm.create_model('robust_zoo/resnet50_smoothrelu_at.sat_in1k', device='meta')
    v = sat_resnet_variables('smoothrelu', extras=True)
    plan = sat.plan_sat_resnet(_shapes(v), model)
    assert set(plan) == {k for k in model.state_dict()
                         if not k.endswith('num_batches_tracked') and 'normalize' not in k}
    assert plan['conv1.weight'] == ('conv0/W', 'conv_bgr') and plan['fc.weight'] == ('linear/W', 'dense')
    assert plan['layer2.0.downsample.1.running_var'] == ('group1/block0/convshortcut/bn/variance/EMA', 'vec')
    assert plan['layer3.5.act3.beta_raw'] == ('group2/block5/smoothrelu_beta', 'scalar')
    assert plan['layer3.5.act2.beta_raw'] == ('group2/block5/conv2/smoothrelu_beta', 'scalar')
    used = {name for name, _ in plan.values()}
    assert set(v) - used == {'global_step', 'learning_rate', 'conv0/W/Momentum', 'linear/W/Momentum',
                             'EMA/xentropy-loss'}


@pytest.mark.parametrize('change, message', [
    (lambda v: v.update({'group1/block0/conv4/W': np.zeros((1, 1, 2, 2))}), 'group1/block0/conv4/W'),
    (lambda v: v.update({'aux_logits/W': np.zeros((2, 2))}), 'aux_logits/W'),
    (lambda v: v.pop('group2/block3/conv2/bn/gamma'), 'layer3.3.bn2.weight'),
    (lambda v: v.update({'group0/block1/conv2/W': np.zeros((3, 3, 8, 9))}), r'group0/block1/conv2/W \[3, 3, 8, 9\]'),
    (lambda v: v.update({'group3/block3/conv1/W': np.zeros((1, 1, 256, 64))}),
     r'no place in ResNetAT.*group3/block3/conv1/W'),
])
def test_resnet_unmapped_missing_or_misshapen_variables_are_named(change, message):
    model = _small_resnet('silu', device='meta')
    v = sat_resnet_variables('silu', widths=SMALL, num_classes=10)
    change(v)
    with pytest.raises(ConversionError, match=message):
        sat.plan_sat_resnet(_shapes(v), model)


def test_resnet_activation_mismatch_is_caught_through_smoothrelu_betas():
    with pytest.raises(ConversionError, match=r'conv0/smoothrelu_beta \(-> act1.beta_raw\)'):
        sat.plan_sat_resnet(_shapes(sat_resnet_variables('smoothrelu', widths=SMALL, num_classes=10)),
                            _small_resnet('silu', device='meta'))
    with pytest.raises(ConversionError, match='act1.beta_raw'):
        sat.plan_sat_resnet(_shapes(sat_resnet_variables('silu', widths=SMALL, num_classes=10)),
                            _small_resnet('smoothrelu', device='meta'))


@pytest.mark.parametrize('size', list(_PARAMS))
def test_every_efficientnet_size_maps_by_name_and_shape(size):
    """L1 included (273M parameters on the meta device): the converter is size-generic."""
    model = timm.create_model(f'robust_zoo/efficientnet_{size}_silu_at.sat_in1k', device='meta')
    plan = sat.plan_sat_efficientnet(sat_efficientnet_shapes(size), model)
    assert set(plan) == {k for k in model.state_dict()
                         if not k.endswith('num_batches_tracked') and 'normalize' not in k}
    assert len({source for source, _ in plan.values()}) == len(plan)  # one checkpoint variable per weight


def test_efficientnet_block_layers_map_in_call_order():
    model = timm.create_model('robust_zoo/efficientnet_b0_silu_at.sat_in1k', device='meta')
    shapes = sat_efficientnet_shapes('b0', bn_shape=lambda c: (c,))  # the standard TF layout is accepted too
    plan = sat.plan_sat_efficientnet(shapes, model)
    p = 'efficientnet-b0'
    assert plan['blocks.0.0.conv_pw.weight'] == (f'{p}/blocks_0/conv2d/kernel', 'conv')  # expand ratio 1: project
    assert plan['blocks.0.0.bn2.weight'][0] == f'{p}/blocks_0/tpu_batch_normalization_1/gamma'
    assert plan['blocks.1.0.conv_pw.weight'][0] == f'{p}/blocks_1/conv2d/kernel'  # expand
    assert plan['blocks.1.0.conv_pwl.weight'][0] == f'{p}/blocks_1/conv2d_1/kernel'  # project
    assert plan['blocks.1.1.bn3.running_var'][0] == f'{p}/blocks_2/tpu_batch_normalization_2/moving_variance'
    assert plan['blocks.6.0.conv_dw.weight'] == (f'{p}/blocks_15/depthwise_conv2d/depthwise_kernel', 'dw')
    assert plan['blocks.6.0.se.conv_expand.bias'][0] == f'{p}/blocks_15/se/conv2d_1/bias'
    assert plan['classifier.weight'] == (f'{p}/head/dense/kernel', 'dense')


def test_efficientnet_ema_shadows_replace_the_weights_only_for_the_enhanced_target():
    model = timm.create_model('robust_zoo/efficientnet_b0_silu_at.sat_in1k', device='meta')
    shapes = sat_efficientnet_shapes('b0')
    shapes.update({f'{k}{sat.EMA_SUFFIX}': s for k, s in list(shapes.items())})
    shapes.update({'efficientnet-b0/stem/conv2d/kernel/RMSProp': (3, 3, 3, 32), 'global_step': ()})
    raw = sat.plan_sat_efficientnet(shapes, model)
    assert not any(name.endswith(sat.EMA_SUFFIX) for name, _ in raw.values())
    ema = sat.plan_sat_efficientnet(shapes, model, ema=True)
    assert all(name.endswith(sat.EMA_SUFFIX) for name, _ in ema.values()) and set(ema) == set(raw)
    enhanced = timm.create_model('robust_zoo/efficientnet_l1_silu_at.sat_enhanced_in1k', device='meta')
    assert sat._target_extra(enhanced)['ema'] and not sat._target_extra(model)['ema']  # what load_* uses by default
    del shapes[f'efficientnet-b0/head/dense/bias{sat.EMA_SUFFIX}']
    with pytest.raises(ConversionError, match=r'head/dense/bias \(has no /ExponentialMovingAverage shadow'):
        sat.plan_sat_efficientnet(shapes, model, ema=True)


def test_efficientnet_size_mismatch_and_extra_variables_are_named():
    b0 = timm.create_model('robust_zoo/efficientnet_b0_silu_at.sat_in1k', device='meta')
    with pytest.raises(ConversionError, match='the checkpoint is efficientnet-b1, the target efficientnet_b0_silu_at'):
        sat.plan_sat_efficientnet(sat_efficientnet_shapes('b1'), b0)
    shapes = sat_efficientnet_shapes('b0')
    shapes['efficientnet-b0/blocks_3/space2depth/conv2d/kernel'] = (2, 2, 24, 24)
    with pytest.raises(ConversionError, match='blocks_3/space2depth/conv2d/kernel'):
        sat.plan_sat_efficientnet(shapes, b0)


def test_checkpoint_paths_accept_index_data_prefix_and_folder(tmp_path):
    for suffix in ('.index', '.data-00000-of-00001', '.meta'):
        (tmp_path / f'Res50-silu{suffix}').write_bytes(b'')
    prefix = tmp_path / 'Res50-silu'
    for given in (prefix, tmp_path / 'Res50-silu.index', tmp_path / 'Res50-silu.data-00000-of-00001', tmp_path):
        assert sat.checkpoint_prefix(given) == prefix
    with pytest.raises(ConversionError, match='Res50-relu.index not found'):
        sat.checkpoint_prefix(tmp_path / 'Res50-relu.index')


def test_missing_tensorflow_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / 'Res50-silu.index').write_bytes(b'')
    monkeypatch.setitem(sys.modules, 'tensorflow', None)  # `import tensorflow` raises ImportError
    with pytest.raises(ConversionError, match=r"pip install 'robust-zoo\[convert-tf\]'"):
        convert('sat-resnet50', tmp_path / 'Res50-silu.index', 'resnet50_silu_at.sat_in1k')


def test_a_model_built_without_the_tag_is_refused(tmp_path):
    (tmp_path / 'x.index').write_bytes(b'')
    with pytest.raises(ConversionError, match='input_mean = input_std = 0.5'):
        sat.load_sat_resnet(tmp_path / 'x.index', timm.create_model('resnet50_silu_at', channels=SMALL, num_classes=10))
    model = _small_resnet('silu')
    model.maxpool = nn.MaxPool2d(3, 2, 1)
    with pytest.raises(ConversionError, match="stem_pool='tf_same'"):
        sat.load_sat_resnet(tmp_path / 'x.index', model)
    with pytest.raises(ConversionError, match='tanh approximation'):
        sat.load_sat_resnet(tmp_path / 'x.index', _small_resnet('gelu', gelu_approximate='none'))
    with pytest.raises(ConversionError, match='alpha 10'):
        sat.load_sat_resnet(tmp_path / 'x.index', _small_resnet('softplus', act_kwargs=dict(alpha=10.0)))
    with pytest.raises(ConversionError, match="pad_type='same'"):
        sat.load_sat_efficientnet(tmp_path / 'x.index', timm.create_model(
            'robust_zoo/efficientnet_b0_silu_at.sat_in1k', pad_type=''))


def test_pretrained_without_converted_weights_names_the_command_and_the_hub_repo(tmp_path, monkeypatch):
    from huggingface_hub import constants as hf_constants
    monkeypatch.setitem(_pretrained._state, 'cards_dir', str(tmp_path / 'cards'))
    monkeypatch.setenv('ROBUST_ZOO_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    name = 'resnet50_silu_at.sat_in1k'
    with pytest.raises(RuntimeError) as e:
        timm.create_model(f'robust_zoo/{name}', pretrained=True)
    text = str(e.value)
    assert f'`robust-zoo fetch {name}`' in text
    assert f'robust-zoo convert sat-resnet50 CHECKPOINT --model {name} --card' in text
    assert f'{_pretrained.hf_org()}/{name}' in text and 'download_resnet.py --model_name Res50-silu' in text
    assert text == missing_weights_message(name)


# --- numbers, with TensorFlow ------------------------------------------------------------------------------------

@needs_tf
@pytest.mark.parametrize('act', SAT_ACTS)
def test_activation_math_matches_the_source(tf, act):
    """resnet_model.activation_list vs the tagged model's modules: tanh GELU, softplus a=1, SmoothReLU's b = beta^2."""
    module = _small_resnet(act).layer2[1].act2
    v = {}
    if act == 'smoothrelu':
        module.beta_raw.data.fill_(2.5)
        v['s/smoothrelu_beta'] = np.array([2.5], np.float32)
    x = torch.linspace(-6, 6, 2001)
    expected = _tf_activation(tf, act, v, 's')(tf.constant(x.numpy())).numpy()
    with torch.no_grad():
        torch.testing.assert_close(module(x), torch.from_numpy(expected), rtol=0, atol=2e-6)


@needs_tf
def test_checkpoints_list_exactly_the_written_names(tf, tmp_path):
    """The TF1 graph Saver (what tensorpack runs) and the fast SaveV2 writer give the same name-based checkpoint."""
    v = sat_resnet_variables('smoothrelu', widths=SMALL)
    prefix = write_tf1_checkpoint(tf, tmp_path / 'saver' / 'Res50-smoothrelu', v)
    assert (tmp_path / 'saver' / 'Res50-smoothrelu.meta').is_file()
    assert set(tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map()) == set(v)
    fast = sat.TFCheckpoint(write_tf1_checkpoint(tf, tmp_path / 'Res50-smoothrelu', v, graph_saver=False))
    saver = sat.TFCheckpoint(tmp_path / 'saver' / 'Res50-smoothrelu.index')
    assert saver.shapes == fast.shapes == _shapes(v)
    for name in ('conv0/W', 'group3/block2/smoothrelu_beta', 'linear/b'):
        assert torch.equal(saver.get(name), torch.from_numpy(v[name])) and torch.equal(fast.get(name), saver.get(name))


@needs_tf
@pytest.mark.parametrize('act', SAT_ACTS)
def test_resnet_logits_match_the_source_forward(tf, tmp_path, act):
    v = sat_resnet_variables(act, widths=SMALL, num_classes=10, seed=SAT_ACTS.index(act))
    tf_sat_resnet(tf, v, _images(16, seed=99), act, calibrate=True)
    prefix = write_tf1_checkpoint(tf, tmp_path / f'Res50-{act}', v, graph_saver=False)
    model = _small_resnet(act)
    model.load_state_dict(sat.load_sat_resnet(f'{prefix}.index', model))
    x = _images()
    expected = tf_sat_resnet(tf, v, x, act)
    with torch.no_grad():
        got = model(x)
        _assert_same_logits(got, expected)
        model.maxpool = nn.MaxPool2d(3, 2, 1)  # the comparison sees the stem pool's padding
        assert (model(x) - expected).abs().max() > 100 * ATOL


@needs_tf
def test_efficientnet_b0_logits_match_the_source_forward(tf, tmp_path):
    v = sat_efficientnet_variables('b0')
    tf_sat_efficientnet(tf, v, _images(16, seed=99), 'b0', calibrate=True)
    prefix = write_tf1_checkpoint(tf, tmp_path / 'efficientnet-b0', v, graph_saver=False)
    model = timm.create_model('robust_zoo/efficientnet_b0_silu_at.sat_in1k').eval()
    model.load_state_dict(sat.load_sat_efficientnet(f'{prefix}.data-00000-of-00001', model))
    x = _images()
    expected = tf_sat_efficientnet(tf, v, x, 'b0')
    with torch.no_grad():
        got = model(x)
    _assert_same_logits(got, expected)
    pytorch_padding = timm.create_model('robust_zoo/efficientnet_b0_silu_at.sat_in1k', pad_type='').eval()
    pytorch_padding.load_state_dict(model.state_dict())
    with torch.no_grad():  # the comparison sees padding: PyTorch's symmetric padding gives other logits
        assert (pytorch_padding(x) - expected).abs().max() > 100 * ATOL


@needs_tf
def test_convert_cli_card_loads_with_pretrained_true(tf, tmp_path, monkeypatch):
    """The full ResNet-50 (1000 classes) through `robust-zoo convert ... --card`, then pretrained=True."""
    name = 'resnet50_silu_at.sat_in1k'
    v = sat_resnet_variables('silu', seed=7)
    tf_sat_resnet(tf, v, _images(16, seed=99), 'silu', calibrate=True)
    prefix = write_tf1_checkpoint(tf, tmp_path / 'Res50-silu', v, graph_saver=False)
    cards = tmp_path / 'cards'
    assert cli(['convert', 'sat-resnet50', f'{prefix}.index', '--model', name, '--card', '--out', str(cards)]) == 0
    assert {p.name for p in (cards / name).iterdir()} >= {'model.safetensors', 'config.json', 'README.md'}
    assert 'REPORTED' in (cards / name / 'README.md').read_text()
    monkeypatch.setitem(_pretrained._state, 'cards_dir', str(cards))
    model = timm.create_model(f'robust_zoo/{name}', pretrained=True).eval()
    x = _images(seed=1)
    with torch.no_grad():
        got = model(x)
    expected = tf_sat_resnet(tf, v, x, 'silu')
    _assert_same_logits(got, expected)


@needs_tf
def test_convert_rejects_a_checkpoint_with_an_unknown_variable(tf, tmp_path):
    v = sat_resnet_variables('relu', widths=SMALL, num_classes=10)
    v['group0/block0/conv2/W/Adam'] = np.zeros((3, 3, 8, 8), np.float32)
    prefix = write_tf1_checkpoint(tf, tmp_path / 'Res50-relu', v, graph_saver=False)
    with pytest.raises(ConversionError, match='group0/block0/conv2/W/Adam'):
        sat.load_sat_resnet(prefix, _small_resnet('relu'))
