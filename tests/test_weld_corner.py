"""WeldSeamCorner: the box section's geometry, the seam it gives, and the expert through the corner.

The registry-wide tests (test_cells, test_envs, test_contract, test_expert_markov, test_golden) cover
the cell as they cover every cell; these check what is particular to a corner.
"""

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.config import ConfigError
from skillcell.envs.cells.weld_corner import WeldCornerEnv
from skillcell.envs.weld import torch_rotation
from skillcell.policies import make_expert

ENV_ID = "skillcell/WeldSeamCorner-v0"


def expert_pass(variant="rounded", tier="D1", seed=0):
    """One expert episode: per step its info and the torch's clearance to the tube and plate (mm)."""
    env = gym.make(ENV_ID, variant=variant, tier=tier)
    cell = env.unwrapped
    expert = make_expert(env)
    obs, _ = env.reset(seed=seed)
    steps, done = [], False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        steps.append({**info, "clearance_mm": cell.tool_clearance() * 1e3})
        done = terminated or truncated
    return cell, steps


def test_the_seam_follows_the_tube_and_its_corner_radius():
    rounded, sharp = WeldCornerEnv(randomize=False), WeldCornerEnv(variant="sharp", randomize=False)
    r = 2.5 * 8.0  # cell.yaml: 2.5 wall thicknesses of 8 mm (EN 10219-2: 2.0-3.0 t)
    arc = 0.5 * math.pi * r
    arc *= 1.0 - (arc / math.ceil(arc) / r) ** 2 / 24  # chords of samples at most 1 mm apart (`SeamPath`)
    assert rounded.path.length * 1e3 == pytest.approx(60.0 + 60.0 + arc, abs=1e-4)
    assert sharp.path.length * 1e3 == pytest.approx(120.0, abs=1e-9)
    # The rounded seam turns steadily at 1/r over the corner, the sharp one at its vertex only.
    first, last = rounded.corner_span_mm
    assert (first, last) == pytest.approx((60.0, 60.0 + 0.5 * math.pi * r))
    heading = np.unwrap(np.arctan2(rounded.path.tangents[:, 1], rounded.path.tangents[:, 0]))
    s_mm = rounded.path.s * 1e3
    inside = (s_mm > first + 2) & (s_mm < last - 2)
    assert np.gradient(heading, s_mm)[inside] == pytest.approx(1.0 / r, rel=1e-3)
    turn = np.degrees(np.diff(np.unwrap(np.arctan2(sharp.path.tangents[:, 1], sharp.path.tangents[:, 0]))))
    assert np.count_nonzero(np.abs(turn) > 1e-9) == 1 and turn.sum() == pytest.approx(90.0)


@pytest.mark.parametrize("variant", ["rounded", "sharp"])
def test_a_ray_at_the_corner_meets_the_tube_wall_on_the_seam(variant):
    """The walls are collision geometry where the seam says: a level ray towards the corner, just above the
    plate, hits the tube's outside at the seam point in the middle of the corner."""
    env = WeldCornerEnv(variant=variant, randomize=False)
    env.reset(seed=0)
    metrics = env.metrics
    first, last = env.corner_span_mm
    p_seam, R_world_seam = metrics.frame(0.5 * (first + last) * 1e-3 + 1e-6)
    outward = -R_world_seam[:, 1] if variant == "rounded" else -(R_world_seam[:, 0] + R_world_seam[:, 1])
    outward /= np.linalg.norm(outward)
    start = p_seam + metrics.normal_world * 0.002 + 0.05 * outward
    group = np.array([0, 1, 0, 0, 0, 0], np.uint8)
    geom = np.zeros(1, np.int32)
    distance = mujoco.mj_ray(env.model, env.data, start, -outward, group, 1, -1, geom)
    assert env.model.geom(geom[0]).name.startswith("mate_plate_")
    assert distance == pytest.approx(0.05, abs=3e-5)  # 5 degree pieces of a 20 mm radius: 0.02 mm inside


def test_the_torch_can_hit_the_tube():
    env = WeldCornerEnv(randomize=False)
    env.reset(seed=0)
    clear = env.tool_clearance()
    assert clear > 0.001
    # The tube moved onto the nozzle: the clearance the envelope checks goes through it.
    mate = env.model.body_mocapid[env.model.body("workpiece_mate").id]
    nozzle = env.data.geom_xpos[env.model.geom("tool/nozzle_tip").id]
    p_seam, R_world_seam = env.metrics.frame(0.0)
    env.data.mocap_pos[mate] += (nozzle - p_seam) @ R_world_seam[:, 1] * R_world_seam[:, 1] * 1.0
    env.data.mocap_pos[mate] += -R_world_seam[:, 1] * 0.002
    mujoco.mj_forward(env.model, env.data)
    assert env.tool_clearance() < 0.0


