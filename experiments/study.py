"""Write the study's generated blocks into its docs page, from the model cards:

    python -m experiments.study                      # docs/claims.md from the cards folder in use (model_cards/)
    python -m experiments.study --cards DIR --page PAGE

Only the text between `<!-- claims:start -->` and `<!-- claims:end -->` (the claims' verdicts), between
`<!-- convergence:start -->` and `<!-- convergence:end -->` (whether the long-budget grid's runs stopped rising) and
between `<!-- transfer:start -->` and `<!-- transfer:end -->` (the Sparta transfer table and its verdicts) is
replaced; a test keeps the committed page equal to what the cards give. `robust-zoo leaderboard` writes the results
page.
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from robust_zoo._io import PathLike, atomic_write_text
from robust_zoo.models._pretrained import cards_dir
from robust_zoo.publish.leaderboard import leaderboard, replace_block

from .claims import claim_verdicts
from .convergence import convergence_markdown
from .sparta_transfer import transfer_experiments, transfer_markdown, transfer_summary, transfer_verdicts

__all__ = ['CLAIMS_END', 'CLAIMS_START', 'LONG_RECIPE', 'CONVERGENCE_END', 'CONVERGENCE_START', 'PAGE',
           'TRANSFER_END', 'TRANSFER_START', 'study_blocks', 'write_study']

CLAIMS_START, CLAIMS_END = '<!-- claims:start -->', '<!-- claims:end -->'
TRANSFER_START, TRANSFER_END = '<!-- transfer:start -->', '<!-- transfer:end -->'
CONVERGENCE_START, CONVERGENCE_END = '<!-- convergence:start -->', '<!-- convergence:end -->'
LONG_RECIPE = 'train/configs/lenet_small_fmnist_pgd10.yaml'  # the activation grid's long budget
PAGE = Path(__file__).resolve().parents[1] / 'docs' / 'claims.md'  # the study's page in this checkout


def study_blocks(rows: Sequence[Dict[str, Any]], cards_root: PathLike) -> Dict[str, str]:
    """{start marker: the block's text} of the leaderboard `rows` (from the cards under `cards_root`): the claims'
    verdicts, the long-budget grid's plateau table and the transfer table."""
    verdicts = claim_verdicts(rows)
    experiments = transfer_experiments(rows)
    transfer = [v for v in (transfer_summary(experiments), *transfer_verdicts(experiments)) if v]
    return {CLAIMS_START: '\n\n'.join(verdicts) if verdicts else '_No claim can be compared yet._',
            CONVERGENCE_START: convergence_markdown(rows, cards_root, LONG_RECIPE),
            TRANSFER_START: '\n\n'.join([transfer_markdown(experiments), *transfer])}


def write_study(page: PathLike = PAGE, cards_root: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Replace the claims, convergence and transfer blocks of `page` with what the cards under `cards_root`
    (default: the cards folder in use) give; the page must hold the three marker pairs. Returns the leaderboard
    rows."""
    page = Path(page)
    if not page.is_file():
        raise ValueError(f'{page} does not exist: --page takes the page whose {CLAIMS_START}, {CONVERGENCE_START} '
                         f'and {TRANSFER_START} blocks the study replaces.')
    text = page.read_text()
    ends = {CLAIMS_START: CLAIMS_END, CONVERGENCE_START: CONVERGENCE_END, TRANSFER_START: TRANSFER_END}
    for start, end in ends.items():  # check the markers before any work
        replace_block(text, start, end, '', page)
    rows = leaderboard(cards_root)
    for start, body in study_blocks(rows, cards_root if cards_root is not None else cards_dir()).items():
        text = replace_block(text, start, ends[start], body, page)
    atomic_write_text(page, text)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cards', default=None, help='folder of card repos (default: the cards folder in use)')
    p.add_argument('--page', default=str(PAGE), help='the page whose blocks to rewrite (default: %(default)s)')
    args = p.parse_args(argv)
    try:
        rows = write_study(args.page, args.cards)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{args.page}: claims, convergence and transfer blocks from {len(rows)} leaderboard rows')
    return 0


if __name__ == '__main__':
    sys.exit(main())
