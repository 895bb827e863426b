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

__all__ = ["CartesianController", "clip_float", "float_packer", "index_of", "mul_quat", "normalize_quat",
           "quat_from_mat", "quat_from_rotvec", "quat_to_rotvec", "rotate_transposed", "rotvec_from_quat"]

_MINVAL = 1e-15  # MuJoCo's mjMINVAL


def float_packer(n: int) -> Callable[..., None]:
    """``pack(buffer, byte_offset, *values)``: ``n`` floats into a C-contiguous float64 buffer (an
    array or a view) in one call, a fraction of the cost of numpy's item or slice writes from floats."""
    return struct.Struct(f"{n}d").pack_into


_PACK3, _PACK4, _PACK6 = float_packer(3), float_packer(4), float_packer(6)


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


# Quaternion arithmetic on floats, for the per-step hot path: through the Python bindings, one mju_*
# call on 4-vectors costs 5000-8000 CPU instructions, mostly argument conversion (mju_mulQuat about
# 7800, `mul_quat` about 3900), and the floats need no array read or written around them.
# `quat_from_mat` and `quat_to_rotvec` give the bits of mju_mat2Quat and mju_quat2Vel; `mul_quat` and
# `normalize_quat` round as written, within an ulp or two of mju_mulQuat and mju_normalize4 (whose
# compiled code fuses multiply-adds). tests/test_hot_path.py checks both.

