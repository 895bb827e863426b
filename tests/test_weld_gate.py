"""The welding cells in the pre-hardware gate: tiers, the torch-to-part clearance, WPS criteria."""

import numpy as np
import pytest

from skillcell.deploy.envelope import load_envelope
from skillcell.deploy.gate import run_gate
from skillcell.envs.cells.weld_seam import WeldSeamEnv

WELD = "skillcell/WeldSeam-v0"


def test_tool_clearance_is_the_nozzle_to_plate_distance():
    env = WeldSeamEnv(randomize=False)
    env.reset(seed=0)
    assert env.tool_clearance() > 0.01  # backed off 30 mm at the start
    for _ in range(60):  # straight down onto the base plate until the nozzle touches
        env.step(np.r_[0, 0, -0.5, 0, 0, 0, -1])
    assert env.tool_clearance() < 0.5e-3


def test_weld_envelope_has_a_clearance_limit():
    envelope = load_envelope(WeldSeamEnv())
    assert envelope.min_tool_clearance_mm == 1.0


@pytest.mark.parametrize("tier", ["D0", "D1", "D2"])
def test_weld_tiers_are_deterministic(tier):
    a, b = WeldSeamEnv(tier=tier), WeldSeamEnv(tier=tier)
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 7))
    for env in (a, b):
        env.reset(seed=4)
        for action in actions:
            env.step(action)
    assert np.array_equal(a.get_state(), b.get_state())


def test_expert_welder_passes_d0_d1(tmp_path):
    result = run_gate("scripted", WELD, tmp_path / "expert", tiers=["D0", "D1"],
                      criteria_overrides={"episodes": 20, "runner_episodes": 1})
    assert result.passed, result.failed
    kpis = [r for r in result.results if r.name.endswith("kpi.in_spec_fraction")]
    assert kpis and all(r.passed for r in kpis)


def test_novice_welder_fails_on_the_wps(tmp_path):
    result = run_gate("scripted:novice", WELD, tmp_path / "novice", tiers=["D1"],
                      criteria_overrides={"episodes": 3, "runner_episodes": 0})
    assert not result.passed
    assert "D1.kpi.in_spec_fraction" in result.failed and "D1.success" in result.failed
