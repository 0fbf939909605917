"""The adversarial training step: attack budgets, input-only gradients, the BN policy during the attack,
the optimizer step, TRADES' loss, non-finite losses, config validation, smooth-backward switching, AMP."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import robust_zoo  # noqa: F401  (registers the robust_zoo/ models with timm)
from robust_zoo.attacks import pgd, trades_kl
from robust_zoo.layers import ReLUSmoothGrad
from robust_zoo.training.step import (
    AttackConfig,
    adversarial_step,
    attack_mode,
    make_adversarial,
    set_smooth_backward,
)

EPS = {'Linf': 0.1, 'L2': 1.0}


def _batch(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _small_net(act=nn.ReLU, bn: bool = True) -> nn.Sequential:
    """A tiny conv net (optionally with BatchNorm) for 1x28x28 inputs; deterministic init."""
    torch.manual_seed(0)
    norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), norm(4), act(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), norm(8), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).train()


@pytest.fixture(scope='module')
def _resnet20():
    torch.manual_seed(0)
    return timm.create_model('robust_zoo/resnet20_relu_at', num_classes=10, in_chans=1).train()


@pytest.fixture
def resnet(_resnet20):
    return copy.deepcopy(_resnet20)


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def _buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _skew_running_stats(model):
    """Running statistics far from any batch's, so eval-mode and train-mode BN give different functions."""
    for bn in _bns(model):
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(4.0)
    return model


# --- make_adversarial: budgets, valid images ---------------------------------------------------------------

@pytest.mark.parametrize('attack,norm', [('fgsm-rs', 'Linf'), ('pgd', 'Linf'), ('trades', 'Linf'),
                                         ('pgd', 'L2'), ('trades', 'L2'), ('fgsm-rs', 'L2')])
def test_make_adversarial_stays_in_budget_and_image_range(resnet, attack, norm):
    x, y = _batch()
    eps = EPS[norm]
    x_adv = make_adversarial(resnet, x, y, AttackConfig(attack=attack, eps=eps, steps=3, norm=norm))
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32 and not x_adv.requires_grad
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (size > eps / 10).all()  # it actually moved every image


def test_attack_none_returns_the_batch_itself(resnet):
    x, y = _batch()
    assert make_adversarial(resnet, x, y, AttackConfig(attack='none')) is x


# --- input gradients only ----------------------------------------------------------------------------------

@pytest.mark.parametrize('attack', ['fgsm-rs', 'n-fgsm', 'pgd', 'trades'])
def test_attack_leaves_parameter_grads_untouched(resnet, attack):
    x, y = _batch()
    make_adversarial(resnet, x, y, AttackConfig(attack=attack, steps=2))
    assert all(p.grad is None for p in resnet.parameters())
    preset = [torch.full_like(p, 0.5) for p in resnet.parameters()]
    for p, g in zip(resnet.parameters(), preset):
        p.grad = g.clone()
    make_adversarial(resnet, x, y, AttackConfig(attack=attack, steps=2))
    assert all(torch.equal(p.grad, g) for p, g in zip(resnet.parameters(), preset))


# --- BN policy during the attack ---------------------------------------------------------------------------

@pytest.mark.parametrize('attack', ['fgsm-rs', 'n-fgsm', 'pgd', 'trades'])
def test_bn_train_mode_attack_keeps_running_stats_and_modes(attack):
    model = _skew_running_stats(_small_net())
    bn1, bn2 = _bns(model)
    bn1.momentum, bn2.momentum = 0.3, None  # None: cumulative moving average (uses num_batches_tracked)
    bn2.num_batches_tracked.fill_(7)
    before = _buffers(model)
    x, y = _batch()
    make_adversarial(model, x, y, AttackConfig(attack=attack, steps=2, bn_mode='train'))
    after = _buffers(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), 'running stats moved during the attack'
    assert all(m.training for m in model.modules())
    assert bn1.momentum == 0.3 and bn2.momentum is None


