"""The threat-model table: the ids, budgets and protocols the issue fixes, and clear lookup errors."""
import pytest
import timm

import robust_zoo
from robust_zoo import THREAT_MODELS, get_threat_model


@pytest.mark.parametrize('tid,dataset,norm,eps', [
    ('fashion-mnist-linf', 'fashion-mnist', 'Linf', 0.1),
    ('mnist-linf', 'mnist', 'Linf', 0.3),
    ('cifar10-linf', 'cifar10', 'Linf', 8 / 255),
    ('cifar10-l2', 'cifar10', 'L2', 0.5),
    ('cifar100-linf', 'cifar100', 'Linf', 8 / 255),
    ('imagenet-linf', 'imagenet-1k', 'Linf', 4 / 255),
    ('imagenet-linf-sat', 'imagenet-1k', 'Linf', 4 / 255),
    ('digits-linf', 'digits', 'Linf', 0.1),
    ('digits-linf-0.05', 'digits', 'Linf', 0.05),
])
def test_budgets(tid, dataset, norm, eps):
    t = get_threat_model(tid)
    assert (t.dataset, t.norm, t.eps) == (dataset, norm, pytest.approx(eps))


def test_protocols_of_robustbench_and_sat():
    assert get_threat_model('imagenet-linf').n_examples == 5000
    sat = get_threat_model('imagenet-linf-sat')
    assert sat.attacks == ('pgd-200',) and sat.step_size == pytest.approx(1 / 255)


def test_a_smaller_budget_on_the_same_data_is_its_own_named_threat_model():
    """A record names its threat model by id: a budget other than the standard one must not share its id."""
    small, standard = get_threat_model('digits-linf-0.05'), get_threat_model('digits-linf')
    assert (small.dataset, small.n_examples, small.preprocessing) == (standard.dataset, standard.n_examples,
                                                                      standard.preprocessing)
    assert small.step_size / small.eps == pytest.approx(standard.step_size / standard.eps)


def test_every_model_names_a_known_threat_model_and_its_dataset():
    for name in robust_zoo.list_models():
        cfg = timm.models.get_pretrained_cfg(name.split('/', 1)[1])
        assert THREAT_MODELS[cfg.threat_model].dataset == cfg.dataset, name


def test_unknown_id_lists_valid_ones():
    with pytest.raises(ValueError, match='fashion-mnist-linf'):
        get_threat_model('cifar10-linf-16')
