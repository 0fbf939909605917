"""Nothing published can be lost or mislabelled (issue 28): the eight reproduced cases, atomic writes, digests.

Every test works on a temporary cards folder and index (a run written here, or a published card copied into
tmp_path); the repository's model_cards/ and published.json are never written.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import robust_zoo
from robust_zoo import publish
from robust_zoo import sparta_bank as sparta
from robust_zoo._io import sha256_file
from robust_zoo.models import _hub, _pretrained
from robust_zoo.cli import main
from robust_zoo.evaluation import evaluate
from robust_zoo.training import CheckpointError, read_weights_metadata, save_weights

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'train' / 'train_at.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', PYTHONPATH=str(ROOT))
ARCH, TAG = 'mlp3_relu_at', 'fmnist_s0'
NAME = f'{ARCH}.{TAG}'
QUICK = ['--dataset', 'fashion-mnist', '--attack', 'fgsm-rs', '--attack-eps', '0.1', '--val-samples', '64',
         '--val-attack', 'fgsm', '--log-interval', '4', '--train-samples', '64', '-b', '32']


def snapshot(*folders):
    """{path: sha256} of every file under the folders (hidden ones included): equal before and after means
    nothing was written, renamed or left behind."""
    out = {}
    for folder in folders:
        folder = Path(folder)
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob('*') if p.is_file()) \
            if folder.exists() else []
        out.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return out


def make_run(folder, seed=0, arch=ARCH):
    """A train_at.py-like run folder: weights (with robust_zoo's metadata), args.yaml, a final evaluation of
    those weights, and a second record of them (pgd-5 on 10 points)."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    model = timm.create_model(f'robust_zoo/{arch}').eval()
    save_weights(model.state_dict(), folder / 'model.safetensors', _hub.weights_metadata(arch))
    (folder / 'args.yaml').write_text(yaml.safe_dump(dict(model=f'robust_zoo/{arch}', dataset='fashion-mnist',
                                                          attack='fgsm-rs', attack_eps=0.1, epochs=1, seed=seed)))
    x = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(20) % 10
    first = evaluate(model, 'fashion-mnist-linf', data=(x, y), attacks=['fgsm'], n_examples=20, checks=False,
                     model_name=f'robust_zoo/{arch}').to_dict()
    (folder / 'final_eval.json').write_text(json.dumps(dict(model=f'robust_zoo/{arch}', evaluation=first)))
    second = evaluate(model, 'fashion-mnist-linf', data=(x[:10], y[:10]), attacks=['pgd-5'], n_examples=10,
                      checks=False, model_name=f'robust_zoo/{arch}').to_dict()
    (folder / 'pgd5.json').write_text(json.dumps(second))
    return folder


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    return dict(a=make_run(root / 'a', seed=0), b=make_run(root / 'b', seed=1))


@pytest.fixture
def pub(tmp_path, runs, monkeypatch):
    """A temporary index and cards folder in use, holding NAME published from run a with two records."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    index, cards = tmp_path / 'published.json', tmp_path / 'model_cards'
    publish.write_card_repo(runs['a'], tag=TAG, evaluations=[runs['a'] / 'final_eval.json', runs['a'] / 'pgd5.json'],
                        out_root=cards, index_path=index)
    _pretrained.register_published(index, cards)
    yield dict(index=index, cards=cards, folder=cards / NAME)
    _pretrained.register_published()


def _records(folder):
    return json.loads((folder / 'eval_results.json').read_text())


# --- case 1: `card` on a published tag ---------------------------------------------------------------------

def test_card_refuses_a_published_tag_without_force(pub, runs, capsys):
    before = snapshot(pub['index'], pub['cards'])
    assert main(['card', str(runs['a']), '--tag', TAG]) == 2
    err = capsys.readouterr().err
    assert f'{NAME} is already published' in err and '--force' in err and 'nothing was changed' in err
    assert snapshot(pub['index'], pub['cards']) == before


def test_card_force_keeps_the_previous_records_of_the_same_weights(pub, runs, capsys):
    assert main(['card', str(runs['a']), '--tag', TAG, '--force']) == 0
    attacks = [list(r['attacks']) for r in _records(pub['folder'])]
    assert attacks == [['fgsm'], ['pgd-5']]  # the run's final record, then the card's pgd-5 one, kept
    assert 'pgd-5, n=10' in (pub['folder'] / 'README.md').read_text()
    assert main(['card', str(runs['a']), '--tag', TAG, '--force', '--drop-old-evals']) == 0
    assert [list(r['attacks']) for r in _records(pub['folder'])] == [['fgsm']]
    assert not [p for p in pub['cards'].iterdir() if p.name.startswith('.')], 'no staging folder left behind'


def test_card_force_with_other_weights_refuses_to_keep_records_of_the_old_ones(pub, runs, capsys):
    before = snapshot(pub['index'], pub['cards'])
    assert main(['card', str(runs['b']), '--tag', TAG, '--force']) == 2
    err = capsys.readouterr().err
    assert 'measured other weights' in err and '--drop-old-evals' in err
    assert snapshot(pub['index'], pub['cards']) == before
    assert main(['card', str(runs['b']), '--tag', TAG, '--force', '--drop-old-evals']) == 0
    assert _pretrained.load_published(pub['index'])[NAME]['sha256'] == sha256_file(runs['b'] / 'model.safetensors')


def test_a_failed_card_rewrite_leaves_the_published_card_and_index_intact(pub, runs, monkeypatch):
    before = snapshot(pub['index'], pub['cards'])

    def broken(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(publish.card, '_card_body', broken)  # fails after the weights, config and records were written
    with pytest.raises(OSError, match='disk full'):
        publish.write_card_repo(runs['a'], tag=TAG, force=True, out_root=pub['cards'], index_path=pub['index'])
    assert snapshot(pub['index'], pub['cards']) == before
    monkeypatch.undo()

    monkeypatch.setattr(publish.card, 'atomic_write_text', broken)  # the index write itself fails
    with pytest.raises(OSError, match='disk full'):
        publish.write_card_repo(runs['b'], tag=TAG, force=True, keep_evaluations=False, out_root=pub['cards'],
                                index_path=pub['index'])
    assert snapshot(pub['index'], pub['cards']) == before


# --- case 2: `unpublish` with a wrong --out ---------------------------------------------------------------

def test_unpublish_with_a_wrong_out_changes_nothing(pub, tmp_path, capsys):
    empty = tmp_path / 'some_empty_dir'
    empty.mkdir()
    before = snapshot(pub['index'], pub['cards'])
    assert main(['unpublish', NAME, '--out', str(empty)]) == 2
    err = capsys.readouterr().err
    assert 'is --out right?' in err and 'nothing was changed' in err
    assert main(['unpublish', NAME, '--out', str(tmp_path / 'typo')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main(['unpublish', NAME, f'{ARCH}.nope']) == 2  # every name is checked before any is removed
    assert snapshot(pub['index'], pub['cards']) == before
    assert robust_zoo.list_models(pretrained=True) == [f'robust_zoo/{NAME}']
    assert main(['unpublish', NAME]) == 0
    assert _pretrained.load_published(pub['index']) == {} and not pub['folder'].exists()


# --- case 3: `leaderboard` with a wrong --cards -----------------------------------------------------------

@pytest.mark.parametrize('cards', ['typo', 'empty'])
def test_leaderboard_with_a_missing_or_empty_cards_folder_is_an_error(pub, tmp_path, capsys, cards):
    readme = tmp_path / 'README.md'
    readme.write_text('# x\n<!-- leaderboard:start -->\nthe table\n<!-- leaderboard:end -->\n')
    (tmp_path / 'empty').mkdir()
    before = snapshot(readme, pub['cards'])
    assert main(['leaderboard', '--readme', str(readme), '--cards', str(tmp_path / cards)]) == 2
    err = capsys.readouterr().err
    assert ('does not exist' if cards == 'typo' else 'holds no model card') in err
    assert 'No published models yet' not in readme.read_text()
    assert snapshot(readme, pub['cards']) == before
    assert main(['leaderboard', '--cards', str(tmp_path / cards)]) == 2


# --- case 4: a record of other weights --------------------------------------------------------------------

def test_card_refuses_a_record_of_other_weights(pub, runs, capsys):
    before = snapshot(pub['index'], pub['cards'])
    assert main(['card', str(runs['a']), '--tag', 'other_s0', '--eval', str(runs['b'] / 'pgd5.json')]) == 2
    err = capsys.readouterr().err
    assert 'belong to other weights' in err and 'robust-zoo eval' in err
    legacy = json.loads((runs['a'] / 'pgd5.json').read_text())
    del legacy['weights_digest']
    (pub['cards'].parent / 'legacy.json').write_text(json.dumps(legacy))
    assert main(['card', str(runs['a']), '--tag', 'other_s0', '--eval', str(pub['cards'].parent / 'legacy.json')]) == 2
    assert 'does not say which weights it measured' in capsys.readouterr().err
    assert snapshot(pub['index'], pub['cards']) == before


def test_records_carry_the_digest_and_sha256_of_the_weights_they_measured(runs, tmp_path):
    record = json.loads((runs['a'] / 'pgd5.json').read_text())
    model = timm.create_model(f'robust_zoo/{ARCH}')
    model.load_state_dict(robust_zoo.training.load_weights(runs['a'] / 'model.safetensors'))
    assert record['weights_digest'] == robust_zoo.training.parameter_digest(model)
    out = tmp_path / 'r.json'
    assert main(['eval', ARCH, '--checkpoint', str(runs['a'] / 'model.safetensors'), '--attacks', 'fgsm',
                 '--n-examples', '10', '--checks', 'none', '--output', str(out)]) == 0
    assert json.loads(out.read_text())['weights_sha256'] == sha256_file(runs['a'] / 'model.safetensors')


# --- case 6: weights of another architecture --------------------------------------------------------------

def test_eval_checkpoint_refuses_weights_of_another_activation_naming_both(runs, capsys):
    assert read_weights_metadata(runs['a'] / 'model.safetensors')['architecture'] == ARCH
    assert main(['eval', 'mlp3_silu_at', '--checkpoint', str(runs['a'] / 'model.safetensors'),
                 '--n-examples', '10']) == 2
    err = capsys.readouterr().err
    assert 'holds weights of mlp3_relu_at (activation relu), not of mlp3_silu_at (activation silu)' in err
    with pytest.raises(CheckpointError, match='mlp3_relu_at'):  # the API route too
        timm.create_model('robust_zoo/mlp3_silu_at', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(runs['a'] / 'model.safetensors')))


# --- case 7: Sparta banks ---------------------------------------------------------------------------------

BANK_CARD = 'resnet20_sparta_at.fmnist_s0'


@pytest.fixture
def bank_card(tmp_path):
    """The published BANK_CARD copied into a temporary cards folder and index in use."""
    cards = tmp_path / 'model_cards'
    shutil.copytree(ROOT / 'model_cards' / BANK_CARD, cards / BANK_CARD)
    index = tmp_path / 'published.json'
    published = _pretrained.load_published(ROOT / 'robust_zoo' / 'published.json')
    index.write_text(json.dumps({BANK_CARD: published[BANK_CARD]}))
    _pretrained.register_published(index, cards)
    yield cards / BANK_CARD / sparta.BANK_FILE
    _pretrained.register_published()


def test_a_tampered_published_bank_is_refused_on_every_route(bank_card):
    assert sparta.resolve_bank(BANK_CARD) == bank_card
    data = bytearray(bank_card.read_bytes())
    data[-1] ^= 1  # one bit of one parameter
    bank_card.write_bytes(bytes(data))
    for route in (BANK_CARD, str(bank_card)):
        with pytest.raises(sparta.SpartaBankError, match='is not the published Sparta bank'):
            sparta.resolve_bank(route)
    with pytest.raises(sparta.SpartaBankError, match='is not the published Sparta bank'):
        timm.create_model('robust_zoo/resnet20_sparta_at', sparta_bank=BANK_CARD)


def test_sha256_is_not_fooled_by_a_file_rewritten_with_the_same_size_and_mtime(tmp_path):
    path = tmp_path / 'w.bin'
    path.write_bytes(b'a' * 64)
    first = sha256_file(path)
    stat = path.stat()
    with path.open('r+b') as f:
        f.write(b'b')
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sha256_file(path) != first


# --- cases 5 and 8: train/train_at.py ---------------------------------------------------------------------

def train(*args, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=ENV, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}')
    return proc


def test_resume_with_another_recipe_is_refused_or_recorded(tmp_path):
    out = tmp_path / 'run'
    train('--model', f'robust_zoo/{ARCH}', *QUICK, '--epochs', '1', '--eval-samples', '20', '--eval-attacks', 'fgsm',
          '--output', out)
    meta = read_weights_metadata(out / 'model.safetensors')
    assert (meta['architecture'], meta['activation']) == (ARCH, 'relu')
    before = snapshot(out)
    proc = train('--resume', out, '--epochs', '2', '--attack', 'pgd', '--attack-eps', '0.3', check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--epochs 1 -> 2; --attack 'fgsm-rs' -> 'pgd'; --attack-eps 0.1 -> 0.3" in proc.stderr
    assert '--allow-recipe-change' in proc.stderr and 'Traceback' not in proc.stderr
    assert snapshot(out) == before
    train('--resume', out, '--epochs', '2', '--attack', 'pgd', '--attack-eps', '0.3', '--allow-recipe-change')
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert (args['attack'], args['attack_eps'], args['epochs']) == ('pgd', 0.3, 2)
    assert args['recipe_changes'] == [dict(from_epoch=1, changes=dict(
        epochs=dict(was=1, now=2), attack=dict(was='fgsm-rs', now='pgd'), attack_eps=dict(was=0.1, now=0.3)))]
    folder = publish.write_card_repo(out, tag='t', out_root=tmp_path / 'cards', index_path=tmp_path / 'index.json')
    assert "recipe changed from epoch 1 (counted from 0) | epochs 1 -> 2, attack 'fgsm-rs' -> 'pgd'" in \
        (folder / 'README.md').read_text()


def test_a_run_stopped_before_its_first_checkpoint_restarts_in_place(tmp_path):
    out = tmp_path / 'nan'
    common = ['--model', f'robust_zoo/{ARCH}', *QUICK, '--epochs', '1', '--eval-samples', '0', '--output', out]
    proc = train(*common, '--lr', '1e30', check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert 'before the first checkpoint' in text and 'lower --lr (now 1e+30)' in text
    assert f'restart in place: python train/train_at.py --resume {out}' in text
    assert not (out / 'last.ckpt').exists()
    proc = train(*common, '--lr', '0.01', check=False)  # the same command again: refused, naming the way out
    assert proc.returncode == 2 and f'restart it in place with --resume {out}' in proc.stderr
    train('--resume', out, '--lr', '0.01')
    assert (out / 'last.ckpt').is_file() and yaml.safe_load((out / 'args.yaml').read_text())['lr'] == 0.01
