"""PegInsert physics: stiff contacts hold the clearance, tilted pegs jam, chamfers guide, F/T is right."""

import math
from contextlib import contextmanager

import mujoco
import numpy as np
import pytest

from skillcell.config import ConfigError, merge
from skillcell.envs.cells.peg_insert import PegInsertEnv, hole_boxes


def make(clearance=0.4, chamfer=0.0, mode="position", **overrides):
    """The cell, nominal. The contact model is tested under the hard pushes of the joint servos
    (position mode, past 100 N); the compliant mode's physics is ``tests/test_impedance.py``."""
    return PegInsertEnv(clearance_mm=clearance, chamfer_mm=chamfer, randomize=False,
                        overrides=merge({"control": {"mode": mode}}, overrides))


@contextmanager
def every_substep(env):
    """Records the peg-fixture penetration after every physics substep (not just control steps)."""
    seen = []
    mujoco.set_mjcb_control(lambda m, d: seen.append(env.peg_penetration()))
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


def move_task(env, dx_mm=0.0, dy_mm=0.0, tilt_deg=0.0):
    """Moves the TCP sideways in the hole frame and tilts it about the hole's x axis, then settles;
    returns the settling steps' infos."""
    scale = env.config.control.max_translation_mm
    # At most 0.4 of full speed per step, so that the lead limit never shortens the move.
    n = max(1, math.ceil(max(abs(dx_mm), abs(dy_mm)) / (0.4 * scale)))
    for _ in range(n):
        env.step(np.r_[dx_mm / n / scale, dy_mm / n / scale, 0, 0, 0, 0])
    rot = math.radians(tilt_deg) / math.radians(env.config.control.max_rotation_deg)
    for _ in range(max(1, math.ceil(abs(rot)))):
        env.step(np.r_[0, 0, 0, rot / max(1, math.ceil(abs(rot))), 0, 0])
    return run(env, np.zeros(6), 15)


@pytest.mark.parametrize("clearance", [0.1, 0.4, 1.0])
def test_pushing_beside_the_hole_never_penetrates_more_than_the_clearance(clearance):
    env = make(clearance)
    env.reset(seed=0)
    move_task(env, dx_mm=14.0)  # the whole peg face over the block top, none over the hole
    with every_substep(env) as penetration:
        infos = run(env, [0, 0, -1, 0, 0, 0], 40)
    assert max(i["contact_force_n"] for i in infos) > 50.0, "the robot did not push hard"
    assert infos[-1]["depth_mm"] < 0.1
    assert len(penetration) >= 40 * env.n_substeps
    assert max(penetration) < clearance * 1e-3
    assert max(penetration) < env.penetration_budget
    assert not infos[-1]["physics_invalid"]


@pytest.mark.parametrize("clearance", [0.1, 0.4])
def test_tilted_peg_jams_instead_of_sliding_in(clearance):
    env = make(clearance)
    env.reset(seed=0)
    assert move_task(env, tilt_deg=4.0)[-1]["tilt_deg"] == pytest.approx(4.0, abs=0.4)
    with every_substep(env) as penetration:
        infos = run(env, [0, 0, -0.3, 0, 0, 0], 100)
    final = infos[-1]
    assert not final["is_success"]
    # Geometry allows a 4 degree peg about (clearance + w (1 - cos)) / sin into the hole: 1.8 mm
    # at 0.1 mm clearance, 6.1 mm at 0.4 mm. It wedges there.
    assert final["depth_mm"] < 8.0, "the tilted peg should wedge near the opening"
    assert any(i["jammed"] for i in infos) and final["jam_time_s"] > 0.5
    assert final["peak_insertion_force_n"] > 50.0
    assert max(penetration) < env.penetration_budget


def test_aligned_peg_slides_in_under_the_same_push():
    env = make(0.1)
    env.reset(seed=0)
    move_task(env)
    infos = run(env, [0, 0, -0.3, 0, 0, 0], 100)
    assert infos[-1]["is_success"]
    assert not any(i["jammed"] for i in infos)


def test_a_stiff_arm_is_not_centred_by_the_chamfer_alone():
    """Position control is stiff: with 0.8 mm offset and no compliance the peg stops in the chamfer."""
    for chamfer in (0.0, 1.5):
        env = make(0.4, chamfer)
        env.reset(seed=0)
        move_task(env, dx_mm=0.8)
        infos = run(env, [0, 0, -0.3, 0, 0, 0], 80)
        depth = max(i["depth_mm"] for i in infos)
        assert depth < chamfer + 0.2, f"chamfer {chamfer}: reached {depth} mm"
        assert not infos[-1]["is_success"]
        if chamfer:
            assert infos[-1]["jammed"], "wedged in the chamfer under full push"


def test_clearance_sets_the_hole_width():
    for clearance in (0.1, 0.55, 1.0):
        env = make(clearance)
        m = env.model
        wall = m.geom("hole_wall_x_pos").id
        peg = m.geom("tool/peg").id
        inner_face = m.geom_pos[wall][0] - m.geom_size[wall][0]
        assert 2 * inner_face - 2 * m.geom_size[peg][0] == pytest.approx(clearance * 1e-3, abs=1e-9)


