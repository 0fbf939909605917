"""The leaderboard: the published models' results aggregated over seeds, generated from their model cards.

Every number comes from a card's machine-readable metadata (its model-index results and `robust_zoo` block, read
with huggingface_hub's `ModelCard`), aggregated over seeds per (architecture, activation, frozen bank, threat model,
training attack). `write_leaderboard` replaces the marked blocks of a page (the docs' `results.md` when
`robust-zoo leaderboard` runs in a checkout); `robust_zoo.publish.tables` renders the rows.
"""
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .._io import PathLike, atomic_write_text
from ..models._pretrained import cards_dir
from .records import _wilson, protocol_label
from .reference import reproductions_markdown
from .tables import headline_protocols, leaderboard_markdown, plot_leaderboard

__all__ = [
    'LEADERBOARD_END', 'LEADERBOARD_START', 'PUBLISHED_END', 'PUBLISHED_START', 'REPRODUCTIONS_END',
    'REPRODUCTIONS_START', 'headline_protocols', 'leaderboard', 'leaderboard_markdown', 'published_markdown',
    'replace_block', 'seed_stat', 'write_leaderboard',
]

LEADERBOARD_START, LEADERBOARD_END = '<!-- leaderboard:start -->', '<!-- leaderboard:end -->'
PUBLISHED_START, PUBLISHED_END = '<!-- published:start -->', '<!-- published:end -->'
REPRODUCTIONS_START, REPRODUCTIONS_END = '<!-- reproductions:start -->', '<!-- reproductions:end -->'


def _card_results(readme: Path) -> Dict[str, Any]:
    """A card's machine-readable data: the `robust_zoo` metadata block and the model-index results."""
    from huggingface_hub import ModelCard
    data = ModelCard.load(readme).data
    rz = data.to_dict().get('robust_zoo')
    if not isinstance(rz, dict) or not rz.get('architecture'):
        raise ValueError(f'{readme} has no robust_zoo metadata block: not a robust_zoo card (robust-zoo card).')
    results = []
    for r in data.eval_results or []:
        args = r.metric_args or {}
        if 'n_examples' not in args or 'attack' not in args:
            raise ValueError(f'{readme}: result {r.metric_name!r} lacks n_examples/attack in its metric args.')
        results.append(dict(kind='clean' if r.metric_type == 'accuracy' else 'robust', value=float(r.metric_value),
                            threat_model=args.get('threat_model'), attack=args['attack'], attacks=args.get('attacks'),
                            n_examples=int(args['n_examples']), norm=args.get('norm'), eps=args.get('eps')))
    return dict(rz, results=results, folder=readme.parent.name)


def seed_stat(values: Sequence[float], n: int, repos: Sequence[str] = (),
              seeds: Sequence[int] = ()) -> Dict[str, Any]:
    """Mean, sample sd and Wilson interval of one protocol's values over seeds; `repos` and `seeds` align with
    `values` (which card, which seed)."""
    mean = statistics.fmean(values)
    return dict(mean=mean, sd=statistics.stdev(values) if len(values) > 1 else None, min=min(values), max=max(values),
                values=list(values), repos=list(repos), seeds=list(seeds), n_seeds=len(values), n_examples=n,
                wilson95=_wilson(mean, n))


