"""train/train_at.py end to end: outputs, kill-and-resume, NaN stop, torchrun, fine-tuning, bad input."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml

import robust_zoo  # noqa: F401
from robust_zoo.training import epoch_lrs, first_decayed_epoch, load_train_state, load_weights

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'train' / 'train_at.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
QUICK = ['--dataset', 'fashion-mnist', '--attack', 'fgsm-rs', '--attack-eps', '0.1', '--val-samples', '64',
         '--val-attack', 'fgsm', '--eval-samples', '0', '--log-interval', '4']


def run(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=ENV, capture_output=True,
                          text=True, cwd=ROOT, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}')
    return proc


def test_quick_run_leaves_every_output(tmp_path):
    out = tmp_path / 'OUT'
    run('--model', 'robust_zoo/resnet20_silu_at', *QUICK, '--epochs', '1', '--train-samples', '256',
        '-b', '64', '--eval-samples', '50', '--eval-attacks', 'fgsm', '--output', out)
    rows = list(csv.DictReader((out / 'summary.csv').open()))
    assert [r['epoch'] for r in rows] == ['0']
    assert {'train_loss', 'train_adv_acc', 'eval_clean_acc', 'eval_robust_acc', 'lr'} <= set(rows[0])
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert args['model'] == 'robust_zoo/resnet20_silu_at' and args['attack_eps'] == 0.1
    model = timm.create_model('robust_zoo/resnet20_silu_at')
    model.load_state_dict(load_weights(out / 'model.safetensors'))
    state = load_train_state(out / 'last.ckpt', arch='robust_zoo/resnet20_silu_at')
    assert (state['epoch'], state['step_in_epoch'], state['global_step']) == (1, 0, 4)
    record = json.loads((out / 'final_eval.json').read_text())
    assert record['evaluation']['n_examples'] == 50
    assert record['evaluation']['threat_model']['id'] == 'fashion-mnist-linf'
    assert 'img/s' in (out / 'log.txt').read_text()
    assert not list(out.glob('.*.tmp')), 'every atomic write renamed its temp file into place'


def test_summary_logs_the_lr_each_epoch_trained_with(tmp_path):
    """timm counts multistep milestones from 1: milestone 2 lowers the lr from epoch 1 (counted from 0); the
    summary's lr column is the lr the epoch trained with, and the schedule helper says the same."""
    out = tmp_path / 'OUT'
    run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '3', '--train-samples', '128', '-b', '64',
        '--opt', 'sgd', '--lr', '0.01', '--sched', 'multistep', '--decay-milestones', '2', '--warmup-epochs', '0',
        '--output', out)
    logged = [float(r['lr']) for r in csv.DictReader((out / 'summary.csv').open())]
    assert logged == pytest.approx([0.01, 0.001, 0.001])
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert epoch_lrs(args) == pytest.approx(logged) and first_decayed_epoch(args) == 1


def _digest(path):
    return {k: v for k, v in load_weights(path).items()}


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    common = ['--model', 'robust_zoo/resnet20_relu_at', *QUICK, '--epochs', '2', '--train-samples', '512',
              '-b', '32', '--checkpoint-interval', '1', '--seed', '3']
    run(*common, '--output', tmp_path / 'a')

    out = tmp_path / 'b'
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *map(str, common), '--output', str(out)], env=ENV,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / 'last.ckpt').exists():
            state = load_train_state(out / 'last.ckpt')
            if state['epoch'] == 1 and state['step_in_epoch'] >= 3:
                proc.send_signal(signal.SIGKILL)
                killed_at = (state['epoch'], state['step_in_epoch'])
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, 'the run ended before it could be killed mid-epoch'
    state = load_train_state(out / 'last.ckpt')
    assert state['step_in_epoch'] > 0  # killed mid-epoch, resumed mid-epoch
    resumed = run('--resume', out)
    assert 'resumed' in resumed.stdout
    a, b = _digest(tmp_path / 'a' / 'model.safetensors'), _digest(out / 'model.safetensors')
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r['epoch'] for r in csv.DictReader((out / 'summary.csv').open())] == ['0', '1']


def test_a_run_killed_after_training_resumes_into_its_final_evaluation(tmp_path):
    """Killed during the final evaluation: last.ckpt is past the last epoch, so the resume trains nothing and
    evaluates (it once crashed on a model variable set only inside the epoch loop)."""
    out = tmp_path / 'r'
    run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '256', '-b', '64',
        '--eval-samples', '20', '--eval-attacks', 'fgsm', '--output', out)
    trained = _digest(out / 'model.safetensors')
    (out / 'final_eval.json').unlink()
    resumed = run('--resume', out)
    assert 'resumed' in resumed.stdout and 'done: train loss' not in resumed.stdout
    record = json.loads((out / 'final_eval.json').read_text())
    assert record['epochs_run'] == 1 and record['evaluation']['n_examples'] == 20
    assert all(torch.equal(trained[k], v) for k, v in _digest(out / 'model.safetensors').items())


