"""aepo: Arbitrary Entropy Policy Optimization (arXiv 2510.08141) for verl and transformers.

Importing ``aepo`` needs only torch and pydantic; verl, transformers and vLLM are imported
by the engines that use them.
"""

__version__ = "0.1.0"
