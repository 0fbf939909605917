"""Writing a model's Hub repo folder (weights, config.json, card, records, plots, Sparta bank) from a training
run, indexing it in the published index, and withdrawing one."""
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import timm
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from timm.models._hub import save_config_for_hf

from .._io import PathLike, atomic_write_text, sha256_file
from ..data import LABEL_NAMES, NUM_CLASSES
from ..models import _pretrained
from ..models._pretrained import _BASE_CFGS, _CFG_KEYS, WEIGHTS_NAME, cards_dir, hf_org, load_published
from ..models._pretrained import register_published
from ..sparta_bank import BANK_FILE, bank_mapping, read_bank, resolve_bank, save_bank, sparta_units
from ..training import CO_GAP, AttackConfig, catastrophic_overfitting_epochs, kept_epoch, load_weights
from .card_body import _card_body
from .cost import train_images_of, training_cost
from .plots import _plot_curves, _plot_evaluation, _plot_training, _plot_training_time, summary_rows
from .recipes import _relative
from .reference import compare_to_reference, load_reference
from .replace import _checked_records, _refuse_replacing, _staging_folder, _swap_in, unpublish, unpublish_target
from .records import (_DATASETS, _REPO_ID_RE, _TAG_RE, _activation_of, _arch_of, _as_record, _caveats,
                      _checks_not_passed, _eval_results, _headline, _read_json, _stronger_index_entries)

__all__ = ['unpublish', 'unpublish_target', 'write_card_repo']

_logger = logging.getLogger(__name__)


