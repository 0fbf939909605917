"""Library pieces of training: atomic checkpoints, safe loading, deterministic sharded batches, freezing."""
import pickle

import pytest
import timm
import torch

import robust_zoo  # noqa: F401
from robust_zoo.data import ImageTensorDataset
from robust_zoo.training import (
    AttackConfig, CheckpointError, atomic_write, check_weights_file, epoch_batches, freeze, load_train_state,
    load_weights, parameter_digest, save_train_state, save_weights, subset, train_one_epoch, validate,
)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / 'last.ckpt'
    target.write_bytes(b'old')

    def crash(tmp):
        open(tmp, 'wb').write(b'half a fi')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['last.ckpt']  # no temp file left behind


def test_weights_round_trip_and_corrupt_file_error(tmp_path):
    model = timm.create_model('robust_zoo/mlp3_relu_at')
    path = save_weights(model.state_dict(), tmp_path / 'model.safetensors', {'arch': 'mlp3_relu_at'})
    loaded = load_weights(path)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_weights(path)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_weights(tmp_path / 'nope.safetensors')
    with pytest.raises(CheckpointError, match='truncated or corrupt'):  # the header alone is checked
        check_weights_file(path)
    good = save_weights(model.state_dict(), tmp_path / 'good.safetensors')
    assert check_weights_file(good) == good


class _Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['EVIL_MARK'], 'w').write('pwned')",))


def test_train_state_loader_never_unpickles_code(tmp_path, monkeypatch):
    mark = tmp_path / 'mark'
    monkeypatch.setenv('EVIL_MARK', str(mark))
    evil = tmp_path / 'evil.ckpt'
    torch.save({'format': 'robust_zoo.train_state/1', 'x': _Evil()}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match='could not be read'):
        load_train_state(evil)
    assert not mark.exists()


def test_train_state_round_trip_and_architecture_check(tmp_path):
    path = save_train_state(tmp_path / 's.ckpt', dict(arch='a', epoch=2, w=torch.ones(3), nested={'k': [1, 2]}))
    state = load_train_state(path, arch='a')
    assert state['epoch'] == 2 and torch.equal(state['w'], torch.ones(3)) and state['nested'] == {'k': [1, 2]}
    with pytest.raises(CheckpointError, match="saved for model 'a', not 'b'"):
        load_train_state(path, arch='b')
    torch.save({'something': 'else'}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='not a robust_zoo training checkpoint'):
        load_train_state(tmp_path / 'other.pt')


def test_epoch_batches_are_deterministic_disjoint_across_ranks_and_change_per_epoch():
    a = epoch_batches(100, 8, seed=1, epoch=0, rank=0, world_size=2)
    b = epoch_batches(100, 8, seed=1, epoch=0, rank=1, world_size=2)
    assert len(a) == len(b) == 100 // 16
    assert all(len(x) == 8 for x in a + b)
    assert not set(torch.cat(a).tolist()) & set(torch.cat(b).tolist())
    assert all(torch.equal(x, y) for x, y in zip(a, epoch_batches(100, 8, seed=1, epoch=0, rank=0, world_size=2)))
    assert not torch.equal(torch.cat(a), torch.cat(epoch_batches(100, 8, seed=1, epoch=1, rank=0, world_size=2)))
    with pytest.raises(ValueError, match='cannot fill one batch'):
        epoch_batches(10, 8, seed=0, epoch=0, world_size=2)


def test_freeze_backbone_and_activations():
    model = timm.create_model('robust_zoo/resnet20_sparta_at')
    names = freeze(model, 'activations')
    from robust_zoo.sparta_bank import sparta_units
    assert set(names) == {f'{unit}.{n}' for unit, m in sparta_units(model).items() for n, _ in m.named_parameters()}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in names)
    assert all(p.requires_grad for n, p in model.named_parameters() if n not in names)
    model = timm.create_model('robust_zoo/resnet20_pssilu_at')
    assert freeze(model, 'activations') == [n for n, _ in model.shared_act.named_parameters(prefix='shared_act')]
    model = timm.create_model('robust_zoo/mlp3_relu_at')
    frozen = freeze(model, 'backbone')
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {'head.fc.weight', 'head.fc.bias'}
    assert 'stages.0.weight' in frozen
    with pytest.raises(ValueError, match='no activation parameters'):
        freeze(timm.create_model('robust_zoo/mlp3_relu_at'), 'activations')


def test_parameter_digest_sees_a_one_ulp_change():
    model = timm.create_model('robust_zoo/mlp3_relu_at')
    d = parameter_digest(model)
    with torch.no_grad():
        w = model.head.fc.bias
        w[0] = torch.nextafter(w[0], torch.tensor(1.0))
    assert parameter_digest(model) != d


