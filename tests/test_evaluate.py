"""The evaluator on models whose answers are known, its record, and its sanity checks."""
import json

import pytest
import timm
import torch
from torch import nn

import robust_zoo  # noqa: F401
from robust_zoo.evaluate import EvalResult, evaluate, wilson_interval
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


def test_robust_accuracy_is_the_per_sample_worst_case():
    threat = ThreatModel('toy', 'toy', 'Linf', 0.2, ('fgsm', 'pgd-10'), 40, 'none')
    result = evaluate(BrightnessClassifier(), threat, data=_toy_data(), batch_size=16)
    assert result.robust_accuracy <= min(result.attacks.values())


def test_same_seed_same_numbers_and_a_json_record():
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


def test_softmax_outputs_fail_the_logits_check():
    model = nn.Sequential(BrightnessClassifier(), nn.Softmax(dim=1))
    result = evaluate(model, _toy_threat(0.02), data=_toy_data(10))
    assert {'name': 'logits', 'status': 'FAIL'}.items() <= next(c for c in result.checks if c['name'] == 'logits').items()


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
    assert isinstance(evaluate(BrightnessClassifier(), _toy_threat(0.02), data=_toy_data(10)), EvalResult)


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
