"""The `robust-zoo` command: listing models, the demo (main job) on a tiny budget, and error output."""
import os
import re

import pytest

from robust_zoo.cli import main
from robust_zoo.data import FASHION_MNIST_DIR


def test_list_prints_prefixed_names(capsys):
    assert main(['list', 'resnet20_*']) == 0
    names = capsys.readouterr().out.split()
    assert 'robust_zoo/resnet20_silu_at' in names and len(names) == 11


@pytest.mark.parametrize('flags', [[], ['--results']])
def test_list_says_when_nothing_matches_and_exits_1(capsys, flags):
    assert main(['list', 'resnet20_reluu*', *flags]) == 1
    out, err = capsys.readouterr()
    assert not out and "matches 'resnet20_reluu*'" in err and 'shell-style' in err


def test_list_results_prints_each_published_model_with_its_stated_numbers(capsys):
    from robust_zoo.models._pretrained import load_published
    index = load_published()
    assert main(['list', 'resnet20_silu_at*', '--results']) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = sorted(n for n in index if n.startswith('resnet20_silu_at'))
    assert [line.split()[0] for line in lines] == [f'robust_zoo/{n}' for n in expected]
    for line, name in zip(lines, expected):
        e = index[name]
        assert line.split()[1] == e['threat_model']
        assert f"clean {e['clean_accuracy']:.3f}  robust {e['robust_accuracy']:.3f} " \
               f"({'+'.join(e['attacks'])}, n={e['n_examples']})" in line


def test_list_results_names_a_stronger_attacks_number_after_the_headline(capsys, monkeypatch):
    """The headline is PGD on the most images; the APGD or AutoAttack number on fewer is the one to trust."""
    from robust_zoo.models import _pretrained
    index = _pretrained.load_published()
    name = sorted(n for n in index if n.startswith('resnet20_silu_at'))[0]
    entry = dict(index[name], stronger=[dict(attacks=['apgd-ce+apgd-t'], n_examples=1000, robust_accuracy=0.719),
                                        dict(attacks=['autoattack-standard'], n_examples=500, robust_accuracy=0.7)])
    monkeypatch.setattr(_pretrained, 'load_published', lambda *a: {name: entry})
    assert main(['list', name, '--results']) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split(f"n={entry['n_examples']})")[1].startswith(
        '; stronger: apgd-ce+apgd-t 0.719 (n=1000), autoattack-standard 0.700 (n=500)')