def leaderboard(cards_root: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Aggregate the cards under `cards_root` (default: the model-cards folder in use) per (architecture,
    activation, threat model, training budget), over seeds. The source is each card's README.md metadata
    (model-index + the `robust_zoo` block), read with `huggingface_hub.ModelCard.load`.

    A model whose Sparta units came frozen from another model's bank is its own row (`bank`: where from), and so
    is one trained with another attack (`train_attack`, e.g. the small net under N-FGSM and under PGD) or under
    another recipe (`recipe`: LeNetSmall's 100-epoch reproduction and its 30-epoch grid), so that a row never mixes
    two budgets. Each row: base_architecture, activation, bank, threat_model, train_attack, recipe, seeds, repos,
    `checks` ({repo: sanity checks that warned or failed}), `stopped_early` ({repo: (kept epoch, epochs run)};
    both shown beneath the table),
    `overfit` ({repo: its card's catastrophic_overfitting record} for the runs whose shipped weights show it) and
    `robust_without_overfit` (the robust stats without those runs; None when there are none),
    `clean` (the clean accuracy at the largest n) and `robust` ({protocol label: stat}); a stat holds mean, sd
    (sample sd over seeds; None for one seed), min, max, values, n_seeds, n_examples and wilson95 (the Wilson
    interval at the mean and n: the test-sample uncertainty of one seed)."""
    root = Path(cards_root) if cards_root is not None else cards_dir()
    cards = [_card_results(readme) for readme in _card_readmes(root)]
    groups: Dict[Tuple[str, str, str, str, str, str], List[Dict[str, Any]]] = defaultdict(list)
    for card in cards:
        groups[(card.get('base_architecture') or card['architecture'], card['activation'], _bank_label(card),
                card['threat_model'], card.get('train_attack') or '', card.get('recipe') or '')].append(card)
    rows = []
    for (base, activation, bank, threat, train_attack, recipe), members in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][3], kv[0][4], kv[0][5], kv[0][1], kv[0][2])):
        overfit = {c['folder']: c['catastrophic_overfitting'] for c in sorted(members, key=lambda c: c['folder'])
                   if (c.get('catastrophic_overfitting') or {}).get('kept_weights_affected')}
        clean, robust = _aggregate(members, threat)
        rows.append(dict(
            base_architecture=base, activation=activation, bank=bank or None, threat_model=threat,
            train_attack=train_attack or None, recipe=recipe or None,
            seeds=sorted(c.get('seed') for c in members), repos=sorted(c['folder'] for c in members),
            checks={c['folder']: c['checks_not_passed'] for c in sorted(members, key=lambda c: c['folder'])
                    if c.get('checks_not_passed')},
            precision={c['folder']: c.get('precision') for c in sorted(members, key=lambda c: c['folder'])
                       if c.get('precision')},
            stopped_early={c['folder']: (c.get('kept_epoch'), c.get('epochs_run'))
                           for c in sorted(members, key=lambda c: c['folder']) if c.get('stopped_early')},
            overfit=overfit, clean=clean, robust=robust,
            robust_without_overfit=_aggregate([c for c in members if c['folder'] not in overfit], threat)[1]
            if overfit else None))
    return rows


def _card_readmes(root: Path) -> List[Path]:
    """The README.md of every card folder under `root`; a missing folder, or one without cards (a typo in --cards),
    is an error, never an empty leaderboard that would replace the README's tables."""
    if not root.is_dir():
        raise ValueError(f'cards folder {root} does not exist: pass the folder that holds the <arch>.<tag>/ card '
                         f'folders (--cards; default {cards_dir()}); nothing was written.')
    readmes = [p / 'README.md' for p in sorted(root.iterdir()) if not p.name.startswith('.')
               and (p / 'README.md').is_file()]
    if not readmes:
        raise ValueError(f'{root} holds no model card (no <arch>.<tag>/README.md): is --cards right? '
                         f'Cards are written by `robust-zoo card`; nothing was written.')
    return readmes


def _aggregate(members: Sequence[Mapping[str, Any]], threat: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """(clean stat at the largest n, {protocol label: robust stat}) over the cards `members`."""
    clean: Dict[int, List[Tuple[float, str, int]]] = defaultdict(list)  # each value with its card's repo and seed
    robust: Dict[Tuple[str, int], List[Tuple[float, str, int]]] = defaultdict(list)
    labels: Dict[Tuple[str, int], str] = {}
    for card in members:
        for r in card['results']:
            if r['threat_model'] not in (None, threat):
                continue
            if r['kind'] == 'clean':
                clean[r['n_examples']].append((r['value'], card['folder'], card.get('seed')))
            else:
                key = (r['attack'], r['n_examples'])
                robust[key].append((r['value'], card['folder'], card.get('seed')))
                labels[key] = protocol_label(dict(r, kind='robust'))
    n_clean = max(clean) if clean else None
    def stat(pairs, n):
        return seed_stat([v for v, _, _ in pairs], n, [repo for _, repo, _ in pairs], [seed for _, _, seed in pairs])
    return (stat(clean[n_clean], n_clean) if n_clean else None,
            {labels[k]: stat(v, k[1]) for k, v in sorted(robust.items(), key=lambda kv: (
                kv[0][0] == 'worst-case', kv[0][1], kv[0][0]))})


def _bank_label(card: Mapping[str, Any]) -> str:
    """'' for a model that trained its own activations, else where its frozen Sparta bank comes from."""
    bank = card.get('sparta_bank')
    if not isinstance(bank, dict) or not bank.get('frozen', True):
        return ''
    return f"{bank.get('source_model')} on {bank.get('source_dataset')}"


def published_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence listing every published model by architecture and tags (the results page's list), so the
    list never lags the cards."""
    tags: Dict[str, List[str]] = defaultdict(list)
    for r in rows:
        for repo in r['repos']:
            arch, tag = repo.split('.', 1)
            tags[arch].append(tag)
    if not tags:
        return 'No published models.'
    n = sum(len(v) for v in tags.values())
    return (f'{n} models, named `robust_zoo/<architecture>.<tag>`: ' + '; '.join(
        f"`{arch}` ({', '.join(sorted(v))})" for arch, v in sorted(tags.items())) + '.')


def replace_block(text: str, start: str, end: str, body: str, where: PathLike) -> str:
    """`text` with what lies between its one `start` line and its one `end` line replaced by `body`; `where` names
    the page in the error when the markers are missing, repeated or out of order."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f'{where} needs one {start} line followed by one {end} line where the table goes.')
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f'{head}{start}\n{body}\n{end}{tail}'


def write_leaderboard(readme_path: PathLike, png_path: Optional[PathLike] = None,
                      cards_root: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Replace the text between `<!-- leaderboard:start -->` and `<!-- leaderboard:end -->` in the page
    `readme_path` with the leaderboard table of the cards under `cards_root` (default: the cards folder in use), and
    draw it to `png_path` (linked from the table). If the page also has `<!-- published:start -->` /
    `<!-- published:end -->`, the list of published models goes there (`published_markdown`), and if it has
    `<!-- reproductions:start -->` / `<!-- reproductions:end -->`, the cards that set a published result beside
    theirs (`publish.reference.reproductions_markdown`). Returns the rows."""
    readme = Path(readme_path)
    if not readme.is_file():
        raise ValueError(f'{readme} does not exist: --page takes the page whose {LEADERBOARD_START} block the '
                         'table replaces.')
    text = readme.read_text()
    replace_block(text, LEADERBOARD_START, LEADERBOARD_END, '', readme)  # check the markers before any work
    rows = leaderboard(cards_root)
    image = None
    if png_path is not None and rows:
        png = plot_leaderboard(rows, Path(png_path))
        image = os.path.relpath(png.resolve(), readme.resolve().parent)
    text = replace_block(text, LEADERBOARD_START, LEADERBOARD_END, leaderboard_markdown(rows, image), readme)
    if PUBLISHED_START in text or PUBLISHED_END in text:
        text = replace_block(text, PUBLISHED_START, PUBLISHED_END, published_markdown(rows), readme)
    if REPRODUCTIONS_START in text or REPRODUCTIONS_END in text:
        root = Path(cards_root) if cards_root is not None else cards_dir()
        cards = [dict(_card_results(r), name=r.parent.name) for r in _card_readmes(root)]
        text = replace_block(text, REPRODUCTIONS_START, REPRODUCTIONS_END,
                             reproductions_markdown(cards) or 'No reproduction is published yet.', readme)
    atomic_write_text(readme, text)
    return rows
