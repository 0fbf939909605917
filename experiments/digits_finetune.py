"""Fine-tuning a robust backbone downstream, measured (issue 27): Fashion-MNIST -> scikit-learn's digits.

A robust lenet_wide (the flagship, PGD-10 adversarially trained on Fashion-MNIST) and a standard-trained one (the
same recipe without attack, `lenet_wide_relu_at.fmnist_standard_s0`), each linear-probed, fine-tuned clean and
fine-tuned adversarially on the digits, against adversarial training from scratch at the same cost; three seeds per
arm (`finetune_table.ARMS`; the recipes are train/configs/digits_lenet_wide_*.yaml). Every run is evaluated on all
500 test digits with PGD-20, APGD-CE and APGD-T under `digits-linf` (eps 0.1, train_at.py's own final evaluation) and
`digits-linf-0.05`:

    python -m experiments.digits_finetune run        # train + evaluate every run not done yet (restartable)
    python -m experiments.digits_finetune publish --arm aft_robust   # cards for one arm's seeds
    python -m experiments.digits_finetune table      # the generated block of docs/finetuning.md

`run` writes each run to ROOT/<arm>-s<seed>/ (a train_at.py run folder; a started one is resumed) and, once it is
evaluated, its record to RESULTS/<arm>-s<seed>.json (committed: the table reads it). Flags after `--` go to
train_at.py (e.g. `-- --train-samples 128 --epochs 1` for a quick check, with `--eval-samples 20`).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Optional, Sequence

import yaml

from experiments.finetune_table import ARCH, ARMS, END, START, THREATS, finetune_markdown, load_runs

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
STANDARD_BACKBONE = f'{ARCH}.fmnist_standard_s0'
RESULTS = ROOT / 'experiments' / 'results' / 'digits_finetune'
PAGE = ROOT / 'docs' / 'finetuning.md'
ATTACKS = ('pgd-20', 'apgd-ce+apgd-t')


def robust_backbone() -> str:
    """The published default tag of lenet_wide_relu_at (the flagship), which must be adversarially trained."""
    import timm

    import robust_zoo  # noqa: F401
    from robust_zoo.models._pretrained import load_published
    tag = timm.models.get_pretrained_cfg(ARCH).tag
    entry = load_published().get(f'{ARCH}.{tag}') if tag else None
    if entry is None or entry.get('train_attack') == 'none':
        raise ValueError(f'robust_zoo/{ARCH} has no published adversarially trained weights yet: pass '
                         '--robust-backbone <arch>.<tag>.')
    return f'{ARCH}.{tag}'


def train_command(arm: str, seed: int, out: Path, backbones: Dict[str, str], extra: Sequence[str]) -> List[str]:
    """The train_at.py command of one run: its arm's recipe, its seed and its backbone: a published `<arch>.<tag>` as
    --model (the recipe loads its weights), or a .safetensors file as --initial-checkpoint (unpublished weights)."""
    spec = ARMS[arm]
    backbone = backbones[spec.backbone] if spec.backbone else ''
    if backbone.endswith('.safetensors'):
        model = ['--model', f'robust_zoo/{ARCH}', '--initial-checkpoint', str(Path(backbone).resolve())]
    else:
        model = ['--model', f'robust_zoo/{backbone or ARCH}']
    resume = ['--resume', str(out)] if (out / 'last.ckpt').exists() else ['--output', str(out)]
    return [sys.executable, str(ROOT / 'train' / 'train_at.py'), '-c', f'train/configs/{spec.recipe}', *model,
            '--seed', str(seed), '--no-progress', *resume, *extra]


def evaluate_run(out: Path, threat: str, seed: int, n: int) -> Path:
    """PGD-20 + APGD-CE + APGD-T under `threat` on a run's weights (resumable): OUT/eval_<threat>.json."""
    import timm

    import robust_zoo
    from robust_zoo._io import atomic_write_text, sha256_file
    from robust_zoo.training import load_weights
    path, state = out / f'eval_{threat}.json', out / f'eval_{threat}.state.json'
    if path.is_file():
        return path
    model = timm.create_model(f'robust_zoo/{ARCH}', num_classes=10)
    model.load_state_dict(load_weights(out / 'model.safetensors'))
    model.pretrained_cfg = dict(model.pretrained_cfg, dataset='digits', threat_model='digits-linf')  # its data now
    result = robust_zoo.evaluate(model.eval(), threat, attacks=list(ATTACKS), n_examples=n, seed=seed,
                                 model_name=f'robust_zoo/{ARCH}', state_path=state,
                                 weights_sha256=sha256_file(out / 'model.safetensors'))
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2))
    state.unlink(missing_ok=True)
    return path


