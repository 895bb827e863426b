"""The env a training run learns in: the cell at its tier (or tier curriculum), wrapped as the config says.

`TrainEnvSpec` is picklable, so `SubprocVecEnv` workers build their own copy from it. From the
cell outwards:

1. the cell at a tier (``gym.make(id, tier=...)``), or `TierSwitch` over the curriculum's tiers;
2. `ForceLimitPenalty` (``env.force_penalty``): the force term against the cell's F/T stop;
3. the observation history (``env.history``, `skillcell.policies.history`);
4. `ResidualAction` (``residual``) around a frozen base (`skillcell.policies.frozen`).

The base of a residual sits outside the history, so a learned base trained with a history sees
the history it was trained on; a scripted base reads plain observations, so it cannot be combined
with a history (refused by the training config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import skillcell  # noqa: F401  (registers the cells, also in a subprocess worker)
from skillcell.policies.force_limit import ForceLimitPenalty
from skillcell.policies.frozen import frozen_policy
from skillcell.policies.history import history_env
from skillcell.policies.residual import ResidualAction

__all__ = ["TrainEnvSpec"]


@dataclass(frozen=True)
class TrainEnvSpec:
    """Everything needed to build one training (or evaluation) env; see the module docstring."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # without the tier
    tiers: tuple[str | None, ...] = (None,)  # one tier, or the curriculum's in order
    history: int = 0
    force_penalty: tuple[float, float] | None = None  # (weight, start_fraction)
    residual_base: str | None = None
    residual_scale: float = 0.2
    seed: int = 0
    trusted: bool = False  # unpickle an SB3 residual base (`skillcell.policies.loading`)

    def cell_env(self, tier: str | None):
        """The cell at ``tier``, through ``gym.make`` (TimeLimit and the env checker as registered)."""
        kwargs = dict(self.env_kwargs)
        if tier is not None:
            kwargs["tier"] = tier
        return gym.make(self.env_id, **kwargs)

    def make(self, tier: str | None = None):
        """The wrapped env; ``tier`` fixes one tier (evaluation), default: the spec's tier or curriculum."""
        from skillcell.policies.curriculum import TierSwitch

        if tier is not None or len(self.tiers) == 1:
            return self.wrap(self.cell_env(tier if tier is not None else self.tiers[0]))
        return self.wrap(TierSwitch(self.cell_env, self.tiers))

    def wrap(self, env):
        """Layers 2-4 of the module docstring around a cell env."""
        if self.force_penalty is not None:
            env = ForceLimitPenalty(env, *self.force_penalty)
        if self.history:
            env = history_env(env, self.history)
        if self.residual_base is not None:
            base = frozen_policy(self.residual_base, env, seed=self.seed, where="residual.base", trusted=self.trusted)
            env = ResidualAction(env, base, self.residual_scale)
        return env

    @property
    def final_tier(self) -> str | None:
        """The tier training ends at: what evaluation measures."""
        return self.tiers[-1]
