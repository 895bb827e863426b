"""Capture import with captures as a tracker records a real operator: tremor, drifting speed, a rotated
tracker frame, a tracked body behind the tool tip, dropped samples, millimetres at 120 Hz.

The captures are made here, from the cell's geometry and a model of a person's hand, and written
as a tracker's software writes them (its own frame, its own quaternion convention), not through
the importer's synthetic path helpers. Each test names the operator's case of issue 14.
"""

import math
import os
import subprocess
import sys
from dataclasses import fields

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import yaml

from skillcell.demos import (
    DemoDataset,
    InfeasibleCaptureError,
    ScaleError,
    ToolAxisError,
    import_capture,
    replay_episode,
)
from skillcell.demos.capture import Execution, Feasibility, Retargeted, assess, execute, read_capture, retarget
from skillcell.envs import ControlConfig

WELD = "skillcell/WeldSeam-v0"
PEG = "skillcell/PegInsert-v0"
RATE_HZ = 120.0
#: a tracker stand beside the cell: 1.2 m along x, 0.4 m along -y, turned 35 deg about a tilted axis
STAND = {"translation_mm": [1200.0, -400.0, 150.0], "axis": [0.2, 0.1, 1.0], "angle_deg": 35.0}
#: the tracked rigid body sits this far behind the TCP along the tool axis
BODY_BEHIND_TCP_MM = 120.0
OPERATOR = {"operator_id": "welder-12", "site": "test", "source_device": "optical tracker, tool rigid body",
            "consent": True, "notes": "modelled in the test"}


# ---------------------------------------------------------------- a person's hand and a tracker

def rotation(axis, angle_deg) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, float) / np.linalg.norm(axis), math.radians(angle_deg))
    return quat_matrix(quat)


def turned(rotvec, R) -> np.ndarray:
    """``R`` turned by the rotation vector ``rotvec`` (rad), in the cell frame."""
    angle = float(np.linalg.norm(rotvec))
    return rotation(rotvec, math.degrees(angle)) @ R if angle > 0 else R


def quat_matrix(quat) -> np.ndarray:
    m = np.empty(9)
    mujoco.mju_quat2Mat(m, np.asarray(quat, float))
    return m.reshape(3, 3)


def matrix_quat(R) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(R, float).ravel())
    return quat


def min_jerk(u):
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10 - 15 * u + 6 * u**2)


def hand(rng, t, *, tremor_mm=0.1, wobble_deg=0.3):
    """Tremor (a few incoherent components at 8-11 Hz, ``tremor_mm`` rms) and a slow tilt wander."""
    shake = np.zeros((len(t), 3))
    for _ in range(4):
        shake += np.sin(2 * math.pi * rng.uniform(8.0, 11.0) * t[:, None] + rng.uniform(0, 2 * math.pi, 3))
    shake *= tremor_mm * 1e-3 / np.sqrt((shake**2).mean())
    phases = rng.uniform(0, 2 * math.pi, 3)
    wander = math.radians(wobble_deg) * np.sin(2 * math.pi * 0.4 * t[:, None] + phases) * [1.0, 1.0, 0.3]
    return shake, wander


def drifting_time(rng, t, drift=0.04):
    """The operator's own clock: their pace drifts by ``drift`` around the plan (monotonic)."""
    return t + drift * 2.0 / (2 * math.pi * 0.3) * np.sin(2 * math.pi * 0.3 * t + rng.uniform(0, 2 * math.pi))


def sample_times(rng, duration_s, dropped=()):
    t = np.arange(round(duration_s * RATE_HZ) + 1) / RATE_HZ
    t[1:-1] += rng.uniform(-0.0004, 0.0004, len(t) - 2)  # clock jitter
    keep = np.ones(len(t), bool)
    for start, length in dropped:  # the markers were occluded: no rows at all
        keep &= ~((t > start) & (t < start + length))
    return t[keep]


