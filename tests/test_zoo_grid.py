"""train/zoo_grid.py: the experiment queue covers both grids once each, and a transfer run comes after its bank."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('zoo_grid', ROOT / 'train' / 'zoo_grid.py')
zoo_grid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo_grid)
import grids  # noqa: E402  (train/grids.py: zoo_grid put train/ on sys.path)


def test_all_grid_is_both_grids_once_then_apgd_for_seed_0():
    zoo, transfer = Path('z'), Path('t')
    queue = zoo_grid.all_grid(zoo, transfer)
    apgd = [run.name for _, run in queue if 'apgd_1k' in run.evals]
    assert apgd == [f'resnet20_{a}_at-s0' for a in ('relu', 'silu', 'sparta', 'softplus', 'smoothrelu', 'gelu',
                                                  'elu', 'pssilu', 'psoftplus', 'capped_relu', 'relu_smoothgrad')] \
        + ['mlp3_capped_relu_at-s0', 'mlp3_relu_at-s0', 'mlp3_capped_relu_at-pgd-s0', 'mlp3_relu_at-pgd-s0']
    assert [run.name for _, run in queue[-len(apgd):]] == apgd, 'the APGD evaluations come after all training'
    assert not any('aa_500' in run.evals for _, run in queue), 'AutoAttack waits for every seed-0 number'
    queue = queue[:-len(apgd)]
    names = [(root, run.name) for root, run in queue]
    assert len(names) == len(set(names))
    assert sorted(n for r, n in names if r == zoo) == sorted(r.name for r in zoo_grid.zoo_grid())
    assert sorted(n for r, n in names if r == transfer) == sorted(r.name for r in zoo_grid.transfer_grid(zoo))


def test_bank_runs_come_after_their_bank_and_seed_0_comes_first():
    zoo = Path('z')
    queue = zoo_grid.all_grid(zoo, Path('t'))
    queue = [(root, run) for root, run in queue if 'apgd_1k' not in run.evals]  # the training part
    position = {root / run.name: i for i, (root, run) in enumerate(queue)}
    banked = [(i, run) for i, (_, run) in enumerate(queue) if run.bank_run is not None]
    assert len(banked) == 9
    for i, run in banked:
        assert position[run.bank_run] < i, f'{run.name} is queued before its bank {run.bank_run}'
    seeds = [run.seed for _, run in queue]
    assert seeds.index(1) == seeds.count(0), 'every seed-0 run comes before the first seed-1 run'
    assert all(zoo_grid.EVAL_10K in run.evals for root, run in queue if root == zoo)
    tags = {(run.model, run.tag) for _, run in queue}
    assert len(tags) == len({run.name for _, run in queue}), 'every run publishes under its own name'


def test_dry_run_lists_states(tmp_path):
    done = tmp_path / 'zoo' / 'resnet20_relu_at-s0'
    done.mkdir(parents=True)
    (done / 'final_eval.json').write_text('{}')
    (tmp_path / 'cards').mkdir()  # nothing published: the shipped cards would turn missing runs into `restore`
    env = dict(os.environ, ROBUST_ZOO_MODEL_CARDS=str(tmp_path / 'cards'))
    cmd = [sys.executable, str(ROOT / 'train' / 'zoo_grid.py'), '--dry-run',
           '--zoo-root', str(tmp_path / 'zoo'), '--transfer-root', str(tmp_path / 't')]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()
    assert out[0] == f'evaluate {done}'  # trained, but PGD-20 on 10,000 images still to run
    assert any(line.startswith('waiting ') and 'sparta_at-bank-s0' in line for line in out)
    (done / 'pgd20_10k.json').write_text('{}')
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()
    assert out[0] == f'done     {done}'


def test_only_keeps_the_matching_runs_in_queue_order(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / 'train' / 'zoo_grid.py'), '--dry-run', '--only', 'digits-*-s2',
                          '--only', 'mlp3_*-s0', '--zoo-root', str(tmp_path / 'zoo'),
                          '--transfer-root', str(tmp_path / 't')],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split()[1].rstrip(':') for line in out] == [
        str(tmp_path / 'zoo' / 'mlp3_capped_relu_at-s0'), str(tmp_path / 'zoo' / 'mlp3_relu_at-s0'),
        str(tmp_path / 'zoo' / 'mlp3_capped_relu_at-pgd-s0'), str(tmp_path / 'zoo' / 'mlp3_relu_at-pgd-s0'),
        str(tmp_path / 't' / 'digits-resnet20_relu_at-s2'), str(tmp_path / 't' / 'digits-resnet20_sparta_at-s2'),
        str(tmp_path / 't' / 'digits-resnet20_sparta_at-bank-s2'),
        *(str(tmp_path / 'zoo' / name) for name in ('mlp3_capped_relu_at-s0', 'mlp3_relu_at-s0',  # their APGD stage
                                                    'mlp3_capped_relu_at-pgd-s0', 'mlp3_relu_at-pgd-s0'))]
    queue = zoo_grid.all_grid(Path('z'), Path('t'))
    assert zoo_grid.select(queue, None) == queue and zoo_grid.select(queue, ['no-such-run']) == []


def test_the_grid_trains_every_claim_on_every_seed_from_the_one_claims_list():
    """The activations and claims come from robust_zoo's registry and experiments/claims.py, not a copy: every
    activation trains on seed 0, and each claim's base and the activations it names `seeded` on every seed."""
    from experiments.claims import CLAIMS
    from robust_zoo.layers import ACTIVATIONS
    assert grids.ACTIVATIONS is ACTIVATIONS and grids.CLAIMS is CLAIMS
    trained = {(run.model, run.seed) for run in zoo_grid.zoo_grid()}
    assert {f'resnet20_{a}_at' for a in ACTIVATIONS} <= {m for m, s in trained if s == 0}
    for claim in CLAIMS:
        assert claim.seeded and set(claim.seeded) <= set(claim.better)
        for seed in zoo_grid.SEEDS:
            assert {f'resnet20_{a}_at' for a in (claim.base, *claim.seeded)} <= {m for m, s in trained if s == seed}
    assert zoo_grid.SEEDED == ('relu', 'silu', 'pssilu', 'sparta', 'capped_relu', 'relu_smoothgrad')


