"""The converters' plans against the names and shapes the sources' own code creates, committed as data in
tests/fixtures/source_graphs/ (each file says what produced it and the command): RobustBench's constructors for
every RobustBench target, and robust_paf's checkpoint layout. Not circular: the lists come from the source's code,
not from robust_zoo's reading of it."""
import json
import math
from pathlib import Path

import pytest
import timm
import torch

from robust_zoo.convert import TARGETS, ConversionError, list_targets
from robust_zoo.convert.robustbench import DM_SOURCE, PAF_SOURCE, map_state_dict, read_state_dict

FIXTURES = Path(__file__).parent / 'fixtures' / 'source_graphs'
RB = json.loads((FIXTURES / 'robustbench.json').read_text())
BY_ID = {rb_id: (constructor, m['tensors']) for constructor, m in RB['models'].items() for rb_id in m['ids']}
list_targets()  # imports the sources, which register the targets
RB_TARGETS = sorted(n for n, t in TARGETS.items() if t.source in (PAF_SOURCE, DM_SOURCE))


def _tensors(spec, device='meta'):
    """Tensors of the listed shapes and dtypes: on `device`, except one-element ones (PSSiLU's copies are compared)."""
    out = {}
    for name, (shape, dtype) in spec.items():
        dt = getattr(torch, dtype)
        small = math.prod(shape) <= 1
        out[name] = torch.zeros(shape, dtype=dt) if small or device != 'meta' else torch.empty(
            shape, dtype=dt, device='meta')
    return out


def test_every_robustbench_target_has_its_constructors_list():
    assert {TARGETS[n].extra['robustbench_id'] for n in RB_TARGETS} == set(BY_ID)


@pytest.mark.parametrize('name', RB_TARGETS)
def test_the_plan_places_exactly_robustbenchs_own_tensors(name):
    """Every tensor RobustBench's constructor creates has one place in the target, every target tensor one source
    (map_state_dict raises on anything left over or missing), at the source's shape."""
    target = TARGETS[name]
    constructor, spec = BY_ID[target.extra['robustbench_id']]
    assert ('pssilu_wrn_28_10' in constructor) == (target.source == PAF_SOURCE)
    model = timm.create_model(f'robust_zoo/{name}', device='meta')
    state = map_state_dict(_tensors(spec), model, target.source)
    assert set(state) == set(model.state_dict())
    depth, width = (int(v) for v in name.split('_')[1:3])
    assert f'depth={depth}, width={width}' in constructor or 'wrn_28_10' in constructor


@pytest.mark.parametrize('name', ['wrn_28_10_silu_at.rb_wang2023_28_10', 'wrn_28_10_pssilu_at.rb_dai2021'])
def test_a_tensor_the_source_creates_and_the_plan_ignores_fails(name):
    """The check above can fail: one extra name, or one name fewer, of the source's list is a ConversionError."""
    target = TARGETS[name]
    spec = dict(BY_ID[target.extra['robustbench_id']][1])
    model = timm.create_model(f'robust_zoo/{name}', device='meta')
    with pytest.raises(ConversionError, match='no place in the model'):
        map_state_dict(_tensors(dict(spec, **{'extra.weight': [[3], 'float32']})), model, target.source)
    spec.pop(next(k for k in spec if k.endswith('conv_0.weight') or k.endswith('conv1.weight')))
    with pytest.raises(ConversionError, match='missing'):
        map_state_dict(_tensors(spec), model, target.source)


def test_robust_paf_checkpoint_layout_reads_to_robustbenchs_names(tmp_path):
    """robust_paf's train.py checkpoint (fixture: its top-level keys) around Dai2021's tensors, DataParallel names."""
    layout = json.loads((FIXTURES / 'robust_paf_checkpoint.json').read_text())['top_level']
    spec = BY_ID['Dai2021Parameterizing'][1]
    # stride-0 views of one zero: the file holds the names and shapes, not 36M zeros
    state = {f'module.{k}': torch.zeros((), dtype=getattr(torch, d)).expand(s) for k, (s, d) in spec.items()}
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True)
    weight.grad = torch.ones(2)
    opt.step()
    values = dict(epoch=200, arch='wrn_28_10', state_dict=state, best_prec1=torch.tensor(61.55),
                  optimizer=opt.state_dict(), swadict={})
    assert set(values) == set(layout)
    torch.save(values, tmp_path / 'checkpoint.pth.tar')
    read = read_state_dict(tmp_path / 'checkpoint.pth.tar')
    assert set(read) == set(spec)
    model = timm.create_model('robust_zoo/wrn_28_10_pssilu_at.rb_dai2021', device='meta')
    assert set(map_state_dict(read, model, PAF_SOURCE)) == set(model.state_dict())


def test_a_model_prefix_is_stripped_as_robustbench_does(tmp_path):
    spec = BY_ID['Wang2023Better_WRN-28-10'][1]
    state = {f'module.model.{k}': torch.zeros((), dtype=getattr(torch, d)).expand(s) for k, (s, d) in spec.items()}
    torch.save(state, tmp_path / 'wrapped.pt')
    assert set(read_state_dict(tmp_path / 'wrapped.pt')) == set(spec)