def test_bn_train_mode_attack_uses_batch_statistics():
    model = _skew_running_stats(_small_net())
    x, y = _batch()
    torch.manual_seed(1)
    x_train = make_adversarial(model, x, y, AttackConfig(attack='pgd', steps=2, bn_mode='train'))
    torch.manual_seed(1)
    x_eval = make_adversarial(model, x, y, AttackConfig(attack='pgd', steps=2, bn_mode='eval'))
    # the same seeds against an explicit train-mode / eval-mode copy give the same images
    torch.manual_seed(1)
    ref_train = pgd(copy.deepcopy(model).train(), x, y, eps=0.1, steps=2)
    torch.manual_seed(1)
    ref_eval = pgd(copy.deepcopy(model).eval(), x, y, eps=0.1, steps=2)
    assert torch.equal(x_train, ref_train)
    assert torch.equal(x_eval, ref_eval)
    assert not torch.equal(x_train, x_eval)


def test_bn_train_mode_attack_sees_batch_normalised_activations():
    model = _skew_running_stats(_small_net())
    bn1 = _bns(model)[0]
    seen = []
    bn1.register_forward_hook(lambda m, i, o: seen.append((m.training, o.detach().mean((0, 2, 3)))))
    x, y = _batch()
    make_adversarial(model, x, y, AttackConfig(attack='pgd', steps=2, bn_mode='train'))
    assert len(seen) == 2
    for training, channel_mean in seen:  # batch statistics: each channel's mean is BN's bias (0 at init)
        assert training and channel_mean.abs().max() < 1e-4
    seen.clear()
    make_adversarial(model, x, y, AttackConfig(attack='pgd', steps=2, bn_mode='eval'))
    assert len(seen) == 2
    for training, channel_mean in seen:  # running statistics (mean 0.5): the channel means are off 0
        assert not training and channel_mean.abs().max() > 0.05


def test_bn_eval_mode_attack_restores_train_mode():
    model = _small_net()
    before = _buffers(model)
    x, y = _batch()
    make_adversarial(model, x, y, AttackConfig(attack='pgd', steps=2, bn_mode='eval'))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in _buffers(model).items())


def test_bn_eval_mode_attack_leaves_an_eval_model_in_eval():
    model = _small_net().eval()
    x, y = _batch()
    make_adversarial(model, x, y, AttackConfig(attack='fgsm-rs', bn_mode='eval'))
    assert not any(m.training for m in model.modules())


def test_bn_eval_mode_attack_keeps_per_module_modes():
    model = _small_net()
    frozen = _bns(model)[0].eval()
    x, y = _batch()
    make_adversarial(model, x, y, AttackConfig(attack='fgsm-rs', bn_mode='eval'))
    assert not frozen.training and model.training and _bns(model)[1].training


def test_attack_mode_restores_momentum_when_the_attack_raises():
    model = _small_net()
    bn1, bn2 = _bns(model)
    bn2.momentum = None
    nbt = bn1.num_batches_tracked.clone()
    with pytest.raises(RuntimeError, match='boom'), attack_mode(model, 'train'):
        model(torch.rand(4, 1, 28, 28))
        assert bn1.momentum == 0.0 and bn2.momentum == 0.0
        raise RuntimeError('boom')
    assert bn1.momentum == 0.1 and bn2.momentum is None
    assert torch.equal(bn1.num_batches_tracked, nbt)
    with pytest.raises(RuntimeError, match='boom'), attack_mode(model, 'eval'):
        raise RuntimeError('boom')
    assert model.training


