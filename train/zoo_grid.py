#!/usr/bin/env python3
"""Train and evaluate the project's experiment grids, restartable:

    nohup python train/zoo_grid.py --grid all > runs/grids.log 2>&1 &

`zoo` (issue 7): every activation of ResNet-20 on Fashion-MNIST under ONE recipe (fmnist_resnet20.yaml),
the capped-ReLU small net (capped_relu vs relu, under N-FGSM and under PGD-10), then the extra seeds of the claims
under test (the small net's too). Each finished zoo run is then
evaluated with PGD-20 on all 10,000 test images (RUN/pgd20_10k.json, the cards' second record).
`transfer` (issue 5): Sparta banks from the zoo's ResNet-20 Sparta runs (seed s), frozen, in ResNet-32/56 on
Fashion-MNIST and in ResNet-20 on the digits, against ReLU and Sparta from scratch, same seeds and budget.
`all`: both as one queue, ordered so that every session's end leaves complete results behind: seed 0 of
every experiment first (each transfer run as soon as its bank exists), then seeds 1 and 2, then APGD-CE +
APGD-T on 1,000 test images for seed 0 of every zoo model (RUN/apgd_1k.json; ResNet-20's activations, then the
small net's capped_relu and relu under both training attacks), and last AutoAttack
standard on 500 test images (RUN/aa_500.json) for the three best of them by PGD-20 on 10,000 images, then
for seed 0 of every other activation under a claim (AA_CLAIMS_ORDER), once every seed-0 activation has that
number (the queue is rebuilt after each pass, so this stage appears then), each with PGD-20 on the same 500
images first (RUN/pgd20_500.json, seconds), so that the cards and the leaderboard's (!) note can set
AutoAttack's number beside PGD's on the images AutoAttack saw.
`lenet` (issue 24): the same activation claims at a converged budget, on the small CNN of Croce et al. (2019):
every activation x seeds 0, 1, 2 under train/configs/lenet_small_fmnist_pgd10.yaml (PGD-10 on half of each batch,
30 epochs), each evaluated with PGD-20 on 10,000 test images (its final_eval.json) and APGD-CE + APGD-T on 1,000
(RUN/apgd_1k.json), then AutoAttack standard on 1,000 for seed 0 of each activation (RUN/aa_1k.json). Its runs go
to runs/lenet-grid/ (`python train/zoo_grid.py --grid lenet`; `GRID=lenet bash train/run_grids.sh`).
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
import fcntl
import fnmatch
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # the checkout's experiments/ (the study; not installed with robust_zoo)

from experiments.claims import CLAIMS  # noqa: E402
from robust_zoo.layers import ACTIVATIONS  # noqa: E402

# the activations under a claim, trained on every seed (the rest of the zoo on seed 0): each claim's base and the
# ones it names `seeded`, in the zoo's order
SEEDED = tuple(a for a in ACTIVATIONS if any(a == c.base or a in c.seeded for c in CLAIMS))
SEEDS = (0, 1, 2)
# the claims' AutoAttack order after the three best: capped ReLU first (the robustness a stronger attack is likeliest
# to find masked: APGD's largest drop), then the cheap before SiLU and Sparta (APGD on 1,000 took 2.0x and 2.6x
# ReLU's time here), so that a session's end leaves the most verdicts complete
AA_CLAIMS_ORDER = ('relu', 'pssilu', 'capped_relu', 'relu_smoothgrad', 'silu', 'sparta')
PENDING = HERE / 'pending'  # in git: the half-done evaluations of published runs (carried_state)
EVAL_10K = 'pgd20_10k'
# evaluation records a finished run can get: file stem -> robust-zoo eval flags (all resumable with --state).
# The full checks (PGD's steps, restarts, eps sweep, Square) probe the model on its first 100 clean-correct test
# points, the same in every record of a run: PGD-20 on 10k runs them, APGD and AutoAttack keep the fast checks
# (their own budget, AutoAttack's flags) instead of repeating ~6 CPU-minutes of identical probes.
EVALS = {
    'pgd20_10k': ['--attacks', 'pgd-20', '--n-examples', '10000', '--batch-size', '250', '--compile',
                  '--checks', 'full'],
    'apgd_1k': ['--attacks', 'apgd-ce+apgd-t', '--n-examples', '1000', '--batch-size', '100', '--checks', 'fast'],
    'pgd20_500': ['--attacks', 'pgd-20', '--n-examples', '500', '--batch-size', '250', '--checks', 'fast'],
    'aa_500': ['--attacks', 'autoattack-standard', '--n-examples', '500', '--batch-size', '100', '--checks', 'fast'],
    'aa_1k': ['--attacks', 'autoattack-standard', '--n-examples', '1000', '--batch-size', '100', '--checks', 'fast'],
}
LENET_RECIPE = 'lenet_small_fmnist_pgd10.yaml'  # the converged budget of the activation claims


class Run(NamedTuple):
    name: str
    recipe: str
    model: str
    seed: int
    tag: str  # its card's tag: the model is published as <model>.<tag>
    bank_run: Optional[Path] = None  # the zoo run whose Sparta bank is loaded (frozen)
    evals: Tuple[str, ...] = ()  # EVALS to run once it is trained


def _zoo(act: str, seed: int) -> Run:
    return Run(f'resnet20_{act}_at-s{seed}', 'fmnist_resnet20.yaml', f'resnet20_{act}_at', seed, f'fmnist_s{seed}',
               evals=(EVAL_10K,))


def _mlp3(seed: int, attack: str = 'n-fgsm') -> List[Run]:
    """The capped-ReLU paper's small net, capped_relu vs relu: a claim under test, so 3 seeds (a minute each).
    `attack='pgd'`: the same budget trained with PGD-10, the paper's attack (minutes each)."""
    recipe, tag, suffix = (('capped_relu_mlp3_fmnist.yaml', f'fmnist_s{seed}', '') if attack == 'n-fgsm' else
                           ('capped_relu_mlp3_fmnist_pgd.yaml', f'fmnist_pgd_s{seed}', '-pgd'))
    return [Run(f'mlp3_{a}_at{suffix}-s{seed}', recipe, f'mlp3_{a}_at', seed, tag, evals=(EVAL_10K,))
            for a in ('capped_relu', 'relu')]


