"""The model card's text (README.md below its metadata), from a run's args, records and files."""
from typing import Any, List, Mapping, Sequence

import timm

from .._io import sha256_file
from ..evaluation.autoattack import is_autoattack, is_subset
from ..models._pretrained import WEIGHTS_NAME
from .cost import cost_markdown
from .recipes import _relative
from .reference import reference_markdown
from .records import _DATA_LICENSES, _DATASETS, _headline, _md_cell, _pct, _wilson, record_protocols


def _kept(args: Mapping[str, Any], final: Mapping[str, Any]) -> str:
    """Which epoch's weights the card ships, and why (epochs counted from 0, as in the run's log)."""
    if not args.get('early_stop_robust'):
        return 'last epoch'
    best = final.get('best') or {}
    if best.get('epoch') is None or best.get('epoch', -1) < 0:
        return 'best validation robust accuracy (early stopping on)'
    return (f"best validation robust accuracy (early stopping on): epoch {best['epoch']} (counted from 0), "
            f"validation {args.get('val_attack', 'pgd-10')} accuracy {best['robust_acc']:.3f}")


def _stronger_attacks_text(records: Sequence[Mapping[str, Any]], first: Mapping[str, Any]) -> str:
    """Sentences for the card's summary on each AutoAttack record (or a subset: APGD) other than the headline one,
    with PGD's number on the same test images where a record has it: usually fewer images than the headline, but
    the stronger attack is the one to trust ('' when there is none)."""
    out = ''
    for r in records:
        strong = [a for a in r['attacks'] if is_autoattack(a)]
        if r is first or not strong or r['threat_model']['id'] != first['threat_model']['id']:
            continue
        lo, hi = r['confidence_interval']
        out += (f" Under the stronger {' and '.join(strong)}, on the first {r['n_examples']} test images: robust "
                f"accuracy {_pct(r['robust_accuracy'])} (Wilson 95% {_pct(lo)} to {_pct(hi)})")
        same = [(a, v) for q in records if q is not r and q['n_examples'] == r['n_examples']
                and q['threat_model']['id'] == r['threat_model']['id']
                for a, v in q['attacks'].items() if not is_autoattack(a)]
        out += (', against ' + ', '.join(f'{a} {_pct(v)}' for a, v in same) + ' on the same images.' if same else '.')
    return out


def _other_threat_models_text(records: Sequence[Mapping[str, Any]], first: Mapping[str, Any]) -> str:
    """A sentence for the card's summary per record under another threat model than the headline's (e.g. the
    digits fine-tunes at eps 0.05 beside eps 0.1), which names its budget ('' when there is none)."""
    out = ''
    for r in records:
        t = r['threat_model']
        if t['id'] == first['threat_model']['id']:
            continue
        lo, hi = r['confidence_interval']
        out += (f" Under `{t['id']}` ({t['norm']}, eps {t['eps']:g}), on the first {r['n_examples']} test images: "
                f"robust accuracy {_pct(r['robust_accuracy'])} (worst case per image over {', '.join(r['attacks'])}; "
                f"Wilson 95% {_pct(lo)} to {_pct(hi)}), clean accuracy {_pct(r['clean_accuracy'])}.")
    return out


def _recipe_change_rows(args: Mapping[str, Any]) -> List[str]:
    """The Training table's rows for the recipe changes a resumed run recorded (train_at.py --allow-recipe-change):
    the flags above are the last ones; before epoch N some were different."""
    rows = []
    for change in args.get('recipe_changes') or []:
        diffs = ', '.join(f'{k} {v.get("was")!r} -> {v.get("now")!r}' for k, v in (change.get('changes') or {}).items())
        rows.append(f"| recipe changed from epoch {change.get('from_epoch')} (counted from 0) | {_md_cell(diffs)} |")
    return rows


def _rounded(values) -> tuple:
    """A normalization buffer as the card shows it: a tuple of floats to 4 decimals."""
    return tuple(round(float(v), 4) for v in values.flatten())


def _backbone_row(backbone: Mapping[str, Any]) -> str:
    """The Training table's row naming the weights a fine-tuned model started from and what was trained."""
    src = backbone['source']
    where = f'[`{src}`](../{src})' if backbone.get('published') else f'`{src}`'
    trained = ('backbone frozen: only the new head was trained (linear probe)' if backbone.get('frozen') else
               'every layer trained' + (', new head' if backbone.get('new_head') else ''))
    return f'| backbone | fine-tuned from {where} (sha256 `{backbone.get("sha256") or "unknown"}`); {trained} |'


