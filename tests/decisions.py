"""Test-only: the controller decisions a run's steps applied, recorded from outside the core
(production keeps no history: its state stays the size of one step)."""

from __future__ import annotations

from aepo.core import AEPOStep, Decision


def record_decisions(step: AEPOStep) -> list[Decision]:
    """Wraps ``step.measured``; the returned list fills with each step's decision as
    ``measured`` settled it (the one the update used), in step order."""
    decisions: list[Decision] = []
    measured = step.measured

    def recording(start, entropy, rewards=None):
        result = measured(start, entropy, rewards)
        if result.plan is not None:
            decisions.append(result.plan.decision)
        return result

    step.measured = recording
    return decisions
