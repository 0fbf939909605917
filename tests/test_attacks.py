"""PGD / FGSM-RS / N-FGSM: budgets, valid images, input-only gradients, and that they actually attack."""
import pytest
import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401
from robust_zoo.attacks import fgsm_rs, n_fgsm, pgd


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
    try:
        pgd(model.train(), x, y, eps=0.1, steps=1)
        assert model.training
    finally:
        model.eval()


def test_fgsm_rs_default_step_is_1_25_eps(model_and_batch):
    """FGSM-RS is one PGD step of 1.25 eps from the same random start (Wong et al. 2020), not of eps or 2 eps."""
    model, x, y = model_and_batch
    x = x.clamp(0.2, 0.8)  # away from the [0, 1] clipping

    def seeded(attack, **kw):
        torch.manual_seed(3)
        return attack(model, x, y, eps=0.1, **kw)
    x_adv = seeded(fgsm_rs)
    assert torch.equal(x_adv, seeded(pgd, steps=1, step_size=0.125))
    assert not torch.equal(x_adv, seeded(pgd, steps=1, step_size=0.1))
    assert not torch.equal(x_adv, seeded(pgd, steps=1, step_size=0.2))


def test_n_fgsm_is_not_projected_onto_the_eps_ball(model_and_batch):
    """N-FGSM: noise up to 2 eps plus an eps step, no clip to the eps ball, so pixels move up to 3 eps."""
    model, x, y = model_and_batch
    x = x.clamp(0.35, 0.65)  # away from the [0, 1] clipping
    torch.manual_seed(1)
    delta = (n_fgsm(model, x, y, eps=0.1) - x).abs()
    assert delta.max() <= 0.3 + 1e-6
    assert (delta > 0.1 + 1e-3).float().mean() > 0.25
    assert all(p.grad is None for p in model.parameters())


def test_n_fgsm_steps_along_the_gradient_sign_from_its_noise(model_and_batch):
    """Without noise N-FGSM is plain FGSM with step eps; it stays in the image range."""
    model, x, y = model_and_batch
    x_adv = n_fgsm(model, x, y, eps=0.1, noise=0.0)
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction='sum'), xg)[0]
    assert torch.allclose(x_adv, (x + 0.1 * grad.sign()).clamp(0, 1))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with pytest.raises(ValueError, match='noise must be >= 0'):
        n_fgsm(model, x, y, eps=0.1, noise=-1)


def test_unknown_norm():
    with pytest.raises(ValueError, match="'Linf' or 'L2'"):
        pgd(torch.nn.Identity(), torch.rand(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), eps=0.1, norm='L1')


# --- DLR loss and restarts ------------------------------------------------------------------------------------

def test_dlr_loss_by_hand():
    from robust_zoo.attacks.pgd import dlr_loss
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    # y = 0: -(3 - 2) / (3 - 1) = -0.5; y = 3: -(0 - 3) / (3 - 1) = 1.5
    assert torch.allclose(dlr_loss(logits, torch.tensor([0, 3])), torch.tensor([-0.5, 1.5]))
    # invariant to shifting and scaling the logits, unlike the cross-entropy
    assert torch.allclose(dlr_loss(7 * logits - 4, torch.tensor([0, 3])), torch.tensor([-0.5, 1.5]))
    with pytest.raises(ValueError, match='3 classes'):
        dlr_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_pgd_on_the_dlr_loss_raises_it(model_and_batch):
    from robust_zoo.attacks.pgd import dlr_loss
    model, x, y = model_and_batch
    x_adv = pgd(model, x, y, eps=0.1, steps=10, random_start=False, loss='dlr')
    with torch.no_grad():
        assert dlr_loss(model(x_adv), y).mean() > dlr_loss(model(x), y).mean() + 0.1
    with pytest.raises(ValueError, match="'ce', 'dlr'"):
        pgd(model, x, y, eps=0.1, loss='cw')


def test_restarts_keep_the_strongest_example(model_and_batch):
    model, x, _ = model_and_batch
    with torch.no_grad():
        y = model(x).argmax(1)  # all clean-correct
    torch.manual_seed(0)
    one = pgd(model, x, y, eps=0.02, steps=1, restarts=1)
    torch.manual_seed(0)
    five = pgd(model, x, y, eps=0.02, steps=1, restarts=5)  # the first start is the same as `one`
    with torch.no_grad():
        logits_one, logits_five = model(one), model(five)
    fooled_one, fooled_five = logits_one.argmax(1) != y, logits_five.argmax(1) != y
    loss_one = F.cross_entropy(logits_one, y, reduction='none')
    loss_five = F.cross_entropy(logits_five, y, reduction='none')
    assert 0 < fooled_one.sum() < len(y)  # the test needs both kinds of points
    assert (fooled_five >= fooled_one).all()
    assert torch.equal(five[fooled_one], one[fooled_one])  # broken points are not attacked again
    kept = ~fooled_five
    assert (loss_five[kept] >= loss_one[kept]).all() and (loss_five[kept] > loss_one[kept]).any()  # best of 5 starts
    assert ((x - five).abs().amax((1, 2, 3)) <= 0.02 + 1e-6).all()


class CountingConstant(torch.nn.Module):
    """Predicts class 0 whatever the input, and counts the examples it sees."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return x.flatten(1)[:, :10] * 0 + torch.arange(10, 0, -1, dtype=x.dtype)


def test_restarts_only_attack_points_still_correct():
    x, y = torch.rand(8, 1, 4, 4), torch.tensor([0, 1] * 4)  # y = 1 is broken from the start, y = 0 never
    model = CountingConstant()
    pgd(model, x, y, eps=0.1, steps=3, restarts=1)
    assert model.seen == 3 * 8
    model.seen = 0
    pgd(model, x, y, eps=0.1, steps=3, restarts=4)
    assert model.seen == (3 + 1) * 8 + 3 * (3 + 1) * 4  # 4 forwards per start, later starts on the 4 y = 0 points
    with pytest.raises(ValueError, match='restarts'):
        pgd(model, x, y, eps=0.1, restarts=0)
