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
    if args.results:  # the numbers the published index holds: each card's headline, then its stronger attacks'
        from .models._pretrained import MARKS, caveat_marks, load_published, stronger_text
        index = load_published()
        names = list_models(args.pattern, pretrained=True)
        if not names:
            return _no_match(args)
        width = max((len(n) for n in names), default=0)
        shown = set()
        for name in names:
            e = index[name.removeprefix('robust_zoo/')]
            marks = caveat_marks(e.get('caveats'))
            shown.update(marks)
            print(f"{name:<{width}}  {e['threat_model']:<18}  clean {e['clean_accuracy']:.3f}  robust "
                  f"{e['robust_accuracy']:.3f} ({'+'.join(e['attacks'])}, n={e['n_examples']})" + stronger_text(e)
                  + ''.join(f' {m}' for m in marks))
        if shown:
            print()
            print('\n'.join(f'{mark} {text}' for mark, _, text in MARKS.values() if mark in shown))
        return 0
    names = list_models(args.pattern, pretrained=args.pretrained)
    if not names:
        return _no_match(args)
    for name in names:
        print(name)
    return 0


def _no_match(args: argparse.Namespace) -> int:
    """Say on stderr that `list`'s pattern matched nothing; exit status 1, like grep's."""
    what = 'published model' if args.results or args.pretrained else 'model'
    print(f'robust-zoo: no {what} matches {args.pattern!r} (patterns are shell-style, e.g. "resnet20_*"; '
          f'`robust-zoo list{" --results" if args.results else ""}` shows them all).', file=sys.stderr)
    return 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import default_published_model, run_demo, run_published
    published = args.published or (None if args.train else default_published_model())
    if published:
        import logging
        logging.basicConfig(level=logging.INFO, format='%(message)s')  # the evaluator's per-batch progress
        run_published(published, n_examples=args.eval_samples or 100, seed=args.seed)
        return 0
    run_demo(args.model, train_samples=args.train_samples, eval_samples=args.eval_samples or 500,
             seed=args.seed, amp=not args.no_amp, data_dir=args.data_dir)
    return 0


def _init_distributed(device: str) -> tuple:
    """(rank, world size, device) under torchrun (WORLD_SIZE > 1 in the environment): the process group is
    initialized here (NCCL on CUDA, gloo on CPU) and a CUDA device becomes cuda:LOCAL_RANK."""
    import os

    import torch
    import torch.distributed as dist
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return 0, 1, device
    if device.startswith('cuda') and ':' not in device:
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", "0"))}'
    if device.startswith('cuda'):
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    return dist.get_rank(), dist.get_world_size(), device


def _weights_sha256(checkpoint: Optional[str], model) -> str:
    """The sha256 of the weights file an evaluated model was loaded from ('' when it came from elsewhere)."""
    from pathlib import Path

    from ._io import sha256_file
    file = checkpoint or (getattr(model, 'pretrained_cfg', None) or {}).get('file')
    return sha256_file(file) if file and Path(file).is_file() else ''


