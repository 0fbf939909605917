"""train/train_at.py's flags: its parser, how a recipe yaml and a resumed run's args.yaml sit under the command
line, the checks on them, and args.yaml itself (written at the start, compared on --resume, amended by a recorded
recipe change)."""
import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

import torch
import yaml
from timm.utils import ParseKwargs

from robust_zoo.data import DATASETS
from robust_zoo.evaluation import make_attack
from robust_zoo.threat_models import THREAT_MODELS, get_threat_model
from robust_zoo.training import ATTACKS, SMOOTH_BACKWARD, atomic_write_text

_logger = logging.getLogger('train_at')

config_parser = argparse.ArgumentParser(description='Training config', add_help=False)
config_parser.add_argument('-c', '--config', default='', metavar='FILE', help='YAML config; flags override it')
config_parser.add_argument('--resume', default='')

parser = argparse.ArgumentParser(description='robust_zoo adversarial training (timm style)',
                                 epilog='-c/--config FILE: a YAML recipe (train/configs/), read first; the flags '
                                        'given on the command line override it.')
g = parser.add_argument_group('Model')
g.add_argument('--model', default='robust_zoo/resnet20_silu_at', help='timm model name (robust_zoo/ prefix ok)')
g.add_argument('--pretrained', action='store_true', help='start from the published weights (fine-tuning)')
g.add_argument('--initial-checkpoint', default='', help='start from these safetensors weights (fine-tuning; in '
               "place of --pretrained's published ones)")
g.add_argument('--resume', default='', help='resume a run: its output folder or its last.ckpt (a run that stopped '
               'before its first checkpoint restarts from epoch 0)')
g.add_argument('--allow-recipe-change', action='store_true', help='--resume with flags that change the recipe: '
               'args.yaml records the change and the epoch it starts at (default: refused, listing the differences)')
g.add_argument('--num-classes', type=int, default=None, help='classes (default: the dataset\'s); a new head '
               'is made when it differs from the pretrained one')
g.add_argument('--reset-head', action='store_true', help='fine-tuning: a fresh classifier even when the '
               'number of classes is unchanged')
g.add_argument('--in-chans', type=int, default=None, help='input channels (default: the dataset\'s)')
g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra create_model kwargs')
g.add_argument('--drop', type=float, default=None, help='dropout rate')
g.add_argument('--drop-path', type=float, default=None, help='stochastic depth rate')
g.add_argument('--freeze', default='none', choices=('none', 'backbone', 'activations'),
               help='fine-tuning: train only the head, or keep activation parameters (e.g. Sparta) fixed')
g.add_argument('--sync-bn', action='store_true', help='SyncBatchNorm across processes')
g = parser.add_argument_group('Data')
g.add_argument('--dataset', default='fashion-mnist', help=f'one of {", ".join(DATASETS)}')
g.add_argument('--data-dir', default=None, help='dataset root (default: the Debian Fashion-MNIST files)')
g.add_argument('--train-samples', type=int, default=None, help='train on the first N images only')
g.add_argument('--val-samples', type=int, default=1000, help='validation images, held out from the END of '
               'the train split (never trained on)')
g.add_argument('--eval-samples', type=int, default=1000, help='test images for the final evaluation (0: skip)')
g.add_argument('--workers', type=int, default=0, help='data loader workers (folder datasets)')
g = parser.add_argument_group('Optimization')
g.add_argument('--epochs', type=int, default=10)
g.add_argument('-b', '--batch-size', type=int, default=128, help='batch size per process')
g.add_argument('--opt', default='sgd')
g.add_argument('--lr', type=float, default=0.1)
g.add_argument('--momentum', type=float, default=0.9)
g.add_argument('--weight-decay', type=float, default=5e-4)
g.add_argument('--clip-grad', type=float, default=None)
g.add_argument('--sched', default='cosine')
g.add_argument('--sched-on-updates', action='store_true', help='step the schedule every update, not epoch')
g.add_argument('--warmup-epochs', type=float, default=0)
g.add_argument('--warmup-lr', type=float, default=1e-5)
g.add_argument('--min-lr', type=float, default=0.0)
g.add_argument('--decay-milestones', type=int, nargs='+', default=[30, 60, 90])
g.add_argument('--decay-rate', type=float, default=0.1)
g.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights (ModelEmaV3)')
g.add_argument('--model-ema-decay', type=float, default=0.999)
g.add_argument('--amp', action='store_true', help='mixed precision (bf16 on CPU; --amp-dtype on GPU) where the '
               'device computes it natively; fp32 elsewhere (emulated bf16 is ~8x slower), with a log line')
