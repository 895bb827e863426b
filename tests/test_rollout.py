"""`skillcell.rollout`: the one loop's call order, its stops, and a replay that reproduces an episode bit for bit."""

import gymnasium as gym
import numpy as np
import pytest

import skillcell  # noqa: F401
from skillcell.policies import make_expert
from skillcell.rollout import ActionReplay, FunctionPolicy, Policy, Rollout, rollout

PEG = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def env():
    env = gym.make(PEG)
    yield env
    env.close()


def test_an_action_replay_reproduces_the_expert_episode_bit_for_bit(env):
    actions, observations, rewards = [], [], []

    def keep(step):
        observations.append(step.obs.copy())
        if step.index:
            actions.append(np.array(step.action, copy=True))
            rewards.append(step.reward)

    expert = make_expert(env)
    record = rollout(env, expert, seed=3, on_step=keep)
    assert record.success and record.steps == len(actions) and record.episode_return == pytest.approx(sum(rewards))
    replayed = [(s.obs, s.reward) for s in Rollout(env, ActionReplay(actions), seed=3)]
    assert all(np.array_equal(o, r[0]) for o, r in zip(observations, replayed, strict=True))
    assert [r[1] for r in replayed[1:]] == rewards


def test_reset_start_and_policy_reset_run_in_that_order(env):
    calls = []
    policy = FunctionPolicy(lambda obs: (calls.append("act"), np.zeros(6, np.float32))[1],
                            reset=lambda: calls.append("policy.reset"))

    def start(obs, info):
        calls.append("start")
        return obs, info

    record = rollout(env, policy, seed=0, start=start, max_steps=2, on_step=lambda s: calls.append(f"step {s.index}"))
    assert calls == ["start", "policy.reset", "step 0", "act", "step 1", "act", "step 2"]
    assert record.steps == 2 and not record.done and record.error is None


def test_an_exception_of_stop_on_ends_the_episode_with_its_message(env):
    def boom(obs):
        raise RuntimeError("diverged")

    class Failing(gym.Wrapper):
        def step(self, action):
            raise RuntimeError("physics diverged")

    record = rollout(Failing(env), lambda obs: np.zeros(6, np.float32), seed=0, stop_on=(RuntimeError,))
    assert record.steps == 0 and record.error == "physics diverged"
    with pytest.raises(RuntimeError, match="diverged"):
        rollout(env, boom, seed=0)


def test_every_kind_of_policy_is_a_policy(env):
    assert isinstance(make_expert(env), Policy)
    assert isinstance(ActionReplay([np.zeros(6)]), Policy)
    assert isinstance(FunctionPolicy(lambda obs: obs), Policy)
    with pytest.raises(IndexError, match="all 1 stored actions"):
        replay = ActionReplay([np.zeros(6)])
        replay(None), replay(None)
