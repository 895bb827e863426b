"""What a review video shows, one control step at a time: a stored episode or a live rollout.

A source is an iterable of `Step`; while a step is current, the env's MuJoCo data holds that
step's state, so the renderer, the overlays and the metric strip read it from the env. Two kinds:

- `EpisodeSource`: **state replay** of a stored episode (`skillcell.demos` format): each stored
  ``mjSTATE_INTEGRATION`` state is restored as recorded. The strip shows the stored ``info``;
  the cell's own metrics are measured again from each restored state (with the stored task
  action, e.g. arc on, and the measured process signals the step ran with, a weld capture's
  current and voltage: `Episode.process_signals`), so overlays that build up over an episode (the
  weld bead) build up as they did in the recording.
- `RolloutSource`: a policy driving the env live (an SB3 model or the scripted expert, see
  `load_policy`), optionally from a stored episode's first state so that it starts exactly where
  a demonstration started.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

import skillcell
from skillcell.demos.episode import model_hash
from skillcell.policies import make_expert
from skillcell.policies.loading import load_sb3_model
from skillcell.policies.rundir import RunDir
from skillcell.rollout import FunctionPolicy, Policy, Rollout

__all__ = [
    "RENDER_KWARGS",
    "EpisodeSource",
    "RolloutSource",
    "Step",
    "load_policy",
    "make_review_env",
]

#: env kwargs that only affect rendering; stored episodes' values are replaced by the video's
RENDER_KWARGS = ("render_mode", "width", "height", "camera", "render_quality")


@dataclass
class Step:
    """One control step of a source; the env's data holds this step's state while it is current.

    ``index`` 0 is the state after reset; ``reward`` is the reward of the step that led here
    (``None`` at index 0); ``last`` marks the final step, where ``success`` is known.
    """

    index: int
    time_s: float
    info: Mapping[str, Any]
    reward: float | None
    episode_return: float
    last: bool = False
    success: bool | None = None


def make_review_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None, *, width: int = 640,
                    height: int = 480, quality: str = "fast", max_episode_steps: int | None = None):
    """``gym.make`` with rendering on (the env's shared renderer at ``width`` x ``height``)."""
    if env_id not in skillcell.skillcell_env_ids():
        raise ValueError(f"unknown env {env_id!r}; registered: {', '.join(skillcell.skillcell_env_ids())}")
    kwargs = {k: v for k, v in dict(env_kwargs or {}).items() if k not in RENDER_KWARGS}
    kwargs.update(render_mode="rgb_array", width=int(width), height=int(height), render_quality=quality)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    return gym.make(env_id, **kwargs)


def _info_at(infos: Mapping[str, np.ndarray], k: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in infos.items():
        value = values[k]
        if isinstance(value, np.ndarray) and value.ndim:
            out[key] = value
        elif isinstance(value, (np.bool_, bool)):
            out[key] = bool(value)
        elif isinstance(value, np.str_):
            out[key] = str(value)
        else:
            out[key] = float(value)
    return out


class EpisodeSource:
    """State replay of a stored episode in ``env`` (made for the episode's env id and kwargs).

    ``every`` is not applied here: every step is yielded, so overlays that accumulate (trace,
    bead) see them all; the video layer renders every k-th.
    """

    def __init__(self, env, episode, label: str | None = None):
        self.env, self.episode = env, episode
        cell = env.unwrapped
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        size = mujoco.mj_stateSize(cell.model, spec)
        if episode.states.shape[1] != size:
            raise ValueError(f"the episode's states have {episode.states.shape[1]} values, but {episode.env_id} "
                             f"with the stored kwargs has {size}: it was recorded with another model")
        if model_hash(cell.model) != episode.model_hash:
            warnings.warn(f"{episode.env_id} with the stored kwargs builds a different model than the recording "
                          "(cell assets, Menagerie or skillcell changed); the replay shows the stored states "
                          "in today's model", stacklevel=2)
        self.label = label or _episode_label(episode)
        self.seed = episode.seed
        self.total_steps = episode.steps

    def __len__(self) -> int:
        return self.episode.steps + 1

    def __iter__(self) -> Iterator[Step]:
        ep, cell = self.episode, self.env.unwrapped
        states = np.asarray(ep.states, dtype=np.float64)
        # reset() first: it puts the task (e.g. the weld's arc) in its start condition, then the
        # stored first state replaces the physics, as when the episode was recorded.
        self.env.reset(seed=ep.seed)
        _, live_info = cell.set_state(states[0])
        signals = ep.process_signals(cell.process_signals)
        total = 0.0
        for k in range(ep.steps + 1):
            if k:
                if signals:
                    cell.set_process_signals({name: float(values[k - 1]) for name, values in signals.items()})
                # The cell measures each stored state as its step would have: accumulating
                # overlays such as the bead follow the recording.
                live_info = cell.replay_step(states[k], ep.actions[k - 1])[-1]
                total += float(ep.rewards[k - 1])
            info = {**live_info, **_info_at(ep.infos, k)} if ep.infos else dict(live_info)
            last = k == ep.steps
            yield Step(index=k, time_s=k * ep.control_dt, info=info,
                       reward=float(ep.rewards[k - 1]) if k else None, episode_return=total, last=last,
                       success=bool(ep.success) if last else None)


def _episode_label(episode) -> str:
    source = episode.source or "episode"
    who = episode.provenance.operator_id
    return f"{source} ({who})" if who and who not in source else source


def load_policy(spec: str | Path, env, *, seed: int = 0, deterministic: bool = True,
                algo: str | None = None, vecnormalize: str | Path | bool | None = True,
                trusted: bool = False) -> FunctionPolicy:
    """A policy for ``env`` from ``spec``.

    - ``expert`` or ``expert:<skill>`` (``expert:novice``): the cell's scripted expert;
    - a stable-baselines3 ``.zip`` (PPO, SAC, TD3, A2C, DDPG; ``algo`` names it when the file's
      policy module does not). The model's training run's ``vecnormalize.pkl``
      (`RunDir.vecnormalize_of`; ``vecnormalize`` names another, ``False`` ignores it) normalizes the observations
      as in training. Both are read as data, nothing unpickled, unless ``trusted``
      (`skillcell.policies.loading.load_sb3_model`).
    """
    text = str(spec)
    if text == "expert" or text.startswith("expert:"):
        skill = text.partition(":")[2] or "expert"
        expert = make_expert(env, skill=skill, seed=seed)
        return FunctionPolicy(expert, f"scripted {skill}", expert.reset)
    path = Path(text)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: pass a model file (.zip) or a run directory's final model")
    if not path.is_file():
        raise ValueError(f"{text!r} is neither 'expert[:skill]' nor an existing model file")
    if path.suffix != ".zip":
        raise ValueError(f"{path}: models are stable-baselines3 .zip files")

    norm_path = RunDir.vecnormalize_of(path) if vecnormalize is True else (Path(vecnormalize) if vecnormalize else None)
    loaded = load_sb3_model(path, algorithm=algo or "auto", trusted=trusted, vecnormalize=norm_path)
    expected, got = env.observation_space.shape, loaded.model.observation_space.shape
    if expected != got:
        raise ValueError(f"{path}: the model observes shape {got}, the env {expected}: trained on another cell")

    def act(obs: np.ndarray) -> np.ndarray:
        return loaded.predict(obs, deterministic=deterministic)

    return FunctionPolicy(act, f"{loaded.algorithm.upper()} {path.stem}"
                  + (" (normalized obs)" if loaded.obs_norm is not None else ""))


class RolloutSource:
    """``policy`` driving ``env`` live from ``reset(seed)`` (or from ``start_state``), to the episode end.

    ``max_steps`` stops it early (the env's time limit ends it otherwise).
    """

    def __init__(self, env, policy: Policy, seed: int | None = 0, start_state: np.ndarray | None = None,
                 max_steps: int | None = None, label: str | None = None):
        self.env, self.policy, self.seed = env, policy, seed
        self.start_state, self.max_steps = start_state, max_steps
        self.label = label or policy.name
        limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        self.total_steps = min(x for x in (limit, max_steps) if x is not None) if (limit or max_steps) else None

    def __len__(self) -> int:
        return (self.total_steps or 0) + 1

    def __iter__(self) -> Iterator[Step]:
        cell = self.env.unwrapped
        start = None
        if self.start_state is not None:
            state = np.asarray(self.start_state, dtype=np.float64)
            start = lambda obs, info: cell.set_state(state)  # noqa: E731
        dt, total = cell.control_dt, 0.0
        for step in Rollout(self.env, self.policy, seed=self.seed, start=start, max_steps=self.max_steps):
            if step.reward is not None and math.isfinite(step.reward):
                total += step.reward
            last = step.done or (self.max_steps is not None and step.index >= self.max_steps)
            # Cut short by max_steps, the episode has no outcome yet: none is shown.
            yield Step(index=step.index, time_s=step.index * dt, info=step.info, reward=step.reward,
                       episode_return=total, last=last,
                       success=bool(step.info.get("is_success", False)) if step.done else None)
