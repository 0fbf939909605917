"""The project's experiment grids: which runs, under which recipe, with which evaluations. train/zoo_grid.py
trains and evaluates them (restartable, several workers) and publishes their cards.

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
`lenet` (issue 24): the same activation claims at a budget chosen to converge, on the small CNN of Croce et al.
(2019): every activation x seeds 0, 1, 2 under train/configs/lenet_small_fmnist_pgd10.yaml (PGD-10 on half of each
batch, 30 epochs), each evaluated with PGD-20 on 10,000 test images (its final_eval.json) and APGD-CE + APGD-T on 1,000
(RUN/apgd_1k.json), then AutoAttack standard on 1,000 for seed 0 of each activation (RUN/aa_1k.json). Its runs go
to runs/lenet-grid/ (`python train/zoo_grid.py --grid lenet`; `GRID=lenet bash train/run_grids.sh`).
"""
import json
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

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
# the long budget of the activation claims (chosen to converge; docs/claims.md measures whether it did)
LENET_RECIPE = 'lenet_small_fmnist_pgd10.yaml'


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
    """LeNetSmall with `act` under the long budget; APGD-CE + APGD-T on 1,000 test images for every seed, so
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


def best_three(zoo_root: Path) -> List[str]:
    """The three ResNet-20 seed-0 zoo runs with the highest PGD-20 robust accuracy on 10,000 test images;
    empty until every activation has that record (a ranking of some would pick the best of the early ones)."""
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
