"""A card's plots: training curves from summary.csv, accuracy per protocol, and the evaluator's check curves."""
import csv
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..evaluation.plots import save_eval_plots
from .records import protocol_label, record_protocols


def summary_rows(summary: Path) -> List[Dict[str, str]]:
    """A run's per-epoch `summary.csv` rows (none when the run has no such file)."""
    if not summary.is_file():
        return []
    with summary.open(newline='') as f:
        return list(csv.DictReader(f))


def _plot_training(rows: Sequence[Mapping[str, str]], out: Path) -> Optional[Path]:
    if not rows:
        return None
    plt = _pyplot()
    epochs = [int(r['epoch']) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    if 'train_loss' in rows[0]:
        ax1.plot(epochs, [float(r['train_loss']) for r in rows], 'o-', label='train loss (adversarial)')
    ax1.set_xlabel('epoch')
    ax1.set_title('training loss')
    for key, label in (('train_adv_acc', 'train, adversarial'), ('train_clean_acc', 'train, clean'),
                       ('eval_clean_acc', 'validation, clean'), ('eval_robust_acc', 'validation, robust')):
        if key in rows[0] and rows[0][key] not in ('', None):
            ax2.plot(epochs, [float(r[key]) for r in rows], 'o-', label=label)
    ax2.set_xlabel('epoch')
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_ylim(0, 1)
    ax2.set_title('accuracy')
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_training_time(rows: Sequence[Mapping[str, str]], hours: Sequence[float], out: Path) -> Optional[Path]:
    """Validation accuracy against cumulative training time (the card's cost figure)."""
    if not rows or len(hours) != len(rows) or rows[0].get('eval_robust_acc') in ('', None):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for key, label in (('eval_clean_acc', 'validation, clean'), ('eval_robust_acc', 'validation, robust')):
        if rows[0].get(key) not in ('', None):
            ax.plot(hours, [float(r[key]) for r in rows], 'o-', markersize=3, label=label)
    ax.set_xlabel('training time (hours)')
    ax.set_ylabel('accuracy')
    ax.set_title('validation accuracy vs training time', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_evaluation(records: Sequence[Mapping[str, Any]], title: str, out: Path) -> Path:
    plt = _pyplot()
    protocols = [p for r in records for p in record_protocols(r)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(protocols) + 1), 3))
    xs = range(len(protocols))
    values = [p['value'] for p in protocols]
    err = [[v - p['ci'][0] for v, p in zip(values, protocols)], [p['ci'][1] - v for v, p in zip(values, protocols)]]
    colors = ['tab:gray' if p['kind'] == 'clean' else 'tab:blue' for p in protocols]
    ax.bar(xs, values, yerr=err, capsize=3, color=colors)
    ax.set_xticks(list(xs), ['\n'.join(textwrap.wrap(protocol_label(p), 14)) for p in protocols], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel('accuracy (Wilson 95%)')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


_CURVES = {'accuracy_vs_steps': 'robust accuracy vs PGD steps (the steps-convergence check)',
           'accuracy_vs_eps': 'robust accuracy vs budget eps (the eps-sweep check)'}


def _plot_curves(records: Sequence[Mapping[str, Any]], folder: Path) -> List[Tuple[str, str]]:
    """The evaluator's accuracy-vs-steps and accuracy-vs-eps plots from the last record whose `checks='full'`
    carry those curves; a plot no record supports is removed (a card never shows a stale one)."""
    with_curves = [r for r in records if any(c.get('data') and c.get('name') in ('steps convergence', 'eps sweep')
                                             for c in r.get('checks', []))]
    written = save_eval_plots(with_curves[-1], out_dir=folder) if with_curves else {}
    for stem in _CURVES:
        if stem not in written and (folder / f'{stem}.png').exists():
            (folder / f'{stem}.png').unlink()
    probes = {c['name']: c['data'].get('n') for c in (with_curves[-1]['checks'] if with_curves else [])
              if c.get('data')}
    check = {'accuracy_vs_steps': 'steps convergence', 'accuracy_vs_eps': 'eps sweep'}
    return [(f'{stem}.png', f'{text}, on its {probes.get(check[stem])} probe points')
            for stem, text in _CURVES.items() if stem in written]


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError('plots need matplotlib: pip install matplotlib') from e
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