def write_card_repo(run_dir: PathLike, *, tag: str, evaluations: Optional[Sequence[Union[PathLike, Mapping]]] = None,
                    out_root: Optional[PathLike] = None, plots: Optional[Sequence[PathLike]] = None,
                    index_path: Optional[PathLike] = None, org: Optional[str] = None,
                    recipe: Optional[PathLike] = None, force: bool = False, keep_evaluations: bool = True,
                    reference: Optional[PathLike] = None, device: Optional[str] = None,
                    threads: Optional[int] = None) -> Path:
    """Write the Hub repo folder `<out_root>/<arch>.<tag>/` of a train/train_at.py run and index it.

    `evaluations`: EvalRecords (JSON files or dicts, bare or as train_at.py's final_eval.json); default:
    the run's final_eval.json. Every number in the card comes from them. `plots`: extra PNGs to ship (a
    training-curve and an evaluation plot are drawn from summary.csv and the records). `index_path`: the
    published index to update (default: the one in use, normally `robust_zoo/published.json`). `org`: Hub
    organisation (default `hf_org()`). `recipe`: the yaml the run was trained with, named on the card and in its
    reproduce command (None: the card names none and reproduces from args.yaml; `recipes.run_recipe` finds it in a
    recipes folder). `reference`: a yaml of a published result this run reproduces
    (`publish.reference.load_reference`): the card sets it beside ours with a verdict. `device` and `threads`: what
    trained it, for the Training cost section (default: the run record's `device_name` and `threads`). Returns the
    folder.

    Nothing published is lost or mislabelled: every record must have measured the run's weights (its
    `weights_digest` or `weights_sha256`); an already published `<arch>.<tag>` is replaced only with `force`, and
    then its evaluation records of the same weights are kept (`keep_evaluations=False` drops them). The folder is
    written beside the old one and swapped in, then the index is written atomically: on any error both stay as
    they were.
    """
    run = Path(run_dir)
    if not _TAG_RE.match(tag or ''):
        raise ValueError(f'tag {tag!r} must be letters, digits, _ and - (e.g. fmnist_s0): it becomes <arch>.<tag>.')
    if not (run / 'args.yaml').is_file() or not (run / WEIGHTS_NAME).is_file():
        raise ValueError(f'{run} is not a finished train/train_at.py run: it needs args.yaml and {WEIGHTS_NAME}.')
    if recipe is not None and not Path(recipe).is_file():
        raise ValueError(f'recipe {recipe} does not exist: pass the yaml the run was trained with (--recipe), or none '
                         'to reproduce from the args.yaml the card ships.')
    args = yaml.safe_load((run / 'args.yaml').read_text()) or {}
    arch = _arch_of(str(args.get('model', '')))
    if not arch or arch not in _BASE_CFGS:
        raise ValueError(f"{run}/args.yaml: model {args.get('model')!r} is not a robust_zoo model that takes published "
                         f'weights (families: rz_cifar_resnet, rz_mlp).')
    final = _read_json(run / 'final_eval.json', 'run record') if (run / 'final_eval.json').is_file() else {}
    ref = load_reference(reference) if reference is not None else None
    if evaluations is None:
        if 'evaluation' not in final:
            raise ValueError(f'{run}/final_eval.json holds no evaluation record: pass evaluations=[...] '
                             f'(robust-zoo card --eval result.json).')
        evaluations = [final]
    sources = [f'evaluation record {i + 1}' if isinstance(e, Mapping) else str(e) for i, e in enumerate(evaluations)]
    records = [_as_record(e, src) if isinstance(e, Mapping) else _as_record(_read_json(e, 'evaluation'), src)
               for e, src in zip(evaluations, sources)]
    if not records:
        raise ValueError('a card needs at least one evaluation record.')
    for r in records:
        other = _arch_of(r['model'])
        if other is not None and other != arch:
            raise ValueError(f"an evaluation record is for {r['model']}, not the run's model robust_zoo/{arch}.")
    dataset = args.get('dataset') or records[0]['threat_model']['dataset']
    threat = records[0]['threat_model']
    base, activation = _activation_of(arch)
    model_kwargs = {k: v for k, v in dict(args.get('model_kwargs') or {}).items() if v is not None}
    if model_kwargs.get('act_layer') in (activation, None):
        model_kwargs.pop('act_layer', None)
    # a Sparta bank loaded at build time is provenance only: its values are in the weights
    bank_args = {k: model_kwargs.pop(k) for k in list(model_kwargs) if k.startswith('sparta_bank')}
    if model_kwargs or args.get('smooth_backward', 'none') != 'none':
        extra = dict(model_kwargs, **({'smooth_backward': args['smooth_backward']}
                                      if args.get('smooth_backward', 'none') != 'none' else {}))
        raise ValueError(f"{run} was trained with {extra}: `robust_zoo/{arch}.{tag}` rebuilds the registry's {arch} "
                         f'without them, so its weights would load into another model. Publish runs of a registered '
                         f'architecture as it is (model_kwargs empty; e.g. --model robust_zoo/<arch>_<act>_at).')

    # the model the weights belong to: timm's own export logic writes config.json
    state = load_weights(run / WEIGHTS_NAME)
    in_chans = args.get('in_chans') or (state['normalize.mean'].shape[1] if 'normalize.mean' in state else None)
    num_classes = args.get('num_classes') or NUM_CLASSES.get(dataset)
    kwargs = {k: v for k, v in dict(model_kwargs, num_classes=num_classes, in_chans=in_chans).items() if v is not None}
    model = timm.create_model(arch, act_layer=activation, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f'{run}/{WEIGHTS_NAME} does not fit robust_zoo/{arch} built from args.yaml '
                         f'({str(e).splitlines()[0]}).') from e
    org = org or hf_org()
    name = f'{arch}.{tag}'
    hf_hub_id = f'{org}/{name}'
    if not _REPO_ID_RE.match(hf_hub_id):
        raise ValueError(f'{hf_hub_id!r} is not a valid Hub repo id (ORG/NAME).')
    # the dataset's own class names, never ones inherited from the registry's default cfg (another dataset's)
    label_names = LABEL_NAMES.get(dataset)
    label_names = list(label_names) if label_names and len(label_names) == model.num_classes else None
    pretrained_cfg = dict(
        hf_hub_id=hf_hub_id, tag=tag, dataset=dataset, threat_model=threat['id'],
        input_mean=[float(f'{v:.7g}') for v in model.normalize.mean.flatten().tolist()],
        input_std=[float(f'{v:.7g}') for v in model.normalize.std.flatten().tolist()])
    # the keys set here always come last, in this order, whatever the registry's cfg held: config.json is
    # byte-stable across rewrites
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items()
                            if k not in ('label_names', 'label_descriptions', 'label_offset', *pretrained_cfg)}

    out = Path(out_root) if out_root is not None else cards_dir()
    index_file = Path(index_path) if index_path is not None else _pretrained.index_path()
    index = load_published(index_file)
    _refuse_replacing(out / name, index.get(name), force)
    records += _checked_records(run, model, records, sources, out / name, index.get(name), keep_evaluations)
    folder = _staging_folder(out, name)
    try:
        shutil.copyfile(run / WEIGHTS_NAME, folder / WEIGHTS_NAME)
        save_config_for_hf(model, folder / 'config.json',
                           model_config=dict(pretrained_cfg=pretrained_cfg, **({'label_names': label_names}
                                                                               if label_names else {})))
        shutil.copyfile(run / 'args.yaml', folder / 'args.yaml')
        summary = summary_rows(run / 'summary.csv')
        if (run / 'summary.csv').is_file():
            shutil.copyfile(run / 'summary.csv', folder / 'summary.csv')
        (folder / 'eval_results.json').write_text(json.dumps(records, indent=2) + '\n')
        images = []
        kept = (final.get('best') or {}).get('epoch') if args.get('early_stop_robust') else None
        cost = training_cost(summary, train_images_of(run, final), device or final.get('device_name')
                             or str(args.get('device') or 'cpu'), threads or final.get('threads'), kept)
        for plot in plots or []:
            plot = Path(plot)
            if not plot.is_file() or plot.suffix.lower() != '.png':
                raise ValueError(f'plot {plot} is not a PNG file.')
            shutil.copyfile(plot, folder / plot.name)
            images.append((plot.name, plot.stem.replace('_', ' ')))
        try:
            if _plot_training(summary, folder / 'training_curves.png'):
                images.insert(0, ('training_curves.png', 'training curves (summary.csv)'))
            _plot_evaluation(records, f'{name}: {threat["id"]}', folder / 'evaluation.png')
            images.insert(1 if images and images[0][0] == 'training_curves.png' else 0,
                          ('evaluation.png', 'evaluation: accuracy per protocol with Wilson 95% intervals'))
            images += _plot_curves(records, folder)
            if cost and _plot_training_time(summary, cost['hours_per_epoch'], folder / 'training_vs_time.png'):
                images.insert(1, ('training_vs_time.png', 'validation accuracy vs training time (the cost figure)'))
        except RuntimeError as e:  # matplotlib missing: the card says so
            _logger.warning('no plots drawn: %s', e)
        sha = sha256_file(folder / WEIGHTS_NAME)
        bank = _bank_provenance(bank_args, model, out, name) if bank_args.get('sparta_bank') else None
        if sparta_units(model) and not (bank and bank['frozen']):
            # a Sparta model publishes its trained units as a reusable bank (a frozen one is its source's bank)
            save_bank(model, folder / BANK_FILE, source_model=arch, dataset=dataset, threat_model=threat['id'],
                      recipe=str(args.get('config') or ''), repo=name,
                      **({'loaded_bank': json.dumps(bank_args)} if bank_args else {}))
        elif (folder / BANK_FILE).is_file():
            (folder / BANK_FILE).unlink()

        recipe_path = Path(recipe) if recipe is not None else None
        attack_cfg = None
        if args.get('attack', 'none') != 'none':
            attack_cfg = AttackConfig(attack=args['attack'], eps=args.get('attack_eps', 0.1),
                                      steps=args.get('attack_steps', 10), step_size=args.get('attack_step'),
                                      norm=args.get('attack_norm', 'Linf'))
        overfit = _overfitting(summary, args, final)
        backbone = _backbone_provenance(args, index)
        comparison = compare_to_reference(ref, records) if ref else None
        rz = dict(architecture=arch, base_architecture=base, activation=activation, tag=tag, seed=args.get('seed', 0),
                  dataset=dataset, threat_model=threat['id'], norm=threat['norm'], eps=threat['eps'],
                  train_attack=args.get('attack'), train_eps=args.get('attack_eps'), epochs=args.get('epochs'),
                  precision=f"{args.get('amp_dtype', 'bfloat16')} autocast" if args.get('amp') else 'fp32',
                  recipe=_relative(recipe_path) if recipe_path else None, sha256=sha,
                  **({'checks_not_passed': not_passed} if (not_passed := _checks_not_passed(records)) else {}),
                  **({'stopped_early': True, 'epochs_run': final.get('epochs_run'),
                      'kept_epoch': (final.get('best') or {}).get('epoch')} if final.get('stopped_early') else {}),
                  **({'catastrophic_overfitting': overfit} if overfit else {}),
                  **({'sparta_bank': {k: v for k, v in bank.items() if k != 'pairs'}} if bank else {}),
                  **({'reference': comparison} if comparison else {}),
                  **({'training_cost': {k: v for k, v in cost.items() if k != 'hours_per_epoch'}} if cost else {}),
                  **({'backbone': backbone} if backbone else {}))
        card_data = ModelCardData(
            model_name=name, license='apache-2.0', library_name='timm', pipeline_tag='image-classification',
            datasets=[_DATASETS.get(dataset, (dataset,))[0]],
            tags=['image-classification', 'timm', 'robust_zoo', 'adversarial-robustness', 'adversarial-training',
                  dataset, activation],
            eval_results=_eval_results(records, dataset), robust_zoo=rz)
        body = _card_body(name=name, hf_hub_id=hf_hub_id, arch=arch, activation=activation, model=model, args=args,
                          final=final, records=records, dataset=dataset, images=images, sha=sha, folder=folder,
                          recipe_path=recipe_path, attack_cfg=attack_cfg, run=run, bank=bank, overfit=overfit,
                          reference=comparison, cost=cost, backbone=backbone)
        card = ModelCard.from_template(card_data, template_str='---\n{{ card_data }}\n---\n\n' + body)
        (folder / 'README.md').write_text(str(card).rstrip('\n') + '\n')

        head = _headline(records)
        clean, robust = head['clean_accuracy'], head['robust_accuracy']
        index[name] = dict(architecture=arch, tag=tag, hf_hub_id=hf_hub_id, sha256=sha,
                           size=(folder / WEIGHTS_NAME).stat().st_size, dataset=dataset, threat_model=threat['id'],
                           activation=activation, seed=args.get('seed', 0), train_attack=args.get('attack'),
                           clean_accuracy=clean,
                           robust_accuracy=robust,
                           n_examples=head['n_examples'], attacks=list(head['attacks']),
                           **({'stronger': stronger} if (stronger := _stronger_index_entries(records, head)) else {}),
                           **({'caveats': caveats} if (caveats := _caveats(rz)) else {}),
                           **({'bank_sha256': sha256_file(folder / BANK_FILE)}
                              if (folder / BANK_FILE).is_file() else {}),
                           pretrained_cfg={k: v for k, v in _config_cfg(folder).items() if k in _CFG_KEYS})
        text = json.dumps(dict(sorted(index.items())), indent=2) + '\n'
        _swap_in(folder, out / name, lambda: atomic_write_text(index_file, text))
    finally:
        if folder.exists():
            shutil.rmtree(folder)
    folder = out / name
    if index_file.resolve() == _pretrained.index_path().resolve() and out.resolve() == cards_dir().resolve():
        register_published(index_file, cards_dir())  # loadable at once in this process
    return folder


