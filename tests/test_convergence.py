"""Whether a grid's runs stopped rising: the plateau of validation robust accuracy before the lr drop."""
import math
import shutil
from pathlib import Path

import pytest

from experiments import convergence, study
from robust_zoo.publish.leaderboard import leaderboard

ROOT = Path(__file__).resolve().parents[1]


def test_the_rise_is_the_last_window_before_the_drop_against_the_one_before():
    robust = [0.5] * 17 + [0.70] * 5 + [0.72] * 5 + [0.75] * 3  # drop at epoch 27
    p = convergence.plateau(robust, 27)
    assert p['earlier'] == pytest.approx(0.70) and p['last'] == pytest.approx(0.72)
    assert p['rise'] == pytest.approx(0.02) and p['after'] == pytest.approx(0.75)
    assert convergence.plateau(robust, 9) is None, 'fewer than two windows before the drop'
    assert math.isnan(convergence.plateau(robust[:27], 27)['after'])


def test_the_table_says_per_seed_whether_a_run_stopped_rising(tmp_path):
    cards = tmp_path / 'cards'
    shutil.copytree(ROOT / 'model_cards' / 'lenet_small_relu_at.fmnist_pgd10_s0', cards / 'relu')
    summary = cards / 'relu' / 'summary.csv'
    rows = summary.read_text().splitlines()
    header, body = rows[0], rows[1:]
    cols = header.split(',')
    flat = []
    for line in body:  # a run whose validation robust accuracy is flat at 0.7
        values = line.split(',')
        values[cols.index('eval_robust_acc')] = '0.7'
        flat.append(','.join(values))
    summary.write_text('\n'.join([header, *flat]) + '\n')
    row = dict(activation='relu', recipe='r.yaml', repos=['relu'], bank=None)
    text = convergence.convergence_markdown([row], cards, 'r.yaml')
    assert '| `relu` | 1 | 70.0 | 70.0 | +0.0 | 70.0 | 1 of 1 |' in text
    assert 'Training cost of these 1 runs: 0.4 CPU-hours' in text, 'the card\'s 0.43 h x 1 thread'
    assert convergence.convergence_markdown([row], cards, 'other.yaml').startswith('_No run under')


def test_the_windows_end_where_timm_lowers_the_lr(tmp_path):
    """The grid's milestone 27 lowers the lr from epoch 26 (timm counts milestones from 1): a jump at epoch 26 is
    'after the drop', not a rise before it."""
    cards = tmp_path / 'cards'
    shutil.copytree(ROOT / 'model_cards' / 'lenet_small_relu_at.fmnist_pgd10_s0', cards / 'relu')
    summary = cards / 'relu' / 'summary.csv'
    header, *body = summary.read_text().splitlines()
    col = header.split(',').index('eval_robust_acc')
    lines = []
    for line in body:
        values = line.split(',')
        values[col] = '0.7' if int(values[0]) < 26 else '0.75'
        lines.append(','.join(values))
    summary.write_text('\n'.join([header, *lines]) + '\n')
    row = dict(activation='relu', recipe='r.yaml', repos=['relu'], bank=None)
    table = convergence.convergence_markdown([row], cards, 'r.yaml')
    assert '| `relu` | 1 | 70.0 | 70.0 | +0.0 | 75.0 | 1 of 1 |' in table


def test_the_claims_page_measures_the_published_grid():
    rows = leaderboard()
    table = convergence.convergence_markdown(rows, study.cards_dir(), study.LONG_RECIPE)
    assert '| `relu` |' in table and table in (ROOT / 'docs' / 'claims.md').read_text()