def write_tracker_capture(folder, stem, t, p_tcp, R_tcp, *, cell_id, rng, signals=None, body_behind_mm=0.0,
                          stand=STAND, unit="mm", frame_unit=None, quat_order="wxyz", extra=None):
    """The tracked body's pose in the stand's frame, with tracker noise, as CSV + sidecar.

    ``unit``: what the numbers in the file are in (``mm``, ``in``); the sidecar always declares
    ``length_unit: mm`` unless ``extra`` says otherwise, so a wrong unit is the operator's mistake.
    ``frame_unit``: the unit the stand's translation and the body offset are written in (default ``unit``).
    ``quat_order``: how the tracker software lays the quaternion into the columns ``qw, qx, qy, qz``.
    """
    per_m = {"mm": 1e3, "in": 1e3 / 25.4}
    frame_unit = frame_unit or unit
    R_stand = rotation(stand["axis"], stand["angle_deg"])
    origin = np.asarray(stand["translation_mm"]) * 1e-3
    rows = []
    for i in range(len(t)):
        p_body = p_tcp[i] - R_tcp[i][:, 2] * body_behind_mm * 1e-3
        p = R_stand.T @ (p_body - origin) * per_m[unit] + rng.normal(0.0, 0.05e-3 * per_m[unit], 3)
        jitter = rotation(rng.normal(size=3), rng.normal(0.0, 0.05))
        q = matrix_quat(R_stand.T @ R_tcp[i] @ jitter) * (1 if rng.random() < 0.5 else -1)
        q = q if quat_order == "wxyz" else q[[1, 2, 3, 0]]
        rows.append([t[i], *p, *q, *((signals or {})[k][i] for k in (signals or {}))])
    csv = folder / f"{stem}.csv"
    header = ["t", "x", "y", "z", "qw", "qx", "qy", "qz", *(signals or {})]
    np.savetxt(csv, np.array(rows), delimiter=",", header=",".join(header), comments="",
               fmt=["%.6f"] + ["%.4f"] * 3 + ["%.7f"] * 4 + ["%.4g"] * len(signals or {}))
    stand_quat = matrix_quat(R_stand)
    sidecar = {"cell_id": cell_id, "length_unit": "mm",
               "capture_to_cell": {"translation": (origin * per_m[frame_unit]).tolist(),
                                   "quat_wxyz": stand_quat.tolist()},
               "tcp_in_tool": {"translation": [0.0, 0.0, body_behind_mm * 1e-3 * per_m[frame_unit]]},
               "provenance": OPERATOR, "samples": len(t), **(extra or {})}
    csv.with_suffix(".yaml").write_text(yaml.safe_dump(sidecar, sort_keys=False))
    return csv


# ---------------------------------------------------------------- the cells as a person sees them

@pytest.fixture(scope="module")
def weld_cell():
    """The nominal fillet seam and the torch's start pose, as a welder would measure them."""
    env = gym.make(WELD, randomize=False)
    env.reset(seed=0)
    cell = env.unwrapped
    p_start, R_seam = cell.metrics.frame(0.0)  # a straight seam: one frame all along
    info = {"p_seam": p_start.copy(), "R_seam": R_seam.copy(), "R_torch": R_seam @ cell.R_task_tcp_nominal,
            "length": cell.path.length, "ctwd_mm": cell.wps.nominal("ctwd_mm"),
            "speed": cell.wps.nominal("travel_speed_mm_s") * 1e-3,
            "tcp": cell.data.site_xpos[cell.tcp_site].copy()}
    env.close()
    return info


def free_move(weld_cell, peak_speed_mm_s, rng, *, length_mm=150.0, dropped=()):
    """The torch carried 150 mm along the seam, 40 mm above it, in a human reach (minimum jerk)."""
    duration = 1.875 * length_mm / peak_speed_mm_s  # a minimum-jerk reach peaks at 1.875x its mean speed
    t = sample_times(rng, duration + 1.4, dropped)
    own = drifting_time(rng, t, drift=0.01)
    shake, wander = hand(rng, t)
    R = weld_cell["R_torch"]
    start = weld_cell["p_seam"] - R[:, 2] * 40e-3
    p = start + np.outer(min_jerk((own - 0.7) / duration), weld_cell["R_seam"][:, 0]) * length_mm * 1e-3 + shake
    R_tcp = np.array([turned(w, R) for w in wander])
    true_speed = np.linalg.norm(np.diff(p - shake, axis=0), axis=1) / np.diff(t)
    return t, p, R_tcp, float(true_speed.max() * 1e3)


