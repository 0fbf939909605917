"""A catalogue of bad inputs a user in a hurry types, against the CLI, the API and train/train_at.py.

Each case asserts the clear error (exit code and message) or the correct behaviour, and that no file of the
workspace changed (every file's sha256, before and after). A traceback from a bad input fails the case: the
CLI cases run `main()` in-process, where an uncaught exception fails the test; the training script runs as a
subprocess whose stderr must not hold one. The workspace is a temporary cards folder with a copy of one
published card, a temporary index and a small run: the repository's model_cards/ and index are never written.
"""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

from robust_zoo import sparta_bank as sparta
from robust_zoo.models import _hub, _pretrained
from robust_zoo.cli import main
from robust_zoo.evaluation import evaluate
from robust_zoo.threat_models import ThreatModel
from robust_zoo.training import CheckpointError, save_weights
from test_nothing_lost import ENV, SCRIPT, make_run, snapshot

ROOT = Path(__file__).resolve().parents[1]
CARD = 'mlp3_relu_at.fmnist_s0'


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """The workspace: cards/ (a copy of CARD), published.json (its entry), run/ (a small run of other weights)
    and files a user might pass by mistake. The temporary index and cards are the ones in use meanwhile."""
    root = tmp_path_factory.mktemp('ws')
    cards = root / 'cards'
    shutil.copytree(ROOT / 'model_cards' / CARD, cards / CARD)
    index = root / 'published.json'
    published = _pretrained.load_published(ROOT / 'robust_zoo' / 'published.json')
    index.write_text(json.dumps({CARD: published[CARD]}, indent=2))
    make_run(root / 'run', seed=3)
    torch.manual_seed(0)
    silu = timm.create_model('robust_zoo/mlp3_silu_at')
    save_weights(silu.state_dict(), root / 'silu.safetensors', _hub.weights_metadata('mlp3_silu_at'))
    torch.save(silu.state_dict(), root / 'weights.pt')
    (root / 'empty.safetensors').write_bytes(b'')
    (root / 'garbage.json').write_text('{"not json')
    (root / 'list.json').write_text('[1, 2]')
    (root / 'other_arch.json').write_text(json.dumps(dict(json.loads((root / 'run' / 'pgd5.json').read_text()),
                                                          model='robust_zoo/mlp3_silu_at')))
    (root / 'plot.txt').write_text('not a png')
    (root / 'README.md').write_text('# readme\n<!-- leaderboard:start -->\ntable\n<!-- leaderboard:end -->\n')
    (root / 'NOMARKERS.md').write_text('# readme without markers\n')
    (root / 'empty_dir').mkdir()
    (root / 'state.json').write_text('garbage')
    _pretrained.register_published(index, cards)
    yield root
    _pretrained.register_published()


