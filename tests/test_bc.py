"""Behaviour cloning into SB3 PPO and SAC policies (tiny budgets: seconds each)."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv

import skillcell  # noqa: F401  (registers the cells)
from skillcell.policies.bc import (
    DemoTransitions,
    action_error,
    behaviour_clone,
    demo_vec_normalize,
    expert_demos,
    load_demos,
    normalize_obs,
)

ENV_ID = "skillcell/PegInsert-v0"
# SB3's small networks: one intra-op thread. With the default (one per core) a test run beside any
# other busy process was measured 100x slower (SAC, 150 updates: 75 s against 0.8 s).
th.set_num_threads(1)


@pytest.fixture(scope="module")
def demos() -> DemoTransitions:
    return expert_demos(ENV_ID, 8, seed=0)


def _model(algo: str, venv=None, seed: int = 0):
    venv = venv or DummyVecEnv([lambda: gym.make(ENV_ID)])
    cls = PPO if algo == "ppo" else SAC
    arch = {"pi": [64, 64], "vf": [64, 64]} if algo == "ppo" else [64, 64]
    return cls("MlpPolicy", venv, seed=seed, device="cpu",
               policy_kwargs={"net_arch": arch, "activation_fn": th.nn.Tanh})


def test_expert_demos_are_flat_transitions(demos):
    assert demos.n_episodes == 8 and demos.env_id == ENV_ID
    env = gym.make(ENV_ID)
    assert demos.observations.shape == (len(demos), *env.observation_space.shape)
    assert demos.actions.shape == (len(demos), *env.action_space.shape)
    assert demos.episode_success.all()  # the expert seats every peg
    # next_observations are the following step's observations within an episode
    same = demos.episode[1:] == demos.episode[:-1]
    np.testing.assert_array_equal(demos.next_observations[:-1][same], demos.observations[1:][same])
    assert demos.terminations.sum() == 8  # one success termination per episode


def test_split_is_by_whole_episodes(demos):
    train, held = demos.split(0.25, seed=1)
    assert held.n_episodes == 2 and train.n_episodes == 6
    assert not set(train.episode.tolist()) & set(held.episode.tolist())
    assert len(train) + len(held) == len(demos)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_bc_lowers_heldout_action_error(demos, algo):
    train, held = demos.split(0.25, seed=0)
    model = _model(algo)
    result = behaviour_clone(model, train, steps=400, heldout=held, seed=0)
    # Measured: PPO 0.037 -> ~0.002, SAC 0.05 -> ~0.002 on held-out episodes.
    assert result.heldout_error_after < 0.2 * result.heldout_error_before, result.report()
    assert result.train_error_after < 0.2 * result.train_error_before
    assert result.heldout_error_after == pytest.approx(action_error(model, held))
    assert result.losses[-1] < result.losses[0]


def test_bc_sets_ppo_log_std_and_sac_log_std_head(demos):
    ppo = _model("ppo")
    behaviour_clone(ppo, demos, steps=50, log_std=-3.0)
    assert th.allclose(ppo.policy.log_std, th.full_like(ppo.policy.log_std, -3.0))
    sac = _model("sac")
    obs = th.as_tensor(demos.observations[:256])
    with th.no_grad():
        _, before, _ = sac.actor.get_action_dist_params(obs)
    behaviour_clone(sac, demos, steps=300, log_std=-3.0, log_std_weight=1.0)
    with th.no_grad():
        _, after, _ = sac.actor.get_action_dist_params(obs)
    assert abs(float(after.mean()) + 3.0) < 0.5 < abs(float(before.mean()) + 3.0)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_saved_and_loaded_bc_model_predicts_identical_actions(demos, algo, tmp_path):
    model = _model(algo)
    behaviour_clone(model, demos, steps=100)
    model.save(tmp_path / "bc.zip")
    loaded = (PPO if algo == "ppo" else SAC).load(tmp_path / "bc.zip", device="cpu")
    obs = demos.observations[::7]
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a, b)


def test_bc_is_deterministic_on_fixed_seeds(demos):
    results = []
    for _ in range(2):
        model = _model("ppo", seed=3)
        behaviour_clone(model, demos, steps=60, seed=5)
        results.append(model.predict(demos.observations[:50], deterministic=True)[0])
    np.testing.assert_array_equal(*results)


def test_demo_normalization_is_frozen_and_shared_by_bc_and_rl(demos):
    venv = demo_vec_normalize(DummyVecEnv([lambda: gym.make(ENV_ID)]), demos, std_floor=0.01)
    mean, var = venv.obs_rms.mean.copy(), venv.obs_rms.var.copy()
    assert var.min() >= 0.01**2 - 1e-12  # the floor holds for entries that barely move
    model = _model("ppo", venv=venv)
    expected = np.clip((demos.observations - mean) / np.sqrt(var + venv.epsilon), -10, 10)
    np.testing.assert_allclose(normalize_obs(model, demos.observations), expected, rtol=1e-5, atol=1e-5)
    model.learn(128)  # RL steps leave the statistics as BC saw them
    np.testing.assert_array_equal(venv.obs_rms.mean, mean)
    np.testing.assert_array_equal(venv.obs_rms.var, var)


def test_dataset_demos_match_in_memory_demos(tmp_path):
    from skillcell.demos import generate_demos

    generate_demos(ENV_ID, 2, tmp_path / "peg", seed=0, progress=False)
    from_disk = load_demos(tmp_path / "peg", env_id=ENV_ID)
    in_memory = expert_demos(ENV_ID, 2, seed=0)
    for name in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(from_disk, name), getattr(in_memory, name))
    kept = load_demos(tmp_path / "peg", min_score=0.0)
    assert len(kept.episode_scores) == 2 and all(0.0 <= s <= 1.0 for s in kept.episode_scores)
    with pytest.raises(ValueError, match="no demonstration scores at least"):
        load_demos(tmp_path / "peg", min_score=1.0 + 1e-9)
    with pytest.raises(ValueError, match="WeldSeam"):
        load_demos(tmp_path / "peg", env_id="skillcell/WeldSeam-v0")


def test_bc_refuses_demonstrations_of_another_cell(demos):
    model = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("skillcell/WeldSeam-v0")]), device="cpu")
    with pytest.raises(ValueError, match="another cell"):
        behaviour_clone(model, demos, steps=1)
