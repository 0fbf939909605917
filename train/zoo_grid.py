#!/usr/bin/env python3
"""Train and evaluate the project's experiment grids, restartable:

    nohup python train/zoo_grid.py --grid all > runs/grids.log 2>&1 &

The grids themselves (which runs, recipes and evaluations: `zoo`, `transfer`, `all`, `lenet`) are defined and
described in train/grids.py.
A trained run still lacking its PGD-20 on 10,000 images is evaluated before any new training starts.

`--publish` trains nothing: it writes (or refreshes) the model card of every finished run, zoo first so that
transferred models can name their published bank, then regenerates the results page's tables and the claims page
(experiments/study.py):
    python train/zoo_grid.py --publish && git add model_cards robust_zoo/published.json docs/results.md docs/claims.md \
        docs/assets

Each run goes to ROOT/<name>/. A finished run (final_eval.json) is skipped, a started one is resumed from its
last.ckpt; a run whose args.yaml disagrees with its recipe on any value the recipe sets (the recipe changed
after it ran) is stale: it is neither resumed nor published, and must be moved away to be re-run, so that one
table never mixes two budgets. Killing and restarting this script loses at most --checkpoint-interval steps.
A run whose inputs (a bank from an unfinished zoo run) are missing is skipped with a message. A run killed
before its first checkpoint (args.yaml, no last.ckpt) is moved to ROOT/superseded/ and started over. Evaluations
are resumable too (--state), so a killed one continues where it stopped.
Several workers may share the queue (run_grids.sh starts GRID_WORKERS, default 2): a worker holds an flock(2) on
ROOT/.locks/<run>.pid while it trains or evaluates that run, the others skip it, and the kernel frees the lock
when its worker dies. A worker left with nothing it can take waits (--poll) while another still holds a run, as
that run may unlock more (a bank, the AutoAttack stage), so the queue's tail runs on every worker.
runs/ is not in git: on a new machine a run whose folder is missing but whose card is published (under the
current recipe) is restored from its card (weights, args.yaml, summary.csv, evaluation records) instead of
being trained again, so its later stages (APGD, AutoAttack, its Sparta bank) continue from the published model.
Those later evaluations of published weights keep their resumable state in train/pending/ (`carried_state`),
which is in git: commit it when a session ends with one half done (`git add -A train/pending`), and the next
machine resumes it from its last finished batch; a finished evaluation removes its state there.
`--dry-run` lists every run's state; for a running one, the last line of its newest log (training or evaluation)
and how long ago it was written: a worker that stopped logging shows up as an old line.
"""
import argparse
import fnmatch
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import ContextManager, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # the checkout's experiments/ (the study; not installed with robust_zoo)
sys.path.insert(0, str(HERE))  # grids.py beside this file (also when a test loads this file by its path)

from grids import (AA_CLAIMS_ORDER, EVAL_10K, EVALS, LENET_RECIPE, SEEDED, SEEDS, Run, all_grid,  # noqa: E402,F401
                   best_three, lenet_grid, recipe_mismatch, transfer_grid, zoo_grid)

PENDING = HERE / 'pending'  # in git: the half-done evaluations of published runs (carried_state)


def trained_first(queue: List[tuple]) -> List[tuple]:
    """The queue with the trained runs that still lack their PGD-20 on 10,000 images moved to the front
    (minutes each, and each makes a publishable model), then the runs whose training started (a last.ckpt) and did
    not finish; otherwise in order."""
    def waiting(item):
        root, run = item
        out = root / run.name
        return (run.evals == (EVAL_10K,) and (out / 'final_eval.json').exists()  # not the later APGD/AA stages
                and not (out / f'{EVAL_10K}.json').exists())

    first = {}  # a run's first entry trains it; a later one (its AutoAttack stage) keeps its place
    for i, (root, run) in enumerate(queue):
        first.setdefault(root / run.name, i)

    def started(i, item):
        out = item[0] / item[1].name
        return first[out] == i and (out / 'last.ckpt').exists() and not (out / 'final_eval.json').exists()
    order = sorted(enumerate(queue), key=lambda e: (not waiting(e[1]), not started(*e)))
    return [item for _, item in order]