def test_autoattack_goes_to_the_three_best_seed_0_activations_then_the_other_claims_once_all_are_ranked(tmp_path):
    zoo = tmp_path / 'zoo'
    robust = {a: 0.5 + i / 100 for i, a in enumerate(grids.ACTIVATIONS)}  # the last three are best
    robust['relu'] = 0.9
    for act, acc in robust.items():
        folder = zoo / f'resnet20_{act}_at-s0'
        folder.mkdir(parents=True)
        if act != 'gelu':
            (folder / 'pgd20_10k.json').write_text(json.dumps({'robust_accuracy': acc}))
    queue = zoo_grid.all_grid(zoo, tmp_path / 't')
    assert not any('aa_500' in run.evals for _, run in queue), 'no ranking until every activation is evaluated'
    (zoo / 'resnet20_gelu_at-s0' / 'pgd20_10k.json').write_text(json.dumps({'robust_accuracy': 0.1}))
    queue = zoo_grid.all_grid(zoo, tmp_path / 't')
    aa = [run.name for _, run in queue if 'aa_500' in run.evals]
    assert aa[:3] == ['resnet20_relu_at-s0', 'resnet20_relu_smoothgrad_at-s0', 'resnet20_capped_relu_at-s0'], \
        'the three best first, best first'
    assert aa[3:] == ['resnet20_pssilu_at-s0', 'resnet20_silu_at-s0', 'resnet20_sparta_at-s0'], \
        'then every other claim, so that each verdict gets its AutoAttack sentence'
    assert sorted(zoo_grid.AA_CLAIMS_ORDER) == sorted(zoo_grid.SEEDED)
    assert [run.name for _, run in queue[-len(aa):]] == aa, 'AutoAttack comes last'
    assert all(run.evals[-3:] == ('apgd_1k', 'pgd20_500', 'aa_500') for _, run in queue[-len(aa):]), \
        "PGD-20 on AutoAttack's 500 images first, so that the card can set the two side by side"


