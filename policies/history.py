"""Observation history: the last ``k`` observations and the previous action, as one flat observation.

A policy that sees one observation cannot tell how far its last command still has to travel: at
D2 every action arrives one or two control periods late (`skillcell.envs.tiers`). With
``env.history: k`` in a training config the policy observes

    [o_{t-k+1}, ..., o_{t-1}, o_t, a_{t-1}]

oldest first, each ``o`` the cell's own observation, ``a_{t-1}`` the action the policy sent at the
previous step (clipped to the action space, as the env clips it; zero at the first step). At reset
the missing older observations are the reset observation repeated. `history_env` builds it from
Gymnasium's own wrappers (`FrameStackObservation` with reset padding, `FlattenObservation`) plus
`PreviousAction`; `stack_history` computes the same vectors from a recorded episode, so
demonstrations train a history policy exactly as the wrapped env will feed it.

**Deployment**: an exported ONNX policy is stateless and the runner feeds it one observation per
period, so a policy trained with a history needs the same history kept outside the graph. The
ONNX export refuses such a model and says so (`skillcell.deploy.export`); train without
``env.history`` for a policy that goes through the gate today.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FlattenObservation, FrameStackObservation

__all__ = ["PreviousAction", "current_observation", "history_env", "history_size", "stack_history"]


class PreviousAction(gym.Wrapper):
    """Appends the previous action (clipped to the action space; zero after reset) to the observation."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        obs, act = env.observation_space, env.action_space
        if not (isinstance(obs, gym.spaces.Box) and isinstance(act, gym.spaces.Box) and len(obs.shape) == 1
                and len(act.shape) == 1):
            raise TypeError("PreviousAction needs flat Box observation and action spaces")
        self.observation_space = gym.spaces.Box(np.concatenate([obs.low, act.low]).astype(np.float32),
                                                np.concatenate([obs.high, act.high]).astype(np.float32),
                                                dtype=np.float32)
        self._previous = np.zeros(act.shape, np.float32)

    def _observation(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, np.float32), self._previous])

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._previous = np.zeros_like(self._previous)
        return self._observation(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        space = self.action_space
        self._previous = np.clip(np.asarray(action, np.float32), space.low, space.high)
        return self._observation(obs), reward, terminated, truncated, info


def history_env(env: gym.Env, k: int) -> gym.Env:
    """``env`` observing its last ``k`` observations and the previous action (see the module docstring)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"history: k must be a positive integer, got {k!r}")
    return PreviousAction(FlattenObservation(FrameStackObservation(env, k, padding_type="reset")))


def history_size(obs_size: int, action_size: int, k: int) -> int:
    """The length of a history observation."""
    return k * obs_size + action_size


def current_observation(history_obs: np.ndarray, obs_size: int, action_size: int, k: int) -> np.ndarray:
    """The newest plain observation ``o_t`` inside a history observation."""
    history_obs = np.asarray(history_obs)
    if history_obs.shape[-1] != history_size(obs_size, action_size, k):
        raise ValueError(f"a history observation of k={k} has {history_size(obs_size, action_size, k)} "
                         f"entries, got {history_obs.shape[-1]}")
    return history_obs[..., (k - 1) * obs_size:k * obs_size]


def stack_history(observations: np.ndarray, actions: np.ndarray, k: int, low: float = -1.0,
                  high: float = 1.0) -> np.ndarray:
    """The history observations of a recorded episode, as `history_env` would have given them.

    ``observations`` (N+1, d): the reset observation, then one per step; ``actions`` (N, a): what
    was passed to ``env.step`` (clipped to ``[low, high]`` here, as the wrapper does). Returns
    (N+1, k*d + a) float32.
    """
    obs = np.asarray(observations, np.float32)
    acts = np.clip(np.asarray(actions, np.float32), low, high)
    n = len(acts)
    if obs.ndim != 2 or acts.ndim != 2 or len(obs) != n + 1:
        raise ValueError(f"stack_history: expected observations (N+1, d) and actions (N, a), got {obs.shape} "
                         f"and {acts.shape}")
    t = np.arange(n + 1)
    frames = [obs[np.maximum(t - (k - 1 - j), 0)] for j in range(k)]
    previous = np.vstack([np.zeros((1, acts.shape[1]), np.float32), acts])
    return np.concatenate([*frames, previous], axis=1)