# (id, argv with {ws} for the workspace, exit code, words the error must hold)
CLI_CASES = [
    ('eval: typo in the model name', ['eval', 'mlp3_relu_att'], 2, 'Did you mean robust_zoo/mlp3_relu_at'),
    ('eval: unknown tag', ['eval', 'mlp3_relu_at.fmnist_s9'], 2, 'Invalid pretrained tag'),
    ('eval: typo in the threat model', ['eval', 'mlp3_relu_at', '--threat-model', 'fmnist-linf'], 2,
     'Unknown threat model'),
    ('eval: missing checkpoint', ['eval', 'mlp3_relu_at', '--checkpoint', '{ws}/nope.safetensors'], 2,
     'does not exist'),
    ('eval: a .pt file as checkpoint', ['eval', 'mlp3_silu_at', '--checkpoint', '{ws}/weights.pt'], 2,
     'is not a .safetensors file'),
    ('eval: an empty checkpoint', ['eval', 'mlp3_relu_at', '--checkpoint', '{ws}/empty.safetensors'], 2,
     'not a readable safetensors file'),
    ('eval: weights of another activation', ['eval', 'mlp3_relu_at', '--checkpoint', '{ws}/silu.safetensors'], 2,
     'holds weights of mlp3_silu_at (activation silu), not of mlp3_relu_at (activation relu)'),
    ('eval: typo in an attack', ['eval', 'mlp3_relu_at', '--attacks', 'pgd20', '--n-examples', '5'], 2,
     "Unknown or not yet available attack 'pgd20'"),
    ('eval: pgd with 0 steps', ['eval', 'mlp3_relu_at', '--attacks', 'pgd-0', '--n-examples', '5'], 2,
     "Unknown or not yet available attack 'pgd-0'"),
    ('eval: zero examples', ['eval', 'mlp3_relu_at', '--n-examples', '0'], 2, 'n_examples must be >= 1'),
    ('eval: zero batch size', ['eval', 'mlp3_relu_at', '--n-examples', '5', '--batch-size', '0'], 2,
     'batch_size must be >= 1'),
    ('eval: wrong dataset path', ['eval', 'mlp3_relu_at', '--n-examples', '5', '--data-dir', '{ws}/nowhere'], 2,
     'not found under'),
    ('eval: a state file of something else', ['eval', 'mlp3_relu_at', '--n-examples', '5', '--attacks', 'fgsm',
                                              '--state', '{ws}/state.json'], 2, 'could not be read'),
    ('card: a tag with a dot', ['card', '{ws}/run', '--tag', 'fmnist.s0'], 2, 'must be letters, digits'),
    ('card: a run folder that is not one', ['card', '{ws}/empty_dir', '--tag', 't'], 2,
     'is not a finished train/train_at.py run'),
    ('card: missing record', ['card', '{ws}/run', '--tag', 't', '--eval', '{ws}/nope.json'], 2, 'does not exist'),
    ('card: a record that is not JSON', ['card', '{ws}/run', '--tag', 't', '--eval', '{ws}/garbage.json'], 2,
     'is not valid JSON'),
    ('card: JSON that is not a record', ['card', '{ws}/run', '--tag', 't', '--eval', '{ws}/list.json'], 2,
     'is not an evaluation record'),
    ('card: a record of another model', ['card', '{ws}/run', '--tag', 't', '--eval', '{ws}/other_arch.json'], 2,
     'an evaluation record is for robust_zoo/mlp3_silu_at'),
    ('card: the published tag again', ['card', '{ws}/run', '--tag', 'fmnist_s0'], 2,
     'mlp3_relu_at.fmnist_s0 is already published'),
    ('card: a record of the published weights for a run of others', ['card', '{ws}/run', '--tag', 'fmnist_s0',
                                                                     '--force'], 2, 'measured other weights'),
    ('card: a plot that is not a PNG', ['card', '{ws}/run', '--tag', 't', '--plot', '{ws}/plot.txt'], 2,
     'is not a PNG file'),
    ('card: --drop-old-evals without --force', ['card', '{ws}/run', '--tag', 't', '--drop-old-evals'], 2,
     '--drop-old-evals only goes with --force'),
    ('unpublish: typo in the name', ['unpublish', 'mlp3_relu_at.fmnist_s'], 2,
     'Did you mean mlp3_relu_at.fmnist_s0'),
    ('unpublish: wrong --out', ['unpublish', CARD, '--out', '{ws}/empty_dir'], 2, 'is --out right?'),
    ('unpublish: missing --out', ['unpublish', CARD, '--out', '{ws}/nowhere'], 2, 'does not exist'),
    ('unpublish: one good name, one typo', ['unpublish', CARD, 'mlp3_relu_at.nope'], 2, 'is not published'),
    ('leaderboard: typo in --cards', ['leaderboard', '--readme', '{ws}/README.md', '--cards', '{ws}/crads'], 2,
     'does not exist'),
    ('leaderboard: an empty --cards', ['leaderboard', '--readme', '{ws}/README.md', '--cards', '{ws}/empty_dir'], 2,
     'holds no model card'),
    ('leaderboard: a missing README', ['leaderboard', '--readme', '{ws}/READ.md', '--cards', '{ws}/cards'], 2,
     'does not exist'),
    ('leaderboard: a README without markers', ['leaderboard', '--readme', '{ws}/NOMARKERS.md', '--cards',
                                               '{ws}/cards'], 2, 'needs one <!-- leaderboard:start --> line'),
    ('push: not a card folder', ['push', '{ws}/empty_dir'], 2, 'is not a card repo folder'),
    ('push: a bad repo id', ['push', '{ws}/cards/' + CARD, '--repo-id', 'my model'], 2, 'must be ORG/NAME'),
    ('list: a pattern that matches nothing', ['list', 'resnet20_reluu*'], 1, 'no model matches'),
    ('convert: no arguments', ['convert'], 2, 'give SOURCE CHECKPOINT --model NAME'),
    ('demo: a model that is not published', ['demo', '--published', 'resnet20_silu_at.nope'], 2, 'is not published'),
]


