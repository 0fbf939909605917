"""Deprecated: the old name of `robust_zoo.sparta_bank` (Sparta banks: trained Sparta units saved, read and loaded
into other CNNs), renamed so that it no longer shares a name with the activation, `robust_zoo.layers.sparta`.
Published cards' `robust_zoo.sparta.load_bank(...)` keeps working."""
import warnings

from .sparta_bank import *  # noqa: F401,F403
from .sparta_bank import __all__  # noqa: F401

warnings.warn('robust_zoo.sparta is deprecated: Sparta banks live in robust_zoo.sparta_bank (the activation is '
              'robust_zoo.layers.sparta).', DeprecationWarning, stacklevel=2)
