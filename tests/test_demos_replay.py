"""Round trips: generate -> replay (state) bit-exact; generate -> replay (action) with zero drift."""

import dataclasses

import imageio.v2 as imageio
import numpy as np
import pytest

from skillcell.demos import DemoDataset, ReplayVersionWarning, generate_demos, replay_episode

ENV_ID = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay") / "expert"
    generate_demos(ENV_ID, 2, out, seed=11, progress=False)
    return out


@pytest.fixture
def episode(dataset):
    return DemoDataset(dataset)[0]


def test_state_replay_is_bit_exact(dataset):
    for entry in DemoDataset(dataset).entries:
        report = replay_episode(dataset / entry.file, "state")
        assert report.passed and report.bit_exact
        assert report.replayed_steps == report.steps == entry.steps
        assert report.first_mismatch_step is None and report.max_state_error == 0.0


def test_action_replay_has_zero_drift_on_the_same_machine(dataset):
    for entry in DemoDataset(dataset).entries:
        report = replay_episode(dataset / entry.file, "action")
        assert report.passed and report.bit_exact
        assert report.replayed_steps == entry.steps
        assert report.drift_mm.shape == (entry.steps + 1,)
        assert report.max_drift_mm == 0.0 and report.max_state_error == 0.0


def test_state_replay_finds_a_tampered_transition(episode):
    episode.states[7, 3] += 1e-12  # one qpos entry, one ulp-ish
    report = replay_episode(episode, "state")
    assert not report.passed and not report.bit_exact
    assert report.first_mismatch_step == 6  # the transition into state 7
    assert 0 < report.max_state_error < 1e-6


def test_action_replay_reports_drift_against_the_threshold(episode):
    episode.actions[5, 0] += 0.6  # one step commands 3 mm further along x
    report = replay_episode(episode, "action", threshold_mm=0.5)
    assert not report.passed and not report.bit_exact
    assert report.first_mismatch_step == 6
    assert np.all(report.drift_mm[:6] == 0.0)
    assert report.max_drift_mm > 0.5
    assert "FAIL" in report.summary() and "max TCP drift" in report.summary()
    assert replay_episode(episode, "action", threshold_mm=50.0).passed


def test_replay_under_another_mujoco_version_warns(episode):
    episode = dataclasses.replace(episode, versions={**episode.versions, "mujoco": "3.3.0"})
    with pytest.warns(ReplayVersionWarning, match="recorded with mujoco 3.3.0"):
        report = replay_episode(episode, "state")
    assert report.passed  # the same model and floating point here, so still exact
    assert any("3.3.0" in w for w in report.warnings)


@pytest.mark.parametrize("mode", ["state", "action"])
def test_replay_writes_a_video(episode, tmp_path, mode):
    video = tmp_path / f"{mode}.mp4"
    report = replay_episode(episode, mode, video=video, width=160, height=128)
    assert report.passed and report.video == video
    with imageio.get_reader(video, format="FFMPEG") as reader:
        frames = [frame for frame in reader]  # list(reader) asks len(), which is inf for ffmpeg streams
    assert len(frames) == episode.steps + 1
    assert frames[0].shape == (128, 160, 3) and frames[0].std() > 5  # a rendered scene, not a blank frame
    assert not list(tmp_path.glob(".*tmp*"))

