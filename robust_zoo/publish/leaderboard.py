"""The results page's leaderboard, claim verdicts and Sparta transfer table, generated from the model cards.

Every number comes from a card's machine-readable metadata (its model-index results and `robust_zoo` block,
read with huggingface_hub's `ModelCard`), aggregated over seeds per (architecture, activation, frozen bank,
threat model). `write_leaderboard` replaces the marked blocks of a page (by default the docs' `results.md`, not
the README); `robust-zoo leaderboard` calls it.
"""
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..evaluation.autoattack import is_autoattack
from ..models._pretrained import MARKS, cards_dir
from ..settings import checkout_root
from ..threat_models import get_threat_model
from .plots import _pyplot
from .records import _protocol_label, _wilson
from .reference import reproductions_markdown

__all__ = [
    'CLAIMS', 'LEADERBOARD_END', 'LEADERBOARD_START', 'PUBLISHED_END', 'PUBLISHED_START', 'TRANSFER_END',
    'TRANSFER_START', 'claim_verdicts', 'deciding_protocol', 'headline_protocols', 'leaderboard',
    'leaderboard_markdown', 'published_markdown', 'results_page', 'transfer_experiments', 'transfer_markdown',
    'transfer_summary',
    'transfer_verdicts', 'write_leaderboard',
]

PathLike = Union[str, os.PathLike]
LEADERBOARD_START, LEADERBOARD_END = '<!-- leaderboard:start -->', '<!-- leaderboard:end -->'
TRANSFER_START, TRANSFER_END = '<!-- transfer:start -->', '<!-- transfer:end -->'
PUBLISHED_START, PUBLISHED_END = '<!-- published:start -->', '<!-- published:end -->'
REPRODUCTIONS_START, REPRODUCTIONS_END = '<!-- reproductions:start -->', '<!-- reproductions:end -->'
RESULTS_PAGE = 'docs/results.md'  # the page holding the generated blocks, relative to the checkout


def results_page() -> Optional[Path]:
    """The checkout's docs/results.md, where the generated tables live; None when installed (no docs there)."""
    root = checkout_root()
    return root / RESULTS_PAGE if root is not None else None


def _card_results(readme: Path) -> Dict[str, Any]:
    """A card's machine-readable data: the `robust_zoo` metadata block and the model-index results."""
    from huggingface_hub import ModelCard
    data = ModelCard.load(readme).data
    rz = data.to_dict().get('robust_zoo')
    if not isinstance(rz, dict) or not rz.get('architecture'):
        raise ValueError(f'{readme} has no robust_zoo metadata block: not a robust_zoo card (robust-zoo card).')
    results = []
    for r in data.eval_results or []:
        args = r.metric_args or {}
        if 'n_examples' not in args or 'attack' not in args:
            raise ValueError(f'{readme}: result {r.metric_name!r} lacks n_examples/attack in its metric args.')
        results.append(dict(kind='clean' if r.metric_type == 'accuracy' else 'robust', value=float(r.metric_value),
                            threat_model=args.get('threat_model'), attack=args['attack'], attacks=args.get('attacks'),
                            n_examples=int(args['n_examples']), norm=args.get('norm'), eps=args.get('eps')))
    return dict(rz, results=results, folder=readme.parent.name)


def _stat(values: Sequence[float], n: int, repos: Sequence[str] = (), seeds: Sequence[int] = ()) -> Dict[str, Any]:
    """Mean, sample sd and Wilson interval of one protocol's values over seeds; `repos` and `seeds` align with
    `values` (which card, which seed)."""
    mean = statistics.fmean(values)
    return dict(mean=mean, sd=statistics.stdev(values) if len(values) > 1 else None, min=min(values), max=max(values),
                values=list(values), repos=list(repos), seeds=list(seeds), n_seeds=len(values), n_examples=n,
                wilson95=_wilson(mean, n))