# --- adversarial_step ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('attack', ['none', 'fgsm-rs', 'n-fgsm', 'pgd', 'trades'])
def test_adversarial_step_updates_parameters_and_running_stats_once(resnet, attack):
    x, y = _batch()
    params, buffers = _params(resnet), _buffers(resnet)
    opt = torch.optim.SGD(resnet.parameters(), lr=0.1)
    out = adversarial_step(resnet, x, y, opt, AttackConfig(attack=attack, steps=2))
    assert all(not torch.equal(a, b) for a, b in zip(params, resnet.parameters()))
    after = _buffers(resnet)
    for k, v in buffers.items():
        if k.endswith('num_batches_tracked'):
            assert after[k] == v + 1, 'exactly one forward (the update) may count for BN'
        elif k.startswith('normalize'):
            assert torch.equal(after[k], v)
        else:
            assert not torch.equal(after[k], v), f'{k} did not move'
    assert torch.isfinite(torch.tensor(out.loss))
    assert out.n == 8 and 0 <= out.adv_correct <= out.n and out.clean_correct is None
    assert resnet.training


def test_adversarial_step_discards_stale_parameter_grads():
    model, other = _small_net(), _small_net()
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    x, y = _batch()
    for m in (model, other):
        torch.manual_seed(3)
        adversarial_step(m, x, y, torch.optim.SGD(m.parameters(), lr=0.1), AttackConfig(attack='pgd', steps=1))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))


def test_adversarial_step_adv_correct_counts_the_adversarial_logits():
    model = _small_net(bn=False)
    x, y = _batch()
    ref = copy.deepcopy(model)
    torch.manual_seed(3)
    x_adv = make_adversarial(ref, x, y, AttackConfig(attack='pgd', steps=2))
    with torch.no_grad():
        expected = int((ref(x_adv).argmax(1) == y).sum())
    torch.manual_seed(3)
    out = adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1),
                           AttackConfig(attack='pgd', steps=2))
    assert out.adv_correct == expected


@pytest.mark.parametrize('attack', ['pgd', 'trades'])
def test_track_clean_reports_clean_accuracy_without_touching_running_stats(resnet, attack):
    x, y = _batch()
    other = copy.deepcopy(resnet)
    cfg = AttackConfig(attack=attack, steps=2)
    torch.manual_seed(5)
    out = adversarial_step(resnet, x, y, torch.optim.SGD(resnet.parameters(), lr=0.1), cfg, track_clean=True)
    torch.manual_seed(5)
    ref = adversarial_step(other, x, y, torch.optim.SGD(other.parameters(), lr=0.1), cfg)
    assert out.loss == ref.loss and out.adv_correct == ref.adv_correct
    a, b = _buffers(resnet), _buffers(other)
    assert all(torch.equal(a[k], b[k]) for k in a), 'the clean forward moved the running stats'
    assert out.clean_correct is not None and 0 <= out.clean_correct <= out.n
    if attack == 'pgd':  # clean accuracy of the updated model, batch statistics
        with torch.no_grad():
            expected = int((copy.deepcopy(resnet).train()(x).argmax(1) == y).sum())
        assert out.clean_correct == expected


def test_attack_model_is_the_one_the_attack_differentiates():
    inner = _small_net()
    wrapper = nn.Sequential(inner)  # stands in for DDP(inner)
    calls = []
    wrapper.register_forward_hook(lambda *_: calls.append('wrapper'))
    inner.register_forward_hook(lambda *_: calls.append('inner'))
    x, y = _batch()
    adversarial_step(wrapper, x, y, torch.optim.SGD(wrapper.parameters(), lr=0.1),
                     AttackConfig(attack='pgd', steps=3), attack_model=inner)
    assert calls == ['inner'] * 3 + ['inner', 'wrapper']  # three attack forwards, then one update


# --- TRADES loss ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('beta', [0.0, 6.0])
def test_trades_step_loss_is_clean_ce_plus_beta_kl(beta):
    model = _small_net(bn=False)  # no BN: the clean logits do not depend on what they are batched with
    x, y = _batch()
    cfg = AttackConfig(attack='trades', steps=2, trades_beta=beta)
    torch.manual_seed(2)
    x_adv = make_adversarial(model, x, y, cfg)
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    expected = F.cross_entropy(clean, y) + beta * trades_kl(adv, clean)
    torch.manual_seed(2)
    out = adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), cfg, track_clean=True)
    assert out.loss == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    assert out.clean_correct == int((clean.argmax(1) == y).sum())
    assert out.adv_correct == int((adv.argmax(1) == y).sum())
    if beta:
        assert float(trades_kl(adv, clean)) > 0


