"""Task-space impedance control (``control.mode: impedance``, `skillcell.envs.impedance`), measured on PegInsert.

Determinism, pickling, state replay and the Gymnasium/SB3 checkers run in both control modes in
the registry-wide tests (`tests/test_envs.py`, `tests/test_cells.py`, the ``cell_case`` fixture).
"""

import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.config import ConfigError
from skillcell.envs.impedance import ImpedanceController
from skillcell.envs.registry import cell_config

PEG = "skillcell/PegInsert-v0"


def make(mode: str, **overrides):
    return gym.make(PEG, randomize=False, overrides={"control": {"mode": mode}, **overrides}).unwrapped


def command_to(env, target: np.ndarray, settle_steps: int = 0, max_steps: int = 300):
    """Moves the commanded TCP position to ``target`` along a straight line, through actions (at most
    the action's step per control step), then holds it for ``settle_steps``; returns the last info."""
    controller = env.controller
    info = {}
    for _ in range(max_steps):
        error = target - controller.p_world_cmd
        if np.abs(error).max() < 1e-12:
            break
        action = np.zeros(env.action_space.shape)
        step = error / controller.max_translation
        action[:3] = step / max(1.0, np.abs(step).max())  # along the line to the target
        _, _, terminated, _, info = env.step(action)
        assert not terminated, info
    for _ in range(settle_steps):
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape))
    return info


def contact_force_world(env) -> np.ndarray:
    """The total force the fixture's contacts put on the peg, world frame (from the contact solver)."""
    m, d = env.model, env.data
    total, wrench = np.zeros(3), np.zeros(6)
    peg = m.geom("tool/peg").id
    for i in range(d.ncon):
        contact = d.contact[i]
        if peg not in contact.geom:
            continue
        mujoco.mj_contactForce(m, d, i, wrench)
        force = contact.frame.reshape(3, 3).T @ wrench[:3]  # on geom2, from geom1
        total += force if contact.geom[1] == peg else -force
    return total


def test_the_model_has_torque_motors_at_the_rated_torques_and_the_springs():
    env = make("impedance")
    m = env.model
    rated = [150.0, 150.0, 150.0, 28.0, 28.0, 28.0]  # UR5e rated joint torques (N*m)
    joints = m.dof_jntid[env.arm_dof_adr]
    assert np.array_equal(m.jnt_actfrcrange[joints], np.column_stack([np.negative(rated), rated]))
    assert m.jnt_actgravcomp[joints].all()
    motors = env.arm_actuators
    assert np.array_equal(m.actuator_gainprm[motors, 0], np.ones(6))
    assert not m.actuator_biasprm[motors].any()  # no servo left: the torque is the command
    controller = env.controller
    assert isinstance(controller, ImpedanceController)
    assert len(controller.spring_actuators) == len(controller.damper_actuators) == 21  # 6 joints + 15 pairs
    assert m.nu == 6 + 42 and m.ntendon == 21
    assert controller.stiffness.tolist() == list(env.config.control.impedance.stiffness)
    assert controller.damping.tolist() == list(env.config.control.impedance.damping)
    impedance = env.config.control.impedance
    assert controller.servo_time_constant == pytest.approx(impedance.damping_n_s_per_m[0]
                                                           / impedance.stiffness_n_per_m[0])
    position = make("position")
    assert type(position.controller).__name__ == "CartesianController"
    assert position.model.nu == 6 and position.model.ntendon == 0


