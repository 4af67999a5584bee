"""The reward guard's revival bonus in verl's actor loss.

``aepo.core.controller`` gives a policy without positives an entropy bonus (``aepo/revival_coef``);
the legacy trainer installs it as the actor workers' ``entropy_coeff``, added to the actor's
own, on the updates that have it, and has verl compute pi_theta's entropy only for those.
"""

from __future__ import annotations

import logging

from aepo.backends.verl._verl_internals import set_update_entropy

logger = logging.getLogger(__name__)


class RevivalBonus:
    def __init__(self, config):
        self.config = config
        self.calculate_entropy = bool(config.actor_rollout_ref.actor.calculate_entropy)
        """the actor's own setting, restored when the bonus ends"""
        self.refused = False
        """a bonus was due and could not be applied (warned once)"""

    def entropy_coeff(self, coef: float, installed: float | None):
        """(the ``entropy_coeff`` the workers' loss needs now, None to keep the installed one;
        metrics) for this step's bonus ``coef``; ``installed`` None: the loss the workers were
        built with."""
        if coef > 0 and (self.config.get("distillation") or {}).get("enabled", False):
            # ppo_loss would replace the distillation loss
            return None, self.refuse("distillation.enabled=true keeps the actor's own loss")
        base = float(self.config.actor_rollout_ref.actor.entropy_coeff)
        if base + coef == (base if installed is None else installed):
            return None, {}
        set_update_entropy(self.config, self.calculate_entropy or coef > 0)
        return base + coef, {}

    def refuse(self, why: str) -> dict[str, float]:
        """No bonus this step: warned once, and logged as 0."""
        if not self.refused:
            logger.warning("AEPO guard: no revival bonus (%s); pushes down stay stopped", why)
            self.refused = True
        return {"aepo/revival_coef": 0.0}