def zoo_grid() -> List[Run]:
    runs = [_zoo(a, 0) for a in ACTIVATIONS] + _mlp3(0)
    runs += [r for s in SEEDS[1:] for r in _mlp3(s) + [_zoo(a, s) for a in SEEDED]]
    return runs + [r for s in SEEDS for r in _mlp3(s, 'pgd')]


def _lenet(act: str, seed: int) -> Run:
    """LeNetSmall with `act` under the converged budget; APGD-CE + APGD-T on 1,000 test images for every seed, so
    that the claims decide under it with the seed spread (its final_eval.json holds PGD-20 on 10,000)."""
    return Run(f'lenet_small_{act}_at-s{seed}', LENET_RECIPE, f'lenet_small_{act}_at', seed, f'fmnist_pgd10_s{seed}',
               evals=('apgd_1k',))


def lenet_grid() -> List[Run]:
    """Every activation on every seed, seed by seed (a session's end leaves whole seeds), then AutoAttack standard
    on 1,000 for seed 0 of each activation (11 CPU-minutes each for ReLU: last, as the verdicts do not wait on it)."""
    runs = [_lenet(a, s) for s in SEEDS for a in ACTIVATIONS]
    return runs + [r._replace(evals=r.evals + ('aa_1k',)) for r in runs if r.seed == 0]