def test_a_run_trained_under_another_budget_is_stale_neither_resumed_nor_ranked(tmp_path):
    """After a recipe changes, the old runs must not mix into its tables: they are reported and skipped."""
    import yaml
    recipe = yaml.safe_load((ROOT / 'train' / 'configs' / 'fmnist_resnet20.yaml').read_text())
    zoo = tmp_path / 'zoo'
    for act in grids.ACTIVATIONS:
        folder = zoo / f'resnet20_{act}_at-s0'
        folder.mkdir(parents=True)
        (folder / 'args.yaml').write_text(yaml.safe_dump({**recipe, 'model': f'robust_zoo/resnet20_{act}_at'}))
        (folder / 'final_eval.json').write_text('{}')
        (folder / 'pgd20_10k.json').write_text(json.dumps({'robust_accuracy': 0.5}))
    old = zoo / 'resnet20_relu_at-s0'
    assert zoo_grid.recipe_mismatch(old, 'fmnist_resnet20.yaml') == []
    assert len(zoo_grid.best_three(zoo)) == 3
    (old / 'args.yaml').write_text(yaml.safe_dump({**recipe, 'amp': False}))  # fp32 where bf16 is emulated
    assert zoo_grid.recipe_mismatch(old, 'fmnist_resnet20.yaml') == [], 'precision is not part of the budget'
    other = 'pgd' if recipe['attack'] != 'pgd' else 'fgsm-rs'
    (old / 'args.yaml').write_text(yaml.safe_dump({**recipe, 'attack': other}))
    assert zoo_grid.recipe_mismatch(old, 'fmnist_resnet20.yaml') == \
        [f"attack: run {other!r}, recipe {recipe['attack']!r}"]
    assert zoo_grid.best_three(zoo) == [], 'a stale record must not enter the ranking'
    out = subprocess.run([sys.executable, str(ROOT / 'train' / 'zoo_grid.py'), '--dry-run', '--grid', 'zoo',
                          '--root', str(zoo)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(f'stale    {old}: trained under another budget') and 'runs/superseded' in out[0]
    assert out[1] == f'done     {zoo / "resnet20_softplus_at-s0"}'


def test_a_restored_transferred_run_republishes_its_card_with_the_bank_its_args_name(tmp_path, monkeypatch):
    """A transferred run's args.yaml names the bank file in its zoo run's folder (runs/fmnist-zoo/...); on a new
    machine both runs come back from their cards, and rewriting the transferred card must find that bank."""
    import shutil
    from robust_zoo.publish import write_card_repo
    monkeypatch.chdir(tmp_path)
    zoo_root, transfer_root = Path('runs/fmnist-zoo'), Path('runs/transfer')
    zoo_run = grids._zoo('sparta', 1)
    (bank_run,) = [r for r in grids._digits(1, zoo_root) if r.bank_run is not None]
    cards = tmp_path / 'cards'
    for run, root in ((zoo_run, zoo_root), (bank_run, transfer_root)):
        zoo_grid.restore_from_card(root / run.name, zoo_grid._card_of(run))
    shutil.copytree(zoo_grid._card_of(zoo_run), cards / zoo_grid._card_of(zoo_run).name)  # the bank's published card
    bank = zoo_root / zoo_run.name / 'sparta_bank.safetensors'
    assert bank.read_bytes() == (zoo_grid._card_of(zoo_run) / 'sparta_bank.safetensors').read_bytes()
    assert bank.resolve() == (bank_run.bank_run / 'sparta_bank.safetensors').resolve()
    out = transfer_root / bank_run.name
    recipe = Path('train/configs') / bank_run.recipe  # as --publish names it, run from a checkout (here: tmp_path)
    recipe.parent.mkdir(parents=True)
    shutil.copy(ROOT / recipe, recipe)
    folder = write_card_repo(out, tag=bank_run.tag, evaluations=[out / 'final_eval.json'], out_root=cards,
                             index_path=tmp_path / 'published.json', recipe=recipe)
    assert (folder / 'README.md').read_text() == (zoo_grid._card_of(bank_run) / 'README.md').read_text()


def test_restore_tells_records_on_the_same_number_of_images_apart_by_their_attack(tmp_path):
    """PGD-20 and AutoAttack both run on 500 images: each restores to its own file, and a record that is none of
    the grid's evaluations is an error naming it."""
    import shutil
    card = tmp_path / 'card'
    shutil.copytree(ROOT / 'model_cards' / 'resnet20_relu_at.fmnist_s1', card)
    records = json.loads((card / 'eval_results.json').read_text())
    aa = dict(records[1], n_examples=500, attacks={'autoattack-standard': 0.7})
    pgd = dict(records[1], n_examples=500, attacks={'pgd-20': 0.72})
    (card / 'eval_results.json').write_text(json.dumps([records[0], aa, pgd]))
    out = tmp_path / 'run'
    assert sorted(zoo_grid.restore_from_card(out, card)) == ['aa_500.json', 'final_eval.json', 'pgd20_500.json']
    assert json.loads((out / 'aa_500.json').read_text()) == aa
    assert json.loads((out / 'pgd20_500.json').read_text()) == pgd
    (card / 'eval_results.json').write_text(json.dumps([records[0], dict(aa, attacks={'fgsm': 0.8})]))
    with pytest.raises(ValueError, match='a record of fgsm on 500 examples is none of'):
        zoo_grid.restore_from_card(tmp_path / 'other', card)


def test_trained_runs_are_evaluated_before_new_training(tmp_path):
    zoo = tmp_path / 'zoo'
    queue = zoo_grid.all_grid(zoo, tmp_path / 't')
    for name in ('resnet20_gelu_at-s0', 'resnet20_pssilu_at-s0', 'resnet20_elu_at-s0'):
        (zoo / name).mkdir(parents=True)
        (zoo / name / 'final_eval.json').write_text('{}')
    (zoo / 'resnet20_elu_at-s0' / 'pgd20_10k.json').write_text('{}')  # fully evaluated: stays in place
    ordered = zoo_grid.trained_first(queue)
    assert [run.name for _, run in ordered[:2]] == ['resnet20_gelu_at-s0', 'resnet20_pssilu_at-s0']
    assert ordered[2:] == [item for item in queue if item not in ordered[:2]], 'the rest (APGD stage too) in order'
    assert all(run.evals == (zoo_grid.EVAL_10K,) for _, run in ordered[:2])


def test_started_runs_are_resumed_before_new_ones_start(tmp_path):
    root = tmp_path / 'lenet'
    queue = [(root, run) for run in zoo_grid.lenet_grid()]
    out = root / 'lenet_small_sparta_at-s1'
    out.mkdir(parents=True)
    (out / 'last.ckpt').write_bytes(b'')
    (root / 'lenet_small_sparta_at-s0').mkdir()
    (root / 'lenet_small_sparta_at-s0' / 'last.ckpt').write_bytes(b'')
    ordered = zoo_grid.trained_first(queue)
    assert [run.name for _, run in ordered[:2]] == ['lenet_small_sparta_at-s0', 'lenet_small_sparta_at-s1']
    aa = queue[-3]
    assert (aa[1].name, aa[1].evals) == ('lenet_small_sparta_at-s0', ('apgd_1k', 'aa_1k'))
    assert ordered.index(aa) == len(queue) - 3, "the run's AutoAttack stage keeps its place at the end"
    (root / 'lenet_small_sparta_at-s0' / 'final_eval.json').write_text('{}')
    (out / 'final_eval.json').write_text('{}')  # trained: back in its place
    assert zoo_grid.trained_first(queue) == queue


def test_the_lenet_grid_is_every_activation_on_three_seeds_with_apgd_each_and_autoattack_on_seed_0():
    from robust_zoo.layers import ACTIVATIONS
    runs = zoo_grid.lenet_grid()
    trained = runs[:3 * len(ACTIVATIONS)]
    assert [(r.model, r.seed) for r in trained] == [(f'lenet_small_{a}_at', s) for s in (0, 1, 2) for a in ACTIVATIONS]
    assert all(r.evals == ('apgd_1k',) and r.recipe == 'lenet_small_fmnist_pgd10.yaml' for r in trained)
    assert all(r.tag == f'fmnist_pgd10_s{r.seed}' for r in trained)
    assert [(r.name, r.evals) for r in runs[len(trained):]] == [
        (f'lenet_small_{a}_at-s0', ('apgd_1k', 'aa_1k')) for a in ACTIVATIONS], 'AutoAttack last, seed 0 only'
    assert zoo_grid.EVALS['aa_1k'][:4] == ['--attacks', 'autoattack-standard', '--n-examples', '1000']
    assert (ROOT / 'train' / 'configs' / 'lenet_small_fmnist_pgd10.yaml').is_file()


def test_lenet_grid_dry_run_lists_its_runs_in_its_own_folder(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / 'train' / 'zoo_grid.py'), '--grid', 'lenet', '--dry-run',
                          '--root', str(tmp_path / 'g'), '--only', 'lenet_small_relu_at-s*'],
                         capture_output=True, text=True, check=True,  # no card to restore from
                         env={**os.environ, 'ROBUST_ZOO_MODEL_CARDS': str(tmp_path / 'cards')}).stdout.splitlines()
    assert out == [f'todo     {tmp_path / "g"}/lenet_small_relu_at-s{s}' for s in (0, 1, 2, 0)]


