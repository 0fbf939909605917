"""PGD-k throughput (images/s): robust_zoo's `pgd` against the textbook loop, on the same model and batch.

The textbook loop (as in many attack tutorials) does `x.requires_grad_()`, `loss.backward()` and reads
`x.grad`, with the model's parameters still requiring gradients: every step also computes (and
accumulates) the weight gradients, which an attack never uses. robust_zoo's `pgd` takes
`torch.autograd.grad(loss, x)`, so autograd skips the weight-gradient work. Both run the same steps
(sign of the gradient, projection, the same random start) and must return the same images; the
table says whether they do. Variants: bf16 autocast (`--amp`) and channels_last memory format.

Each round times every variant once, in a shuffled order, so machine noise hits all of them alike; the
table reports the median over rounds.

    python benchmarks/bench_pgd.py                        # ResNet-20, 64 x 1x28x28, PGD-10, fp32 and bf16
    python benchmarks/bench_pgd.py --model robust_zoo/preact_resnet18_silu_at --in-chans 3 --img-size 32
"""
import argparse
import random
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401  (registers the models)
from robust_zoo.attacks import pgd


def textbook_pgd(model, x, y, *, eps, steps, step_size):
    """The usual tutorial loop: loss.backward() with the parameters requiring gradients, then x.grad."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        x_adv = (x + delta).detach().requires_grad_()
        loss = F.cross_entropy(model(x_adv).float(), y, reduction='none').sum()
        model.zero_grad(set_to_none=True)
        loss.backward()
        delta = (delta + step_size * x_adv.grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='robust_zoo/resnet20_relu_at')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--img-size', type=int, default=28)
    p.add_argument('--in-chans', type=int, default=1)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--eps', type=float, default=0.1)
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10, in_chans=args.in_chans).eval()
    x = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size)
    y = torch.randint(0, 10, (args.batch_size,))
    step = 2.5 * args.eps / args.steps
    kw = dict(eps=args.eps, steps=args.steps, step_size=step)

    def ours(m, xs):
        return pgd(m, xs, y, **kw)

    def textbook(m, xs):
        return textbook_pgd(m, xs, y, **kw)

    cl_model = timm.create_model(args.model, num_classes=10, in_chans=args.in_chans).eval()
    cl_model.load_state_dict(model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants = {  # name: (attack, model, input, amp)
        'textbook (x.grad, param grads)': (textbook, model, x, False),
        'robust_zoo pgd': (ours, model, x, False),
        'robust_zoo pgd, channels_last': (ours, cl_model, x_cl, False),
        'textbook, bf16 autocast': (textbook, model, x, True),
        'robust_zoo pgd, bf16 autocast': (ours, model, x, True),
    }
    outputs, times = {}, {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds + 1):  # round 0 warms up
        random.shuffle(names)
        for name in names:
            attack, m, xs, amp = variants[name]
            torch.manual_seed(1)
            t = time.perf_counter()
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
                out = attack(m, xs)
            if r:
                times[name].append(time.perf_counter() - t)
            outputs[name] = out
    same = {name: torch.equal(outputs[name].contiguous(), outputs['textbook (x.grad, param grads)'].contiguous())
            for name in variants}
    same_bf16 = torch.equal(outputs['robust_zoo pgd, bf16 autocast'], outputs['textbook, bf16 autocast'])
    base = statistics.median(times['textbook (x.grad, param grads)'])
    print(f'PGD-{args.steps} on {args.model}, batch {args.batch_size} x {args.in_chans}x{args.img_size}x'
          f'{args.img_size}, {torch.get_num_threads()} threads, median of {args.rounds} rounds\n')
    print('| variant | images attacked/s | forward+backward img/s | speed-up vs textbook fp32 | same images |')
    print('|---|---|---|---|---|')
    for name in variants:
        med = statistics.median(times[name])
        if 'bf16' in name:
            same_txt = 'vs textbook bf16: ' + ('yes' if same_bf16 else 'no')
        elif 'channels_last' in name:
            same_txt = 'n/a (random start drawn in memory order)'
        else:
            same_txt = 'yes' if same[name] else 'no'
        print(f'| {name} | {args.batch_size / med:.1f} | {args.batch_size * args.steps / med:.0f} | {base / med:.2f}x '
              f'| {same_txt} |')

if __name__ == '__main__':
    main()
