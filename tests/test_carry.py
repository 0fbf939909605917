"""train/carry.py: a long run carried through git (train/pending/) resumes on a new machine."""
import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robust_zoo.training import load_train_state

ROOT = Path(__file__).resolve().parents[1]
ARGS = ['--model', 'robust_zoo/lenet_small_relu_at', '--dataset', 'fashion-mnist', '--attack', 'pgd',
        '--attack-steps', '2', '--adv-frac', '0.5', '--train-samples', '128', '-b', '64', '--val-samples', '32',
        '--val-attack', 'fgsm', '--eval-samples', '0']


@pytest.fixture
def carry(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location('carry', ROOT / 'train' / 'carry.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, 'ROOT', tmp_path)
    monkeypatch.setattr(module, 'PENDING', tmp_path / 'train' / 'pending')
    return module


def _train(*args):
    proc = subprocess.run([sys.executable, str(ROOT / 'train' / 'train_at.py'), *map(str, args)],
                          capture_output=True, text=True,
                          env={'OMP_NUM_THREADS': '1', 'PATH': '', 'PYTHONPATH': str(ROOT)})  # this checkout's package
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _epochs(run):
    return [r['epoch'] for r in csv.DictReader((run / 'summary.csv').open())]


def test_a_carried_run_resumes_where_it_stopped_on_a_new_machine(carry, tmp_path, capsys):
    run = tmp_path / 'runs' / 'grid' / 'lenet-s0'
    _train(*ARGS, '--epochs', '1', '--output', run)
    assert carry.main(['save', str(run)]) == 0
    assert sorted(p.name for p in (tmp_path / 'train/pending/runs/grid/lenet-s0').iterdir()) == [
        'args.yaml', 'last.ckpt', 'log.txt', 'summary.csv']
    shutil.rmtree(tmp_path / 'runs')  # the machine is gone
    assert carry.main(['restore']) == 0
    assert 'restored' in capsys.readouterr().out and load_train_state(run / 'last.ckpt')['epoch'] == 1
    _train('--resume', run, '--epochs', '2', '--allow-recipe-change')  # one more epoch: a recorded recipe change
    assert _epochs(run) == ['0', '1']


def test_restore_keeps_a_run_that_is_further_along(carry, tmp_path, capsys):
    run = tmp_path / 'runs' / 'grid' / 'lenet-s0'
    _train(*ARGS, '--epochs', '1', '--output', run)
    carry.main(['save', str(run)])
    _train('--resume', run, '--epochs', '2', '--allow-recipe-change')  # one more epoch: a recorded recipe change
    assert carry.main(['restore']) == 0
    assert 'kept' in capsys.readouterr().out and load_train_state(run / 'last.ckpt')['epoch'] == 2


def test_save_refuses_a_run_without_a_checkpoint_and_a_folder_outside_the_repo(carry, tmp_path):
    run = tmp_path / 'runs' / 'x'
    run.mkdir(parents=True)
    (run / 'args.yaml').write_text('model: robust_zoo/lenet_small_relu_at\n')
    with pytest.raises(SystemExit, match='no last.ckpt yet'):
        carry.main(['save', str(run)])
    with pytest.raises(SystemExit, match='outside the repository'):
        carry.main(['save', '/'])
    assert not (tmp_path / 'train' / 'pending').exists()