def test_a_run_resumed_after_an_early_stop_trains_no_further(tmp_path):
    out = tmp_path / 'e'
    # --early-stop-drop 2: every epoch falls below 2 x the best, so the first one stops the run
    run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '4', '--train-samples', '256', '-b', '64',
        '--early-stop-robust', '--early-stop-drop', '2', '--eval-samples', '20', '--eval-attacks', 'fgsm',
        '--output', out)
    first = json.loads((out / 'final_eval.json').read_text())
    assert first['stopped_early'] and first['epochs_run'] == 1
    assert load_train_state(out / 'last.ckpt')['stopped_early']
    (out / 'final_eval.json').unlink()
    resumed = run('--resume', out)
    assert 'resumed' in resumed.stdout
    assert '\nepoch 1\n' not in resumed.stdout and 'done: train loss' not in resumed.stdout
    record = json.loads((out / 'final_eval.json').read_text())
    assert record['stopped_early'] and record['epochs_run'] == 1 and record['best'] == first['best']
    assert [r['epoch'] for r in csv.DictReader((out / 'summary.csv').open())] == ['0']


def test_non_finite_loss_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / 'nan'
    proc = run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '1024', '-b', '32',
               '--lr', '1e30', '--checkpoint-interval', '1', '--output', out, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert 'non-finite training loss' in proc.stdout + proc.stderr
    state = load_train_state(out / 'last.ckpt')
    assert all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())


def test_torchrun_two_processes_end_with_identical_parameters(tmp_path):
    out = tmp_path / 'ddp'
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(SCRIPT),
         '--model', 'robust_zoo/resnet20_pssilu_at', *QUICK, '--epochs', '1', '--train-samples', '256', '-b', '32',
         '--output', str(out)], env=ENV, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((out / 'final_eval.json').read_text())
    assert record['world_size'] == 2 and record['ranks_identical'] is True
    # 256 images / (2 ranks x 32) = 4 global steps
    assert load_train_state(out / 'last.ckpt')['global_step'] == 4


def test_fine_tune_new_head_with_frozen_backbone(tmp_path):
    src = tmp_path / 'src'
    run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '256', '-b', '64',
        '--output', src)
    out = tmp_path / 'ft'
    proc = run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '256', '-b', '64',
               '--initial-checkpoint', src / 'model.safetensors', '--reset-head', '--freeze', 'backbone',
               '--output', out)
    assert 'new head' in proc.stdout
    before, after = load_weights(src / 'model.safetensors'), load_weights(out / 'model.safetensors')
    head = {k for k in after if k.startswith('head')}
    assert head
    for k in after:
        assert torch.equal(before[k], after[k]) == (k not in head), k


@pytest.mark.parametrize('flags, message', [
    (['--attack-eps', '8'], '8/255'),
    (['--model', 'robust_zoo/resnet20_reluu_at'],
     "no model 'resnet20_reluu_at'. Did you mean robust_zoo/resnet20_relu_at"),
    (['--model', 'resnet18x'], '--model: Unknown model (resnet18x). Did you mean resnet18,'),
    (['--dataset', 'svhn'], 'unknown --dataset'),
    (['--val-attack', 'pgd-x'], 'Unknown or not yet available attack'),
    (['--in-chans', '3'], 'images have 1 channel(s)'),
    (['-b', '128'], 'cannot fill one batch'),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, flags, message):
    proc = run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '64', '-b', '32',
               '--output', tmp_path / 'x', *flags, check=False)
    assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'x').exists()  # no run folder, no log.txt: nothing to clean up or mistake for a run


def test_existing_run_is_never_overwritten_and_resume_checks_the_architecture(tmp_path):
    out = tmp_path / 'run'
    run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '64', '-b', '32',
        '--output', out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = run('--model', 'robust_zoo/mlp3_relu_at', *QUICK, '--epochs', '1', '--train-samples', '64',
               '--output', out, check=False)
    assert proc.returncode == 2 and 'already holds a training run' in proc.stderr
    proc = run('--model', 'robust_zoo/mlp3_silu_at', '--resume', out, check=False)
    assert proc.returncode == 2 and "saved for model 'robust_zoo/mlp3_relu_at'" in proc.stderr
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'last.ckpt').write_bytes(b'not a checkpoint')
    proc = run('--model', 'robust_zoo/mlp3_relu_at', '--resume', tmp_path / 'bad', check=False)
    assert proc.returncode == 2 and 'could not be read' in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize('recipe', sorted((ROOT / 'train' / 'configs').glob('*.yaml')), ids=lambda p: p.stem)
def test_recipes_parse_and_name_real_models(recipe):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_at
    finally:
        sys.path.pop(0)
    args = train_at.parse_args(['-c', str(recipe)])
    train_at.check_args(args)
    assert timm.is_model(args.model.split('/', 1)[1])
    assert recipe.read_text().lstrip().startswith('#'), 'each recipe cites its source in a header comment'