@pytest.mark.parametrize('argv, code, words', [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_with_a_clear_error_and_changes_nothing(ws, capsys, argv, code, words):
    before = snapshot(ws)
    assert main([a.format(ws=ws) for a in argv]) == code
    out, err = capsys.readouterr()
    assert words in err, err
    assert 'Traceback' not in out + err
    assert snapshot(ws) == before


# --- the API --------------------------------------------------------------------------------------------

def _model():
    torch.manual_seed(0)
    return timm.create_model('robust_zoo/mlp3_relu_at').eval()


def _data(n=8):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 10


def _with(value):
    x, y = _data()
    x[3, 0, 5, 5] = value
    return x, y


API_CASES = [
    ('images in 0..255', lambda: evaluate(_model(), 'fashion-mnist-linf', data=(_data()[0] * 255, _data()[1])),
     ValueError, r'takes images in \[0, 1\]'),
    ('a NaN image', lambda: evaluate(_model(), 'fashion-mnist-linf', data=_with(math.nan)), ValueError,
     'NaN or infinite'),
    ('an infinite image', lambda: evaluate(_model(), 'fashion-mnist-linf', data=_with(math.inf)), ValueError,
     'NaN or infinite'),
    ('a NaN batch straight into the model', lambda: _model()(_with(math.nan)[0]), ValueError, 'NaN or infinite'),
    ('typo in the threat model', lambda: evaluate(_model(), 'fmnist-linf', data=_data()), ValueError,
     'Unknown threat model'),
    ('an unknown attack', lambda: evaluate(_model(), 'fashion-mnist-linf', data=_data(), attacks=['pgd-ten']),
     ValueError, 'Unknown or not yet available attack'),
    ('an unknown check', lambda: evaluate(_model(), 'fashion-mnist-linf', data=_data(), checks=['budgte']),
     ValueError, 'Unknown check'),
    ('eps 8 instead of 8/255', lambda: ThreatModel('mine', 'cifar10', 'Linf', 8, (), 10, 'none'), ValueError,
     'write 8/255, not 8'),
    ('weights of another activation through the overlay', lambda: timm.create_model(
        'robust_zoo/mlp3_relu_at', pretrained=True, pretrained_cfg_overlay=dict(file=str(WS[0] / 'silu.safetensors'))),
     CheckpointError, 'holds weights of mlp3_silu_at'),
    ('a bank that does not exist', lambda: sparta.resolve_bank('resnet20_sparta_at.nope'), sparta.SpartaBankError,
     'is neither a bank file nor a published Sparta bank'),
    ('a bank into a model without Sparta units', lambda: sparta.load_bank(_model(), WS[0] / 'silu.safetensors'),
     sparta.SpartaBankError, 'is not a Sparta bank'),
    ('a broken index', lambda: _pretrained.load_published(WS[0] / 'garbage.json'), ValueError,
     'is not a readable published index'),
]
WS = []  # the workspace, for the cases above


@pytest.mark.parametrize('call, error, words', [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_refuses_with_a_clear_error_and_changes_nothing(ws, call, error, words):
    WS[:] = [ws]
    before = snapshot(ws)
    with pytest.raises(error, match=words):
        call()
    assert snapshot(ws) == before


def test_a_nan_batch_after_good_ones_is_refused_too():
    model = _model()
    model(_data()[0])  # a first good forward used to switch the check off
    with pytest.raises(ValueError, match='NaN or infinite'):
        model(_with(math.nan)[0])


def test_a_model_evaluated_under_another_datasets_threat_model_is_flagged(ws, caplog):
    model = timm.create_model(f'robust_zoo/{CARD}', pretrained=True)
    result = evaluate(model, 'digits-linf', data=_data(), attacks=['fgsm'], checks=False)
    (check,) = [c for c in result.checks if c['name'] == 'threat model']
    assert check['status'] == 'WARN' and 'published for fashion-mnist-linf (fashion-mnist)' in check['detail']
    assert 'evaluated under digits-linf (digits)' in caplog.text


def test_a_record_states_the_pgd_step_and_flags_steps_that_cannot_cover_the_budget():
    result = evaluate(_model(), 'mnist-linf', data=_data(), attacks=['pgd-20', 'pgd-40'], checks=False)
    assert result.attack_settings['pgd-20'] == dict(steps=20, step_size=0.01, restarts=1, loss='ce',
                                                    random_start=True)
    warned = [c['name'] for c in result.checks if c['status'] == 'WARN' and c['name'].startswith('step size')]
    assert warned == ['step size (pgd-20)']  # 20 x 0.01 < eps 0.3; 40 x 0.01 covers it
    (check,) = [c for c in result.checks if c['name'] == 'step size (pgd-20)']
    assert 'pgd-75 covers it 2.5 times' in check['detail']


# --- train/train_at.py ------------------------------------------------------------------------------------

QUICK = ['--model', 'robust_zoo/mlp3_relu_at', '--train-samples', '64', '-b', '32', '--val-samples', '64',
         '--eval-samples', '0', '--epochs', '1']

TRAIN_CASES = [
    ('eps 8 instead of 8/255', ['--attack-eps', '8'], 'pass 8/255 = 0.03137'),
    ('typo in the dataset', ['--dataset', 'fmnist'], "unknown --dataset 'fmnist'"),
    ('typo in the model', ['--model', 'robust_zoo/mlp3_relu_att'], 'Did you mean robust_zoo/mlp3_relu_at'),
    ('typo in the threat model', ['--threat-model', 'fmnist-linf'], "unknown --threat-model 'fmnist-linf'"),
    ('typo in an evaluation attack', ['--eval-attacks', 'pgd20'], "Unknown or not yet available attack 'pgd20'"),
    ('missing config', ['-c', '{ws}/nope.yaml'], 'does not exist'),
    ('a config with an unknown key', ['-c', '{ws}/bad.yaml'], "unknown keys ['attack-eps']"),
    ('wrong dataset path', ['--data-dir', '{ws}/nowhere'], 'not found under'),
    ('a batch larger than the data', ['-b', '512'], 'cannot fill one batch of 512'),
    ('resume a folder that is no run', ['--resume', '{ws}/empty_dir'], 'does not exist'),
    ('a .pt file as initial checkpoint', ['--initial-checkpoint', '{ws}/weights.pt'],
     'not a readable safetensors file'),
    ('initial weights of another activation', ['--initial-checkpoint', '{ws}/silu.safetensors'],
     'holds weights of mlp3_silu_at (activation silu), not of mlp3_relu_at (activation relu)'),
    ('a run folder that already holds a run', ['--output', '{ws}/trained'], 'already holds a training run'),
    ('resume with another recipe', ['--resume', '{ws}/trained', '--lr', '0.5'],
     '--lr 0.1 -> 0.5'),
]


@pytest.fixture(scope='module')
def trained(ws):
    (ws / 'bad.yaml').write_text(yaml.safe_dump({'attack-eps': 0.1}))
    proc = subprocess.run([sys.executable, str(SCRIPT), *QUICK, '--val-attack', 'fgsm', '--output',
                           str(ws / 'trained')], env=ENV, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws


@pytest.mark.parametrize('argv, words', [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_script_refuses_with_a_clear_error_and_writes_nothing(trained, tmp_path, argv, words):
    before = snapshot(trained)
    out = tmp_path / 'out'
    argv = [a.format(ws=trained) for a in argv]
    proc = subprocess.run([sys.executable, str(SCRIPT), *QUICK, '--output', str(out), *argv], env=ENV,
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert snapshot(trained) == before and not out.exists()
