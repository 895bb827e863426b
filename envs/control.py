"""Cartesian tool control: a commanded TCP pose, moved by actions and tracked by differential IK.

Frames: ``world`` is the cell frame; ``tcp`` is the tool centre point site. Quaternions are
``(w, x, y, z)`` as everywhere in MuJoCo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mujoco
import numpy as np

__all__ = ["CartesianController", "clip_float", "index_of", "quat_from_rotvec", "rotate_transposed", "rotvec_from_quat"]


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """``exp``: the unit quaternion of a rotation vector (axis times angle, radians)."""
    return np.array(_quat_from_rotvec(*rotvec.tolist()))


def _quat_from_rotvec(x: float, y: float, z: float) -> tuple[float, float, float, float]:
    # On floats: numpy costs more than the arithmetic on three-element arrays (same IEEE results).
    angle = math.sqrt(x * x + y * y + z * z)
    if angle < 1e-12:
        return 1.0, 0.0, 0.0, 0.0
    s = math.sin(0.5 * angle) / angle
    return math.cos(0.5 * angle), s * x, s * y, s * z


def rotvec_from_quat(quat: np.ndarray) -> np.ndarray:
    """``log``: the rotation vector of a unit quaternion, angle in ``[0, pi]``."""
    out = np.empty(3)
    mujoco.mju_quat2Vel(out, quat, 1.0)
    return out


def rotate_transposed(R: Sequence[float], v: Sequence[float]) -> tuple[float, float, float]:
    """``R.T @ v`` for a 3x3 ``R`` given row by row as nine floats (``xmat.tolist()``), on floats in
    numpy's order of operations: the same bits, a fraction of the cost on 3-vectors."""
    r0, r1, r2, r3, r4, r5, r6, r7, r8 = R
    x, y, z = v
    return r0 * x + r3 * y + r6 * z, r1 * x + r4 * y + r7 * z, r2 * x + r5 * y + r8 * z


def index_of(adr: np.ndarray) -> slice | np.ndarray:
    """``adr`` as a slice where it is a contiguous range (a view, no gather), else as is."""
    adr = np.asarray(adr)
    if len(adr) and np.array_equal(adr, np.arange(adr[0], adr[0] + len(adr))):
        return slice(int(adr[0]), int(adr[0]) + len(adr))
    return adr