# --- non-finite loss -------------------------------------------------------------------------------------------

class _NaNOut(nn.Module):
    def forward(self, x):
        return x * float('nan')


@pytest.mark.parametrize('attack', ['none', 'pgd'])
def test_non_finite_loss_raises_before_the_optimizer_steps(attack):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), _NaNOut()).train()
    params = _params(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = _batch()
    with pytest.raises(FloatingPointError, match='non-finite'):
        adversarial_step(model, x, y, opt, AttackConfig(attack=attack, steps=1))
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert not opt.state  # SGD never ran: no momentum buffers


def test_check_finite_false_lets_a_non_finite_loss_through():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), _NaNOut()).train()
    x, y = _batch()
    out = adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1),
                           AttackConfig(attack='none'), check_finite=False)
    assert out.loss != out.loss  # NaN


# --- AttackConfig -----------------------------------------------------------------------------------------------

def test_config_rejects_eps_in_0_255_units_with_a_hint():
    with pytest.raises(ValueError, match='8/255'):
        AttackConfig(eps=8)


def test_adv_frac_attacks_the_leading_part_and_trains_on_the_clean_rest():
    """Croce et al. 2019's ae_frac: the first int(frac * batch) images attacked, the loss on the whole mix."""
    model, x, y = _small_net(bn=False), *_batch(8)
    ref = copy.deepcopy(model)
    cfg = AttackConfig(attack='pgd', steps=2, adv_frac=0.5)
    torch.manual_seed(3)
    x_adv = make_adversarial(ref, x[:4], y[:4], cfg)
    with torch.no_grad():
        logits = ref(torch.cat([x_adv, x[4:]]))
    expected_loss = float(F.cross_entropy(logits, y))
    torch.manual_seed(3)
    out = adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    assert out.n == 8 and out.n_adv == 4
    assert out.loss == pytest.approx(expected_loss, rel=1e-6)
    assert out.adv_correct == int((logits[:4].argmax(1) == y[:4]).sum())


def test_adv_frac_one_attacks_the_whole_batch():
    cfg = AttackConfig(attack='pgd')
    assert cfg.n_adversarial(128) == 128 and AttackConfig(attack='pgd', adv_frac=0.5).n_adversarial(128) == 64
    assert AttackConfig(attack='pgd', adv_frac=0.01).n_adversarial(8) == 1