def _digits(seed: int, zoo_root: Path) -> List[Run]:
    bank = zoo_root / f'resnet20_sparta_at-s{seed}'
    tag = f'digits_s{seed}'
    return [Run(f'digits-resnet20_relu_at-s{seed}', 'digits_resnet20.yaml', 'resnet20_relu_at', seed, tag),
            Run(f'digits-resnet20_sparta_at-s{seed}', 'digits_resnet20.yaml', 'resnet20_sparta_at', seed, tag),
            Run(f'digits-resnet20_sparta_at-bank-s{seed}', 'digits_resnet20.yaml', 'resnet20_sparta_at', seed,
                f'digits_bank_s{seed}', bank)]


def _deeper(depth: int, seed: int, zoo_root: Path) -> List[Run]:
    bank = zoo_root / f'resnet20_sparta_at-s{seed}'
    recipe, tag = 'fmnist_resnet_transfer.yaml', f'fmnist2ep_s{seed}'  # the 2-epoch transfer budget
    return [Run(f'resnet{depth}_relu_at-s{seed}', recipe, f'resnet{depth}_relu_at', seed, tag),
            Run(f'resnet{depth}_sparta_at-s{seed}', recipe, f'resnet{depth}_sparta_at', seed, tag),
            Run(f'resnet{depth}_sparta_at-bank-s{seed}', recipe, f'resnet{depth}_sparta_at', seed,
                f'fmnist2ep_bank_s{seed}', bank)]


def transfer_grid(zoo_root: Path) -> List[Run]:
    runs = [r for s in SEEDS for r in _digits(s, zoo_root)]  # the digits first: minutes per run
    return runs + [r for depth in (32, 56) for s in SEEDS for r in _deeper(depth, s, zoo_root)]


def all_grid(zoo_root: Path, transfer_root: Path) -> List[tuple]:
    """(root, Run) in session-friendly order: seed 0 of everything, the claims first, then seeds 1 and 2."""
    def zoo(runs):
        return [(zoo_root, r) for r in runs]

    def transfer(runs):
        return [(transfer_root, r) for r in runs]

    first = ('relu', 'silu', 'sparta', 'softplus', 'smoothrelu')  # silu: the README's headline model
    # the digits arms (minutes each) as soon as their bank exists: the first complete transfer experiment
    queue = zoo(_zoo(a, 0) for a in first[:3]) + transfer(_digits(0, zoo_root)) + zoo(_zoo(a, 0) for a in first[3:])
    queue += zoo(_zoo(a, 0) for a in ACTIVATIONS if a not in first)
    queue += zoo(_mlp3(0) + _mlp3(0, 'pgd'))
    queue += transfer(_deeper(32, 0, zoo_root) + _deeper(56, 0, zoo_root))
    for s in SEEDS[1:]:
        sparta_first = ('sparta',) + tuple(a for a in SEEDED if a != 'sparta')
        queue += zoo(_mlp3(s) + _mlp3(s, 'pgd') + [_zoo(a, s) for a in sparta_first])
        queue += transfer(_digits(s, zoo_root) + _deeper(32, s, zoo_root) + _deeper(56, s, zoo_root))
    # every seed-0 zoo model, ResNet-20 first; the small net's too (seconds each), as capped ReLU's robustness is
    # the kind a stronger attack may find masked
    apgd = [(root, run._replace(evals=run.evals + ('apgd_1k',))) for prefix in ('resnet20_', 'mlp3_')
            for root, run in queue if root == zoo_root and run.seed == 0 and run.name.startswith(prefix)]
    # AutoAttack: the three best first (the minimum), then seed 0 of every other activation under a claim,
    # so that each claim's verdict gets a sentence under AutoAttack; all wait for the ranking
    best = best_three(zoo_root)
    aa = best + [_zoo(a, 0).name for a in AA_CLAIMS_ORDER if best and _zoo(a, 0).name not in best]
    by_name = {run.name: (root, run) for root, run in apgd}
    return queue + apgd + [(root, run._replace(evals=run.evals + ('pgd20_500', 'aa_500')))
                           for root, run in (by_name[name] for name in aa)]


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