def test_data_dir_reaches_both_training_and_every_evaluation(tmp_path, monkeypatch):
    """A machine without the Debian Fashion-MNIST package (a GPU machine) runs the grid on files it was given."""
    run = next(r for r in zoo_grid.lenet_grid() if r.name == 'lenet_small_relu_at-s0' and 'aa_1k' in r.evals)
    calls = []
    monkeypatch.setattr(zoo_grid.subprocess, 'call', lambda cmd, **kw: calls.append(cmd) or 0)
    monkeypatch.setattr(zoo_grid, 'restorable', lambda out, run: None)
    for root in (tmp_path, tmp_path / 'other'):
        (root / run.name).mkdir(parents=True)  # train_at.py would make it
    assert zoo_grid.run_one(tmp_path, run, [], dry_run=False, data_dir='/data/fmnist') == 'ran'
    assert [Path(c[1]).name if c[1].endswith('.py') else c[3] for c in calls] == ['train_at.py', 'eval', 'eval']
    assert all(c[c.index('--data-dir') + 1] == '/data/fmnist' for c in calls)
    calls.clear()
    zoo_grid.run_one(tmp_path / 'other', run, [], dry_run=False)
    assert calls and not any('--data-dir' in c for c in calls), 'by default the Debian files, no flag'


def test_a_published_run_missing_here_is_restored_from_its_card_and_republishes_the_same_card(tmp_path, monkeypatch):
    """runs/ is not in git: on a new machine the published seed-0 runs come back from their cards instead of
    being trained again, and their card written from the restored run says what the published one says."""
    import yaml
    from robust_zoo.publish import write_card_repo
    run = grids._zoo('relu', 1)  # seed 1: its card never gains the seed-0 APGD/AutoAttack records
    out = tmp_path / 'zoo' / run.name
    card = zoo_grid.restorable(out, run)
    assert card == ROOT / 'model_cards' / 'resnet20_relu_at.fmnist_s1'
    assert sorted(zoo_grid.restore_from_card(out, card)) == ['final_eval.json', 'pgd20_10k.json']
    assert (out / 'model.safetensors').read_bytes() == (card / 'model.safetensors').read_bytes()
    records = json.loads((card / 'eval_results.json').read_text())
    assert json.loads((out / 'final_eval.json').read_text())['evaluation'] == records[0]
    assert json.loads((out / 'pgd20_10k.json').read_text()) == records[1]
    assert zoo_grid.restorable(out, run) is None, 'a restored (finished) run is not restored again'
    monkeypatch.chdir(ROOT)  # as --publish runs: the card names its recipe relative to the checkout
    folder = write_card_repo(out, tag=run.tag, evaluations=[out / 'final_eval.json', out / 'pgd20_10k.json'],
                             out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json',
                             recipe=zoo_grid.HERE / 'configs' / run.recipe)
    for name in ('README.md', 'config.json', 'eval_results.json'):
        assert (folder / name).read_text() == (card / name).read_text(), f'{name} differs'

    started = tmp_path / 'zoo' / grids._zoo('silu', 0).name
    started.mkdir()
    (started / 'last.ckpt').write_bytes(b'')
    assert zoo_grid.restorable(started, grids._zoo('silu', 0)) is None, 'a started run resumes, not restored'
    stale = tmp_path / 'stale-card'
    stale.mkdir()
    for name in ('eval_results.json', 'README.md'):
        (stale / name).write_text((card / name).read_text())
    args = yaml.safe_load((card / 'args.yaml').read_text())
    (stale / 'args.yaml').write_text(yaml.safe_dump({**args, 'epochs': args['epochs'] + 1}))
    monkeypatch.setattr(zoo_grid, '_card_of', lambda run: stale)
    assert zoo_grid.restorable(tmp_path / 'zoo' / 'other', run) is None, 'a card of another budget is not restored'


