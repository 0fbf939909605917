"""The seed papers' claims, tested on this project's published models, and the rule that decides a comparison.

`compare_arms` is the rule on its own: given leaderboard rows (`robust_zoo.publish.leaderboard.leaderboard`), one
per arm, it says whether the claimed arms beat the base arm (agrees / disagrees / cannot tell) in a markdown table
and one sentence. The robust-accuracy difference decides when it exceeds 2 standard errors; each arm's error is the
larger of its seed spread and the binomial error on its n test images (`difference`). `claim_verdicts` applies it
to every claim in `CLAIMS` and every architecture the cards hold.
"""
import math
from collections import defaultdict
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from robust_zoo.evaluation.autoattack import is_autoattack
from robust_zoo.publish.tables import (architecture_cell, attack_of, attack_order, format_stat, headline_protocols,
                                       seed_list, several_attacks)

__all__ = [
    'CLAIMS', 'Claim', 'Comparison', 'ONE_SEED', 'claim_verdicts', 'compare_arms', 'deciding_protocol', 'difference',
    'find_row', 'healthy_stat', 'sign', 'verdict_of', 'without_overfit_head',
]

Row = Mapping[str, Any]  # a leaderboard row
Stat = Mapping[str, Any]  # one protocol's stat of a row: mean, sd, n_seeds, n_examples, ...


class Claim(NamedTuple):
    """A seed paper's claim: the activations `better` beat `base`. `seeded`: those of `better` the zoo trains on
    every seed (train/zoo_grid.py); the others get seed 0 only."""
    text: str
    better: Tuple[str, ...]
    base: str
    seeded: Tuple[str, ...]


CLAIMS: Tuple[Claim, ...] = (
    Claim('SAT (Xie et al.): smooth activations beat ReLU', ('softplus', 'smoothrelu', 'silu', 'gelu', 'elu'), 'relu',
          seeded=('silu',)),
    Claim("SAT sec. 3: ReLU's smooth backward alone helps", ('relu_smoothgrad',), 'relu', seeded=('relu_smoothgrad',)),
    Claim('PSSiLU beats ReLU (Dai et al.)', ('pssilu',), 'relu', seeded=('pssilu',)),
    Claim('Sparta beats ReLU (Guo et al.)', ('sparta',), 'relu', seeded=('sparta',)),
    Claim('capped ReLU adds robustness (Sooksatra et al.)', ('capped_relu',), 'relu', seeded=('capped_relu',)),
)

ONE_SEED = ('; with one seed the error is only the test-sample error, not the seed-to-seed spread, so this is '
            'provisional')


def difference(a: Stat, b: Stat) -> Tuple[float, float]:
    """(mean a - mean b, its standard error): seed spread where there are >= 2 seeds, else the binomial error of
    one seed's accuracy on n test images (a lower bound on the real uncertainty)."""
    def var(s):
        binom = s['mean'] * (1 - s['mean']) / s['n_examples']
        return max(binom, (s['sd'] ** 2) / s['n_seeds']) if s['sd'] is not None else binom
    return a['mean'] - b['mean'], math.sqrt(var(a) + var(b))


def sign(a: Stat, b: Stat) -> Tuple[int, str]:
    """(+1 / -1 / 0 when a - b is beyond / within 2 standard errors, 'diff ± se points')."""
    diff, se = difference(a, b)
    return (0 if abs(diff) <= 2 * se else (1 if diff > 0 else -1)), f'{100 * diff:+.1f} ± {100 * se:.1f} points'


def verdict_of(signs: Sequence[int]) -> str:
    """A claim's verdict from the signs (+1 better, -1 worse, 0 within 2 standard errors) of its arms."""
    if all(x == 1 for x in signs):
        return 'agrees'
    if all(x == -1 for x in signs):
        return 'disagrees'
    if any(x == -1 for x in signs) and not any(x == 1 for x in signs):
        return 'disagrees in part'
    if any(x == 1 for x in signs) and not any(x == -1 for x in signs):
        return 'agrees in part, cannot tell for the rest'
    return 'is mixed' if any(x != 0 for x in signs) else 'cannot tell'


def deciding_protocol(rows: Sequence[Row]) -> Optional[str]:
    """The robust protocol that decides a comparison of leaderboard `rows`: among those every row ran, the one with
    the most seeds in its thinnest row, then in all rows together, then the strongest attack (AutoAttack's, as
    `is_autoattack` tells), then a worst case over several attacks, then the most test images (None when the rows
    share none). So PGD-20 on 3 seeds x 10,000 images decides over APGD on seed 0 x 1,000, and APGD-CE + APGD-T on
    every seed x 1,000 over PGD-20 on the same seeds x 10,000."""
    common = [p for p in rows[0]['robust'] if all(p in r['robust'] for r in rows)] if rows else []
    if not common:
        return None
    return max(reversed(common), key=lambda p: (min(r['robust'][p]['n_seeds'] for r in rows),
                                                sum(r['robust'][p]['n_seeds'] for r in rows),
                                                is_autoattack(attack_of(p)),
                                                attack_of(p).startswith('worst case of'),
                                                rows[0]['robust'][p]['n_examples']))


