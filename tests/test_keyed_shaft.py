"""KeyedShaft physics: the hub of boxes holds the clearance, the key passes only through its keyway, a
misaligned key jams on the hub face and an aligned one slides in; a fitter's captured insertion imports."""

import math
from contextlib import contextmanager

import mujoco
import numpy as np
import pytest

from skillcell.config import ConfigError
from skillcell.demos import FrameTransform, import_capture, score_dataset
from skillcell.demos.synthetic import write_capture
from skillcell.envs.cells.keyed_shaft import KeyedShaftEnv, bore_boxes

ENV_ID = "skillcell/KeyedShaft-v0"


def make(clearance=0.2, grip_deg=0.0, **workpiece):
    return KeyedShaftEnv(clearance_mm=clearance, randomize=False,
                         overrides={"workpiece": {"key_grip_deg": grip_deg, **workpiece}})


@contextmanager
def every_substep(env):
    """Records the shaft-or-key-to-hub penetration after every physics substep (not just control steps)."""
    seen = []
    mujoco.set_mjcb_control(lambda m, d: seen.append(env.part_penetration()))
    try:
        yield seen
    finally:
        mujoco.set_mjcb_control(None)


def run(env, action, steps):
    infos = []
    for _ in range(steps):
        _, _, terminated, _, info = env.step(np.asarray(action, dtype=np.float64))
        assert info["instability"] == "", info["instability"]
        infos.append(info)
        if terminated:
            break
    return infos


def inside_any(boxes, points):
    """For each point (N, 3), whether it lies inside one of the boxes (hub frame)."""
    inside = np.zeros(len(points), bool)
    for _, half, pos, quat in boxes:
        R = np.empty(9)
        mujoco.mju_quat2Mat(R, quat)
        local = (points - pos) @ R.reshape(3, 3)
        inside |= (np.abs(local) <= half).all(axis=1)
    return inside


