"""Env self-checks shared by ``skillcell check`` and the tests: API checkers, rollout, determinism."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env as gym_check_env

from skillcell.rollout import ActionReplay, FunctionPolicy, Rollout, rollout

__all__ = ["CheckResult", "check_determinism", "run_env_checks", "state_trajectory"]


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str


def state_trajectory(env: gym.Env, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    """Full integration states after ``reset(seed)`` and after each action (stops at episode end)."""
    states: list[np.ndarray] = []
    rollout(env, ActionReplay(actions), seed=seed, max_steps=len(actions),
            on_step=lambda step: states.append(env.unwrapped.get_state()))
    return states


def check_determinism(make_env: Callable[[], gym.Env], seed: int = 0, steps: int = 50) -> CheckResult:
    """Same seed and actions in a fresh env, and again in the same env: states must be bit-identical."""
    first, second = make_env(), make_env()
    try:
        actions = np.random.default_rng(seed).uniform(-1, 1, (steps, *first.action_space.shape))
        a = state_trajectory(first, seed, actions)
        b = state_trajectory(second, seed, actions)
        state_trajectory(first, seed + 1, actions)  # something else in between
        c = state_trajectory(first, seed, actions)
    finally:
        first.close()
        second.close()
    for name, other in (("a fresh env", b), ("the same env after another episode", c)):
        if len(a) != len(other) or not all(np.array_equal(x, y) for x, y in zip(a, other, strict=True)):
            step = next((i for i, (x, y) in enumerate(zip(a, other, strict=False)) if not np.array_equal(x, y)),
                        min(len(a), len(other)))
            return CheckResult("determinism", False, f"states differ from {name} at step {step}")
    return CheckResult("determinism", True, f"{len(a)} states bit-identical across fresh and reused envs")


def run_env_checks(env_id: str, steps: int = 200, seed: int = 0, **env_kwargs) -> list[CheckResult]:
    """Gymnasium's and SB3's env checkers, a random rollout and the determinism check."""
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    results = []
    make = lambda: gym.make(env_id, **env_kwargs)  # noqa: E731

    for name, checker in (("gymnasium check_env", lambda e: gym_check_env(e.unwrapped, skip_render_check=True)),
                          ("stable-baselines3 check_env", lambda e: sb3_check_env(e.unwrapped, warn=True))):
        env = make()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                checker(env)
            notes = sorted({str(w.message).splitlines()[0] for w in caught})
            results.append(CheckResult(name, True, "; ".join(notes) if notes else "no warnings"))
        except Exception as exc:  # a checker failure is what we report
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
        finally:
            env.close()

    env = make()
    try:
        env.action_space.seed(seed)
        random = FunctionPolicy(lambda obs: env.action_space.sample(), name="random")
        unstable, episodes, done, start = 0, 1, 0, time.perf_counter()
        episode_seed: int | None = seed
        while done < steps:  # episodes after the first continue the env's seeding
            run = Rollout(env, random, seed=episode_seed, max_steps=steps - done)
            for step in run:
                if step.index and not np.isfinite(step.reward):
                    raise ValueError(f"non-finite reward {step.reward}")
                unstable += bool(step.index and step.info.get("instability"))
            done += run.record.steps
            episodes += run.record.done
            episode_seed = None
        rate = steps / (time.perf_counter() - start)
        results.append(CheckResult("random rollout", unstable == 0,
                                   f"{steps} steps, {episodes} episodes, {unstable} unstable, {rate:.0f} steps/s"))
    except Exception as exc:
        results.append(CheckResult("random rollout", False, f"{type(exc).__name__}: {exc}"))
    finally:
        env.close()

    results.append(check_determinism(make, seed=seed))
    return results