g.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'))
g.add_argument('--channels-last', action='store_true')
g.add_argument('--fused-act', action='store_true', help='compiled kernels for the parametric activations (PSSiLU, '
               'PSoftplus, Sparta; robust_zoo.layers.set_fused_activations): same math, 1.09-1.18x faster fp32 steps '
               'on a CPU (benchmarks/bench_activations.py); needs a C++ compiler; stays off under bf16 autocast '
               '(--amp where bf16 is native)')
g.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
g = parser.add_argument_group('Adversarial training')
g.add_argument('--attack', default='fgsm-rs', choices=ATTACKS)
g.add_argument('--attack-eps', type=float, default=0.1, help='budget in [0, 1] pixel units (8/255, not 8)')
g.add_argument('--attack-step', type=float, default=None, help='step size (default: 1.25 eps for fgsm-rs, '
               'eps for n-fgsm, 2.5 eps / steps for pgd and trades)')
g.add_argument('--attack-steps', type=int, default=10)
g.add_argument('--attack-norm', default='Linf', choices=('Linf', 'L2'))
g.add_argument('--trades-beta', type=float, default=6.0)
g.add_argument('--adv-frac', type=float, default=1.0, help='attack only this leading fraction of each batch and '
               'train on it beside the clean rest (Croce et al. 2019: 0.5)')
g.add_argument('--bn-mode', default='train', choices=('train', 'eval'),
               help='BN during the attack: batch stats without moving running stats (train), or eval mode')
g.add_argument('--smooth-backward', default='none', choices=SMOOTH_BACKWARD,
               help="SAT sec. 3: ReLU's smooth backward for the attack, the update, or both; none: the "
               "activations' backward as built (relu_smoothgrad models: smooth in both)")
g.add_argument('--val-attack', default='pgd-10', help="validation attack, e.g. pgd-10, fgsm, or 'none'")
g.add_argument('--early-stop-robust', action='store_true', help='keep the best robust checkpoint as the '
               'result and stop on catastrophic (Wong et al. 2020) or robust (Rice et al. 2020) overfitting')
g.add_argument('--early-stop-drop', type=float, default=0.5, help='stop when validation robust accuracy falls '
               'below this fraction of its best')
g.add_argument('--threat-model', default=None, help='for the final evaluation (default: the dataset\'s)')
g.add_argument('--eval-attacks', default='pgd-20', help='final evaluation attacks, comma separated')
g = parser.add_argument_group('Output')
g.add_argument('--output', default='output/train', help='run folder')
g.add_argument('--experiment', default='', help='sub-folder of --output for this run')
g.add_argument('--seed', type=int, default=0)
g.add_argument('--log-interval', type=int, default=50)
g.add_argument('--checkpoint-hist', type=int, default=1, help='epoch checkpoints to keep')
g.add_argument('--checkpoint-interval', type=int, default=0, help='also checkpoint every N steps (0: per epoch)')
g.add_argument('--no-progress', action='store_true', help='no progress bar even in a terminal')


class UserError(Exception):
    """Bad input: reported in one line, exit code 2, nothing written."""


def _yaml_defaults(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f'config file {path} does not exist.')
    cfg = yaml.safe_load(path.read_text()) or {}
    known = vars(parser.parse_args([]))
    unknown = [k for k in cfg if k not in known and k not in ('config', 'recipe_changes')]
    if unknown:
        raise UserError(f'{path}: unknown keys {unknown}; keys are the flags with _ for - (e.g. attack_eps).')
    return {k: v for k, v in cfg.items() if k in known}


