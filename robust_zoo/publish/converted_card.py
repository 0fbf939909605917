"""Hub repo folders for converted weights: the same layout as the Fashion-MNIST cards, with the source's
numbers marked REPORTED (robust_zoo has not measured them) and the command that measures them."""
import json
from pathlib import Path
from typing import Optional, Union

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult
from timm.models._hub import save_config_for_hf
from torch import nn

from .._io import save_safetensors, sha256_file
from ..convert import Target
from ..models._hub import weights_metadata
from ..models._pretrained import WEIGHTS_NAME, cards_dir, hf_org
from ..threat_models import get_threat_model

__all__ = ['write_converted_card', 'eval_command']

PathLike = Union[str, Path]

_DATASET_IDS = {'imagenet-1k': 'imagenet-1k', 'cifar10': 'cifar10'}


def eval_command(target: Target, threat_model: str) -> str:
    """The `robust-zoo eval` command that re-measures a converted model under `threat_model`."""
    t = get_threat_model(threat_model)
    data = 'IMAGENET_DIR' if t.dataset.startswith('imagenet') else f'{t.dataset.upper().replace("-", "_")}_ROOT'
    return (f'robust-zoo eval robust_zoo/{target.name} --threat-model {t.id} --data-dir {data} '
            f'--output {target.name}.{t.id}.json')


def write_converted_card(model: nn.Module, target: Target, *, checkpoint: PathLike, out_root: Optional[PathLike] = None,
                         org: Optional[str] = None) -> Path:
    """Write `<out_root>/<target.name>/` (model.safetensors, config.json, README.md) for a converted model."""
    folder = Path(out_root if out_root is not None else cards_dir()) / target.name
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), folder / WEIGHTS_NAME,
                     metadata={'format': 'pt', 'converted_from': target.origin_url, 'source': target.source,
                               **weights_metadata(target.name)})
    cfg = model.pretrained_cfg
    hf_hub_id = f'{org or hf_org()}/{target.name}'
    arch, _, tag = target.name.partition('.')
    pretrained_cfg = dict(
        hf_hub_id=hf_hub_id, tag=tag, dataset=cfg.get('dataset'), threat_model=cfg.get('threat_model'),
        input_mean=[float(f'{v:.7g}') for v in model.normalize.mean.flatten().tolist()],
        input_std=[float(f'{v:.7g}') for v in model.normalize.std.flatten().tolist()],
        **({'arch_args': cfg['arch_args']} if cfg.get('arch_args') else {}))
    save_config_for_hf(model, folder / 'config.json', model_config=dict(pretrained_cfg=pretrained_cfg))
    sha = sha256_file(folder / WEIGHTS_NAME)

    dataset = cfg.get('dataset') or 'imagenet-1k'
    results = []
    for r in target.reported:
        t = get_threat_model(r.threat_model)
        for metric, value, name in (('accuracy', r.clean, 'clean accuracy (reported)'),
                                    ('robust_accuracy', r.robust, f'robust accuracy, {r.attack} (reported)')):
            results.append(EvalResult(
                task_type='image-classification', dataset_type=_DATASET_IDS.get(dataset, dataset),
                dataset_name=dataset, dataset_config=t.id, dataset_split='validation' if 'imagenet' in dataset else
                'test', metric_type=metric, metric_value=value, metric_name=name, verified=False,
                metric_config=f'{t.norm} eps={t.eps:.6g} {r.attack} n={r.n_examples}',
                source_name=f'reported by the source: {r.reference}', source_url=target.origin_url))
    card_data = ModelCardData(
        model_name=target.name, license=target.license, library_name='timm', pipeline_tag='image-classification',
        datasets=[dataset], tags=['image-classification', 'timm', 'robust_zoo', 'adversarial-robustness',
                                  'converted-weights'],
        eval_results=results or None,
        robust_zoo=dict(architecture=arch, tag=tag, source=target.source, origin_url=target.origin_url,
                        converted_from=Path(checkpoint).name, sha256=sha, measured_here=False))
    rows = '\n'.join(f'| {get_threat_model(r.threat_model).id} | {r.attack} | {r.n_examples} | {100 * r.clean:.2f} | '
                     f'{100 * r.robust:.2f} | {r.reference} |' for r in target.reported)
    commands = '\n'.join(eval_command(target, t) for t in target.eval_threat_models)
    from ..convert.preprocess import describe_source_transform
    preprocessing = describe_source_transform(target.name) or "the dataset's test images as they are"
    body = f"""# {target.name}

Weights of **{target.paper}**, converted to robust_zoo by `robust-zoo convert {target.source}`. The model takes
RGB images in [0, 1] and normalizes inside (`robust_zoo` convention); the source's channel order and input
scaling are folded into the model. {target.notes}

```python
import timm, robust_zoo
model = timm.create_model('robust_zoo/{target.name}', pretrained=True).eval()
```

## Numbers: REPORTED by the source, not measured by robust_zoo

| threat model | attack | points | clean % | robust % | reported in |
|---|---|---|---|---|---|
{rows or '| - | - | - | - | - | no numbers reported |'}

robust_zoo checked the conversion numerically (logits of the converted model against a reference forward
pass of the source architecture, max abs difference <= 1e-4, on synthetic checkpoints with the source's names
and shapes), not these accuracies. Measure them on the real data with:

```bash
{commands}
```

## Source

- weights: {target.origin_url}
- download: {target.download}
- converted from: `{Path(checkpoint).name}`; sha256 of `model.safetensors`: `{sha}`
- license: {target.license} (the source's)
- evaluation preprocessing (`robust-zoo eval`): {preprocessing}
"""
    card = ModelCard.from_template(card_data, template_str='---\n{{ card_data }}\n---\n\n' + body)
    (folder / 'README.md').write_text(str(card).rstrip('\n') + '\n')
    (folder / 'conversion.json').write_text(json.dumps(dict(
        source=target.source, checkpoint=Path(checkpoint).name, origin_url=target.origin_url, sha256=sha,
        reported=[r.__dict__ for r in target.reported]), indent=2) + '\n')
    return folder
