"""A tier curriculum: training starts at an easier randomization tier and moves on to the hardest.

``env.curriculum: [{tier: D1, until_steps: 20000}, {tier: D2}]`` trains at D1 until RL has run
20000 env steps, then at D2. A tier is fixed when a cell env is built (it scales the cell's randomization
ranges and sets up the tier's draws, `skillcell.envs.tiers`), so `TierSwitch` keeps one env per
tier and moves to the next at the first reset after `TierCurriculum` (an SB3 callback) asks it
to; an episode in progress finishes where it started. An env built for a later tier is seeded
from the switch's own generator (seeded by the first ``reset(seed=...)``), so a run stays
reproducible. Every tier of a cell has the same observation and action spaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["TierCurriculum", "TierSwitch"]


class TierSwitch(gym.Wrapper):
    """An env that is one of several tiers of the same cell; `set_tier` takes effect at the next reset."""

    def __init__(self, make: Callable[[str], gym.Env], tiers: Sequence[str]):
        if not tiers:
            raise ValueError("TierSwitch needs at least one tier")
        self._make = make
        self._envs: dict[str, gym.Env] = {tiers[0]: make(tiers[0])}
        super().__init__(self._envs[tiers[0]])
        self.tier_name = self.pending = tiers[0]
        self._seeds: np.random.Generator | None = None
        self._fresh: set[str] = set()

    def set_tier(self, name: str) -> None:
        """The tier of the episodes from the next reset on."""
        self.pending = name

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._seeds = np.random.default_rng(seed)
        if self.pending != self.tier_name:
            if self.pending not in self._envs:
                self._envs[self.pending] = self._make(self.pending)
                self._fresh.add(self.pending)
            self.env, self.tier_name = self._envs[self.pending], self.pending
        if seed is None and self.tier_name in self._fresh:
            # A newly built env has an unseeded generator; give it a seed drawn from the run's.
            seed = int((self._seeds or np.random.default_rng()).integers(2**31 - 1))
        self._fresh.discard(self.tier_name)
        return self.env.reset(seed=seed, options=options)

    def close(self):
        for env in self._envs.values():
            env.close()


class TierCurriculum(BaseCallback):
    """Moves every training env to the next tier of ``stages`` once the model passes its ``until_steps``.

    ``stages``: ``(tier, until_steps)`` pairs, the last ``until_steps`` None. ``log`` gets a line per switch.
    """

    def __init__(self, stages: Sequence[tuple[str, int | None]], log: Callable[[str], None] | None = None):
        super().__init__()
        self.stages = list(stages)
        self.stage = 0
        self.log = log

    def _on_training_start(self) -> None:
        self._advance()

    def _on_step(self) -> bool:
        self._advance()
        return True

    def _advance(self) -> None:
        moved = False
        while self.stages[self.stage][1] is not None and self.num_timesteps >= self.stages[self.stage][1]:
            self.stage += 1
            moved = True
        if moved:
            tier = self.stages[self.stage][0]
            self.training_env.env_method("set_tier", tier)
            self.logger.record("curriculum/stage", self.stage)
            if self.log is not None:
                self.log(f"curriculum: tier {tier} from {self.num_timesteps} RL env steps on")