def _stale(out: Path, run: Run) -> bool:
    diff = recipe_mismatch(out, run.recipe)
    if diff:
        print(f'stale    {out}: trained under another budget than {run.recipe} ({"; ".join(diff)}); move it '
              'away (e.g. to runs/superseded/) to train it again under the current recipe', flush=True)
    return bool(diff)


def bank_of(run: Path) -> Path:
    """The Sparta bank of a finished zoo run (written once, next to its weights)."""
    path = run / 'sparta_bank.safetensors'
    if not path.exists():
        import timm
        import yaml

        import robust_zoo  # noqa: F401
        from robust_zoo.sparta_bank import save_bank
        from robust_zoo.training import load_weights
        args = yaml.safe_load((run / 'args.yaml').read_text())
        model = timm.create_model(args['model'])
        model.load_state_dict(load_weights(run / 'model.safetensors'))
        save_bank(model, path, source_model=args['model'].split('/', 1)[1], dataset=args['dataset'],
                  threat_model='fashion-mnist-linf',
                  recipe=str(args.get('config') or 'train/configs/fmnist_resnet20.yaml'), seed=str(args['seed']),
                  run=run.name)
    return path


def eval_cmd(out: Path, model: str, kind: str, state: Optional[Path] = None,
             data_dir: Optional[str] = None) -> List[str]:
    """One of EVALS on a finished run's weights, with its sanity checks, resumable from `state` (default:
    OUT/<kind>.state.json): a card record. `data_dir`: the Fashion-MNIST files where the Debian package is not
    installed (a GPU machine)."""
    return [sys.executable, '-m', 'robust_zoo.cli', 'eval', f'robust_zoo/{model}',
            '--checkpoint', str(out / 'model.safetensors'), '--threat-model', 'fashion-mnist-linf', *EVALS[kind],
            '--state', str(state or out / f'{kind}.state.json'), '--output', str(out / f'{kind}.json'),
            *(['--data-dir', data_dir] if data_dir else [])]


def carried_state(out: Path, kind: str) -> Path:
    """Where the evaluation `kind` of the run folder `out` keeps its state when the run's weights are published:
    PENDING/<grid folder>/<run>/<kind>.state.json, in git, so that an evaluation cut off by a session's end
    (runs/ does not outlive the machine) is committed half done and resumed on the next machine."""
    return PENDING / out.parent.name / out.name / f'{kind}.state.json'


def _weights_published(out: Path, run: Run) -> bool:
    """Whether the run's weights are the published ones (sha256 as in the index): only then is an evaluation state
    worth carrying, since its fingerprint holds the weights and a retrained run would refuse it."""
    from robust_zoo._io import sha256_file
    from robust_zoo.models._pretrained import load_published
    entry = load_published().get(f'{run.model}.{run.tag}')
    return bool(entry) and (out / 'model.safetensors').is_file() and \
        sha256_file(out / 'model.safetensors') == entry.get('sha256')


def state_path(out: Path, run: Run, kind: str) -> Path:
    """The `--state` of an evaluation: carried in git (`carried_state`) for published weights, else in the run.
    A state the run folder already holds for published weights (one started before the weights were published) is
    moved to the carried place, so its finished batches are kept."""
    if not _weights_published(out, run):
        return out / f'{kind}.state.json'
    carried, here = carried_state(out, kind), out / f'{kind}.state.json'
    carried.parent.mkdir(parents=True, exist_ok=True)
    if here.is_file() and not carried.exists():
        here.replace(carried)
    return carried


def _batches_done(state: Path) -> str:
    """' (resumes after N batches, from PATH)' for a state file with finished batches, else ''."""
    import json
    try:
        n = len(json.loads(state.read_text()).get('batches', {}))
    except (OSError, ValueError):
        return ''
    return f' (resumes after {n} batch{"es" * (n != 1)}, from {state})' if n else ''


