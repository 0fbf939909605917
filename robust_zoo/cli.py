"""The `robust-zoo` command."""
import argparse
import sys
from typing import List, Optional

__all__ = ['main']


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import list_models
    for name in list_models(args.pattern, pretrained=args.pretrained):
        print(name)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(args.model, train_samples=args.train_samples, eval_samples=args.eval_samples,
             seed=args.seed, amp=not args.no_amp, data_dir=args.data_dir)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robust-zoo', description='Adversarially robust models for timm.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('list', help='list robust_zoo models (robust_zoo/<name> for timm.create_model)')
    p.add_argument('pattern', nargs='?', default='*', help='shell-style filter, e.g. "resnet20_*"')
    p.add_argument('--pretrained', action='store_true', help='only models with published weights')
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser('demo', help='train a small robust model on Fashion-MNIST for a few minutes and attack it')
    p.add_argument('--model', default='resnet20_silu_at', help='a robust_zoo 28x28 model (default: %(default)s)')
    p.add_argument('--train-samples', type=int, default=12000, help='training images, one pass (default: %(default)s)')
    p.add_argument('--eval-samples', type=int, default=500, help='test images attacked (default: %(default)s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-amp', action='store_true', help='train in fp32 instead of bf16 autocast')
    p.add_argument('--data-dir', default=None, help='folder with the Fashion-MNIST idx files')
    p.set_defaults(fn=_cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, RuntimeError) as e:  # our errors say what to fix; a traceback adds nothing for users
        print(f'robust-zoo: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
