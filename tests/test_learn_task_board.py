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
def test_nut_thread_cloned_from_25_demos_seats_but_may_cross_thread_at_d2(tmp_path):
    gate, successes = _train_and_gate(tmp_path, "nut_thread", "skillcell/NutThread-v0")
    # Measured: D0 50/50, D1 50/50, D2 47/50; FAIL on D2.kpi.cross_threaded alone (2 of the 50 D2 nuts).
    assert successes["D0"] >= 48 and successes["D1"] >= 48 and successes["D2"] >= 40, successes
    assert set(gate.failed) <= {"D2.kpi.cross_threaded"}, gate.failed