def _card_of(run: Run) -> Path:
    from robust_zoo.models._pretrained import cards_dir
    return cards_dir() / f'{run.model}.{run.tag}'


def restorable(out: Path, run: Run) -> Optional[Path]:
    """The published card a run can be restored from: its folder holds no run yet (no final_eval.json, no
    last.ckpt) and the card was trained under the run's current recipe."""
    card = _card_of(run)
    if (out / 'final_eval.json').exists() or (out / 'last.ckpt').exists():
        return None
    if not (card / 'eval_results.json').is_file() or not (card / 'args.yaml').is_file():
        return None
    return None if recipe_mismatch(card, run.recipe) else card


def restore_from_card(out: Path, card: Path) -> List[str]:
    """Rebuild a finished run folder from its published card: the same weights, args.yaml, summary.csv and Sparta
    bank (the file bank_of would write, which the transferred runs' cards name), the card's first record as
    final_eval.json and the later ones as their EVALS files (matched by their attacks and number of examples).
    File times are the card's, so `--publish` does not rewrite an unchanged card. Returns the record files written."""
    import csv
    import json
    import os
    import re
    import shutil

    from huggingface_hub import ModelCard
    records = json.loads((card / 'eval_results.json').read_text())
    text = (card / 'README.md').read_text()
    meta = ModelCard.load(card / 'README.md').data.to_dict().get('robust_zoo', {})
    rows = list(csv.DictReader((card / 'summary.csv').open())) if (card / 'summary.csv').is_file() else []
    out.mkdir(parents=True, exist_ok=True)
    # the Sparta bank too, where the card ships one: the transferred runs' args.yaml name it in this run folder
    for name in ('model.safetensors', 'args.yaml', 'summary.csv', 'sparta_bank.safetensors'):
        if (card / name).is_file():
            shutil.copy2(card / name, out / name)
    final = dict(model=records[0]['model'], dataset=meta.get('dataset'), restored_from=str(card),
                 epochs_run=meta.get('epochs_run', len(rows)), stopped_early=bool(meta.get('stopped_early')),
                 world_size=int(m.group(1)) if (m := re.search(r'\| batch \| \d+ x (\d+) process', text)) else 1)
    if rows:
        kept = meta.get('kept_epoch')
        row = next((r for r in rows if int(r['epoch']) == kept), None) if kept is not None else \
            max(rows, key=lambda r: float(r['eval_robust_acc']))
        final['best'] = dict(epoch=int(row['epoch']), robust_acc=float(row['eval_robust_acc']))
    final['evaluation'] = records[0]
    files = {out / 'final_eval.json': final}
    kinds = {(flags[flags.index('--attacks') + 1], int(flags[flags.index('--n-examples') + 1])): kind
             for kind, flags in EVALS.items()}
    for record in records[1:]:
        kind = kinds.get((','.join(record['attacks']), record['n_examples']))
        if kind is None:
            raise ValueError(f'{card}/eval_results.json: a record of {", ".join(record["attacks"])} on '
                             f'{record["n_examples"]} examples is none of {", ".join(EVALS)}')
        files[out / f'{kind}.json'] = record
    stamp = (card / 'README.md').stat().st_mtime
    for path, record in files.items():
        path.write_text(json.dumps(record, indent=2))
        os.utime(path, (stamp, stamp))
    return [p.name for p in files]


def set_aside(out: Path) -> Path:
    """Move a run folder that cannot be resumed (train_at.py refuses to overwrite it) to ROOT/superseded/, with
    the time in its name, so that nothing in it is lost; returns where it went."""
    import time
    dest = out.parent / 'superseded' / f'{out.name}-no-checkpoint-{time.strftime("%Y%m%d-%H%M%S")}'
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.rename(dest)
    return dest