def parse_args(argv=None):
    """Defaults, then a resumed run's args.yaml, then -c/--config, then the command line."""
    pre, _ = config_parser.parse_known_args(argv)
    defaults, saved_run = {}, None
    if pre.resume:
        run_dir = Path(pre.resume) if Path(pre.resume).is_dir() else Path(pre.resume).parent
        if (run_dir / 'args.yaml').is_file():
            saved_run = _yaml_defaults(run_dir / 'args.yaml')
            saved_run['config'] = (yaml.safe_load((run_dir / 'args.yaml').read_text()) or {}).get('config', '')
            saved_run['recipe_changes'] = (yaml.safe_load((run_dir / 'args.yaml').read_text()) or {}).get(
                'recipe_changes') or []
            defaults.update({k: v for k, v in saved_run.items()
                             if k not in ('resume', 'output', 'experiment', 'config', 'recipe_changes')})
    if pre.config:
        defaults.update(_yaml_defaults(Path(pre.config)))
    saved = {a.dest: a.default for a in parser._actions}
    parser.set_defaults(**defaults)
    try:
        args = parser.parse_args([a for a in (argv if argv is not None else sys.argv[1:])
                                  if a not in ('-c', '--config', pre.config) or not pre.config])
    finally:
        parser.set_defaults(**saved)
    args.config = pre.config or (saved_run or {}).get('config', '')
    args.saved_run = saved_run  # the resumed run's args.yaml, to compare the recipe with (not a flag: not saved)
    return args


# flags that do not change what a run learns: a resumed run may change them (args.yaml keeps the last values)
NOT_RECIPE = ('resume', 'output', 'experiment', 'config', 'device', 'workers', 'log_interval', 'no_progress',
              'checkpoint_hist', 'checkpoint_interval', 'fused_act', 'eval_samples', 'eval_attacks', 'threat_model',
              'allow_recipe_change', 'recipe_changes')


def recipe_changes(args) -> dict:
    """{flag: {was, now}} for every recipe flag of a resumed run that differs from its args.yaml; a UserError
    listing them unless --allow-recipe-change (then args.yaml records them as a change from the resumed epoch)."""
    saved = args.saved_run or {}
    changes = {k: dict(was=v, now=getattr(args, k)) for k, v in saved.items()
               if k not in NOT_RECIPE and hasattr(args, k) and getattr(args, k) != v}
    if changes and not args.allow_recipe_change:
        listed = '; '.join(f"--{k.replace('_', '-')} {c['was']!r} -> {c['now']!r}" for k, c in changes.items())
        raise UserError(f'--resume {args.resume}: these flags change the run\'s recipe ({listed}), but its args.yaml, '
                        'from which its model card is written, records the old one; nothing was changed. Resume with '
                        'the same flags (drop these), start a new run in another --output, or pass '
                        '--allow-recipe-change to train on with them (args.yaml then records the change and the epoch '
                        'it starts at, and the card states it).')
    return changes


def check_args(args) -> None:
    if args.attack_eps > 1 and args.attack != 'none':
        raise UserError(f'--attack-eps {args.attack_eps} is in 0..255 units; budgets are in [0, 1] pixel units: '
                        f'pass {args.attack_eps:g}/255 = {args.attack_eps / 255:.5f}.')
    if args.dataset not in DATASETS and args.dataset != 'imagenet-1k':
        raise UserError(f'unknown --dataset {args.dataset!r}; choose one of {", ".join(DATASETS)}.')
    if args.threat_model is not None and args.threat_model not in THREAT_MODELS:
        raise UserError(f'unknown --threat-model {args.threat_model!r}; choose one of {", ".join(THREAT_MODELS)}.')
    for spec in [args.val_attack] + args.eval_attacks.split(','):
        if spec and spec != 'none':
            try:
                make_attack(spec, get_threat_model('fashion-mnist-linf'))
            except ValueError as e:
                raise UserError(str(e)) from None


def write_args(out: Path, args, recipe_changes_list: Optional[list] = None) -> None:
    """args.yaml: every flag of the run (config: the recipe it started from) and any recorded recipe changes."""
    flags = ({a.dest for a in parser._actions} - {'help', 'allow_recipe_change'}) | {'config'}
    values = {k: v for k, v in vars(args).items() if k in flags}
    if recipe_changes_list:
        values['recipe_changes'] = recipe_changes_list
    atomic_write_text(out / 'args.yaml', yaml.safe_dump(values, sort_keys=False))


def record_recipe_change(out: Path, args, changes: dict, epoch: int) -> None:
    """--allow-recipe-change: args.yaml takes the new flags and records what changed from which epoch."""
    earlier = [c for c in (args.saved_run or {}).get('recipe_changes') or [] if c.get('from_epoch', 0) < epoch]
    write_args(out, args, earlier + [dict(from_epoch=epoch, changes=changes)])
    _logger.warning(f'recipe changed from epoch {epoch} on (recorded in {out / "args.yaml"}): '
                    + ', '.join(f"{k} {c['was']!r} -> {c['now']!r}" for k, c in changes.items()))
