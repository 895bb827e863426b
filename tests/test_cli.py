"""The command line, run as a user would: as a subprocess."""

import subprocess
import sys

import pytest


def skillcell(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "skillcell", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_list_shows_every_cell():
    import skillcell as package

    result = skillcell("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(package.skillcell_env_ids())
    assert any(line.startswith("skillcell/PegInsert-v0") for line in lines)


def test_check_passes_for_peg_insert():
    result = skillcell("check", "skillcell/PegInsert-v0", "--steps", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("gymnasium check_env", "stable-baselines3 check_env", "random rollout", "determinism"):
        assert f"[PASS] {name}" in result.stdout


def test_expert_prints_success_rate_and_speed():
    result = skillcell("expert", "skillcell/PegInsert-v0", "--episodes", "3", "--no-progress",
                       "--set", "workpiece.clearance_mm=0.2")
    assert result.returncode == 0, result.stderr
    assert "success 3/3 = 100.0%" in result.stdout
    assert "steps/s" in result.stdout


def test_bad_config_key_is_named_and_exits_2():
    result = skillcell("expert", "skillcell/PegInsert-v0", "--episodes", "1", "--set", "workpiece.clearance=0.2")
    assert result.returncode == 2
    assert "workpiece.clearance: unknown key" in result.stderr


def test_unknown_env_is_refused():
    result = skillcell("check", "skillcell/Nope-v0")
    assert result.returncode != 0
    assert "unknown env" in result.stderr


def test_quickstart_runs_end_to_end():
    result = skillcell("quickstart", "--episodes", "2", "--gate-episodes", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "scripted expert, 2 randomized D2 episodes: success 2/2" in result.stdout
    # ... and then learns from those episodes: behaviour cloning, short PPO, evaluation, and the gate of it
    # (2 episodes per tier cannot reach the success bounds: 2/2 has a lower 95% bound of 0.34).
    assert "learned policy (BC + 4096 PPO env steps), 2 unseen randomized D2 episodes: success" in result.stdout
    assert "pre-hardware gate of the learned policy, 2 episodes per tier" in result.stdout
    assert "gate: FAIL: D0.success, D1.success" in result.stdout


@pytest.mark.slow
def test_the_quickstart_learns_a_policy_that_passes_the_gate():
    result = skillcell("quickstart", "--no-progress", timeout=900)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("learned policy"))
    assert float(line.split("success ")[1].split("%")[0]) >= 95.0, line
    assert "  gate: PASS" in result.stdout, result.stdout[-3000:]


def test_expert_novice_welder_prints_process_kpis():
    result = skillcell("expert", "skillcell/WeldSeam-v0", "--episodes", "2", "--skill", "novice", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "scripted novice" in result.stdout
    assert "mean in_spec_fraction:" in result.stdout


def test_unknown_skill_is_refused():
    result = skillcell("expert", "skillcell/PegInsert-v0", "--episodes", "1", "--skill", "novice")
    assert result.returncode == 2
    assert "skill levels" in result.stderr
