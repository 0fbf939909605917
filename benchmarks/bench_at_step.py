"""Cost of an adversarial training step relative to a standard training step, on the same model and batch.

Variants (each has its own copy of the model and optimizer, same initial weights):
  standard       forward + backward + SGD step on the clean batch
  pgd1           `adversarial_step` with AttackConfig(attack='pgd', steps=1): the attack takes input
                 gradients only (`torch.autograd.grad` w.r.t. the images), then the same update
  pgd1-naive     the same PGD-1 step, but the attack does `x.requires_grad_(); loss.backward()` and then
                 zeroes the parameter grads: it pays for every weight gradient it throws away
  fgsm-rs        `adversarial_step` with AttackConfig(attack='fgsm-rs')
Extra variants for finding where the time goes (--variants):
  pgd1-bneval    pgd1 with bn_mode='eval' (the attack runs with running statistics)
  pgd1-fp32      pgd1 with the attack outside autocast (fp32 attack, AMP update)
  pgd1-clean     pgd1 with track_clean=True (an extra no-grad clean forward for clean train accuracy)
  fwd            a no-grad forward alone (the unit of the compute floor)

Each round runs one step of every variant in a shuffled order (round-robin), so machine drift hits all of
them alike; the table reports the median over rounds. Target: PGD-1 AT / standard <= 1.6x. The compute
floor is ~1.67x: a standard step is ~3 forward-equivalents (forward, input-grad and weight-grad backward),
PGD-1 adds a forward and an input-grad-only backward (~2 more), (3 + 2) / 3.

    python benchmarks/bench_at_step.py                     # resnet20_silu_at, 128 x 1x28x28, bf16 autocast
    python benchmarks/bench_at_step.py --amp none --channels-last
    python benchmarks/bench_at_step.py --variants standard,pgd1,pgd1-bneval,pgd1-fp32,pgd1-clean,fwd
"""
import argparse
import copy
import os
import random
import statistics
import time
from contextlib import nullcontext

import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401  (registers the models)
from robust_zoo.training.step import AttackConfig, adversarial_step, attack_mode, make_adversarial

TARGET = 1.6
DEFAULT_VARIANTS = ('standard', 'pgd1', 'pgd1-naive', 'fgsm-rs')
EXTRA_VARIANTS = ('pgd1-bneval', 'pgd1-fp32', 'pgd1-clean', 'fwd')


