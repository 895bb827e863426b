"""A reward term against force beyond the cell's declared limit, for training policies meant for the gate.

The limit is the cell's F/T stop, ``limits.tool_force_stop_n`` (`CellEnv.limits`,
`skillcell.envs.limits`): the number the cell's ``envelope.yaml`` names as its force limit, which the
gate judges and the runner's filter holds at; it is read, never restated. The force is the one the
envelope checks: the magnitude of the wrench the tool applies to its surroundings
(`CellEnv.wrench_tool`, gravity compensated, ground truth: no tier noise or bias). Each step adds

    reward_force_limit = -weight * max(0, |F| - start_fraction * limit) / limit

so ``weight`` is what a step costs per limit's worth of excess force, and ``start_fraction`` below
1 starts the penalty short of the limit, leaving the policy a margin. The term is reported in
``info`` with the cell's own reward terms.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from skillcell.config import ConfigError

__all__ = ["LIMIT", "TERM", "ForceLimitPenalty"]

#: the ``info`` key of the term
TERM = "reward_force_limit"
#: the cell limit the term is against
LIMIT = "tool_force_stop_n"


class ForceLimitPenalty(gym.Wrapper):
    """Adds `TERM` to the reward; see the module docstring."""

    def __init__(self, env: gym.Env, weight: float = 1.0, start_fraction: float = 1.0,
                 limit_n: float | None = None):
        super().__init__(env)
        if limit_n is None:
            limit_n = env.unwrapped.limits.get(LIMIT)
            if limit_n is None:
                raise ConfigError(f"env.force_penalty: {type(env.unwrapped).__name__} declares no limits.{LIMIT} "
                                  "to penalize force against")
        if not limit_n > 0 or weight < 0 or not 0 < start_fraction <= 1:
            raise ConfigError(f"env.force_penalty: needs a positive limit, weight >= 0 and start_fraction in "
                              f"(0, 1], got {limit_n}, {weight}, {start_fraction}")
        self.limit_n, self.weight, self.start_fraction = float(limit_n), float(weight), float(start_fraction)

    def penalty(self, force_n: float) -> float:
        """The term for a tool force of ``force_n`` newtons."""
        excess = max(0.0, force_n - self.start_fraction * self.limit_n)
        return -self.weight * excess / self.limit_n

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        # The norm is frame-independent: the envelope's cell-frame force has the same magnitude.
        term = self.penalty(float(np.linalg.norm(self.env.unwrapped.wrench_tool[:3])))
        info = {**info, TERM: term}
        return obs, float(reward) + term, terminated, truncated, info