@pytest.mark.parametrize('kwargs,match', [
    ({'eps': 0.0}, 'eps'),
    ({'adv_frac': 0.0}, 'adv_frac'),
    ({'adv_frac': 1.5}, 'adv_frac'),
    ({'attack': 'trades', 'adv_frac': 0.5}, 'adv_frac must be 1 with trades'),
    ({'eps': -0.1}, 'eps'),
    ({'attack': 'cw'}, 'unknown training attack'),
    ({'bn_mode': 'frozen'}, 'bn_mode'),
    ({'smooth_backward': 'yes'}, 'smooth_backward'),
    ({'norm': 'L1'}, 'norm'),
    ({'steps': 0}, 'steps'),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttackConfig(**kwargs)


def test_config_accepts_l2_budgets_above_one_and_any_eps_without_attack():
    assert AttackConfig(attack='pgd', norm='L2', eps=1.5).eps == 1.5
    AttackConfig(attack='none', eps=8)


def test_config_step_size_defaults():
    assert AttackConfig(attack='fgsm-rs', eps=0.1).resolved_step_size == pytest.approx(0.125)
    assert AttackConfig(attack='n-fgsm', eps=0.1).resolved_step_size == pytest.approx(0.1)
    assert AttackConfig(attack='pgd', eps=0.1, steps=10).resolved_step_size == pytest.approx(0.025)
    assert AttackConfig(attack='pgd', eps=0.2, steps=5).resolved_step_size == pytest.approx(0.1)
    assert AttackConfig(attack='trades', eps=0.1, steps=10).resolved_step_size == pytest.approx(0.025)
    assert AttackConfig(attack='pgd', eps=0.1, step_size=0.01).resolved_step_size == 0.01


def test_fgsm_rs_takes_one_step_of_its_own_size():
    model = _small_net()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    x, y = _batch()
    x_adv = make_adversarial(model, x, y, AttackConfig(attack='fgsm-rs', eps=0.1, steps=10))
    assert len(calls) == 1
    assert (x_adv - x).abs().max() == pytest.approx(0.1, abs=1e-6)


def test_n_fgsm_takes_one_gradient_and_is_linf_only():
    model = _small_net()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    x, y = _batch()
    x_adv = make_adversarial(model, x, y, AttackConfig(attack='n-fgsm', eps=0.1, steps=10))
    assert len(calls) == 1
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    with pytest.raises(ValueError, match='Linf only'):
        AttackConfig(attack='n-fgsm', norm='L2', eps=1.0)


# --- smooth backward switching ----------------------------------------------------------------------------------

def _smooth_net(flag: bool) -> nn.Sequential:
    return _small_net(act=lambda: ReLUSmoothGrad(smooth_backward=flag))


def _record_flags(model):
    """One entry per forward of `model`: the smooth_backward flags of its ReLUSmoothGrad layers then."""
    acts = [m for m in model.modules() if isinstance(m, ReLUSmoothGrad)]
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append({m.smooth_backward for m in acts}))
    return seen


@pytest.mark.parametrize('mode,attack_flag,update_flag', [
    ('attack', True, False), ('update', False, True), ('both', True, True)])
@pytest.mark.parametrize('initial', [False, True])
def test_smooth_backward_flags_during_attack_and_update(mode, attack_flag, update_flag, initial):
    model = _smooth_net(initial)
    seen = _record_flags(model)
    x, y = _batch()
    adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1),
                     AttackConfig(attack='pgd', steps=2, smooth_backward=mode))
    assert seen == [{attack_flag}, {attack_flag}, {update_flag}]


@pytest.mark.parametrize('initial', [False, True])
def test_smooth_backward_none_leaves_the_flags_alone(initial):
    model = _smooth_net(initial)
    seen = _record_flags(model)
    x, y = _batch()
    adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1),
                     AttackConfig(attack='pgd', steps=2, smooth_backward='none'))
    assert seen == [{initial}] * 3


def test_set_smooth_backward_counts_and_switches():
    model = timm.create_model('robust_zoo/resnet20_relu_smoothgrad_at', num_classes=10, in_chans=1)
    acts = [m for m in model.modules() if isinstance(m, ReLUSmoothGrad)]
    assert set_smooth_backward(model, False) == len(acts) == 19
    assert not any(m.smooth_backward for m in acts)
    assert set_smooth_backward(model, True) == 19 and all(m.smooth_backward for m in acts)
    assert set_smooth_backward(_small_net(), True) == 0


def _attack_with(model, mode):
    x, y = _batch()
    torch.manual_seed(4)  # same random start for every mode
    return make_adversarial(model, x, y, AttackConfig(attack='pgd', eps=1.0, norm='L2', steps=1,
                                                      step_size=0.5, smooth_backward=mode))


