"""The Fashion-MNIST -> digits transfer experiment's table and verdicts, generated from its cards and records.

Every run (arm x seed) of `experiments/digits_finetune.py` leaves one evaluation record in
`experiments/results/digits_finetune/<arm>-s<seed>.json` (its records under `digits-linf` and `digits-linf-0.05`, its
training wall time, its weights' sha256); the runs worth using are also published as model cards
(`model_cards/lenet_wide_relu_at.digits_<arm>_s<seed>/`). Where a run has a card, its numbers are read from the card
(which must hold the same weights); the rest from the record. The rule that decides a comparison is the study's:
the robust-accuracy difference counts when it exceeds 2 standard errors (seed spread or binomial error, whichever
is larger), as for the claims on the results page.
"""
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from robust_zoo._io import PathLike
from robust_zoo.publish.leaderboard import seed_stat
from robust_zoo.publish.records import protocol_label, record_protocols

__all__ = ['ARMS', 'CLAIMS', 'THREATS', 'Arm', 'arm_rows', 'compare', 'finetune_markdown', 'load_runs']

ARCH = 'lenet_wide_relu_at'
START, END = '<!-- finetune:start -->', '<!-- finetune:end -->'


class Arm(NamedTuple):
    recipe: str  # in train/configs/
    backbone: Optional[str]  # 'robust', 'standard' or None (from scratch)
    what: str  # what is trained, for the table


ARMS: Dict[str, Arm] = {
    'lp_robust': Arm('digits_lenet_wide_probe.yaml', 'robust', 'linear probe (backbone frozen, clean)'),
    'lp_standard': Arm('digits_lenet_wide_probe.yaml', 'standard', 'linear probe (backbone frozen, clean)'),
    'ft_robust': Arm('digits_lenet_wide_finetune.yaml', 'robust', 'full fine-tuning, clean'),
    'ft_standard': Arm('digits_lenet_wide_finetune.yaml', 'standard', 'full fine-tuning, clean'),
    'aft_robust': Arm('digits_lenet_wide_adv_finetune.yaml', 'robust', 'full fine-tuning, PGD-5'),
    'aft_standard': Arm('digits_lenet_wide_adv_finetune.yaml', 'standard', 'full fine-tuning, PGD-5'),
    'at_scratch': Arm('digits_lenet_wide_scratch.yaml', None, 'adversarial training from scratch, PGD-5'),
}
THREATS = ('digits-linf', 'digits-linf-0.05')
# (claim, arm, base arm): does `arm` beat `base` in robust accuracy?
CLAIMS: Tuple[Tuple[str, str, str], ...] = (
    ('A robust backbone transfers robustness under a linear probe', 'lp_robust', 'lp_standard'),
    ('A robust backbone transfers robustness under full clean fine-tuning', 'ft_robust', 'ft_standard'),
    ('A linear probe of the robust backbone (clean training only) beats adversarial training from scratch',
     'lp_robust', 'at_scratch'),
    ('Adversarial fine-tuning of the robust backbone beats adversarial training from scratch at the same cost',
     'aft_robust', 'at_scratch'),
    ('Adversarial fine-tuning of the standard backbone beats adversarial training from scratch at the same cost',
     'aft_standard', 'at_scratch'),
)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{path} cannot be read as JSON ({e}): rewrite it with '
                         '`python -m experiments.digits_finetune run` (it records every finished run).') from e


