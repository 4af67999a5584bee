"""Evaluation: sampling n answers per problem, pass@k, and result tables (``aepo eval``)."""