def bank_paragraph(arch: str, name: str) -> str:
    """The card's paragraph on its `sparta_bank.safetensors`: how to load it by name, and which mapping to use."""
    return ('`sparta_bank.safetensors` holds this model\'s trained Sparta units on their own, to reuse them '
            '(frozen) in a robust_zoo Sparta CNN: '
            f'`timm.create_model("robust_zoo/{arch}", sparta_bank="{name}")` (any other Sparta architecture in '
            f'place of `{arch}`) or `robust_zoo.sparta_bank.load_bank(model, ...)`. The default '
            '`sparta_bank_mapping="relative-depth"` matches units by their depth in nets with as many stages; '
            '`sparta_bank_mapping="mean"` gives every unit the mean of the bank\'s, for any other net (e.g. '
            'a LeNet bank in a ResNet). The mappings are documented in `robust_zoo/sparta_bank.py`.')


def _card_body(*, name, hf_hub_id, arch, activation, model, args, final, records, dataset, images, sha, folder,
               recipe_path, attack_cfg, run, bank=None, overfit=None, reference=None, cost=None,
               backbone=None) -> str:
    _, display, data_text = _DATASETS.get(dataset, (dataset, dataset, f'{dataset}.'))
    first = _headline(records)
    t = first['threat_model']
    summary_doc = (timm.models.model_entrypoint(arch).__doc__ or arch).split(';')[0].rstrip('.')
    n_params = sum(p.numel() for p in model.parameters())
    lo, hi = first['confidence_interval']
    attacks = ', '.join(first['attacks']) or 'none'
    train = (f"{args.get('attack')} at {args.get('attack_norm', 'Linf')} eps {args.get('attack_eps'):g}"
             if attack_cfg else 'no attack (standard training)')
    lines = [
        f'# {name}',
        '',
        f"{summary_doc}, with **{activation}** activations, {'adversarially ' if attack_cfg else ''}"
        + (f"fine-tuned from `{backbone['source']}` " if backbone else 'trained ') + f'on {display} ({train}, seed '
        f"{args.get('seed', 0)}) with robust_zoo. Inputs are images in [0, 1]: normalization is the first layer of the "
        'model.',
        '',
        f"Under the `{t['id']}` threat model ({t['norm']}, eps {t['eps']:g}), on the first {first['n_examples']} test "
        f"images: **robust accuracy {_pct(first['robust_accuracy'])}** (worst case per image over {attacks}; Wilson "
        f"95% {_pct(lo)} to {_pct(hi)}), clean accuracy {_pct(first['clean_accuracy'])} (Wilson 95% "
        f"{_pct(_wilson(first['clean_accuracy'], first['n_examples'])[0])} to "
        f"{_pct(_wilson(first['clean_accuracy'], first['n_examples'])[1])})."
        + _stronger_attacks_text(records, first) + _other_threat_models_text(records, first)
        + (f' Every other evaluation ({len(records) - 1} more) is under *Evaluation*.' if len(records) > 1 else ''),
        '',
        *([*reference_markdown(reference), ''] if reference else []),
        '## How to load',
        '',
        '```python',
        'import timm',
        'import robust_zoo  # registers the architecture, its activations and the robust_zoo/ prefix',
        '',
        f"model = timm.create_model('robust_zoo/{name}', pretrained=True).eval()",
        '# or, from this Hub repo or a local copy of it:',
        f"model = timm.create_model('hf-hub:{hf_hub_id}', pretrained=True).eval()",
        f"model = timm.create_model('local-dir:model_cards/{name}', pretrained=True).eval()",
        '',
        'cfg = timm.data.resolve_data_config(model=model)  # mean 0 / std 1: feed images in [0, 1]',
        'transform = timm.data.create_transform(**cfg)',
        '```',
        '',
        f"`robust_zoo/{name}` loads `model_cards/{name}/{WEIGHTS_NAME}` of a robust_zoo checkout when it is there, "
        f'else this Hub repo (through the Hugging Face cache; `HF_HUB_OFFLINE=1` keeps it offline), and checks the '
        f"file's sha256 against the package's published index either way.",
        '',
        '## Model',
        '',
        '| | |',
        '|---|---|',
        f'| architecture | `{arch}` ({summary_doc}) |',
        f'| activation | `{activation}` |',
        f'| parameters | {n_params:,} |',
        f"| input | {'x'.join(str(s) for s in model.pretrained_cfg['input_size'])}, values in [0, 1] |",
        f'| normalization (inside the model) | mean {_rounded(model.normalize.mean)}, '
        f'std {_rounded(model.normalize.std)} |',
        f'| classes | {model.num_classes} ({display}) |',
        '',
        '## Training',
        '',
        '| | |',
        '|---|---|',
    ]
    if backbone:
        lines.append(_backbone_row(backbone))
    if recipe_path:
        lines.append(f'| recipe | `{_relative(recipe_path)}` (flags on top of it: `args.yaml`) |')
    if attack_cfg:
        lines += [
            f"| attack | {args['attack']}, {attack_cfg.norm} eps {attack_cfg.eps:g}, "
            f"step {attack_cfg.resolved_step_size:.4g}"
            + (f", {attack_cfg.steps} steps" if args['attack'] not in ('fgsm-rs', 'n-fgsm') else '')
            + (', noise 2 eps, no projection' if args['attack'] == 'n-fgsm' else '')
            + (f", TRADES beta {args.get('trades_beta')}" if args['attack'] == 'trades' else '') + ' |',
            f"| batch norm during the attack | {args.get('bn_mode', 'train')} |",
        ]
    else:
        lines.append('| attack | none |')
    epochs_run = final.get('epochs_run')
    lines += [
        f"| epochs | {args.get('epochs')}" + (f' (ran {epochs_run}' + (', stopped early: catastrophic overfitting'
                                                                        if final.get('stopped_early') else '') + ')'
                                                if epochs_run is not None and epochs_run != args.get('epochs') else '')
        + ' |',
        f"| batch | {args.get('batch_size')} x {final.get('world_size', 1)} process(es) |",
        f"| optimizer | {args.get('opt')}, lr {args.get('lr')}, momentum {args.get('momentum')}, weight decay "
        f"{args.get('weight_decay')} |",
        f"| schedule | {args.get('sched')}" + (' per update' if args.get('sched_on_updates') else ' per epoch')
        + (f", warmup {args.get('warmup_epochs')} epochs" if args.get('warmup_epochs') else '') + ' |',
        f"| precision | {(args.get('amp_dtype', 'bfloat16') + ' autocast') if args.get('amp') else 'fp32'} |",
        f"| EMA | {'decay ' + str(args.get('model_ema_decay')) if args.get('model_ema') else 'no'} |",
        f"| checkpoint kept | {_kept(args, final)} |",
        f"| seed | {args.get('seed', 0)} |",
        *_recipe_change_rows(args),
        '',
        '<details><summary>args.yaml (every flag of the run)</summary>',
        '',
        '```yaml',
        (run / 'args.yaml').read_text().rstrip('\n'),
        '```',
        '',
        '</details>',
        '',
        'Reproduce with `python train/train_at.py '
        + (f'-c {_relative(recipe_path)} --model {args.get("model")} --seed {args.get("seed", 0)}'
           if recipe_path else '-c args.yaml') + (f' --model-kwargs sparta_bank={bank["source"]}' if bank else '')
        + '`' + ('' if recipe_path else ' (the args.yaml of this repo)') + '.',
        '',
        *([*cost_markdown(cost, args.get('val_attack', 'pgd-10')), ''] if cost else []),
        '## Data',
        '',
        data_text,
        (f"Training used the first {args['train_samples']:,} images of the training split"
         if args.get('train_samples') else 'Training used the training split')
        + (f"; its last {args['val_samples']:,} images were held out for validation ({args.get('val_attack')}) and "
           'never trained on' if args.get('val_samples') else '')
        + '. The evaluation uses the first n images of the test split.',
        '',
        '## Evaluation',
        '',
        'Every number below comes from a `robust_zoo.evaluate(...)` record shipped in `eval_results.json`. Each '
        'attack runs on every clean-correct image; the worst case counts an image as robust only if it survives '
        'every attack. Intervals are 95% Wilson score intervals over the n test images (they do not include '
        'seed-to-seed variation). The record number is the one the sanity checks below name.',
        '',
        '| record | threat model | norm | eps | attack | n | accuracy | Wilson 95% |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for i, record in enumerate(records, 1):
        for p in record_protocols(record):
            attack = 'none (clean)' if p['kind'] == 'clean' else (
                f"worst case of {', '.join(p['attacks'])}" if p['attack'] == 'worst-case' else p['attack'])
            lines.append(f"| {i} | `{p['threat_model']}` | {p['norm']} | {p['eps']:g} | {attack} | {p['n_examples']} | "
                         f"{_pct(p['value'])} | {_pct(p['ci'][0])} to {_pct(p['ci'][1])} |")
    subsets = sorted({a for record in records for a in record.get('attacks', {}) if is_subset(a)})
    if subsets:
        lines += ['', f"{', '.join(subsets)}: AutoAttack's attacks alone (the authors' `pyautoattack`) with the "
                      'settings of AutoAttack standard (for Linf and L2: APGD-CE 1 restart, APGD-T 9 target classes, '
                      'FAB-T 9, Square 5,000 queries), so each is that part of AutoAttack standard.']
    for i, record in enumerate(records):
        versions = ', '.join(f'{k} {v}' for k, v in record.get('versions', {}).items())
        lines += ['', f"Sanity checks of record {i + 1} (`{record['threat_model']['id']}`, n = {record['n_examples']}, "
                      f"seed {record.get('seed', 0)}" + (f'; {versions}' if versions else '') + '):', '',
                  '| check | status | detail |', '|---|---|---|']
        lines += [f"| {_md_cell(c.get('name'))} | {_md_cell(c.get('status'))} | {_md_cell(c.get('detail'))} |"
                  for c in record.get('checks', [])] or ['| (none run) | | |']
    if images:
        lines += ['', '## Plots', '']
        lines += [f'![{alt}]({file})' for file, alt in images]
    if bank:
        src_data = _DATASETS.get(bank['source_dataset'], (None, bank['source_dataset']))[1]
        lines += ['', '## Sparta bank (transferred)', '',
                  f"This model's {bank['n_units']} Sparta activations were not trained here: they were loaded from the "
                  f"published bank of [`{bank['source']}`](../{bank['source']}) ({bank['source_model']} adversarially "
                  f"trained on {src_data} under `{bank['source_threat_model']}`) with the `{bank['mapping']}` mapping "
                  + ('and kept frozen while the rest of the network was trained. The shipped weights hold exactly the '
                     "bank's values (checked when this card was written)." if bank['frozen'] else
                     'and trained further with the rest of the network.'),
                  '', '<details><summary>unit mapping (target unit: bank unit)</summary>', '',
                  '| unit of this model | bank unit |', '|---|---|']
        lines += [f'| `{t}` | `{s}` |' for t, s in bank['pairs'].items()]
        lines += ['', '</details>']
    if (folder / 'sparta_bank.safetensors').is_file():
        lines += ['', '## Sparta bank', '', bank_paragraph(arch, name)]
    aa_parts = list(dict.fromkeys(a for r in records for a in r['attacks'] if is_autoattack(a)))
    full_aa = any(a.startswith('autoattack-') for a in aa_parts)
    lines += [
        '',
        '## Limitations',
        '',
        f"- Robustness is measured, not certified, and only for `{t['id']}` ({t['norm']}, eps {t['eps']:g}) on "
        f'{display}: accuracies under attack are upper bounds on the true robust accuracy.',
    ]
    if not aa_parts:
        lines.append('- No AutoAttack evaluation is in these records: stronger attacks can lower the numbers.')
    elif not full_aa:
        lines.append(f"- Only part of AutoAttack ran ({', '.join(aa_parts)}), not the whole of AutoAttack standard "
                     '(APGD-CE, APGD-T, FAB-T, Square): the rest can lower the numbers further.')
    for i, record in enumerate(records):  # a check that did not pass is a limitation of the numbers it checks
        lines += [f"- Sanity check `{c.get('name')}` of record {i + 1} ({c.get('status')}): {c.get('detail')}"
                  for c in record.get('checks', []) if c.get('status') in ('WARN', 'FAIL')]
    if overfit:
        epochs = ', '.join(str(e) for e in overfit['epochs'])
        seen = (f"at epoch {overfit['epoch']} its {args.get('attack')} training accuracy "
                f"{overfit['train_adv_acc']:.3f} was more than {overfit['gap_threshold']:g} above its validation "
                f"{args.get('val_attack', 'pgd-10')} accuracy {overfit['val_robust_acc']:.3f}")
        if overfit['kept_weights_affected']:
            lines.append(f'- **This run overfit catastrophically** (Wong et al. 2020): {seen}, and the shipped weights '
                         f'are from that epoch (epochs showing it, from 0: {epochs}). Its robust accuracy shows a '
                         'failure of single-step training, not what the activation can reach (rule: '
                         '`robust_zoo/training/overfitting.py`).')
        else:
            lines.append(f'- Catastrophic overfitting appeared at epoch(s) {epochs} (Wong et al. 2020; {seen}); the '
                         f"shipped weights are from epoch {overfit['kept_epoch']}, before it.")
    lines += [
        f"- The evaluation covers the first {', '.join(str(n) for n in sorted({r['n_examples'] for r in records}))} "
        'test images (see the Wilson intervals); one training seed.',
        f'- A small research model for {display}; not for deployment or other data.',
        '',
        '## License',
        '',
        f'Apache-2.0 (weights and code). {_DATA_LICENSES.get(dataset, f"{display} has its own license.")}',
        '',
        '## Files',
        '',
        f'`{WEIGHTS_NAME}` sha256: `{sha}`',
        '',
        '| file | bytes | sha256 |',
        '|---|---|---|',
    ]
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != 'README.md'):
        lines.append(f'| `{path.name}` | {path.stat().st_size:,} | `{sha256_file(path)}` |')
    return '\n'.join(lines) + '\n'


