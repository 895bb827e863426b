"""`skillcell gate`: an unsafe policy fails naming its limits, the expert passes, evidence is written."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from skillcell.cli import main as cli_main
from skillcell.config import ConfigError
from skillcell.deploy.gate import load_criteria, run_gate
from skillcell.paths import sha256_file

PEG = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def unsafe_zip(tmp_path_factory):
    """A real SB3 PPO whose deterministic action is 'full speed down, into the fixture'."""
    model = PPO("MlpPolicy", gym.make(PEG), n_steps=64, batch_size=32, seed=0, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0, 0.0]))
    path = tmp_path_factory.mktemp("unsafe") / "unsafe_ppo.zip"
    model.save(path)
    return path


def test_default_criteria():
    criteria = load_criteria()
    assert criteria.tier("D1").min_success_lower_ci == 0.8
    assert [t.name for t in criteria.tiers] == ["D0", "D1", "D2"]
    assert criteria.max_envelope_violations == 0 and criteria.onnx_parity_atol == 1e-5


def test_unsafe_policy_fails_naming_the_violated_limits(unsafe_zip, tmp_path):
    criteria = tmp_path / "quick.yaml"
    criteria.write_text("episodes: 3\nrunner_episodes: 1\nparity_observations: 64\n")
    out = tmp_path / "gate"
    # On the stiff joint servos: the compliant default arm presses at most its stiffness times the lead (10 N).
    result = subprocess.run([sys.executable, "-m", "skillcell", "gate", str(unsafe_zip), "--env", PEG,
                             "--out", str(out), "--criteria", str(criteria), "--no-progress",
                             "--set", "control.mode=position"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith("gate: FAIL: ")
    failed = set(verdict.removeprefix("gate: FAIL: ").split(", "))
    # Driving fast into the fixture: force and torque at the tool, and the peg leaves the box
    # when it slides off the block; the approach itself stays under the speed limits.
    assert {"envelope.tool_force", "envelope.tool_torque", "envelope.workspace"} <= failed
    assert {"D1.success", "D1.kpi.peak_insertion_force_n", "runner"} <= failed
    assert "envelope.tool_speed" not in failed and "onnx.parity" not in failed
    assert "[FAIL] envelope.tool_force: " in result.stdout and " N (D1: " in result.stdout
    assert "as data, nothing unpickled" in result.stderr

    record = yaml.safe_load((out / "gate.yaml").read_text())
    assert record["verdict"] == "fail" and set(record["failed"]) == failed
    assert record["onnx"]["sha256"] == sha256_file(out / "policy.onnx")
    assert record["onnx"]["parity"]["action_max_abs_diff"] <= 1e-5
    assert record["model"]["sha256"] == sha256_file(unsafe_zip) and record["model"]["algorithm"] == "ppo"
    assert record["model"]["trusted"] is False and "--trust-model" in record["trust"]
    assert record["tiers"]["D1"]["envelope_violations"]["tool_force"]["worst"] > 100.0
    assert record["runner"]["interventions"]["tool_force"] > 0
    report = (out / "report.md").read_text()
    assert report.startswith("# Pre-hardware gate: FAIL") and "envelope.tool_force | **FAIL**" in report
    assert sorted(p.name for p in out.iterdir()) == ["gate.yaml", "policy.onnx", "report.md"]  # no temp files


def test_scripted_expert_passes_d0_and_d1(tmp_path):
    result = run_gate("scripted", PEG, tmp_path, tiers=["D0", "D1"],
                      criteria_overrides={"episodes": 20, "runner_episodes": 2})
    assert result.passed and result.exit_code == 0, [r for r in result.results if r.passed is False]
    by_name = {r.name: r for r in result.results}
    assert by_name["D0.success"].passed and by_name["D1.success"].passed
    assert "20/20" in by_name["D1.success"].detail
    assert by_name["D2.success"].passed is None  # not evaluated: the record says so
    assert by_name["onnx.parity"].passed is None and by_name["runner"].passed
    assert all(by_name[f"envelope.{limit}"].passed for limit in ("tool_force", "workspace", "tool_speed"))
    record = yaml.safe_load((tmp_path / "gate.yaml").read_text())
    assert record["verdict"] == "pass" and record["complete"] is False
    assert record["tiers"]["D1"]["success_ci95"][0] >= 0.8
    assert len(record["tiers"]["D1"]["episode_log"]) == 20
    assert record["tiers"]["D1"]["episode_log"][0]["tier_draws"]["latency_steps"] == 0  # D1 adds nothing
    assert not (tmp_path / "policy.onnx").exists()


def test_sac_with_vecnormalize_is_gated(tmp_path):
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(PEG)]))
    model = SAC("MlpPolicy", venv, learning_starts=32, batch_size=32, buffer_size=500, seed=0, device="cpu",
                policy_kwargs={"net_arch": [64, 64]})
    model.learn(64)
    model.save(tmp_path / "sac.zip")
    venv.save(str(tmp_path / "vn.pkl"))
    result = run_gate(tmp_path / "sac.zip", PEG, tmp_path / "gate", vecnormalize=tmp_path / "vn.pkl", tiers=["D0"],
                      criteria_overrides={"episodes": 2, "runner_episodes": 0, "parity_observations": 64})
    onnx = result.record["onnx"]
    assert onnx["metadata"]["obs_normalization"] == "vecnormalize"
    assert onnx["parity"]["action_max_abs_diff"] <= 1e-5
    assert result.record["model"]["vecnormalize"]["sha256"] == sha256_file(tmp_path / "vn.pkl")
    assert {r.name: r.passed for r in result.results}["onnx.parity"] is True
    assert not result.passed and "D0.success" in result.failed  # a few dozen steps of SAC cannot insert a peg


@pytest.mark.parametrize("criteria,message", [
    ("tiers: {D1: {min_succes: 0.9}}\n", r"tiers\.D1\.min_succes: unknown key"),
    ("kpis: [{key: peak_force, max: 10}]\n", r"kpis\[0\]\.key: 'peak_force' is not an info key of PegInsertEnv"),
    ("kpis: [{key: jam_time_s, stat: median, max: 1}]\n", r"kpis\[0\]\.stat: must be one of"),
    ("episodes: 0\n", r"episodes: must be in \[1, 100000\]"),
])
def test_bad_criteria_are_named(tmp_path, capsys, criteria, message):
    path = tmp_path / "criteria.yaml"
    path.write_text(criteria)
    code = cli_main(["gate", "scripted", "--env", PEG, "--out", str(tmp_path / "out"), "--criteria", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "config error" in err
    with pytest.raises(ConfigError, match=message):
        run_gate("scripted", PEG, tmp_path / "out", criteria_file=path)


def test_unknown_tier_and_model_are_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"tiers: D5 not in the criteria's tiers \(D0, D1, D2\)"):
        run_gate("scripted", PEG, tmp_path, tiers=["D5"])
    assert cli_main(["gate", str(tmp_path / "missing.zip"), "--env", PEG, "--out", str(tmp_path)]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_parity_observations_are_real(unsafe_zip):
    """The parity batch comes from rollouts: finite, varied, in the env's observation layout."""
    from skillcell.deploy.gate import parity_observations
    from skillcell.policies.loading import load_sb3_model

    obs = parity_observations(PEG, ["D0", "D2"], {}, load_sb3_model(unsafe_zip), 20)
    assert obs.shape == (20, *gym.make(PEG).observation_space.shape)
    assert np.isfinite(obs).all() and obs.std(axis=0).max() > 0


def test_a_policy_that_outputs_nan_fails_without_crashing_the_gate(tmp_path):
    model = PPO("MlpPolicy", gym.make(PEG), n_steps=64, batch_size=32, seed=0, device="cpu")
    with torch.no_grad():
        model.policy.action_net.bias[0] = float("nan")
    model.save(tmp_path / "nan.zip")
    result = run_gate(tmp_path / "nan.zip", PEG, tmp_path / "gate", tiers=["D0"],
                      criteria_overrides={"episodes": 1, "runner_episodes": 1, "parity_observations": 8})
    assert {"policy.finite_actions", "onnx.parity", "runner"} <= set(result.failed)
    assert result.record["runner"]["interventions"]["non_finite_command"] > 0
    record = yaml.safe_load((tmp_path / "gate" / "gate.yaml").read_text())
    assert record["onnx"]["parity"]["action_max_abs_diff"] is None  # NaN, written as null