def _tiny_data(n=64):
    g = torch.Generator().manual_seed(0)
    return ImageTensorDataset(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                              torch.randint(0, 10, (n,), generator=g))


def test_subset_stays_in_memory():
    ds = _tiny_data()
    sub = subset(ds, torch.arange(10, 20))
    assert len(sub) == 10 and torch.equal(sub.batch(torch.arange(10))[1], ds.labels[10:20])


def test_train_one_epoch_resumed_mid_epoch_equals_the_full_epoch():
    ds = _tiny_data()
    batches = epoch_batches(len(ds), 16, seed=0, epoch=0)
    cfg = AttackConfig('fgsm-rs', eps=0.1)

    def fresh():
        torch.manual_seed(0)
        m = timm.create_model('robust_zoo/mlp3_relu_at')
        return m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    full, opt = fresh()
    metrics = train_one_epoch(full, ds, batches, opt, cfg, seed=5, global_step=0, log=lambda s: None)
    assert metrics['img_per_sec'] > 0 and 0 <= metrics['adv_acc'] <= 1
    part, opt = fresh()
    train_one_epoch(part, ds, batches[:2], opt, cfg, seed=5, global_step=0, log=lambda s: None)
    train_one_epoch(part, ds, batches, opt, cfg, seed=5, global_step=2, start_step=2, log=lambda s: None)
    assert parameter_digest(part) == parameter_digest(full)


def test_validate_reports_clean_and_robust_accuracy():
    """Accuracy in eval mode on the clean images and on the attack's images of each batch; the mode is restored."""
    torch.manual_seed(0)
    model = timm.create_model('robust_zoo/mlp3_relu_at').train()
    ds = _tiny_data(32)
    x, y = ds.batch(torch.arange(32))
    model.eval()
    with torch.no_grad():  # by hand: the "attack" swaps the images of each batch of 8 around
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(torch.cat([b.flip(0) for b in x.split(8)])).argmax(1) == y).float().mean().item()
    model.train()
    out = validate(model, ds, lambda m, xb, yb: xb.flip(0), batch_size=8)
    assert out == {'clean_acc': pytest.approx(clean), 'robust_acc': pytest.approx(robust)} and clean != robust
    assert model.training
    assert validate(model.eval(), ds, batch_size=8) == {'clean_acc': pytest.approx(clean)} and not model.training


def test_catastrophic_overfitting_is_a_single_step_attack_far_above_multi_step_validation():
    from robust_zoo.training import CO_GAP, catastrophic_overfitting_epochs, kept_epoch
    # a Fashion-MNIST run of this project that overfit (train n-fgsm 0.62 / 0.81 vs validation pgd-10 0.37)
    # beside a healthy one, as summary.csv gives them (strings), with an epoch that had no validation
    failed = [dict(epoch='0', train_adv_acc='0.619', eval_robust_acc='0.371'),
              dict(epoch='1', train_adv_acc='0.807', eval_robust_acc='0.373')]
    healthy = [dict(epoch='0', train_adv_acc='0.567', eval_robust_acc='0.691'),
               dict(epoch='1', train_adv_acc='0.740', eval_robust_acc='0.719'), dict(epoch='2', train_adv_acc='0.9')]
    assert catastrophic_overfitting_epochs(failed, 'n-fgsm', 'pgd-10') == [0, 1]
    assert catastrophic_overfitting_epochs(healthy, 'n-fgsm', 'pgd-10') == []
    assert catastrophic_overfitting_epochs(failed, 'fgsm-rs', 'pgd-10', gap=0.3) == [1]
    edge = [dict(epoch=0, train_adv_acc=0.5 + CO_GAP, eval_robust_acc=0.5)]  # a gap of exactly CO_GAP is not one
    assert catastrophic_overfitting_epochs(edge, 'n-fgsm', 'pgd-10') == []
    # a multi-step training attack's gap is robust overfitting, and a one-step validation attack is fooled too
    assert catastrophic_overfitting_epochs(failed, 'pgd', 'pgd-10') == []
    assert catastrophic_overfitting_epochs(failed, 'n-fgsm', 'fgsm') == []
    assert catastrophic_overfitting_epochs(failed, 'n-fgsm', 'none') == []
    assert catastrophic_overfitting_epochs(failed, 'n-fgsm', 'pgd-1') == []
    assert catastrophic_overfitting_epochs(failed, 'n-fgsm', 'apgd-ce') == [0, 1]
    assert kept_epoch(failed, best_epoch=0, early_stop=True) == 0
    assert kept_epoch(failed, best_epoch=0, early_stop=False) == 1
    assert kept_epoch([], best_epoch=None, early_stop=False) is None