def run_record(out: Path, arm: str, seed: int) -> Dict[str, Any]:
    """A finished run's record for RESULTS: what it is, its weights' sha256, training time, evaluation records."""
    from robust_zoo._io import sha256_file
    from robust_zoo.models._pretrained import load_published
    from robust_zoo.publish.cost import train_images_of
    from robust_zoo.publish.plots import summary_rows
    args = yaml.safe_load((out / 'args.yaml').read_text())
    timing = json.loads((out / 'timing.json').read_text())
    final = json.loads((out / 'final_eval.json').read_text())
    # the cards' training time: each epoch's images over its logged throughput (no validation, no start-up), in
    # seconds here (the card's hours are rounded to 0.36 s: a quick check's epoch takes less)
    images = train_images_of(out, final)
    train_seconds = sum(images / max(float(r['train_img_per_sec']), 1e-9) for r in summary_rows(out / 'summary.csv'))
    if args.get('initial_checkpoint'):  # a file: the published weights with its sha256, else the file
        backbone_sha = sha256_file(args['initial_checkpoint'])
        backbone = next((name for name, e in sorted(load_published().items()) if e.get('sha256') == backbone_sha),
                        args['initial_checkpoint'])
    elif args.get('pretrained'):
        backbone = args['model'].removeprefix('robust_zoo/')
        backbone_sha = (load_published().get(backbone) or {}).get('sha256')
    else:
        backbone = backbone_sha = None
    return dict(run=out.name, arm=arm, seed=seed, tag=f'digits_{arm}_s{seed}', backbone=backbone,
                backbone_sha256=backbone_sha, weights_sha256=sha256_file(out / 'model.safetensors'),
                recipe=args.get('config'), train_samples=args.get('train_samples'), epochs=args.get('epochs'),
                train_seconds=round(train_seconds, 3), process_cpu_seconds=round(timing['cpu_seconds'], 1),
                process_wall_seconds=round(timing['wall_seconds'], 1), resumed=timing['resumed'],
                records=[json.loads((out / f'eval_{t}.json').read_text()) for t in THREATS])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(root: Path, results: Path, arm: str, seed: int, backbones: Dict[str, str], extra: Sequence[str],
            eval_samples: int) -> str:
    """Train (or resume) and evaluate one run, then write its record; 'done', 'ran' or 'failed'. Training runs
    without its own final evaluation, so that its wall and CPU time are the training's; the evaluations follow."""
    out = root / f'{arm}-s{seed}'
    if (results / f'{out.name}.json').is_file() and (out / 'final_eval.json').exists():
        return 'done'
    if not (out / 'final_eval.json').exists():
        resumed = (out / 'last.ckpt').exists()
        cmd = train_command(arm, seed, out, backbones, [*extra, '--eval-samples', '0'])
        print(f"training {out}: {' '.join(cmd[1:])}", flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p))
        start, cpu = time.monotonic(), _children_cpu()
        with open(root / f'{arm}-s{seed}.log', 'a') as log:
            rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            print(f'FAILED   {out} (exit {rc}; see {root / f"{arm}-s{seed}.log"})', flush=True)
            return 'failed'
        timing = dict(wall_seconds=time.monotonic() - start, cpu_seconds=_children_cpu() - cpu, resumed=resumed)
        (out / 'timing.json').write_text(json.dumps(timing, indent=2))
    for threat in THREATS:
        print(f'evaluate {out}: {threat}, {", ".join(ATTACKS)} on {eval_samples} test digits', flush=True)
        evaluate_run(out, threat, seed, eval_samples)
    results.mkdir(parents=True, exist_ok=True)
    from robust_zoo._io import atomic_write_text
    atomic_write_text(results / f'{out.name}.json', json.dumps(run_record(out, arm, seed), indent=1) + '\n')
    print(f'recorded {results / out.name}.json', flush=True)
    return 'ran'


