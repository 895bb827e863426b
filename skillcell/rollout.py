"""The one rollout loop of skillcell: a `Policy` drives a Gymnasium env for one episode.

Everything that runs episodes goes through `Rollout` (step by step) or `rollout` (to the end):
evaluation (`skillcell.evaluation.run_episodes`, the gate's tiers, train's evaluations),
demonstration recording (pass the `EpisodeRecorder` as the env), action replay (`ActionReplay`),
DAgger's mixed rollouts, capture import and the review's live sources.

A `Policy` is anything with ``action = policy(obs)`` and ``reset()`` (called once per episode,
after the env's reset): the scripted experts, `skillcell.policies.frozen.SB3Policy` (an SB3
model's deterministic action), the deployment runner's ONNX policy and `ActionReplay` all are;
`as_policy` adapts a plain function. What a caller needs per step (the review's renderer, the
gate's tier draws, a replay's drift) it reads from the `RolloutStep` each step yields, or from an
``on_step`` hook of `rollout`; the loop itself is not copied.

The step order is fixed: ``env.reset(seed)``, then ``start(obs, info)`` if given (an episode
that begins elsewhere than the reset pose: a stored state, a capture's first pose), then
``policy.reset()``, then ``policy(obs)`` / ``env.step(action)`` until the env terminates or
truncates, ``max_steps`` actions have run, or ``env.step`` raises one of ``stop_on``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ActionReplay", "EpisodeRecord", "FunctionPolicy", "Policy", "Rollout", "RolloutStep", "as_policy",
           "rollout"]


@runtime_checkable
class Policy(Protocol):
    """``action = policy(obs)``, with ``reset()`` at the start of every episode."""

    def reset(self) -> None: ...

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


class FunctionPolicy:
    """A `Policy` of a function ``act(obs) -> action`` (and an optional ``reset``), with a display ``name``."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray], name: str = "policy",
                 reset: Callable[[], None] | None = None):
        self._act, self.name, self._reset = act, name, reset

    def reset(self) -> None:
        if self._reset is not None:
            self._reset()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self._act(obs)


def as_policy(policy: Policy | Callable[[np.ndarray], np.ndarray]) -> Policy:
    """``policy`` itself if it is a `Policy`, else a `FunctionPolicy` of it (nothing to reset)."""
    return policy if isinstance(policy, Policy) else FunctionPolicy(policy)


class ActionReplay:
    """The stored ``actions`` of an episode, one per call, in order; observations are ignored.

    The actions are handed out as stored (dtype included), so that a replay passes the env the very
    values the recording did.
    """

    def __init__(self, actions: Sequence[np.ndarray] | np.ndarray, name: str = "replay"):
        self.actions, self.name = actions, name
        self._k = 0

    def reset(self) -> None:
        self._k = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self._k >= len(self.actions):
            raise IndexError(f"{self.name}: all {len(self.actions)} stored actions were replayed")
        action = self.actions[self._k]
        self._k += 1
        return action


@dataclass
class RolloutStep:
    """The env after reset (``index`` 0: no ``action``, no ``reward``) or after the ``index``-th action.

    ``action`` is the object the policy returned (not copied); ``obs`` and ``info`` are the env's.
    """

    index: int
    obs: np.ndarray
    info: dict[str, Any]
    action: Any = None
    reward: float | None = None
    terminated: bool = False
    truncated: bool = False

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class EpisodeRecord:
    """What one episode did: ``steps`` actions run, the sum of their rewards, how it ended and its last ``info``.

    ``error``: the message of a ``stop_on`` exception that ended it (``None`` otherwise).
    """

    seed: int | None
    steps: int
    episode_return: float
    terminated: bool
    truncated: bool
    final_info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def success(self) -> bool:
        return bool(self.final_info.get("is_success", False))

    @property
    def done(self) -> bool:
        """The env ended the episode (not ``max_steps``, not an error)."""
        return self.terminated or self.truncated


class Rollout:
    """One episode of ``policy`` in ``env``, step by step: iterate it for `RolloutStep`s, then read `record`.

    See the module docstring for the order of calls. ``start(obs, info) -> (obs, info)`` runs after
    the env's reset; ``stop_on``: exception types of ``env.step`` that end the episode (in
    `EpisodeRecord.error`) instead of propagating.
    """

    def __init__(self, env, policy: Policy | Callable[[np.ndarray], np.ndarray], *, seed: int | None = None,
                 options: dict[str, Any] | None = None,
                 start: Callable[[np.ndarray, dict[str, Any]], tuple[np.ndarray, dict[str, Any]]] | None = None,
                 max_steps: int | None = None, stop_on: tuple[type[BaseException], ...] = ()):
        self.env, self.policy, self.seed, self.options = env, as_policy(policy), seed, options
        self.start, self.max_steps, self.stop_on = start, max_steps, stop_on
        self.record: EpisodeRecord | None = None

    def __iter__(self) -> Iterator[RolloutStep]:
        env, policy, limit = self.env, self.policy, self.max_steps
        obs, info = env.reset(seed=self.seed, options=self.options)
        if self.start is not None:
            obs, info = self.start(obs, info)
        policy.reset()
        yield RolloutStep(0, obs, info)
        total, k, terminated, truncated, error = 0.0, 0, False, False, None
        while not (terminated or truncated) and (limit is None or k < limit):
            action = policy(obs)
            try:
                obs, reward, terminated, truncated, info = env.step(action)
            except self.stop_on as exc:
                error = str(exc)
                break
            k += 1
            reward = float(reward)
            total += reward
            yield RolloutStep(k, obs, info, action, reward, bool(terminated), bool(truncated))
        self.record = EpisodeRecord(self.seed, k, total, bool(terminated), bool(truncated), info, error)


def rollout(env, policy: Policy | Callable[[np.ndarray], np.ndarray], *, seed: int | None = None,
            options: dict[str, Any] | None = None,
            start: Callable[[np.ndarray, dict[str, Any]], tuple[np.ndarray, dict[str, Any]]] | None = None,
            max_steps: int | None = None, stop_on: tuple[type[BaseException], ...] = (),
            on_step: Callable[[RolloutStep], None] | Iterable[Callable[[RolloutStep], None]] = ()) -> EpisodeRecord:
    """Runs one episode (`Rollout`); each ``on_step`` hook sees every `RolloutStep`, reset included."""
    hooks = (on_step,) if callable(on_step) else tuple(on_step)
    run = Rollout(env, policy, seed=seed, options=options, start=start, max_steps=max_steps, stop_on=stop_on)
    for step in run:
        for hook in hooks:
            hook(step)
    return run.record