def leaderboard(cards_root: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Aggregate the cards under `cards_root` (default: the model-cards folder in use) per (architecture,
    activation, threat model), over seeds. The source is each card's README.md metadata (model-index + the
    `robust_zoo` block), read with `huggingface_hub.ModelCard.load`.

    A model whose Sparta units came frozen from another model's bank is its own row (`bank`: where from), and so
    is one trained with another attack (`train_attack`, e.g. the small net under N-FGSM and under PGD).
    Each row: base_architecture, activation, bank, threat_model, seeds, repos, `checks` ({repo: sanity checks
    that warned or failed}), `stopped_early` ({repo: (kept epoch, epochs run)}; both shown beneath the table),
    `overfit` ({repo: its card's catastrophic_overfitting record} for the runs whose shipped weights show it) and
    `robust_without_overfit` (the robust stats without those runs; None when there are none),
    `clean` (the clean accuracy at the largest n) and `robust` ({protocol label: stat}); a stat holds mean, sd
    (sample sd over seeds; None for one seed), min, max, values, n_seeds, n_examples and wilson95 (the Wilson
    interval at the mean and n: the test-sample uncertainty of one seed)."""
    root = Path(cards_root) if cards_root is not None else cards_dir()
    cards = [_card_results(readme) for readme in _card_readmes(root)]
    groups: Dict[Tuple[str, str, str, str, str], List[Dict[str, Any]]] = defaultdict(list)
    for card in cards:
        groups[(card.get('base_architecture') or card['architecture'], card['activation'], _bank_label(card),
                card['threat_model'], card.get('train_attack') or '')].append(card)
    rows = []
    for (base, activation, bank, threat, train_attack), members in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][3], kv[0][4], kv[0][1], kv[0][2])):
        overfit = {c['folder']: c['catastrophic_overfitting'] for c in sorted(members, key=lambda c: c['folder'])
                   if (c.get('catastrophic_overfitting') or {}).get('kept_weights_affected')}
        clean, robust = _aggregate(members, threat)
        rows.append(dict(
            base_architecture=base, activation=activation, bank=bank or None, threat_model=threat,
            train_attack=train_attack or None,
            seeds=sorted(c.get('seed') for c in members), repos=sorted(c['folder'] for c in members),
            checks={c['folder']: c['checks_not_passed'] for c in sorted(members, key=lambda c: c['folder'])
                    if c.get('checks_not_passed')},
            precision={c['folder']: c.get('precision') for c in sorted(members, key=lambda c: c['folder'])
                       if c.get('precision')},
            stopped_early={c['folder']: (c.get('kept_epoch'), c.get('epochs_run'))
                           for c in sorted(members, key=lambda c: c['folder']) if c.get('stopped_early')},
            overfit=overfit, clean=clean, robust=robust,
            robust_without_overfit=_aggregate([c for c in members if c['folder'] not in overfit], threat)[1]
            if overfit else None))
    return rows


def _card_readmes(root: Path) -> List[Path]:
    """The README.md of every card folder under `root`; a missing folder, or one without cards (a typo in --cards),
    is an error, never an empty leaderboard that would replace the README's tables."""
    if not root.is_dir():
        raise ValueError(f'cards folder {root} does not exist: pass the folder that holds the <arch>.<tag>/ card '
                         f'folders (--cards; default {cards_dir()}); nothing was written.')
    readmes = [p / 'README.md' for p in sorted(root.iterdir()) if not p.name.startswith('.')
               and (p / 'README.md').is_file()]
    if not readmes:
        raise ValueError(f'{root} holds no model card (no <arch>.<tag>/README.md): is --cards right? '
                         f'Cards are written by `robust-zoo card`; nothing was written.')
    return readmes


def _aggregate(members: Sequence[Mapping[str, Any]], threat: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """(clean stat at the largest n, {protocol label: robust stat}) over the cards `members`."""
    clean: Dict[int, List[Tuple[float, str, int]]] = defaultdict(list)  # each value with its card's repo and seed
    robust: Dict[Tuple[str, int], List[Tuple[float, str, int]]] = defaultdict(list)
    labels: Dict[Tuple[str, int], str] = {}
    for card in members:
        for r in card['results']:
            if r['threat_model'] not in (None, threat):
                continue
            if r['kind'] == 'clean':
                clean[r['n_examples']].append((r['value'], card['folder'], card.get('seed')))
            else:
                key = (r['attack'], r['n_examples'])
                robust[key].append((r['value'], card['folder'], card.get('seed')))
                labels[key] = _protocol_label(dict(r, kind='robust'))
    n_clean = max(clean) if clean else None
    def stat(pairs, n):
        return _stat([v for v, _, _ in pairs], n, [repo for _, repo, _ in pairs], [seed for _, _, seed in pairs])
    return (stat(clean[n_clean], n_clean) if n_clean else None,
            {labels[k]: stat(v, k[1]) for k, v in sorted(robust.items(), key=lambda kv: (
                kv[0][0] == 'worst-case', kv[0][1], kv[0][0]))})


def _bank_label(card: Mapping[str, Any]) -> str:
    """'' for a model that trained its own activations, else where its frozen Sparta bank comes from."""
    bank = card.get('sparta_bank')
    if not isinstance(bank, dict) or not bank.get('frozen', True):
        return ''
    return f"{bank.get('source_model')} on {bank.get('source_dataset')}"


def _several_attacks(rows: Sequence[Mapping[str, Any]]) -> set:
    """The (architecture, threat model) pairs whose rows were trained with more than one attack."""
    seen: Dict[Tuple[str, str], set] = defaultdict(set)
    for r in rows:
        seen[(r['base_architecture'], r['threat_model'])].add(r.get('train_attack'))
    return {k for k, v in seen.items() if len(v) > 1}


def _arch_cell(row: Mapping[str, Any], several: set) -> str:
    """The architecture, with its training attack where the same architecture was also trained with another."""
    if (row['base_architecture'], row['threat_model']) in several:
        return f"{row['base_architecture']} ({row.get('train_attack')} training)"
    return row['base_architecture']


def _activation_cell(row: Mapping[str, Any]) -> str:
    return f"`{row['activation']}`" + (f" (frozen bank: {row['bank']})" if row.get('bank') else '')


def _marks(row: Mapping[str, Any]) -> str:
    """' (!)', ' (e)', ' (co)': the notes beneath the table that a leaderboard row is read with."""
    return ''.join(f' {mark}' for mark, row_key, _ in MARKS.values() if row.get(row_key))


def _fmt_stat(s: Optional[Mapping[str, Any]]) -> str:
    if not s:
        return '–'
    spread = f" ± {100 * s['sd']:.1f}" if s['sd'] is not None else ''
    lo, hi = s['wilson95']
    return f"{100 * s['mean']:.1f}{spread} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _seeds_note(stat: Optional[Mapping[str, Any]], row: Mapping[str, Any]) -> str:
    """' (seed 0)' where a cell comes from fewer seeds than its row has (e.g. APGD ran on seed 0 only), else ''."""
    return f' ({_seed_list(stat)})' if stat and stat['n_seeds'] < len(row['seeds']) else ''


def _attack_of(label: str) -> str:
    return label.rsplit(', n=', 1)[0]


def _attack_rank(attack: str) -> Tuple[bool, bool]:
    """The sort key that orders attacks everywhere (columns, bars, the (!) note, the verdicts): the weaker ones
    (PGD) first, then AutoAttack's subsets (APGD), then the whole AutoAttack, whichever ran on more images."""
    return is_autoattack(attack), attack.startswith('autoattack-')


def _attack_order(attacks: Iterable[str]) -> List[str]:
    """The attacks once each, as first seen within a rank (`_attack_rank`)."""
    return sorted(dict.fromkeys(attacks), key=_attack_rank)


def headline_protocols(row: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    """{attack: stat} of a leaderboard row, each attack at its largest number of test images: the table's cells
    (a zoo run's own final PGD-20 on 1,000 images stays in its card beside PGD-20 on all 10,000)."""
    best: Dict[str, Mapping[str, Any]] = {}
    for label, stat in row['robust'].items():
        attack = _attack_of(label)
        if attack not in best or stat['n_examples'] > best[attack]['n_examples']:
            best[attack] = stat
    return best


def _stronger_records(rows: Sequence[Mapping[str, Any]], repo: str) -> List[str]:
    """What each stronger attack (APGD, AutoAttack) found on the card `repo`, beside the other attacks' numbers on
    the same test images, e.g. 'apgd-ce+apgd-t on 1000 test images: 72.1, against pgd-20 72.9': the (!) note's
    answer to "does a stronger attack confirm it?" ([] when none ran)."""
    values: Dict[Tuple[str, int], float] = {}
    for r in rows:
        for label, stat in r['robust'].items():
            if repo in stat.get('repos', ()):
                values[(_attack_of(label), stat['n_examples'])] = stat['values'][stat['repos'].index(repo)]
    out = []
    for (attack, n), value in sorted(values.items(), key=lambda kv: _attack_rank(kv[0][0])):
        if not is_autoattack(attack):
            continue
        weaker = [f'{a} {100 * v:.1f}' for (a, m), v in values.items() if m == n and not is_autoattack(a)]
        out.append(f'{attack} on {n} test images: {100 * value:.1f}' + (f", against {', '.join(weaker)}" if weaker else ''))
    return out


def _precision_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """The note naming the models trained in another precision than the rest ('' when all share one): a precision
    most models share is "every other model", so the note names only the exceptions."""
    precisions: Dict[str, List[str]] = defaultdict(list)
    for r in rows:
        for repo, precision in (r.get('precision') or {}).items():
            precisions[precision].append(repo)
    if len(precisions) < 2:
        return ''
    counts = sorted((len(repos) for repos in precisions.values()), reverse=True)
    common = max(precisions, key=lambda p: len(precisions[p])) if counts[0] > counts[1] else None
    return ('Training precision differs between models (the machine decided: `train_at.py --amp` trains in fp32 where '
            'bf16 is emulated; the budget is otherwise identical): ' + '; '.join(
                f"{precision}: " + ', '.join(f'`{repo}`' for repo in repos)
                for precision, repos in sorted(precisions.items()) if precision != common)
            + (f'; {common}: every other model ({len(precisions[common])})' if common else '') + '.')


def leaderboard_markdown(rows: Sequence[Mapping[str, Any]], image: Optional[str] = None) -> str:
    """The leaderboard rows as a markdown table (accuracies in %): one column per attack, at the largest n."""
    if not rows:
        return '_No published models yet._'
    cells_of = [headline_protocols(r) for r in rows]
    attacks = _attack_order(_attack_of(label) for r in rows for label in r['robust'])
    ns = {a: sorted({c[a]['n_examples'] for c in cells_of if a in c}) for a in attacks}
    clean_ns = sorted({r['clean']['n_examples'] for r in rows if r['clean']})
    clean_head = f"clean, n={clean_ns[0]}" if len(clean_ns) == 1 else 'clean'
    heads = [f'{a}, n={ns[a][0]}' if len(ns[a]) == 1 else a for a in attacks]
    lines = ['| architecture | activation | threat model | seeds | ' + ' | '.join([clean_head, *heads]) + ' |',
             '|' + '---|' * (5 + len(attacks))]
    flagged = {repo: checks for r in rows for repo, checks in (r.get('checks') or {}).items()}
    several = _several_attacks(rows)
    partial = False  # a cell from fewer seeds than its row
    for r, cells_here in zip(rows, cells_of):
        cells = [_arch_cell(r, several), _activation_cell(r) + _marks(r),
                 f"`{r['threat_model']}`", str(len(r['seeds'])),
                 _fmt_stat(r['clean']) + (f" (n={r['clean']['n_examples']})" if r['clean'] and len(clean_ns) > 1 else '')]
        partial = partial or any(_seeds_note(cells_here.get(a), r) for a in attacks)
        cells += [_fmt_stat(cells_here.get(a)) + _seeds_note(cells_here.get(a), r)
                  + (f" (n={cells_here[a]['n_examples']})" if a in cells_here and len(ns[a]) > 1 else '')
                  for a in attacks]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Accuracy in %: mean ± sample standard deviation over seeds (no ± for one seed), then [the 95% Wilson '
                  'interval at the mean and n test images]. Each attack is shown on the most test images it ran on '
                  '(each card also lists its smaller evaluations, e.g. a run\'s own final one on 1,000)'
              + ('; a cell measured on fewer seeds than its row names its seeds, e.g. (seed 0)' if partial else '')
              + '. Generated from the model cards in `model_cards/` by `robust-zoo leaderboard`.']
    if flagged:
        stronger = {repo: _stronger_records(rows, repo) for repo in flagged}
        lines += ['', '(!) A sanity check of the evaluator did not pass for ' + '; '.join(
            f"`{repo}` ({', '.join([*checks, *stronger[repo]])})" for repo, checks in flagged.items())
            + ': its robust accuracy may be overstated until a stronger attack (APGD, AutoAttack) confirms it'
            + ('; where one ran, its number is given beside the weaker attacks\' on the same test images'
               if any(stronger.values()) else '') + '; see the card.']
    stopped = {repo: kept for r in rows for repo, kept in (r.get('stopped_early') or {}).items()}
    if stopped:
        lines += ['', '(e) Training stopped early on catastrophic overfitting (validation robust accuracy fell below '
                      'half its best), and the best validation epoch was kept: ' + '; '.join(
                          f'`{repo}` (epoch {kept} of {ran} run, counted from 0)' for repo, (kept, ran) in stopped.items())
                  + '. These rows compare what the shared budget gave, not what the activation can reach.']
    note = _overfit_note(rows)
    if note:
        lines += ['', note]
    note = _precision_note(rows)
    if note:
        lines += ['', note]
    if image:
        lines += ['', f'![leaderboard]({image})']
    return '\n'.join(lines)


def _overfit_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """The note beneath a table on the runs whose shipped weights overfit catastrophically ('' if none)."""
    overfit = {repo: co for r in rows for repo, co in (r.get('overfit') or {}).items()}
    if not overfit:
        return ''
    return ('(co) Catastrophic overfitting (Wong et al. 2020) in the shipped weights of ' + '; '.join(
        f"`{repo}` (epoch {co['epoch']}: training attack accuracy {100 * co['train_adv_acc']:.1f}, validation "
        f"{100 * co['val_robust_acc']:.1f})" for repo, co in overfit.items())
        + f". The rule (`robust_zoo/training/overfitting.py`): a single-step training attack's accuracy more than "
          f"{100 * next(iter(overfit.values()))['gap_threshold']:.0f} points above validation PGD accuracy. Such runs "
          'stay in the rows (every seed counts); the verdicts are also given without them.')


def _series_label(name: str, cells: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plot legend entry: the series' attack and n, and its seeds where all its bars come from the same seeds and
    some row has more (the table's '(seed 0)'), since the title says bars are means over seeds."""
    present = [(cell[name], row) for cell, row in zip(cells, rows) if cell.get(name)]
    ns = sorted({stat['n_examples'] for stat, _ in present})
    label = f'{name}, n={ns[0]}' if len(ns) == 1 else f'{name}, n={ns[0]}-{ns[-1]}'
    seeds = {tuple(sorted(stat.get('seeds') or ())) for stat, _ in present}
    fewer = any(_seeds_note(stat, row) for stat, row in present)
    return label + f' ({_seed_list(present[0][0])})' if len(seeds) == 1 and fewer else label


def _plot_leaderboard(rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    groups = defaultdict(list)
    several = _several_attacks(rows)
    for r in rows:
        groups[(_arch_cell(r, several), r['threat_model'])].append(r)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(5.0, 1.1 * max(len(v) for v in groups.values())) + 3,
                                                      3 * len(groups)), squeeze=False)
    for ax, ((base, threat), members) in zip(axes[:, 0], sorted(groups.items())):
        stats = [dict(headline_protocols(r), clean=r['clean']) for r in members]  # {series: stat} per bar group
        series = ['clean', *_attack_order(_attack_of(k) for r in members for k in r['robust'])]
        width = 0.8 / len(series)
        overfit_shown = False
        for j, name in enumerate(series):
            label = _series_label(name, stats, members)
            for i, s in enumerate(stats):
                s = s.get(name)
                if not s:
                    continue
                x = i + (j - (len(series) - 1) / 2) * width
                ax.bar(x, s['mean'], width, yerr=s['sd'] or 0, capsize=2, color=f'C{j}', label=label)
                label = None  # one legend entry per series
                co = [repo in (members[i].get('overfit') or {}) for repo in s['repos']]
                ax.plot([x] * co.count(False), [v for v, c in zip(s['values'], co) if not c], 'k.', markersize=3)
                if any(co):
                    ax.plot([x] * co.count(True), [v for v, c in zip(s['values'], co) if c], 'rx', markersize=6,
                            label=None if overfit_shown else 'seed that overfit\ncatastrophically (co)')
                    overfit_shown = True
        ax.set_xticks(range(len(members)), [r['activation'] + (' (bank)' if r.get('bank') else '') + _marks(r)
                                            for r in members], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel('accuracy')
        ax.set_title(f'{base}, {threat}\nbars: mean over seeds, whiskers: sd, dots: seeds; marks as in the table',
                     fontsize=9)
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    from .._io import atomic_write
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))
    plt.close(fig)
    return out


# The seed papers' claims, tested at this project's scale: (sentence, activations claimed better, baseline).
CLAIMS = (
    ('SAT (Xie et al.): smooth activations beat ReLU', ('softplus', 'smoothrelu', 'silu', 'gelu', 'elu'), 'relu'),
    ("SAT sec. 3: ReLU's smooth backward alone helps", ('relu_smoothgrad',), 'relu'),
    ('PSSiLU beats ReLU (Dai et al.)', ('pssilu',), 'relu'),
    ('Sparta beats ReLU (Guo et al.)', ('sparta',), 'relu'),
    ('capped ReLU adds robustness (Sooksatra et al.)', ('capped_relu',), 'relu'),
)


def _difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> Tuple[float, float]:
    """(mean a - mean b, its standard error): seed spread where there are >= 2 seeds, else the binomial error of
    one seed's accuracy on n test images (a lower bound on the real uncertainty)."""
    def var(s):
        binom = s['mean'] * (1 - s['mean']) / s['n_examples']
        return max(binom, (s['sd'] ** 2) / s['n_seeds']) if s['sd'] is not None else binom
    return a['mean'] - b['mean'], math.sqrt(var(a) + var(b))


def claim_verdicts(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """One plain sentence per claim and architecture: agrees / disagrees when the robust-accuracy difference to
    ReLU (the table's strongest common protocol) is beyond 2 standard errors, else cannot tell."""
    out = []
    by_arch: Dict[Tuple[str, str], Dict[str, Mapping[str, Any]]] = defaultdict(dict)
    several = _several_attacks(rows)
    for r in rows:
        if not r.get('bank'):  # transferred banks have their own verdicts (transfer_verdicts)
            by_arch[(_arch_cell(r, several), r['threat_model'])][r['activation']] = r
    for (arch, threat), acts in sorted(by_arch.items()):
        for claim, better, base in CLAIMS:
            present = [a for a in better if a in acts]
            if base not in acts or not present:
                continue
            arms = [base, *present]
            protocol = deciding_protocol([acts[a] for a in arms])
            if protocol is None:
                continue
            verdict, parts, seeds = _versus({a: acts[a]['robust'][protocol] for a in arms}, present, base)
            flagged = [f'{a} (e)' for a in arms if acts[a].get('stopped_early')] + [
                f'{a} (!)' for a in arms if acts[a].get('checks')] + [f'{a} (co)' for a in arms if acts[a].get('overfit')]
            out.append(f'**{claim}** -- {arch} on `{threat}`: this scale {verdict} ({protocol}; robust accuracy vs '
                       f'{base}: {parts}; seeds {seeds}; 2 standard errors decide'
                       f'{_ONE_SEED if any(acts[a]["robust"][protocol]["n_seeds"] < 2 for a in arms) else ""}'
                       + (f'; read with the notes on {", ".join(flagged)} beneath the table' if flagged else '') + ').'
                       + _without_overfit({a: acts[a] for a in arms}, present, base, protocol)
                       + _under_stronger_attacks({a: acts[a] for a in arms}, present, base, protocol))
    return out


def deciding_protocol(rows: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """The robust protocol that decides a comparison of leaderboard `rows`: among those every row ran, the one with
    the most seeds in its thinnest row, then a worst case over several attacks, then the most test images (None
    when the rows share none). So PGD-20 on 3 seeds x 10,000 images decides, not APGD on seed 0 x 1,000."""
    common = [p for p in rows[0]['robust'] if all(p in r['robust'] for r in rows)] if rows else []
    if not common:
        return None
    return max(reversed(common), key=lambda p: (min(r['robust'][p]['n_seeds'] for r in rows),
                                                _attack_of(p).startswith('worst case of'),
                                                rows[0]['robust'][p]['n_examples']))


def _under_stronger_attacks(rows: Mapping[str, Mapping[str, Any]], present: Sequence[str], base: str,
                            protocol: str) -> str:
    """The comparison again under each stronger attack (APGD, AutoAttack) that `base` and at least one claimed arm
    ran, usually on fewer seeds and test images: the verdict stays with `protocol`; these say whether a stronger
    attack changes the picture ('' when there is none). `rows`: {arm: leaderboard row}."""
    out = ''
    cells = {a: headline_protocols(rows[a]) for a in [base, *present]}
    for attack in _attack_order(k for k in cells[base] if is_autoattack(k) and k != _attack_of(protocol)):
        kept = [a for a in present if attack in cells[a]]
        if not kept:
            continue
        stats = {a: cells[a][attack] for a in [base, *kept]}
        verdict, parts, _ = _versus(stats, kept, base)
        ns = sorted({s['n_examples'] for s in stats.values()})
        seeds = ', '.join(f"{a}: {_seed_list(s)}" for a, s in stats.items())
        one = any(s['n_seeds'] < 2 for s in stats.values())
        out += (f" Under the stronger {attack} (n={', '.join(map(str, ns))}; {seeds}"
                f"{'; test-sample error only' if one else ''}): this scale {verdict} ({parts}).")
    return out


def _seed_list(stat: Mapping[str, Any]) -> str:
    """'seed 0', 'seeds 0, 1', or '2 seeds' where the seeds are unknown."""
    seeds = stat.get('seeds') or []
    if len(seeds) != stat['n_seeds'] or None in seeds:
        return f"{stat['n_seeds']} seed{'s' if stat['n_seeds'] > 1 else ''}"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"


def _verdict_of(signs: Sequence[int]) -> str:
    """A claim's verdict from the signs (+1 better, -1 worse, 0 within 2 standard errors) of its activations."""
    if all(x == 1 for x in signs):
        return 'agrees'
    if all(x == -1 for x in signs):
        return 'disagrees'
    if any(x == -1 for x in signs) and not any(x == 1 for x in signs):
        return 'disagrees in part'
    if any(x == 1 for x in signs) and not any(x == -1 for x in signs):
        return 'agrees in part, cannot tell for the rest'
    return 'is mixed' if any(x != 0 for x in signs) else 'cannot tell'


def _versus(stats: Mapping[str, Mapping[str, Any]], present: Sequence[str], base: str) -> Tuple[str, str, str]:
    """(verdict, 'a +x ± y points; ...', 'base: n, a: n') of the activations `present` against `base`."""
    parts, signs = [], []
    for a in present:
        sign, text = _sign(stats[a], stats[base])
        signs.append(sign)
        parts.append(f'{a} {text}')
    seeds = ', '.join(f"{a}: {stats[a]['n_seeds']}" for a in [base, *present])
    return _verdict_of(signs), '; '.join(parts), seeds


def _without_head(rows: Sequence[Mapping[str, Any]]) -> str:
    """' Without the runs that overfit catastrophically (`repo`, ...)', or '' when none of `rows` has one."""
    repos = [repo for row in rows for repo in (row.get('overfit') or {})]
    return f" Without the runs that overfit catastrophically ({', '.join(f'`{r}`' for r in repos)})" if repos else ''


def _healthy_stat(row: Mapping[str, Any], protocol: str) -> Optional[Mapping[str, Any]]:
    """A row's robust stat under `protocol` without its runs that overfit catastrophically (None if none is left)."""
    return (row['robust_without_overfit'] if row.get('overfit') else row['robust']).get(protocol)


def _without_overfit(rows: Mapping[str, Mapping[str, Any]], present: Sequence[str], base: str, protocol: str) -> str:
    """The sentence that repeats a comparison without the runs whose shipped weights overfit catastrophically ('' when
    no arm has one). `rows`: {arm: leaderboard row}."""
    head = _without_head([rows[a] for a in [base, *present]])
    if not head:
        return ''
    stats = {a: _healthy_stat(rows[a], protocol) for a in [base, *present]}
    if stats[base] is None:
        return f'{head} no {base} run remains.'
    kept = [a for a in present if stats[a] is not None]
    if not kept:
        return f"{head} no {', '.join(present)} run remains: every one overfit."
    verdict, parts, seeds = _versus(stats, kept, base)
    one = any(stats[a]['n_seeds'] < 2 for a in [base, *kept])
    return f'{head}: this scale {verdict} ({parts}; seeds {seeds}{_ONE_SEED if one else ""}).'


_ONE_SEED = ('; with one seed the error is only the test-sample error, not the seed-to-seed spread, so this is '
             'provisional')


def _sign(a: Mapping[str, Any], b: Mapping[str, Any]) -> Tuple[int, str]:
    """(+1 / -1 / 0 when a - b is beyond / within 2 standard errors, 'diff ± se points')."""
    diff, se = _difference(a, b)
    return (0 if abs(diff) <= 2 * se else (1 if diff > 0 else -1)), f'{100 * diff:+.1f} ± {100 * se:.1f} points'


def transfer_experiments(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The Sparta transfer experiments among the leaderboard rows: for every (target architecture, threat model,
    bank source) with a frozen-bank row, that row with the same target's ReLU and from-scratch Sparta rows, and
    the strongest robust protocol all of them share."""
    out = []
    for r in rows:
        if not r.get('bank') or r['activation'] != 'sparta':
            continue
        same = {x['activation']: x for x in rows if not x.get('bank') and x['base_architecture'] == r['base_architecture']
                and x['threat_model'] == r['threat_model'] and x.get('train_attack') == r.get('train_attack')
                and x['activation'] in ('relu', 'sparta')}
        arms = [a for a in (same.get('relu'), same.get('sparta'), r) if a]
        protocol = deciding_protocol(arms)
        source_dataset = r['bank'].rpartition(' on ')[2]
        target_dataset = get_threat_model(r['threat_model']).dataset
        out.append(dict(target=r['base_architecture'], threat_model=r['threat_model'], bank=r['bank'],
                        across='datasets' if target_dataset != source_dataset else 'CNNs',
                        relu=same.get('relu'), scratch=same.get('sparta'), transferred=r,
                        protocol=protocol))
    return out


def transfer_markdown(experiments: Sequence[Mapping[str, Any]]) -> str:
    """The transfer experiments as one markdown table (accuracies in %)."""
    if not experiments:
        return '_No transferred Sparta models published yet._'
    lines = ['| transfer across | target | threat model | arm | seeds | clean | robust | protocol |',
             '|---|---|---|---|---|---|---|---|']
    for e in experiments:
        for label, row in (('ReLU', e['relu']), ('Sparta from scratch', e['scratch']),
                           (f"Sparta, frozen bank from {e['bank']}", e['transferred'])):
            if row is None:
                lines.append(f"| {e['across']} | {e['target']} | `{e['threat_model']}` | {label} | 0 | – | – | |")
                continue
            robust = row['robust'].get(e['protocol']) if e['protocol'] else None
            label += ' (co)' if row.get('overfit') else ''
            lines.append(f"| {e['across']} | {e['target']} | `{e['threat_model']}` | {label} | {len(row['seeds'])} | "
                         f"{_fmt_stat(row['clean'])} | {_fmt_stat(robust)} | {e['protocol'] or '–'} |")
    lines += ['', 'Accuracy in %: mean ± sample standard deviation over seeds (no ± for one seed), then [the 95% Wilson '
                  'interval at the mean and n test images]. Seed s of a transferred model loads the bank of seed s of '
                  'its source. Generated from the model cards in `model_cards/` by `robust-zoo leaderboard`.']
    rows = [row for e in experiments for row in (e['relu'], e['scratch'], e['transferred']) if row]
    for note in (_overfit_note(rows), _precision_note(rows)):
        lines += ['', note] if note else []
    return '\n'.join(lines)


def transfer_verdicts(experiments: Sequence[Mapping[str, Any]]) -> List[str]:
    """Two plain sentences per experiment: does the frozen bank beat ReLU (the paper's claim), and how does it
    compare with Sparta trained from scratch in the target; 2 standard errors decide, as for the claims."""
    out = []
    for e in experiments:
        where = f"{e['target']} on `{e['threat_model']}`, bank from {e['bank']}"
        if e['protocol'] is None:
            out.append(f"**Sparta transfers across {e['across']} (Guo et al.)** -- {where}: cannot tell yet (the arms "
                       'share no robust protocol).')
            continue
        t = e['transferred']['robust'][e['protocol']]
        for base, claim, words in (
                ('relu', f"Sparta transfers across {e['across']} and beats ReLU (Guo et al.)",
                 {1: 'agrees', -1: 'disagrees', 0: 'cannot tell'}),
                ('scratch', 'a frozen transferred Sparta bank vs Sparta trained from scratch in the target',
                 {1: 'the transferred bank is better', -1: 'the transferred bank is worse',
                  0: 'cannot tell them apart'})):
            if e[base] is None or e['protocol'] not in e[base]['robust']:
                out.append(f'**{claim}** -- {where}: cannot tell yet (no {base} model published).')
                continue
            b = e[base]['robust'][e['protocol']]
            sign, text = _sign(t, b)
            says = 'says ' if base == 'scratch' else ''
            versus = 'ReLU' if base == 'relu' else 'from scratch'
            sentence = (f"**{claim}** -- {where}: this scale {says}{words[sign]} ({e['protocol']}; robust accuracy vs "
                        f"{versus}: {text}; seeds {t['n_seeds']} vs {b['n_seeds']}; 2 standard errors decide"
                        f"{_ONE_SEED if min(t['n_seeds'], b['n_seeds']) < 2 else ''}).")
            head = _without_head([e['transferred'], e[base]])
            if head:
                t2, b2 = _healthy_stat(e['transferred'], e['protocol']), _healthy_stat(e[base], e['protocol'])
                sentence += head
                if t2 is None or b2 is None:
                    sentence += ' no run of one arm remains.'
                else:
                    sign, text = _sign(t2, b2)
                    sentence += (f": this scale {says}{words[sign]} (robust accuracy vs {versus}: {text}; seeds "
                                 f"{t2['n_seeds']} vs {b2['n_seeds']}{_ONE_SEED if min(t2['n_seeds'], b2['n_seeds']) < 2 else ''}).")
            out.append(sentence)
    return out


def transfer_summary(experiments: Sequence[Mapping[str, Any]]) -> str:
    """One plain sentence over every transfer experiment: in how many does the frozen bank beat ReLU, by the same
    rule as each experiment's verdict (all seeds, 2 standard errors); '' while none can be compared."""
    signs = {}
    for e in experiments:
        if e['protocol'] and e['relu'] is not None and e['protocol'] in e['relu']['robust']:
            signs[f"{e['target']} on `{e['threat_model']}`"] = _sign(e['transferred']['robust'][e['protocol']],
                                                                     e['relu']['robust'][e['protocol']])[0]
    if not signs:
        return ''
    words = {1: 'beats ReLU', -1: 'is worse than ReLU', 0: 'cannot tell'}
    wins = sum(v == 1 for v in signs.values())
    return (f"**In short: a frozen transferred Sparta bank beats ReLU in {wins} of the {len(signs)} transfer "
            f"experiments at this scale** ({'; '.join(f'{k}: {words[v]}' for k, v in signs.items())}; every seed, "
            '2 standard errors decide; each experiment\'s sentence below gives the numbers, and the comparison '
            'without runs that overfit catastrophically where there are any).')


def published_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence listing every published model by architecture and tags (the results page's list), so the
    list never lags the cards."""
    tags: Dict[str, List[str]] = defaultdict(list)
    for r in rows:
        for repo in r['repos']:
            arch, tag = repo.split('.', 1)
            tags[arch].append(tag)
    if not tags:
        return 'No published models.'
    n = sum(len(v) for v in tags.values())
    return (f'{n} models, named `robust_zoo/<architecture>.<tag>`: ' + '; '.join(
        f"`{arch}` ({', '.join(sorted(v))})" for arch, v in sorted(tags.items())) + '.')


def _replace_block(text: str, start: str, end: str, body: str, where: Path) -> str:
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f'{where} needs one {start} line followed by one {end} line where the table goes.')
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f'{head}{start}\n{body}\n{end}{tail}'


def write_leaderboard(readme_path: PathLike, png_path: Optional[PathLike] = None,
                      cards_root: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Replace the text between `<!-- leaderboard:start -->` and `<!-- leaderboard:end -->` in `readme_path`
    with the leaderboard table of the cards and the claims' verdicts, and draw it to `png_path` (linked from the
    table). If the README also has `<!-- transfer:start -->` / `<!-- transfer:end -->`, the Sparta transfer table
    and its verdicts go there, and `<!-- published:start -->` / `<!-- published:end -->` get the list of published
    models (`published_markdown`). Returns the rows."""
    from .._io import atomic_write_text
    readme = Path(readme_path)
    if not readme.is_file():
        raise ValueError(f'{readme} does not exist: --readme takes the README whose {LEADERBOARD_START} block the '
                         'table replaces.')
    text = readme.read_text()
    _replace_block(text, LEADERBOARD_START, LEADERBOARD_END, '', readme)  # check the markers before any work
    rows = leaderboard(cards_root)
    image = None
    if png_path is not None and rows:
        png = _plot_leaderboard(rows, Path(png_path))
        image = os.path.relpath(png.resolve(), readme.resolve().parent)
    verdicts = claim_verdicts(rows)
    body = leaderboard_markdown(rows, image) + ('\n\n' + '\n\n'.join(verdicts) if verdicts else '')
    text = _replace_block(text, LEADERBOARD_START, LEADERBOARD_END, body, readme)
    if PUBLISHED_START in text or PUBLISHED_END in text:
        text = _replace_block(text, PUBLISHED_START, PUBLISHED_END, published_markdown(rows), readme)
    if REPRODUCTIONS_START in text or REPRODUCTIONS_END in text:
        root = Path(cards_root) if cards_root is not None else cards_dir()
        cards = [dict(_card_results(r), name=r.parent.name) for r in _card_readmes(root)]
        text = _replace_block(text, REPRODUCTIONS_START, REPRODUCTIONS_END,
                              reproductions_markdown(cards) or 'No reproduction is published yet.', readme)
    if TRANSFER_START in text or TRANSFER_END in text:
        experiments = transfer_experiments(rows)
        verdicts = [v for v in (transfer_summary(experiments), *transfer_verdicts(experiments)) if v]
        body = transfer_markdown(experiments) + ('\n\n' + '\n\n'.join(verdicts) if verdicts else '')
        text = _replace_block(text, TRANSFER_START, TRANSFER_END, body, readme)
    atomic_write_text(readme, text)
    return rows

