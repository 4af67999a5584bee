"""Rewards: the math-verify reward on the last \\boxed{} answer (``math_reward``)."""
