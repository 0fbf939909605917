"""A published result beside ours: the paper's row (a yaml file given to the card writer), our numbers on the
same test images, and a plain verdict per number.

The verdict allows for the test-sample error of both numbers only (a normal approximation to the difference of
two binomial proportions, 95%): seed-to-seed spread and attack strength are named, not modelled.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from .._io import PathLike
from .records import _pct, record_protocols

__all__ = ['compare_to_reference', 'load_reference', 'reference_markdown', 'reproductions_markdown']

_REQUIRED = ('citation', 'where', 'threat_model', 'clean', 'robust')
_ATTACK_STRENGTH = ('autoattack', 'apgd', 'pgd', 'fgsm')  # strongest first: the one a reproduction is judged by


def load_reference(path: PathLike) -> Dict[str, Any]:
    """Read and check a reference yaml: `citation`, `where` (table/row), `threat_model`, and `clean` / `robust`
    mappings of `accuracy` (a fraction), `n` (test images) and `protocol` (how the paper measured it);
    optional `url` and `differences` (a list of known differences between their run and ours)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f'reference {p} does not exist: pass the yaml of the published result to compare with.')
    ref = yaml.safe_load(p.read_text()) or {}
    missing = [k for k in _REQUIRED if k not in ref]
    if missing:
        raise ValueError(f'reference {p} lacks {", ".join(missing)}: it needs {", ".join(_REQUIRED)} '
                         '(clean and robust as accuracy / n / protocol).')
    for key in ('clean', 'robust'):
        entry = ref[key]
        if not isinstance(entry, Mapping) or not {'accuracy', 'n', 'protocol'} <= set(entry):
            raise ValueError(f'reference {p}: {key} needs accuracy, n and protocol.')
        if not 0.0 <= float(entry['accuracy']) <= 1.0:
            raise ValueError(f'reference {p}: {key}.accuracy {entry["accuracy"]} is not a fraction in [0, 1] '
                             '(write 0.785, not 78.5).')
    return ref


def _strength(attack: str) -> int:
    return next((i for i, a in enumerate(_ATTACK_STRENGTH) if attack.startswith(a)), len(_ATTACK_STRENGTH))


def _ours(records: Sequence[Mapping[str, Any]], threat_model: str, kind: str, n: int) -> Optional[Dict[str, Any]]:
    """Our protocol to set beside the paper's: clean on the most test images; robust on the paper's number of
    test images (the same first n), under the strongest attack we ran there (its worst case over all attacks of
    the record when there are several)."""
    found = [p for r in records for p in record_protocols(r) if p['threat_model'] == threat_model and p['kind'] == kind]
    if kind == 'clean':
        return max(found, key=lambda p: p['n_examples'], default=None)
    same = [p for p in found if p['n_examples'] == n]
    if not same:
        return None
    return min(same, key=lambda p: (min(_strength(a) for a in p.get('attacks') or [p['attack']]), p['value']))


def _verdict(ours: float, n_ours: int, theirs: float, n_theirs: int) -> Dict[str, Any]:
    diff = ours - theirs
    bound = 1.96 * math.sqrt(ours * (1 - ours) / n_ours + theirs * (1 - theirs) / n_theirs)
    word = 'agrees' if abs(diff) <= bound else ('higher' if diff > 0 else 'lower')
    return dict(verdict=word, difference=round(diff, 4), bound=round(bound, 4))


