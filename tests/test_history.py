"""Observation history: shape, contents (k stacked observations, previous action), determinism, export refusal."""

import gymnasium as gym
import numpy as np
import pytest

from skillcell.policies.history import current_observation, history_env, stack_history

ENV_ID = "skillcell/PegInsert-v0"
K = 3


def _actions(n, size, seed=0):
    # Larger than 1 in places: the wrapper must report the clipped action the env executed.
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (n, size)).astype(np.float32)


@pytest.fixture(scope="module")
def rollouts():
    """The same seed and actions, through the plain env and through the history wrapper (D2: noisy obs)."""
    plain = gym.make(ENV_ID, tier="D2")
    wrapped = history_env(gym.make(ENV_ID, tier="D2"), K)
    actions = _actions(12, plain.action_space.shape[0])
    raw = [plain.reset(seed=3)[0]]
    stacked = [wrapped.reset(seed=3)[0]]
    for a in actions:
        raw.append(plain.step(a)[0])
        stacked.append(wrapped.step(a)[0])
    d, n_act = plain.observation_space.shape[0], plain.action_space.shape[0]
    plain.close()
    wrapped.close()
    return np.array(raw), np.array(stacked), actions, d, n_act, wrapped


def test_space_and_shape(rollouts):
    raw, stacked, _, d, n_act, wrapped = rollouts
    assert wrapped.observation_space.shape == (K * d + n_act,)
    assert wrapped.observation_space.dtype == np.float32
    assert stacked.shape == (len(raw), K * d + n_act)
    assert all(wrapped.observation_space.contains(o) for o in stacked)


def test_contents_are_the_last_k_observations_and_the_previous_action(rollouts):
    raw, stacked, actions, d, n_act, _ = rollouts
    for t, obs in enumerate(stacked):
        for j in range(K):  # oldest first, the reset observation repeated before the episode began
            np.testing.assert_array_equal(obs[j * d:(j + 1) * d], raw[max(0, t - (K - 1) + j)])
        previous = np.zeros(n_act, np.float32) if t == 0 else np.clip(actions[t - 1], -1.0, 1.0)
        np.testing.assert_array_equal(obs[K * d:], previous)
        np.testing.assert_array_equal(current_observation(obs, d, n_act, K), raw[t])


def test_recorded_episode_stacks_exactly_as_the_wrapper(rollouts):
    raw, stacked, actions, *_ = rollouts
    np.testing.assert_array_equal(stack_history(raw, actions, K), stacked)


def test_deterministic_for_a_seed(rollouts):
    _, stacked, actions, *_ = rollouts
    env = history_env(gym.make(ENV_ID, tier="D2"), K)
    again = [env.reset(seed=3)[0]] + [env.step(a)[0] for a in actions]
    env.close()
    np.testing.assert_array_equal(np.array(again), stacked)


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="positive integer"):
        history_env(gym.make(ENV_ID), 0)


def test_export_refuses_a_history_policy_naming_it(tmp_path):
    from stable_baselines3 import PPO

    from skillcell.deploy.export import export_onnx

    model = PPO("MlpPolicy", history_env(gym.make(ENV_ID), K), n_steps=64, batch_size=32, seed=0, device="cpu",
                policy_kwargs={"net_arch": [8]})
    env = gym.make(ENV_ID)
    with pytest.raises(ValueError, match=rf"observation history \(env\.history: {K}\)"):
        export_onnx(model, env, tmp_path / "policy.onnx")
    env.close()
    assert not (tmp_path / "policy.onnx").exists()
