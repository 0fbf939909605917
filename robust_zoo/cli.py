"""The `robust-zoo` command."""
import argparse
import sys
from typing import List, Optional

__all__ = ['main']


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import list_models
    if args.threat_models:
        from .threat_models import THREAT_MODELS
        for t in THREAT_MODELS.values():
            print(f'{t.id:<20} {t.dataset:<14} {t.norm:<4} eps {t.eps:.6g}  {", ".join(t.attacks)} on {t.n_examples}')
        return 0
    for name in list_models(args.pattern, pretrained=args.pretrained):
        print(name)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(args.model, train_samples=args.train_samples, eval_samples=args.eval_samples,
             seed=args.seed, amp=not args.no_amp, data_dir=args.data_dir)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import logging

    import timm

    from .evaluate import evaluate
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    name = args.model if ':' in args.model or '/' in args.model else f'robust_zoo/{args.model}'
    overlay = dict(file=args.checkpoint) if args.checkpoint else None
    model = timm.create_model(name, pretrained=bool(args.checkpoint), pretrained_cfg_overlay=overlay)
    threat = args.threat_model or model.pretrained_cfg.get('threat_model')
    if not threat:
        raise ValueError(f'{name} names no threat model; pass --threat-model.')
    result = evaluate(model, threat, attacks=args.attacks.split(',') if args.attacks else None,
                      n_examples=args.n_examples, batch_size=args.batch_size, seed=args.seed, model_name=name,
                      data_dir=args.data_dir)
    t = result.threat_model
    lo, hi = result.confidence_interval
    print(f"\n{name} under {t['id']} ({t['norm']}, eps {t['eps']:.6g}), first {result.n_examples} test "
          f"examples, seed {result.seed}, {result.seconds:.0f} s\n")
    print('| metric | accuracy |\n|---|---|')
    print(f'| clean | {result.clean_accuracy:.4f} |')
    for attack, acc in result.attacks.items():
        print(f'| {attack} | {acc:.4f} |')
    print(f'| robust (worst case per example) | {result.robust_accuracy:.4f} (95% Wilson {lo:.4f}-{hi:.4f}) |')
    print('\nchecks:')
    for c in result.checks:
        print(f"  {c['status']:<4} {c['name']}: {c['detail']}")
    if args.output:
        with open(args.output, 'w') as f:
            f.write(result.to_json())
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robust-zoo', description='Adversarially robust models for timm.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('list', help='list robust_zoo models (robust_zoo/<name> for timm.create_model)')
    p.add_argument('pattern', nargs='?', default='*', help='shell-style filter, e.g. "resnet20_*"')
    p.add_argument('--pretrained', action='store_true', help='only models with published weights')
    p.add_argument('--threat-models', action='store_true', help='list the standardized threat models instead')
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser('demo', help='train a small robust model on Fashion-MNIST for a few minutes and attack it')
    p.add_argument('--model', default='resnet20_silu_at', help='a robust_zoo 28x28 model (default: %(default)s)')
    p.add_argument('--train-samples', type=int, default=12000, help='training images, one pass (default: %(default)s)')
    p.add_argument('--eval-samples', type=int, default=500, help='test images attacked (default: %(default)s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-amp', action='store_true', help='train in fp32 instead of bf16 autocast')
    p.add_argument('--data-dir', default=None, help='folder with the Fashion-MNIST idx files')
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser('eval', help='evaluate a model under its standardized threat model')
    p.add_argument('model', help='robust_zoo model name (robust_zoo/ prefix optional), or hf-hub:/local-dir:')
    p.add_argument('--checkpoint', default=None, help='a .safetensors file of weights for the model')
    p.add_argument('--threat-model', default=None, help="default: the one in the model's pretrained cfg")
    p.add_argument('--attacks', default=None, help="comma-separated, e.g. 'fgsm,pgd-20' (default: the protocol)")
    p.add_argument('--n-examples', type=int, default=None, help='default: the protocol')
    p.add_argument('--batch-size', type=int, default=250)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data-dir', default=None,
                   help="folder with the threat model's dataset (Fashion-MNIST idx files by default from Debian's "
                        'dataset-fashion-mnist; MNIST idx, CIFAR python/binary batches, or ImageNet train/ val/)')
    p.add_argument('--output', default=None, help='write the result record (JSON) here')
    p.set_defaults(fn=_cmd_eval)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, RuntimeError) as e:  # our errors say what to fix; a traceback adds nothing for users
        print(f'robust-zoo: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
