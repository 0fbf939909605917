"""The evaluator on models whose answers are known, its record, and its sanity checks."""
import json

import pytest
import timm
import torch
from torch import nn

import robust_zoo  # noqa: F401
from robust_zoo.evaluation import EvalRecord, evaluate, wilson_interval
from robust_zoo.threat_models import ThreatModel


class BrightnessClassifier(nn.Module):
    """Class k <=> mean pixel k/10 (+-0.05): robust exactly to Linf perturbations smaller than 0.05."""

    def forward(self, x):
        mean = x.flatten(1).mean(1, keepdim=True)
        centres = torch.arange(10, dtype=x.dtype) / 10 + 0.05
        return -100 * (mean - centres).abs()


def _toy_data(n=40):
    y = torch.arange(n) % 10
    return (y.float() / 10 + 0.05).view(-1, 1, 1, 1).expand(n, 1, 4, 4).clone(), y


def _toy_threat(eps):
    return ThreatModel('toy', 'toy', 'Linf', eps, ('pgd-10',), 40, 'none', step_size=eps / 4)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))


def test_a_robust_model_keeps_its_accuracy_inside_its_margin():
    result = evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(), batch_size=16)
    assert result.clean_accuracy == 1.0 and result.robust_accuracy == 1.0 and result.attacks == {'pgd-10': 1.0}
    assert result.n_examples == 40 and result.confidence_interval[1] == 1.0


def test_an_attack_beyond_the_margin_breaks_the_model():
    # PGD can stall at the edge classes (an image pushed against 0 or 1 keeps its class), so not all 40 fall
    result = evaluate(BrightnessClassifier(), _toy_threat(0.2), data=_toy_data(), batch_size=16)
    assert result.clean_accuracy == 1.0 and result.robust_accuracy < 0.2


def test_robust_accuracy_is_the_per_sample_worst_case(monkeypatch):
    """Two attacks that each break a different half of the images: each leaves 50%, together nothing survives, so
    the robust accuracy is the per-image worst case, not the lowest attack's accuracy."""
    from robust_zoo.evaluation import protocol

    def breaks(parity):
        def attack(model, x, y):  # one class brighter (the last one darker) for the labels of this parity
            shift = torch.where(y == 9, -0.1, 0.1).view(-1, 1, 1, 1) * (y % 2 == parity).view(-1, 1, 1, 1)
            return x + shift
        return attack
    monkeypatch.setattr(protocol, 'make_attack', lambda spec, *a, **k: breaks(0 if spec == 'fgsm' else 1))
    threat = ThreatModel('toy', 'toy', 'Linf', 0.2, ('fgsm', 'pgd-10'), 40, 'none')
    result = evaluate(BrightnessClassifier(), threat, data=_toy_data(), batch_size=16, checks=False)
    assert result.clean_accuracy == 1.0 and result.attacks == {'fgsm': 0.5, 'pgd-10': 0.5}
    assert result.robust_accuracy == 0.0


def test_same_seed_same_numbers_and_a_json_record():
    # edge classes: whether PGD stalls against 0 or 1 depends on its random start, so the seed shows in the numbers
    y = torch.tensor([0, 9] * 20)
    x = (y.float() / 10 + 0.05).view(-1, 1, 1, 1).expand(40, 1, 4, 4).clone()
    threat = ThreatModel('toy', 'toy', 'Linf', 0.2, ('pgd-5',), 40, 'none')
    same = [evaluate(BrightnessClassifier(), threat, data=(x, y), seed=7, checks=False, batch_size=16).attacks
            for _ in range(2)]
    others = {evaluate(BrightnessClassifier(), threat, data=(x, y), seed=s, checks=False, batch_size=16)
              .attacks['pgd-5'] for s in (0, 1)}
    assert same[0] == same[1] and others != {same[0]['pgd-5']}
    model = timm.create_model('robust_zoo/mlp3_relu_at')
    data = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
    runs = [evaluate(model, 'fashion-mnist-linf', attacks=['pgd-3'], data=data, seed=7) for _ in range(2)]
    assert runs[0].attacks == runs[1].attacks and runs[0].clean_accuracy == runs[1].clean_accuracy
    record = json.loads(runs[0].to_json())
    assert {'model', 'threat_model', 'n_examples', 'clean_accuracy', 'robust_accuracy', 'attacks',
            'confidence_interval', 'checks', 'seed', 'versions', 'seconds'} <= set(record)
    assert record['threat_model'] == {'id': 'fashion-mnist-linf', 'dataset': 'fashion-mnist', 'norm': 'Linf',
                                      'eps': 0.1}
    assert record['model'] == 'mlp3_relu_at' and record['seed'] == 7


