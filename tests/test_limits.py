"""One source for each limit: PegInsert's rated insertion force is declared once (cell.yaml ``limits``),
and the envelope, the gate's KPI criterion, the review's colour bands, the skill scorer and the
reward all move when that one declaration is overridden."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.config import ConfigError
from skillcell.demos import EpisodeRecorder, Provenance, score_episode
from skillcell.deploy.envelope import load_envelope
from skillcell.deploy.gate import load_criteria
from skillcell.envs.fixture_task import FORCE_PENALTY_SATURATION, FORCE_STOP_FACTOR, PENETRATION_KPI_FRACTION
from skillcell.envs.limits import resolve_limits
from skillcell.policies import make_expert
from skillcell.review.overlays import cell_review

ENV_ID = "skillcell/PegInsert-v0"


def _readers(env) -> dict[str, float]:
    """Every number that the rated force feeds, as each reader sees it."""
    cell = env.unwrapped
    criteria = load_criteria(cell.cell_file("criteria.yaml"), limits=cell.limits)
    review = cell_review(env)
    return {
        "envelope": load_envelope(env).tool_force_max_n,
        "gate": next(c.max for c in criteria.kpis if c.key == "peak_insertion_force_n"),
        "review_arrow": review.force_limit_n,
        "review_strip": review.metric("peak_insertion_force_n").band[1],
    }


def _press_on_block(env) -> list[float]:
    """Presses the peg onto the block beside the hole (40-70 N; the nominal cell, so that two envs
    see the same physics); the force penalty of every step."""
    env.reset(seed=0)
    for _ in range(8):
        env.step(np.array([0.6, 0.0, 0, 0, 0, 0]))
    down = [np.array([0, 0, -0.5, 0, 0, 0])] * 18 + [np.array([0, 0, -0.05, 0, 0, 0])] * 20
    return [env.step(action)[4]["reward_force"] for action in down]


@pytest.fixture(scope="module")
def expert_episode():
    env = EpisodeRecorder(gym.make(ENV_ID, tier="D0", overrides={"limits": {"rated_insertion_force_n": 45.0}}), None,
                          provenance=Provenance(operator_id="test", consent=True))
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(expert(obs))
        done = terminated or truncated
    env.close()
    return env.completed[0]


def test_the_packaged_limit_and_its_named_rules():
    env = gym.make(ENV_ID)
    try:
        assert env.unwrapped.limits == {"rated_insertion_force_n": 40.0, "tool_force_stop_n": 50.0,
                                        "max_penetration_kpi_mm": pytest.approx(0.1)}
        assert _readers(env) == {"envelope": 50.0, "gate": 40.0, "review_arrow": 40.0, "review_strip": 40.0}
    finally:
        env.close()


def test_one_override_moves_envelope_gate_review_scorer_and_reward(expert_episode):
    # The joint servos (position mode) press hard enough to reach the penalty; impedance caps a
    # blocked tool at stiffness x lead (10 N), below the jam force.
    servos = {"control": {"mode": "position"}}
    default = gym.make(ENV_ID, randomize=False, overrides=servos)
    moved = gym.make(ENV_ID, randomize=False, overrides={**servos, "limits": {"rated_insertion_force_n": 45.0}})
    try:
        assert _readers(moved) == {"envelope": FORCE_STOP_FACTOR * 45.0, "gate": 45.0, "review_arrow": 45.0,
                                   "review_strip": 45.0}
        # The reward's force penalty saturates at FORCE_PENALTY_SATURATION x the rated force: pressing
        # between the jam force and the saturation, the higher rating is penalized less.
        pressed, relaxed = np.array(_press_on_block(default)), np.array(_press_on_block(moved))
        jam = default.unwrapped.config.task.jam_force_n
        assert FORCE_PENALTY_SATURATION * 40.0 > jam
        assert (pressed < 0).any(), "the press is penalized"
        assert (relaxed >= pressed).all() and (relaxed > pressed).any()
    finally:
        default.close()
        moved.close()

    # The scorer reads the limit from the episode's own config (its env kwargs): a peak of 42 N is
    # past a 40 N rating (no force marks) but inside a 45 N one.
    assert expert_episode.env_kwargs["overrides"] == {"limits": {"rated_insertion_force_n": 45.0}}
    episode = copy.copy(expert_episode)
    episode.infos = {**expert_episode.infos, "peak_insertion_force_n": np.full(expert_episode.steps + 1, 42.0)}
    assert score_episode(episode).components["peak_force"] == pytest.approx((45.0 - 42.0) / (45.0 - jam))
    episode.env_kwargs = {k: v for k, v in expert_episode.env_kwargs.items() if k != "overrides"}
    assert score_episode(episode).components["peak_force"] == 0.0


def test_an_unknown_limit_name_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"kpis\[0\]\.max: 'limits\.nope' is not a limit of this cell "
                                          r"\(its limits: rated_insertion_force_n, tool_force_stop_n\)"):
        resolve_limits({"kpis": [{"max": "limits.nope"}]}, {"rated_insertion_force_n": 40.0, "tool_force_stop_n": 50.0})
    with pytest.raises(ConfigError, match=r"refers to a cell's limits"):
        load_criteria(gym.make(ENV_ID).unwrapped.cell_file("criteria.yaml"))


def test_the_penetration_kpi_follows_the_clearance():
    env = gym.make(ENV_ID, clearance_mm=0.2)
    try:
        cell = env.unwrapped
        criteria = load_criteria(cell.cell_file("criteria.yaml"), limits=cell.limits)
        kpi = next(c.max for c in criteria.kpis if c.key == "max_penetration_mm")
        assert kpi == pytest.approx(PENETRATION_KPI_FRACTION * cell.penetration_budget * 1e3) == pytest.approx(0.05)
        assert cell_review(env).metric("penetration_mm").band == (0.0, pytest.approx(0.1))  # the budget itself
    finally:
        env.close()
