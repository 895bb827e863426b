"""WeldPipe-v0: the seam is the circle at the pipe's foot, the scripted welder goes round it without
touching the pipe, and the arm's figures in ``info`` (reach, joint-limit margin, wrist flips) are
those of the pose, checked on poses built by hand against the UR5e's published link lengths."""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.config import ConfigError
from skillcell.envs.cells.weld_pipe import PipeConfig, wrist_flip
from skillcell.evaluation import run_episodes
from skillcell.policies import make_expert

ENV_ID = "skillcell/WeldPipe-v0"
#: the UR5e's upper arm and forearm (m): Universal Robots' DH a2 and a3, 0.425 and 0.3922, as the Menagerie
#: model has them (its forearm 0.392)
UPPER_ARM, FOREARM = 0.425, 0.392


def _yaw(rotvec: np.ndarray) -> float:
    """The heading of a frame's x axis in the horizontal plane, from its rotation vector (rad)."""
    angle = float(np.linalg.norm(rotvec))
    quat = np.r_[math.cos(angle / 2), np.sin(angle / 2) * rotvec / angle] if angle > 0 else np.r_[1.0, 0, 0, 0]
    R = np.empty(9)
    mujoco.mju_quat2Mat(R, quat)
    return math.atan2(R[3], R[0])


@pytest.fixture(scope="module")
def expert_pass():
    """One D0 pass of the scripted welder: the env, per-step infos, seam headings and the torch's
    smallest distance to the pipe over the episode."""
    env = gym.make(ENV_ID, tier="D0")
    cell = env.unwrapped
    m, d = cell.model, cell.data
    pipe = m.geom("pipe").id
    torch = [g for g in range(m.ngeom) if int(m.geom_bodyid[g]) == cell.tool_body and int(m.geom_contype[g])]
    fromto = np.empty(6)
    expert = make_expert(env)
    obs, info = env.reset(seed=0)
    infos, headings, closest, touching = [info], [], math.inf, 0
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        done = terminated or truncated
        infos.append(info)
        headings.append(_yaw(cell.decode_obs(obs)["seam_rot"]))
        closest = min(closest, *(mujoco.mj_geomDistance(m, d, g, pipe, 0.05, fromto) for g in torch))
        touching += sum(1 for c in d.contact[:d.ncon] if pipe in (c.geom1, c.geom2))
    yield env, infos, np.array(headings), closest, touching
    env.close()


def test_the_seam_is_the_circle_at_the_pipe_foot():
    env = gym.make(ENV_ID, tier="D0")
    cell = env.unwrapped
    env.reset(seed=0)
    pipe = cell.config.pipe
    r = pipe.radius_mm * 1e-3
    points = cell.path.points
    assert np.allclose(np.hypot(points[:, 0], points[:, 1]), r, rtol=0, atol=1e-12)
    assert np.all(points[:, 2] == 0.0)
    assert cell.path.length == pytest.approx(2 * math.pi * r + pipe.overlap_mm * 1e-3, abs=1e-5)
    # the seam frame turns once round and on over the tie-in, counter-clockwise seen from above
    s = np.linspace(0.0, cell.path.length, 2000)
    heading = np.unwrap([math.atan2(R[1, 0], R[0, 0]) for R in (cell.metrics.frame(x)[1] for x in s)])
    overlap_deg = math.degrees(pipe.overlap_mm / pipe.radius_mm)
    assert math.degrees(heading[-1] - heading[0]) == pytest.approx(360.0 + overlap_deg, abs=0.2)
    # the pipe is real collision geometry, seen by the CTWD ray cast, its axis the seam's centre
    m, d = cell.model, cell.data
    geom = m.geom("pipe")
    assert int(geom.type[0]) == int(mujoco.mjtGeom.mjGEOM_CYLINDER) and geom.size[0] == pytest.approx(r)
    assert int(geom.contype[0]) and int(geom.conaffinity[0]) and int(geom.group[0]) == 1
    from_axis = cell.metrics.points_world[:, :2] - d.geom_xpos[geom.id][:2]
    assert np.allclose(np.hypot(from_axis[:, 0], from_axis[:, 1]), r, rtol=0, atol=1e-9)
    env.close()


def test_the_pipe_config_derives_the_seam_and_refuses_one():
    assert len(PipeConfig(overlap_mm=0.0).seam().segments) == 1
    with pytest.raises(ConfigError, match=r"seam: the pipe cell's seam is the circle"):
        gym.make(ENV_ID, overrides={"seam": {"start_mm": [0.0, 30.0]}})
    with pytest.raises(ConfigError, match=r"joint\.type: a pipe on a plate is a fillet joint"):
        gym.make(ENV_ID, overrides={"joint": {"type": "lap"}})
    with pytest.raises(ConfigError, match=r"pipe\.wall_thickness_mm: must be below the radius"):
        gym.make(ENV_ID, overrides={"pipe": {"wall_thickness_mm": 31.0}})


