"""fp32 vs bf16 autocast (and fp32 in channels_last) for one adversarial training step, side by side, here.

Why: train_at.py's --amp is a ~1.75x speed-up on CPUs with native bf16 (AMX / AVX-512) and a large slow-down
where bf16 is emulated (AVX2), so --amp falls back to fp32 there. This prints both step times, their ratio,
and what `robust_zoo.training.native_autocast` decides; `fp32 channels_last` is train_at.py's `--channels-last`
without `--amp` (model and batch in NHWC). A step is an N-FGSM example (forward + input
gradient) plus forward + backward + SGD update, the zoo recipe's batch of 128 at 1x28x28, rounds alternating.

    python benchmarks/bench_precision.py                       # resnet20_silu_at
    python benchmarks/bench_precision.py --act sparta --rounds 5
"""
import argparse
import statistics
import time

import timm
import torch

import robust_zoo  # noqa: F401  (registers the models)
from robust_zoo.training import AttackConfig, adversarial_step, native_autocast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--act', default='silu', help='activation of resnet20_<act>_at (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--rounds', type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    x, y = torch.rand(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    cfg = AttackConfig(attack='n-fgsm', eps=0.1)
    runs = {}
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    variants = (('fp32', False, False), ('fp32 channels_last', False, True), ('bf16 autocast', True, False))
    for name, amp, nhwc in variants:
        model = timm.create_model(f'robust_zoo/resnet20_{args.act}_at', num_classes=10, in_chans=1).train()
        if nhwc:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        autocast = torch.autocast('cpu', dtype=torch.bfloat16) if amp else None
        runs[name] = (model, opt, autocast, x_nhwc if nhwc else x, [])
    for model, opt, autocast, xb, _ in runs.values():  # warm-up
        adversarial_step(model, xb, y, opt, cfg, autocast=autocast)
    for _ in range(args.rounds):
        for model, opt, autocast, xb, times in runs.values():
            t = time.perf_counter()
            adversarial_step(model, xb, y, opt, cfg, autocast=autocast)
            times.append(time.perf_counter() - t)
    fp32 = statistics.median(runs['fp32'][4])
    print(f'resnet20_{args.act}_at, batch {args.batch_size}, N-FGSM step, median of {args.rounds} rounds; '
          f'torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}')
    print('| variant | s/step | img/s | time vs fp32 |')
    print('|---|---|---|---|')
    for name, (*_, times) in runs.items():
        s = statistics.median(times)
        print(f'| {name} | {s:.3f} | {args.batch_size / s:.0f} | {s / fp32:.2f}x |')
    print(f'native_autocast(cpu, bf16) = {native_autocast("cpu")}: train_at.py --amp trains in '
          f'{"bf16 autocast" if native_autocast("cpu") else "fp32"} on this machine')


if __name__ == '__main__':
    main()
