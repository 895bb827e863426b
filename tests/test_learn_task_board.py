"""The NIST task-board cells learned from 25 expert demonstrations: each example config, trained as
committed, reaches the `skillcell gate` verdict its README line states (slow: every test trains with
DAgger at D2 and runs the full default gate, 50 episodes per tier; minutes each on 2 cores)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _train_and_gate(tmp_path, name: str, env_id: str):
    from skillcell.deploy.gate import run_gate
    from skillcell.policies.train import train
    from skillcell.policies.train_config import load_train_config

    config = load_train_config(ROOT / "examples" / f"train_{name}.yaml", {"checkpoints": False})
    assert config.env.id == env_id and config.demos.episodes <= 25
    result = train(config, out=tmp_path / "run", log=lambda _message: None)
    assert result.demos.demos.n_episodes == config.demos.episodes
    gate = run_gate(tmp_path / "run" / "model.zip", env_id, tmp_path / "gate")
    successes = {tier: r["successes"] for tier, r in gate.record["tiers"].items()}
    return gate, successes


@pytest.mark.slow
def test_snap_fit_learned_from_25_demos_passes_the_gate(tmp_path):
    gate, successes = _train_and_gate(tmp_path, "snap_fit", "skillcell/SnapFit-v0")
    assert gate.passed, (gate.failed, successes)


@pytest.mark.slow
def test_nut_thread_cloned_from_25_demos_seats_at_d0_but_stalls_under_the_seating_torque_later(tmp_path):
    gate, successes = _train_and_gate(tmp_path, "nut_thread", "skillcell/NutThread-v0")
    # Measured with the two-step tightening expert: D0 50/50, D1 17/50, D2 28/50; FAIL on D1.success,
    # D2.success and D2.kpi.cross_threaded (1 of the 50 D2 nuts).
    assert successes["D0"] >= 48 and successes["D1"] >= 10 and successes["D2"] >= 20, successes
    assert set(gate.failed) <= {"D1.success", "D2.success", "D2.kpi.cross_threaded"}, gate.failed


@pytest.mark.slow
def test_keyed_shaft_dagger_policy_seats_shafts_but_presses_and_jams(tmp_path):
    gate, successes = _train_and_gate(tmp_path, "keyed_shaft", "skillcell/KeyedShaft-v0")
    # Measured: D0 50/50, D1 47/50, D2 39/50 (BC alone without obs_norm: 0/25 at D2); FAIL on the force
    # envelope and KPI (D2 peak 101 N of 40) and on jam time in every tier; never on physics or parity.
    assert successes["D0"] >= 45 and successes["D1"] >= 40 and successes["D2"] >= 30, successes
    assert set(gate.failed) <= {"envelope.tool_force", "envelope.tool_torque", "D0.kpi.peak_insertion_force_n",
                                "D1.kpi.peak_insertion_force_n", "D2.kpi.peak_insertion_force_n",
                                "D0.kpi.jam_time_s", "D1.kpi.jam_time_s", "D2.kpi.jam_time_s"}, gate.failed
