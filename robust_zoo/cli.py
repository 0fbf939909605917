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


def _print_files(files) -> None:
    for name, size, sha in files:
        print(f'{size:>12,}  {sha}  {name}')


def _cmd_card(args: argparse.Namespace) -> int:
    from .hub import index_path, load_published, repo_files, write_card_repo
    folder = write_card_repo(args.run_dir, tag=args.tag, evaluations=args.eval or None, out_root=args.out,
                             plots=args.plot, recipe=args.recipe)
    print(f'wrote {folder}:')
    _print_files(repo_files(folder))
    print(f'indexed in {index_path()} ({len(load_published())} published); check the card, then '
          f'`robust-zoo push {folder}` (a dry run) and `robust-zoo leaderboard --readme README.md`.')
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .hub import push_card_repo
    files = push_card_repo(args.dir, args.repo_id, dry_run=not args.no_dry_run, private=args.private)
    repo_id = args.repo_id or json.loads((Path(args.dir) / 'config.json').read_text())['pretrained_cfg']['hf_hub_id']
    _print_files(files)
    total = sum(size for _, size, _ in files)
    if args.no_dry_run:
        print(f'uploaded {len(files)} files ({total:,} bytes) to https://huggingface.co/{repo_id}')
    else:
        print(f'dry run: {len(files)} files ({total:,} bytes) would go to https://huggingface.co/{repo_id}; nothing '
              f'was uploaded. Upload with --no-dry-run (needs HF_TOKEN).')
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .hub import cards_dir, leaderboard, leaderboard_markdown, write_leaderboard
    cards = Path(args.cards) if args.cards else cards_dir()
    if args.readme:
        png = Path(args.png) if args.png else cards / 'leaderboard.png'
        rows = write_leaderboard(args.readme, png, cards_root=cards)
        print(f'{args.readme}: leaderboard of {len(rows)} rows from {cards}' + (f', plot {png}' if rows else ''))
        return 0
    print(leaderboard_markdown(leaderboard(cards)))
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

    p = sub.add_parser('card', help='write the Hub repo folder (model card) of a train/train_at.py run')
    p.add_argument('run_dir', help='the run folder (args.yaml, model.safetensors, final_eval.json)')
    p.add_argument('--tag', required=True, help='pretrained tag: the repo becomes <arch>.<tag>, e.g. fmnist_s0')
    p.add_argument('--eval', action='append', metavar='JSON',
                   help="an evaluation record (robust-zoo eval --output); repeatable; default: the run's final_eval.json")
    p.add_argument('--plot', action='append', metavar='PNG', help='an extra plot to ship in the repo; repeatable')
    p.add_argument('--recipe', default=None, help='the yaml the run was trained with (default: the matching '
                   'train/configs/*.yaml, if any)')
    p.add_argument('--out', default=None, help='folder of card repos (default: model_cards/ of the checkout)')
    p.set_defaults(fn=_cmd_card)

    p = sub.add_parser('push', help='upload a card repo folder to the Hugging Face Hub (a dry run by default)')
    p.add_argument('dir', help='a card repo folder, e.g. model_cards/resnet20_silu_at.fmnist_s0')
    p.add_argument('--repo-id', default=None, help="ORG/NAME (default: the hf_hub_id in the folder's config.json)")
    p.add_argument('--no-dry-run', action='store_true', help='really upload (token from HF_TOKEN)')
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.set_defaults(fn=_cmd_push)

    p = sub.add_parser('leaderboard', help="the published models' results, aggregated over seeds")
    p.add_argument('--cards', default=None, help='folder of card repos (default: model_cards/)')
    p.add_argument('--readme', default=None, help='rewrite the leaderboard block of this README (else print the table)')
    p.add_argument('--png', default=None, help='plot file (default with --readme: <cards>/leaderboard.png)')
    p.set_defaults(fn=_cmd_leaderboard)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, RuntimeError) as e:  # our errors say what to fix; a traceback adds nothing for users
        print(f'robust-zoo: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