def best_three(zoo_root: Path) -> List[str]:
    """The three ResNet-20 seed-0 zoo runs with the highest PGD-20 robust accuracy on 10,000 test images;
    empty until every activation has that record (a ranking of some would pick the best of the early ones)."""
    import json
    records = {_zoo(act, 0).name: zoo_root / _zoo(act, 0).name / f'{EVAL_10K}.json' for act in ACTIVATIONS}
    if not all(r.exists() and not recipe_mismatch(r.parent, 'fmnist_resnet20.yaml') for r in records.values()):
        return []
    robust = {name: json.loads(r.read_text())['robust_accuracy'] for name, r in records.items()}
    return sorted(robust, key=lambda name: (-robust[name], name))[:3]


def recipe_mismatch(out: Path, recipe: str) -> List[str]:
    """The values the recipe sets that a started run (its args.yaml) was not trained with, as
    'key: run value, recipe value'; empty for a run that matches or has not started. EXECUTION_KEYS are not
    compared: a run in fp32 on a CPU without native bf16 has the same budget as one under bf16 autocast."""
    import yaml

    from robust_zoo.publish.recipes import EXECUTION_KEYS
    args_file = out / 'args.yaml'
    if not args_file.exists():
        return []
    args = yaml.safe_load(args_file.read_text())
    wanted = yaml.safe_load((HERE / 'configs' / recipe).read_text())
    return [f'{k}: run {args.get(k)!r}, recipe {v!r}' for k, v in wanted.items()
            if k != 'model' and k not in EXECUTION_KEYS and args.get(k) != v]


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


def eval_cmd(out: Path, model: str, kind: str, state: Optional[Path] = None) -> List[str]:
    """One of EVALS on a finished run's weights, with its sanity checks, resumable from `state` (default:
    OUT/<kind>.state.json): a card record."""
    return [sys.executable, '-m', 'robust_zoo.cli', 'eval', f'robust_zoo/{model}',
            '--checkpoint', str(out / 'model.safetensors'), '--threat-model', 'fashion-mnist-linf', *EVALS[kind],
            '--state', str(state or out / f'{kind}.state.json'), '--output', str(out / f'{kind}.json')]


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
    """The pid of the live grid worker working on this run, or None: the lock file is held with flock(2), which
    the kernel drops when its process dies, so a lock left behind by a killed worker holds nobody."""
    try:
        fd = os.open(_lock_path(out), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(os.pread(fd, 64, 0).split()[0])
        except (ValueError, IndexError):
            return -1  # held, its pid not written yet
    finally:
        os.close(fd)
    return None


@contextmanager
def claim(out: Path) -> Iterator[bool]:
    """Hold an exclusive flock(2) on ROOT/.locks/<run>.pid while this worker works on a run, so that parallel
    workers (run_grids.sh starts GRID_WORKERS, default 2) never train, evaluate or set aside the same run. Yields
    False while another live worker holds it. A dead worker's lock is free at once (the kernel releases it), so no
    takeover can race. The file is removed on release; a worker that locked a file just removed (its inode no
    longer at the path) drops it and tries again on the new one."""
    path = _lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield True
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


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


def run_one(root: Path, run: Run, extra: List[str], dry_run: bool) -> str:
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
        return _run_one(out, run, extra, dry_run)
    with claim(out) as mine:
        if not mine:
            print(f'busy     {out}: another grid worker has it (pid {holder(out)}); next run', flush=True)
            return 'busy'
        return _run_one(out, run, extra, dry_run)


def _run_one(out: Path, run: Run, extra: List[str], dry_run: bool) -> str:
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
        cmd = eval_cmd(out, run.model, kind, state)
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
                        'converged LeNetSmall budget (train/configs/%s)' % LENET_RECIPE)
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
            state = run_one(root, run, args.extra, args.dry_run)
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
