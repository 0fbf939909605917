#!/usr/bin/env python3
"""Single-step against multi-step adversarial training at equal wall time (issue 24, item 3).

    python experiments/equal_time.py run       # ~15 min on two free cores: both arms at once, one thread each
    python experiments/equal_time.py report    # the table and the plot into docs/training.md

`run` trains LeNetSmall (ReLU) twice on Fashion-MNIST at Linf 0.1: the activation grid's recipe
(train/configs/lenet_small_fmnist_pgd10.yaml: PGD-10 on half of each batch, 30 epochs) and the same recipe with
N-FGSM in place of PGD-10. Both arms first train one short slice side by side to measure their throughput; the
N-FGSM arm then gets the number of epochs that takes as long as PGD-10's (its lr drop stays at 90% of them). The
two trainings run at the same time, one thread each, so that they share whatever else the machine runs. Each
finished arm is evaluated with APGD-CE + APGD-T on the first 1,000 test images (its PGD-20 on all 10,000 comes
from the run itself), and its evidence (summary.csv, final_eval.json, apgd_1k.json, args.yaml) is copied to
experiments/results/equal_time/<arm>/, which is in git: `report` reads only that.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE = ROOT / 'train' / 'configs' / 'lenet_small_fmnist_pgd10.yaml'
RESULTS = HERE / 'results' / 'equal_time'
PAGE = ROOT / 'docs' / 'training.md'
START, END = '<!-- equal-time:start -->', '<!-- equal-time:end -->'
MODEL = 'robust_zoo/lenet_small_relu_at'
ARMS = {'pgd10': ['--attack', 'pgd', '--attack-steps', '10'], 'n-fgsm': ['--attack', 'n-fgsm']}
PGD_EPOCHS = 30


def _train_cmd(out: Path, arm: str, extra: List[str]) -> List[str]:
    return [sys.executable, str(ROOT / 'train' / 'train_at.py'), '-c', str(RECIPE), '--model', MODEL,
            '--output', str(out), '--no-progress', *ARMS[arm], *extra]


def _run_all(cmds: Dict[str, List[str]], logs: Path) -> None:
    """Start every command at once (one thread each), wait for all, fail on any failure."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = {}
    for arm, cmd in cmds.items():
        with open(logs / f'{arm}.log', 'a') as log:
            procs[arm] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    failed = [arm for arm, p in procs.items() if p.wait() != 0]
    if failed:
        raise SystemExit(f'{", ".join(failed)} failed: see {logs}/<arm>.log')


def _throughput(folder: Path) -> float:
    from robust_zoo.publish.plots import summary_rows
    return float(summary_rows(folder / 'summary.csv')[-1]['train_img_per_sec'])


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    probe = {arm: out / f'probe-{arm}' for arm in ARMS}
    for folder in probe.values():
        shutil.rmtree(folder, ignore_errors=True)
    _run_all({arm: _train_cmd(folder, arm, ['--epochs', '1', '--train-samples', '6400', '--eval-samples', '0',
                                            '--val-samples', '200'])
              for arm, folder in probe.items()}, out)
    ratio = _throughput(probe['n-fgsm']) / _throughput(probe['pgd10'])
    epochs = {'pgd10': PGD_EPOCHS, 'n-fgsm': max(PGD_EPOCHS, round(PGD_EPOCHS * ratio))}
    print(f'N-FGSM trains {ratio:.2f}x faster side by side: {epochs["n-fgsm"]} epochs against PGD-10\'s {PGD_EPOCHS}')
    cmds = {}
    for arm, n in epochs.items():
        folder = out / arm
        resume = ['--resume', str(folder)] if (folder / 'last.ckpt').is_file() else []
        cmds[arm] = resume or _train_cmd(folder, arm, ['--epochs', str(n), '--decay-milestones', str(int(0.9 * n))])
    _run_all(cmds, out)
    evals = {}
    for arm in ARMS:
        folder = out / arm
        evals[arm] = [sys.executable, '-m', 'robust_zoo.cli', 'eval', MODEL, '--checkpoint',
                      str(folder / 'model.safetensors'), '--attacks', 'apgd-ce+apgd-t', '--n-examples', '1000',
                      '--batch-size', '100', '--output', str(folder / 'apgd_1k.json'),
                      '--state', str(folder / 'apgd_1k.state.json')]
    _run_all(evals, out)
    for arm in ARMS:
        dest = RESULTS / arm
        dest.mkdir(parents=True, exist_ok=True)
        for name in ('args.yaml', 'summary.csv', 'final_eval.json', 'apgd_1k.json'):
            shutil.copyfile(out / arm / name, dest / name)
    print(f'evidence in {RESULTS}; now: python experiments/equal_time.py report')