def find_row(rows: Sequence[Row], **fields: Any) -> Optional[Row]:
    """The one leaderboard row whose `fields` (e.g. base_architecture='resnet20', activation='relu', bank=None)
    have these values; None when no row has them. Several rows are an error: name more fields."""
    found = [r for r in rows if all(r.get(k) == v for k, v in fields.items())]
    if len(found) > 1:
        raise ValueError(f'{len(found)} leaderboard rows have {fields} ({", ".join(r["repos"][0] for r in found)}, '
                         '...): name more fields (threat_model, train_attack, bank) to pick one.')
    return found[0] if found else None


def _versus(stats: Mapping[str, Stat], present: Sequence[str], base: str) -> Tuple[str, str, str]:
    """(verdict, 'a +x ± y points; ...', 'base: n, a: n') of the arms `present` against `base`."""
    parts, signs = [], []
    for a in present:
        s, text = sign(stats[a], stats[base])
        signs.append(s)
        parts.append(f'{a} {text}')
    seeds = ', '.join(f"{a}: {stats[a]['n_seeds']}" for a in [base, *present])
    return verdict_of(signs), '; '.join(parts), seeds


def without_overfit_head(rows: Sequence[Row]) -> str:
    """' Without the runs that overfit catastrophically (`repo`, ...)', or '' when none of `rows` has one."""
    repos = [repo for row in rows for repo in (row.get('overfit') or {})]
    return f" Without the runs that overfit catastrophically ({', '.join(f'`{r}`' for r in repos)})" if repos else ''


def healthy_stat(row: Row, protocol: str) -> Optional[Stat]:
    """A row's robust stat under `protocol` without its runs that overfit catastrophically (None if none is left)."""
    return (row['robust_without_overfit'] if row.get('overfit') else row['robust']).get(protocol)


def _without_overfit(rows: Mapping[str, Row], present: Sequence[str], base: str, protocol: str) -> str:
    """The sentence that repeats a comparison without the runs whose shipped weights overfit catastrophically ('' when
    no arm has one). `rows`: {arm: leaderboard row}."""
    head = without_overfit_head([rows[a] for a in [base, *present]])
    if not head:
        return ''
    stats = {a: healthy_stat(rows[a], protocol) for a in [base, *present]}
    if stats[base] is None:
        return f'{head} no {base} run remains.'
    kept = [a for a in present if stats[a] is not None]
    if not kept:
        return f"{head} no {', '.join(present)} run remains: every one overfit."
    verdict, parts, seeds = _versus(stats, kept, base)
    one = any(stats[a]['n_seeds'] < 2 for a in [base, *kept])
    return f'{head}: this scale {verdict} ({parts}; seeds {seeds}{ONE_SEED if one else ""}).'


def _under_stronger_attacks(rows: Mapping[str, Row], present: Sequence[str], base: str, protocol: str) -> str:
    """The comparison again under each stronger attack (APGD, AutoAttack) that `base` and at least one claimed arm
    ran, usually on fewer seeds and test images: the verdict stays with `protocol`; these say whether a stronger
    attack changes the picture ('' when there is none). `rows`: {arm: leaderboard row}."""
    out = ''
    cells = {a: headline_protocols(rows[a]) for a in [base, *present]}
    for attack in attack_order(k for k in cells[base] if is_autoattack(k) and k != attack_of(protocol)):
        kept = [a for a in present if attack in cells[a]]
        if not kept:
            continue
        stats = {a: cells[a][attack] for a in [base, *kept]}
        verdict, parts, _ = _versus(stats, kept, base)
        ns = sorted({s['n_examples'] for s in stats.values()})
        seeds = ', '.join(f"{a}: {seed_list(s)}" for a, s in stats.items())
        one = any(s['n_seeds'] < 2 for s in stats.values())
        out += (f" Under the stronger {attack} (n={', '.join(map(str, ns))}; {seeds}"
                f"{'; test-sample error only' if one else ''}): this scale {verdict} ({parts}).")
    return out


class Comparison(NamedTuple):
    """What `compare_arms` found: the protocol that decided (None when it could not compare), the verdict, a
    markdown table of the arms and the verdict as one sentence with its numbers."""
    protocol: Optional[str]
    verdict: str
    markdown: str
    sentence: str