def claim(root: Path, run: str) -> ContextManager[bool]:
    """An exclusive lock on ROOT/.locks/<run> while this process works on the run, so that several processes
    (e.g. one per seed) never train or evaluate the same run; False while another holds it."""
    from robust_zoo._io import exclusive_lock
    return exclusive_lock(root / '.locks' / run)


def publish(root: Path, arms: Sequence[str], seeds: Sequence[int]) -> List[Path]:
    """Cards `lenet_wide_relu_at.digits_<arm>_s<seed>` for the finished runs of `arms` (their records at both eps)."""
    from robust_zoo.publish import write_card_repo
    folders = []
    for arm in arms:
        for seed in seeds:
            out = root / f'{arm}-s{seed}'
            records = [out / f'eval_{t}.json' for t in THREATS]
            folders.append(write_card_repo(out, tag=f'digits_{arm}_s{seed}', evaluations=records, force=True,
                                           recipe=ROOT / 'train' / 'configs' / ARMS[arm].recipe))
            print(f'card     {folders[-1]}', flush=True)
    return folders


def write_table(page: Path, results: Path, cards: Optional[Path] = None) -> str:
    """Replace the page's block between START and END with the table and verdicts of the recorded runs."""
    from robust_zoo._io import atomic_write_text
    from robust_zoo.models._pretrained import cards_dir
    from robust_zoo.publish.leaderboard import replace_block
    runs = load_runs(results, cards if cards is not None else cards_dir())
    backbones = {ARMS[r['arm']].backbone: r['backbone'] for r in runs if r.get('backbone')}
    body = finetune_markdown(runs, backbones)
    atomic_write_text(page, replace_block(page.read_text(), START, END, body, page))
    return body


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('command', choices=('run', 'publish', 'table'))
    p.add_argument('--root', type=Path, default=Path('runs/digits_finetune'), help='the run folders')
    p.add_argument('--results', type=Path, default=RESULTS, help='the runs\' records (default: %(default)s)')
    p.add_argument('--arm', action='append', choices=tuple(ARMS), help='only these arms (repeatable; default: all)')
    p.add_argument('--seeds', type=int, nargs='+', default=list(SEEDS))
    p.add_argument('--robust-backbone', default=None, help=f'<arch>.<tag>, or a .safetensors file of unpublished '
                   f'weights (default: robust_zoo/{ARCH}\'s default tag, which must be adversarially trained)')
    p.add_argument('--standard-backbone', default=STANDARD_BACKBONE)
    p.add_argument('--eval-samples', type=int, default=500, help='test digits per evaluation (default: all 500)')
    p.add_argument('--poll', type=float, default=60.0, help='run: seconds to wait for runs another process holds')
    p.add_argument('--page', type=Path, default=PAGE, help='table: the page whose block is replaced')
    p.add_argument('--cards', type=Path, default=None, help='table: the cards folder (default: the one in use)')
    p.epilog = 'Flags after -- are passed on to train_at.py (run only).'
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index('--') if '--' in argv else len(argv)
    args, extra = p.parse_args(argv[:cut]), argv[cut + 1:]
    arms = args.arm or list(ARMS)
    try:
        if args.command == 'table':
            print(write_table(args.page, args.results, args.cards))
            return 0
        if args.command == 'publish':
            publish(args.root, arms, args.seeds)
            return 0
        needs_robust = any(ARMS[a].backbone == 'robust' for a in arms)
        backbones = dict(robust=args.robust_backbone or (robust_backbone() if needs_robust else ''),
                         standard=args.standard_backbone)
    except ValueError as e:
        print(f'digits_finetune: error: {e}', file=sys.stderr)
        return 2
    args.root.mkdir(parents=True, exist_ok=True)
    failed = 0
    todo = [(seed, arm) for seed in args.seeds for arm in arms]  # seed by seed: a session's end leaves whole seeds
    while todo:
        busy = []
        for seed, arm in todo:
            with claim(args.root, f'{arm}-s{seed}') as mine:
                if not mine:
                    print(f'busy     {args.root}/{arm}-s{seed}: another process has it; back to it later', flush=True)
                    busy.append((seed, arm))
                    continue
                failed += run_one(args.root, args.results, arm, seed, backbones, extra, args.eval_samples) == 'failed'
        if busy:
            time.sleep(args.poll)
        todo = busy
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