def weld_pass(weld_cell, rng, *, seam_mm=40.0):
    """Approach, strike, travel with drifting speed and wandering angles, crater fill, arc off, back away, hold."""
    speed = weld_cell["speed"]
    strike, dwell, fill = 1.5, 0.3, 0.6
    travel = seam_mm * 1e-3 / speed
    end = strike + dwell + travel
    t = sample_times(rng, end + fill + 2.0)
    own = drifting_time(rng, t, drift=0.03)
    s = np.clip(speed * (own - strike - dwell), 0.0, seam_mm * 1e-3)
    arc = ((t >= strike) & (t <= end + fill)).astype(float)
    back_off = 25.0 * (1 - min_jerk((t - 0.3) / (strike - 0.3))) + 20.0 * min_jerk((t - end - fill) / 1.0)
    shake, wander = hand(rng, t, tremor_mm=0.08)
    R = weld_cell["R_torch"]
    aim = weld_cell["p_seam"] + np.outer(s, weld_cell["R_seam"][:, 0])
    p = aim - R[:, 2] * (weld_cell["ctwd_mm"] + back_off)[:, None] * 1e-3 + shake
    R_tcp = np.array([turned(w, R) for w in wander])
    return t, p, R_tcp, {"arc_on": arc, "current_a": arc * 185.0}, end


def short_seam(seam_mm):
    """env_kwargs for the fillet cell with a seam of ``seam_mm`` from the packaged seam's start."""
    half = 75.0
    return {"randomize": False, "overrides": {"seam": {"start_mm": [0.0, half], "segments": [
        {"type": "line", "to_mm": [0.0, half - seam_mm]}]}}}


# ---------------------------------------------------------------- 2. import that follows people

def test_a_reach_at_76_mm_s_is_tracked_with_a_small_reported_lag(weld_cell, tmp_path):
    rng = np.random.default_rng(1)
    t, p, R, peak = free_move(weld_cell, 76.0, rng)
    assert 70.0 < peak < 82.0  # the operator's hand, tremor aside: below the 100 mm/s command limit
    csv = write_tracker_capture(tmp_path, "reach", t, p, R, cell_id=WELD, rng=rng,
                                body_behind_mm=BODY_BEHIND_TCP_MM)
    result = import_capture(csv, tmp_path / "out", progress=False)
    report = result.report
    assert result.feasible, report["problems"]
    track = report["tracking"]
    assert track["path_mm"]["max"] < 1.0 and track["lag_s"]["max"] < 0.05 and track["lag_measured_steps"] > 20
    assert report["speed"]["commands_scaled_down"]["count"] == 0 and report["speed"]["translation"]["count"] == 0
    assert 65.0 < report["speed"]["translation"]["peak_mm_s"] < 82.0
    assert report["execution"]["overrides"]["control"]["velocity_feedforward"] == 1.0


def test_a_reach_at_150_mm_s_reports_speed_problems_with_their_peak_speed(weld_cell, tmp_path):
    rng = np.random.default_rng(2)
    t, p, R, peak = free_move(weld_cell, 150.0, rng)
    assert 140.0 < peak < 160.0
    csv = write_tracker_capture(tmp_path, "rush", t, p, R, cell_id=WELD, rng=rng, body_behind_mm=BODY_BEHIND_TCP_MM)
    result = import_capture(csv, tmp_path / "out", progress=False)
    report, speed = result.report, result.report["speed"]
    assert not result.feasible
    assert speed["translation"]["count"] > 0 and speed["translation"]["peak_mm_s"] == pytest.approx(peak, rel=0.1)
    scaled = speed["commands_scaled_down"]
    assert scaled["count"] > 0 and scaled["peak_requested_mm_s"] > 110.0
    assert any(f"commands scaled down to the action limits (first at {scaled['first_times_s'][0]} s; asked for up "
               f"to {scaled['peak_requested_mm_s']:.1f} mm/s" in p for p in report["problems"])
    assert any(f"(peak {speed['translation']['peak_mm_s']:.1f} mm/s, limit 100 mm/s per axis)" in p
               for p in report["problems"])
    assert report["tracking"]["lag_s"]["max"] > report["tracking"]["lag_tolerance_s"]
    assert len(DemoDataset(tmp_path / "out")) == 1  # what the robot did is recorded all the same


# ---------------------------------------------------------------- 3. human mistakes caught and named

