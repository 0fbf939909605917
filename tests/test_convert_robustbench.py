"""robust-zoo convert robustbench-*: RobustBench's CIFAR-10 WRNs (PAF_WideResNet, DMWideResNet) -> rz_wide_resnet.

The references are RobustBench's own architecture files, loaded one by one from the installed robustbench
1.1.1 wheel (its package `__init__` needs modules PyPI's wheel lacks); checkpoints are synthetic: random
weights, BatchNorm statistics and PSSiLU parameters, saved in RobustBench's layout.
"""
import importlib.metadata
import importlib.util

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from timm.models import get_pretrained_cfg
from torch import nn

from robust_zoo.models import _pretrained
from robust_zoo.cli import main
from robust_zoo.convert import SOURCES, TARGETS, ConversionError, check_state_dict, convert
from robust_zoo.convert.robustbench import DM_SOURCE, PAF_SOURCE, map_state_dict, read_state_dict

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
DAI = 'wrn_28_10_pssilu_at.rb_dai2021'
RB_TARGETS = sorted(n for n, t in TARGETS.items() if t.source in (PAF_SOURCE, DM_SOURCE))
DM_TARGETS = [n for n in RB_TARGETS if TARGETS[n].source == DM_SOURCE]


def _robustbench_file(name):
    """One architecture module of the installed robustbench wheel, imported under a private name."""
    try:
        dist = importlib.metadata.distribution('robustbench')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('robustbench is not installed: `make .venv/.test-extras` installs it '
                    '(pip --no-deps robustbench==1.1.1)')
    rel = f'robustbench/model_zoo/architectures/{name}.py'
    files = [f for f in dist.files or () if str(f).replace('\\', '/') == rel]
    assert files, f'robustbench {dist.version} has no {rel}'
    spec = importlib.util.spec_from_file_location(f'_robustbench_{name}_for_tests', dist.locate_file(files[0]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def paf():
    return _robustbench_file('paf_wide_resnet')


@pytest.fixture(scope='module')
def dm():
    return _robustbench_file('dm_wide_resnet')


def _randomize(model, seed=0):
    """Move every BN (affine and running stats) and PSSiLU parameter off its init; convs keep their random init.

    The running stats start as those of a random batch, so that every layer's activations are O(1) and the logits
    depend on the input (with arbitrary stats they hardly do, and a 1e-4 tolerance would check little)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('activation.alpha'):
                t.fill_(-1.7)  # the layer uses |alpha|, |beta|
            elif name.endswith('activation.beta'):
                t.fill_(-0.3)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch gives its own statistics
        model.train()(torch.rand(8, 3, 32, 32, generator=g))
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=g))
            bn.running_mean.add_(0.1 * torch.randn(bn.running_mean.shape, generator=g) * bn.running_var.sqrt())
            bn.running_var.mul_(torch.rand(bn.running_var.shape, generator=g) * 0.4 + 0.8)
            bn.num_batches_tracked.fill_(123)
    return model.eval()


def _images(n=4, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _max_diff(reference, model):
    x = _images()
    with torch.no_grad():
        expected = reference(x)
        assert expected.std(0).mean() > 1e-2  # the logits depend on the input, far beyond the tolerance
        return (expected - model(x)).abs().max().item()


def _paf_ref(paf, depth=16, width=2):
    torch.manual_seed(0)
    return _randomize(paf.PAF_WideResNet(paf.PSSiLU(), depth=depth, widen_factor=width, num_classes=10))


def _dm_ref(dm, depth=16, width=2, act=None):
    torch.manual_seed(0)
    return _randomize(dm.DMWideResNet(num_classes=10, depth=depth, width=width, activation_fn=act or dm.Swish,
                                      mean=dm.CIFAR10_MEAN, std=dm.CIFAR10_STD))


def _save(state, path, layout):
    """RobustBench's .pt layouts: the state dict itself, wrapped, and DataParallel's 'module.' names."""
    if layout in ('module', 'state_dict+module'):
        state = {f'module.{k}': v for k, v in state.items()}
    if layout.startswith('state_dict'):
        state = {'state_dict': state, 'epoch': 3}
    elif layout == 'model_state_dict':
        state = {'model_state_dict': state}
    torch.save(state, path)
    return path


def _load(source, path, name, **kwargs):
    model = timm.create_model(f'robust_zoo/{name}', **kwargs).eval()
    state = SOURCES[source].load(path, model)
    check_state_dict(state, model, source)
    model.load_state_dict(state, strict=True)
    return model


# --- numerics ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('layout', ['plain', 'state_dict', 'model_state_dict', 'module', 'state_dict+module'])
def test_paf_wrn_16_2_logits_match(paf, tmp_path, layout):
    reference = _paf_ref(paf)
    path = _save(reference.state_dict(), tmp_path / 'ckpt.pt', layout)
    model = _load(PAF_SOURCE, path, DAI, depth=16, width=2)
    assert model.shared_act.alpha.item() == pytest.approx(-1.7) and model.shared_act.beta.item() == pytest.approx(-0.3)
    assert model.stages[1][0].bn1.num_batches_tracked.item() == 123
    assert _max_diff(reference, model) <= 1e-4


@pytest.mark.parametrize('act', ['swish', 'silu'])
@pytest.mark.parametrize('layout', ['plain', 'state_dict+module'])
def test_dm_wrn_16_2_logits_match(dm, tmp_path, act, layout):
    reference = _dm_ref(dm, act=dm.Swish if act == 'swish' else nn.SiLU)
    path = _save(reference.state_dict(), tmp_path / 'ckpt.pt', layout)
    model = _load(DM_SOURCE, path, 'wrn_28_10_silu_at.rb_gowal2020_28_10_extra', depth=16, width=2)
    assert _max_diff(reference, model) <= 1e-4


def test_dm_padding_is_what_makes_the_difference(dm, tmp_path):
    """The same weights in the symmetric-padding style give other logits: the test above checks the padding."""
    reference = _dm_ref(dm)
    path = _save(reference.state_dict(), tmp_path / 'ckpt.pt', 'plain')
    model = _load(DM_SOURCE, path, 'wrn_28_10_silu_at.rb_wang2023_28_10', depth=16, width=2)
    symmetric = timm.create_model('robust_zoo/wrn_28_10_silu_at', depth=16, width=2).eval()
    symmetric.load_state_dict(model.state_dict())
    assert _max_diff(reference, symmetric) > 1e-3


def test_dm_wrn_28_10_exact_robustbench_model_through_convert(dm, tmp_path):
    """Wang2023Better_WRN-28-10 as model_zoo/cifar10.py builds it (nn.SiLU), DataParallel names."""
    reference = _dm_ref(dm, depth=28, width=10, act=nn.SiLU)
    path = tmp_path / 'Wang2023Better_WRN-28-10.pt'
    torch.save(nn.DataParallel(reference).state_dict(), path)
    model = convert(DM_SOURCE, path, 'robust_zoo/wrn_28_10_silu_at.rb_wang2023_28_10')
    assert not model.training
    assert _max_diff(reference, model) <= 1e-4


@pytest.mark.parametrize('name', DM_TARGETS)
def test_dm_targets_names_and_shapes_of_the_full_size_models(dm, name):
    """Every DM target against RobustBench's constructor at full size, on the meta device (no memory)."""
    depth, width = (int(v) for v in name.split('_')[1:3])
    with torch.device('meta'):
        reference = dm.DMWideResNet(num_classes=10, depth=depth, width=width, activation_fn=dm.Swish,
                                    mean=dm.CIFAR10_MEAN, std=dm.CIFAR10_STD)
    model = timm.create_model(f'robust_zoo/{name}', device='meta')
    assert set(reference.state_dict()).isdisjoint({'mean', 'std'})  # DM's constants are not in its state dict
    check_state_dict(map_state_dict(reference.state_dict(), model, DM_SOURCE), model, DM_SOURCE)


def test_cli_card_then_pretrained_loads_the_dai_model(paf, tmp_path, monkeypatch):
    """Dai2021Parameterizing at full size, as RobustBench builds it (pssilu_wrn_28_10), through the CLI's --card."""
    torch.manual_seed(0)
    reference = _randomize(paf.pssilu_wrn_28_10(num_classes=10))
    path = tmp_path / 'Dai2021Parameterizing.pt'
    torch.save({'state_dict': nn.DataParallel(reference).state_dict()}, path)
    cards = tmp_path / 'cards'
    assert main(['convert', PAF_SOURCE, str(path), '--model', DAI, '--card', '--out', str(cards)]) == 0
    folder = cards / DAI
    assert {p.name for p in folder.iterdir()} >= {'model.safetensors', 'config.json', 'README.md', 'conversion.json'}
    card = (folder / 'README.md').read_text()
    assert 'REPORTED' in card and '87.02' in card and '61.55' in card

    monkeypatch.setitem(_pretrained._state, 'cards_dir', cards)
    model = timm.create_model(f'robust_zoo/{DAI}', pretrained=True).eval()
    assert model.pretrained_cfg['arch_args'] == {'style': 'wrn'}
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.zeros(3))
    assert _max_diff(reference, model) <= 1e-4


# --- errors -------------------------------------------------------------------------------------------------

def _dm_state(dm):
    return dict(_dm_ref(dm, depth=10, width=1).state_dict())


def _dm_target():
    return timm.create_model('robust_zoo/wrn_28_10_silu_at.rb_gowal2020_28_10_extra', depth=10, width=1)


@pytest.mark.parametrize('edit, match', [
    (lambda s: s.update({'extra.weight': torch.zeros(3)}), r'1 checkpoint tensors have no place.*extra\.weight'),
    (lambda s: s.pop('layer.1.block.0.conv_0.weight'),
     r'1 tensors of robustbench-dm-wrn are missing.*layer\.1\.block\.0\.conv_0\.weight'),
    (lambda s: s.update({'logits.weight': torch.zeros(11, 64)}),
     r'shapes differ.*logits\.weight \(11, 64\) -> head\.fc\.weight \(10, 64\)'),
])
def test_dm_checkpoint_that_does_not_fit_names_the_tensor(dm, tmp_path, edit, match):
    state = _dm_state(dm)
    edit(state)
    path = _save(state, tmp_path / 'ckpt.pt', 'plain')
    with pytest.raises(ConversionError, match=match):
        SOURCES[DM_SOURCE].load(path, _dm_target())


def test_paf_copies_of_the_shared_pssilu_must_agree(paf, tmp_path):
    state = dict(_paf_ref(paf, depth=10, width=1).state_dict())
    state['block2.layer.0.activation.alpha'] = torch.tensor([0.5])
    path = _save(state, tmp_path / 'ckpt.pt', 'plain')
    with pytest.raises(ConversionError,
                       match=r'shared_act\.alpha is one module shared.*block2\.layer\.0\.activation\.alpha'):
        SOURCES[PAF_SOURCE].load(path, timm.create_model(f'robust_zoo/{DAI}', depth=10, width=1))


def test_paf_missing_copy_of_the_shared_pssilu_is_missing(paf, tmp_path):
    state = dict(_paf_ref(paf, depth=10, width=1).state_dict())
    del state['block3.layer.0.activation.beta']
    path = _save(state, tmp_path / 'ckpt.pt', 'plain')
    with pytest.raises(ConversionError, match=r'missing.*block3\.layer\.0\.activation\.beta'):
        SOURCES[PAF_SOURCE].load(path, timm.create_model(f'robust_zoo/{DAI}', depth=10, width=1))


def test_old_checkpoints_without_batch_counters_load(dm, tmp_path):
    """PyTorch < 0.4.1 saved no num_batches_tracked; load_state_dict (and so RobustBench) accepts that."""
    state = {k: v for k, v in _dm_state(dm).items() if not k.endswith('num_batches_tracked')}
    model = _dm_target()
    out = SOURCES[DM_SOURCE].load(_save(state, tmp_path / 'ckpt.pt', 'plain'), model)
    assert out['norm.num_batches_tracked'].item() == 0
    check_state_dict(out, model, DM_SOURCE)


def test_source_refuses_a_target_of_the_other_architecture(dm, tmp_path):
    """DM weights in a symmetric-padding model, or a model normalizing otherwise, would be silently wrong."""
    path = _save(_dm_state(dm), tmp_path / 'ckpt.pt', 'plain')
    with pytest.raises(ConversionError, match=r"style='dm'"):
        SOURCES[DM_SOURCE].load(path, timm.create_model('robust_zoo/wrn_28_10_silu_at', depth=10, width=1))
    with pytest.raises(ConversionError, match='normalizes inputs with mean'):
        SOURCES[DM_SOURCE].load(path, timm.create_model('robust_zoo/wrn_28_10_silu_at', depth=10, width=1, style='dm',
                                                        pretrained_cfg_overlay=dict(input_mean=(0.5,) * 3)))
    with pytest.raises(ConversionError, match='is converted from source'):
        convert(PAF_SOURCE, path, 'wrn_28_10_silu_at.rb_wang2023_28_10')


class Payload:
    """Not a tensor: a weights_only load must refuse to build it."""

    def __init__(self):
        self.value = 1


@pytest.mark.parametrize('obj, cls', [({'state_dict': Payload()}, 'Payload'),
                                      (nn.Linear(2, 2), 'torch.nn.modules.linear.Linear')],
                         ids=['custom-class', 'pickled-module'])
def test_pickled_objects_are_refused_without_being_unpickled(tmp_path, obj, cls):
    path = tmp_path / 'ckpt.pt'
    torch.save(obj, path)
    with pytest.raises(ConversionError, match=rf'not a plain state dict: it pickles \S*{cls}, which '
                       r'torch\.load\(weights_only=True\) refused'):
        read_state_dict(path)


@pytest.mark.parametrize('obj, match', [
    ({'epoch': 3, 'acc': 0.9}, r'not a state dict: 2 entries are not tensors \(epoch, acc\)'),
    ([torch.zeros(1)], 'holds a list, not a state dict'),
    ({}, 'holds a dict, not a state dict'),
])
def test_containers_that_are_not_state_dicts_are_refused(tmp_path, obj, match):
    path = tmp_path / 'ckpt.pt'
    torch.save(obj, path)
    with pytest.raises(ConversionError, match=match):
        read_state_dict(path)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'ckpt.pt'
    path.write_bytes(b'<html>Google Drive: virus scan warning</html>')
    with pytest.raises(ConversionError, match='not a readable PyTorch checkpoint'):
        read_state_dict(path)
    path.write_bytes(b'')
    with pytest.raises(ConversionError, match='not a readable PyTorch checkpoint'):
        read_state_dict(path)


# --- registry ------------------------------------------------------------------------------------------------

def test_every_target_is_a_tagged_cfg_that_builds_its_source_architecture():
    assert len(RB_TARGETS) == 9
    for name in RB_TARGETS:
        cfg = get_pretrained_cfg(name)
        style = 'wrn' if TARGETS[name].source == PAF_SOURCE else 'dm'
        assert cfg.arch_args == {'style': style}, name
        assert cfg.hf_hub_id is None, name  # the Hub id <org>/<name> is filled in at load time
        assert tuple(cfg.input_mean) == ((0.0,) * 3 if style == 'wrn' else CIFAR10_MEAN), name
        assert timm.create_model(f'robust_zoo/{name}', device='meta').style == style, name
        reported = TARGETS[name].reported
        assert len(reported) == 1 and reported[0].threat_model == 'cifar10-linf' and reported[0].n_examples == 10000
    # not published by robust_zoo: list_models(pretrained=True) stays the published index
    assert not any('.rb_' in n for n in timm.list_models(pretrained=True))


def test_untagged_names_stay_the_plain_network():
    """The converted tags are not the architectures' defaults: no arch_args, CIFAR-10 constants, no weights."""
    for arch in ('wrn_28_10_silu_at', 'wrn_70_16_silu_at', 'wrn_28_10_pssilu_at'):
        cfg = get_pretrained_cfg(arch)
        assert cfg.tag in (None, '') and cfg.arch_args is None and not cfg.hf_hub_id, arch
        assert tuple(cfg.input_mean) == CIFAR10_MEAN and tuple(cfg.input_std) == CIFAR10_STD, arch
        assert timm.create_model(arch, device='meta').style == 'wrn', arch


def test_reported_numbers_are_robustbenchs():
    numbers = {n: (TARGETS[n].reported[0].clean, TARGETS[n].reported[0].robust) for n in RB_TARGETS}
    assert numbers[DAI] == (0.8702, 0.6155)
    assert numbers['wrn_70_16_silu_at.rb_gowal2020_70_16_extra'] == (0.9110, 0.6588)
    assert numbers['wrn_70_16_silu_at.rb_rebuffi2021_70_16_extra'] == (0.9223, 0.6658)
    assert numbers['wrn_70_16_silu_at.rb_wang2023_70_16'] == (0.9325, 0.7069)


def test_pretrained_without_converted_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hf' / 'hub'))
    monkeypatch.setitem(_pretrained._state, 'cards_dir', tmp_path / 'cards')
    monkeypatch.setenv('ROBUST_ZOO_CACHE', str(tmp_path / 'cache'))
    name = 'wrn_70_16_silu_at.rb_wang2023_70_16'
    with pytest.raises(RuntimeError) as e:
        timm.create_model(f'robust_zoo/{name}', pretrained=True, device='meta')
    message = str(e.value)
    assert f'`robust-zoo fetch {name}`' in message
    assert f'robust-zoo convert {DM_SOURCE} CHECKPOINT --model {name} --card' in message
    assert f'hf-hub:{_pretrained.hf_org()}/{name}' in message
    assert 'Wang2023Better_WRN-70-16' in message