def test_a_run_killed_before_its_first_checkpoint_is_set_aside_and_trained_again(tmp_path, monkeypatch, capsys):
    """train_at.py refuses a folder that holds args.yaml (no overwriting), and without last.ckpt there is nothing to
    resume: the grid used to fail on such a run forever. Now it is moved to superseded/ (its log kept) and rerun."""
    root = tmp_path / 't'
    run = next(r for r in zoo_grid.transfer_grid(tmp_path / 'zoo') if r.name == 'digits-resnet20_relu_at-s2')
    out = root / run.name
    out.mkdir(parents=True)
    import yaml
    recipe = yaml.safe_load((ROOT / 'train' / 'configs' / run.recipe).read_text())
    (out / 'args.yaml').write_text(yaml.safe_dump({**recipe, 'model': f'robust_zoo/{run.model}', 'seed': 2}))
    (out / 'log.txt').write_text('epoch 0\n')
    calls = []
    monkeypatch.setattr(zoo_grid.subprocess, 'call', lambda cmd, **kw: calls.append(cmd) or 1)
    monkeypatch.setattr(zoo_grid, 'restorable', lambda out, run: None)  # whether or not this run is published yet
    zoo_grid.run_one(root, run, [], dry_run=True)
    assert 'restart' in capsys.readouterr().out and out.exists() and not calls, 'a dry run says so, moves nothing'
    zoo_grid.run_one(root, run, [], dry_run=False)
    moved = list((root / 'superseded').iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(f'{run.name}-no-checkpoint-')
    assert (moved[0] / 'log.txt').read_text() == 'epoch 0\n' and not out.exists()
    assert calls and calls[0][-2:] == ['--output', str(out)], 'trained from scratch into the same folder'


def test_parallel_workers_never_take_the_same_run(tmp_path, capsys, monkeypatch):
    """run_grids.sh starts one grid worker per core on one queue: a run claimed by a live worker is skipped by the
    others (and shown as running by --dry-run), released when done, and taken over when its worker died."""
    out = tmp_path / 'zoo' / 'resnet20_relu_at-s1'
    with zoo_grid.claim(out) as mine:
        assert mine and zoo_grid.holder(out) == os.getpid()
        with zoo_grid.claim(out) as other:
            assert not other, 'a second claim on a held run is refused'
        assert zoo_grid.holder(out) == os.getpid(), 'the refused claim left the holder\'s lock alone'
        run = next(r for r in zoo_grid.zoo_grid() if r.name == out.name)
        calls = []
        monkeypatch.setattr(zoo_grid.subprocess, 'call', lambda cmd, **kw: calls.append(cmd) or 1)
        monkeypatch.setattr(zoo_grid, 'restorable', lambda out, run: None)
        zoo_grid.run_one(out.parent, run, [], dry_run=False)
        assert 'busy' in capsys.readouterr().out and not calls, 'a held run is not trained twice'
        zoo_grid.run_one(out.parent, run, [], dry_run=True)
        assert f'running  {out}: grid worker pid {os.getpid()}' in capsys.readouterr().out
    assert zoo_grid.holder(out) is None and not list((out.parent / '.locks').iterdir()), 'released, no litter'
    (out.parent / '.locks' / f'{out.name}.pid').write_text('12345')  # left behind by a worker that died
    with zoo_grid.claim(out) as mine:
        assert mine and zoo_grid.holder(out) == os.getpid(), 'a lock file nobody holds is free'


def test_dry_run_shows_how_far_a_running_run_is_from_its_newest_log(tmp_path, capsys):
    out = tmp_path / 'zoo' / 'resnet20_relu_at-s1'
    run = next(r for r in zoo_grid.zoo_grid() if r.name == out.name)
    with zoo_grid.claim(out):
        zoo_grid.run_one(out.parent, run, [], dry_run=True)
        assert capsys.readouterr().out.strip().endswith(f'grid worker pid {os.getpid()}'), 'no log yet: no progress'
        out.mkdir(parents=True)
        (out / 'log.txt').write_text('epoch 0\nstep [  50/460] loss 1.1  42 img/s\n\n')
        zoo_grid.run_one(out.parent, run, [], dry_run=True)
        assert capsys.readouterr().out.strip().endswith('; log.txt 0s ago: step [  50/460] loss 1.1  42 img/s')
        old = time.time() - 600
        os.utime(out / 'log.txt', (old, old))
        (out / 'pgd20_10k.log').write_text('fashion-mnist-linf: batch 3/40 done\n')
        zoo_grid.run_one(out.parent, run, [], dry_run=True)
        assert capsys.readouterr().out.strip().endswith('; pgd20_10k.log 0s ago: fashion-mnist-linf: batch 3/40 done')
        os.utime(out / 'pgd20_10k.log', (old - 60, old - 60))
        zoo_grid.run_one(out.parent, run, [], dry_run=True)
        assert capsys.readouterr().out.strip().endswith('; log.txt 10 min ago: step [  50/460] loss 1.1  42 img/s')


def test_a_killed_workers_lock_is_freed_by_the_kernel(tmp_path):
    """The lock is an flock(2): the kernel drops it when its worker dies (kill -9 included), so nothing has to
    recognise a stale lock, and no two workers can both take one over."""
    out = tmp_path / 'zoo' / 'resnet20_relu_at-s1'
    worker = subprocess.Popen([sys.executable, '-c', f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location('zoo_grid', {str(ROOT / 'train' / 'zoo_grid.py')!r})
zoo_grid = importlib.util.module_from_spec(spec); spec.loader.exec_module(zoo_grid)
with zoo_grid.claim(zoo_grid.Path({str(out)!r})) as mine:
    print(mine, flush=True); time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == 'True'
        assert zoo_grid.holder(out) == worker.pid
        with zoo_grid.claim(out) as mine:
            assert not mine, 'held by a live worker in another process'
    finally:
        worker.kill()
        worker.wait()
    assert (out.parent / '.locks' / f'{out.name}.pid').exists(), 'killed: its lock file is left behind...'
    assert zoo_grid.holder(out) is None, '...but held by nobody'
    with zoo_grid.claim(out) as mine:
        assert mine


def test_a_worker_with_nothing_to_take_waits_for_the_busy_one_instead_of_exiting(tmp_path):
    """The queue's tail: while another worker holds a run (which may unlock a bank or the AutoAttack stage), an idle
    worker polls instead of exiting, and finishes once the queue is settled."""
    out = tmp_path / 'zoo' / 'resnet20_relu_at-s1'
    out.mkdir(parents=True)
    for name in ('final_eval.json', 'pgd20_10k.json'):
        (out / name).write_text('{}')
    cmd = [sys.executable, str(ROOT / 'train' / 'zoo_grid.py'), '--grid', 'zoo', '--root', str(out.parent),
           '--only', out.name, '--poll', '0.2']
    with zoo_grid.claim(out) as mine:
        assert mine
        worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().startswith(f'busy     {out}')
        assert worker.stdout.readline().startswith(f'busy     {out}'), 'it polls again'
        assert worker.poll() is None, 'it exited while another worker still held a run'
    rest = worker.communicate(timeout=60)[0].splitlines()
    assert worker.returncode == 0 and rest[-1] == f'done     {out}'


def test_the_full_checks_run_once_per_run_with_pgd20_on_10k_and_apgd_keeps_the_fast_ones(tmp_path):
    """The full checks probe the same 100 points in every record of a run: repeating them under APGD or AutoAttack
    would cost minutes for an identical result."""
    cmds = {kind: zoo_grid.eval_cmd(tmp_path, 'resnet20_relu_at', kind) for kind in zoo_grid.EVALS}
    checks = {kind: cmd[cmd.index('--checks') + 1] for kind, cmd in cmds.items()}
    assert all(cmd.count('--checks') == 1 for cmd in cmds.values())
    assert checks == {'pgd20_10k': 'full', 'apgd_1k': 'fast', 'pgd20_500': 'fast', 'aa_500': 'fast', 'aa_1k': 'fast'}
    assert zoo_grid.EVAL_10K == 'pgd20_10k'


def test_a_half_done_evaluation_of_published_weights_is_carried_in_git_to_the_next_machine(tmp_path, monkeypatch,
                                                                                           capsys):
    """runs/ does not outlive the machine: an evaluation of published weights keeps its state in train/pending/
    (committed at a session's end), the next machine resumes from it, and a finished one removes it. Weights that
    are not published keep theirs in the run folder: a retrained run would refuse a carried state."""
    monkeypatch.setattr(zoo_grid, 'PENDING', tmp_path / 'pending')
    run = grids._zoo('relu', 1)._replace(evals=('pgd20_10k', 'apgd_1k'))  # a card without an APGD record
    out = tmp_path / 'fmnist-zoo' / run.name
    zoo_grid.restore_from_card(out, zoo_grid.restorable(out, run))
    carried = tmp_path / 'pending' / 'fmnist-zoo' / run.name / 'apgd_1k.state.json'
    assert zoo_grid.carried_state(out, 'apgd_1k') == carried
    (out / 'apgd_1k.state.json').write_text(json.dumps(dict(batches={'0': {}, '1': {}})))  # started before
    assert zoo_grid.state_path(out, run, 'apgd_1k') == carried and not (out / 'apgd_1k.state.json').exists()
    assert json.loads(carried.read_text())['batches'] == {'0': {}, '1': {}}, 'its finished batches moved along'
    zoo_grid.run_one(tmp_path / 'fmnist-zoo', run, [], dry_run=True)
    assert f'resumes after 2 batches, from {carried}' in capsys.readouterr().out

    calls = []
    def fake_eval(cmd, **kw):
        calls.append(cmd)
        Path(cmd[cmd.index('--output') + 1]).write_text('{}')
        return 0
    monkeypatch.setattr(zoo_grid.subprocess, 'call', fake_eval)
    assert zoo_grid.run_one(tmp_path / 'fmnist-zoo', run, [], dry_run=False) == 'ran'
    assert calls[0][calls[0].index('--state') + 1] == str(carried)
    assert not carried.exists() and not (tmp_path / 'pending' / 'fmnist-zoo').exists(), 'finished: nothing carried'

    other = tmp_path / 'fmnist-zoo' / 'retrained'
    other.mkdir()
    (other / 'model.safetensors').write_bytes(b'other weights')
    assert zoo_grid.state_path(other, run, 'apgd_1k') == other / 'apgd_1k.state.json'


def test_a_lenet_run_is_published_once_its_apgd_record_exists_and_its_autoattack_joins_later(tmp_path, monkeypatch):
    """The grid's verdicts decide under APGD-CE + APGD-T: a card without it would enter the claims on PGD-20."""
    import robust_zoo.publish
    import robust_zoo.publish.leaderboard
    from experiments import study
    from robust_zoo.models import _pretrained
    written = []

    def write_card_repo(out, tag, evaluations, **kwargs):
        written.append((out.name, tag, [e.stem for e in evaluations]))
        return tmp_path / 'cards' / tag
    monkeypatch.setattr(robust_zoo.publish, 'write_card_repo', write_card_repo)
    monkeypatch.setattr(robust_zoo.publish.leaderboard, 'write_leaderboard', lambda *a, **k: [])
    monkeypatch.setattr(study, 'write_study', lambda *a, **k: None)
    monkeypatch.setattr(_pretrained, 'cards_dir', lambda: tmp_path / 'cards')
    root = tmp_path / 'g'
    queue = [(root, r) for r in zoo_grid.lenet_grid() if r.name == 'lenet_small_relu_at-s0']
    out = root / 'lenet_small_relu_at-s0'
    out.mkdir(parents=True)
    (out / 'final_eval.json').write_text('{}')
    zoo_grid.publish(queue, tmp_path / 'results.md')
    assert written == [], 'trained, APGD not run yet: not published'
    (out / 'apgd_1k.json').write_text('{}')
    zoo_grid.publish(queue, tmp_path / 'results.md')
    assert written == [('lenet_small_relu_at-s0', 'fmnist_pgd10_s0', ['final_eval', 'apgd_1k'])]
    (out / 'aa_1k.json').write_text('{}')
    zoo_grid.publish(queue, tmp_path / 'results.md', force=True)
    assert written[-1] == ('lenet_small_relu_at-s0', 'fmnist_pgd10_s0', ['final_eval', 'apgd_1k', 'aa_1k'])