def _lock_path(out: Path) -> Path:
    return out.parent / '.locks' / f'{out.name}.pid'


def holder(out: Path) -> Optional[int]:
    """The pid of the live grid worker working on this run, or None (a killed worker's lock holds nobody)."""
    from robust_zoo._io import lock_holder
    return lock_holder(_lock_path(out))


def claim(out: Path) -> ContextManager[bool]:
    """An exclusive lock on ROOT/.locks/<run>.pid while this worker works on a run, so that parallel workers
    (run_grids.sh starts GRID_WORKERS, default 2) never train, evaluate or set aside the same run; False while
    another live worker holds it."""
    from robust_zoo._io import exclusive_lock
    return exclusive_lock(_lock_path(out))


def _killed_before_checkpoint(out: Path) -> bool:
    """Started (args.yaml) but never checkpointed: train_at.py refuses the folder and nothing can be resumed."""
    return (out / 'args.yaml').exists() and not (out / 'last.ckpt').exists() and not (out / 'final_eval.json').exists()


def _progress(out: Path) -> str:
    """'; <log> <age> ago: <its last line>' for the run's most recently written log (training's log.txt or an
    evaluation's <kind>.log), so that a dry run shows how far a running run is; '' when it has none yet."""
    logs = [p for p in (out / 'log.txt', *(out / f'{kind}.log' for kind in EVALS)) if p.is_file()]
    if not logs:
        return ''
    log = max(logs, key=lambda p: p.stat().st_mtime)
    with open(log, 'rb') as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = [line.strip() for line in f.read().decode(errors='replace').splitlines() if line.strip()]
    age = max(0, int(time.time() - log.stat().st_mtime))
    ago = f'{age}s' if age < 120 else f'{age // 60} min'
    return f'; {log.name} {ago} ago: {lines[-1]}' if lines else ''


def run_one(root: Path, run: Run, extra: List[str], dry_run: bool, data_dir: Optional[str] = None) -> str:
    """Train and evaluate one run as far as it can go now; returns what happened: 'done' (nothing left),
    'busy' (another worker has it), 'waiting' (its bank is not trained yet), 'stale', 'failed', 'ran', or the
    state a dry run prints."""
    out = root / run.name
    if _stale(out, run):
        return 'stale'
    if dry_run:
        pid = holder(out)
        if pid is not None:
            print(f'running  {out}: grid worker pid {pid}{_progress(out)}')
            return 'busy'
        return _run_one(out, run, extra, dry_run, data_dir)
    with claim(out) as mine:
        if not mine:
            print(f'busy     {out}: another grid worker has it (pid {holder(out)}); next run', flush=True)
            return 'busy'
        return _run_one(out, run, extra, dry_run, data_dir)