def mul_quat(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """The Hamilton product ``a b`` of two quaternions given as four floats (as mju_mulQuat)."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return (a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3, a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2,
            a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1, a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0)


def normalize_quat(q: Sequence[float]) -> tuple[float, float, float, float]:
    """``q`` scaled to unit length (as mju_normalize4: left as is within 1e-15 of it, identity if ~0)."""
    w, x, y, z = q
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    if norm < _MINVAL:
        return 1.0, 0.0, 0.0, 0.0
    if abs(norm - 1.0) > _MINVAL:
        f = 1.0 / norm
        return w * f, x * f, y * f, z * f
    return w, x, y, z


def quat_from_mat(m: Sequence[float]) -> tuple[float, float, float, float]:
    """The unit quaternion of a rotation matrix given row by row as nine floats (as mju_mat2Quat):
    Shepperd's method, from the largest of the four components."""
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = m
    if m0 + m4 + m8 > 0:
        w = 0.5 * math.sqrt(1 + m0 + m4 + m8)
        q = w, 0.25 * (m7 - m5) / w, 0.25 * (m2 - m6) / w, 0.25 * (m3 - m1) / w
    elif m0 > m4 and m0 > m8:
        x = 0.5 * math.sqrt(1 + m0 - m4 - m8)
        q = 0.25 * (m7 - m5) / x, x, 0.25 * (m1 + m3) / x, 0.25 * (m2 + m6) / x
    elif m4 > m8:
        y = 0.5 * math.sqrt(1 - m0 + m4 - m8)
        q = 0.25 * (m2 - m6) / y, 0.25 * (m1 + m3) / y, y, 0.25 * (m5 + m7) / y
    else:
        z = 0.5 * math.sqrt(1 - m0 - m4 + m8)
        q = 0.25 * (m3 - m1) / z, 0.25 * (m2 + m6) / z, 0.25 * (m5 + m7) / z, z
    return normalize_quat(q)


def quat_to_rotvec(q: Sequence[float]) -> tuple[float, float, float]:
    """``log``: the rotation vector of a unit quaternion given as four floats, angle in ``[-pi, pi]``
    about the quaternion's axis (as mju_quat2Vel with dt 1)."""
    w, x, y, z = q
    norm = math.sqrt(x * x + y * y + z * z)
    if norm < _MINVAL:
        x, y, z = 1.0, 0.0, 0.0
    else:
        f = 1.0 / norm
        x, y, z = x * f, y * f, z * f
    angle = 2 * math.atan2(norm, w)
    if angle > math.pi:
        angle -= 2 * math.pi
    return x * angle, y * angle, z * angle


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
        self._ctrl_low, self._ctrl_high = self.ctrl_low.tolist(), self.ctrl_high.tolist()
        self._qpos_index, self._ctrl_index = index_of(qpos_adr), index_of(actuator_ids)
        # The arm's joint positions and controls as views where they are contiguous (a gather otherwise).
        self._arm_qpos = data.qpos[self._qpos_index] if isinstance(self._qpos_index, slice) else None
        self._arm_ctrl = data.ctrl[self._ctrl_index] if isinstance(self._ctrl_index, slice) else None
        self._jac = np.zeros((6, model.nv))
        self._jacp, self._jacr = self._jac[:3], self._jac[3:]
        # The arm's 6x6 block: the Jacobian itself where the arm's dofs are all the model's.
        arm_dofs = index_of(dof_adr)
        self._arm_dofs = None if arm_dofs == slice(0, model.nv) else arm_dofs
        self._jac_arm = self._jac if self._arm_dofs is None else np.empty((6, 6))
        self._damping_flat = self._damping_eye.ravel()
        self._jjt = np.empty((6, 6))
        self._jjt_flat = self._jjt.ravel()  # a view
        self._error = np.empty(6)
        self._solved = np.empty(6)
        self._dq = np.empty(6)
        self._xpos, self._xmat = data.site_xpos[tcp_site], data.site_xmat[tcp_site]

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

    def _rotation_error(self, quat_cmd: Sequence[float]) -> tuple[tuple[float, float, float], tuple[float, ...]]:
        """``(log(q_cmd q_tcp^-1), q_tcp)``: the rotation error (rad, world frame) and the TCP's quaternion."""
        q_tcp = quat_from_mat(self._xmat.tolist())
        w, x, y, z = q_tcp
        return quat_to_rotvec(mul_quat(quat_cmd, (w, -x, -y, -z))), q_tcp

    def pose_error(self, out: np.ndarray | None = None) -> np.ndarray:
        """``[p_cmd - p_tcp, log(q_cmd q_tcp^-1)]`` in the world frame (m, rad), into ``out`` if given."""
        error = np.empty(6) if out is None else out
        (cx, cy, cz), (tx, ty, tz) = self.p_world_cmd.tolist(), self._xpos.tolist()
        (e3, e4, e5), _ = self._rotation_error(self.quat_world_cmd.tolist())
        if error.dtype == np.float64 and error.flags.c_contiguous:
            _PACK6(error, 0, cx - tx, cy - ty, cz - tz, e3, e4, e5)
        else:
            error[:] = cx - tx, cy - ty, cz - tz, e3, e4, e5
        return error

    def command(self, action: np.ndarray) -> None:
        """Moves the commanded pose by a normalized action and writes joint targets to ``data.ctrl``."""
        # On floats and with locals: on 3-vectors numpy and attribute lookups cost more than the arithmetic.
        a0, a1, a2, a3, a4, a5 = action.tolist()[:6]
        bx, by, bz = self.p_world_cmd.tolist()
        q_cmd = self.quat_world_cmd.tolist()  # the array is the command: others may set it
        t, (lx, ly, lz), (hx, hy, hz) = self.max_translation, self._ws_min, self._ws_max
        # Clipped to the workspace as np.clip clips (the action and the command are finite).
        px, py, pz = bx + t * a0, by + t * a1, bz + t * a2
        px = lx if px < lx else hx if px > hx else px
        py = ly if py < ly else hy if py > hy else py
        pz = lz if pz < lz else hz if pz > hz else pz
        r = self.max_rotation
        r0, r1, r2 = a3 * r, a4 * r, a5 * r
        rotated = bool(r0 or r1 or r2)
        if rotated:
            q_cmd = normalize_quat(mul_quat(_quat_from_rotvec(r0, r1, r2), q_cmd))

        tx, ty, tz = self._xpos.tolist()
        ex, ey, ez = px - tx, py - ty, pz - tz
        (e3, e4, e5), q_tcp = self._rotation_error(q_cmd)
        limit_p, limit_r = self.max_lead_translation, self.max_lead_rotation
        lead = math.sqrt(ex * ex + ey * ey + ez * ez)
        if lead > limit_p:
            f = limit_p / lead
            ex, ey, ez = ex * f, ey * f, ez * f
            px, py, pz = tx + ex, ty + ey, tz + ez
        lead = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
        if lead > limit_r:
            f = limit_r / lead
            e3, e4, e5 = e3 * f, e4 * f, e5 * f
            q_cmd, rotated = mul_quat(_quat_from_rotvec(e3, e4, e5), q_tcp), True
        if rotated:
            _PACK4(self.quat_world_cmd, 0, *q_cmd)
        _PACK3(self.p_world_cmd, 0, px, py, pz)

        gain = self._ff_gain
        ex, ey, ez = ex + gain * (px - bx), ey + gain * (py - by), ez + gain * (pz - bz)
        e3, e4, e5 = e3 + gain * r0, e4 + gain * r1, e5 + gain * r2
        norm = math.sqrt(ex * ex + ey * ey + ez * ez)
        if norm > limit_p:
            f = limit_p / norm
            ex, ey, ez = ex * f, ey * f, ez * f
        norm = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
        if norm > limit_r:
            f = limit_r / norm
            e3, e4, e5 = e3 * f, e4 * f, e5 * f
        _PACK6(self._error, 0, ex, ey, ez, e3, e4, e5)

        self._track(self._error)

    def _track(self, error: np.ndarray) -> None:
        """Writes the actuator commands that take the tool along ``error`` (the lead-limited pose
        error plus feed-forward, world frame): here joint targets; a subclass drives its own actuators."""
        # Damped least squares by Cholesky, in MuJoCo's own routines: a handful of calls where
        # numpy's matmul and solve wrappers cost several times the arithmetic on a 6x6 system.
        m, d, j, jjt = self.model, self.data, self._jac_arm, self._jjt
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.tcp_site)
        if self._arm_dofs is not None:
            j[...] = self._jac[:, self._arm_dofs]
        mujoco.mju_mulMatMatT(jjt, j, j)
        mujoco.mju_addTo(self._jjt_flat, self._damping_flat)
        mujoco.mju_cholFactor(jjt, 0.0)
        mujoco.mju_cholSolve(self._solved, jjt, error)
        mujoco.mju_mulMatTVec(self._dq, j, self._solved)
        # Joint targets on floats: clipped as np.clip clips (NaN stays NaN).
        q = (self._arm_qpos if self._arm_qpos is not None else d.qpos[self._qpos_index]).tolist()
        target = [lo if x < lo else hi if x > hi else x
                  for x, lo, hi in zip(map(float.__add__, q, self._dq.tolist()), self._ctrl_low, self._ctrl_high,
                                       strict=True)]
        if self._arm_ctrl is not None:
            _PACK6(self._arm_ctrl, 0, *target)
        else:
            d.ctrl[self._ctrl_index] = target