def test_hole_boxes_leave_the_opening_free_and_chamfer_on_the_edge():
    width, chamfer = 0.0124, 0.0015
    for name, half, pos, _ in hole_boxes(width, 0.02, chamfer, 0.07):
        if name.startswith(("wall", "rim")):
            axis = 0 if "_x_" in name else 1
            assert abs(pos[axis]) - half[axis] >= width / 2 - 1e-12
        if name.startswith("chamfer"):
            axis = 0 if "_x_" in name else 1
            # The sloped face passes through (w/2, -c) and (w/2 + c, 0).
            assert abs(pos[axis]) == pytest.approx(width / 2 + chamfer)
            assert pos[2] == pytest.approx(-chamfer)
            assert half[2] == pytest.approx(chamfer / math.sqrt(2))


def test_mating_geoms_have_no_margin():
    env = make()
    m = env.model
    mating = [m.geom("tool/peg").id, *np.flatnonzero(m.geom_bodyid == m.body("fixture").id)]
    assert all(m.geom_margin[g] == 0 for g in mating)


@pytest.mark.parametrize("key,value", [("clearance_mm", 0.05), ("clearance_mm", 1.5), ("chamfer_mm", -1.0)])
def test_workpiece_out_of_range_is_named(key, value):
    with pytest.raises(ConfigError, match=f"workpiece.{key}"):
        PegInsertEnv(overrides={"workpiece": {key: value}})


def test_randomization_stays_in_declared_ranges():
    env = PegInsertEnv()
    fixture = env.model.body("fixture")
    nominal, mocap = fixture.pos.copy(), fixture.mocapid[0]
    offsets, angles = [], []
    for seed in range(60):
        obs, _ = env.reset(seed=seed)
        offsets.append(env.data.mocap_pos[mocap] - nominal)
        decoded = env.decode_obs(obs)
        angles.append(np.degrees(np.linalg.norm(decoded["hole_rot"])))
        assert decoded["hole_pos"] == pytest.approx(offsets[-1], abs=1e-9)
    offsets = np.array(offsets)
    assert np.abs(offsets[:, :2]).max() <= 5e-3 and np.all(offsets[:, 2] == 0)
    assert np.abs(offsets[:, :2]).max() > 4e-3, "the range should be explored"
    assert max(angles) <= math.sqrt(3) * 2.0 + 1e-9 and max(angles) > 1.5
    fixed = make()
    fixed.reset(seed=7)
    assert np.array_equal(fixed.data.mocap_pos[mocap], nominal)


def test_wrench_is_zero_in_free_space_at_any_orientation():
    env = make()
    env.reset(seed=0)
    assert np.abs(env.wrench_tool).max() < 1e-6
    for _ in range(8):
        env.step(np.r_[0, 0, 0, 1.0, 0.5, 0])
    assert run(env, np.zeros(6), 30)[-1]["tilt_deg"] > 10
    assert np.abs(env.wrench_tool[:3]).max() < 0.05
    assert np.abs(env.wrench_tool[3:]).max() < 0.005


def test_wrench_matches_the_contact_forces_when_pushing():
    env = make()
    env.reset(seed=0)
    move_task(env, dx_mm=14.0)
    run(env, [0, 0, -0.3, 0, 0, 0], 50)
    infos = run(env, np.zeros(6), 20)  # come to rest in contact
    m, d = env.model, env.data
    total = np.zeros(3)
    force = np.zeros(6)
    for i in range(d.ncon):
        contact = d.contact[i]
        if env.model.geom_bodyid[contact.geom1] == env.tool_body or m.geom_bodyid[contact.geom2] == env.tool_body:
            mujoco.mj_contactForce(m, d, i, force)
            f_world = contact.frame.reshape(3, 3).T @ force[:3]
            # contact force acts on geom2 along +normal; we want the force the tool applies
            total += f_world if m.geom_bodyid[contact.geom1] == env.tool_body else -f_world
    R_world_ft = d.site_xmat[env.ft_site].reshape(3, 3)
    measured_world = R_world_ft @ env.wrench_tool[:3]
    assert np.linalg.norm(total) > 20.0
    assert measured_world == pytest.approx(total, rel=0.05, abs=0.5)
    assert infos[-1]["axial_force_n"] > 20.0


def test_exceeding_the_penetration_budget_is_never_a_success():
    env = make(0.1, task={"penetration_budget": 0.02})  # 2 micrometres
    env.reset(seed=0)
    move_task(env, dx_mm=14.0)
    infos = run(env, [0, 0, -1, 0, 0, 0], 40)
    assert infos[-1]["physics_invalid"]
    assert infos[-1]["max_penetration_mm"] > 0.002
    assert not infos[-1]["is_success"]


def test_going_down_beside_the_block_is_not_a_success():
    """Depth is measured along the hole axis; only a tip inside the hole can be seated."""
    env = make()
    env.reset(seed=0)
    move_task(env, dx_mm=60.0)  # past the edge of the 70 mm block
    infos = run(env, [0, 0, -1, 0, 0, 0], 30)
    assert infos[-1]["depth_mm"] > 21.0
    assert not any(i["is_success"] for i in infos)
