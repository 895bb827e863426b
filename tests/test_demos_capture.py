"""Capture import: a synthetic seam capture with a known path comes out as the robot's executed path."""

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import yaml

from skillcell.demos import (
    CaptureError,
    DemoDataset,
    FrameTransform,
    InfeasibleCaptureError,
    Provenance,
    import_capture,
    replay_episode,
    score_dataset,
)
from skillcell.demos.capture import _quat_angle
from skillcell.demos.synthetic import line_arc_path, write_capture

ENV_ID = "skillcell/PegInsert-v0"
#: stated tolerance of the import round trip: the executed TCP at every control step, against the
#: noise-free path the capture was sampled from (0.1 mm / 0.1 deg tracker noise, 120 Hz, mm)
POSITION_TOLERANCE_MM = 1.0
ORIENTATION_TOLERANCE_DEG = 0.5
# The tracker's frame: 90 degrees about the cell's z, origin 350 mm / 50 mm / 900 mm off the cell's.
CAPTURE_FRAME = FrameTransform(translation=(350.0, 50.0, 900.0),
                               quat_wxyz=(math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)))
OPERATOR = Provenance(operator_id="welder-07", site="plant-2/cell-4", source_device="optical tracker, torch body",
                      consent=True, notes="synthetic seam for the round-trip test")


def reset_tcp_pose():
    env = gym.make(ENV_ID, randomize=False)
    env.reset(seed=0)
    cell = env.unwrapped
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, cell.data.site_xmat[cell.tcp_site])
    pos = cell.data.site_xpos[cell.tcp_site].copy()
    env.close()
    return pos, quat


@pytest.fixture(scope="module")
def seam(tmp_path_factory):
    """A line plus an arc above the block, from the reset TCP pose, peg down; 6 s at 120 Hz in mm."""
    folder = tmp_path_factory.mktemp("capture")
    pos, quat = reset_tcp_pose()
    duration = 6.0
    path = line_arc_path(pos, quat, duration, line_mm=25.0, radius_mm=12.0, drop_mm=5.0, tilt_deg=4.0)
    csv, _ = write_capture(folder / "seam.csv", path, duration, cell_id=ENV_ID, capture_to_cell=CAPTURE_FRAME,
                           length_unit="mm", rate_hz=120.0, position_noise_mm=0.1, orientation_noise_deg=0.1,
                           provenance=OPERATOR, signals={"current_a": lambda t: 180 + 5 * np.sin(t)})
    result = import_capture(csv, folder / "dataset", progress=False)
    return path, folder / "dataset", result


def test_import_reproduces_the_captured_path(seam):
    path, _, result = seam
    episode = result.episode
    assert episode.steps == 120 and episode.truncations[-1]  # 6 s at 20 Hz, ended by the capture's end
    times = np.arange(episode.steps + 1) * episode.control_dt
    true_pos, true_quat = path(times)
    position_error = 1e3 * np.linalg.norm(episode.tcp_pos - true_pos, axis=1)
    orientation_error = np.degrees(_quat_angle(episode.tcp_quat, true_quat))
    assert position_error.max() < POSITION_TOLERANCE_MM, position_error.max()
    assert orientation_error.max() < ORIENTATION_TOLERANCE_DEG, orientation_error.max()
    # The path really moved: a line of 25 mm and an arc, not a robot standing still.
    assert np.linalg.norm(true_pos[-1] - true_pos[0]) > 0.02

    report = result.report
    assert result.feasible and report["problems"] == []
    assert report["tracking"]["path_mm"]["max"] < POSITION_TOLERANCE_MM
    assert report["tracking"]["same_instant_mm"]["max"] < POSITION_TOLERANCE_MM
    assert report["tracking"]["lag_s"]["max"] < 0.05 and report["tracking"]["lag_measured_steps"] > 60
    assert report["out_of_reach"]["count"] == report["joint_limits"]["count"] == 0
    assert report["speed"]["translation"]["count"] == 0 and report["collisions"]["robot"]["count"] == 0
    assert report["capture"]["rows"] == 721 and report["capture"]["rate_hz"] == pytest.approx(120, rel=0.01)


def test_import_writes_episode_report_and_provenance(seam):
    _, out, result = seam
    dataset = DemoDataset(out)
    entry = dataset.entries[0]
    assert entry.source == "capture" and entry.operator_id == "welder-07" and entry.consent
    on_disk = yaml.safe_load((out / entry.report).read_text())
    assert on_disk["feasible"] is True and on_disk["capture"]["sha256"] == result.report["capture"]["sha256"]
    episode = dataset[0]
    # The env as executed: the sidecar's keywords and the import's overrides (control, run to end).
    assert episode.provenance == OPERATOR
    assert episode.env_kwargs == {"randomize": False, "overrides": result.report["execution"]["overrides"]}
    assert episode.env_kwargs["overrides"]["task"] == {"terminate_on_success": False}
    assert episode.notes["capture_file"] == "seam.csv"
    assert episode.extras["raw_pose"].shape == (721, 7) and episode.extras["target_pos"].shape == (121, 3)
    assert episode.extras["signal/current_a"].shape == (121,)
    assert episode.extras["raw_signal/current_a"][0] == pytest.approx(180.0)


def test_imported_episode_replays_exactly(seam):
    _, out, _ = seam
    file = out / DemoDataset(out).entries[0].file
    assert replay_episode(file, "state").bit_exact
    action = replay_episode(file, "action")
    assert action.passed and action.max_drift_mm == 0.0