def _run_one(out: Path, run: Run, extra: List[str], dry_run: bool, data_dir: Optional[str] = None) -> str:
    card = restorable(out, run)
    if card is not None:
        if dry_run:
            print(f'restore  {out}: from its published card {card}')
            return 'restore'
        print(f'restored {out} from its published card {card} ({", ".join(restore_from_card(out, card))})',
              flush=True)
    trained = (out / 'final_eval.json').exists()
    todo = [kind for kind in run.evals if not (out / f'{kind}.json').exists()]
    if trained and not todo:
        print(f'done     {out}', flush=True)
        return 'done'
    if run.bank_run is not None and (not (run.bank_run / 'final_eval.json').exists()
                                     or recipe_mismatch(run.bank_run, 'fmnist_resnet20.yaml')):
        print(f'waiting  {out}: its bank comes from {run.bank_run}, not finished (under the current recipe) yet',
              flush=True)
        return 'waiting'
    if dry_run:
        if _killed_before_checkpoint(out):
            print(f'restart  {out}: started, no checkpoint, no worker on it: it will be set aside to '
                  f'{out.parent / "superseded"}/ and trained again')
            return 'restart'
        state = 'evaluate' if trained else 'partial' if (out / 'last.ckpt').exists() else 'todo'
        resumes = ''.join(_batches_done(carried_state(out, kind)) for kind in todo) if trained else ''
        print(f'{state:8} {out}{resumes}')
        return state
    if not trained:
        if _killed_before_checkpoint(out):
            print(f'set aside {out}: killed before its first checkpoint, nothing to resume; moved to '
                  f'{set_aside(out)}, starting over', flush=True)
        cmd = [sys.executable, str(HERE / 'train_at.py'), '-c', str(HERE / 'configs' / run.recipe),
               '--model', f'robust_zoo/{run.model}', '--seed', str(run.seed), *extra]
        if data_dir:
            cmd += ['--data-dir', data_dir]
        if run.bank_run is not None:
            cmd += ['--model-kwargs', f'sparta_bank={bank_of(run.bank_run)}']
        cmd += ['--resume', str(out)] if (out / 'last.ckpt').exists() else ['--output', str(out)]
        print(f'training {out}: {" ".join(cmd[1:])}', flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f'FAILED   {out} (exit {rc}); continuing with the next run', flush=True)
            return 'failed'
    for kind in todo:
        state = state_path(out, run, kind)
        cmd = eval_cmd(out, run.model, kind, state, data_dir)
        print(f'evaluate {out}: {" ".join(cmd[1:])}', flush=True)
        with open(out / f'{kind}.log', 'a') as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            print(f'FAILED   {out} {kind} (exit {rc}, see {out / kind}.log); continuing', flush=True)
            return 'failed'
        if state.is_relative_to(PENDING):  # finished: its record is in the run, the card carries it from here
            state.unlink(missing_ok=True)
            for folder in (state.parent, state.parent.parent):
                if folder != PENDING and not any(folder.iterdir()):
                    folder.rmdir()
    return 'ran'


def publish(queue: List[tuple], readme: Path, force: bool = False, claims: Optional[Path] = None) -> int:
    """Write the card of every finished run whose card is missing or older than its records (every finished
    run's with `force`, after the card writer changed), naming its recipe; then the results page's tables and the
    claims page's (`claims`, default: the study's page). A run counts as finished once its final_eval.json and the
    evaluations of its first queue entry exist (the zoo's PGD-20 on 10,000 images, the LeNetSmall grid's APGD-CE +
    APGD-T on 1,000); a later stage's record (AutoAttack) is added to its card when it exists."""
    import robust_zoo  # noqa: F401
    from experiments.study import PAGE, write_study
    from robust_zoo.models._pretrained import cards_dir
    from robust_zoo.publish import write_card_repo
    from robust_zoo.publish.leaderboard import write_leaderboard
    written = 0
    required = {}  # a run's first entry names the evaluations it is published with (later stages add to its card)
    for root, run in queue:
        required.setdefault((root, run.name), run.evals)
    for root, run in dict(((root, run.name), (root, run)) for root, run in queue).values():
        out = root / run.name
        if not (out / 'final_eval.json').exists() or any(not (out / f'{k}.json').exists()
                                                         for k in required[(root, run.name)]):
            continue
        if _stale(out, run):
            continue
        records = [out / 'final_eval.json'] + [out / f'{k}.json' for k in EVALS if (out / f'{k}.json').exists()]
        card = cards_dir() / f'{run.model}.{run.tag}' / 'README.md'
        if not force and card.exists() and card.stat().st_mtime >= max(r.stat().st_mtime for r in records):
            continue
        folder = write_card_repo(out, tag=run.tag, evaluations=records, force=True,  # the grid's own cards
                                 recipe=HERE / 'configs' / run.recipe)
        print(f'card     {folder} ({", ".join(r.stem for r in records)})', flush=True)
        written += 1
    rows = write_leaderboard(readme, readme.parent / 'assets' / 'leaderboard.png')
    write_study(claims or PAGE)
    print(f'{readme}, {claims or PAGE}: {len(rows)} leaderboard rows; {written} card(s) written', flush=True)
    return 0


