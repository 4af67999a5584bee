"""The verl 0.9.1 plug-in: trainer subclass, agent loop, entry point, Hydra config.

Nothing here is imported by ``import aepo``; ``plugin`` is what verl loads.
"""
