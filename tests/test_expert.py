"""The scripted PegInsert expert: success rate at default randomization, search, chamfer + F/T."""

import gymnasium as gym
import numpy as np
import pytest

from skillcell.evaluation import run_episodes
from skillcell.policies import PegInsertExpert, make_expert
from skillcell.rollout import FunctionPolicy


class MisperceivedHole(gym.ObservationWrapper):
    """The policy believes the hole is ``offset_m`` further along the hole's x axis than it is."""

    def __init__(self, env, offset_m):
        super().__init__(env)
        u = env.unwrapped
        self._slice, self._shift = u.obs_slices["tcp_pos_task"], offset_m * u.obs_fields[2].scale

    def observation(self, obs):
        obs = obs.copy()
        obs[self._slice.start] -= self._shift
        return obs


def run_expert(episodes, offset_m=0.0, **kwargs):
    env = gym.make("skillcell/PegInsert-v0", **kwargs)
    if offset_m:
        env = MisperceivedHole(env, offset_m)
    expert = make_expert(env)
    phases = []
    policy = FunctionPolicy(lambda obs: (expert(obs), phases.append(expert.phase))[0], reset=expert.reset)
    summary = run_episodes(env, policy, episodes, seed=100)
    env.close()
    return summary, set(phases)


def test_expert_succeeds_on_95_percent_of_100_seeds():
    env = gym.make("skillcell/PegInsert-v0")
    expert = make_expert(env)
    summary = run_episodes(env, expert, 100, seed=0)
    assert summary.success_rate >= 0.95, summary.report()
    assert summary.mean("max_penetration_mm") < 0.2
    assert not any(e.final_info["physics_invalid"] for e in summary.episodes)


def test_spiral_search_finds_a_misperceived_hole():
    summary, phases = run_expert(5, offset_m=1.0e-3)
    assert "search" in phases
    assert summary.success_rate == 1.0, summary.report()
    assert summary.mean("peak_insertion_force_n") < 40.0


def test_chamfer_and_force_feedback_take_a_misperceived_peg_in_without_search():
    summary, phases = run_expert(5, offset_m=1.0e-3, chamfer_mm=1.5)
    assert "search" not in phases
    assert summary.success_rate == 1.0, summary.report()


def test_expert_refuses_other_cells():
    class Other(gym.Env):
        observation_space = action_space = gym.spaces.Box(-1, 1, (1,))

    with pytest.raises(ValueError, match="no scripted expert"):
        make_expert(Other())
    with pytest.raises(ValueError, match="skill"):
        make_expert(gym.make("skillcell/PegInsert-v0"), skill="novice")


def test_expert_actions_are_valid():
    env = gym.make("skillcell/PegInsert-v0")
    expert = PegInsertExpert(env)
    obs, _ = env.reset(seed=1)
    for _ in range(30):
        action = expert(obs)
        assert action.dtype == np.float32 and env.action_space.contains(action)
        obs, *_ = env.step(action)