def clip_float(x: float, low: float, high: float) -> float:
    """``np.clip`` on one float, comparison for comparison (NaN stays NaN)."""
    if x != x:
        return x
    x = x if x >= low else low
    return x if x <= high else high


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
        #: the lag of a constant-velocity command without feed-forward (s)
        self.servo_time_constant = self._lag_time(model, actuator_ids)
        self.feedforward_time = velocity_feedforward * self.servo_time_constant
        self.control_dt = control_dt
        self.p_world_cmd = np.zeros(3)
        self.quat_world_cmd = np.array([1.0, 0.0, 0.0, 0.0])
        # Hot path (once per control step): buffers allocated here, the TCP pose read through
        # views into mjData (its arrays never move), 3-vectors handled as floats.
        self._ff_gain = self.feedforward_time / control_dt
        self._ws_min, self._ws_max = workspace_min.tolist(), workspace_max.tolist()
        self._qpos_index, self._ctrl_index = index_of(qpos_adr), index_of(actuator_ids)
        self._jac = np.zeros((6, model.nv))
        self._arm_dofs = index_of(dof_adr)
        # The arm's columns in Fortran order, as numpy's gather `jac[:, dof_adr]` makes them: the
        # layout picks OpenBLAS's kernels, and with them the rounding.
        self._jac_arm = np.empty((6, 6), order="F")
        self._jjt = np.empty((6, 6))
        self._error = np.empty(6)
        self._dq = np.empty(6)
        self._target = np.empty(6)
        self._xpos, self._xmat = data.site_xpos[tcp_site], data.site_xmat[tcp_site]
        self._quat_tcp = np.empty(4)
        self._quat_err = np.empty(4)
        self._quat_tcp_inv = np.empty(4)
        self._quat_step = np.empty(4)
        self._rot_err = np.empty(3)

    @staticmethod
    def _lag_time(model: mujoco.MjModel, actuator_ids: np.ndarray) -> float:
        """``kd/kp`` of the joint servos; a subclass that tracks the command otherwise gives its own lag."""
        kp = model.actuator_gainprm[actuator_ids, 0]
        kd = -model.actuator_biasprm[actuator_ids, 2]
        return float(np.median(kd / kp)) if np.all(kp > 0) else 0.0

    def reset(self) -> None:
        """Commands the current TCP pose."""
        self.p_world_cmd[:] = self._xpos
        mujoco.mju_mat2Quat(self.quat_world_cmd, self._xmat)

    def _rotation_error(self, out: np.ndarray) -> None:
        """``log(q_cmd q_tcp^-1)`` (rad, world frame) into ``out``; leaves ``q_tcp`` in ``_quat_tcp``."""
        mujoco.mju_mat2Quat(self._quat_tcp, self._xmat)
        mujoco.mju_negQuat(self._quat_tcp_inv, self._quat_tcp)
        mujoco.mju_mulQuat(self._quat_err, self.quat_world_cmd, self._quat_tcp_inv)
        mujoco.mju_quat2Vel(out, self._quat_err, 1.0)

    def pose_error(self, out: np.ndarray | None = None) -> np.ndarray:
        """``[p_cmd - p_tcp, log(q_cmd q_tcp^-1)]`` in the world frame (m, rad), into ``out`` if given."""
        error = np.empty(6) if out is None else out
        np.subtract(self.p_world_cmd, self._xpos, out=error[:3])
        self._rotation_error(error[3:])
        return error

    def command(self, action: np.ndarray) -> None:
        """Moves the commanded pose by a normalized action and writes joint targets to ``data.ctrl``."""
        a0, a1, a2, a3, a4, a5 = action[:6].tolist()
        bx, by, bz = self.p_world_cmd.tolist()
        t, (lx, ly, lz), (hx, hy, hz) = self.max_translation, self._ws_min, self._ws_max
        px, py, pz = clip_float(bx + t * a0, lx, hx), clip_float(by + t * a1, ly, hy), clip_float(bz + t * a2, lz, hz)
        r = self.max_rotation
        r0, r1, r2 = a3 * r, a4 * r, a5 * r
        if r0 or r1 or r2:
            self._quat_step[:] = _quat_from_rotvec(r0, r1, r2)
            mujoco.mju_mulQuat(self.quat_world_cmd, self._quat_step, self.quat_world_cmd)
            mujoco.mju_normalize4(self.quat_world_cmd)

        tx, ty, tz = self._xpos.tolist()
        ex, ey, ez = px - tx, py - ty, pz - tz
        self._rotation_error(self._rot_err)
        e3, e4, e5 = self._rot_err.tolist()
        limit = self.max_lead_translation
        lead = math.sqrt(ex * ex + ey * ey + ez * ez)
        if lead > limit:
            f = limit / lead
            ex, ey, ez = ex * f, ey * f, ez * f
            px, py, pz = tx + ex, ty + ey, tz + ez
        limit = self.max_lead_rotation
        lead = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
        if lead > limit:
            f = limit / lead
            e3, e4, e5 = e3 * f, e4 * f, e5 * f
            self._quat_step[:] = _quat_from_rotvec(e3, e4, e5)
            mujoco.mju_mulQuat(self.quat_world_cmd, self._quat_step, self._quat_tcp)
        self.p_world_cmd[:] = px, py, pz

        gain = self._ff_gain
        ex, ey, ez = ex + gain * (px - bx), ey + gain * (py - by), ez + gain * (pz - bz)
        e3, e4, e5 = e3 + gain * r0, e4 + gain * r1, e5 + gain * r2
        limit = self.max_lead_translation
        norm = math.sqrt(ex * ex + ey * ey + ez * ez)
        if norm > limit:
            f = limit / norm
            ex, ey, ez = ex * f, ey * f, ez * f
        limit = self.max_lead_rotation
        norm = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
        if norm > limit:
            f = limit / norm
            e3, e4, e5 = e3 * f, e4 * f, e5 * f
        error = self._error
        error[:] = ex, ey, ez, e3, e4, e5

        self._track(error)

    def _track(self, error: np.ndarray) -> None:
        """Writes the actuator commands that take the tool along ``error`` (the lead-limited pose
        error plus feed-forward, world frame): here joint targets; a subclass drives its own actuators."""
        # The damped least-squares solve stays in numpy/LAPACK: OpenBLAS's kernels fuse
        # multiply-adds, so no other formulation gives the same bits.
        j = self._jac_arm
        mujoco.mj_jacSite(self.model, self.data, self._jac[:3], self._jac[3:], self.tcp_site)
        j[...] = self._jac[:, self._arm_dofs]
        np.matmul(j, j.T, out=self._jjt)
        self._jjt += self._damping_eye
        np.matmul(j.T, np.linalg.solve(self._jjt, error), out=self._dq)
        # np.clip's Python wrapper costs more than maximum and minimum, which give its bits.
        target = np.add(self.data.qpos[self._qpos_index], self._dq, out=self._target)
        np.minimum(np.maximum(target, self.ctrl_low, out=target), self.ctrl_high, out=target)
        self.data.ctrl[self._ctrl_index] = target