def test_smooth_backward_changes_the_attack_gradient():
    # L2 steps follow the gradient's direction, so the images tell which backward the attack used
    model = _smooth_net(False)  # exact ReLU gradient unless a mode switches it on
    exact = _attack_with(model, 'none')
    smooth = _attack_with(model, 'attack')
    assert (smooth - exact).abs().max() > 1e-3
    assert torch.equal(_attack_with(model, 'update'), exact)  # 'update': the attack keeps ReLU's gradient
    assert torch.equal(_attack_with(model, 'both'), smooth)
    # ... and the same images as PGD on the model with the flags set by hand
    x, y = _batch()
    set_smooth_backward(model, True)
    torch.manual_seed(4)
    assert torch.equal(pgd(model, x, y, eps=1.0, steps=1, step_size=0.5, norm='L2'), smooth)


def test_smooth_backward_none_leaves_the_model_as_built():
    """'none' switches nothing: a relu_smoothgrad model keeps its smooth backward (SAT's 'both' by
    construction), a ReLU-gradient model its exact one."""
    assert torch.equal(_attack_with(_smooth_net(True), 'none'), _attack_with(_smooth_net(True), 'both'))
    assert torch.equal(_attack_with(_smooth_net(False), 'none'), _attack_with(_smooth_net(True), 'update'))
    assert not torch.equal(_attack_with(_smooth_net(True), 'none'), _attack_with(_smooth_net(False), 'none'))


# --- AMP and memory format ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('attack', ['pgd', 'trades'])
def test_bf16_autocast_attack_and_step(resnet, attack):
    x, y = _batch()
    cfg = AttackConfig(attack=attack, steps=2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        x_adv = make_adversarial(resnet, x, y, cfg)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= cfg.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    params = _params(resnet)
    out = adversarial_step(resnet, x, y, torch.optim.SGD(resnet.parameters(), lr=0.1), cfg,
                           autocast=torch.autocast('cpu', dtype=torch.bfloat16), track_clean=True)
    assert torch.isfinite(torch.tensor(out.loss)) and 0 <= out.clean_correct <= out.n
    assert all(p.dtype == torch.float32 for p in resnet.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(params, resnet.parameters()))


def test_channels_last_model_and_input(resnet):
    resnet = resnet.to(memory_format=torch.channels_last)
    x, y = _batch()
    x = x.contiguous(memory_format=torch.channels_last)
    cfg = AttackConfig(attack='pgd', steps=2)
    x_adv = make_adversarial(resnet, x, y, cfg)
    assert (x_adv - x).abs().max() <= cfg.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    out = adversarial_step(resnet, x, y, torch.optim.SGD(resnet.parameters(), lr=0.1), cfg)
    assert torch.isfinite(torch.tensor(out.loss))


def test_grad_scaler_fp16_path():
    model = _small_net()  # fp16 convolutions are slow on CPUs without native fp16: keep the net tiny
    try:
        scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10)
        autocast = torch.autocast('cpu', dtype=torch.float16)
        with autocast:
            torch.ones(1, 1, 3, 3) @ torch.ones(1, 1, 3, 3)
    except (RuntimeError, AttributeError, TypeError) as e:
        pytest.skip(f'fp16 autocast / GradScaler not supported on CPU by torch {torch.__version__}: {e}')
    x, y = _batch()
    params, unscaled = _params(model), copy.deepcopy(model)
    cfg = AttackConfig(attack='pgd', steps=2)
    torch.manual_seed(6)
    out = adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), cfg,
                           autocast=autocast, scaler=scaler)
    torch.manual_seed(6)
    ref = adversarial_step(unscaled, x, y, torch.optim.SGD(unscaled.parameters(), lr=0.1), cfg,
                           autocast=torch.autocast('cpu', dtype=torch.float16))
    assert torch.isfinite(torch.tensor(out.loss)) and out.loss == ref.loss
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(params, model.parameters()))
    for p, q in zip(model.parameters(), unscaled.parameters()):  # the gradients were unscaled before the step
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3)
    assert scaler.get_scale() == 2.0 ** 10  # finite grads: no back-off

    # a scale that overflows fp16 gradients: the scaler skips the step and backs off
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 60)
    params = _params(model)
    adversarial_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.1), cfg, autocast=autocast,
                     scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert scaler.get_scale() == 2.0 ** 59
