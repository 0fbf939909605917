"""This project's own studies of the published models, beside `train/` and outside the `robust_zoo` package and its
wheel: the seed papers' claims, the rule that decides a comparison of arms over seeds and the Sparta transfer
experiments (claims.py, sparta_transfer.py; written into docs/claims.md by `python -m experiments.study`), and
the equal-time training comparison (equal_time.py) with the published results cards are set beside
(references/).

robust_zoo's leaderboard is generic (`robust-zoo leaderboard`); these are studies that read its rows.
"""
