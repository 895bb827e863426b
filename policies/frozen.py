"""Frozen policies named in a training config: DAgger's expert and residual RL's base.

Either is given as text: ``scripted`` or ``scripted:<skill>`` (the cell's scripted expert,
`skillcell.policies.scripted.make_expert`), or the path of an SB3 ``.zip`` (its run's
``vecnormalize.pkl`` is used, `skillcell.policies.rundir.RunDir.vecnormalize_of`, as ``skillcell
eval`` does). Both become a `skillcell.rollout.Policy`: ``policy(obs) -> action`` for one raw env
observation, and ``reset()`` at the start of every episode. SB3 files are
read as data through `skillcell.policies.loading` (nothing in them is unpickled unless ``trusted``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skillcell.config import ConfigError
from skillcell.policies.loading import load_sb3_model
from skillcell.policies.rundir import RunDir
from skillcell.policies.scripted import make_expert
from skillcell.rollout import Policy

__all__ = ["SB3Policy", "frozen_policy", "is_scripted"]


class SB3Policy:
    """A loaded SB3 model's deterministic action (float32, clipped or unscaled as SB3 does) for one observation."""

    def __init__(self, loaded: Any):
        self.loaded = loaded
        self.observation_shape = tuple(loaded.model.observation_space.shape)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.loaded.predict(np.asarray(obs, np.float32)), np.float32)

    def reset(self) -> None:
        """A feed-forward policy keeps nothing between episodes."""

    def describe(self) -> str:
        return f"{self.loaded.path} (sha256 {self.loaded.sha256[:12]})"


def is_scripted(spec: str) -> bool:
    return spec == "scripted" or spec.startswith("scripted:")


def frozen_policy(spec: str, env: Any, *, seed: int = 0, where: str = "policy", trusted: bool = False) -> Policy:
    """The `Policy` ``spec`` names, for ``env`` (its observation size is checked); see the module docstring.

    ``trusted``: unpickle an SB3 model (`skillcell.policies.loading.load_sb3_model`; runs code from it)."""
    if is_scripted(spec):
        skill = spec.partition(":")[2] or "expert"
        try:
            return make_expert(env, skill=skill, seed=seed)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    path = Path(spec)
    try:
        policy = SB3Policy(load_sb3_model(path, trusted=trusted, vecnormalize=RunDir.vecnormalize_of(path)))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if policy.observation_shape != tuple(env.observation_space.shape):
        raise ConfigError(f"{where}: {path} observes {policy.observation_shape}, the env gives "
                          f"{tuple(env.observation_space.shape)}")
    return policy
