"""The safety envelope: loads strictly, judges every step in evaluation, filters commands."""

import math

import gymnasium as gym
import numpy as np
import pytest

from skillcell.config import ConfigError
from skillcell.deploy.envelope import EnvelopeMonitor, RobotState, SafetyEnvelope, load_envelope, robot_state
from skillcell.evaluation import run_episodes
from skillcell.policies import make_expert

PEG = "skillcell/PegInsert-v0"
DOWN = np.array([0.0, 0.0, -1.0, 0.0, 0.0, 0.0], dtype=np.float32)  # full speed into the fixture


@pytest.fixture(scope="module")
def peg_env():
    env = gym.make(PEG)
    yield env
    env.close()


@pytest.fixture(scope="module")
def envelope(peg_env):
    return load_envelope(peg_env)


def test_peg_envelope_loads_with_iso_reduced_speed(envelope):
    assert envelope.tool_speed_max_mm_s == 250.0
    assert envelope.tool_force_max_n == 50.0
    assert "tool_clearance" not in envelope.active_limits
    assert set(envelope.active_limits) >= {"joint_position", "joint_velocity", "tool_speed", "workspace", "tool_force"}


@pytest.mark.parametrize("overrides,message", [
    ({"tool_speed_max_mm_s": -1.0}, r"tool_speed_max_mm_s: must be in \[0\.0, 5000\.0\]"),
    ({"tool_force_max": 10.0}, r"tool_force_max: unknown key"),
    ({"joint_velocity_max_deg_s": [90.0] * 5}, r"joint_velocity_max_deg_s: expected 6 values"),
    ({"joint_position_min_deg": [0.0] * 6, "joint_position_max_deg": [0.0] * 6}, r"joint 0 minimum 0\.0 is not below"),
    ({"workspace_min_m": [0.5, 0.0, 0.9], "workspace_max_m": [0.4, 0.2, 1.0]}, r"workspace_min_m: must be below"),
    ({"min_tool_clearance_mm": 5.0}, r"min_tool_clearance_mm: PegInsertEnv does not measure a tool clearance"),
])
def test_bad_envelope_names_the_key(peg_env, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_envelope(peg_env, overrides)


def test_joint_count_must_match_the_robot(peg_env, tmp_path):
    path = tmp_path / "envelope.yaml"
    path.write_text("joint_position_min_deg: [-1, -1]\njoint_position_max_deg: [1, 1]\n"
                    "joint_velocity_max_deg_s: [1, 1]\nworkspace_min_m: [0, 0, 0]\nworkspace_max_m: [1, 1, 1]\n")
    envelope = load_envelope(path)  # a file alone cannot know the robot
    with pytest.raises(ConfigError, match=r"joint_position_min_deg: expected 6 values \(one per arm joint\)"):
        envelope.validate_for(peg_env)


def _state(**changes) -> RobotState:
    base = dict(stamp_s=0.0, joint_pos=np.zeros(6), joint_vel=np.zeros(6), tcp_pos=np.array([0.45, 0.1, 0.95]),
                tcp_quat=np.array([1.0, 0, 0, 0]), tcp_lin_vel=np.zeros(3), tcp_ang_vel=np.zeros(3),
                cmd_pos=np.array([0.45, 0.1, 0.95]), force=np.zeros(3), torque=np.zeros(3), jacobian=np.eye(6))
    return RobotState(**{**base, **changes})


@pytest.mark.parametrize("changes,limit", [
    ({"joint_pos": np.array([0.0, 0.0, math.radians(176), 0.0, 0.0, 0.0])}, "joint_position"),
    ({"joint_vel": np.array([0.0, 0.0, 0.0, 0.0, 0.0, math.radians(91)])}, "joint_velocity"),
    ({"tcp_lin_vel": np.array([0.2, 0.2, 0.0])}, "tool_speed"),  # 283 mm/s
    ({"tcp_ang_vel": np.array([0.0, 0.0, math.radians(100)])}, "tool_angular_speed"),
    ({"tcp_pos": np.array([0.45, 0.1, 0.88])}, "workspace"),
    ({"force": np.array([0.0, 30.0, -45.0])}, "tool_force"),
    ({"torque": np.array([6.0, 0.0, 0.0])}, "tool_torque"),
])
def test_check_names_each_exceeded_limit(envelope, changes, limit):
    assert envelope.check(_state()) == []
    found = envelope.check(_state(**changes))
    assert [v.limit for v in found] == [limit]


def test_clearance_is_a_minimum(envelope):
    welding = SafetyEnvelope(**{**envelope.to_mapping(), "min_tool_clearance_mm": 3.0})
    assert [v.limit for v in welding.check(_state(clearance_m=0.002))] == ["tool_clearance"]
    assert welding.check(_state(clearance_m=0.004)) == []


@pytest.mark.parametrize("mode", ["position", "impedance"])
def test_fast_drive_into_the_fixture_is_counted(envelope, mode):
    env = EnvelopeMonitor(gym.make(PEG, overrides={"control": {"mode": mode}}), envelope)
    summary = run_episodes(env, lambda obs: DOWN, 2, seed=0)
    for e in summary.episodes:
        counts = e.final_info["envelope_violations"]
        if mode == "position":  # the stiff joint servos push through the limit
            assert counts.get("tool_force", 0) > 5, counts
            assert e.final_info["envelope_worst"]["tool_force"] > 100.0
        else:  # the spring presses with its stiffness times the lead at most: 10 N
            assert "tool_force" not in counts, counts
        assert "tool_speed" not in counts  # 100 mm/s commanded, about 40 mm/s reached
    # Pushed down, the servos' coupled stiffness walks the tool sideways out of the workspace; the spring holds it.
    walked = [("workspace" in e.final_info["envelope_violations"]) for e in summary.episodes]
    assert any(walked) if mode == "position" else not any(walked)
    env.close()


def test_expert_stays_inside_the_envelope(envelope):
    env = EnvelopeMonitor(gym.make(PEG), envelope)
    expert = make_expert(env)
    summary = run_episodes(env, expert, 3, seed=0)
    assert summary.success_rate == 1.0
    assert all(e.final_info["envelope_violations"] == {} for e in summary.episodes)
    env.close()


def test_a_tighter_speed_limit_catches_the_expert_approach(peg_env):
    # The expert approaches at about 15 mm/s (D0, seed 0): a 10 mm/s limit must catch it.
    strict = load_envelope(peg_env, {"tool_speed_max_mm_s": 10.0})
    env = EnvelopeMonitor(gym.make(PEG, tier="D0"), strict)
    expert = make_expert(env)
    summary = run_episodes(env, expert, 1, seed=0)
    info = summary.episodes[0].final_info
    assert info["envelope_violations"]["tool_speed"] > 0
    assert 10.0 < info["envelope_worst"]["tool_speed"] < 40.0
    env.close()


def test_robot_state_is_measured_truth(peg_env):
    peg_env.reset(seed=0)
    for _ in range(5):
        peg_env.step(np.array([1.0, 0, 0, 0, 0, 0]))
    s = robot_state(peg_env)
    u = peg_env.unwrapped
    assert np.allclose(s.tcp_pos, u.data.site_xpos[u.tcp_site])
    assert s.tcp_lin_vel[0] > 0.01  # moving in +x
    assert s.jacobian.shape == (6, 6)
    # The Jacobian maps joint velocities to the TCP velocity it reports (up to the one 0.5 ms
    # physics substep by which MuJoCo's kinematics after mj_step trail the integrated qvel).
    assert np.allclose(s.jacobian[:3] @ s.joint_vel, s.tcp_lin_vel, rtol=1e-2, atol=1e-5)
    assert np.allclose(s.jacobian[3:] @ s.joint_vel, s.tcp_ang_vel, rtol=1e-2, atol=1e-5)


# ---------------------------------------------------------------------- filtering


def test_filter_scales_an_overspeed_command_and_keeps_its_direction(envelope):
    command = np.array([0.012, 0.016, 0.0, 0.0, 0.0, 0.0])  # 20 mm in 50 ms: 400 mm/s
    result = envelope.filter(command, _state(), dt=0.05)
    assert not result.hold and "tool_speed" in result.interventions
    assert np.linalg.norm(result.command[:3]) == pytest.approx(0.25 * 0.05)
    assert np.allclose(np.cross(result.command[:3], command[:3]), 0.0)


def test_filter_passes_a_safe_command_unchanged(envelope):
    command = np.array([0.001, 0.0, -0.002, 0.0, 0.01, 0.0])
    result = envelope.filter(command, _state(), dt=0.05)
    assert result.interventions == () and not result.hold
    assert np.array_equal(result.command, command)


def test_filter_clips_to_the_workspace(envelope):
    result = envelope.filter(np.array([0.0, 0.0, -0.004, 0, 0, 0]), _state(cmd_pos=np.array([0.45, 0.1, 0.897])),
                             dt=0.05)
    assert result.interventions == ("workspace",)
    assert 0.897 + result.command[2] == pytest.approx(0.895)


def test_filter_stops_a_joint_at_its_limit(envelope):
    q = np.zeros(6)
    q[3] = math.radians(354.0)  # 1 deg from the envelope's wrist 1 limit
    command = np.zeros(6)
    command[3] = math.radians(3.0)  # with an identity Jacobian: 3 deg on wrist 1, at 60 deg/s
    result = envelope.filter(command, _state(joint_pos=q), dt=0.05)
    assert result.interventions == ("joint_position",)
    assert result.command[3] == pytest.approx(math.radians(1.0), rel=1e-3)


def test_filter_lets_a_joint_outside_its_range_move_back_only(envelope):
    q = np.zeros(6)
    q[2] = math.radians(176.0)
    outwards = envelope.filter(np.r_[0.0, 0.0, 0.001, 0.0, 0.0, 0.0], _state(joint_pos=q), dt=0.05)
    inwards = envelope.filter(np.r_[0.0, 0.0, -0.001, 0.0, 0.0, 0.0], _state(joint_pos=q), dt=0.05)
    assert np.allclose(outwards.command, 0.0) and "joint_position" in outwards.interventions
    assert inwards.command[2] == pytest.approx(-0.001) and inwards.interventions == ()


def test_filter_limits_joint_velocity(envelope):
    command = np.zeros(6)
    command[5] = math.radians(6.0)  # 6 deg in 50 ms: 120 deg/s on the last joint
    result = envelope.filter(command, _state(jacobian=np.eye(6)), dt=0.05)
    assert "joint_velocity" in result.interventions
    assert result.command[5] == pytest.approx(math.radians(90.0) * 0.05, rel=1e-3)


@pytest.mark.parametrize("changes,reason", [
    ({"force": np.array([0.0, 0.0, 60.0])}, "tool_force"),
    ({"torque": np.array([0.0, 7.0, 0.0])}, "tool_torque"),
])
def test_filter_holds_over_force_or_torque(envelope, changes, reason):
    result = envelope.filter(np.r_[0.001, 0, 0, 0, 0, 0], _state(**changes), dt=0.05)
    assert result.hold and result.interventions == (reason,)


@pytest.mark.parametrize("command", [np.r_[np.nan, 0, 0, 0, 0, 0], np.r_[0, 0, np.inf, 0, 0, 0], np.zeros(3)])
def test_filter_never_passes_a_bad_command(envelope, command):
    result = envelope.filter(command, _state(), dt=0.05)
    assert result.hold and result.interventions == ("non_finite_command",)
    assert np.isfinite(result.command).all()


def test_filter_passes_task_channels(envelope):
    result = envelope.filter(np.r_[0.0, 0, 0, 0, 0, 0, 1.0], _state(), dt=0.05)
    assert result.command[6] == 1.0
