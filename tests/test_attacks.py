"""PGD / FGSM-RS: budgets, valid images, input-only gradients, and that they actually attack."""
import pytest
import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401
from robust_zoo.attacks import fgsm_rs, pgd


@pytest.fixture(scope='module')
def model_and_batch():
    torch.manual_seed(0)
    model = timm.create_model('robust_zoo/mlp3_silu_at').eval()  # no BatchNorm: useful gradients untrained
    return model, torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))


@pytest.mark.parametrize('norm,eps', [('Linf', 0.1), ('L2', 1.0)])
def test_pgd_stays_in_budget_and_image_range(model_and_batch, norm, eps):
    model, x, y = model_and_batch
    x_adv = pgd(model, x, y, eps=eps, steps=5, norm=norm)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_raises_the_loss(model_and_batch):
    model, x, y = model_and_batch
    x_adv = pgd(model, x, y, eps=0.1, steps=10, random_start=False)
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.1


def test_attack_takes_no_parameter_gradients(model_and_batch):
    model, x, y = model_and_batch
    fgsm_rs(model, x, y, eps=0.1)
    assert all(p.grad is None for p in model.parameters())


def test_attack_keeps_train_eval_mode(model_and_batch):
    model, x, y = model_and_batch
    pgd(model, x, y, eps=0.1, steps=1)
    assert not model.training


def test_fgsm_rs_default_step_is_1_25_eps(model_and_batch):
    """From a random start in [-eps, eps], a 1.25 eps signed step lands on the boundary for most pixels."""
    model, x, y = model_and_batch
    x = x.clamp(0.2, 0.8)  # away from the [0, 1] clipping
    x_adv = fgsm_rs(model, x, y, eps=0.1)
    assert ((x_adv - x).abs() > 0.1 - 1e-6).float().mean() > 0.5


def test_unknown_norm():
    with pytest.raises(ValueError, match="'Linf' or 'L2'"):
        pgd(torch.nn.Identity(), torch.rand(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), eps=0.1, norm='L1')
