"""Leaderboard rows rendered: table cells, the notes beneath a table, the markdown table and its plot.

The building blocks (`format_stat`, `seed_list`, `attack_order`, ...) are public so that other tables of the same
rows (a study's own comparisons) read like the leaderboard's.
"""
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .._io import atomic_write
from ..evaluation.autoattack import is_autoattack
from ..models._pretrained import MARKS
from .plots import _pyplot

__all__ = [
    'architecture_cell', 'attack_of', 'attack_order', 'format_stat', 'headline_protocols', 'leaderboard_markdown',
    'overfit_note', 'plot_leaderboard', 'precision_note', 'seed_list', 'several_attacks',
]


def several_attacks(rows: Sequence[Mapping[str, Any]]) -> set:
    """The (architecture, threat model) pairs whose rows were trained with more than one attack, and the
    (architecture, threat model, attack) triples whose rows were trained under more than one recipe."""
    attacks: Dict[Tuple[str, str], set] = defaultdict(set)
    recipes: Dict[Tuple[str, str, Any], set] = defaultdict(set)
    for r in rows:
        attacks[(r['base_architecture'], r['threat_model'])].add(r.get('train_attack'))
        recipes[(r['base_architecture'], r['threat_model'], r.get('train_attack'))].add(r.get('recipe'))
    return {k for k, v in attacks.items() if len(v) > 1} | {k for k, v in recipes.items() if len(v) > 1}


def architecture_cell(row: Mapping[str, Any], several: set) -> str:
    """The architecture, with its training attack where the same architecture was also trained with another, and
    its recipe's name where it was also trained under another recipe with the same attack."""
    arch, threat, attack = row['base_architecture'], row['threat_model'], row.get('train_attack')
    parts = [f'{attack} training'] if (arch, threat) in several else []
    if (arch, threat, attack) in several:
        parts.append(f"`{Path(row['recipe']).stem}`" if row.get('recipe') else 'no recipe')
    return f"{arch} ({', '.join(parts)})" if parts else arch


def _activation_cell(row: Mapping[str, Any]) -> str:
    return f"`{row['activation']}`" + (f" (frozen bank: {row['bank']})" if row.get('bank') else '')


def _marks(row: Mapping[str, Any]) -> str:
    """' (!)', ' (e)', ' (co)': the notes beneath the table that a leaderboard row is read with."""
    return ''.join(f' {mark}' for mark, row_key, _ in MARKS.values() if row.get(row_key))


def format_stat(s: Optional[Mapping[str, Any]]) -> str:
    """A stat as a cell in %: 'mean ± sd [Wilson 95% at the mean and n]' (no ± for one seed; '–' for none)."""
    if not s:
        return '–'
    spread = f" ± {100 * s['sd']:.1f}" if s['sd'] is not None else ''
    lo, hi = s['wilson95']
    return f"{100 * s['mean']:.1f}{spread} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _seeds_note(stat: Optional[Mapping[str, Any]], row: Mapping[str, Any]) -> str:
    """' (seed 0)' where a cell comes from fewer seeds than its row has (e.g. APGD ran on seed 0 only), else ''."""
    return f' ({seed_list(stat)})' if stat and stat['n_seeds'] < len(row['seeds']) else ''


def seed_list(stat: Mapping[str, Any]) -> str:
    """'seed 0', 'seeds 0, 1', or '2 seeds' where the seeds are unknown."""
    seeds = stat.get('seeds') or []
    if len(seeds) != stat['n_seeds'] or None in seeds:
        return f"{stat['n_seeds']} seed{'s' if stat['n_seeds'] > 1 else ''}"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"


def attack_of(label: str) -> str:
    """The attack of a protocol label ('pgd-20, n=10000' -> 'pgd-20')."""
    return label.rsplit(', n=', 1)[0]


def _attack_rank(attack: str) -> Tuple[bool, bool]:
    """The sort key that orders attacks everywhere (columns, bars, the (!) note, the verdicts): the weaker ones
    (PGD) first, then AutoAttack's subsets (APGD), then the whole AutoAttack, whichever ran on more images."""
    return is_autoattack(attack), attack.startswith('autoattack-')


def attack_order(attacks: Iterable[str]) -> List[str]:
    """The attacks once each, as first seen within a rank (`_attack_rank`)."""
    return sorted(dict.fromkeys(attacks), key=_attack_rank)