def test_the_model_mode_is_restored():
    model = BrightnessClassifier().train()
    evaluate(model, _toy_threat(0.02), data=_toy_data(10))
    assert model.training
    evaluate(model.eval(), _toy_threat(0.02), data=_toy_data(10))
    assert not model.training


def test_softmax_outputs_fail_the_logits_check():
    model = nn.Sequential(BrightnessClassifier(), nn.Softmax(dim=1))
    result = evaluate(model, _toy_threat(0.02), data=_toy_data(10))
    logits = next(c for c in result.checks if c['name'] == 'logits')
    assert {'name': 'logits', 'status': 'FAIL'}.items() <= logits.items()


class Noisy(BrightnessClassifier):
    def forward(self, x):
        return super().forward(x) + torch.randn(len(x), 10)


def test_a_random_forward_fails_the_determinism_check():
    result = evaluate(Noisy(), _toy_threat(0.02), data=_toy_data(10))
    assert next(c for c in result.checks if c['name'] == 'deterministic forward')['status'] == 'FAIL'


def test_budget_check_passes_for_our_attacks():
    result = evaluate(BrightnessClassifier(), _toy_threat(0.2), data=_toy_data(), batch_size=16)
    budget = next(c for c in result.checks if c['name'] == 'budget (pgd-10)')
    assert budget['status'] == 'PASS' and 'all 40 adversarial examples' in budget['detail']


def test_protocol_attacks_not_available_are_reported_not_hidden():
    threat = ThreatModel('toy', 'toy', 'Linf', 0.02, ('pgd-10', 'cw'), 40, 'none')
    result = evaluate(BrightnessClassifier(), threat, data=_toy_data(10))
    assert list(result.attacks) == ['pgd-10']
    assert any(c['name'] == 'protocol (cw)' and c['status'] == 'WARN' for c in result.checks)
    assert any(c['name'] == 'n_examples' and c['status'] == 'WARN' for c in result.checks)


def test_autoattack_standard_breaks_a_model_beyond_its_margin():
    result = evaluate(BrightnessClassifier(), _toy_threat(0.2), data=_toy_data(20), attacks=['autoattack-standard'])
    assert result.clean_accuracy == 1.0 and result.attacks['autoattack-standard'] < 0.2


@pytest.mark.parametrize('spec, attacks', [('apgd-ce+apgd-t', ['apgd-ce', 'apgd-t']), ('apgd-ce', ['apgd-ce']),
                                           ('autoattack-standard', ['apgd-ce', 'apgd-t', 'fab-t', 'square'])])
def test_autoattack_subsets_keep_the_standard_settings(monkeypatch, spec, attacks):
    # pyautoattack's `custom` version would run APGD-CE and FAB with 5 restarts: not AutoAttack standard's part
    from pyautoattack import AutoAttack
    seen, run = [], AutoAttack.run_standard_evaluation

    def spy(self, *args, **kwargs):
        seen.append((list(self.attacks_to_run), self.apgd.n_restarts, self.apgd_targeted.n_target_classes,
                     self.apgd_targeted.n_restarts, self.fab.n_restarts, self.square.n_queries))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(AutoAttack, 'run_standard_evaluation', spy)
    result = evaluate(BrightnessClassifier(), _toy_threat(0.2), data=_toy_data(4), attacks=[spec], checks=False)
    assert result.attacks[spec] < 0.5
    assert seen == [(attacks, 1, 9, 1, 1, 5000)]


class QuantizedInput(BrightnessClassifier):
    """Quantizing the input zeroes every gradient: the gradient masking that AutoAttack flags (DLR losses)."""

    def forward(self, x):
        return super().forward(torch.floor(x * 20) / 20 + 0.025)


def test_autoattack_flags_become_checks():
    result = evaluate(QuantizedInput(), _toy_threat(0.02), data=_toy_data(10), attacks=['apgd-t'])
    assert result.attacks == {'apgd-t': 1.0}  # masked gradients: the attack finds nothing
    flags = [c for c in result.checks if c['name'] == 'autoattack flag']
    assert flags and all(c['status'] == 'WARN' for c in flags) and 'zero gradient' in flags[0]['detail']


def test_unknown_attack_names_the_available_ones():
    with pytest.raises(ValueError, match='pgd-<steps>'):
        evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(10), attacks=['cw'])


def test_datasets_without_a_loader_ask_for_data():
    with pytest.raises(ValueError, match='pass data='):
        evaluate(BrightnessClassifier(), 'cifar10-linf')


def test_result_is_an_evalresult():
    assert isinstance(evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(10)), EvalRecord)