def load_runs(results: PathLike, cards_root: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Every run's record in the folder `results`; a run published as a card under `cards_root` takes its evaluation
    records from the card (`card` names it), after checking that the card holds the record's weights."""
    folder = Path(results)
    if not folder.is_dir():
        raise ValueError(f'{folder} does not exist: it holds the runs\' records (`python -m '
                         'experiments.digits_finetune run` writes them).')
    runs = []
    for path in sorted(folder.glob('*.json')):
        run = _read(path)
        if run.get('arm') not in ARMS:
            raise ValueError(f"{path}: arm {run.get('arm')!r} is none of {', '.join(ARMS)}.")
        card = Path(cards_root) / f"{ARCH}.{run['tag']}" if cards_root is not None else None
        if card is not None and (card / 'eval_results.json').is_file():
            records = _read(card / 'eval_results.json')
            if {r.get('weights_sha256') for r in records} != {run['weights_sha256']}:
                raise ValueError(f'{card} holds other weights than the record {path}: publish the run again '
                                 '(`python -m experiments.digits_finetune publish`) or remove the card.')
            run = dict(run, records=records, card=card.name)
        runs.append(run)
    return runs


def arm_rows(runs: Sequence[Mapping[str, Any]], threat: str) -> Dict[str, Optional[Dict[str, Any]]]:
    """{arm: row or None} under `threat`, aggregated over seeds, in the shape of a leaderboard row: `clean` and
    `robust` ({protocol label: stat}; a stat holds mean, sd, n_seeds, n_examples, wilson95, values), `seeds`,
    `repos` (cards, or records where a run has no card), `train_seconds` and `process_cpu_seconds` (mean and sd of
    the training time and of the training process's CPU time)."""
    values: Dict[str, Dict[str, List[Tuple[float, int, str, int]]]] = defaultdict(lambda: defaultdict(list))
    seconds: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: Dict[str, List[int]] = defaultdict(list)
    for run in runs:
        name = run.get('card') or run['run']
        for record in run['records']:
            if record['threat_model']['id'] != threat:
                continue
            for p in record_protocols(record):
                values[run['arm']][protocol_label(p)].append((p['value'], p['n_examples'], name, run['seed']))
        for key in ('train_seconds', 'process_cpu_seconds'):
            seconds[run['arm']][key].append(run[key])
        seeds[run['arm']].append(run['seed'])
    rows: Dict[str, Optional[Dict[str, Any]]] = {}
    for arm in ARMS:
        if not values.get(arm):
            rows[arm] = None
            continue
        stats = {label: seed_stat([v for v, *_ in got], got[0][1], [r for _, _, r, _ in got], [s for *_, s in got])
                 for label, got in values[arm].items()}
        clean = next(s for label, s in stats.items() if label.startswith('clean'))
        rows[arm] = dict(clean=clean, robust={k: s for k, s in stats.items() if not k.startswith('clean')},
                         seeds=sorted(seeds[arm]), repos=sorted(clean['repos']),
                         **{k: dict(mean=statistics.fmean(v), sd=statistics.stdev(v) if len(v) > 1 else None)
                            for k, v in seconds[arm].items()})
    return rows


def _worst_case(row: Mapping[str, Any]) -> Optional[str]:
    """The protocol that decides: the per-image worst case over every attack, on the most test images."""
    labels = [k for k in row['robust'] if k.startswith('worst case of')] or list(row['robust'])
    return max(labels, key=lambda k: row['robust'][k]['n_examples']) if labels else None


def compare(arms: Mapping[str, Optional[Mapping[str, Any]]], base: str, claim: str, where: str,
            protocol: Optional[str]) -> Tuple[str, str]:
    """(verdict, sentence): does the other arm of `arms` beat `base` in robust accuracy under `protocol`? The
    study's rule (`experiments.claims.compare_arms`), so this page and docs/claims.md judge alike."""
    from experiments.claims import compare_arms
    found = compare_arms(arms, base, claim, where, protocol)
    return found.verdict, found.sentence


def _cell(stat: Optional[Mapping[str, Any]], scale: float = 100.0, digits: int = 1) -> str:
    if not stat:
        return '–'
    sd = f" ± {scale * stat['sd']:.{digits}f}" if stat['sd'] is not None else ''
    return f"{scale * stat['mean']:.{digits}f}{sd}"


def _attack_cell(row: Optional[Mapping[str, Any]], attack: str) -> str:
    if row is None:
        return '–'
    found = [s for k, s in row['robust'].items() if k.rsplit(', n=', 1)[0] == attack]
    return _cell(max(found, key=lambda s: s['n_examples'])) if found else '–'


def finetune_markdown(runs: Sequence[Mapping[str, Any]], backbones: Mapping[str, str]) -> str:
    """The generated block of the docs page: one table (every arm, accuracies in % over its seeds, training wall
    time) and one verdict sentence per claim and threat model. `backbones`: {'robust' / 'standard': the published
    `<arch>.<tag>` each arm of that kind started from}."""
    if not runs:
        return '_No run of the transfer experiment is recorded yet._'
    rows = {t: arm_rows(runs, t) for t in THREATS}
    main, small = rows[THREATS[0]], rows[THREATS[1]]
    some = next(r for r in main.values() if r is not None)
    n = some['clean']['n_examples']
    lines = ['| arm | backbone | trained | seeds | clean | PGD-20 | APGD-CE + APGD-T | robust, eps 0.1 | '
             'robust, eps 0.05 | training time (min) | process CPU time (min) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for arm, spec in ARMS.items():
        row = main[arm]
        backbone = f"`{backbones.get(spec.backbone, spec.backbone)}`" if spec.backbone else 'none (scratch)'
        if row is None:
            lines.append(f'| `{arm}` | {backbone} | {spec.what} | 0 | – | – | – | – | – | – | – |')
            continue
        robust_small = small[arm]['robust'].get(_worst_case(small[arm])) if small[arm] else None
        lines.append(
            f"| `{arm}` | {backbone} | {spec.what} | {len(row['seeds'])} | {_cell(row['clean'])} | "
            f"{_attack_cell(row, 'pgd-20')} | {_attack_cell(row, 'apgd-ce+apgd-t')} | "
            f"**{_cell(row['robust'].get(_worst_case(row)))}** | {_cell(robust_small)} | "
            f"{_cell(row['train_seconds'], scale=1 / 60)} | {_cell(row['process_cpu_seconds'], scale=1 / 60)} |")
    published = sorted({r['card'] for r in runs if r.get('card')})
    cards = f"the model cards {', '.join(f'`{c}`' for c in published)} and " if published else ''
    lines += ['', f'Accuracy in % on all {n} test digits: mean ± sample standard deviation over seeds; one seed\'s '
                  'test-sample 95% interval is about ±4 points at 50%. Robust: the per-image worst case over PGD-20, '
                  'APGD-CE and APGD-T (PGD-20 and APGD-CE + APGD-T columns: at eps 0.1, each attack alone). Training '
                  'time: wall time as on the cards (each epoch\'s images over its logged throughput: no validation, '
                  'no start-up, not the backbone\'s own training), one thread on a 2-core CPU shared with other '
                  'jobs, so it varies with their load; process CPU time: the whole train_at.py process (start-up '
                  'and per-epoch validation included), less sensitive to the load. Generated by `python -m '
                  f'experiments.digits_finetune table` from {cards}the records in '
                  '`experiments/results/digits_finetune/`.', '']
    for threat in THREATS:
        for claim, arm, base in CLAIMS:
            pair = {base: rows[threat][base], arm: rows[threat][arm]}
            protocol = _worst_case(pair[arm]) if pair[arm] else None
            lines += [compare(pair, base, claim, f'lenet_wide on `{threat}`', protocol)[1], '']
    return '\n'.join(lines).rstrip('\n')