def test_the_actuators_apply_the_impedance_law():
    """Joint torques J^T (K e - D J qdot) - S (q - q_k) about the control step's configuration q_k."""
    env = make("impedance")
    env.reset(seed=0)
    action = np.zeros(6)
    action[[0, 2, 4]] = [0.6, -0.4, 0.5]
    env.step(action)  # moving, and the command leads in position and orientation
    m, d, controller = env.model, env.data, env.controller
    q_k = d.qpos[env.arm_qpos_adr].copy()
    error = controller.pose_error()
    controller.command(np.zeros(6))  # the controls for this configuration
    jac = np.zeros((6, m.nv))
    mujoco.mj_jacSite(m, d, jac[:3], jac[3:], env.tcp_site)
    J, K, D = jac[:, env.arm_dof_adr], controller.stiffness, controller.damping
    dq = np.full(6, 1e-3)
    d.qpos[env.arm_qpos_adr] = q_k + dq  # within the step the spring follows the linearization
    mujoco.mj_forward(m, d)
    qdot = d.qvel[env.arm_dof_adr]
    expected = J.T @ (K * error - D * (J @ qdot)) - J.T @ (K[:, None] * J) @ dq
    coriolis = d.qfrc_bias[env.arm_dof_adr] - d.qfrc_gravcomp[env.arm_dof_adr]
    applied = d.qfrc_actuator[env.arm_dof_adr] - d.qfrc_gravcomp[env.arm_dof_adr]
    assert np.linalg.norm(expected) > 1.0
    assert applied - coriolis == pytest.approx(expected, abs=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("stiffness", [2000.0, 5000.0])
def test_the_static_contact_force_is_stiffness_times_the_commanded_offset(stiffness):
    """The peg pressed onto the fixture's flat top face, the command a known offset below the face."""
    env = gym.make(PEG, randomize=False, overrides={
        "control": {"mode": "impedance", "impedance": {"stiffness_n_per_m": [stiffness] * 3}}}).unwrapped
    env.reset(seed=0)
    face = env.data.site_xpos[env.task_site].copy()  # the hole's opening lies in the top face
    beside = face + np.array([0.02, 0.0, 0.0])  # 20 mm off the hole: the flat face
    command_to(env, beside + np.array([0.0, 0.0, 0.002]), settle_steps=10)
    for offset in (0.001, 0.003, 0.006):
        command_to(env, beside - np.array([0.0, 0.0, offset]), settle_steps=20)
        expected = stiffness * offset
        push = env.wrench_tool[2]  # along the tool axis, which points down: the push on the face
        assert push == pytest.approx(expected, rel=0.1), (offset, push)
        contact = contact_force_world(env)
        assert contact[2] == pytest.approx(expected, rel=0.1), (offset, contact)
        # At rest the face holds the whole spring force, friction included: K times the lead, per axis.
        spring = stiffness * env.controller.pose_error()[:3]
        assert np.linalg.norm(contact + spring) < 0.01 * expected
        # The tool rests on the face, not in it.
        assert abs(env.data.site_xpos[env.tcp_site][2] - face[2]) < 5e-5


def test_the_force_of_a_blocked_tool_is_bounded_by_stiffness_times_the_lead():
    env = make("impedance")
    env.reset(seed=0)
    face = env.data.site_xpos[env.task_site].copy()
    beside = face + np.array([0.02, 0.0, 0.0])
    command_to(env, beside + np.array([0.0, 0.0, 0.002]), settle_steps=10)
    down = np.zeros(6)
    down[2] = -1.0
    bound = env.config.control.impedance.stiffness_n_per_m[2] * env.config.control.max_lead_mm * 1e-3

    def press(cell):
        peak = 0.0
        for _ in range(30):  # 150 mm of command into the face
            _, _, _, _, info = cell.step(down)
            peak = max(peak, info["contact_force_n"])
        slide = np.linalg.norm((cell.data.site_xpos[cell.tcp_site] - beside)[:2])
        return info, peak, slide

    info, peak, slide = press(env)
    assert info["contact_force_n"] == pytest.approx(bound, rel=0.05)
    assert peak < 1.5 * bound  # the impact at 100 mm/s included
    assert slide < 1e-3  # the impact's bounce only
    position = make("position")
    position.reset(seed=0)
    command_to(position, beside + np.array([0.0, 0.0, 0.002]), settle_steps=20)
    info, peak, slide = press(position)
    # The joint servos are several times stiffer, and coupled: pushed down, the tool walks sideways.
    assert peak > 3 * bound and slide > 5e-3


def _press_off_axis(mode: str, offset_m: float = 0.15e-3, steps: int = 120):
    """0.1 mm clearance, the hole where it is known to be, the peg 2 mm above it and ``offset_m`` off
    its axis, then commanded straight down (10 mm/s); returns the final info and the peak force."""
    env = make(mode, workpiece={"clearance_mm": 0.1, "chamfer_mm": 0.3})
    env.reset(seed=0)
    hole = env.data.site_xpos[env.task_site].copy()
    start = hole + np.array([offset_m, 0.0, 0.002])
    command_to(env, start, settle_steps=40)
    assert np.linalg.norm(env.data.site_xpos[env.tcp_site] - start) < 1e-5
    down = np.zeros(6)
    down[2] = -0.1
    peak, info = 0.0, {}
    for _ in range(steps):
        _, _, terminated, _, info = env.step(down)
        peak = max(peak, info["contact_force_n"])
        if terminated:
            break
    return info, peak


def test_an_off_axis_peg_seats_compliantly_where_position_control_jams():
    """0.15 mm off the axis of a hole 0.1 mm wider than the peg, the peg lands on the 0.3 mm chamfer.
    The spring yields sideways and in tilt, so the chamfer centres the peg and it slides in; the stiff,
    anisotropic joint servos tilt it instead and it wedges. (On a sharp-edged hole the peg rests on
    the flat rim, which pushes nowhere sideways, in either mode: that takes a search.)"""
    info, peak = _press_off_axis("impedance")
    assert info["is_success"] and not info["physics_invalid"], info
    assert info["lateral_error_mm"] < 0.05 and info["jam_time_s"] == 0.0
    rated = cell_config(PEG).limits.rated_insertion_force_n
    assert peak < rated  # the touch-down's impact included

    info, peak = _press_off_axis("position")
    assert not info["is_success"], info
    assert info["jammed"] and info["jam_time_s"] > 1.0
    assert info["depth_mm"] < 1.0 and peak > 2 * rated


def test_free_motion_is_straight_and_settles_on_the_command():
    env = make("impedance")
    env.reset(seed=0)
    start = env.data.site_xpos[env.tcp_site].copy()
    goal = start + np.array([0.05, -0.03, 0.02])
    deviation = 0.0
    for _ in range(40):
        command_to(env, goal, max_steps=1)
        p = env.data.site_xpos[env.tcp_site] - start
        along = goal - start
        deviation = max(deviation, np.linalg.norm(p - (p @ along) / (along @ along) * along))
    command_to(env, goal, settle_steps=30)
    # The arm's operational-space mass differs by axis, so the start at 100 mm/s bows the path (0.51 mm
    # measured); a wrong Jacobian in the springs would send the tool elsewhere altogether.
    assert deviation < 1e-3
    assert np.linalg.norm(env.controller.pose_error()) < 1e-5
    assert np.abs(env.data.qvel[env.arm_dof_adr]).max() < 1e-3


@pytest.mark.parametrize("feedforward", [0.0, 1.0])
def test_a_steady_motion_lags_by_the_time_constant_unless_fed_forward(feedforward):
    env = gym.make(PEG, randomize=False, overrides={
        "control": {"mode": "impedance", "velocity_feedforward": feedforward}}).unwrapped
    env.reset(seed=0)
    # 25 mm/s: the feed-forward lead (the time constant times the speed) stays within max_lead_mm.
    speed = 0.25 * env.controller.max_translation / env.dt
    action = np.zeros(6)
    action[0] = 0.25
    for _ in range(30):
        env.step(action)
    lag = env.controller.pose_error()[0]
    # The command steps at the start of each control step; the tool follows where it is on average,
    # half a step behind, so at the end of a step it is half a step's travel nearer than the lag.
    tau = env.controller.servo_time_constant
    expected = (1.0 - feedforward) * tau * speed - 0.5 * speed * env.dt
    assert lag == pytest.approx(expected, abs=0.05 * tau * speed)


def test_stiff_gains_stay_stable_in_contact():
    env = gym.make(PEG, randomize=False, overrides={"control": {"mode": "impedance", "impedance": {
        "stiffness_n_per_m": [20000.0] * 3, "stiffness_nm_per_rad": [500.0] * 3,
        "damping_n_s_per_m": [800.0] * 3, "damping_nm_s_per_rad": [20.0] * 3}}}).unwrapped
    env.reset(seed=0)
    face = env.data.site_xpos[env.task_site].copy()
    command_to(env, face + np.array([0.02, 0.0, 0.002]), settle_steps=5)
    info = command_to(env, face + np.array([0.02, 0.0, -0.002]), settle_steps=20)
    assert info["instability"] == "" and not info["physics_invalid"]
    assert env.wrench_tool[2] == pytest.approx(20000.0 * 0.002, rel=0.1)


def test_bad_mode_and_impedance_without_gravity_compensation_are_named():
    with pytest.raises(ConfigError, match=r"control.mode: must be one of \['position', 'impedance'\], got 'force'"):
        gym.make(PEG, overrides={"control": {"mode": "force"}})
    with pytest.raises(ConfigError, match=r"control.mode: impedance needs robot.gravity_compensation: true"):
        gym.make(PEG, overrides={"control": {"mode": "impedance"}, "robot": {"gravity_compensation": False}})
    with pytest.raises(ConfigError, match=r"control.impedance.stiffness_n_per_m: must be in"):
        gym.make(PEG, overrides={"control": {"mode": "impedance", "impedance": {"stiffness_n_per_m": [0, 1, 1]}}})


@pytest.mark.parametrize("mode", ["position", "impedance"])
def test_every_env_command_takes_the_mode_from_set(mode):
    result = subprocess.run([sys.executable, "-m", "skillcell", "expert", PEG, "--episodes", "1", "--tier", "D0",
                             "--no-progress", "--set", f"control.mode={mode}"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "success 1/1" in result.stdout
