"""Scripted experts are valid teachers: at skill ``expert`` the action is a function of the observation.

A fresh expert fed an episode's observations in any order reproduces the episode's actions bit for
bit, for every registered cell, at D2 (noise, F/T bias, action latency: every code path that reads
the observation). The novice welder keeps seeded wander, which is state; the same check catches it,
so the check can fail.
"""

import gymnasium as gym
import numpy as np
import pytest

import skillcell
from skillcell.evaluation import run_episodes
from skillcell.policies import make_expert

ENV_IDS = skillcell.skillcell_env_ids()
MAX_STEPS = 250  # enough for every phase: a weld strikes its arc after about 60 steps, a peg seats in about 100


def expert_episode(env_id, skill="expert", seed=3):
    """Observations and actions of one D2 episode of the cell's expert, capped at `MAX_STEPS`."""
    env = gym.make(env_id, tier="D2")
    expert = make_expert(env, skill=skill, seed=seed)
    obs, _ = env.reset(seed=seed)
    observations, actions = [], []
    for _ in range(MAX_STEPS):
        action = expert(obs)
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return env, np.array(observations), np.array(actions)


def replayed_out_of_order(env, observations, skill="expert", seed=3):
    """The actions a fresh expert gives for ``observations`` fed in a shuffled order, put back in order."""
    order = np.random.default_rng(0).permutation(len(observations))
    expert = make_expert(env, skill=skill, seed=seed)
    expert.reset()
    actions = np.empty((len(observations), env.action_space.shape[0]), np.float32)
    for i in order:
        actions[i] = expert(observations[i])
    return actions


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_expert_action_is_a_function_of_the_observation(env_id):
    env, observations, actions = expert_episode(env_id)
    assert len(observations) >= 50
    replayed = replayed_out_of_order(env, observations)
    differ = np.flatnonzero((replayed != actions).any(axis=1))
    assert differ.size == 0, f"{env_id}: a fresh expert acts differently at steps {differ[:10].tolist()}"
    # and one observation alone, to an expert that has seen nothing else
    assert np.array_equal(make_expert(env)(observations[-1]), actions[-1])
    env.close()


def test_the_check_catches_an_expert_with_memory():
    env, observations, actions = expert_episode("skillcell/WeldSeam-v0", skill="novice")
    replayed = replayed_out_of_order(env, observations, skill="novice")
    assert (replayed != actions).any(axis=1).sum() > 10  # its wander depends on the steps before
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_expert_succeeds_at_d2_on_90_percent_of_50_seeds(env_id):
    env = gym.make(env_id, tier="D2")
    expert = make_expert(env)
    summary = run_episodes(env, expert, 50, seed=0)
    assert summary.success_rate >= 0.9, summary.report()
    env.close()
