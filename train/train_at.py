#!/usr/bin/env python3
"""Adversarial training, timm style: `-c/--config` yaml first, then command-line flags.

    python train/train_at.py --model robust_zoo/resnet20_silu_at --dataset fashion-mnist \
        --attack fgsm-rs --attack-eps 0.1 --epochs 1 --train-samples 512 --val-samples 256 --output OUT
    torchrun --nproc_per_node 2 train/train_at.py -c train/configs/fmnist_resnet20.yaml --output OUT

The heavy lifting lives in `robust_zoo.training` (the attack step, deterministic resumable epochs, atomic
checkpoints); this script wires it to timm's optimizer, scheduler, EMA, distributed and summary helpers.
Outputs in --output: args.yaml, summary.csv, log.txt, last.ckpt (training state, resumable),
model.safetensors (the EMA weights under --model-ema), model_best.safetensors, model_raw.safetensors (the raw
weights under --model-ema), final_eval.json (robust_zoo.evaluate on the test split).
"""
import argparse
import difflib
import json
import logging
import logging.handlers
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import timm
import torch
import yaml
from timm.optim import create_optimizer_v2
from timm.data import resolve_data_config
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, ParseKwargs, distribute_bn, init_distributed_device, update_summary

import robust_zoo  # noqa: F401  (registers the robust_zoo/ models and activations)
from robust_zoo.data import DATASETS, DatasetError, create_dataset, load_dataset
from robust_zoo.evaluation import evaluate, make_attack
from robust_zoo._io import sha256_file
from robust_zoo.models._hub import check_weights_belong, weights_metadata
from robust_zoo.layers import set_fused_activations
from robust_zoo.threat_models import THREAT_MODELS, ThreatModel, get_threat_model
from robust_zoo.training import (
    ATTACKS, CO_GAP, SMOOTH_BACKWARD, AttackConfig, CheckpointError, atomic_write, atomic_write_text,
    catastrophic_overfitting_epochs, device_name, epoch_batches, freeze, load_model_state, load_train_state,
    load_weights, ranks_identical, resolve_autocast, save_train_state, save_weights, set_smooth_backward, subset,
    train_one_epoch, validate,
)

_logger = logging.getLogger('train_at')
DEFAULT_THREAT = {'fashion-mnist': 'fashion-mnist-linf', 'digits': 'digits-linf', 'mnist': 'mnist-linf',
                  'cifar10': 'cifar10-linf', 'cifar100': 'cifar100-linf', 'imagenet': 'imagenet-linf',
                  'imagenet-1k': 'imagenet-linf'}
RUN_FILES = ('args.yaml', 'last.ckpt', 'summary.csv')

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


def never_checkpointed(out: Path) -> bool:
    """A run folder whose run stopped before its first checkpoint: args.yaml, but nothing trained to resume."""
    return (out / 'args.yaml').is_file() and not any(
        (out / f).exists() for f in ('last.ckpt', 'summary.csv', 'model.safetensors', 'final_eval.json')) \
        and not any(out.glob('checkpoint-*.ckpt'))


def resolve_output(args) -> Path:
    out = Path(args.output) / args.experiment if args.experiment else Path(args.output)
    if args.resume:
        resume = Path(args.resume)
        return resume if resume.is_dir() else resume.parent  # a resumed run writes into its own folder
    if never_checkpointed(out):
        raise UserError(f'{out} holds a run that stopped before its first checkpoint (args.yaml, no last.ckpt): '
                        f'restart it in place with --resume {out} (it starts again from epoch 0, with its args.yaml '
                        'and the flags you add), or pick a new --output/--experiment.')
    if out.exists() and any((out / f).exists() for f in RUN_FILES):
        raise UserError(f'{out} already holds a training run; nothing was overwritten. Resume it with '
                        f'--resume {out}, or pick a new --output/--experiment.')
    return out


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


