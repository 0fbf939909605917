"""Shared parts of a card: the datasets' descriptions, evaluation records read and checked, their protocols
(clean, each attack, the worst case) with Wilson intervals, and what the published index keeps of them."""
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from huggingface_hub import EvalResult

from .._io import PathLike
from ..evaluation.autoattack import is_autoattack
from ..evaluation.result import wilson_interval
from ..models._pretrained import _activation_of, _arch_of  # noqa: F401  (re-exported for the card writer)

_TAG_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]*$')


_REPO_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$')


# dataset id (robust_zoo.data) -> (Hub dataset id for model-index, display name, one-line description)
_DATASETS = {
    'fashion-mnist': ('fashion_mnist', 'Fashion-MNIST',
                      'Fashion-MNIST (Xiao et al. 2017, MIT license): 60,000 training and 10,000 test 28x28 grey '
                      'images of 10 clothing classes. robust_zoo reads the files of Debian\'s `dataset-fashion-mnist` '
                      '(md5-checked).'),
    'mnist': ('mnist', 'MNIST', 'MNIST: 60,000 training and 10,000 test 28x28 grey digits.'),
    'cifar10': ('cifar10', 'CIFAR-10', 'CIFAR-10: 50,000 training and 10,000 test 32x32 colour images, 10 classes.'),
    'cifar100': ('cifar100', 'CIFAR-100', 'CIFAR-100: 50,000 training and 10,000 test 32x32 colour images, 100 '
                 'classes.'),
    'digits': ('digits', 'digits',
               "scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`, 1,797 real 8x8 images of "
               '10 classes, BSD-3-Clause), upsampled bilinearly to 28x28 by robust_zoo; fixed split (a permutation '
               'seeded with 0): 1,297 training and 500 test images.'),
}


# the training data's terms, for the card's License section (other datasets: "has its own license")
_DATA_LICENSES = {
    'fashion-mnist': 'Fashion-MNIST has its own license (MIT).',
    'digits': "The digits are scikit-learn's copy (BSD-3-Clause) of the test part of UCI's Optical Recognition of "
              'Handwritten Digits data set (Alpaydin and Kaynak 1998), which has its own terms.',
}


def _read_json(path: PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{what} {path} does not exist.')
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f'{what} {path} is not valid JSON ({e}).') from e


def _as_record(obj: Any, source: str) -> Dict[str, Any]:
    """An EvalRecord dict, bare or inside train_at.py's final_eval.json (`evaluation`)."""
    if isinstance(obj, dict) and isinstance(obj.get('evaluation'), dict):
        obj = obj['evaluation']
    need = ('model', 'threat_model', 'n_examples', 'clean_accuracy', 'robust_accuracy', 'attacks',
            'confidence_interval')
    if not isinstance(obj, dict) or any(k not in obj for k in need):
        raise ValueError(f'{source} is not an evaluation record (robust_zoo.evaluate(...).to_dict()): it needs '
                         f'{", ".join(need)}.')
    return obj


def _wilson(acc: float, n: int) -> Tuple[float, float]:
    """95% Wilson interval of an accuracy over n points (a seed mean need not be k / n: no rounding)."""
    return wilson_interval(acc * n, n)  # type: ignore[arg-type]  (the formula only needs p = acc)


