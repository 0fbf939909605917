"""Publishing robust_zoo models: card repo folders from training runs, their plots, the published index, the
push to the Hugging Face Hub, and the leaderboard built from the cards.

Not imported by `import robust_zoo` (it needs huggingface_hub's card code and matplotlib); the `robust-zoo card`,
`push`, `unpublish` and `leaderboard` commands import it when they run.
"""
from .card import unpublish, unpublish_target, write_card_repo
from .push import push_card_repo, repo_files

__all__ = ['push_card_repo', 'repo_files', 'unpublish', 'unpublish_target', 'write_card_repo']
