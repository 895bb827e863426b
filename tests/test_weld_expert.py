"""Scripted welders: the expert's beads are in spec, the novice's mostly are not."""

import gymnasium as gym
import pytest

from skillcell.evaluation import run_episodes
from skillcell.policies import make_expert


def weld(env_id, skill, episodes, seed=0):
    env = gym.make(env_id)
    expert = make_expert(env, skill=skill, seed=seed)
    summary = run_episodes(env, expert, episodes, seed=seed)
    env.close()
    return summary


@pytest.mark.parametrize("env_id", ["skillcell/WeldSeam-v0", "skillcell/WeldSeamLap-v0",
                                    "skillcell/WeldSeamButt-v0", "skillcell/WeldSeamCurved-v0"])
def test_expert_welds_in_spec(env_id):
    summary = weld(env_id, "expert", 10)
    assert summary.success_rate >= 0.9, summary.report()
    assert summary.mean("in_spec_fraction") > 0.9
    assert summary.mean("arc_coverage") > 0.98


def test_novice_mostly_fails_and_is_less_steady():
    novice = weld("skillcell/WeldSeam-v0", "novice", 10)
    expert = weld("skillcell/WeldSeam-v0", "expert", 10)
    assert novice.success_rate <= 0.3, novice.report()
    assert novice.mean("in_spec_fraction") < 0.6
    for key in ("bead_travel_speed_mm_s_std", "bead_work_angle_deg_std", "bead_ctwd_mm_std"):
        assert novice.mean(key) > 2 * expert.mean(key), key


def test_welders_are_reproducible_from_their_seed():
    a = weld("skillcell/WeldSeam-v0", "novice", 2, seed=5)
    b = weld("skillcell/WeldSeam-v0", "novice", 2, seed=5)
    assert [e.final_info["in_spec_fraction"] for e in a.episodes] == \
           [e.final_info["in_spec_fraction"] for e in b.episodes]


@pytest.mark.slow
def test_expert_success_over_100_seeds():
    summary = weld("skillcell/WeldSeam-v0", "expert", 100)
    assert summary.success_rate >= 0.95, summary.report()