@pytest.mark.parametrize("chamfer", [0.0, 0.5])
def test_the_hub_is_solid_but_for_the_bore_and_the_keyway(chamfer):
    """Sampled on a grid: free inside the bore polygon and the keyway, solid everywhere else out to the hub's
    polygon, below the chamfer and in the rim above it."""
    r_shaft, clearance, width, height, key_clearance, depth, hub = 0.006, 2e-4, 0.004, 0.0018, 2e-4, 0.02, 0.025
    segments = 32
    boxes = bore_boxes(r_shaft, clearance, width, height, key_clearance, chamfer * 1e-3, depth, hub, segments)
    bore, slot = r_shaft + clearance / 2, (width + key_clearance) / 2
    slot_bottom = r_shaft + height + key_clearance
    xy = np.stack(np.meshgrid(np.linspace(-0.024, 0.024, 241), np.linspace(-0.024, 0.024, 241)), -1).reshape(-1, 2)
    theta = 2 * math.pi * (np.arange(segments) + 0.5) / segments
    face = xy @ np.stack([np.cos(theta), np.sin(theta)])  # distance along each face's normal
    in_keyway = (np.abs(xy[:, 1]) < slot - 1e-6) & (xy[:, 0] > 0) & (xy[:, 0] < slot_bottom - 1e-6)
    edge = 1e-6
    for z, radius in ((-depth + 1e-3, bore), (-chamfer * 1e-3 - 1e-4, bore), (-1e-5, bore + chamfer * 1e-3)):
        points = np.column_stack([xy, np.full(len(xy), z)])
        solid = inside_any(boxes, points)
        free = ((face < radius - edge).all(axis=1)) | in_keyway
        wall = ((face > radius + edge).any(axis=1) & ~in_keyway
                & ~((np.abs(xy[:, 1]) <= slot + edge) & (xy[:, 0] > 0) & (xy[:, 0] <= slot_bottom + edge))
                & (np.linalg.norm(xy, axis=1) < hub * math.cos(math.pi / segments) - edge))
        assert not (solid & free).any(), f"z={z}: a box intrudes into the bore or the keyway"
        assert solid[wall].all(), f"z={z}: {np.count_nonzero(~solid[wall])} wall points are in no box"
    # and the chamfer's slope: free above the line from (r, -c) to (r + c, 0) across a face, off the keyway
    if chamfer:
        c = chamfer * 1e-3
        n = np.array([math.cos(theta[segments // 2]), math.sin(theta[segments // 2]), 0.0])  # a face's normal
        s = np.linspace(bore, bore + c, 21)[1:-1]
        on_slope = s[:, None] * n + np.column_stack([0 * s, 0 * s, s - bore - c])
        up = np.array([0.0, 0.0, 2e-5])
        assert not inside_any(boxes, on_slope + up).any()
        assert inside_any(boxes, on_slope - up).all()


@pytest.mark.parametrize("clearance", [0.1, 0.2])
def test_pushing_beside_the_bore_never_penetrates_more_than_half_the_clearance(clearance):
    env = make(clearance)
    env.reset(seed=0)
    scale = env.config.control.max_translation_mm
    for _ in range(8):  # 15 mm away from the keyway: the whole shaft end over the hub face
        env.step(np.r_[-15.0 / 8 / scale, 0, 0, 0, 0, 0])
    run(env, np.zeros(6), 15)
    with every_substep(env) as penetration:
        infos = run(env, [0, 0, -1, 0, 0, 0], 40)
    assert max(i["contact_force_n"] for i in infos) > 100.0, "the robot did not push hard"
    assert infos[-1]["depth_mm"] < 0.1
    assert len(penetration) >= 40 * env.n_substeps
    assert max(penetration) < clearance * 1e-3 / 2
    assert not infos[-1]["physics_invalid"]


def test_a_misaligned_key_jams_on_the_hub_face():
    env = make(grip_deg=10.0)
    env.reset(seed=0)
    with every_substep(env) as penetration:
        infos = run(env, [0, 0, -0.3, 0, 0, 0], 100)
    final = infos[-1]
    # The pilot enters the bore; the key's end lands on the hub face 5 mm up the shaft and stops it there.
    assert final["depth_mm"] == pytest.approx(env.key_offset * 1e3, abs=0.2)
    assert not final["is_success"] and not final["key_engaged"]
    assert any(i["jammed"] for i in infos) and final["jam_time_s"] > 0.5
    assert abs(final["key_angle_deg"] - 10.0) < 2.0
    assert max(penetration) < env.penetration_budget


@pytest.mark.parametrize("window_fraction", [0.6, -0.6])
def test_an_aligned_key_slides_in_under_the_same_push(window_fraction):
    env = make()
    grip = window_fraction * env.key_capture_window_deg  # inside the key clearance's capture window
    env = make(grip_deg=grip)
    env.reset(seed=0)
    infos = run(env, [0, 0, -0.3, 0, 0, 0], 100)
    assert infos[-1]["is_success"] and infos[-1]["key_engaged"]
    assert not any(i["jammed"] for i in infos)
    assert infos[-1]["peak_insertion_force_n"] < env.config.limits.rated_insertion_force_n


def test_a_key_just_outside_the_capture_window_does_not_pass():
    """The keyway is as tight as declared: 1.4 windows off, the key stops at the face."""
    env = make()
    env = make(grip_deg=1.4 * env.key_capture_window_deg)
    env.reset(seed=0)
    infos = run(env, [0, 0, -0.3, 0, 0, 0], 60)
    assert infos[-1]["depth_mm"] == pytest.approx(env.key_offset * 1e3, abs=0.2)


def test_key_angle_follows_the_grip_and_the_wrist():
    env = make(grip_deg=12.0)
    _, info = env.reset(seed=0)
    assert info["key_angle_deg"] == pytest.approx(12.0, abs=1e-6) and info["shaft_rotation_deg"] == pytest.approx(0.0)
    turn = env.config.control.max_rotation_deg
    # +z of the cell is the bore axis upwards: turning the tool about it turns the key with it.
    infos = run(env, [0, 0, 0, 0, 0, 2.5 / turn], 2) + run(env, np.zeros(6), 15)
    assert infos[-1]["shaft_rotation_deg"] == pytest.approx(5.0, abs=0.2)
    assert infos[-1]["key_angle_deg"] == pytest.approx(17.0, abs=0.2)
    assert infos[-1]["search_rotation_deg"] == pytest.approx(5.0, abs=0.3)


def test_grip_angle_is_drawn_per_reset_within_its_range():
    env = KeyedShaftEnv()
    grips = []
    for seed in range(8):
        _, info = env.reset(seed=seed)
        grips.append(math.degrees(env.grip_angle))
        # the key turns with the grip and with the TCP's start turn relative to the hub (its yaw, +-2 deg)
        assert info["key_angle_deg"] == pytest.approx(grips[-1] + info["shaft_rotation_deg"], abs=0.1)
    assert max(abs(g) for g in grips) <= env.config.randomization.key_angle_deg
    assert np.std(grips) > 5.0
    env.reset(seed=3)
    again = math.degrees(env.grip_angle)
    assert again == grips[3]


@pytest.mark.parametrize(("key", "value"), [("key_width_mm", 11.0), ("hub_diameter_mm", 20.0),
                                            ("clearance_mm", 0.6)])
def test_workpiece_out_of_range_is_named(key, value):
    with pytest.raises(ConfigError, match=rf"workpiece\.{key}"):
        KeyedShaftEnv.load_config(overrides={"workpiece": {key: value}})


def test_a_fitters_captured_insertion_imports_and_seats(tmp_path):
    """A fitter lowers the shaft onto the hub (the key's end on the face), turns it 8 degrees to the keyway
    and pushes it home, captured at 120 Hz in mm; the cell's key sits 8 degrees off in the gripper."""
    grip = 8.0
    hub = np.array([0.45, 0.10, 0.92])

    def smooth(u):
        u = np.clip(u, 0.0, 1.0)
        return u * u * u * (10 - 15 * u + 6 * u * u)

    def path(t):
        depth = -0.040 + 0.045 * smooth(t / 2.0) + 0.0148 * smooth((t - 5.0) / 2.5)
        turn = -math.radians(grip) * smooth((t - 2.0) / 3.0)
        pos = hub + np.column_stack([np.zeros_like(t), np.zeros_like(t), -depth])
        # tool axis down (a half turn about x), then the turn about the bore axis
        quat = np.column_stack([np.zeros_like(t), np.cos(turn / 2), np.sin(turn / 2), np.zeros_like(t)])
        return pos, quat

    csv, _ = write_capture(tmp_path / "fit.csv", path, 9.0, cell_id=ENV_ID, capture_to_cell=FrameTransform(),
                           length_unit="mm", position_noise_mm=0.02,
                           env_kwargs={"randomize": False, "overrides": {"workpiece": {"key_grip_deg": grip}}})
    result = import_capture(csv, tmp_path / "out", progress=False)
    episode, report = result.episode, result.report
    assert episode.success and report["ended_by"] == "end of capture" and episode.truncations[-1]
    assert 5.5 < report["task"]["first_success_s"] < 8.0
    assert report["tracking"]["within_tolerance"] and report["tracking"]["path_mm"]["max"] < 0.5
    assert abs(episode.infos["key_angle_deg"][-1]) < 1.0 and episode.infos["key_engaged"][-1]
    score = score_dataset(tmp_path / "out").episodes[0].skill
    assert score.metrics["success"] == 1.0 and score.score > 0.8
