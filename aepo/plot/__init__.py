"""Figures: entropy/reward curves of runs (``curves``) and pass@k curves (``passk``)."""