def record_protocols(record: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One entry per (threat model, attack protocol) of a record: clean, each attack, and the per-example worst
    case when there are several attacks. Intervals: the record's own for the worst case, Wilson otherwise."""
    t, n = record['threat_model'], int(record['n_examples'])
    base = dict(threat_model=t['id'], norm=t['norm'], eps=t['eps'], n_examples=n, seed=record.get('seed', 0))
    rows = [dict(base, kind='clean', attack='none', value=record['clean_accuracy'],
                 ci=_wilson(record['clean_accuracy'], n))]
    for attack, acc in record['attacks'].items():
        rows.append(dict(base, kind='robust', attack=attack, value=acc, ci=_wilson(acc, n)))
    if len(record['attacks']) > 1:
        rows.append(dict(base, kind='robust', attack='worst-case', attacks=list(record['attacks']),
                         value=record['robust_accuracy'], ci=tuple(record['confidence_interval'])))
    elif record['attacks']:
        only = rows[-1]
        if not math.isclose(only['value'], record['robust_accuracy'], abs_tol=1e-12):
            raise ValueError(f"record for {record['model']}: robust_accuracy {record['robust_accuracy']} differs from "
                             f"its only attack's {only['value']}.")
        only['ci'] = tuple(record['confidence_interval'])
    return rows


def protocol_label(p: Mapping[str, Any]) -> str:
    """The key a protocol of `record_protocols` has in a leaderboard row: 'clean, n=1000', 'pgd-20, n=10000',
    'worst case of apgd-ce, apgd-t, n=1000'."""
    if p['kind'] == 'clean':
        return f"clean, n={p['n_examples']}"
    attack = f"worst case of {', '.join(p['attacks'])}" if p['attack'] == 'worst-case' else p['attack']
    return f"{attack}, n={p['n_examples']}"


def _metric_config(p: Mapping[str, Any]) -> str:
    return f"{p['threat_model']} {p['attack'] if p['kind'] == 'robust' else 'clean'} n={p['n_examples']}"


def _eval_results(records: Sequence[Mapping[str, Any]], dataset: str) -> List[Any]:
    hub_id, display, _ = _DATASETS.get(dataset, (dataset, dataset, ''))
    out = []
    for record in records:
        for p in record_protocols(record):
            args = dict(threat_model=p['threat_model'], norm=p['norm'], eps=p['eps'], attack=p['attack'],
                        n_examples=p['n_examples'], eval_seed=p['seed'],
                        wilson95=[float(p['ci'][0]), float(p['ci'][1])])
            if p.get('attacks'):
                args['attacks'] = p['attacks']
            out.append(EvalResult(
                task_type='image-classification', dataset_type=hub_id, dataset_name=display, dataset_split='test',
                metric_type='accuracy' if p['kind'] == 'clean' else 'robust_accuracy', metric_value=p['value'],
                metric_name=('clean accuracy' if p['kind'] == 'clean' else f"robust accuracy ({protocol_label(p)})"),
                metric_config=_metric_config(p), metric_args=args))
    return out


def _pct(x: float) -> str:
    return f'{100 * x:.1f}%'


def _md_cell(text: Any) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def _headline(records: List[dict]) -> dict:
    """The record a card and the published index state first: the one on the most test images (the most precise;
    for the zoo PGD-20 on all 10,000), the run's own final evaluation on ties."""
    return max(records, key=lambda r: r['n_examples'])


def _stronger_index_entries(records: Sequence[Mapping[str, Any]], first: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """What the index keeps of each AutoAttack (or APGD) record other than the headline one: attacks, n and robust
    accuracy, so that `robust-zoo list --results` and the main job can name the attack to trust beside the headline
    (records under another threat model than the headline's are not a stronger attack on it)."""
    return [dict(attacks=list(r['attacks']), n_examples=r['n_examples'], robust_accuracy=r['robust_accuracy'])
            for r in records if r is not first and any(is_autoattack(a) for a in r['attacks'])
            and r['threat_model']['id'] == first['threat_model']['id']]


def _caveats(rz: Mapping[str, Any]) -> Dict[str, Any]:
    """What the index keeps of a card's warnings, so that a listing of the numbers carries them too: the sanity
    checks that did not pass, an early stop, catastrophic overfitting in the shipped weights."""
    co = rz.get('catastrophic_overfitting') or {}
    return {k: v for k, v in (('checks_not_passed', rz.get('checks_not_passed')),
                              ('stopped_early', rz.get('stopped_early')),
                              ('catastrophic_overfitting', co.get('kept_weights_affected'))) if v}


def _checks_not_passed(records: Sequence[Mapping[str, Any]]) -> List[str]:
    """'<check> <STATUS>' for every sanity check of the records that warned or failed (each once)."""
    return list(dict.fromkeys(f"{c.get('name')} {c.get('status')}" for r in records for c in r.get('checks', [])
                              if c.get('status') in ('WARN', 'FAIL')))