def select(queue: List[tuple], patterns: Optional[List[str]]) -> List[tuple]:
    """The queue entries whose run folder name matches one of the shell `patterns` (all of them without any),
    in queue order."""
    if not patterns:
        return queue
    return [(root, run) for root, run in queue if any(fnmatch.fnmatchcase(run.name, p) for p in patterns)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--grid', default='all', choices=('all', 'zoo', 'transfer', 'lenet'),
                   help='all: the 4-epoch ResNet-20 zoo and its transfer runs; lenet: the activation claims at the '
                        'long LeNetSmall budget (train/configs/%s)' % LENET_RECIPE)
    p.add_argument('--root', default=None, help='zoo, transfer or lenet grid: its run folder (default: '
                                                'runs/fmnist-zoo, runs/transfer or runs/lenet-grid)')
    p.add_argument('--zoo-root', default='runs/fmnist-zoo', help='the zoo runs, where the transfer runs find the banks')
    p.add_argument('--transfer-root', default='runs/transfer')
    p.add_argument('--dry-run', action='store_true', help='list the runs and their state, train nothing')
    p.add_argument('--publish', action='store_true', help="write the finished runs' model cards and the results "
                                                          "page's tables, train nothing")
    p.add_argument('--force', action='store_true', help='with --publish: rewrite every finished run\'s card, not '
                                                        'only the missing or stale ones')
    p.add_argument('--readme', default='docs/results.md', help='with --publish: the page whose tables to regenerate')
    p.add_argument('--claims', default=None, help="with --publish: the study's page whose blocks to regenerate "
                                                  '(default: docs/claims.md)')
    p.add_argument('--only', action='append', default=None, metavar='PATTERN',
                   help="only the runs whose folder name matches this shell pattern (repeatable), e.g. --only "
                        "'digits-*-s2' --only 'mlp3_*': short runs that fit in the time left")
    p.add_argument('--poll', type=float, default=60.0, help='seconds between passes while another worker holds a '
                                                            'run this worker could not take')
    p.add_argument('--data-dir', default=None, help='the dataset files for training and evaluation (default: the '
                   'Debian Fashion-MNIST package; a machine without it, such as a GPU machine, needs this)')
    p.add_argument('extra', nargs=argparse.REMAINDER, help='flags passed on to train_at.py')
    args = p.parse_args()
    zoo_root, transfer_root = Path(args.zoo_root), Path(args.transfer_root)
    if args.grid == 'all':
        queue = all_grid(zoo_root, transfer_root)
    elif args.grid == 'zoo':
        queue = [(Path(args.root or zoo_root), r) for r in zoo_grid()]
    elif args.grid == 'lenet':
        queue = [(Path(args.root or 'runs/lenet-grid'), r) for r in lenet_grid()]
    else:
        queue = [(Path(args.root or transfer_root), r) for r in transfer_grid(zoo_root)]
    queue = select(queue, args.only)
    if args.publish:
        return publish(queue, Path(args.readme), force=args.force, claims=Path(args.claims) if args.claims else None)
    failed = set()  # a run that failed in this worker is not retried by it (its log says why)
    while True:
        # a pass can unlock queue entries (a bank, the AutoAttack stage), so run passes until one changes nothing;
        # while another worker holds a run, wait for it rather than exit, so that the queue's tail gets every core
        busy = False
        for root, run in trained_first(queue):
            if root / run.name in failed:
                continue
            state = run_one(root, run, args.extra, args.dry_run, args.data_dir)
            busy |= state == 'busy'
            if state == 'failed':
                failed.add(root / run.name)
        again = select(all_grid(zoo_root, transfer_root), args.only) if args.grid == 'all' else queue
        if args.dry_run or (again == queue and not busy):
            return 0
        if again == queue:
            time.sleep(args.poll)
        queue = again


if __name__ == '__main__':
    sys.exit(main())