def test_list_results_marks_a_model_whose_card_warns_and_explains_the_mark(capsys, monkeypatch):
    from robust_zoo.models import _pretrained
    index = _pretrained.load_published()
    name = sorted(n for n in index if n.startswith('resnet20_silu_at'))[0]
    warned = dict(index[name], caveats={'checks_not_passed': ['black box WARN'], 'catastrophic_overfitting': True})
    monkeypatch.setattr(_pretrained, 'load_published', lambda *a: {name: warned})
    assert main(['list', name, '--results']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(') (!) (co)')
    assert out[2].startswith('(!) a sanity check') and out[3].startswith('(co) the shipped weights overfit')
    assert len(out) == 4  # no legend line for a mark not shown


def test_list_results_shows_no_mark_and_no_legend_for_a_model_without_warnings(capsys, monkeypatch):
    from robust_zoo.models import _pretrained
    index = _pretrained.load_published()
    name = sorted(n for n in index if n.startswith('resnet20_silu_at'))[0]
    monkeypatch.setattr(_pretrained, 'load_published', lambda *a: {name: {k: v for k, v in index[name].items()
                                                                   if k != 'caveats'}})
    assert main(['list', name, '--results']) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith(')')


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_demo_evaluates_the_published_model_by_default(capsys):
    from robust_zoo.demo import default_published_model
    if default_published_model() is None:
        pytest.skip('no published model yet')
    assert main(['demo', '--eval-samples', '20']) == 0
    out = capsys.readouterr().out
    assert f'robust_zoo/{default_published_model()}' in out and '| pgd-20 |' in out and '| apgd-ce |' in out


def test_demo_trains_attacks_and_prints_table(capsys):
    assert main(['demo', '--train', '--model', 'mlp3_silu_at', '--train-samples', '512', '--eval-samples', '50']) == 0
    out = capsys.readouterr().out
    assert '| PGD-20 (random start, step 0.01) |' in out and 'worst case per image' in out
    assert 'fashion-mnist-linf' in out


def test_user_errors_exit_2_without_traceback(capsys):
    assert main(['demo', '--train', '--model', 'resnet20_silo_at', '--train-samples', '8']) == 2
    err = capsys.readouterr().err
    assert err.startswith('robust-zoo: error:') and 'resnet20_silu_at' in err


@pytest.mark.parametrize('content, name, message', [
    (b'garbage', 'w.safetensors', r'w.safetensors is not a readable safetensors file .*truncated or corrupt'),
    (None, 'missing.safetensors', r'weights file .*missing.safetensors does not exist'),
    (b'x', 'w.pth', r'w.pth is not a .safetensors file: .*never unpickles'),
])
def test_eval_refuses_a_bad_checkpoint_before_building_anything(tmp_path, capsys, content, name, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    assert main(['eval', 'mlp3_relu_at', '--checkpoint', str(tmp_path / name), '--n-examples', '4']) == 2
    err = capsys.readouterr().err
    assert re.match(f'robust-zoo: error: .*{message}', err) and 'Traceback' not in err


def test_eval_refuses_zero_examples(capsys):
    """--n-examples 0 would otherwise fall back to the protocol's 10,000 images."""
    assert main(['eval', 'mlp3_relu_at', '--n-examples', '0']) == 2
    assert 'n_examples must be >= 1' in capsys.readouterr().err


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_eval_loads_weights_and_writes_the_record(tmp_path, capsys):
    import json

    import timm
    from safetensors.torch import save_file
    weights = tmp_path / 'model.safetensors'
    save_file(timm.create_model('robust_zoo/mlp3_relu_at').state_dict(), weights)
    out = tmp_path / 'result.json'
    out.write_text('an earlier record')
    os.link(out, tmp_path / 'earlier.json')
    assert main(['eval', 'mlp3_relu_at', '--checkpoint', str(weights), '--n-examples', '20', '--attacks', 'fgsm',
                 '--output', str(out)]) == 0
    # renamed into place, never rewritten in place (the grid takes an existing record for a finished evaluation,
    # so a kill mid-write must not leave a truncated one): the old inode still holds the old text
    assert (tmp_path / 'earlier.json').read_text() == 'an earlier record'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['earlier.json', 'model.safetensors', 'result.json']
    record = json.loads(out.read_text())
    assert record['n_examples'] == 20 and list(record['attacks']) == ['fgsm']
    assert f"| fgsm | {record['attacks']['fgsm']:.4f} |" in capsys.readouterr().out


def test_list_threat_models(capsys):
    assert main(['list', '--threat-models']) == 0
    out = capsys.readouterr().out
    assert 'imagenet-linf-sat' in out and 'fashion-mnist-linf' in out


def _weights(tmp_path):
    import timm
    from safetensors.torch import save_file
    weights = tmp_path / 'model.safetensors'
    save_file(timm.create_model('robust_zoo/mlp3_relu_at').state_dict(), weights)
    return weights


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_eval_full_checks_plots_and_a_resumable_state(tmp_path, capsys):
    import json
    weights = _weights(tmp_path)
    args = ['eval', 'mlp3_relu_at', '--checkpoint', str(weights), '--n-examples', '20', '--attacks', 'fgsm',
            '--checks', 'full', '--probe', '4', '--plots', str(tmp_path / 'plots'), '--state', str(tmp_path / 's.json'),
            '--output', str(tmp_path / 'r.json')]
    assert main(args) == 0
    record = json.loads((tmp_path / 'r.json').read_text())
    assert {'eps sweep', 'black box', 'logits'} <= {c['name'] for c in record['checks']}
    assert sorted(p.name for p in (tmp_path / 'plots').iterdir()) == [
        'accuracy_vs_eps.png', 'accuracy_vs_steps.png', 'loss_landscape.png']
    assert len(json.loads((tmp_path / 's.json').read_text())['batches']) == 1
    assert main(args[:-2] + ['--seed', '1']) == 2  # the state belongs to seed 0: refused, without a traceback
    err = capsys.readouterr().err
    assert err.startswith('robust-zoo: error:') and 'the seed differs' in err and 'Traceback' not in err


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_eval_without_checks_under_amp(tmp_path, capsys, monkeypatch):
    import robust_zoo.training.precision
    # the bf16 path on any CPU
    monkeypatch.setattr(robust_zoo.training.precision, 'native_autocast', lambda device, dtype: True)
    assert main(['eval', 'mlp3_relu_at', '--checkpoint', str(_weights(tmp_path)), '--n-examples', '10', '--attacks',
                 'pgd-3', '--checks', 'none', '--amp']) == 0
    out = capsys.readouterr().out
    assert 'attacks under bf16 autocast' in out and 'checks:\n' in out and 'PASS' not in out


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_eval_amp_falls_back_to_fp32_where_bf16_is_emulated(tmp_path, capsys, caplog, monkeypatch):
    import logging

    import robust_zoo.training.precision
    # an AVX2-only CPU
    monkeypatch.setattr(robust_zoo.training.precision, 'native_autocast', lambda device, dtype: False)
    with caplog.at_level(logging.INFO):
        assert main(['eval', 'mlp3_relu_at', '--checkpoint', str(_weights(tmp_path)), '--n-examples', '10',
                     '--attacks', 'pgd-3', '--checks', 'none', '--amp']) == 0
    assert 'attacks under bf16 autocast' not in capsys.readouterr().out
    assert any('no native bfloat16' in r.getMessage() and 'the attacks run in fp32' in r.getMessage()
               for r in caplog.records)


def _torchrun_rank(rank, port, args):
    """One process of `torchrun --nproc_per_node 2 robust-zoo eval ...`: torchrun's environment, then main()."""
    import os

    import torch
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE='2', RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    assert main([*args[:-1], f'{args[-1]}.{rank}']) == 0


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_eval_under_torchrun_shards_and_only_rank_0_writes(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    args = ['eval', 'mlp3_relu_at', '--checkpoint', str(_weights(tmp_path)), '--n-examples', '24', '--batch-size',
            '8', '--attacks', 'fgsm,pgd-3', '--threat-model', 'fashion-mnist-linf', '--output']
    # fork: the processes start with robust_zoo imported (torchrun's fresh interpreters take ~10 s each here)
    mp.start_processes(_torchrun_rank, args=(port, [*args[:-1], '--state', str(tmp_path / 'state.json'), '--output',
                                                    str(tmp_path / 'sharded.json')]), nprocs=2, start_method='fork')
    assert (tmp_path / 'sharded.json.0').exists() and not (tmp_path / 'sharded.json.1').exists()
    assert main([*args, str(tmp_path / 'single.json')]) == 0
    sharded, single = (json.loads((tmp_path / f).read_text()) for f in ('sharded.json.0', 'single.json'))
    sharded.pop('seconds'), single.pop('seconds')
    assert sharded == single and len(json.loads((tmp_path / 'state.json').read_text())['batches']) == 3


def test_list_piped_into_a_reader_that_leaves_early_ends_quietly():
    import subprocess
    import sys
    # hundreds of kilobytes of listing: far more than the pipe holds, so the writer is still writing when the
    # reader leaves
    code = 'import sys; from robust_zoo.cli import main; sys.exit(max(main(["list"]) for _ in range(200)))'
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    assert proc.wait(timeout=120) == 0 and b'Traceback' not in proc.stderr.read()
