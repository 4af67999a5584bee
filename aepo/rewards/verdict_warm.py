"""Imported once by the reward's worker pool before it forks workers: importing this module
runs :func:`aepo.rewards.verdict.warm_up`, so every worker starts with math-verify's grammar
loaded and its caches warm (0.7 CPU-s it would otherwise pay after every replacement)."""

from aepo.rewards.verdict import warm_up

warm_up()