def test_quaternions_written_x_y_z_w_are_refused_as_such(weld_cell, tmp_path):
    rng = np.random.default_rng(3)
    t, p, R, _ = free_move(weld_cell, 40.0, rng, length_mm=40.0)
    for cell_id, behind in ((WELD, BODY_BEHIND_TCP_MM), (WELD, 0.0)):
        csv = write_tracker_capture(tmp_path, f"xyzw_{behind:.0f}", t, p, R, cell_id=cell_id, rng=rng,
                                    body_behind_mm=behind, quat_order="xyzw")
        out = tmp_path / f"never_{behind:.0f}"
        with pytest.raises(ToolAxisError, match="quaternions look x,y,z,w; set quat_order: xyzw"):
            import_capture(csv, out, progress=False)
        assert not out.exists()
        sidecar = csv.with_suffix(".yaml")
        sidecar.write_text(sidecar.read_text() + "quat_order: xyzw\n")
        assert import_capture(csv, tmp_path / f"ok_{behind:.0f}", progress=False).feasible


def test_a_fitters_x_y_z_w_quaternions_are_refused_too(tmp_path):
    env = gym.make(PEG, randomize=False)
    env.reset(seed=0)
    cell = env.unwrapped
    start, R_peg = cell.data.site_xpos[cell.tcp_site].copy(), cell.data.site_xmat[cell.tcp_site].reshape(3, 3).copy()
    env.close()
    rng = np.random.default_rng(4)
    t = sample_times(rng, 2.0)
    shake, _ = hand(rng, t)
    p = start + np.outer(min_jerk(t / 2.0), [0.0, 0.02, -0.01]) + shake
    csv = write_tracker_capture(tmp_path, "fit", t, p, np.repeat(R_peg[None], len(t), 0), cell_id=PEG, rng=rng,
                                quat_order="xyzw")
    with pytest.raises(ToolAxisError, match=r"points \d+ deg \(median\) away from the cell's nominal tool axis "
                                            r".* quaternions look x,y,z,w"):
        import_capture(csv, tmp_path / "never", progress=False)


