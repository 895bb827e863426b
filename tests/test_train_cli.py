"""``skillcell train`` / ``skillcell eval`` and the training config (tiny budgets)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skillcell.config import ConfigError
from skillcell.policies.rundir import read_metrics
from skillcell.policies.train_config import load_train_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PEG = EXAMPLES / "train_peg_insert.yaml"
# Tiny: 2 demonstrations, 100 BC steps, 128 PPO env steps in rollouts of 64, 2 evaluation episodes.
TINY = ["--set", "demos.episodes=2", "--set", "bc.steps=100", "--set", "rl.steps=128", "--set", "rl.ppo.n_steps=64",
        "--set", "rl.ppo.batch_size=32", "--set", "finetune.critic_warmup_steps=64", "--set", "eval.every_steps=64",
        "--set", "eval.episodes=2", "--set", "rl.net_arch=[32, 32]"]


def skillcell(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "skillcell", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("train_*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    config = load_train_config(path)
    assert config.env.id.startswith("skillcell/")


@pytest.mark.parametrize("key, named", [
    ({"rl": {"learning_rat": 1.0}}, "rl.learning_rat: unknown key"),
    ({"rl": {"ppo": {"n_step": 64}}}, "rl.ppo.n_step: unknown key"),
    ({"bc": {"loss": "huber"}}, "bc.loss: must be one of"),
    ({"eval": {"episodes": 0}}, "eval.episodes: must be in"),
    ({"env": {"overrides": 3}}, "env.overrides: expected a mapping"),
    ({"bc": {"enabled": True}, "demos": {"source": "none"}}, "bc.enabled: behaviour cloning needs demonstrations"),
])
def test_config_errors_name_the_key(key, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_train_config(PEG, key)


def test_typo_in_a_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(PEG.read_text().replace("  critic_warmup_steps:", "  critic_warmup_step:"))
    with pytest.raises(ConfigError, match=r"finetune\.critic_warmup_step: unknown key"):
        load_train_config(bad)


def test_scientific_notation_is_a_number():
    # PyYAML reads 1e-4 (no dot) as a string; a training config means a number.
    assert load_train_config(PEG, {"rl": {"learning_rate": "1e-4"}}).rl.learning_rate == 1e-4


def test_cli_typo_fails_naming_the_key_and_writes_nothing(tmp_path):
    result = skillcell("train", "--config", str(PEG), "--set", "rl.ppo.target_k=0.01", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "rl.ppo.target_k: unknown key" in result.stderr
    assert not (tmp_path / "r").exists()


def test_cell_override_typo_is_named(tmp_path):
    result = skillcell("train", "--config", str(PEG), "--set", "env.overrides.workpiece.clearance=0.2",
                       "--out", str(tmp_path / "r"), "--no-progress")
    assert result.returncode == 2
    assert "env.overrides: workpiece.clearance: unknown key" in result.stderr
    assert not (tmp_path / "r").exists()


def test_train_then_eval_end_to_end(tmp_path):
    run = tmp_path / "run"
    result = skillcell("train", "--config", str(PEG), *TINY, "--set", "env.obs_norm=demos", "--out", str(run),
                       "--no-progress")
    assert result.returncode == 0, result.stderr
    for name in ("config.yaml", "metrics.csv", "bc_model.zip", "model.zip", "vecnormalize.pkl", "summary.yaml"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["model_000000064.zip", "model_000000128.zip"]
    as_run = yaml.safe_load((run / "config.yaml").read_text())
    assert as_run["rl"]["steps"] == 128 and as_run["env"]["overrides"] == {"reward": {"success": 200.0}}
    rows = read_metrics(run / "metrics.csv")
    assert [r["phase"] for r in rows] == ["bc", "rl", "rl"] and [r["env_steps"] for r in rows] == [0, 64, 128]
    columns = {"success_rate", "success_ci_low", "success_ci_high", "mean_return", "peak_insertion_force_n"}
    assert columns <= set(rows[0])
    summary = yaml.safe_load((run / "summary.yaml").read_text())
    assert summary["bc"]["train_action_mse_after"] < summary["bc"]["train_action_mse_before"]

    # A second run into the same directory is refused unless asked for.
    again = skillcell("train", "--config", str(PEG), *TINY, "--out", str(run), "--no-progress")
    assert again.returncode == 2 and "already holds a run" in again.stderr

    args = ("eval", str(run / "model.zip"), "--env", "skillcell/PegInsert-v0", "--episodes", "3", "--seed", "7",
            "--no-progress")
    first, second = skillcell(*args), skillcell(*args)
    assert first.returncode in (0, 1), first.stderr
    assert "95% CI" in first.stdout and "vecnormalize.pkl" in first.stdout
    assert "mean peak_insertion_force_n:" in first.stdout
    strip = [line for line in first.stdout.splitlines() if "steps/s" not in line]
    assert strip == [line for line in second.stdout.splitlines() if "steps/s" not in line]  # deterministic


def test_eval_refuses_a_model_of_another_cell(tmp_path):
    run = tmp_path / "run"
    assert skillcell("train", "--config", str(PEG), *TINY, "--set", "rl.steps=0", "--out", str(run),
                     "--no-progress").returncode == 0
    result = skillcell("eval", str(run / "model.zip"), "--env", "skillcell/WeldSeam-v0", "--episodes", "1")
    assert result.returncode == 2 and "observations of shape" in result.stderr


def test_sac_example_trains_end_to_end(tmp_path):
    from skillcell.policies.train import train

    config = load_train_config(EXAMPLES / "train_peg_insert_sac.yaml", {
        "demos": {"episodes": 2}, "bc": {"steps": 50}, "rl": {"steps": 100, "net_arch": [32, 32],
                                                               "sac": {"batch_size": 32}},
        "finetune": {"critic_warmup_steps": 50}, "eval": {"every_steps": 0, "episodes": 1}, "progress": False})
    result = train(config, out=tmp_path / "sac", log=lambda m: None)
    buffer = result.model.replay_buffer
    assert buffer.n_demos > 0 and buffer.demo_samples == buffer.online_samples == 16 * 100
    assert (tmp_path / "sac" / "model.zip").is_file()


def test_trains_from_a_dataset_folder_and_warns_on_other_cell_settings(tmp_path):
    from skillcell.demos import generate_demos
    from skillcell.policies.train import train

    generate_demos("skillcell/PegInsert-v0", 2, tmp_path / "demos", seed=0, progress=False)
    config = load_train_config(PEG, {"demos": {"source": "dataset", "path": str(tmp_path / "demos"), "min_score": 0.0},
                                     "bc": {"steps": 20}, "rl": {"steps": 0}, "eval": {"episodes": 1},
                                     "progress": False})
    messages = []
    result = train(config, out=tmp_path / "run", log=messages.append)
    assert any(m.startswith("demonstrations: 2 episodes") for m in messages)
    # The dataset was recorded with the packaged reward; the config trains with a success bonus of 200.
    assert any(m.startswith("warning: the demonstrations were recorded with") for m in messages)
    assert [r["phase"] for r in result.metrics] == ["bc"] and (tmp_path / "run" / "model.zip").is_file()