def _check(result, name):
    return next(c for c in result.checks if c['name'] == name)


def test_a_gradient_masked_model_does_not_pass_silently():
    result = evaluate(QuantizedInput(), _toy_threat(0.02), data=_toy_data(10))
    assert result.robust_accuracy == 1.0  # the number alone looks perfect...
    assert _check(result, 'input gradients')['status'] == 'FAIL'  # ...the checks say why not to trust it
    assert _check(result, 'unbounded attack')['status'] == 'FAIL'


def test_an_honest_model_passes_the_gradient_checks():
    result = evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(10))
    assert _check(result, 'unbounded attack')['status'] == 'PASS'
    assert _check(result, 'input gradients')['status'] in ('PASS', 'WARN')  # exact class centres have zero gradient


def test_train_mode_is_warned_about():
    result = evaluate(BrightnessClassifier().train(), _toy_threat(0.02), data=_toy_data(10))
    assert _check(result, 'eval mode')['status'] == 'WARN'


def test_eps_in_pixel_levels_is_rejected():
    with pytest.raises(ValueError, match='write 8/255, not 8'):
        ThreatModel('bad', 'cifar10', 'Linf', 8, ('pgd-20',), 10, 'none')


def test_more_labels_than_model_outputs_is_an_error():
    x, y = _toy_data(10)
    with pytest.raises(ValueError, match='num_classes'):
        evaluate(BrightnessClassifier(), _toy_threat(0.02), data=(x, y + 5))


def test_images_with_other_channels_than_the_model_takes_name_the_models_own_threat_model():
    model = timm.create_model('robust_zoo/resnet20_relu_at', in_chans=1, num_classes=10,
                              pretrained_cfg_overlay=dict(input_size=(1, 28, 28), threat_model='fashion-mnist-linf'))
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"the model cannot take cifar10-linf images of shape \(3, 32, 32\); its "
                                         r"pretrained cfg takes input_size \(1, 28, 28\): evaluate it under its own "
                                         r"threat model, fashion-mnist-linf \("):
        evaluate(model.eval(), 'cifar10-linf', data=(x, y), attacks=['pgd-1'])


def test_images_the_model_cannot_take_are_an_error_that_names_their_shape():
    model = timm.create_model('robust_zoo/mlp3_relu_at')  # flattens 28x28 images
    x, y = torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r'the model cannot take toy images of shape \(1, 32, 32\); its pretrained '
                                         r'cfg takes input_size \(1, 28, 28\): evaluate it under its own threat model, '
                                         r'fashion-mnist-linf \(mat1 and mat2'):
        evaluate(model.eval(), _toy_threat(0.02), data=(x, y), attacks=['pgd-1'])


def test_a_cfg_that_disagrees_with_a_working_model_does_not_refuse_the_images():
    """timm keeps resnet18's cfg input_size (3, 224, 224) for `in_chans=1`: the model's forward decides, not the cfg."""
    model = timm.create_model('resnet18', in_chans=1, num_classes=10).eval()
    assert model.pretrained_cfg['input_size'] == (3, 224, 224)
    x, y = torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    result = evaluate(model, _toy_threat(0.02), data=(x, y), attacks=['pgd-1'], checks=False)
    assert result.n_examples == 2


# --- attack specs, autocast, progress ------------------------------------------------------------------------

def test_attack_specs_with_restarts_and_dlr(monkeypatch):
    from robust_zoo.evaluation import make_attack, protocol
    calls = []
    monkeypatch.setattr(protocol, 'pgd', lambda m, x, y, **kw: calls.append(kw) or x)
    threat = ThreatModel('toy', 'toy', 'Linf', 0.1, ('pgd-10',), 10, 'none')
    x, y = _toy_data(2)
    for spec in ('pgd-20', 'PGD-20x5', 'pgd-dlr-20', 'pgd-dlr-10x3'):
        make_attack(spec, threat)(None, x, y)
    assert [(c['steps'], c['restarts'], c['loss']) for c in calls] == [
        (20, 1, 'ce'), (20, 5, 'ce'), (20, 1, 'dlr'), (10, 3, 'dlr')]
    assert calls[0]['step_size'] == pytest.approx(2.5 * 0.1 / 20) and calls[0]['eps'] == 0.1
    for bad in ('pgd-0', 'pgd-20x0', 'pgd-20-dlr', 'pgd-x5'):
        with pytest.raises(ValueError, match=r'pgd-<steps>\[x<restarts>\]'):
            make_attack(bad, threat)


