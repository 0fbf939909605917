"""Deprecated: the leaderboard moved to `robust_zoo.publish.leaderboard` (publishing code that `import robust_zoo`
does not import); this module re-exports it so that older scripts keep working."""
import warnings

from .publish.leaderboard import *  # noqa: F401,F403
from .publish.leaderboard import __all__  # noqa: F401

warnings.warn('robust_zoo.leaderboard is deprecated: use robust_zoo.publish.leaderboard.', DeprecationWarning,
              stacklevel=2)
