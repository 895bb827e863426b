"""Cartesian tool control: a commanded TCP pose, moved by actions and tracked by differential IK.

Frames: ``world`` is the cell frame; ``tcp`` is the tool centre point site. Quaternions are
``(w, x, y, z)`` as everywhere in MuJoCo.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

import mujoco
import numpy as np

from skillcell.envs import kernels

__all__ = ["CartesianController", "clip_float", "float_packer", "index_of", "mul_quat", "quat_from_rotvec",
           "rotate_transposed", "rotvec_from_quat"]

def float_packer(n: int) -> Callable[..., None]:
    """``pack(buffer, byte_offset, *values)``: ``n`` floats into a C-contiguous float64 buffer (an
    array or a view) in one call, a fraction of the cost of numpy's item or slice writes from floats."""
    return struct.Struct(f"{n}d").pack_into


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


# The quaternion product on floats, for what runs once per seam frame (a curved seam's every step):
# through the Python bindings one mju_* call on 4-vectors costs ~7800 CPU instructions, mostly argument
# conversion, `mul_quat` ~3900. It rounds as written, within an ulp or two of mju_mulQuat (whose compiled
# code orders the sums otherwise): tests/test_hot_path.py. The per-step quaternion arithmetic is compiled
# (`skillcell.envs.kernels`: mju_mat2Quat's and mju_quat2Vel's bits).

def mul_quat(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """The Hamilton product ``a b`` of two quaternions given as four floats (as mju_mulQuat)."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return (a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3, a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2,
            a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1, a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0)


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
        # Read-only (properties): the kernel holds its own copies.
        self._max_translation, self._max_rotation = max_translation, max_rotation
        self._max_lead_translation, self._max_lead_rotation = max_lead_translation, max_lead_rotation
        self._workspace_min, self._workspace_max = workspace_min, workspace_max
        self.ctrl_low = model.actuator_ctrlrange[actuator_ids, 0].copy()
        self.ctrl_high = model.actuator_ctrlrange[actuator_ids, 1].copy()
        self._damping_eye = damping**2 * np.eye(6)
        #: the lag of a constant-velocity command without feed-forward (s)
        self.servo_time_constant = self._lag_time(model, actuator_ids)
        self._feedforward_time = velocity_feedforward * self.servo_time_constant
        self.control_dt = control_dt
        self.p_world_cmd = np.zeros(3)
        self.quat_world_cmd = np.array([1.0, 0.0, 0.0, 0.0])
        # Hot path (once per control step): the arithmetic is compiled (`kernel`), bound here to
        # buffers that never move: views into mjData and the controller's own arrays.
        self._jac = np.zeros((6, model.nv))
        self._jacp, self._jacr = self._jac[:3], self._jac[3:]
        self._error = np.empty(6)
        self._dq = np.empty(6)
        self._xpos, self._xmat = data.site_xpos[tcp_site], data.site_xmat[tcp_site]
        #: the per-step arithmetic (`skillcell.envs.kernels.Controller`), bound to this controller's
        #: buffers and to its limits as they are now: they are fixed for the controller's lifetime
        self.kernel = kernels.Controller(
            xpos=self._xpos, xmat=self._xmat, qpos=data.qpos, ctrl=data.ctrl, jac=self._jac, p_cmd=self.p_world_cmd,
            q_cmd=self.quat_world_cmd, error=self._error, dq=self._dq, qpos_index=np.asarray(qpos_adr).tolist(),
            ctrl_index=np.asarray(actuator_ids).tolist(), dof_index=np.asarray(dof_adr).tolist(),
            ctrl_low=self.ctrl_low.tolist(), ctrl_high=self.ctrl_high.tolist(),
            workspace_min=np.asarray(workspace_min, float).tolist(),
            workspace_max=np.asarray(workspace_max, float).tolist(), max_translation=float(max_translation),
            max_rotation=float(max_rotation), max_lead_translation=float(max_lead_translation),
            max_lead_rotation=float(max_lead_rotation), feedforward_gain=self._feedforward_time / control_dt,
            damping=float(self._damping_eye[0, 0]))

    max_translation = property(lambda self: self._max_translation, doc="command step at action 1.0 (m)")
    max_rotation = property(lambda self: self._max_rotation, doc="command rotation at action 1.0 (rad)")
    max_lead_translation = property(lambda self: self._max_lead_translation,
                                    doc="the command's largest lead on the TCP (m)")
    max_lead_rotation = property(lambda self: self._max_lead_rotation,
                                 doc="the command's largest lead on the TCP (rad)")
    workspace_min = property(lambda self: self._workspace_min, doc="the command's workspace box, low corner (m)")
    workspace_max = property(lambda self: self._workspace_max, doc="the command's workspace box, high corner (m)")
    feedforward_time = property(lambda self: self._feedforward_time, doc="the velocity feed-forward's tau (s)")

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

    def pose_error(self, out: np.ndarray | None = None) -> np.ndarray:
        """``[p_cmd - p_tcp, log(q_cmd q_tcp^-1)]`` in the world frame (m, rad), into ``out`` if given."""
        error = np.empty(6) if out is None else out
        if error.dtype == np.float64 and error.flags.c_contiguous and error.flags.writeable:
            self.kernel.pose_error(error)
        else:
            computed = np.empty(6)
            self.kernel.pose_error(computed)
            error[:] = computed
        return error

    def command(self, action: np.ndarray) -> None:
        """Moves the commanded pose by a normalized action (float64, at least six channels) and writes the
        actuator commands that track it (`_track`)."""
        self.kernel.command(action, False)
        self._track(self._error)

    def _track(self, error: np.ndarray) -> None:
        """Writes the actuator commands that take the tool along ``error`` (the lead-limited pose
        error plus feed-forward, world frame): here joint targets; a subclass drives its own actuators."""
        # Damped least squares by Cholesky, in the kernel (MuJoCo's mju_cholFactor and mju_cholSolve,
        # re-stated): u = clip(q + J^T (J J^T + lambda^2 I)^-1 e), J read by mj_jacSite.
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.tcp_site)
        if error is not self._error:
            self._error[:] = error
        self.kernel.track()