def test_inches_declared_as_millimetres_are_refused_naming_inches(weld_cell, tmp_path):
    rng = np.random.default_rng(5)
    t, p, R, signals, _ = weld_pass(weld_cell, rng)
    kwargs = {"cell_id": WELD, "rng": rng, "signals": signals, "extra": {"env_kwargs": short_seam(40.0)}}
    # All of it in inches (the stand's position too): the path lands far outside the cell's workspace.
    csv = write_tracker_capture(tmp_path, "all_inches", t, p, R, unit="in", **kwargs)
    with pytest.raises(ScaleError, match=r"outside the cell's workspace .* looks like inches; set length_unit: in"):
        import_capture(csv, tmp_path / "never", progress=False)
    # The samples in inches, the stand measured in mm: named as such.
    csv = write_tracker_capture(tmp_path, "samples_inches", t, p, R, unit="in", frame_unit="mm", **kwargs)
    with pytest.raises(ScaleError, match="the samples look like inches while capture_to_cell"):
        import_capture(csv, tmp_path / "never", progress=False)
    # The capture frame on the workpiece datum: inside the workspace, but a seam-length path 25.4x too small.
    datum = {"translation_mm": (weld_cell["p_seam"] * 1e3).tolist(), "axis": [0.0, 0.0, 1.0], "angle_deg": 90.0}
    csv = write_tracker_capture(tmp_path, "datum_inches", t, p, R, unit="in", frame_unit="mm", stand=datum, **kwargs)
    with pytest.raises(ScaleError, match=r"spans 2\.\d+ mm .* under 25% of the task's 40 mm; read in inches it "
                                         r"spans \d+ mm: looks like inches"):
        import_capture(csv, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
    sidecar = csv.with_suffix(".yaml")
    data = yaml.safe_load(sidecar.read_text())
    data["length_unit"] = "in"
    data["capture_to_cell"]["translation"] = [v / 25.4 for v in data["capture_to_cell"]["translation"]]
    sidecar.write_text(yaml.safe_dump(data))
    assert import_capture(csv, tmp_path / "in_inches", progress=False).feasible


def test_a_path_in_the_wrong_place_is_refused_naming_the_frame(weld_cell, tmp_path):
    rng = np.random.default_rng(6)
    t, p, R, _ = free_move(weld_cell, 40.0, rng, length_mm=40.0)
    csv = write_tracker_capture(tmp_path, "moved", t, p, R, cell_id=WELD, rng=rng)
    data = yaml.safe_load(csv.with_suffix(".yaml").read_text())
    data["capture_to_cell"]["translation"][2] += 600.0  # the stand's height written wrong
    csv.with_suffix(".yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(InfeasibleCaptureError, match=r"outside the cell's workspace .* in no other length unit: "
                                                     r"check capture_to_cell"):
        import_capture(csv, tmp_path / "never", progress=False)


def test_refusals_exit_2_and_write_nothing(weld_cell, tmp_path):
    rng = np.random.default_rng(7)
    t, p, R, _ = free_move(weld_cell, 40.0, rng, length_mm=40.0)
    csv = write_tracker_capture(tmp_path, "xyzw", t, p, R, cell_id=WELD, rng=rng, quat_order="xyzw")
    out = tmp_path / "dataset"
    done = subprocess.run([sys.executable, "-m", "skillcell", "demos", "import", str(csv), "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "quaternions look x,y,z,w; set quat_order: xyzw" in done.stderr
    assert not out.exists()


# ---------------------------------------------------------------- 4. the whole capture kept; 5. gaps in seconds

def test_the_whole_weld_pass_is_kept_and_success_is_judged_at_the_seam_end(weld_cell, tmp_path):
    rng = np.random.default_rng(8)
    t, p, R, signals, seam_end_s = weld_pass(weld_cell, rng)
    csv = write_tracker_capture(tmp_path, "pass", t, p, R, cell_id=WELD, rng=rng, signals=signals,
                                body_behind_mm=BODY_BEHIND_TCP_MM, extra={"env_kwargs": short_seam(40.0)})
    result = import_capture(csv, tmp_path / "out", progress=False)
    report, episode = result.report, result.episode
    assert result.feasible, report["problems"]
    assert report["ended_by"] == "end of capture" and episode.steps == report["steps"] == int(t[-1] / 0.05 + 1e-9)
    first = report["task"]["first_success_s"]
    assert report["task"]["success"] and first == pytest.approx(seam_end_s, abs=0.4)
    arc = np.asarray(episode.infos["arc_on"], bool)
    after = np.arange(episode.steps + 1) * episode.control_dt > first + 0.1
    assert arc[after].any() and not arc[-1]  # the crater fill, then the arc off and the torch backed away
    assert episode.infos["is_success"][after].all()  # judged at the seam end, kept after it
    assert episode.infos["aim_offset_mm"][-1] > 15.0  # backed away: not cut off as leaving the seam
    file = tmp_path / "out" / DemoDataset(tmp_path / "out").entries[0].file
    assert replay_episode(file, "state").bit_exact
    action = replay_episode(file, "action")  # the run-to-end option is in the episode's env kwargs
    assert action.passed and action.replayed_steps == episode.steps and action.max_drift_mm == 0.0

    stopped = import_capture(csv, tmp_path / "stopped", run_to_end=False, progress=False)
    assert stopped.report["ended_by"] == "task success" and stopped.episode.steps < episode.steps
    assert stopped.episode.steps * stopped.episode.control_dt == pytest.approx(first, abs=0.051)


def test_gaps_are_reported_in_seconds(weld_cell, tmp_path):
    rng = np.random.default_rng(9)
    t, p, R, _ = free_move(weld_cell, 60.0, rng, dropped=((1.0, 0.2), (2.5, 0.05)))
    csv = write_tracker_capture(tmp_path, "occluded", t, p, R, cell_id=WELD, rng=rng,
                                body_behind_mm=BODY_BEHIND_TCP_MM)
    result = import_capture(csv, tmp_path / "out", progress=False)
    gaps = result.report["capture"]["gaps"]
    assert gaps["count"] == 2 and gaps["threshold_s"] == pytest.approx(2 / RATE_HZ, rel=0.05)
    (first, second) = gaps["gaps"]
    # Each starts at the last sample before the occlusion (within a sample period and the clock's jitter).
    assert first["start_s"] == pytest.approx(1.0, abs=0.01) and first["length_s"] == pytest.approx(0.2, abs=0.02)
    assert second["start_s"] == pytest.approx(2.5, abs=0.01)
    assert second["length_s"] == pytest.approx(0.05, abs=0.02)
    assert gaps["longest_s"] == first["length_s"]
    assert result.feasible, result.report["problems"]  # a gap is interpolated over, not a problem


# ---------------------------------------------------------------- 12.7: stages with typed records

def test_the_import_runs_as_four_stages_with_typed_records(weld_cell, tmp_path):
    rng = np.random.default_rng(10)
    t, p, R, _ = free_move(weld_cell, 50.0, rng, length_mm=50.0)
    csv = write_tracker_capture(tmp_path, "stages", t, p, R, cell_id=WELD, rng=rng, body_behind_mm=BODY_BEHIND_TCP_MM)
    capture = read_capture(csv)
    plan = retarget(capture)
    assert isinstance(plan, Retargeted) and plan.capture is capture
    assert plan.pos.shape == (plan.steps + 1, 3) and plan.kinematics.qpos.shape == (plan.steps + 1, 6)
    run = execute(plan, progress=False)
    assert isinstance(run, Execution) and run.executed_steps == plan.steps
    verdict = assess(plan, run)
    assert isinstance(verdict, Feasibility) and verdict.feasible and verdict.report["feasible"]
    assert verdict.max_lag_s == pytest.approx(verdict.report["tracking"]["lag_s"]["max"], abs=1e-4)
    assert verdict.report == import_capture(csv, tmp_path / "out", progress=False).report  # deterministic


# ---------------------------------------------------------------- 2. contact phases run compliantly

@pytest.mark.skipif("mode" not in {f.name for f in fields(ControlConfig)},
                    reason="needs the compliant control mode (control.mode: impedance, issue 14.1), not in "
                           "ControlConfig yet")
def test_a_spiral_search_within_the_clearance_ends_seated(tmp_path):
    """The fitter presses the peg lightly on the surface 0.6 mm off the axis of a 0.1 mm-per-side hole,
    spirals outwards over the opening (passing within 0.06 mm of its axis) and pushes home from where the
    spiral ends, 0.2 mm off the axis: as a person's hand does, the arm must let the peg drop in on the way."""
    env = gym.make(PEG, randomize=False, clearance_mm=0.2)
    env.reset(seed=0)
    cell = env.unwrapped
    hole = cell.data.site_xpos[cell.task_site].copy()
    R_hole = cell.data.site_xmat[cell.task_site].reshape(3, 3).copy()
    R_peg = cell.data.site_xmat[cell.tcp_site].reshape(3, 3).copy()
    start, depth = cell.data.site_xpos[cell.tcp_site].copy(), cell.hole_depth
    env.close()
    rng = np.random.default_rng(11)
    t = sample_times(rng, 11.0)
    axis, x, y = R_hole[:, 2], R_hole[:, 0], R_hole[:, 1]
    landing = hole + 0.6e-3 * x - 0.3e-3 * axis  # pressed 0.3 mm onto the surface, off the axis
    p = start + np.outer(min_jerk(t / 3.0), landing - start)
    u = np.clip((t - 3.5) / 3.0, 0.0, 1.0)  # three turns, the radius growing to 0.8 mm
    radius, phase = 0.8e-3 * u, 2 * math.pi * 3 * u + math.pi
    p += np.outer(radius * np.cos(phase), x) + np.outer(radius * np.sin(phase), y)
    p -= np.outer(min_jerk((t - 7.0) / 3.0) * (depth + 0.3e-3), axis)
    p += hand(rng, t, tremor_mm=0.03)[0]
    lateral = np.linalg.norm((p - hole) - np.outer((p - hole) @ axis, axis), axis=1)
    searching = (t > 3.5) & (t < 6.5)
    assert lateral[searching].min() < 0.1e-3 < 0.15e-3 < lateral[(t > 6.5) & (t < 7.0)].min()
    csv = write_tracker_capture(tmp_path, "spiral", t, p, np.repeat(R_peg[None], len(t), 0), cell_id=PEG, rng=rng,
                                body_behind_mm=60.0, extra={"env_kwargs": {"randomize": False, "clearance_mm": 0.2}})
    result = import_capture(csv, tmp_path / "out", progress=False)
    assert result.report["execution"]["control_mode"] == "impedance"
    assert result.episode.success and result.report["task"]["first_success_s"] is not None
