"""Cartesian tool control: a commanded TCP pose, moved by actions and tracked by differential IK.

Frames: ``world`` is the cell frame; ``tcp`` is the tool centre point site. Quaternions are
``(w, x, y, z)`` as everywhere in MuJoCo.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

__all__ = ["CartesianController", "quat_from_rotvec", "rotvec_from_quat"]


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """``exp``: the unit quaternion of a rotation vector (axis times angle, radians)."""
    angle = math.sqrt(float(rotvec @ rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    s = math.sin(0.5 * angle) / angle
    return np.array([math.cos(0.5 * angle), s * rotvec[0], s * rotvec[1], s * rotvec[2]])


def rotvec_from_quat(quat: np.ndarray) -> np.ndarray:
    """``log``: the rotation vector of a unit quaternion, angle in ``[0, pi]``."""
    out = np.empty(3)
    mujoco.mju_quat2Vel(out, quat, 1.0)
    return out


class CartesianController:
    """Maps normalized Cartesian deltas to joint position targets, once per control step.

    The controller keeps a commanded pose ``T_world_cmd``. An action ``a`` in ``[-1, 1]^6`` moves it:

    .. math::
        p_{cmd} \\leftarrow \\Pi_{W}(p_{cmd} + s_p a_{0:3}), \\qquad
        q_{cmd} \\leftarrow \\exp(s_r a_{3:6}) \\otimes q_{cmd}

    where :math:`\\Pi_W` clips to the workspace box. The command may lead the measured TCP pose by
    at most ``max_lead`` (translation and rotation); beyond that it is pulled back along the error.
    That bounds the contact force a blocked tool can build up (about the servo stiffness times the
    lead) and keeps the command from winding up.

    The pose error :math:`e = [p_{cmd} - p_{tcp};\\ \\log(q_{cmd} \\otimes q_{tcp}^{-1})]`, plus a
    velocity feed-forward :math:`\\tau \\xi` (:math:`\\xi` the commanded twist, :math:`\\tau = k_d / k_p`
    the time constant of the robot's position servos), is mapped to joint targets by damped least
    squares on the site Jacobian :math:`J`:

    .. math::
        u = \\mathrm{clip}\\big(q + J^\\top (J J^\\top + \\lambda^2 I)^{-1} (e + \\tau \\xi)\\big)

    A servo :math:`k_p (u - q) - k_d \\dot q` tracks :math:`q_d + \\tau \\dot q_d` without lag, so the
    feed-forward removes the lag that the heavily damped Menagerie servos (0.2 s) add to steady
    motions such as a weld pass. It also multiplies the force of a step command into contact, so
    ``velocity_feedforward`` (the fraction of :math:`k_d / k_p` used as :math:`\\tau`) is 0 for
    contact tasks. :math:`e + \\tau \\xi` is held within ``max_lead`` too.
    With gravity compensation the servos settle on :math:`u`, so the TCP converges on the command
    along a straight line in free space (every UR5e servo has the same time constant). In contact
    the remaining error becomes force through the joint stiffness :math:`J^{-\\top} k_p J^{-1}`, as
    on a position-controlled arm: stiff and not isotropic, so a chamfer does not centre the tool
    by itself. Compliance is the policy's job (admittance from the F/T reading, as the scripted
    expert does). A Jacobian-transpose spring (:math:`u = q + k_p^{-1} J^\\top K e`) would give an
    isotropic stiffness, but through the joint damping it bends free motions by about 45 degrees
    on this arm (1 mm sideways per 1 mm of lag), which a weld path or a 0.1 mm hole cannot take.
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, tcp_site: int, qpos_adr: np.ndarray,
                 dof_adr: np.ndarray, actuator_ids: np.ndarray, *, max_translation: float,
                 max_rotation: float, max_lead_translation: float, max_lead_rotation: float,
                 workspace_min: np.ndarray, workspace_max: np.ndarray, control_dt: float,
                 velocity_feedforward: float = 0.0, damping: float = 1e-2):
        self.model, self.data, self.tcp_site = model, data, tcp_site
        self.qpos_adr, self.dof_adr, self.actuator_ids = qpos_adr, dof_adr, actuator_ids
        self.max_translation, self.max_rotation = max_translation, max_rotation
        self.max_lead_translation, self.max_lead_rotation = max_lead_translation, max_lead_rotation
        self.workspace_min, self.workspace_max = workspace_min, workspace_max
        self.ctrl_low = model.actuator_ctrlrange[actuator_ids, 0].copy()
        self.ctrl_high = model.actuator_ctrlrange[actuator_ids, 1].copy()
        self._damping_eye = damping**2 * np.eye(6)
        kp = model.actuator_gainprm[actuator_ids, 0]
        kd = -model.actuator_biasprm[actuator_ids, 2]
        #: kd/kp of the joint servos: the lag of a constant-velocity command without feed-forward
        self.servo_time_constant = float(np.median(kd / kp)) if np.all(kp > 0) else 0.0
        self.feedforward_time = velocity_feedforward * self.servo_time_constant
        self.control_dt = control_dt
        self._jac = np.zeros((6, model.nv))
        self._quat_tcp = np.empty(4)
        self._quat_err = np.empty(4)
        self._quat_tcp_inv = np.empty(4)
        self.p_world_cmd = np.zeros(3)
        self.quat_world_cmd = np.array([1.0, 0.0, 0.0, 0.0])

    def reset(self) -> None:
        """Commands the current TCP pose."""
        self.p_world_cmd[:] = self.data.site_xpos[self.tcp_site]
        mujoco.mju_mat2Quat(self.quat_world_cmd, self.data.site_xmat[self.tcp_site])

    def pose_error(self) -> np.ndarray:
        """``[p_cmd - p_tcp, log(q_cmd q_tcp^-1)]`` in the world frame (m, rad)."""
        error = np.empty(6)
        error[:3] = self.p_world_cmd - self.data.site_xpos[self.tcp_site]
        mujoco.mju_mat2Quat(self._quat_tcp, self.data.site_xmat[self.tcp_site])
        mujoco.mju_negQuat(self._quat_tcp_inv, self._quat_tcp)
        mujoco.mju_mulQuat(self._quat_err, self.quat_world_cmd, self._quat_tcp_inv)
        mujoco.mju_quat2Vel(error[3:], self._quat_err, 1.0)
        return error

    def command(self, action: np.ndarray) -> None:
        """Moves the commanded pose by a normalized action and writes joint targets to ``data.ctrl``."""
        p_cmd = self.p_world_cmd
        p_before = p_cmd.copy()
        p_cmd += self.max_translation * action[:3]
        np.clip(p_cmd, self.workspace_min, self.workspace_max, out=p_cmd)
        rot = action[3:6] * self.max_rotation
        if rot.any():
            mujoco.mju_mulQuat(self.quat_world_cmd, quat_from_rotvec(rot), self.quat_world_cmd.copy())
            mujoco.mju_normalize4(self.quat_world_cmd)

        error = self.pose_error()
        lead = math.sqrt(float(error[:3] @ error[:3]))
        if lead > self.max_lead_translation:
            error[:3] *= self.max_lead_translation / lead
            p_cmd[:] = self.data.site_xpos[self.tcp_site] + error[:3]
        lead = math.sqrt(float(error[3:] @ error[3:]))
        if lead > self.max_lead_rotation:
            error[3:] *= self.max_lead_rotation / lead
            mujoco.mju_mulQuat(self.quat_world_cmd, quat_from_rotvec(error[3:]), self._quat_tcp)

        gain = self.feedforward_time / self.control_dt
        error[:3] += gain * (p_cmd - p_before)
        error[3:] += gain * rot
        for part, limit in ((error[:3], self.max_lead_translation), (error[3:], self.max_lead_rotation)):
            norm = math.sqrt(float(part @ part))
            if norm > limit:
                part *= limit / norm

        jac = self._jac
        mujoco.mj_jacSite(self.model, self.data, jac[:3], jac[3:], self.tcp_site)
        j = jac[:, self.dof_adr]
        dq = j.T @ np.linalg.solve(j @ j.T + self._damping_eye, error)
        target = self.data.qpos[self.qpos_adr] + dq
        self.data.ctrl[self.actuator_ids] = np.clip(target, self.ctrl_low, self.ctrl_high)
