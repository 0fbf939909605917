"""Deprecated: the old home of published models, kept so that older cards' and scripts' imports keep working.

The library side is `robust_zoo.models._pretrained` (the published index as timm pretrained cfgs) and
`robust_zoo.models._hub` (the verified weight resolver); writing, pushing and withdrawing cards is
`robust_zoo.publish`, which `import robust_zoo` does not import.
"""
import warnings

from ._io import sha256_file
from .models._hub import PublishedWeightsError, check_weights_belong, resolve_weights, weights_metadata
from .models._pretrained import (DEFAULT_ORG, MODEL_CARDS_DIR, PUBLISHED_INDEX, WEIGHTS_NAME, _state, cards_dir,
                                 hf_org, index_path, load_published, not_published, register_published, stronger_text,
                                 with_published)
from .publish import push_card_repo, repo_files, unpublish, unpublish_target, write_card_repo
from .publish.recipes import EXECUTION_KEYS

warnings.warn('robust_zoo.hub is deprecated: use robust_zoo.models (loading) and robust_zoo.publish (cards, push).',
              DeprecationWarning, stacklevel=2)

resolve_published_weights = resolve_weights

__all__ = [
    'DEFAULT_ORG', 'EXECUTION_KEYS', 'MODEL_CARDS_DIR', 'PUBLISHED_INDEX', 'PublishedWeightsError', 'WEIGHTS_NAME',
    'cards_dir', 'check_weights_belong', 'hf_org', 'index_path', 'load_published', 'not_published', 'push_card_repo',
    'register_published', 'repo_files', 'resolve_published_weights', 'sha256_file', 'stronger_text', 'unpublish',
    'unpublish_target', 'weights_metadata', 'with_published', 'write_card_repo', '_state',
]