def test_a_dlr_attack_with_restarts_runs_end_to_end():
    result = evaluate(BrightnessClassifier().eval(), _toy_threat(0.2), data=_toy_data(20), attacks=['pgd-dlr-10x2'],
                      n_examples=20, checks=False)
    assert result.clean_accuracy == 1.0 and result.attacks['pgd-dlr-10x2'] < 0.3 and result.checks == []


class Bf16Blind(nn.Module):
    """Correct in fp32; under bf16 autocast its logits (about 1e5 apart by 10) round to a tie, so argmax says 0."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Linear(10, 10)
        with torch.no_grad():
            self.offset.weight.copy_(torch.eye(10))
            self.offset.bias.fill_(1e5)

    def forward(self, x):
        return self.offset(BrightnessClassifier()(x))


def test_decisions_under_autocast_are_rechecked_in_fp32():
    model, (x, y) = Bf16Blind(), _toy_data(20)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert (model(x).argmax(1) == 0).all()  # the bf16 decision is wrong for 18 of 20 points
        result = evaluate(model, _toy_threat(0.02), data=(x, y), checks=['budget'])
    assert result.clean_accuracy == 1.0 and result.attacks == {'pgd-10': 1.0}  # the attack ran in bf16
    assert _check(result, 'budget (pgd-10)')['status'] == 'PASS'


def test_progress_bar_on_request_only(capsys):
    evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(20), batch_size=8, checks=False)
    assert capsys.readouterr().err == ''  # stderr is not a terminal under pytest: no bar by default
    evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(20), batch_size=8, checks=False,
             progress=True)
    err = capsys.readouterr().err
    assert '20/20' in err and 'robust 1.000' in err


# --- the attack's own sanity checks (checks='full') ------------------------------------------------------------

def test_full_checks_pass_on_an_honest_model_and_serialize():
    result = evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(20), checks='full', probe=20)
    full = {c['name']: c for c in result.checks if c['name'] in ('steps convergence', 'restarts', 'eps sweep',
                                                                  'black box')}
    assert {name: c['status'] for name, c in full.items()} == dict.fromkeys(full, 'PASS') and len(full) == 4
    assert _check(result, 'logits')['status'] == 'PASS'  # 'full' includes the fast checks
    record = json.loads(result.to_json())
    sweep = next(c for c in record['checks'] if c['name'] == 'eps sweep')['data']
    assert sweep['eps'][0] == 0 and sweep['eps'][-1] == 0.5 and 0.02 in sweep['eps']
    assert sweep['accuracy'][0] == 1.0 and sweep['accuracy'][-1] <= 0.2 and sweep['threat_eps'] == 0.02
    steps = next(c for c in record['checks'] if c['name'] == 'steps convergence')['data']
    assert steps['steps'] == [10, 50, 200] and steps['accuracy'] == [1.0, 1.0, 1.0]


def test_full_checks_catch_gradient_masking_that_the_number_hides():
    result = evaluate(QuantizedInput().eval(), _toy_threat(0.1), data=_toy_data(20), n_examples=20,
                      checks=['eps_sweep', 'black_box'])
    assert result.robust_accuracy == 1.0  # beyond the 0.05 margin, yet "robust": the gradients are zero
    assert [c['name'] for c in result.checks] == ['eps sweep', 'black box']
    sweep, black_box = _check(result, 'eps sweep'), _check(result, 'black box')
    assert sweep['status'] == 'FAIL' and 'above chance' in sweep['detail']
    assert black_box['status'] == 'WARN' and black_box['data']['pgd_broken'] == 0
    square_only = black_box['data']['square_only']
    assert square_only >= 10 and f'{square_only} of them' in black_box['detail']


def test_unknown_check_names_are_rejected():
    with pytest.raises(ValueError, match='eps_sweep'):
        evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(10), checks=['eps-sweep'])


def test_eps_zero_is_the_clean_accuracy_and_randomness_fails_it():
    from robust_zoo.evaluation.checks import check_eps_sweep
    x, y = _toy_data(20)
    honest = check_eps_sweep(BrightnessClassifier(), x, y, 0.02, steps=5)
    assert honest['data']['accuracy'][0] == honest['data']['clean'] == 1.0 and honest['status'] == 'PASS'

    class VeryNoisy(BrightnessClassifier):
        def forward(self, x):
            return super().forward(x) + 30 * torch.randn(len(x), 10)

    torch.manual_seed(0)
    noisy = check_eps_sweep(VeryNoisy(), x, y, 0.02, steps=5)
    assert noisy['status'] == 'FAIL' and 'at eps 0' in noisy['detail']


def test_eps_sweep_warns_when_a_larger_budget_helps_the_model(monkeypatch):
    from robust_zoo.evaluation import checks
    real = checks.pgd
    # an attack that gives up at one budget (2 eps): accuracy goes back up there
    monkeypatch.setattr(checks, 'pgd', lambda m, x, y, *, eps, **kw: x if eps == 0.16 else real(m, x, y, eps=eps, **kw))
    x, y = _toy_data(20)
    result = checks.check_eps_sweep(BrightnessClassifier(), x, y, 0.08, steps=10)
    assert result['status'] == 'WARN' and 'rises with the budget from eps 0.08 to 0.16' in result['detail']


def test_steps_check_warns_when_more_steps_keep_helping(monkeypatch):
    from robust_zoo.evaluation import checks
    real = checks.pgd
    # an attack far from converged: its reach grows with the number of steps
    monkeypatch.setattr(checks, 'pgd', lambda m, x, y, *, eps, steps, **kw: real(m, x, y, eps=eps * min(1, steps / 200),
                                                                                steps=steps, **kw))
    x, y = _toy_data(20)
    result = checks.check_steps_convergence(BrightnessClassifier(), x, y, 0.1, steps=(10, 50, 200))
    assert result['status'] == 'WARN' and result['data']['steps'] == [10, 50, 200]
    assert result['data']['accuracy'][1] - result['data']['accuracy'][2] > 0.5 and 'from 50 to 200' in result['detail']
    monkeypatch.setattr(checks, 'pgd', real)
    assert checks.check_steps_convergence(BrightnessClassifier(), x, y, 0.02, steps=(5, 10))['status'] == 'PASS'


def test_restarts_check_warns_when_the_random_start_decides():
    from robust_zoo.evaluation.checks import check_restarts
    y = torch.tensor([0, 9] * 20)  # edge classes: PGD from some random starts stalls against 0 or 1
    x = (y.float() / 10 + 0.05).view(-1, 1, 1, 1).expand(40, 1, 4, 4).clone()
    result = check_restarts(BrightnessClassifier(), x, y, 0.2, steps=5)
    assert result['status'] == 'WARN' and result['data']['accuracy'][0] > result['data']['accuracy'][1] + 0.02
    assert check_restarts(BrightnessClassifier(), x, y, 0.02, steps=5)['status'] == 'PASS'


def test_amp_reattacks_in_fp32_the_points_broken_only_in_bf16():
    result = evaluate(Bf16Blind(), _toy_threat(0.02), data=_toy_data(20), amp=True, checks=['budget'])
    assert result.clean_accuracy == 1.0 and result.attacks == {'pgd-10': 1.0}
    low = _check(result, 'low precision (pgd-10)')
    assert low['status'] == 'PASS' and '18 points broken in low precision but not in fp32' in low['detail']


def test_compiled_attacks_give_the_eager_numbers_and_compile_once():
    from robust_zoo.evaluation import runner
    from robust_zoo.evaluation.runner import compiled_for_attacks
    model = timm.create_model('robust_zoo/mlp3_relu_at')
    keys = list(model.state_dict())
    data = torch.rand(24, 1, 28, 28), torch.arange(24) % 10
    eager = evaluate(model, 'fashion-mnist-linf', attacks=['pgd-3'], data=data, checks=False, batch_size=8)
    assert model not in runner._COMPILED  # an eager evaluation compiles nothing
    fast = evaluate(model, 'fashion-mnist-linf', attacks=['pgd-3'], data=data, checks=False, batch_size=8, compile=True)
    assert fast.attacks == eager.attacks and fast.clean_accuracy == eager.clean_accuracy
    compiled = runner._COMPILED[model]  # compile=True made the compiled copy ...
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    evaluate(model, 'fashion-mnist-linf', attacks=['pgd-3'], data=data, checks=False, batch_size=8, compile=True)
    assert compiled_for_attacks(model) is compiled  # ... and later evaluations reuse it
    assert list(model.state_dict()) == keys  # the compiled copy is not a submodule of the model


def test_zero_or_negative_n_examples_is_refused_not_read_as_the_protocol():
    for n in (0, -5):
        with pytest.raises(ValueError, match=f'n_examples must be >= 1.*got {n}'):
            evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(10), n_examples=n)


def test_robust_zoo_evaluate_is_the_public_call():
    """RobustBench's benchmark() as the anchor: one call on any model, by threat-model name."""
    import robust_zoo.evaluation
    assert robust_zoo.evaluate is robust_zoo.evaluation.evaluate and callable(robust_zoo.evaluate)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    result = robust_zoo.evaluate(model, 'fashion-mnist-linf', n_examples=8, attacks=['pgd-2'], checks=False)
    assert result.n_examples == 8 and 0 <= result.robust_accuracy <= result.clean_accuracy <= 1