def _arm_row(arm: str) -> Dict[str, object]:
    folder = RESULTS / arm
    from robust_zoo.publish.plots import summary_rows
    rows = summary_rows(folder / 'summary.csv')
    final = json.loads((folder / 'final_eval.json').read_text())
    apgd = json.loads((folder / 'apgd_1k.json').read_text())
    images = int(final['train_images'])
    hours, elapsed = [], 0.0
    for r in rows:
        elapsed += images / float(r['train_img_per_sec']) / 3600
        hours.append(elapsed)
    ev = final['evaluation']
    return dict(arm=arm, epochs=len(rows), hours=hours, rows=rows, threads=final.get('threads'),
                device=final.get('device_name'), clean=ev['clean_accuracy'], pgd20=ev['robust_accuracy'],
                n=ev['n_examples'], apgd=apgd['robust_accuracy'], apgd_n=apgd['n_examples'],
                apgd_ci=apgd['confidence_interval'])


def report(page: Path) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    arms = [_arm_row(arm) for arm in ARMS]
    fig, ax = plt.subplots(figsize=(5, 3))
    for a in arms:
        ax.plot([60 * h for h in a['hours']], [float(r['eval_robust_acc']) for r in a['rows']], 'o-', markersize=2,
                label=f"{a['arm']} ({a['epochs']} epochs)")
    ax.set_xlabel('training time (minutes)')
    ax.set_ylabel('validation PGD-20 accuracy')
    ax.legend(fontsize=7)
    fig.tight_layout()
    (page.parent / 'assets').mkdir(exist_ok=True)
    fig.savefig(page.parent / 'assets' / 'equal_time.png', dpi=100)
    plt.close(fig)
    lines = ['| training attack | epochs | training time | best validation PGD-20 (at) | clean (n=10,000) | '
             'PGD-20 (n=10,000) | APGD-CE + APGD-T (n=1,000, Wilson 95%) |', '|---|---|---|---|---|---|---|']
    for a in arms:
        lo, hi = a['apgd_ci']
        val = [float(r['eval_robust_acc']) for r in a['rows']]
        best = max(range(len(val)), key=val.__getitem__)
        lines.append(f"| {a['arm']} | {a['epochs']} | {60 * a['hours'][-1]:.1f} min | {100 * val[best]:.1f}% "
                     f"({60 * a['hours'][best]:.1f} min, epoch {best}) | {100 * a['clean']:.1f}% | "
                     f"{100 * a['pgd20']:.1f}% | {100 * a['apgd']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] |")
    lines += ['', f"Both on {arms[0]['device']}, {arms[0]['threads']} thread each, trained at the same time; "
              'the N-FGSM epochs were sized from a side-by-side throughput probe, so the two training times '
              'differ where the load on the machine changed during the runs. The test numbers are those of '
              'the last epoch (no early stopping). '
              'Times are training time from the logged throughput (validation excluded). Generated by '
              '`python experiments/equal_time.py report` from experiments/results/equal_time/.', '',
              '![validation robust accuracy against training time](assets/equal_time.png)']
    body = '\n'.join(lines)
    text = page.read_text()
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f'{page} needs one {START} line and one {END} line where the table goes.')
    head, rest = text.split(START, 1)
    page.write_text(f'{head}{START}\n{body}\n{END}{rest.split(END, 1)[1]}')
    return body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command', choices=('run', 'report'))
    parser.add_argument('--out', type=Path, default=ROOT / 'runs' / 'equal_time', help='where the runs go')
    parser.add_argument('--page', type=Path, default=PAGE, help='the docs page with the equal-time block')
    args = parser.parse_args(argv)
    if args.command == 'run':
        run(args.out)
    else:
        print(report(args.page))
    return 0


if __name__ == '__main__':
    sys.exit(main())