def _straight(start, end, duration):
    quat = np.array([0.0, 1.0, 0.0, 0.0])

    def path(t):
        s = np.clip(np.asarray(t) / duration, 0.0, 1.0)[:, None]
        return start + s * (end - start), np.broadcast_to(quat, (len(s), 4)).copy()

    return path


def test_infeasible_capture_is_reported_not_hidden(tmp_path):
    start = np.array([0.45, 0.10, 0.96])
    # 250 mm in 1 s: two and a half times the 100 mm/s the actions allow, the last 50 mm out of the workspace.
    far = _straight(start, start + np.array([0.25, 0.0, 0.0]), 1.0)
    csv, _ = write_capture(tmp_path / "far.csv", far, 1.5, cell_id=ENV_ID, capture_to_cell=FrameTransform(),
                           length_unit="m")
    result = import_capture(csv, tmp_path / "out", progress=False)
    report = result.report
    assert not result.feasible
    assert report["speed"]["translation"]["count"] > 0
    assert report["speed"]["translation"]["peak_mm_s"] == pytest.approx(250, rel=0.1)  # the smoothed path's
    assert report["speed"]["commands_scaled_down"]["count"] > 0
    assert report["speed"]["commands_scaled_down"]["peak_requested_mm_s"] > 100
    assert report["outside_workspace"]["count"] > 0
    assert not report["tracking"]["lag_within_tolerance"] and report["tracking"]["lag_s"]["max"] > 0.2
    assert any("faster than the translation limit" in p for p in report["problems"])
    assert any("commands scaled down" in p for p in report["problems"])
    assert len(DemoDataset(tmp_path / "out")) == 1  # what the robot did is still recorded


def test_collision_with_the_workpiece_is_reported(tmp_path):
    start = np.array([0.47, 0.10, 0.96])  # 20 mm beside the hole: the peg comes down on the block
    csv, sidecar = write_capture(tmp_path / "down.csv", _straight(start, start - np.array([0.0, 0.0, 0.05]), 3.0),
                                 4.0, cell_id=ENV_ID, capture_to_cell=FrameTransform(), length_unit="m")
    report = import_capture(csv, tmp_path / "out", progress=False).report
    # An insertion cell's tool works in contact: no collision by default, but the force tells.
    assert report["collisions"]["tool_contact_steps"] > 0 and not report["collisions"]["tool_contact_is_collision"]
    assert any("tool/peg" in pair for pair in report["collisions"]["pairs"])
    force = report["tool_force"]
    assert force["peak_n"] > 5.0 and force["limit_n"] == 50.0  # the cell's F/T stop: 1.25 x the rated 40 N
    assert any("over the cell's" in p for p in report["problems"]) == (force["peak_n"] > force["limit_n"])
    sidecar.write_text(sidecar.read_text() + "tool_contact_is_collision: true\n")
    report = import_capture(csv, tmp_path / "out2", progress=False).report
    assert any("tool collisions" in p for p in report["problems"])


def test_a_captured_insertion_succeeds_in_the_sim_and_scores(tmp_path):
    start = np.array([0.45, 0.10, 0.96])  # 40 mm over the nominal hole; its bottom is 60 mm down

    def path(t):
        s = np.clip(np.asarray(t) / 4.0, 0.0, 1.0)[:, None]
        s = s * s * (3 - 2 * s)
        return start + s * np.array([0.0, 0.0, -0.061]), np.tile([0.0, 1.0, 0.0, 0.0], (len(s), 1))

    csv, _ = write_capture(tmp_path / "insert.csv", path, 5.0, cell_id=ENV_ID, capture_to_cell=FrameTransform(),
                           length_unit="mm", position_noise_mm=0.02, extra_sidecar={"tool_contact_is_collision": False})
    result = import_capture(csv, tmp_path / "out", progress=False)
    # Seated after about 4 s; the import runs on to the capture's end (held seated), as the operator did.
    assert result.episode.success and result.episode.truncations[-1] and not result.episode.terminations.any()
    assert result.report["ended_by"] == "end of capture" and result.report["executed_steps"] == 100
    assert 3.0 < result.report["task"]["first_success_s"] < 4.5
    assert result.feasible, result.report["problems"]  # seating the peg is the task's outcome, not a problem
    score = score_dataset(tmp_path / "out").episodes[0].skill
    assert score.metrics["success"] == 1.0 and score.score > 0.8


def test_unreachable_start_and_missing_consent_write_nothing(tmp_path):
    start = np.array([1.5, 0.10, 0.96])  # 1 m beyond the UR5e's reach
    csv, sidecar = write_capture(tmp_path / "far.csv", _straight(start, start, 1.0), 1.0, cell_id=ENV_ID,
                                 capture_to_cell=FrameTransform(), length_unit="m")
    with pytest.raises(InfeasibleCaptureError, match="outside the cell's workspace"):
        import_capture(csv, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()

    data = yaml.safe_load(sidecar.read_text())
    data["provenance"]["consent"] = False
    sidecar.write_text(yaml.safe_dump(data))
    with pytest.raises(CaptureError, match="consent"):
        import_capture(csv, tmp_path / "out", progress=False)
    data["provenance"]["consent"], data["cell_id"] = True, "skillcell/Nope-v0"
    sidecar.write_text(yaml.safe_dump(data))
    with pytest.raises(CaptureError, match="unknown cell"):
        import_capture(csv, tmp_path / "out", progress=False)
    sidecar.unlink()
    with pytest.raises(CaptureError, match="no sidecar"):
        import_capture(csv, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
