"""ONNX export of SB3 policies: parity with ``predict`` (1e-5), normalization, units, checksum."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from skillcell.deploy.export import export_onnx, onnx_parity, sb3_actions
from skillcell.deploy.runner import OnnxPolicy, command_scale
from skillcell.paths import sha256_file
from skillcell.policies.loading import ObsNormalization, detect_algorithm, load_sb3_model

PEG = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def env():
    env = gym.make(PEG)
    yield env
    env.close()


@pytest.fixture(scope="module")
def observations(env):
    """Observations from the env (random actions) plus wilder ones, to exercise clipping paths."""
    rng = np.random.default_rng(0)
    obs, out = env.reset(seed=0)[0], []
    for _ in range(96):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 6))
        if terminated or truncated:
            obs, _ = env.reset()
    out = np.array(out, dtype=np.float32)
    return np.concatenate([out, out * 3.0, rng.normal(0, 2, out.shape).astype(np.float32)])


@pytest.fixture(scope="module")
def ppo_with_vecnormalize(tmp_path_factory):
    """A PPO trained a few hundred steps on normalized observations, saved with its statistics."""
    folder = tmp_path_factory.mktemp("ppo")
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(PEG)]), clip_obs=5.0)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    model.save(folder / "ppo.zip")
    venv.save(str(folder / "vecnormalize.pkl"))
    return model, venv, folder


@pytest.fixture(scope="module")
def sac(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sac")
    model = SAC("MlpPolicy", gym.make(PEG), learning_starts=32, batch_size=32, buffer_size=500, seed=0,
                device="cpu", policy_kwargs={"net_arch": [64, 64]})
    model.learn(96)
    model.save(folder / "sac.zip")
    return model, folder


def test_ppo_with_vecnormalize_matches_sb3(env, observations, ppo_with_vecnormalize, tmp_path):
    model, venv, folder = ppo_with_vecnormalize
    loaded = load_sb3_model(folder / "ppo.zip", vecnormalize=folder / "vecnormalize.pkl")
    assert loaded.algorithm == "ppo" and loaded.obs_norm is not None
    result = export_onnx(loaded, env, tmp_path / "ppo.onnx", env_id=PEG)
    policy = OnnxPolicy(result.path, expected_sha256=result.sha256)
    action, command = policy.run(observations)
    # The reference is the live training objects: SB3's predict on VecNormalize's normalization.
    reference, _ = model.predict(venv.normalize_obs(observations), deterministic=True)
    assert np.abs(action - reference).max() <= 1e-5
    assert np.abs(command - reference * command_scale(env)).max() <= 1e-7
    # PPO's Gaussian mean is unbounded: the graph clips it to the action space like predict does.
    assert np.abs(action).max() <= 1.0
    parity = onnx_parity(loaded, result.path, observations, env)
    assert parity["action_max_abs_diff"] <= 1e-5 and parity["observations"] == len(observations)


def test_sac_matches_sb3(env, observations, sac, tmp_path):
    model, folder = sac
    loaded = load_sb3_model(folder / "sac.zip")
    assert loaded.algorithm == "sac" and loaded.obs_norm is None
    result = export_onnx(loaded, env, tmp_path / "sac.onnx")
    action, _ = OnnxPolicy(result.path).run(observations)
    reference, _ = model.predict(observations, deterministic=True)
    assert np.abs(action - reference).max() <= 1e-5
    assert result.metadata["action_postprocess"] == "unscale"


def test_clipped_actions_are_exported_even_for_a_saturating_policy(env, observations, tmp_path):
    """A policy whose mean far exceeds the action box: the graph clips, as SB3's predict does."""
    import torch

    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu")
    with torch.no_grad():
        model.policy.action_net.bias.copy_(torch.tensor([3.0, -3.0, 0.5, 0.0, 0.0, 0.0]))
    result = export_onnx(model, env, tmp_path / "saturating.onnx")
    action, command = OnnxPolicy(result.path).run(observations)
    reference = sb3_actions(model, observations)
    assert np.abs(action - reference).max() <= 1e-5
    assert action[:, 0].min() == 1.0 and action[:, 1].max() == -1.0
    assert command[:, 0].max() == pytest.approx(0.005)  # metres: 5 mm per period at most


def test_metadata_units_and_checksum(env, sac, tmp_path):
    _, folder = sac
    result = export_onnx(load_sb3_model(folder / "sac.zip"), env, tmp_path / "policy.onnx", env_id=PEG)
    assert result.sha256 == sha256_file(result.path)
    meta = OnnxPolicy(result.path).metadata
    assert meta["env_id"] == PEG and meta["control_dt_s"] == "0.05"
    assert "[m]" in meta["command_units"] and "[rad]" in meta["command_units"]
    assert meta["source_sha256"] == sha256_file(folder / "sac.zip")
    with pytest.raises(ValueError, match="does not match the expected"):
        OnnxPolicy(result.path, expected_sha256="0" * 64)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_algorithm_is_read_from_the_zip_json(ppo_with_vecnormalize, sac, tmp_path):
    assert detect_algorithm(ppo_with_vecnormalize[2] / "ppo.zip") == "ppo"
    assert detect_algorithm(sac[1] / "sac.zip") == "sac"
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a stable-baselines3 model zip"):
        detect_algorithm(tmp_path / "fake.zip")


def test_mismatched_spaces_are_refused(env, tmp_path):
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, device="cpu")
    size = env.observation_space.shape[0]
    with pytest.raises(ValueError, match=rf"the model observes \(3,\), the env \({size},\)"):
        export_onnx(model, env, tmp_path / "x.onnx")


def test_normalization_matches_vecnormalize(ppo_with_vecnormalize, observations):
    _, venv, _ = ppo_with_vecnormalize
    norm = ObsNormalization(venv.obs_rms.mean, venv.obs_rms.var, venv.epsilon, venv.clip_obs)
    assert np.array_equal(norm.apply(observations), venv.normalize_obs(observations))
