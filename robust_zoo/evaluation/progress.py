"""An evaluation's progress: a log line per batch on the `robust_zoo.evaluate` logger and, where asked, a tqdm
bar over examples (rank 0 only)."""
import logging
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from .state import from_bits

__all__ = ['Progress', 'robust_mask']

_logger = logging.getLogger('robust_zoo.evaluate')


def robust_mask(record: Mapping[str, Any]) -> torch.Tensor:
    """The points of one batch's record that are clean-correct and survive every attack."""
    ok = from_bits(record['clean'])
    for s in record['attacks'].values():
        ok &= from_bits(s)
    return ok


class Progress:
    """Reports on `shown` of `n` examples (fewer when this rank reports its own share only); `show` draws the bar
    (default: when stderr is a terminal), starting at the examples of the `done` records."""

    def __init__(self, threat_id: str, shown: int, n: int, world: int, done: Sequence[Mapping[str, Any]],
                 show: Optional[bool] = None, rank: int = 0):
        self.threat_id, self.shown, self.n, self.world = threat_id, shown, n, world
        self.share = f' (rank 0 of {world})' if shown < n else ''
        if show is None:
            show = bool(getattr(sys.stderr, 'isatty', lambda: False)())
        self.bar = None
        if show and rank == 0:
            from tqdm import tqdm
            self.bar = tqdm(total=shown, unit='img', dynamic_ncols=True, initial=sum(len(r['clean']) for r in done),
                            desc=f'evaluate {threat_id}{self.share}')

    def update(self, records: Dict[int, Dict[str, Any]], new: Sequence[Mapping[str, Any]]) -> None:
        """Log the accuracies so far over `records`, and move the bar on by the examples of the `new` ones."""
        done = [records[k] for k in sorted(records)]
        count = sum(len(r['clean']) for r in done)
        clean = sum(r['clean'].count('1') for r in done) / max(count, 1)
        specs = done[0]['attacks'] if done else {}
        accs = {s: sum(r['attacks'][s].count('1') for r in done) / max(count, 1) for s in specs}
        robust = sum(int(robust_mask(r).sum()) for r in done) / max(count, 1)
        _logger.info('%s: %d/%d examples%s, clean %.3f%s', self.threat_id, count, self.shown, self.share, clean,
                     ''.join(f', {s} {a:.3f}' for s, a in accs.items()))
        if self.bar is not None:
            self.bar.set_postfix_str(f'clean {clean:.3f}, robust {robust:.3f}', refresh=False)
            self.bar.update(sum(len(r['clean']) for r in new))

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f'evaluate {self.threat_id}: {text}')

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
