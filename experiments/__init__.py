"""This project's own study of the published models: the seed papers' claims, the verdict rule and the Sparta
transfer experiments, written into docs/claims.md by `python -m experiments.study`.

It lives beside `train/`, outside the `robust_zoo` package and its wheel: robust_zoo's leaderboard is generic
(`robust-zoo leaderboard`), this is one study that reads its rows.
"""
