"""Residual RL: zero residual is the base bit for bit, the residual is bounded, base + residual exports as one ONNX."""

import gymnasium as gym
import numpy as np
import pytest
import yaml
from stable_baselines3 import PPO, SAC

from skillcell.config import ConfigError
from skillcell.deploy.export import export_residual_onnx, export_run, residual_parity, run_parity
from skillcell.deploy.runner import OnnxPolicy
from skillcell.policies.frozen import SB3Policy, frozen_policy
from skillcell.policies.loading import load_sb3_model
from skillcell.policies.residual import ResidualAction, residual_run, zero_action_head
from skillcell.policies.scripted import make_expert

ENV_ID = "skillcell/PegInsert-v0"
SCALE = 0.2


class Executed(gym.Wrapper):
    """Keeps every action that reaches the cell."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)


@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    """A small PPO policy saved as a run would save it: the learned base."""
    model = PPO("MlpPolicy", gym.make(ENV_ID), seed=1, device="cpu", n_steps=64, batch_size=32,
                policy_kwargs={"net_arch": [32, 32]})
    path = tmp_path_factory.mktemp("base") / "bc_model.zip"
    model.save(path)
    return path


def _episode(env, act, seed, limit=60):
    obs, _ = env.reset(seed=seed)
    for _ in range(limit):
        obs, _, terminated, truncated, _ = env.step(act(obs))
        if terminated or truncated:
            break


def _residual_model(algo, env, seed=0):
    if algo == "ppo":
        return PPO("MlpPolicy", env, seed=seed, device="cpu", n_steps=64, batch_size=32,
                   policy_kwargs={"net_arch": [32, 32]})
    return SAC("MlpPolicy", env, seed=seed, device="cpu", learning_starts=0, policy_kwargs={"net_arch": [32, 32]})


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_zero_residual_reproduces_a_learned_base_bit_for_bit(base_path, algo):
    plain = Executed(gym.make(ENV_ID, tier="D2"))
    base = frozen_policy(str(base_path), plain)
    _episode(plain, base, seed=5)

    inner = Executed(gym.make(ENV_ID, tier="D2"))
    env = ResidualAction(inner, frozen_policy(str(base_path), inner), SCALE)
    residual = _residual_model(algo, env)
    zero_action_head(residual)
    _episode(env, lambda o: residual.predict(o, deterministic=True)[0], seed=5)
    assert len(inner.actions) == len(plain.actions) > 10
    for a, b in zip(inner.actions, plain.actions, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_zero_residual_reproduces_the_scripted_expert(base_path):
    plain = Executed(gym.make(ENV_ID))
    expert = make_expert(plain)
    obs, _ = plain.reset(seed=2)
    expert.reset()
    done = False
    while not done:
        obs, _, terminated, truncated, _ = plain.step(expert(obs))
        done = terminated or truncated

    inner = Executed(gym.make(ENV_ID))
    env = ResidualAction(inner, frozen_policy("scripted", inner), SCALE)
    _episode(env, lambda o: np.zeros(6, np.float32), seed=2, limit=1000)
    assert len(inner.actions) == len(plain.actions)
    np.testing.assert_array_equal(np.array(inner.actions), np.array(plain.actions))


def test_residual_moves_each_channel_by_at_most_scale(base_path):
    inner = Executed(gym.make(ENV_ID))
    base = frozen_policy(str(base_path), inner)
    env = ResidualAction(inner, base, SCALE)
    assert env.observation_space.shape == (inner.observation_space.shape[0] + 6,)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        base_action = obs[-6:]  # the residual observes what the base is about to do
        obs, *_ = env.step(rng.uniform(-3, 3, 6))
        executed = inner.actions[-1]
        assert np.all(np.abs(executed - base_action) <= SCALE + 1e-6)
        assert np.all(np.abs(executed) <= 1.0)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_base_plus_residual_export_as_one_onnx_with_parity(base_path, algo, tmp_path):
    inner = gym.make(ENV_ID, tier="D2")
    base = frozen_policy(str(base_path), inner)
    env = ResidualAction(inner, base, SCALE)
    residual = _residual_model(algo, env, seed=3)  # not zeroed: a residual that does something
    obs = []
    o, _ = env.reset(seed=0)
    for _ in range(40):
        obs.append(o[:-6])
        o, *_ = env.step(residual.predict(o, deterministic=False)[0])
    result = export_residual_onnx(residual, base, SCALE, inner, tmp_path / "policy.onnx", env_id=ENV_ID)
    assert result.metadata["policy"] == "residual" and result.metadata["base_sha256"] == base.loaded.sha256
    parity = residual_parity(residual, base, SCALE, result.path, np.array(obs), inner)
    assert parity["action_max_abs_diff"] <= 1e-5 and parity["command_max_abs_diff"] <= 1e-5
    # The residual really changes the base's actions here, so parity is not parity with the base alone.
    base_only = np.stack([base(x) for x in obs])
    assert np.max(np.abs(OnnxPolicy(result.path).run(np.array(obs))[0] - base_only)) > 1e-3
    inner.close()


def test_export_refuses_a_scripted_base(tmp_path):
    inner = gym.make(ENV_ID)
    env = ResidualAction(inner, frozen_policy("scripted", inner), SCALE)
    residual = _residual_model("ppo", env)
    with pytest.raises(ValueError, match="scripted expert: Python code, not a network"):
        export_residual_onnx(residual, env.base, SCALE, inner, tmp_path / "policy.onnx")
    assert not (tmp_path / "policy.onnx").exists()


def test_a_base_of_another_shape_is_named(base_path):
    from skillcell.policies.history import history_env

    with pytest.raises(ConfigError, match=r"residual\.base: .* observes"):
        frozen_policy(str(base_path), history_env(gym.make(ENV_ID), 2), where="residual.base")


def test_train_residual_on_the_bc_base(tmp_path):
    from skillcell.policies.train import train
    from skillcell.policies.train_config import load_train_config

    config = load_train_config(None, {
        "env": {"id": ENV_ID}, "demos": {"episodes": 1}, "bc": {"steps": 50},
        "residual": {"base": "bc", "scale": SCALE},
        "rl": {"steps": 64, "net_arch": [16, 16], "ppo": {"n_steps": 64, "batch_size": 32}},
        "eval": {"every_steps": 0, "episodes": 1}, "progress": False, "checkpoints": False})
    result = train(config, out=tmp_path / "run", log=lambda _m: None)
    record = yaml.safe_load((tmp_path / "run" / "residual.yaml").read_text())
    assert record["base"] == "bc_model.zip" and record["scale"] == SCALE  # relative: the run can move
    assert result.model.observation_space.shape == (gym.make(ENV_ID).observation_space.shape[0] + 6,)
    # The residual exports together with its base from the run directory's files, moved elsewhere.
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    run = residual_run(load_sb3_model(moved / "model.zip"))
    inner = gym.make(ENV_ID)
    assert isinstance(run.base(inner), SB3Policy)
    exported = export_run(run, inner, tmp_path / "policy.onnx")
    obs = np.stack([inner.reset(seed=s)[0] for s in range(5)])
    assert run_parity(run, exported.path, obs, inner)["action_max_abs_diff"] <= 1e-5
    np.testing.assert_allclose(OnnxPolicy(exported.path).run(obs)[0], run.actions(inner, obs), atol=1e-5)
    # A base that changed since training is refused, naming the record.
    other = PPO("MlpPolicy", gym.make(ENV_ID), seed=9, device="cpu", policy_kwargs={"net_arch": [8]})
    other.save(moved / "bc_model.zip")
    with pytest.raises(ConfigError, match=r"residual\.yaml: the base .* changed since training"):
        residual_run(load_sb3_model(moved / "model.zip")).base(inner)


def test_the_gate_exports_and_judges_a_residual_run_as_one_policy(tmp_path, capsys):
    from skillcell.deploy.gate import run_gate
    from skillcell.policies.train import train
    from skillcell.policies.train_config import load_train_config

    config = load_train_config(None, {
        "env": {"id": ENV_ID}, "demos": {"episodes": 1}, "bc": {"steps": 50},
        "residual": {"base": "bc", "scale": SCALE},
        "rl": {"steps": 64, "net_arch": [16, 16], "ppo": {"n_steps": 64, "batch_size": 32}},
        "finetune": {"critic_warmup_steps": 0}, "eval": {"every_steps": 0, "episodes": 1},
        "progress": False, "checkpoints": False})
    train(config, out=tmp_path / "run", log=lambda _m: None)
    result = run_gate(tmp_path / "run" / "model.zip", ENV_ID, tmp_path / "gate", tiers=["D0"],
                      criteria_overrides={"episodes": 2, "runner_episodes": 1, "parity_observations": 32})
    onnx = result.record["onnx"]
    assert onnx["metadata"]["policy"] == "residual"
    assert onnx["parity"]["action_max_abs_diff"] <= 1e-5
    assert {r.name: r.passed for r in result.results}["onnx.parity"] is True
    assert result.record["model"]["residual"]["base"].endswith("bc_model.zip")
    assert "a residual (scale 0.2)" in (tmp_path / "gate" / "report.md").read_text()
    # skillcell eval runs it on top of its base too (a plain env would not fit its observation).
    from skillcell.cli import main as cli_main

    assert cli_main(["eval", str(tmp_path / "run" / "model.zip"), "--env", ENV_ID, "--episodes", "1",
                     "--no-progress"]) in (0, 1)
    assert "success" in capsys.readouterr().out