def naive_pgd1_step(model, x, y, opt, eps, autocast) -> None:
    """PGD-1 (random start, step 2.5 eps, Linf, BN batch statistics with frozen running stats) whose attack
    backward computes parameter gradients too, then throws them away; then the usual update."""
    with autocast:
        with attack_mode(model, 'train'):
            delta = torch.empty_like(x).uniform_(-eps, eps)
            xa = ((x + delta).clamp(0, 1)).requires_grad_()
            loss = F.cross_entropy(model(xa).float(), y, reduction='sum')
        loss.backward()
        opt.zero_grad(set_to_none=True)
        delta = (xa.detach() + 2.5 * eps * xa.grad.sign() - x).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        loss = F.cross_entropy(model(x_adv).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='resnet20_silu_at', help='robust_zoo model name (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--iters', type=int, default=20, help='timed rounds (default: %(default)s)')
    p.add_argument('--warmup', type=int, default=3, help='untimed rounds (default: %(default)s)')
    p.add_argument('--amp', choices=('bf16', 'none'), default='bf16', help='autocast dtype (default: %(default)s)')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads (default: all cores, '
                   '%(default)s)')
    p.add_argument('--eps', type=float, default=0.1, help='Linf budget (default: %(default)s, fashion-mnist-linf)')
    p.add_argument('--data', choices=('random', 'fashion-mnist'), default='random',
                   help='random 1x28x28 images in [0, 1], or the first batch of the Fashion-MNIST train split')
    p.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                   help=f'comma-separated, from {", ".join(DEFAULT_VARIANTS + EXTRA_VARIANTS)} '
                        '(standard always runs)')
    p.add_argument('--device', default='cpu')
    args = p.parse_args()
    variants = list(dict.fromkeys(['standard', *args.variants.split(',')]))
    unknown = set(variants) - set(DEFAULT_VARIANTS + EXTRA_VARIANTS)
    if unknown:
        p.error(f'unknown variants {sorted(unknown)}; choose from {DEFAULT_VARIANTS + EXTRA_VARIANTS}')
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    if args.data == 'fashion-mnist':
        from robust_zoo.data import load_fashion_mnist
        x, y = load_fashion_mnist('train', n=args.batch_size)
    else:
        x, y = torch.rand(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    x, y = x.to(device).contiguous(memory_format=memory_format), y.to(device)

    base = timm.create_model(f'robust_zoo/{args.model}', num_classes=10, in_chans=1)
    base = base.to(device, memory_format=memory_format).train()
    setups = {}
    for v in variants:
        model = copy.deepcopy(base)
        setups[v] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4))

    def autocast():
        if args.amp == 'none':
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    pgd1 = AttackConfig(attack='pgd', eps=args.eps, steps=1)
    configs = {'pgd1': pgd1, 'fgsm-rs': AttackConfig(attack='fgsm-rs', eps=args.eps),
               'pgd1-bneval': AttackConfig(attack='pgd', eps=args.eps, steps=1, bn_mode='eval')}

    def run(v: str) -> None:
        model, opt = setups[v]
        if v == 'standard':
            with autocast():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        elif v == 'pgd1-naive':
            naive_pgd1_step(model, x, y, opt, args.eps, autocast())
        elif v == 'pgd1-fp32':
            # the attack in fp32, the update under autocast: adversarial_step with attack 'none' on x_adv
            x_adv = make_adversarial(model, x, y, pgd1)
            adversarial_step(model, x_adv, y, opt, AttackConfig(attack='none'), autocast=autocast())
        elif v == 'pgd1-clean':
            adversarial_step(model, x, y, opt, pgd1, autocast=autocast(), track_clean=True)
        elif v == 'fwd':
            with torch.no_grad(), autocast():
                model(x)
        else:
            adversarial_step(model, x, y, opt, configs[v], autocast=autocast())

    def timed(v: str) -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        run(v)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - t

    times = {v: [] for v in variants}
    order = list(variants)
    for r in range(args.warmup + args.iters):
        random.Random(r).shuffle(order)
        for v in order:
            dt = timed(v)
            if r >= args.warmup:
                times[v].append(dt)

    med = {v: statistics.median(t) for v, t in times.items()}
    settings = (f'robust_zoo/{args.model}, batch {args.batch_size}x1x28x28 ({args.data}), '
                f'{"bf16 autocast" if args.amp == "bf16" else "fp32"}'
                f'{", channels_last" if args.channels_last else ""}, eps {args.eps:g} Linf, SGD, '
                f'{args.device}, {torch.get_num_threads()} threads, median of {args.iters} rounds '
                f'(+{args.warmup} warm-up), torch {torch.__version__}')
    print(settings)
    print()
    print('| variant | ms / step | vs standard |')
    print('|---|---|---|')
    for v in variants:
        print(f'| {v} | {med[v] * 1e3:.1f} | {med[v] / med["standard"]:.2f}x |')
    print()
    if 'pgd1' in med:
        ratio = med['pgd1'] / med['standard']
        print(f'PGD-1 AT / standard: {ratio:.2f}x; target <= {TARGET}x (compute floor ~1.67x): '
              f'{"met" if ratio <= TARGET else "missed"}')
        if 'pgd1-naive' in med:
            print(f'PGD-1 step with the naive attack (parameter grads too) / with the input-grad-only attack: '
                  f'{med["pgd1-naive"] / med["pgd1"]:.2f}x')


if __name__ == '__main__':
    main()