def test_a_torch_moved_around_the_corner_measures_its_angles_and_ctwd():
    """Kinematically around the 20 mm corner at known angles: the seam frame turns with the tangent, and
    the CTWD ray cast finds the root between the tube and the plate all the way round."""
    env = WeldCornerEnv(randomize=False)
    env.reset(seed=0)
    metrics, dt = env.metrics, env.control_dt
    R_seam_tcp = torch_rotation(43.0, 8.0)
    first, last = env.corner_span_mm
    speed = 7.0
    for k in range(int((last - first + 20.0) / (speed * dt))):
        s = (first - 10.0 + speed * dt * k) * 1e-3
        p_seam, R_world_seam = metrics.frame(s)
        R_world_tcp = R_world_seam @ R_seam_tcp
        row = metrics.measure(p_seam - R_world_tcp[:, 2] * 0.0115, R_world_tcp, arc_on=True)
        if k:
            assert row["work_angle_deg"] == pytest.approx(43.0, abs=0.3)
            assert row["travel_angle_deg"] == pytest.approx(8.0, abs=0.3)
            assert row["ctwd_mm"] == pytest.approx(11.5, abs=0.1)
            assert row["travel_speed_mm_s"] == pytest.approx(speed, rel=0.02)


def test_the_expert_turns_the_rounded_corner_in_band_slower_and_clear_of_the_tube():
    cell, steps = expert_pass("rounded", "D1", seed=3)
    wps, envelope_clearance_mm = cell.wps, 1.0
    assert steps[-1]["is_success"]
    first, last = cell.corner_span_mm
    welding = [st for st in steps if st["arc_on"]]
    corner = [st for st in welding if first <= st["seam_position_mm"] <= last]
    straight = [st for st in welding if 10.0 <= st["seam_position_mm"] <= first - 15.0]
    assert len(corner) > 60  # 31 mm at about 7 mm/s
    for key in ("work_angle_deg", "travel_angle_deg", "ctwd_mm", "travel_speed_mm_s", "lateral_deviation_mm",
                "vertical_deviation_mm"):
        low, high = wps.band(key)
        values = np.array([st[key] for st in corner])
        assert values.min() >= low and values.max() <= high, f"{key} through the corner: {values.min():.2f}.." \
                                                              f"{values.max():.2f} against [{low}, {high}]"
    corner_speed = np.mean([st["travel_speed_mm_s"] for st in corner])
    straight_speed = np.mean([st["travel_speed_mm_s"] for st in straight])
    assert corner_speed < straight_speed - 0.5, (corner_speed, straight_speed)
    assert min(st["clearance_mm"] for st in steps) > envelope_clearance_mm
    assert steps[-1]["defect_length_mm"] == 0.0  # no defect indicator fires anywhere on the bead


def test_the_expert_turns_about_the_wire_tip_on_a_sharp_corner():
    """On a square corner the torch stands on the vertex while it turns: the steps with its angles out of
    band are there (they weld no seam length), and it is back in band within a few millimetres."""
    cell, steps = expert_pass("sharp", "D1", seed=3)
    wps = cell.wps
    assert steps[-1]["is_success"]
    vertex, _ = cell.corner_span_mm
    out = [st["seam_position_mm"] for st in steps if st["arc_on"] and not (
        wps.band("travel_angle_deg")[0] <= st["travel_angle_deg"] <= wps.band("travel_angle_deg")[1])]
    assert len(out) > 20  # it turns 90 degrees there
    assert min(out) > vertex - 2.0 and max(out) < vertex + 3.0
    assert min(st["clearance_mm"] for st in steps) > 1.0
    # Standing on the vertex heats it: burn-through risk there, and only there.
    final = steps[-1]
    assert 0.0 < final["defect_burn_through_mm"] == final["defect_length_mm"] <= 2.0
    # the step's flag is the last millimetre welded's: on at the vertex, off again on the sound bead after it
    flagged = [st["seam_position_mm"] for st in steps if st["defect_burn_through"]]
    assert flagged and vertex - 2.0 < min(flagged) and max(flagged) < vertex + 3.0
    assert not any(final[key] for key in final if key.startswith("defect_") and not key.endswith("_mm"))


def test_the_seam_cannot_be_declared_apart_from_the_tube():
    with pytest.raises(ConfigError, match=r"seam.segments \(overrides\): the corner seam follows from the tube"):
        WeldCornerEnv(overrides={"seam": {"segments": [{"type": "line", "to_mm": [0.0, 1.0]}]}})
    with pytest.raises(ConfigError, match=r"tube.legs_mm\[1\]: 90.0 mm does not fit the 80 mm flat"):
        WeldCornerEnv(overrides={"tube": {"legs_mm": [60.0, 90.0]}})
    with pytest.raises(ValueError, match="variant must be one of"):
        WeldCornerEnv(variant="chamfered")


@pytest.mark.parametrize("turn_deg", [-30.0, -45.0])
def test_the_shared_weld_expert_takes_a_polyline_corner(turn_deg):
    """The fillet cell with a sharp polyline bend (the web outside the turn): the shared expert turns the
    torch at the vertex and welds it in spec (it strayed out of spec past about 10 degrees before)."""
    a = math.radians(turn_deg)
    seam = {"start_mm": [0.0, 60.0], "segments": [{"type": "polyline", "points_mm": [
        [0.0, 0.0], [60.0 * math.sin(a), -60.0 * math.cos(a)]]}]}
    env = gym.make("skillcell/WeldSeam-v0", tier="D1", overrides={"seam": seam})
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        done = terminated or truncated
    assert info["is_success"] and info["in_spec_fraction"] > 0.93, info["in_spec_fraction"]
    env.close()