def headline_protocols(row: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    """{attack: stat} of a leaderboard row, each attack at its largest number of test images: the table's cells
    (a zoo run's own final PGD-20 on 1,000 images stays in its card beside PGD-20 on all 10,000)."""
    best: Dict[str, Mapping[str, Any]] = {}
    for label, stat in row['robust'].items():
        attack = attack_of(label)
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
                values[(attack_of(label), stat['n_examples'])] = stat['values'][stat['repos'].index(repo)]
    out = []
    for (attack, n), value in sorted(values.items(), key=lambda kv: _attack_rank(kv[0][0])):
        if not is_autoattack(attack):
            continue
        weaker = [f'{a} {100 * v:.1f}' for (a, m), v in values.items() if m == n and not is_autoattack(a)]
        out.append(f'{attack} on {n} test images: {100 * value:.1f}'
                   + (f", against {', '.join(weaker)}" if weaker else ''))
    return out


def precision_note(rows: Sequence[Mapping[str, Any]]) -> str:
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
    attacks = attack_order(attack_of(label) for r in rows for label in r['robust'])
    ns = {a: sorted({c[a]['n_examples'] for c in cells_of if a in c}) for a in attacks}
    clean_ns = sorted({r['clean']['n_examples'] for r in rows if r['clean']})
    clean_head = f"clean, n={clean_ns[0]}" if len(clean_ns) == 1 else 'clean'
    heads = [f'{a}, n={ns[a][0]}' if len(ns[a]) == 1 else a for a in attacks]
    lines = ['| architecture | activation | threat model | seeds | ' + ' | '.join([clean_head, *heads]) + ' |',
             '|' + '---|' * (5 + len(attacks))]
    flagged = {repo: checks for r in rows for repo, checks in (r.get('checks') or {}).items()}
    several = several_attacks(rows)
    partial = False  # a cell from fewer seeds than its row
    for r, cells_here in zip(rows, cells_of):
        cells = [architecture_cell(r, several), _activation_cell(r) + _marks(r),
                 f"`{r['threat_model']}`", str(len(r['seeds'])),
                 format_stat(r['clean'])
                 + (f" (n={r['clean']['n_examples']})" if r['clean'] and len(clean_ns) > 1 else '')]
        partial = partial or any(_seeds_note(cells_here.get(a), r) for a in attacks)
        cells += [format_stat(cells_here.get(a)) + _seeds_note(cells_here.get(a), r)
                  + (f" (n={cells_here[a]['n_examples']})" if a in cells_here and len(ns[a]) > 1 else '')
                  for a in attacks]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Accuracy in %: mean ± sample standard deviation over seeds (no ± for one seed), then [the 95% '
                  'Wilson interval at the mean and n test images]. Each attack is shown on the most test images it '
                  'ran on (each card also lists its smaller evaluations, e.g. a run\'s own final one on 1,000)'
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
                          f'`{repo}` (epoch {kept} of {ran} run, counted from 0)'
                          for repo, (kept, ran) in stopped.items())
                  + '. These rows compare what the shared budget gave, not what the activation can reach.']
    note = overfit_note(rows)
    if note:
        lines += ['', note]
    note = precision_note(rows)
    if note:
        lines += ['', note]
    if image:
        lines += ['', f'![leaderboard]({image})']
    return '\n'.join(lines)


def overfit_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """The note beneath a table on the runs whose shipped weights overfit catastrophically ('' if none)."""
    overfit = {repo: co for r in rows for repo, co in (r.get('overfit') or {}).items()}
    if not overfit:
        return ''
    return ('(co) Catastrophic overfitting (Wong et al. 2020) in the shipped weights of ' + '; '.join(
        f"`{repo}` (epoch {co['epoch']}: training attack accuracy {100 * co['train_adv_acc']:.1f}, validation "
        f"{100 * co['val_robust_acc']:.1f})" for repo, co in overfit.items())
        + f". The rule (`robust_zoo/training/overfitting.py`): a single-step training attack's accuracy more than "
          f"{100 * next(iter(overfit.values()))['gap_threshold']:.0f} points above validation PGD accuracy. Such runs "
          'stay in the rows (every seed counts).')


def _series_label(name: str, cells: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plot legend entry: the series' attack and n, and its seeds where all its bars come from the same seeds and
    some row has more (the table's '(seed 0)'), since the title says bars are means over seeds."""
    present = [(cell[name], row) for cell, row in zip(cells, rows) if cell.get(name)]
    ns = sorted({stat['n_examples'] for stat, _ in present})
    label = f'{name}, n={ns[0]}' if len(ns) == 1 else f'{name}, n={ns[0]}-{ns[-1]}'
    seeds = {tuple(sorted(stat.get('seeds') or ())) for stat, _ in present}
    fewer = any(_seeds_note(stat, row) for stat, row in present)
    return label + f' ({seed_list(present[0][0])})' if len(seeds) == 1 and fewer else label


def plot_leaderboard(rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    groups = defaultdict(list)
    several = several_attacks(rows)
    for r in rows:
        groups[(architecture_cell(r, several), r['threat_model'])].append(r)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(5.0, 1.1 * max(len(v) for v in groups.values())) + 3,
                                                      3 * len(groups)), squeeze=False)
    for ax, ((base, threat), members) in zip(axes[:, 0], sorted(groups.items())):
        stats = [dict(headline_protocols(r), clean=r['clean']) for r in members]  # {series: stat} per bar group
        series = ['clean', *attack_order(attack_of(k) for r in members for k in r['robust'])]
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
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100, format='png'))
    plt.close(fig)
    return out