def compare_arms(arms: Mapping[str, Optional[Row]], base: str, claim: str, where: str = '',
                 protocol: Optional[str] = None) -> Comparison:
    """Does every arm of `arms` other than `base` beat `base` in robust accuracy, over all their seeds?

    `arms`: {label: leaderboard row, or None for an arm with no published model}, `base` among them; `claim`: the
    sentence's bold head; `where`: what was compared (e.g. "resnet20 on `fashion-mnist-linf`"); `protocol`: the
    robust protocol that decides (default: `deciding_protocol` of the arms). The verdict is 'agrees' when every arm
    is better than `base` by more than 2 standard errors, 'disagrees' when every arm is worse, 'cannot tell' when
    none differs, a partial verdict otherwise, and 'cannot tell yet' when an arm is missing or the arms share no
    protocol. The sentence adds the comparison without runs that overfit catastrophically, and under each stronger
    attack the arms also ran, where there are such."""
    head = f'**{claim}**' + (f' -- {where}' if where else '')
    if base not in arms:
        raise ValueError(f'the base arm {base!r} is not among the arms {list(arms)}.')
    missing = [a for a, row in arms.items() if row is None]
    present = [a for a in arms if a != base]
    rows = {a: row for a, row in arms.items() if row is not None}
    protocol = protocol or (deciding_protocol(list(rows.values())) if not missing else None)
    if missing or protocol is None or any(protocol not in r['robust'] for r in rows.values()):
        why = (f"no {', '.join(missing)} model published" if missing else
               f'not every arm ran {protocol}' if protocol else 'the arms share no robust protocol')
        return Comparison(None, 'cannot tell yet', _arms_table(arms, base, None), f'{head}: cannot tell yet ({why}).')
    stats = {a: rows[a]['robust'][protocol] for a in arms}
    verdict, parts, seeds = _versus(stats, present, base)
    flagged = [f'{a} (e)' for a in arms if rows[a].get('stopped_early')] + [
        f'{a} (!)' for a in arms if rows[a].get('checks')] + [f'{a} (co)' for a in arms if rows[a].get('overfit')]
    one = any(s['n_seeds'] < 2 for s in stats.values())
    sentence = (f'{head}: this scale {verdict} ({protocol}; robust accuracy vs {base}: {parts}; seeds {seeds}; '
                f'2 standard errors decide{ONE_SEED if one else ""}'
                + (f'; read with the notes on {", ".join(flagged)} beneath the leaderboard' if flagged else '') + ').'
                + _without_overfit(rows, present, base, protocol)
                + _under_stronger_attacks(rows, present, base, protocol))
    return Comparison(protocol, verdict, _arms_table(arms, base, protocol), sentence)


def _arms_table(arms: Mapping[str, Optional[Row]], base: str, protocol: Optional[str]) -> str:
    """One row per arm: seeds, clean and robust accuracy (in %), and the difference to `base` with its sign."""
    words = {1: 'better', -1: 'worse', 0: 'cannot tell'}
    b = arms[base]['robust'].get(protocol) if protocol and arms[base] else None
    lines = [f"| arm | seeds | clean | robust ({protocol or '–'}) | vs {base} |", '|---|---|---|---|---|']
    for label, row in arms.items():
        if row is None:
            lines.append(f'| {label} | 0 | – | – | |')
            continue
        s = row['robust'].get(protocol) if protocol else None
        versus = 'base' if label == base else ''
        if label != base and s is not None and b is not None:
            x, text = sign(s, b)
            versus = f'{text} ({words[x]})'
        lines.append(f"| {label} | {len(row['seeds'])} | {format_stat(row['clean'])} | {format_stat(s)} | {versus} |")
    return '\n'.join(lines + ['', 'Accuracy in %: mean ± sample standard deviation over seeds (no ± for one seed), '
                                  'then [the 95% Wilson interval at the mean and n test images]; a difference beyond 2 '
                                  'standard errors decides.'])


def claim_verdicts(rows: Sequence[Row]) -> List[str]:
    """One sentence per claim and architecture (`compare_arms` of the claimed activations against the base) for
    the leaderboard `rows` that have the base and at least one claimed activation; transferred banks are left to
    their own experiment (experiments/sparta_transfer.py)."""
    out = []
    by_arch: Dict[Tuple[str, str], Dict[str, Row]] = defaultdict(dict)
    several = several_attacks(rows)
    for r in rows:
        if not r.get('bank'):
            by_arch[(architecture_cell(r, several), r['threat_model'])][r['activation']] = r
    for (arch, threat), acts in sorted(by_arch.items()):
        for claim in CLAIMS:
            present = [a for a in claim.better if a in acts]
            if claim.base not in acts or not present:
                continue
            found = compare_arms({a: acts[a] for a in [claim.base, *present]}, claim.base, claim.text,
                                 f'{arch} on `{threat}`')
            if found.protocol is not None:
                out.append(found.sentence)
    return out