def _cmd_eval(args: argparse.Namespace) -> int:
    import logging

    import timm
    import torch
    import torch.distributed as dist

    from .evaluation import evaluate, save_eval_plots
    from .evaluation.evaluator import load_eval_data
    from .threat_models import get_threat_model
    from .training import check_weights_file, resolve_autocast
    rank, world, device = _init_distributed(args.device)
    try:
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format='%(message)s')
        args.amp, message = resolve_autocast(args.amp, device, what='the attacks run')
        if message:
            logging.getLogger(__name__).info(message)
        name = args.model if ':' in args.model or '/' in args.model else f'robust_zoo/{args.model}'
        overlay = dict(file=str(check_weights_file(args.checkpoint))) if args.checkpoint else None
        # the published weights by default (robust_zoo/<arch>[.<tag>]); --checkpoint for your own
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay).to(device).eval()
        threat = args.threat_model or model.pretrained_cfg.get('threat_model')
        if not threat:
            raise ValueError(f'{name} names no threat model; pass --threat-model.')
        threat = get_threat_model(threat)
        from .convert.preprocess import source_transform
        cfg = model.pretrained_cfg
        transform = source_transform(f"{cfg.get('architecture')}.{cfg.get('tag')}") if cfg.get('tag') else None
        if transform is not None:
            logging.getLogger(__name__).info('images prepared as %s', transform.__doc__)
        data = load_eval_data(threat, args.n_examples, args.data_dir, transform=transform)
        checks = dict(fast=True, full='full', none=False)[args.checks]
        result = evaluate(model, threat, data=data, attacks=args.attacks.split(',') if args.attacks else None,
                          n_examples=args.n_examples, batch_size=args.batch_size, seed=args.seed, model_name=name,
                          checks=checks, probe=args.probe, state_path=args.state, amp=args.amp,
                          compile=args.compile, weights_sha256=_weights_sha256(args.checkpoint, model))
        if rank != 0:
            return 0
        t = result.threat_model
        lo, hi = result.confidence_interval
        print(f"\n{name} under {t['id']} ({t['norm']}, eps {t['eps']:.6g}), first {result.n_examples} test "
              f"examples, seed {result.seed}, {result.seconds:.0f} s" + (f', {world} processes' if world > 1 else '')
              + (', attacks under bf16 autocast' if args.amp else '') + '\n')
        print('| metric | accuracy |\n|---|---|')
        print(f'| clean | {result.clean_accuracy:.4f} |')
        for attack, acc in result.attacks.items():
            print(f'| {attack} | {acc:.4f} |')
        print(f'| robust (worst case per example) | {result.robust_accuracy:.4f} (95% Wilson {lo:.4f}-{hi:.4f}) |')
        print('\nchecks:')
        for c in result.checks:
            print(f"  {c['status']:<4} {c['name']}: {c['detail']}")
        if args.output:  # atomically: the grid takes an existing record for a finished evaluation
            from .training import atomic_write_text
            atomic_write_text(args.output, result.to_json())
        if args.plots:
            n = result.n_examples
            written = save_eval_plots(result, model, (data[0][:n], data[1][:n]), args.plots)
            print(f'\nplots: {", ".join(str(p) for p in written.values())}')
        return 0
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _print_files(files) -> None:
    for name, size, sha in files:
        print(f'{size:>12,}  {sha}  {name}')


def _cmd_card(args: argparse.Namespace) -> int:
    from .models._pretrained import index_path, load_published
    from .publish import repo_files, write_card_repo
    if args.drop_old_evals and not args.force:
        raise ValueError('--drop-old-evals only goes with --force (it drops the evaluation records of the card that '
                         '--force replaces); nothing was written.')
    folder = write_card_repo(args.run_dir, tag=args.tag, evaluations=args.eval or None, out_root=args.out,
                             plots=args.plot, recipe=args.recipe, force=args.force,
                             keep_evaluations=not args.drop_old_evals, reference=args.reference,
                             device=args.device, threads=args.threads)
    print(f'wrote {folder}:')
    _print_files(repo_files(folder))
    print(f'indexed in {index_path()} ({len(load_published())} published); check the card, then '
          f'`robust-zoo push {folder}` (a dry run) and `robust-zoo leaderboard`.')
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .publish import push_card_repo
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


