#!/usr/bin/env python3
"""Adversarial training, timm style: `-c/--config` yaml first, then command-line flags.

    python train/train_at.py --model robust_zoo/resnet20_silu_at --dataset fashion-mnist \
        --attack fgsm-rs --attack-eps 0.1 --epochs 1 --train-samples 512 --val-samples 256 --output OUT
    torchrun --nproc_per_node 2 train/train_at.py -c train/configs/fmnist_resnet20.yaml --output OUT

The heavy lifting lives in `robust_zoo.training` (the attack step, deterministic resumable epochs, atomic
checkpoints); this script wires it to timm's optimizer, scheduler, EMA, distributed and summary helpers. Its
flags, and the args.yaml that records them, are in train_args.py beside it.
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
from typing import Optional, Tuple

import timm
import torch
from torch.utils.data import Dataset
from timm.optim import create_optimizer_v2
from timm.data import resolve_data_config
from timm.utils import ModelEmaV3, distribute_bn, init_distributed_device, update_summary

import robust_zoo  # noqa: F401  (registers the robust_zoo/ models and activations)
from robust_zoo.data import DatasetError, create_dataset, load_dataset
from robust_zoo.evaluation import evaluate, make_attack
from robust_zoo._io import sha256_file
from robust_zoo.models._hub import check_weights_belong, weights_metadata
from robust_zoo.layers import set_fused_activations
from robust_zoo.threat_models import ThreatModel, get_threat_model
from robust_zoo.training import (
    CO_GAP, AttackConfig, CheckpointError, atomic_write, atomic_write_text, catastrophic_overfitting_epochs,
    create_run_scheduler, device_name, epoch_batches, freeze, load_model_state, load_train_state, load_weights,
    ranks_identical, resolve_autocast, save_train_state, save_weights, set_smooth_backward, subset, train_one_epoch,
    validate,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_args.py beside this file (also when loaded by path)
from train_args import (  # noqa: E402
    UserError, check_args, parse_args, recipe_changes, record_recipe_change, write_args,
)

_logger = logging.getLogger('train_at')
DEFAULT_THREAT = {'fashion-mnist': 'fashion-mnist-linf', 'digits': 'digits-linf', 'mnist': 'mnist-linf',
                  'cifar10': 'cifar10-linf', 'cifar100': 'cifar100-linf', 'imagenet': 'imagenet-linf',
                  'imagenet-1k': 'imagenet-linf'}
RUN_FILES = ('args.yaml', 'last.ckpt', 'summary.csv')

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


def train_val_split(args: argparse.Namespace, img_size: Optional[int] = None) -> Tuple[Dataset, Dataset, Dataset]:
    """The train split, its first --train-samples images to train on and its last --val-samples held out for
    validation (never trained on)."""
    try:
        full = create_dataset(args.dataset, 'train', args.data_dir, img_size=img_size)
    except (DatasetError, ValueError) as e:
        raise UserError(str(e)) from None
    n_total = len(full)
    n_val = min(args.val_samples, n_total // 2)
    n_train = n_total - n_val if args.train_samples is None else min(args.train_samples, n_total - n_val)
    if n_train < args.batch_size * args.world_size:
        raise UserError(f'{n_train} training images cannot fill one batch of {args.batch_size} x {args.world_size} '
                        f'process(es): lower -b/--batch-size or raise --train-samples.')
    return full, subset(full, torch.arange(n_train)), subset(full, torch.arange(n_total - n_val, n_total))


def final_evaluation(args: argparse.Namespace, model: torch.nn.Module, out: Path,
                     threat: ThreatModel) -> Optional[dict]:
    """robust_zoo.evaluate of the run's weights on the first --eval-samples test images under --eval-attacks, the
    record final_eval.json keeps; None (logged) where the test split cannot be read."""
    try:
        x, y = load_dataset(threat.dataset, 'test', args.data_dir, n=args.eval_samples)
    except (DatasetError, ValueError) as e:
        _logger.info(f'final evaluation skipped: {e}')
        return None
    set_fused_activations(False)  # the attacks see a new batch shape per batch (clean-correct points): no compiling
    # trained on this run's data now (a fine-tune's cfg names its backbone's): the evaluator's dataset check
    model.pretrained_cfg = dict(model.pretrained_cfg, dataset=threat.dataset, threat_model=threat.id)
    result = evaluate(model.eval(), threat, data=(x, y), attacks=args.eval_attacks.split(','), n_examples=len(y),
                      seed=args.seed, model_name=args.model, weights_sha256=sha256_file(out / 'model.safetensors'))
    _logger.info(f'final evaluation on {len(y)} test images, {threat.id}: clean {result.clean_accuracy:.3f}, '
                 f'robust {result.robust_accuracy:.3f} ({args.eval_attacks})')
    return result.to_dict()


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

    full, train_ds, val_ds = train_val_split(args)
    n_train, n_val = len(train_ds), len(val_ds)
    x0, _ = train_ds[0]
    if args.in_chans is not None and args.in_chans != x0.shape[0]:
        raise UserError(f'--in-chans {args.in_chans}, but {args.dataset} images have {x0.shape[0]} channel(s): drop '
                        f'--in-chans (it defaults to the dataset\'s) or pass {x0.shape[0]}.')
    num_classes = args.num_classes or (len(full.classes) if hasattr(full, 'classes') else int(full.labels.max()) + 1)
    model = build_model(args, num_classes, args.in_chans or x0.shape[0])
    data_config = resolve_data_config(model=model)
    if not hasattr(full, 'images') and tuple(x0.shape[1:]) != tuple(data_config['input_size'][1:]):
        size = data_config['input_size'][-1]  # folder datasets follow the model's input size
        full, train_ds, val_ds = train_val_split(args, img_size=size)
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
    scheduler, num_epochs = create_run_scheduler(optimizer, vars(args), updates_per_epoch=batches_per_epoch)
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
        epoch_lr = optimizer.param_groups[0]['lr']  # the lr this epoch trained with, as timm's train.py logs it
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
            update_summary(epoch, train_metrics, val, out / 'summary.csv', lr=epoch_lr)
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
        evaluation = final_evaluation(args, eval_model, out, threat)
        if evaluation is not None:
            record['evaluation'] = evaluation
    atomic_write_text(out / 'final_eval.json', json.dumps(record, indent=2))  # its presence marks a finished run
    log(f'done: {out}')
    return 0


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