def compare_to_reference(reference: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The reference with, per number, ours (value, n, attack) and the verdict: `agrees` when the difference is
    within the 95% test-sample error of both, else `higher` / `lower`; no verdict where we have no number."""
    rows = []
    for kind in ('clean', 'robust'):
        theirs = reference[kind]
        mine = _ours(records, reference['threat_model'], kind, int(theirs['n']))
        row = dict(kind=kind, paper=float(theirs['accuracy']), paper_n=int(theirs['n']),
                   paper_protocol=str(theirs['protocol']))
        if mine is not None:
            attack = 'clean' if kind == 'clean' else (
                f"worst case of {', '.join(mine['attacks'])}" if mine['attack'] == 'worst-case' else mine['attack'])
            row.update(ours=round(mine['value'], 4), ours_n=mine['n_examples'], ours_protocol=attack,
                       **_verdict(mine['value'], mine['n_examples'], row['paper'], row['paper_n']))
        rows.append(row)
    return dict({k: reference[k] for k in ('citation', 'where', 'threat_model', 'url', 'differences')
                 if k in reference}, rows=rows)


def _sentence(row: Mapping[str, Any]) -> str:
    if 'ours' not in row:
        return f"{row['kind']}: we have no number on the paper's {row['paper_n']} test images, so no verdict."
    diff, bound = 100 * row['difference'], 100 * row['bound']
    if row['verdict'] == 'agrees':
        return (f"{row['kind']}: **agrees** within the test-sample error (ours {diff:+.1f} points; the 95% error of "
                f'the difference is {bound:.1f}).')
    return (f"{row['kind']}: **{row['verdict']}** than the paper by {abs(diff):.1f} points, more than the "
            f'{bound:.1f} points the test-sample error allows (95%).')


def reference_markdown(comparison: Mapping[str, Any]) -> List[str]:
    """The card's section: both rows side by side with their protocols, and the verdict sentences."""
    rows = {r['kind']: r for r in comparison['rows']}
    clean, robust = rows['clean'], rows['robust']

    def cell(row: Mapping[str, Any], who: str) -> str:
        if who == 'paper':
            return f"{_pct(row['paper'])} (n {row['paper_n']:,}; {row['paper_protocol']})"
        return f"{_pct(row['ours'])} (n {row['ours_n']:,}; {row['ours_protocol']})" if 'ours' in row else 'not run'

    url = f" ({comparison['url']})" if comparison.get('url') else ''
    lines = ['## Published result beside ours', '',
             f"Set beside this model: {comparison['citation']}{url}, {comparison['where']}, under "
             f"`{comparison['threat_model']}`.",
             '', '| | clean accuracy | robust accuracy |', '|---|---|---|',
             f"| paper | {cell(clean, 'paper')} | {cell(robust, 'paper')} |",
             f"| this model | {cell(clean, 'ours')} | {cell(robust, 'ours')} |", '']
    lines += [f'- {_sentence(r)}' for r in comparison['rows']]
    if comparison.get('differences'):
        lines += ['', 'Known differences between their run and ours:', '']
        lines += [f'- {d}' for d in comparison['differences']]
    return lines


def reproductions_markdown(cards: Sequence[Mapping[str, Any]]) -> str:
    """The results page's table of published results beside ours, one row per card whose metadata carries a
    `reference` comparison: a reproduction, or a model set against a published one (`cards`: each card's
    `robust_zoo` metadata with its `name`)."""
    lines = ['| model | paper | paper clean | ours clean | paper robust | ours robust | '
             'ours vs paper (clean / robust) |', '|---|---|---|---|---|---|---|']
    for card in cards:
        comp = card.get('reference')
        if not comp:
            continue
        rows = {r['kind']: r for r in comp['rows']}

        def ours(r: Mapping[str, Any]) -> str:
            return f"{_pct(r['ours'])} (n {r['ours_n']:,}, {r['ours_protocol']})" if 'ours' in r else 'not run'

        lines.append(f"| `{card['name']}` | "
                     f"{comp['citation'].split('.')[0]}, {comp['where']} | "
                     f"{_pct(rows['clean']['paper'])} (n {rows['clean']['paper_n']:,}) | {ours(rows['clean'])} | "
                     f"{_pct(rows['robust']['paper'])} (n {rows['robust']['paper_n']:,}, "
                     f"{rows['robust']['paper_protocol']}) | {ours(rows['robust'])} | "
                     f"{rows['clean'].get('verdict', '-')} / {rows['robust'].get('verdict', '-')} |")
    return '\n'.join(lines) + '\n' if len(lines) > 2 else ''
