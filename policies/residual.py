"""Residual RL: an SB3 policy learns a bounded correction on top of a frozen base policy.

`ResidualAction` is a Gymnasium wrapper, so SB3's PPO and SAC train the residual unmodified.
Every step the wrapper computes the base action from the observation (`skillcell.policies.frozen`:
a BC model or any SB3 model, or the scripted expert), and executes

    action = clip(base(o) + scale * r, -1, 1)

for the policy's action ``r`` in [-1, 1] (SAC squashes it with tanh; PPO's Gaussian sample is
clipped to the box by SB3 before the step), so the residual never moves an action channel by more
than ``scale`` of its range. The residual policy observes ``[o, base(o)]``: what the base is about
to do is what it corrects. `zero_action_head` sets the residual's output layer to zero, so
training starts from the base policy exactly (``tanh(0) = 0`` for SAC, a zero Gaussian mean for
PPO) and RL's early, noisy updates cannot start by destroying it.

**Export** (`skillcell.deploy.export.export_residual_onnx`, deployment's side): base and residual
become ONE ONNX graph with the same inputs, outputs and metadata as a plain export, so the runner
and the gate treat it as any policy. Only a learned base can be exported that way (`learned_base`):
a scripted expert is Python code, not a network, and is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from skillcell.config import ConfigError, parse_yaml
from skillcell.policies.frozen import SB3Policy, frozen_policy, is_scripted
from skillcell.policies.rundir import RunDir
from skillcell.rollout import Policy

__all__ = ["ResidualAction", "ResidualRun", "compose", "learned_base", "residual_run",
           "zero_action_head"]


def compose(base_action: np.ndarray, residual: np.ndarray, scale: float, low: np.ndarray,
            high: np.ndarray) -> np.ndarray:
    """The executed action (float32) for base action(s) and residual policy action(s)."""
    r = np.clip(np.asarray(residual, np.float32), -1.0, 1.0)
    return np.clip(np.asarray(base_action, np.float32) + np.float32(scale) * r, low, high)


class ResidualAction(gym.Wrapper):
    """The env as a residual policy sees it: observation ``[o, base(o)]``, action ``r`` in [-1, 1]."""

    def __init__(self, env: gym.Env, base: Policy, scale: float):
        super().__init__(env)
        obs, act = env.observation_space, env.action_space
        if not (isinstance(obs, gym.spaces.Box) and isinstance(act, gym.spaces.Box) and len(obs.shape) == 1):
            raise TypeError("ResidualAction needs flat Box observation and action spaces")
        if not 0.0 < scale <= 2.0:
            raise ValueError(f"residual scale must be in (0, 2] (a fraction of the action range), got {scale}")
        self.base, self.scale = base, float(scale)
        self.observation_space = gym.spaces.Box(np.concatenate([obs.low, act.low]).astype(np.float32),
                                                np.concatenate([obs.high, act.high]).astype(np.float32),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, act.shape, np.float32)
        self._low, self._high = act.low.astype(np.float32), act.high.astype(np.float32)
        self._base_action = np.zeros(act.shape, np.float32)

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        self._base_action = np.asarray(self.base(obs), np.float32)
        return np.concatenate([np.asarray(obs, np.float32), self._base_action])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.base.reset()
        return self._observe(obs), info

    def step(self, action):
        executed = compose(self._base_action, action, self.scale, self._low, self._high)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        info = {**info, "residual_max_abs": float(np.max(np.abs(executed - self._base_action)))}
        return self._observe(obs), reward, terminated, truncated, info


def zero_action_head(model: Any) -> None:
    """Zeroes the output layer of an SB3 PPO or SAC actor: its deterministic action becomes exactly 0."""
    import torch as th

    head = getattr(model.policy, "action_net", None)  # PPO's Gaussian mean
    if head is None:
        head = model.actor.mu  # SAC's pre-tanh mean
    with th.no_grad():
        head.weight.zero_()
        head.bias.zero_()


def learned_base(base: Policy) -> SB3Policy:
    """``base`` if it is a network (an SB3 model), which base + residual can be exported with."""
    if not isinstance(base, SB3Policy):
        raise ValueError(f"residual export: the base is {type(base).__name__}, a scripted expert: Python code, not "
                         "a network, so base + residual cannot become one ONNX policy; train the residual on a "
                         "learned base (residual.base: bc or an SB3 model) to export it")
    return base


class ResidualRun:
    """A trained residual (an SB3 model) with the base and scale its ``residual.yaml`` names.

    The record's ``base`` is a path relative to the record's folder (the run's own BC or DAgger
    model), an absolute path, or ``scripted[:skill]``; a learned base must still have the SHA-256
    recorded at training time. This is what the gate exports and checks as one policy.
    """

    def __init__(self, loaded: Any, record_path: Path, trusted: bool = False):
        self.loaded, self.record_path, self.trusted = loaded, Path(record_path), trusted
        try:
            record = parse_yaml(self.record_path.read_text(), str(self.record_path))
            self.scale, base, self.history = float(record["scale"]), str(record["base"]), int(record.get("history", 0))
        except (OSError, KeyError, TypeError, ValueError) as exc:  # ValueError: ConfigError too
            raise ConfigError(f"{self.record_path}: not a readable residual record ({exc})") from None
        self.base_spec = base if is_scripted(base) or Path(base).is_absolute() else str(self.record_path.parent / base)
        self.base_sha256 = record.get("base_sha256")
        self._base: SB3Policy | None = None

    def base(self, env: Any) -> Policy:
        """The frozen base for ``env`` (a learned one is loaded once and checked against the record)."""
        if self.history:
            raise ConfigError(f"{self.record_path}: trained with env.history: {self.history}; the base and the "
                              "residual observe a history, which the ONNX runner does not keep")
        if is_scripted(self.base_spec):
            return frozen_policy(self.base_spec, env, where=f"{self.record_path}: base")
        if self._base is None:
            base = frozen_policy(self.base_spec, env, where=f"{self.record_path}: base", trusted=self.trusted)
            if self.base_sha256 and base.loaded.sha256 != self.base_sha256:
                raise ConfigError(f"{self.record_path}: the base {self.base_spec} changed since training "
                                  f"(sha256 {base.loaded.sha256[:12]}, recorded {self.base_sha256[:12]})")
            self._base = base
        return self._base

    def wrap(self, env: gym.Env) -> ResidualAction:
        """``env`` as the residual sees it."""
        return ResidualAction(env, self.base(env), self.scale)

    def actions(self, env: Any, obs: np.ndarray) -> np.ndarray:
        """The composed actions for a batch of raw observations (a learned base)."""
        base = learned_base(self.base(env))
        obs = np.asarray(obs, np.float32)
        base_actions = np.stack([base(o) for o in obs])
        residual, _ = self.loaded.model.predict(np.concatenate([obs, base_actions], axis=1), deterministic=True)
        space = env.unwrapped.action_space
        return compose(base_actions, residual, self.scale, space.low, space.high).astype(np.float64)

    def provenance(self) -> dict[str, Any]:
        return {**self.loaded.provenance(), "residual": {"record": str(self.record_path), "base": self.base_spec,
                                                         "base_sha256": self.base_sha256, "scale": self.scale}}


def residual_run(loaded: Any, trusted: bool = False) -> ResidualRun | None:
    """The `ResidualRun` of a loaded RL model of a residual run (`RunDir.residual_record_of`), else None."""
    record = RunDir.residual_record_of(loaded.path)
    return ResidualRun(loaded, record, trusted) if record is not None else None