def build_model(args, num_classes: int, in_chans: int):
    kwargs = dict(args.model_kwargs)
    if args.drop is not None:
        kwargs['drop_rate'] = args.drop
    if args.drop_path is not None:
        kwargs['drop_path_rate'] = args.drop_path
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained and not args.initial_checkpoint,
                                  num_classes=num_classes,
                                  in_chans=in_chans, **kwargs)
    except RuntimeError as e:
        if 'Unknown model' in str(e):
            if args.model.startswith('robust_zoo/'):  # robust_zoo's message names close matches and the listing
                raise UserError(f'--model: {e}') from None
            close = difflib.get_close_matches(args.model, timm.list_models(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ''
            raise UserError(f'--model: {e}.{hint} List them with timm.list_models(), or `robust-zoo list` for '
                            "robust_zoo's (as robust_zoo/<name>).") from None
        raise
    if args.initial_checkpoint:  # weights of another architecture or activation are refused, naming both
        act = args.model_kwargs.get('act_layer') if isinstance(args.model_kwargs.get('act_layer'), str) else None
        check_weights_belong(args.initial_checkpoint, args.model, act)
        state = load_weights(args.initial_checkpoint)
        own = model.state_dict()
        head = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if head:
            _logger.info(f'new head: not loading {head} (shape differs from the checkpoint)')
        load_model_state(model, {k: v for k, v in state.items() if k not in head} | {k: own[k] for k in head},
                         args.initial_checkpoint)
    if args.reset_head:
        model.reset_classifier(num_classes)
        _logger.info(f'new head: {num_classes} classes, freshly initialised (--reset-head)')
    if args.smooth_backward != 'none':
        from robust_zoo.layers import ReLUSmoothGrad, swap_activations
        if not any(isinstance(m, ReLUSmoothGrad) for m in model.modules()):
            if not any(isinstance(m, torch.nn.ReLU) for m in model.modules()):
                raise UserError(f'--smooth-backward {args.smooth_backward} needs a ReLU model; {args.model} has none.')
            swap_activations(model, 'relu_smoothgrad', types=(torch.nn.ReLU,))
            _logger.info('--smooth-backward: ReLU modules now relu_smoothgrad (same forward, switchable backward)')
        set_smooth_backward(model, False)
    return model


def weights_meta(args: argparse.Namespace, epoch: int) -> dict:
    """The safetensors metadata of the run's weights: its --model, epoch and dataset, and the architecture and
    activation they belong to (loaders refuse them for another model: robust_zoo.models._hub.check_weights_belong)."""
    act = args.model_kwargs.get('act_layer') if isinstance(args.model_kwargs.get('act_layer'), str) else None
    return dict(arch=args.model, epoch=str(epoch), dataset=args.dataset, **weights_metadata(args.model, act))


def non_finite_message(error: Exception, epoch: int, out: Path, args) -> str:
    """What to do after a non-finite loss: the changes that help, and how to go on from where the run is."""
    fix = (f'lower --lr (now {args.lr:g}), add --warmup-epochs or --clip-grad'
           + (', or try without --amp' if args.amp else ''))
    if not (out / 'last.ckpt').exists():
        return (f'stopped: {error} at epoch {epoch}, before the first checkpoint: nothing was kept. {fix}, then '
                f'restart in place: python train/train_at.py --resume {out} <the changed flags> (it starts again from '
                'epoch 0; nothing was trained, so this is no recipe change).')
    return (f'stopped: {error} at epoch {epoch}. The last good checkpoint {out / "last.ckpt"} is intact; {fix}, then '
            f'--resume {out} --allow-recipe-change <the changed flags> (args.yaml records the change), or start a new '
            'run with them.')


def resolve_amp(args: argparse.Namespace, device: torch.device) -> Optional[str]:
    """--amp where low precision is emulated becomes fp32 (resolve_autocast); args.amp is updated so that args.yaml
    records what ran. Returns the message to log (None when nothing changed)."""
    args.amp, message = resolve_autocast(args.amp, device, getattr(torch, args.amp_dtype), 'this run trains')
    return message and f'{message}; args.yaml records amp: false'


def overfitting_warning(args: argparse.Namespace, epoch: int, train_metrics: dict, val: dict) -> Optional[str]:
    """The log's warning when an epoch shows catastrophic overfitting (robust_zoo.training.overfitting), else None."""
    if not catastrophic_overfitting_epochs([dict(epoch=epoch, train_adv_acc=train_metrics['adv_acc'],
                                                 eval_robust_acc=val.get('robust_acc'))], args.attack, args.val_attack):
        return None
    return (f'epoch {epoch}: catastrophic overfitting suspected: {args.attack} training accuracy '
            f'{train_metrics["adv_acc"]:.3f} is more than {CO_GAP} above validation {args.val_attack} accuracy '
            f'{val["robust_acc"]:.3f}. ' + ('Early stopping keeps the best validation epoch.' if args.early_stop_robust
                                             else 'The last epoch is kept: add --early-stop-robust to keep the best.')
            + ' The model card of this run will say so.')


def resolve_fused_act(args: argparse.Namespace, device: torch.device) -> Optional[str]:
    """--fused-act turns on robust_zoo's compiled activation kernels where they were measured to pay: fp32 (under
    bf16 autocast an earlier build of fused Sparta ran slower than eager) with a compiler for torch.compile's CPU
    code. Otherwise args.fused_act becomes False, so args.yaml records what ran. Returns the message to log."""
    if not args.fused_act:
        return None
    if args.amp:
        args.fused_act = False
        return '--fused-act: the fused kernels are measured in fp32 only, so under --amp the activations run eagerly'
    compilers = (os.environ.get('CXX', ''), 'g++', 'c++', 'clang++')
    if device.type == 'cpu' and not any(shutil.which(c) for c in compilers if c):
        args.fused_act = False
        return ('--fused-act: no C++ compiler (g++, c++, clang++ or $CXX) for torch.compile on this CPU, so the '
                'activations run eagerly; install one (e.g. apt-get install g++) for the fused kernels')
    set_fused_activations(True)
    return '--fused-act: parametric activations run compiled kernels (same math; a few seconds to compile per shape)'


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    device = init_distributed_device(args)
    primary = args.rank == 0
    out = resolve_output(args)
    resume_state, restarted, changes = None, False, {}
    if args.resume and Path(args.resume).is_dir() and never_checkpointed(out):
        restarted, args.resume, args.output, args.experiment = True, '', str(out), ''  # nothing trained: from epoch 0
    elif args.resume:
        resume_state = load_train_state(out / 'last.ckpt' if Path(args.resume).is_dir() else args.resume,
                                        arch=args.model)
        changes = recipe_changes(args)
    early = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)  # for log.txt
    logging.basicConfig(level=logging.INFO if primary else logging.WARNING, format='%(message)s',
                        handlers=[logging.StreamHandler(sys.stdout), early], force=True)
    log = _logger.info
    torch.manual_seed(args.seed)
    for message in (resolve_amp(args, device), resolve_fused_act(args, device)):
        if message is not None:
            log(message)

    try:
        full = create_dataset(args.dataset, 'train', args.data_dir)
    except (DatasetError, ValueError) as e:
        raise UserError(str(e)) from None
    n_total = len(full)
    n_val = min(args.val_samples, n_total // 2)
    n_train = n_total - n_val if args.train_samples is None else min(args.train_samples, n_total - n_val)
    if n_train < args.batch_size * args.world_size:
        raise UserError(f'{n_train} training images cannot fill one batch of {args.batch_size} x {args.world_size} '
                        f'process(es): lower -b/--batch-size or raise --train-samples.')
    train_ds = subset(full, torch.arange(n_train))
    val_ds = subset(full, torch.arange(n_total - n_val, n_total))
    x0, _ = train_ds[0]
    if args.in_chans is not None and args.in_chans != x0.shape[0]:
        raise UserError(f'--in-chans {args.in_chans}, but {args.dataset} images have {x0.shape[0]} channel(s): drop '
                        f'--in-chans (it defaults to the dataset\'s) or pass {x0.shape[0]}.')
    num_classes = args.num_classes or (len(full.classes) if hasattr(full, 'classes') else int(full.labels.max()) + 1)
    model = build_model(args, num_classes, args.in_chans or x0.shape[0])
    data_config = resolve_data_config(model=model)
    if not hasattr(full, 'images') and tuple(x0.shape[1:]) != tuple(data_config['input_size'][1:]):
        size = data_config['input_size'][-1]  # folder datasets follow the model's input size
        full = create_dataset(args.dataset, 'train', args.data_dir, img_size=size)
        train_ds = subset(full, torch.arange(n_train))
        val_ds = subset(full, torch.arange(n_total - n_val, n_total))
        log(f'{args.dataset}: images resized and center-cropped to {size} (the model\'s input size)')
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    frozen = freeze(model, args.freeze)
    if frozen:
        log(f'--freeze {args.freeze}: {len(frozen)} parameter tensors fixed')
    if args.sync_bn and args.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    base = model
    optimizer = create_optimizer_v2(base, args.opt, lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    batches_per_epoch = n_train // (args.batch_size * args.world_size)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, decay_milestones=args.decay_milestones,
        decay_rate=args.decay_rate, step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=batches_per_epoch)
    ema = ModelEmaV3(base, decay=args.model_ema_decay) if args.model_ema else None
    amp_dtype = getattr(torch, args.amp_dtype)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if args.amp else None
    scaler = torch.amp.GradScaler(device.type) if args.amp and amp_dtype == torch.float16 else None
    cfg = AttackConfig(attack=args.attack, eps=args.attack_eps, steps=args.attack_steps, step_size=args.attack_step,
                       norm=args.attack_norm, trades_beta=args.trades_beta, bn_mode=args.bn_mode,
                       smooth_backward=args.smooth_backward, adv_frac=args.adv_frac)
    threat = get_threat_model(args.threat_model or DEFAULT_THREAT[args.dataset])
    val_threat = ThreatModel(f'train-val-{args.attack_norm}', args.dataset, args.attack_norm, args.attack_eps,
                             (), n_val, 'none', step_size=None) if args.attack != 'none' else threat
    val_attack = None if args.val_attack in ('', 'none') else make_attack(args.val_attack, val_threat,
                                                                          seed=args.seed)

    # every input is checked: only now does the run folder (and its log.txt) appear
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        file_log = logging.FileHandler(out / 'log.txt')
        file_log.setFormatter(logging.Formatter('%(message)s'))
        early.setTarget(file_log)
        early.flush()
        logging.getLogger().addHandler(file_log)
    logging.getLogger().removeHandler(early)
    early.close()
    if args.distributed:
        torch.distributed.barrier()

    start_epoch, start_step, global_step = 0, 0, 0
    best = dict(robust_acc=-1.0, epoch=-1)
    stopped_early = False
    if resume_state is not None:
        load_model_state(base, resume_state['model'], f'{out}/last.ckpt')
        optimizer.load_state_dict(resume_state['optimizer'])
        scheduler.load_state_dict(resume_state['scheduler'])
        if scaler is not None and resume_state.get('scaler'):
            scaler.load_state_dict(resume_state['scaler'])
        if ema is not None and resume_state.get('ema'):
            ema.load_state_dict(resume_state['ema'])
        start_epoch, start_step = resume_state['epoch'], resume_state['step_in_epoch']
        global_step, best = resume_state['global_step'], resume_state['best']
        stopped_early = bool(resume_state.get('stopped_early'))  # killed after an early stop: do not train on
        log(f'resumed {out}/last.ckpt at epoch {start_epoch}, step {start_step} ({global_step} updates)')
        if changes and primary:
            record_recipe_change(out, args, changes, start_epoch)
        if primary and (out / 'summary.csv').exists():
            _truncate_summary(out / 'summary.csv', start_epoch)
    elif primary:
        if restarted:
            log(f'{out} stopped before its first checkpoint: restarting it from epoch 0')
        write_args(out, args)
    if start_epoch > 0 or start_step > 0:
        scheduler.step(start_epoch)
        if args.sched_on_updates:
            scheduler.step_update(global_step)

    model = base
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(base, device_ids=[device] if device.type == 'cuda' else None)

    def state(epoch: int, step: int, gstep: int) -> dict:
        return dict(arch=args.model, model=base.state_dict(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else {},
                    ema=ema.state_dict() if ema else {}, epoch=epoch, step_in_epoch=step, global_step=gstep,
                    best=best, stopped_early=stopped_early,
                    args={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    n_params = sum(p.numel() for p in base.parameters())
    log(f'{args.model}: {n_params / 1e6:.3f}M parameters; {args.dataset}: {n_train} train / {n_val} val images; '
        f'{args.world_size} process(es) x batch {args.batch_size}; attack {args.attack} eps {args.attack_eps:g} '
        f'(step {cfg.resolved_step_size:.4g}); {num_epochs} epochs of {batches_per_epoch} steps; output {out}')
    progress = None
    if primary and sys.stderr.isatty() and not args.no_progress:
        from tqdm import tqdm
        progress = tqdm(total=num_epochs * batches_per_epoch, initial=global_step, unit='step', leave=False)

    # a run resumed after its last epoch (killed during the final evaluation) trains no more: it evaluates
    eval_model = ema.module if ema is not None else base
    epochs_run = start_epoch
    for epoch in range(start_epoch, start_epoch if stopped_early else num_epochs):
        batches = epoch_batches(n_train, args.batch_size, seed=args.seed, epoch=epoch, rank=args.rank,
                                world_size=args.world_size)

        def on_step(step_done: int, gstep: int, epoch=epoch, batches=batches) -> None:
            if args.checkpoint_interval and step_done % args.checkpoint_interval == 0 \
                    and step_done < len(batches) and primary:
                save_train_state(out / 'last.ckpt', state(epoch, step_done, gstep))

        log(f'epoch {epoch}' + (f' (from step {start_step})' if start_step else ''))
        try:
            train_metrics = train_one_epoch(
                model, train_ds, batches, optimizer, cfg, seed=args.seed, global_step=global_step,
                start_step=start_step, rank=args.rank, device=device, attack_model=base, autocast=autocast,
                scaler=scaler, scheduler=scheduler, ema=ema, channels_last=args.channels_last,
                log_interval=args.log_interval, workers=args.workers, log=log, on_step=on_step, progress=progress)
        except FloatingPointError as e:
            _logger.error(non_finite_message(e, epoch, out, args))
            return 3
        global_step += len(batches) - start_step
        start_step = 0
        if args.distributed:  # each rank's last forward moved its own BN running stats: average them
            distribute_bn(base, args.world_size, reduce=True)
        scheduler.step(epoch + 1)
        epochs_run = epoch + 1
        val = validate(eval_model, val_ds, val_attack, device=device, rank=args.rank, world_size=args.world_size,
                       distributed=args.distributed) if n_val else {}
        log(f'epoch {epoch} done: train loss {train_metrics["loss"]:.4f} adv acc {train_metrics["adv_acc"]:.3f} '
            f'({train_metrics["img_per_sec"]:.0f} img/s); val clean {val.get("clean_acc", float("nan")):.3f} '
            f'{args.val_attack} {val.get("robust_acc", float("nan")):.3f}')
        warning = overfitting_warning(args, epoch, train_metrics, val)
        if warning:
            _logger.warning(warning)
        robust = val.get('robust_acc', val.get('clean_acc', 0.0))
        improved = robust > best['robust_acc']
        if improved:
            best = dict(robust_acc=robust, epoch=epoch)
        if primary:
            meta = weights_meta(args, epoch)
            save_weights(eval_model.state_dict(), out / 'model.safetensors', meta)
            if ema is not None:
                save_weights(base.state_dict(), out / 'model_raw.safetensors', meta)
            if improved:
                save_weights(eval_model.state_dict(), out / 'model_best.safetensors', meta)
            save_train_state(out / 'last.ckpt', state(epoch + 1, 0, global_step))
            if args.checkpoint_hist > 0:
                save_train_state(out / f'checkpoint-{epoch}.ckpt', state(epoch + 1, 0, global_step))
                for old in sorted(out.glob('checkpoint-*.ckpt'), key=lambda p: int(p.stem.split('-')[1]))[
                        :-args.checkpoint_hist]:
                    old.unlink()
            update_summary(epoch, train_metrics, val, out / 'summary.csv', lr=optimizer.param_groups[0]['lr'])
        if args.early_stop_robust and best['robust_acc'] > 0 and robust < args.early_stop_drop * best['robust_acc']:
            log(f'early stop: validation robust accuracy {robust:.3f} fell below {args.early_stop_drop} x best '
                f'{best["robust_acc"]:.3f} (epoch {best["epoch"]}): catastrophic overfitting; keeping the best.')
            stopped_early = True
            if primary:
                save_train_state(out / 'last.ckpt', state(epoch + 1, 0, global_step))
            break
    if progress is not None:
        progress.close()

    same = ranks_identical(base)
    if args.distributed:
        log(f'ranks hold identical parameters: {same}')
    if not primary:
        return 0
    if args.early_stop_robust and (out / 'model_best.safetensors').exists():
        load_model_state(eval_model, load_weights(out / 'model_best.safetensors'), 'model_best.safetensors')
        save_weights(eval_model.state_dict(), out / 'model.safetensors', weights_meta(args, best['epoch']))
    record = dict(model=args.model, dataset=args.dataset, epochs_run=epochs_run,
                  stopped_early=stopped_early, best=best, world_size=args.world_size, ranks_identical=same,
                  train_images=n_train, device_name=device_name(device), threads=torch.get_num_threads())
    if args.eval_samples:
        try:
            x, y = load_dataset(threat.dataset, 'test', args.data_dir, n=args.eval_samples)
        except (DatasetError, ValueError) as e:
            log(f'final evaluation skipped: {e}')
        else:
            # the attacks see a new batch shape per batch (clean-correct points): no compiling
            set_fused_activations(False)
            # trained on this run's data now (a fine-tune's cfg names its backbone's): the evaluator's dataset check
            eval_model.pretrained_cfg = dict(eval_model.pretrained_cfg, dataset=threat.dataset,
                                             threat_model=threat.id)
            result = evaluate(eval_model.eval(), threat, data=(x, y), attacks=args.eval_attacks.split(','),
                              n_examples=len(y), seed=args.seed, model_name=args.model,
                              weights_sha256=sha256_file(out / 'model.safetensors'))
            record['evaluation'] = result.to_dict()
            log(f'final evaluation on {len(y)} test images, {threat.id}: clean {result.clean_accuracy:.3f}, '
                f'robust {result.robust_accuracy:.3f} ({args.eval_attacks})')
    atomic_write_text(out / 'final_eval.json', json.dumps(record, indent=2))  # its presence marks a finished run
    log(f'done: {out}')
    return 0


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


def _truncate_summary(path: Path, start_epoch: int) -> None:
    """Drop summary rows of epochs that the resumed run will redo."""
    import csv
    rows = list(csv.DictReader(path.open()))
    keep = [r for r in rows if int(r['epoch']) < start_epoch]
    if len(keep) == len(rows):
        return
    def write(tmp):
        with open(tmp, 'w', newline='') as f:
            if keep:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(keep)
    atomic_write(path, write)


if __name__ == '__main__':
    try:
        code = main()
    except (UserError, CheckpointError) as e:
        print(f'train_at.py: error: {e}', file=sys.stderr)
        code = 2
    finally:
        # under torchrun, a process group left to the interpreter's exit can abort a rank at teardown ("terminate
        # called without an active exception", seen once on a loaded CI machine): close it first, as PyTorch advises
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    sys.exit(code)