def _cmd_unpublish(args: argparse.Namespace) -> int:
    from .models._pretrained import index_path
    from .publish import unpublish, unpublish_target
    try:
        for name in args.names:  # every name is checked before any is removed
            unpublish_target(name, out_root=args.out)
        for name in dict.fromkeys(n.removeprefix('robust_zoo/') for n in args.names):
            folder = unpublish(name, out_root=args.out)
            print(f'removed {folder} and its entry in {index_path()}')
    except KeyError as e:  # like every other error of the command: stderr, exit 2
        raise ValueError(e.args[0]) from None
    print('regenerate the results tables (docs/results.md) with `robust-zoo leaderboard`; a repo already pushed '
          'to the Hub stays there until you delete it on the Hub.')
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .models._pretrained import cards_dir
    from .publish.leaderboard import leaderboard, leaderboard_markdown, results_page, write_leaderboard
    cards = Path(args.cards) if args.cards else cards_dir()
    page = Path(args.page) if args.page else results_page()
    if page is not None and not args.print:
        png = Path(args.png) if args.png else page.parent / 'assets' / 'leaderboard.png'
        rows = write_leaderboard(page, png, cards_root=cards)
        print(f'{page}: leaderboard of {len(rows)} rows from {cards}' + (f', plot {png}' if rows else ''))
        return 0
    print(leaderboard_markdown(leaderboard(cards)))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert, list_targets
    if args.list or not (args.source and args.checkpoint):
        if not args.list:
            raise ValueError('give SOURCE CHECKPOINT --model NAME (robust-zoo convert --list shows them).')
        for t in list_targets():
            print(f'{t.name:<40} {t.source:<18} {t.origin_url}')
        return 0
    if not args.model:
        raise ValueError('--model NAME is required: the target, e.g. resnet50_silu_at.sat_in1k '
                         '(robust-zoo convert --list).')
    model = convert(args.source, args.checkpoint, args.model)
    name = args.model.split('/', 1)[-1]
    if args.card:
        from .convert import TARGETS
        from .publish.converted_card import write_converted_card
        folder = write_converted_card(model, TARGETS[name], checkpoint=args.checkpoint, out_root=args.out)
        print(f'wrote {folder}/ (pretrained=True loads robust_zoo/{name} from it)')
    else:
        from .models._hub import weights_metadata
        from .training import save_weights
        out = args.output or f'{name}.safetensors'
        save_weights(model.state_dict(), out, dict(format='pt', **weights_metadata(name)))
        print(f'wrote {out} (load: timm.create_model("robust_zoo/{name}", pretrained=True, '
              f'pretrained_cfg_overlay=dict(file="{out}")))')
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .convert import list_targets
    from .convert.fetch import fetch, local_weights
    if args.list or not args.name:
        if not args.list:
            raise ValueError('give the target to fetch, e.g. robust-zoo fetch resnet50_silu_at.sat_in1k '
                             '(robust-zoo fetch --list shows them).')
        for t in list_targets():
            where = local_weights(t.name)
            print(f'{t.name:<46} {"here: " + str(where.parent) if where else "not fetched"}')
        return 0
    folder = fetch(args.name, force=args.force, source_dir=args.source_dir, keep_download=args.keep_download,
                   progress=not args.quiet)
    arch = folder.name.split('.', 1)[0]
    print(f'{folder}/ holds {folder.name}: timm.create_model("robust_zoo/{folder.name}", pretrained=True) loads it '
          f'(also as robust_zoo/{arch} when it is the default tag), from any folder.')
    return 0