def _overfitting(rows: Sequence[Mapping[str, str]], args: Mapping[str, Any],
                 final: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The card's record of catastrophic overfitting (`robust_zoo.training.overfitting`), None where the run's
    summary.csv `rows` show none: the epochs that show it, the epoch whose weights ship, and whether that one does."""
    epochs = catastrophic_overfitting_epochs(rows, args.get('attack', 'none'), args.get('val_attack', 'pgd-10'))
    if not epochs:
        return None
    kept = kept_epoch(rows, (final.get('best') or {}).get('epoch'), bool(args.get('early_stop_robust')))
    row = next(r for r in rows if int(r['epoch']) == (kept if kept in epochs else epochs[-1]))
    return dict(epochs=epochs, kept_epoch=kept, kept_weights_affected=kept in epochs, gap_threshold=CO_GAP,
                epoch=int(row['epoch']), train_adv_acc=round(float(row['train_adv_acc']), 4),
                val_robust_acc=round(float(row['eval_robust_acc']), 4))


def _backbone_provenance(args: Mapping[str, Any], index: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Where a fine-tuned run's starting weights come from (None for a run trained from scratch): the published
    `<arch>.<tag>` (`--initial-checkpoint`: the published weights with the file's sha256, else the file's path;
    `--pretrained`: the model's name, an untagged one meaning its default tag), and whether the backbone was frozen."""
    if args.get('initial_checkpoint'):
        path = Path(args['initial_checkpoint'])
        sha = sha256_file(path) if path.is_file() else None
        name = next((n for n, e in sorted(index.items()) if sha and e.get('sha256') == sha), str(path))
    elif args.get('pretrained'):
        name = str(args.get('model', '')).removeprefix('robust_zoo/')
        if '.' not in name:
            name = f"{name}.{timm.models.get_pretrained_cfg(name).tag}"
        sha = (index.get(name) or {}).get('sha256')
    else:
        return None
    return dict(source=name, published=name in index, sha256=sha, frozen=args.get('freeze') == 'backbone',
                new_head=bool(args.get('reset_head')))


def _config_cfg(folder: Path) -> Dict[str, Any]:
    """The pretrained cfg a card's config.json gives timm (top-level num_classes / label_names included)."""
    config = json.loads((folder / 'config.json').read_text())
    cfg = dict(config.get('pretrained_cfg') or {})
    for key in ('num_classes', 'label_names'):
        if key in config:
            cfg[key] = config[key]
    return cfg


def _bank_provenance(bank_args: Mapping[str, Any], model: Any, cards_root: Path, name: str) -> Dict[str, Any]:
    """Where a transferred model's Sparta units come from: the published bank they were loaded from (found by
    equal tensors among the cards, so the card can name it), the mapping, and for a frozen bank a check that the
    trained weights still hold exactly the bank's values."""
    path = resolve_bank(bank_args['sparta_bank'])
    units, meta = read_bank(path)
    source = None
    for candidate in sorted(Path(cards_root).glob(f'[!.]*/{BANK_FILE}')):  # not a card being written
        other, other_meta = read_bank(candidate)
        if candidate.parent.name != name and 'loaded_bank' not in other_meta and other.keys() == units.keys() \
                and all(torch.equal(other[u][p], units[u][p]) for u in units for p in units[u]):
            source, meta = candidate.parent.name, other_meta  # the published bank's own provenance
            break
    if source is None:
        raise ValueError(f'the Sparta bank this run loaded ({path}) is not published under {cards_root}: publish the '
                         f'run it comes from first (robust-zoo card RUN --tag ...), so that this card can name it.')
    mapping = bank_args.get('sparta_bank_mapping', 'relative-depth')
    frozen = bool(bank_args.get('sparta_bank_freeze', True))
    targets = sparta_units(model)
    pairs = bank_mapping(list(units), list(targets), mapping)
    mean = {p: torch.stack([u[p] for u in units.values()]).mean(0) for p in ('beta', 'attn.weight', 'attn.bias')}
    equal = all(torch.equal(targets[t].state_dict()[p], (mean if s == '*' else units[s])[p])
                for t, s in pairs.items() for p in ('beta', 'attn.weight', 'attn.bias'))
    if frozen and not equal:
        raise ValueError(f"the run loaded {source}'s Sparta bank frozen, but its weights' Sparta units differ from the "
                         f'bank: they were trained after all, so the card would misstate them.')
    return dict(source=source, source_model=meta.get('source_model'), source_dataset=meta.get('dataset'),
                source_threat_model=meta.get('threat_model'), mapping=mapping, frozen=frozen,
                units_equal_bank=equal, n_units=len(pairs), pairs=pairs)