# --- SAT's ResNet-50 graphs (tensorpack), every activation -----------------------------------------------------

SAT_RESNET = json.loads((FIXTURES / 'sat_resnet50.json').read_text())['activations']


def test_sat_resnet_lists_cover_every_released_activation():
    assert sorted(SAT_RESNET) == sorted(n.split('_')[1] for n in TARGETS if n.startswith('resnet50_'))


@pytest.mark.parametrize('act', sorted(SAT_RESNET))
def test_the_plan_covers_exactly_sat_resnet50s_own_variables(act):
    """Every variable of SAT's graph (its ModelSaver's global ones and the EMA/ summaries) is placed in the target
    or ignored by a documented rule (RESNET_IGNORED), and every target tensor gets one, at its shape."""
    from robust_zoo.convert.sat import RESNET_IGNORED, plan_sat_resnet
    from robust_zoo.convert.tf_checkpoint import ignored as _ignored
    graph = SAT_RESNET[act]
    shapes = {n: s for kind in ('global_variables', 'local_variables') for n, (s, _) in graph[kind].items()}
    model = timm.create_model(f'robust_zoo/resnet50_{act}_at.sat_in1k', device='meta')
    plan = plan_sat_resnet(shapes, model)
    placed = {name for name, _ in plan.values()}
    ignored = {n for n in shapes if _ignored(n, RESNET_IGNORED)}
    assert placed | ignored == set(shapes) and not placed & ignored
    assert len(placed) == len(plan) == len([k for k in model.state_dict() if not k.endswith('num_batches_tracked')
                                            and not k.startswith('normalize.')])
    betas = {n for n in placed if n.endswith('smoothrelu_beta')}
    assert len(betas) == (49 if act == 'smoothrelu' else 0)  # one per activation site: stem, 3 a block x 16


def test_sat_resnet_plan_fails_on_a_variable_the_rules_do_not_know():
    from robust_zoo.convert.sat import plan_sat_resnet
    shapes = {n: s for n, (s, _) in SAT_RESNET['relu']['global_variables'].items()}
    model = timm.create_model('robust_zoo/resnet50_relu_at.sat_in1k', device='meta')
    with pytest.raises(ConversionError, match='group0/block0/conv1/W/Adam'):
        plan_sat_resnet(dict(shapes, **{'group0/block0/conv1/W/Adam': [1, 1, 64, 64]}), model)
    with pytest.raises(ConversionError, match='smoothrelu_beta'):  # another activation's graph
        plan_sat_resnet({n: s for n, (s, _) in SAT_RESNET['smoothrelu']['global_variables'].items()}, model)


# --- SAT's EfficientNet graphs (B0, L1), raw weights and their EMA shadows ---------------------------------------

SAT_EFFICIENTNET = json.loads((FIXTURES / 'sat_efficientnet.json').read_text())['models']


@pytest.mark.parametrize('name', ['efficientnet_b0_silu_at.sat_in1k', 'efficientnet_l1_silu_at.sat_in1k',
                                  'efficientnet_l1_silu_at.sat_enhanced_in1k'])
def test_the_plan_covers_exactly_sat_efficientnets_own_variables(name):
    """SAT's training graph (weights, BN statistics, RMSProp slots, EMA shadows, global_step): the target's tensors
    come from the raw weights, or for L1-Enhanced from their shadows; every other variable is skipped by a rule."""
    from robust_zoo.convert.sat import EFFICIENTNET_IGNORED, EMA_SUFFIX, plan_sat_efficientnet
    from robust_zoo.convert.tf_checkpoint import ignored as _ignored
    target = TARGETS[name]
    source = target.extra['source_name'].replace('-enhanced', '')
    shapes = {n: s for n, (s, _) in SAT_EFFICIENTNET[source]['global_variables'].items()}
    ema = bool(target.extra.get('ema'))
    model = timm.create_model(f'robust_zoo/{name}', device='meta')
    plan = plan_sat_efficientnet(shapes, model, ema=ema)
    placed = {n for n, _ in plan.values()}
    ignored = {n for n in shapes if _ignored(n, EFFICIENTNET_IGNORED)}
    shadows = {n for n in shapes if n.endswith(EMA_SUFFIX)}
    unused = shadows if not ema else {n[:-len(EMA_SUFFIX)] for n in shadows}
    assert placed == (shadows if ema else set(shapes) - ignored - shadows)
    assert placed | ignored | unused == set(shapes) and not placed & (ignored | unused)
    assert len(plan) == len([k for k in model.state_dict() if not k.endswith('num_batches_tracked')
                             and not k.startswith('normalize.')])


def test_efficientnet_b0_graph_does_not_fit_l1():
    from robust_zoo.convert.sat import plan_sat_efficientnet
    shapes = {n: s for n, (s, _) in SAT_EFFICIENTNET['efficientnet-b0']['global_variables'].items()}
    with pytest.raises(ConversionError, match='EfficientNet-L1'):
        plan_sat_efficientnet(shapes, timm.create_model('robust_zoo/efficientnet_l1_silu_at.sat_in1k', device='meta'))