def _convert_epilog() -> str:
    from .convert import SOURCES, list_targets
    targets = list_targets()  # imports the source modules, which register the sources
    lines = ['sources:']
    for s in sorted(SOURCES.values(), key=lambda s: s.id):
        lines.append(f'  {s.id}: {s.description}')
        lines.append(f'      files: {s.files}' + (f' (needs: pip install {s.requires})' if s.requires else ''))
    lines.append('targets (--model):')
    for t in targets:
        lines.append(f'  {t.name}  <- {t.source}')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robust-zoo', description='Adversarially robust models for timm.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('list', help='list robust_zoo models (robust_zoo/<name> for timm.create_model)')
    p.add_argument('pattern', nargs='?', default='*', help='shell-style filter, e.g. "resnet20_*"')
    p.add_argument('--pretrained', action='store_true', help='only models with published weights')
    p.add_argument('--results', action='store_true', help='published models with their threat model, clean and '
                   'robust accuracy (attacks, number of test images), then any stronger attack\'s (APGD, AutoAttack), '
                   'as their cards state them')
    p.add_argument('--threat-models', action='store_true', help='list the standardized threat models instead')
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser('demo', help='the main job: evaluate a published robust model under its threat model '
                       '(PGD-20 and APGD-CE) and print a table; --train: train a small one for a minute and attack it')
    p.add_argument('--published', default=None, help='published model to evaluate, e.g. resnet20_relu_at.fmnist_s0 '
                   '(default: resnet20_silu_at\'s first tag if published, else the first published model)')
    p.add_argument('--train', action='store_true', help='the one-minute train-then-attack demo instead')
    p.add_argument('--model', default='resnet20_silu_at', help='--train: a robust_zoo 28x28 model (default: %(default)s)')
    p.add_argument('--train-samples', type=int, default=12000, help='training images, one pass (default: %(default)s)')
    p.add_argument('--eval-samples', type=int, default=None, help='test images attacked (default: 100 for a published '
                   'model, 500 with --train)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-amp', action='store_true', help='train in fp32 instead of bf16 autocast')
    p.add_argument('--data-dir', default=None, help='folder with the Fashion-MNIST idx files')
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser('eval', help='evaluate a model under its standardized threat model',
                       description='Evaluate a model under its standardized threat model. Sharded over processes '
                       'under torchrun: torchrun --nproc_per_node 2 -m robust_zoo.cli eval ...')
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
    p.add_argument('--checks', choices=('fast', 'full', 'none'), default='fast',
                   help="sanity checks: fast (one batch), full (also the attack's own checks on --probe points, "
                        "as for a model card), none (default: %(default)s)")
    p.add_argument('--probe', type=int, default=100, help="clean-correct points for --checks full's checks "
                   '(default: %(default)s)')
    p.add_argument('--plots', default=None, metavar='DIR', help='write accuracy_vs_steps.png and accuracy_vs_eps.png '
                   '(with --checks full) and loss_landscape.png into DIR')
    p.add_argument('--state', default=None, metavar='PATH', help='resumable run: per-batch outcomes are saved to '
                   'this JSON file; rerun the same command to continue after an interruption')
    p.add_argument('--amp', action='store_true', help='run the attacks under bf16 autocast where bf16 is native '
                   '(fp32 elsewhere, saying so; decisions are re-made in fp32; numbers can differ from fp32 ones)')
    p.add_argument('--compile', action='store_true', help='attacks query torch.compile(model): a minute or more of '
                   'compilation, then ~1.7x faster PGD on a CPU (no gain for AutoAttack: see the docs, Evaluating)')
    p.add_argument('--device', default='cpu', help="cpu, cuda or cuda:N (under torchrun, cuda is cuda:LOCAL_RANK; "
                   'default: %(default)s)')
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
    p.add_argument('--force', action='store_true', help='replace an already published <arch>.<tag>; its evaluation '
                   'records of the same weights are kept')
    p.add_argument('--drop-old-evals', action='store_true', help='with --force: do not keep the replaced card\'s '
                   'evaluation records')
    p.add_argument('--reference', default=None, metavar='YAML',
                   help='a published result this run reproduces (citation, where, threat_model, clean, robust): '
                        'the card sets it beside ours with a verdict; e.g. experiments/references/croce2019.yaml')
    p.add_argument('--device', default=None, help="what trained the run, for the card's Training cost section "
                   "(default: the run record's device_name)")
    p.add_argument('--threads', type=int, default=None, help='CPU threads the run used, for CPU-hours (default: the '
                   "run record's threads)")
    p.set_defaults(fn=_cmd_card)

    p = sub.add_parser('push', help='upload a card repo folder to the Hugging Face Hub (a dry run by default)')
    p.add_argument('dir', help='a card repo folder, e.g. model_cards/resnet20_silu_at.fmnist_s0')
    p.add_argument('--repo-id', default=None, help="ORG/NAME (default: the hf_hub_id in the folder's config.json)")
    p.add_argument('--no-dry-run', action='store_true', help='really upload (token from HF_TOKEN)')
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.set_defaults(fn=_cmd_push)

    p = sub.add_parser('unpublish', help='withdraw published models: delete their card folders and index entries')
    p.add_argument('names', nargs='+', help='<arch>.<tag>, e.g. resnet20_silu_at.fmnist_s0')
    p.add_argument('--out', default=None, help='folder of card repos (default: model_cards/ of the checkout)')
    p.set_defaults(fn=_cmd_unpublish)

    p = sub.add_parser('leaderboard', help="the published models' results, aggregated over seeds")
    p.add_argument('--cards', default=None, help='folder of card repos (default: model_cards/)')
    p.add_argument('--page', '--readme', dest='page', default=None, help='rewrite the marked blocks of this page '
                   '(default: docs/results.md of the checkout; installed without one, the table is printed)')
    p.add_argument('--print', action='store_true', help='print the table instead of rewriting a page')
    p.add_argument('--png', default=None, help='plot file (default: assets/leaderboard.png beside the page)')
    p.set_defaults(fn=_cmd_leaderboard)

    p = sub.add_parser('fetch', help="download a converted target from its authors' release, convert and verify "
                       'it into the user cache, where pretrained=True finds it',
                       description="Download a conversion target's source files from where the authors' scripts "
                       'take them (Google Drive; base URL: ROBUST_ZOO_DOWNLOAD_BASE_URL), check their sha256 where '
                       'one is recorded, convert, verify, and store <arch>.<tag>/ in the user cache (ROBUST_ZOO_CACHE, '
                       'default ~/.cache/robust_zoo, under fetched/). '
                       'Example: robust-zoo fetch resnet50_silu_at.sat_in1k')
    p.add_argument('name', nargs='?', help='the target, <arch>.<tag>; an untagged <arch> means its default tag')
    p.add_argument('--from', dest='source_dir', default=None, metavar='FOLDER', help='convert files you downloaded '
                   'yourself (the folder holding them, or the one .pt file) instead of downloading')
    p.add_argument('--force', action='store_true', help='fetch again even if the target is already here')
    p.add_argument('--keep-download', action='store_true', help='keep the downloaded source files (default: deleted '
                   'after a successful conversion)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.add_argument('--list', action='store_true', help='list the targets and whether they are here')
    p.set_defaults(fn=_cmd_fetch)

    p = sub.add_parser('convert', help="convert the field's published robust weights (SAT TF checkpoints, "
                       'RobustBench state dicts) into robust_zoo models', epilog=_convert_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description='Convert a checkpoint of another framework or architecture into a robust_zoo '
                       'model, verifying that every tensor maps. Example: robust-zoo convert sat-resnet50 '
                       'ckpt/model-xxx.index --model resnet50_silu_at.sat_in1k --card')
    p.add_argument('source', nargs='?', help='the checkpoint format (see sources below)')
    p.add_argument('checkpoint', nargs='?', help='the checkpoint file')
    p.add_argument('--model', default=None, help='the target robust_zoo name with its tag (see targets below)')
    p.add_argument('--card', action='store_true', help='write a Hub repo folder <out>/<model>/ (weights, config, '
                   'card with the REPORTED numbers) that pretrained=True loads')
    p.add_argument('--out', default=None, help='--card: folder of card repos (default: model_cards/ of the checkout)')
    p.add_argument('--output', default=None, help='without --card: the .safetensors file (default: <model>.safetensors)')
    p.add_argument('--list', action='store_true', help='list the targets and where their weights come from')
    p.set_defaults(fn=_cmd_convert)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, RuntimeError) as e:  # our errors say what to fix; a traceback adds nothing for users
        print(f'robust-zoo: error: {e}', file=sys.stderr)
        return 2
    except BrokenPipeError:  # `robust-zoo list ... | head`: the reader left; say nothing more
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == '__main__':
    sys.exit(main())
