"""Skill scores per demonstration and per operator, and filtering a dataset by score."""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import yaml

from skillcell.demos import (
    DatasetWriter,
    DemoDataset,
    EpisodeRecorder,
    Provenance,
    filter_dataset,
    generate_demos,
    score_dataset,
    score_episode,
)
from skillcell.demos.errors import DemoError
from skillcell.demos.scores import PegInsertScorer, ramp, scorer_for

ENV_ID = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    out = tmp_path_factory.mktemp("scores") / "expert"
    generate_demos(ENV_ID, 2, out, seed=3, progress=False)
    return DemoDataset(out)


@pytest.fixture(scope="module")
def failed_episode():
    env = gym.make(ENV_ID, max_episode_steps=10)
    recorder = EpisodeRecorder(env, None, provenance=Provenance(operator_id="bob", consent=True))
    recorder.reset(seed=0)
    for _ in range(10):
        recorder.step(np.zeros(6, np.float32))  # waits over the hole: never inserts
    env.close()
    return recorder.completed[0]


def test_ramp():
    assert ramp(2.0, good=3.0, bad=10.0) == 1.0 and ramp(10.0, 3.0, 10.0) == 0.0
    assert ramp(6.5, 3.0, 10.0) == pytest.approx(0.5)
    assert ramp(0.9, good=1.0, bad=0.0) == pytest.approx(0.9)  # higher is better works too
    assert ramp(math.nan, 3.0, 10.0) == 0.0


def test_peg_insertion_scores_time_force_and_search(expert, failed_episode):
    episode = expert[0]
    score = score_episode(episode)
    assert set(score.components) == {"time", "peak_force", "search"}
    assert score.metrics["time_s"] == pytest.approx(episode.steps * 0.05)
    assert score.metrics["peak_force_n"] == episode.infos["peak_insertion_force_n"][-1]
    assert score.metrics["search_length_mm"] == 0.0  # the expert sees the hole and goes straight in
    assert score.components["time"] == pytest.approx(ramp(score.metrics["time_s"], 3.0, 10.0))
    assert 0.8 < score.score <= 1.0

    failed = score_episode(failed_episode)
    assert failed.score == 0.0 and failed.metrics["success"] == 0.0
    assert failed.components["time"] > 0  # components still say what happened


def test_search_length_is_the_lateral_travel_pressed_on_the_surface(expert):
    episode = expert[0]
    obs = episode.observations.copy()
    layout = {f["name"]: f for f in episode.obs_fields}
    start = {}
    offset = 0
    for f in episode.obs_fields:
        start[f["name"]] = offset
        offset += f["size"]

    def put(name, values):
        f = layout[name]
        obs[:, start[name]:start[name] + f["size"]] = np.asarray(values) * f["scale"]

    n = len(obs)
    angle = np.linspace(0.0, 2 * np.pi, n)
    xy = 0.002 * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # a 2 mm radius circle on the surface
    put("tcp_pos_task", np.column_stack([xy, np.zeros(n)]))
    put("depth", np.zeros((n, 1)))
    force = np.zeros((n, 3))
    force[:, 2] = 8.0
    force[: n // 2, 2] = 0.5  # first half: hovering, not pressing: not a search
    put("force_tool", force)
    searching = dataclasses.replace(episode, observations=obs)
    expected = 1e3 * np.linalg.norm(np.diff(xy[n // 2:], axis=0), axis=1).sum()
    assert PegInsertScorer().search_length_mm(searching) == pytest.approx(expected, rel=1e-5)
    assert score_episode(searching).components["search"] == pytest.approx(ramp(expected, 0.0, 20.0), rel=1e-5)


def test_scores_per_operator_and_filtering(expert, failed_episode, tmp_path):
    mixed = tmp_path / "mixed"
    writer = DatasetWriter(mixed)
    alice = Provenance(operator_id="alice", site="plant-2", source_device="tracker", consent=True)
    writer.add(dataclasses.replace(expert[0], provenance=alice))
    writer.add(dataclasses.replace(expert[1], provenance=dataclasses.replace(alice, operator_id="bob")))
    writer.add(failed_episode)

    scores = score_dataset(mixed)
    operators = scores.per_operator()
    assert operators["alice"]["episodes"] == 1 and operators["alice"]["mean"] > 0.8
    assert operators["bob"]["episodes"] == 2 and operators["bob"]["success_rate"] == 0.5
    assert operators["bob"]["min"] == 0.0 and operators["bob"]["mean"] == pytest.approx(operators["bob"]["max"] / 2)
    assert scores.select(0.5) == [0, 1]
    assert "alice" in scores.report() and "bob" in scores.report()
    saved = yaml.safe_load(scores.save().read_text())
    assert [e["id"] for e in saved["episodes"]] == [0, 1, 2] and saved["operators"]["bob"]["episodes"] == 2

    entries = filter_dataset(mixed, tmp_path / "good", min_score=0.5)
    good = DemoDataset(tmp_path / "good")
    assert [e.operator_id for e in entries] == ["alice", "bob"] and len(good) == 2
    assert good[1].notes["filtered_from"] == {"dataset": str(mixed), "id": 1, "min_score": 0.5}
    np.testing.assert_array_equal(good[1].states, expert[1].states)
    only_alice = filter_dataset(mixed, tmp_path / "alice", min_score=0.0, operators=["alice"])
    assert [e.operator_id for e in only_alice] == ["alice"]
    with pytest.raises(ValueError, match="another folder"):
        filter_dataset(mixed, mixed, min_score=0.5)


def test_the_scorer_is_the_one_the_cell_registry_declares(expert):
    assert isinstance(scorer_for(ENV_ID), PegInsertScorer)
    with pytest.raises(DemoError, match=r"no skill scorer: unknown cell 'skillcell/Nope-v0'; registered: .*PegInsert"):
        scorer_for("skillcell/Nope-v0")
    assert score_episode(expert[0]).score > 0.8


def test_welding_expert_outscores_novice(tmp_path):
    generate_demos("skillcell/WeldSeam-v0", 1, tmp_path / "expert", skill="expert", seed=1, progress=False)
    generate_demos("skillcell/WeldSeam-v0", 1, tmp_path / "novice", skill="novice", seed=1, progress=False)
    expert = score_dataset(tmp_path / "expert").episodes[0].skill
    novice = score_dataset(tmp_path / "novice").episodes[0].skill
    assert set(expert.components) == {"in_spec", "speed_steadiness", "angle_steadiness", "soundness"}
    assert expert.components["in_spec"] == expert.metrics["in_spec_fraction"] > 0.9
    assert expert.score > novice.score + 0.3
    assert expert.components["angle_steadiness"] > novice.components["angle_steadiness"]
    assert expert.components["speed_steadiness"] > novice.components["speed_steadiness"]
