"""The Sparta transfer experiments (Guo et al.): a frozen Sparta bank trained in one model, loaded into another CNN
or another dataset's model, against ReLU and Sparta trained from scratch in the target, from the leaderboard rows."""
from typing import Any, Dict, List, Mapping, Sequence

from robust_zoo.publish.tables import format_stat, overfit_note, precision_note
from robust_zoo.threat_models import get_threat_model

from .claims import ONE_SEED, deciding_protocol, healthy_stat, sign, without_overfit_head

__all__ = ['transfer_experiments', 'transfer_markdown', 'transfer_summary', 'transfer_verdicts']


def transfer_experiments(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The Sparta transfer experiments among the leaderboard rows: for every (target architecture, threat model,
    bank source) with a frozen-bank row, that row with the same target's ReLU and from-scratch Sparta rows, and
    the strongest robust protocol all of them share."""
    out = []
    for r in rows:
        if not r.get('bank') or r['activation'] != 'sparta':
            continue
        same = {x['activation']: x for x in rows if not x.get('bank') and x['activation'] in ('relu', 'sparta')
                and x['base_architecture'] == r['base_architecture'] and x['threat_model'] == r['threat_model']
                and x.get('train_attack') == r.get('train_attack')}
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
                         f"{format_stat(row['clean'])} | {format_stat(robust)} | {e['protocol'] or '–'} |")
    lines += ['', 'Accuracy in %: mean ± sample standard deviation over seeds (no ± for one seed), then [the 95% '
                  'Wilson interval at the mean and n test images]. Seed s of a transferred model loads the bank of '
                  'seed s of its source. Generated from the model cards in `model_cards/` by '
                  '`python -m experiments.study`.']
    rows = [row for e in experiments for row in (e['relu'], e['scratch'], e['transferred']) if row]
    overfit = overfit_note(rows)
    for note in (overfit and overfit.removesuffix('.') + '; the verdicts are also given without them.',
                 precision_note(rows)):
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
            x, text = sign(t, b)
            says = 'says ' if base == 'scratch' else ''
            versus = 'ReLU' if base == 'relu' else 'from scratch'
            sentence = (f"**{claim}** -- {where}: this scale {says}{words[x]} ({e['protocol']}; robust accuracy vs "
                        f"{versus}: {text}; seeds {t['n_seeds']} vs {b['n_seeds']}; 2 standard errors decide"
                        f"{ONE_SEED if min(t['n_seeds'], b['n_seeds']) < 2 else ''}).")
            head = without_overfit_head([e['transferred'], e[base]])
            if head:
                t2, b2 = healthy_stat(e['transferred'], e['protocol']), healthy_stat(e[base], e['protocol'])
                sentence += head
                if t2 is None or b2 is None:
                    sentence += ' no run of one arm remains.'
                else:
                    x, text = sign(t2, b2)
                    one = ONE_SEED if min(t2['n_seeds'], b2['n_seeds']) < 2 else ''
                    sentence += (f": this scale {says}{words[x]} (robust accuracy vs {versus}: {text}; seeds "
                                 f"{t2['n_seeds']} vs {b2['n_seeds']}{one}).")
            out.append(sentence)
    return out


def transfer_summary(experiments: Sequence[Mapping[str, Any]]) -> str:
    """One plain sentence over every transfer experiment: in how many does the frozen bank beat ReLU, by the same
    rule as each experiment's verdict (all seeds, 2 standard errors); '' while none can be compared."""
    signs = {}
    for e in experiments:
        if e['protocol'] and e['relu'] is not None and e['protocol'] in e['relu']['robust']:
            signs[f"{e['target']} on `{e['threat_model']}`"] = sign(e['transferred']['robust'][e['protocol']],
                                                                    e['relu']['robust'][e['protocol']])[0]
    if not signs:
        return ''
    words = {1: 'beats ReLU', -1: 'is worse than ReLU', 0: 'cannot tell'}
    wins = sum(v == 1 for v in signs.values())
    return (f"**In short: a frozen transferred Sparta bank beats ReLU in {wins} of the {len(signs)} transfer "
            f"experiments at this scale** ({'; '.join(f'{k}: {words[v]}' for k, v in signs.items())}; every seed, "
            '2 standard errors decide; each experiment\'s sentence below gives the numbers, and the comparison '
            'without runs that overfit catastrophically where there are any).')