def test_unknown_config_key_is_rejected(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('attack_epsilon: 0.1\n')
    proc = run('-c', cfg, check=False)
    assert proc.returncode == 2 and 'attack_epsilon' in proc.stderr


def test_amp_falls_back_to_fp32_where_bf16_is_emulated_and_says_so(monkeypatch):
    """Emulated bf16 (an AVX2-only CPU) made a step ~7x slower than fp32: --amp trains in fp32 there and the
    run's args.yaml records it; where bf16 is native, --amp stays on."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_at
    finally:
        sys.path.pop(0)
    args = train_at.parse_args(['-c', str(ROOT / 'train' / 'configs' / 'fmnist_resnet20.yaml')])
    assert args.amp
    import robust_zoo.training.precision as precision
    monkeypatch.setattr(precision, 'native_autocast', lambda device, dtype: True)
    assert train_at.resolve_amp(args, torch.device('cpu')) is None and args.amp
    monkeypatch.setattr(precision, 'native_autocast', lambda device, dtype: False)
    message = train_at.resolve_amp(args, torch.device('cpu'))
    assert not args.amp and 'fp32' in message and 'no native bfloat16' in message
    assert train_at.resolve_amp(args, torch.device('cpu')) is None, 'without --amp nothing changes'


def test_fused_act_turns_on_compiled_kernels_in_fp32_only(monkeypatch):
    """--fused-act enables robust_zoo's compiled activation kernels; under --amp (never measured faster) or without
    a C++ compiler it stays off, the log says why, and args.yaml records it."""
    from robust_zoo.layers import fused_activations_enabled, set_fused_activations
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_at
    finally:
        sys.path.pop(0)
    cpu = torch.device('cpu')
    try:
        args = train_at.parse_args(['--fused-act', '--amp'])
        assert 'measured in fp32 only' in train_at.resolve_fused_act(args, cpu)
        assert not args.fused_act and not fused_activations_enabled()
        monkeypatch.setattr(train_at.shutil, 'which', lambda name: None)
        args = train_at.parse_args(['--fused-act'])
        assert 'no C++ compiler' in train_at.resolve_fused_act(args, cpu)
        assert not args.fused_act and not fused_activations_enabled()
        monkeypatch.setattr(train_at.shutil, 'which', lambda name: f'/usr/bin/{name}')
        args = train_at.parse_args(['--fused-act'])
        assert 'compiled kernels' in train_at.resolve_fused_act(args, cpu)
        assert args.fused_act and fused_activations_enabled()
        assert train_at.resolve_fused_act(train_at.parse_args([]), cpu) is None
    finally:
        set_fused_activations(False)


def test_an_epoch_that_overfits_catastrophically_is_logged_with_what_to_do():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_at
    finally:
        sys.path.pop(0)
    args = train_at.parse_args(['--attack', 'n-fgsm', '--val-attack', 'pgd-10'])
    warning = train_at.overfitting_warning(args, 1, dict(adv_acc=0.807), dict(robust_acc=0.373))
    assert warning.startswith('epoch 1: catastrophic overfitting suspected: n-fgsm training accuracy 0.807')
    assert 'validation pgd-10 accuracy 0.373' in warning and 'add --early-stop-robust' in warning
    args = train_at.parse_args(['--attack', 'n-fgsm', '--val-attack', 'pgd-10', '--early-stop-robust'])
    assert 'Early stopping keeps the best' in train_at.overfitting_warning(args, 1, dict(adv_acc=0.807),
                                                                             dict(robust_acc=0.373))
    assert train_at.overfitting_warning(args, 1, dict(adv_acc=0.74), dict(robust_acc=0.72)) is None
    assert train_at.overfitting_warning(args, 1, dict(adv_acc=0.74), {}) is None  # no validation


def test_native_autocast_follows_onednn_on_cpu(monkeypatch):
    from robust_zoo.training import native_autocast
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: False, raising=False)
    assert native_autocast('cpu') is False
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: True, raising=False)
    assert native_autocast('cpu', torch.bfloat16) is True


def test_resolve_autocast_is_the_one_amp_decision(monkeypatch):
    """train_at.py, robust-zoo eval and the demo all ask resolve_autocast: --amp stays where low precision is
    native, becomes fp32 with a message naming what runs in fp32 where it is emulated, and no --amp says nothing."""
    import robust_zoo.training.precision as precision
    monkeypatch.setattr(precision, 'native_autocast', lambda device, dtype: True)
    assert precision.resolve_autocast(True, 'cpu') == (True, None)
    monkeypatch.setattr(precision, 'native_autocast', lambda device, dtype: False)
    amp, message = precision.resolve_autocast(True, 'cpu', torch.float16, what='the attacks run')
    assert amp is False and 'no native float16' in message and 'the attacks run in fp32' in message
    assert precision.resolve_autocast(False, 'cpu') == (False, None)
