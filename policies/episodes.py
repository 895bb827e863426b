"""Episodes of a named policy, in whichever process runs them (`skillcell.parallel`).

A `PolicySpec` names a policy as text and flags, never as a loaded object, so that it can travel
to a Ray worker: ``scripted[:skill]`` (the cell's scripted expert) or the path of an SB3 ``.zip``
(with its algorithm, its VecNormalize statistics, default: its run's, and whether it is trusted;
a residual run's model acts on top of its base, as ``skillcell eval`` runs it). An `EpisodeTask`
is one seeded episode of such a policy in a cell: `skillcell.parallel.SeedTask`, returning the
`skillcell.rollout.EpisodeRecord` of the one rollout loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from skillcell.envs.registry import cell_spec
from skillcell.policies.frozen import SB3Policy, is_scripted
from skillcell.policies.loading import load_sb3_model
from skillcell.policies.residual import residual_run
from skillcell.policies.rundir import RunDir
from skillcell.rollout import EpisodeRecord, Policy, rollout

__all__ = ["EpisodeTask", "PolicySpec"]


@dataclass(frozen=True)
class PolicySpec:
    """A policy by name: ``scripted[:skill]`` or an SB3 ``.zip``; see the module docstring.

    ``seed``: the scripted expert's (its noise, per episode `ScriptedExpert.for_episode`).
    ``vecnormalize``: the statistics file (default: the one of the model's run, if any).
    ``trusted``: unpickle the SB3 files (`skillcell.policies.loading`; runs code from them).
    """

    model: str
    algorithm: str = "auto"
    vecnormalize: str | None = None
    trusted: bool = False
    seed: int = 0

    @property
    def scripted(self) -> bool:
        return is_scripted(self.model)

    @property
    def skill(self) -> str:
        return self.model.partition(":")[2] or "expert"

    def vecnormalize_file(self) -> Path | None:
        if self.scripted:
            return None
        return Path(self.vecnormalize) if self.vecnormalize is not None else RunDir.vecnormalize_of(self.model)


@dataclass(frozen=True)
class EpisodeTask:
    """One episode of ``policy`` in ``env_id`` (made with ``env_kwargs``) per seed: a `SeedTask`.

    `setup` loads the model (or checks the expert's skill) and builds the env once per process;
    bad input is a one-line `ValueError` there. A scripted expert is made afresh for every
    episode (`ScriptedExpert.for_episode`); an SB3 policy keeps nothing between episodes.
    """

    env_id: str
    policy: PolicySpec
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def setup(self) -> tuple[gym.Env, Policy | None]:
        spec = self.policy
        if spec.scripted:
            expert = cell_spec(self.env_id).expert
            if expert is None:
                raise ValueError(f"no scripted expert for {self.env_id}: its register_cell declares none")
            env = gym.make(self.env_id, **self.env_kwargs)
            try:
                expert(env, skill=spec.skill, seed=spec.seed)  # a skill level the expert does not have
            except ValueError:
                env.close()
                raise
            return env, None
        import torch as th

        th.set_num_threads(1)  # one small MLP forward per step: extra threads only contend
        loaded = load_sb3_model(spec.model, algorithm=spec.algorithm, trusted=spec.trusted,
                                vecnormalize=spec.vecnormalize_file())
        env = gym.make(self.env_id, **self.env_kwargs)
        residual = residual_run(loaded, spec.trusted)  # a residual run: it acts on top of its base
        if residual is not None:
            env = residual.wrap(env)
        policy = SB3Policy(loaded)
        if policy.observation_shape != tuple(env.observation_space.shape):
            env.close()
            raise ValueError(f"{spec.model} takes observations of shape {policy.observation_shape}; "
                             f"{self.env_id} gives {tuple(env.observation_space.shape)}")
        return env, policy

    def run(self, state: tuple[gym.Env, Policy | None], seed: int) -> EpisodeRecord:
        env, policy = state
        if policy is None:
            policy = cell_spec(self.env_id).expert.for_episode(env, self.policy.skill, self.policy.seed, seed)
        return rollout(env, policy, seed=seed)

    def close(self, state: tuple[gym.Env, Policy | None]) -> None:
        state[0].close()