def test_the_welder_goes_round_off_the_pipe_wall(expert_pass):
    env, infos, headings, closest, touching = expert_pass
    final = infos[-1]
    assert final["is_success"] and final["seam_end_reached"]
    assert closest > 1e-3 and touching == 0, f"torch {closest * 1e3:.2f} mm from the pipe, {touching} contacts"
    # the observed seam frame turns a full circle and the tie-in
    overlap_deg = math.degrees(env.unwrapped.config.pipe.overlap_mm / env.unwrapped.config.pipe.radius_mm)
    assert math.degrees(np.ptp(np.unwrap(headings))) > 360.0 + overlap_deg - 5.0
    # ... and wrist 3 with it, inside its range; no wrist flip
    wrist_3 = np.array([i["wrist_3_deg"] for i in infos])
    assert np.ptp(wrist_3) > 360.0 and np.abs(wrist_3).max() < 355.0
    assert final["wrist_flips"] == 0 and min(i["wrist_singularity_margin_deg"] for i in infos) > 30.0
    assert final["min_joint_limit_margin_deg"] == min(i["joint_limit_margin_deg"] for i in infos) > 5.0
    assert final["min_reach_margin_mm"] == min(i["reach_margin_mm"] for i in infos) > 5.0


def _at(env, q_deg) -> dict:
    """The info of the env restored at the arm pose ``q_deg`` (`CellEnv.set_state`)."""
    cell = env.unwrapped
    cell.data.qpos[cell.arm_qpos_adr] = np.radians(q_deg)
    return cell.set_state(cell.get_state())[1]


def test_arm_figures_of_constructed_poses():
    env = gym.make(ENV_ID, tier="D0")
    env.reset(seed=0)
    cell = env.unwrapped
    high = {name: math.degrees(cell.model.joint(f"robot/{name}_joint").range[1]) for name in ("elbow", "wrist_3")}
    # the arm straight up: no reach left; the elbow (range +-180 deg) is the joint nearest its limit
    info = _at(env, [0, -90, 0, -90, 90, 0])
    assert info["reach_margin_mm"] == pytest.approx(0.0, abs=1e-6)
    assert info["joint_limit_margin_deg"] == pytest.approx(high["elbow"])
    assert high["elbow"] == pytest.approx(180, abs=0.01)
    # the elbow at a right angle: the two links' sum less the hypotenuse
    info = _at(env, [0, -90, 90, -90, 90, 0])
    expected = (UPPER_ARM + FOREARM - math.hypot(UPPER_ARM, FOREARM)) * 1e3
    assert info["reach_margin_mm"] == pytest.approx(expected, abs=1e-6)
    # wrist 3 five degrees from its +360 deg end; wrist 2 ten from the singularity at 180
    info = _at(env, [0, -90, 90, -90, 170, 355])
    assert info["joint_limit_margin_deg"] == pytest.approx(high["wrist_3"] - 355.0) == pytest.approx(5.0, abs=0.01)
    assert info["wrist_3_deg"] == pytest.approx(355.0) and info["wrist_2_deg"] == pytest.approx(170.0)
    assert info["wrist_singularity_margin_deg"] == pytest.approx(10.0)
    info = _at(env, [0, -90, 90, -90, -4, 0])
    assert info["wrist_singularity_margin_deg"] == pytest.approx(4.0)
    # the commanded TCP (the restored pose) from the shoulder
    shoulder = cell.model.joint("robot/shoulder_lift_joint").id
    assert info["tcp_target_reach_m"] == pytest.approx(
        float(np.linalg.norm(cell.data.site_xpos[cell.tcp_site] - cell.data.xanchor[shoulder])), abs=1e-9)
    env.close()


def test_wrist_flips_count_crossings_of_0_and_180_deg():
    assert not wrist_flip(None, 0.1) and not wrist_flip(0.1, 3.0)
    assert wrist_flip(-0.1, 0.1) and wrist_flip(3.1, 3.2) and wrist_flip(-3.1, 3.1)
    env = gym.make(ENV_ID, tier="D0")
    env.reset(seed=0)
    cell = env.unwrapped
    _at(env, [0, -90, 90, -90, -20, 0])
    hold = np.zeros(env.action_space.shape, np.float32)
    flips = []
    for wrist_2 in (-10, 10, 20, 175, 185, 170, 90):  # through 0, through 180, back through 180
        cell.data.qpos[cell.arm_qpos_adr] = np.radians([0, -90, 90, -90, wrist_2, 0])
        flips.append(cell.replay_step(cell.get_state(), hold)[4]["wrist_flips"])
    assert flips == [0, 1, 1, 1, 2, 3, 3]
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["D1", "D2"])
def test_expert_welds_90_percent_of_20_seeds(tier):
    env = gym.make(ENV_ID, tier=tier)
    summary = run_episodes(env, make_expert(env), 20, seed=0)
    assert summary.success_rate >= 0.9, summary.report()
    env.close()
