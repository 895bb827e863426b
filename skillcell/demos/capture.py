"""Importing human tool captures: validate, resample, retarget onto the robot, execute, report.

The capture format (CSV plus a sidecar YAML) is specified in ``docs/capture_format.md``. In short:
a header row, a time column ``t`` (s), the tool pose ``x, y, z`` (in the sidecar's
``length_unit``) and ``qw, qx, qy, qz`` (unit quaternion, capture frame), optional numeric process
columns (``arc_on``, current, voltage, wire feed, force, ...); the sidecar ``<stem>.yaml``
declares ``cell_id``, ``length_unit``, ``capture_to_cell`` and ``provenance``.

How a capture becomes an episode (`import_capture`):

1. **Validate** the whole file before anything else (`read_capture`): every defect named by line
   and column (`skillcell.demos.errors`); nothing is written for a bad capture.
2. **Transform** into the cell frame: ``p_cell = R p + t``, ``q_cell = q_frame * q``, then the
   TCP offset ``tcp_in_tool``; quaternion signs are made continuous (``q`` and ``-q`` are the same
   orientation).
3. **Resample** to the env's control rate: a box filter one control period wide (anti-aliasing:
   tracker noise above the control Nyquist rate is averaged out, not aliased) evaluated at the
   control instants; quaternions are averaged component-wise after sign alignment and
   renormalized, which is accurate for the small rotation within one control period.
4. **Feasibility by inverse kinematics** (mink, `check_kinematics`): every resampled pose is solved
   for the arm's joints, warm-started from the previous one, within the joint limits
   (``mink.ConfigurationLimit``, a QP). Poses the arm cannot reach within 1 mm / 1 deg, poses at a
   joint limit, joint speeds above the UR5e's 180 deg/s and poses outside the controller's
   workspace box are reported. mink is used rather than the env's own damped least squares
   because the DLS step clips joint targets after the fact and cannot say whether a residual
   comes from reach or from a limit; mink's QP enforces the limits and exposes both.
5. **Execute in the simulation** (sim in the loop): the arm starts at rest at the IK solution of
   the first pose; every control step the action is the normalized difference between the pose
   the env's controller currently commands and the captured pose ``lookahead`` seconds ahead
   (scaled down as a whole, keeping its direction, where it exceeds one step's 5 mm or 3 deg: a
   speed violation). The look-ahead is the servo lag the env does not feed forward (``kd/kp``
   minus the cell's feed-forward) less half a control period (the command is held over the
   step), which a capture, unlike a live operator, allows: the executed tool then follows the
   captured path *in time*, not 0.2 s behind it. Reading the command from the env each step
   (not integrating actions open loop) keeps the command on the path after clipping and after
   the controller pulls it back in contact.
6. **Measure** the executed TCP against the captured path (same-instant position and orientation
   error, and distance to the path), contacts of the robot and tool with the cell, and write the
   episode with a feasibility report.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np

from skillcell.config import ConfigError, bounds, from_mapping, parse_yaml, to_mapping
from skillcell.demos._io import sha256_bytes
from skillcell.demos.episode import DatasetWriter, Episode, EpisodeEntry, Provenance
from skillcell.demos.errors import (
    CaptureError,
    CaptureFormatError,
    InfeasibleCaptureError,
    MissingColumnsError,
    NonNumericValueError,
    NonUnitQuaternionError,
    ScaleError,
    TimestampError,
    TruncatedCaptureError,
)
from skillcell.demos.recorder import EpisodeRecorder
from skillcell.envs.registry import cell_spec

__all__ = [
    "POSE_COLUMNS",
    "Capture",
    "CaptureSidecar",
    "FrameTransform",
    "ImportResult",
    "check_kinematics",
    "format_report",
    "import_capture",
    "read_capture",
    "resample_capture",
]

POSE_COLUMNS = ("t", "x", "y", "z", "qw", "qx", "qy", "qz")
#: a quaternion whose norm is further than this from 1 is refused (tracker output is normalized)
QUAT_NORM_TOLERANCE = 0.01
#: no hand-held tool path in a cell spans more than this (m) ...
MAX_PLAUSIBLE_EXTENT_M = 3.0
#: ... or moves faster than this at its median (m/s)
MAX_PLAUSIBLE_MEDIAN_SPEED_M_S = 2.0
#: a path declared in mm that spans less than this (m) over more than a second was probably in m
MIN_PLAUSIBLE_EXTENT_M = 0.0005
#: IK residuals above these are out of reach
REACH_TOLERANCE_M = 1e-3
REACH_TOLERANCE_RAD = math.radians(1.0)
#: IK solutions closer than this to a joint limit count as at the limit
JOINT_LIMIT_MARGIN_RAD = math.radians(1.0)
#: UR5e datasheet: 180 deg/s on every joint
MAX_JOINT_SPEED_RAD_S = math.pi
_FIRST = 10  # how many offending steps a report lists


@dataclass(frozen=True)
class FrameTransform:
    """A rigid transform: ``translation`` (in the capture's ``length_unit``) and ``quat_wxyz``."""

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        norm = math.sqrt(sum(v * v for v in self.quat_wxyz))
        if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
            raise ConfigError(f"quat_wxyz: must be a unit quaternion (w, x, y, z), got norm {norm:.4f}")

    def rotation(self) -> np.ndarray:
        q = np.asarray(self.quat_wxyz, float)
        m = np.empty(9)
        mujoco.mju_quat2Mat(m, q / np.linalg.norm(q))
        return m.reshape(3, 3)

    def quat(self) -> np.ndarray:
        q = np.asarray(self.quat_wxyz, float)
        return q / np.linalg.norm(q)


@dataclass(frozen=True)
class CaptureSidecar:
    """The sidecar ``<stem>.yaml`` of a capture; see ``docs/capture_format.md``.

    ``env_kwargs`` (a mapping for `gym.make`, default ``{randomize: false}``: the operator worked
    on the nominal workpiece) is read separately, as it is free-form.
    """

    cell_id: str
    length_unit: Literal["m", "mm"]
    capture_to_cell: FrameTransform
    provenance: Provenance
    tcp_in_tool: FrameTransform = FrameTransform()
    seed: int = 0
    samples: int | None = None
    task_action_columns: tuple[str, ...] | None = None
    deviation_tolerance_mm: float = field(default=2.0, metadata=bounds(0.001, 1000.0))
    tool_contact_is_collision: bool = True

    @property
    def scale(self) -> float:
        """Metres per capture length unit."""
        return 1e-3 if self.length_unit == "mm" else 1.0


@dataclass
class Capture:
    """A validated capture: raw samples as in the file, and the TCP path in the cell frame (m)."""

    csv_path: Path
    sidecar_path: Path
    sidecar: CaptureSidecar
    env_kwargs: dict[str, Any]
    csv_sha256: str
    t: np.ndarray  # (M,) s
    raw_pose: np.ndarray  # (M, 7) x, y, z (length_unit), qw, qx, qy, qz; capture frame, as in the file
    signals: dict[str, np.ndarray]  # (M,) each, as in the file
    pos_cell: np.ndarray  # (M, 3) TCP position in the cell frame, m
    quat_cell: np.ndarray  # (M, 4) TCP orientation in the cell frame, sign-continuous

    @property
    def duration_s(self) -> float:
        return float(self.t[-1] - self.t[0])


@dataclass
class ImportResult:
    """What `import_capture` wrote: the manifest entry, the episode and the feasibility report."""

    entry: EpisodeEntry
    episode: Episode
    report: dict[str, Any]

    @property
    def feasible(self) -> bool:
        return bool(self.report["feasible"])


# ---------------------------------------------------------------------- reading and validation

def _load_sidecar(path: Path) -> tuple[CaptureSidecar, dict[str, Any]]:
    if not path.is_file():
        raise CaptureError(f"no sidecar YAML: expected {path.name} next to the CSV (cell_id, length_unit, "
                           "capture_to_cell, provenance)", path)
    try:
        data = parse_yaml(path.read_text())
    except ConfigError as exc:
        raise CaptureError(str(exc), path) from None
    except UnicodeDecodeError:
        raise CaptureError("the sidecar is not a UTF-8 text file", path) from None
    if not isinstance(data, dict):
        raise CaptureError("the sidecar must be a mapping", path)
    env_kwargs = data.pop("env_kwargs", {"randomize": False})
    if not isinstance(env_kwargs, dict):
        raise CaptureError(f"env_kwargs: expected a mapping, got {type(env_kwargs).__name__}", path)
    try:
        sidecar = from_mapping(CaptureSidecar, data)
    except ConfigError as exc:
        raise CaptureError(str(exc), path) from None
    import skillcell

    if sidecar.cell_id not in skillcell.skillcell_env_ids():
        raise CaptureError(f"cell_id: unknown cell {sidecar.cell_id!r}; registered: "
                           f"{', '.join(skillcell.skillcell_env_ids())}", path)
    if not sidecar.provenance.consent:
        raise CaptureError("provenance.consent: is false; a person's motion is recorded only with their consent",
                           path)
    if not sidecar.provenance.operator_id.strip():
        raise CaptureError("provenance.operator_id: must not be empty", path)
    return sidecar, env_kwargs


def _parse_csv(path: Path, text: str, declared_rows: int | None) -> tuple[list[str], np.ndarray]:
    lines = text.splitlines(keepends=True)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise CaptureFormatError("the file is empty", path)
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise CaptureFormatError(f"duplicate columns {duplicates}", path, line=1)
    missing = [c for c in POSE_COLUMNS if c not in header]
    if missing:
        raise MissingColumnsError(f"missing required columns {missing} (header: {', '.join(header)}); "
                                  f"a capture needs {', '.join(POSE_COLUMNS)}", path, line=1)
    if len(lines) < 3:
        raise CaptureFormatError(f"{len(lines) - 1} data rows; a capture needs at least 2", path)
    width = len(header)
    values = np.empty((len(lines) - 1, width))
    last = len(lines) - 1
    for i, row in enumerate(csv.reader(lines[1:])):
        line_no = i + 2
        is_last = i + 1 == last
        unterminated = is_last and not lines[-1].endswith(("\n", "\r"))
        if len(row) != width:
            if is_last and len(row) < width:
                raise TruncatedCaptureError(f"the last row has {len(row)} of {width} fields: the file is truncated",
                                            path, line=line_no)
            raise CaptureFormatError(f"row has {len(row)} fields, the header has {width}", path, line=line_no)
        for j, raw in enumerate(row):
            cell = raw.strip()
            if not cell:
                if unterminated and j == width - 1:
                    raise TruncatedCaptureError("the last row ends in an empty field without a newline: the file "
                                                "is truncated", path, line=line_no, column=header[j])
                raise NonNumericValueError("empty value", path, line=line_no, column=header[j])
            try:
                v = float(cell)
            except ValueError:
                raise NonNumericValueError(f"{cell!r} is not a number", path, line=line_no,
                                           column=header[j]) from None
            if not math.isfinite(v):
                raise NonNumericValueError(f"{cell!r} is not finite (dropped sample?)", path, line=line_no,
                                           column=header[j])
            values[i, j] = v
    if declared_rows is not None and len(values) != declared_rows:
        kind = TruncatedCaptureError if len(values) < declared_rows else CaptureFormatError
        raise kind(f"{len(values)} data rows, but the sidecar declares samples: {declared_rows}"
                   + (": the file is truncated" if len(values) < declared_rows else ""), path)
    return header, values


def _check_timestamps(path: Path, t: np.ndarray) -> None:
    dt = np.diff(t)
    duplicate = np.flatnonzero(dt == 0)
    if duplicate.size:
        i = int(duplicate[0])
        raise TimestampError(f"duplicate timestamp t={float(t[i])!r} s (also on line {i + 2}); {duplicate.size} "
                             "duplicate(s) in the file", path, line=i + 3, column="t")
    back = np.flatnonzero(dt < 0)
    if back.size:
        i = int(back[0])
        raise TimestampError(f"timestamps are not monotonic: t goes back from {float(t[i])!r} s (line {i + 2}) "
                             f"to {float(t[i + 1])!r} s; {back.size} backward step(s) in the file", path, line=i + 3,
                             column="t")


def _check_quaternions(path: Path, quat: np.ndarray) -> None:
    norms = np.linalg.norm(quat, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > QUAT_NORM_TOLERANCE)
    if bad.size:
        i = int(bad[0])
        raise NonUnitQuaternionError(
            f"quaternion (qw, qx, qy, qz) has norm {norms[i]:.4f}, not 1 (tolerance {QUAT_NORM_TOLERANCE}); "
            f"{bad.size} of {len(quat)} rows; the columns must hold a unit quaternion, w first",
            path, line=i + 2, column="qw")


def _check_scale(path: Path, t: np.ndarray, pos_m: np.ndarray, unit: str) -> None:
    extent = float(np.linalg.norm(pos_m.max(axis=0) - pos_m.min(axis=0)))
    speed = np.linalg.norm(np.diff(pos_m, axis=0), axis=1) / np.diff(t)
    median_speed = float(np.median(speed))
    if extent > MAX_PLAUSIBLE_EXTENT_M or median_speed > MAX_PLAUSIBLE_MEDIAN_SPEED_M_S:
        hint = (f"; read as millimetres it would span {extent:.1f} mm at {median_speed:.1f} mm/s: "
                "is the capture in mm? set length_unit: mm" if unit == "m" else "")
        raise ScaleError(f"implausible scale for length_unit {unit!r}: the path spans {extent:.3g} m and moves at a "
                         f"median {median_speed:.3g} m/s (limits {MAX_PLAUSIBLE_EXTENT_M} m, "
                         f"{MAX_PLAUSIBLE_MEDIAN_SPEED_M_S} m/s){hint}", path, column="x")
    if unit == "mm" and extent < MIN_PLAUSIBLE_EXTENT_M and t[-1] - t[0] > 1.0:
        raise ScaleError(f"implausible scale for length_unit 'mm': the whole path spans {extent * 1e3:.4f} mm "
                         f"over {t[-1] - t[0]:.1f} s; read as metres it would span {extent * 1e3:.1f} mm: is the "
                         "capture in m? set length_unit: m", path, column="x")


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) arrays (w, x, y, z)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotates vectors ``v`` (..., 3) by unit quaternions ``q`` (..., 4)."""
    w, u = q[..., :1], q[..., 1:]
    return v + 2.0 * np.cross(u, np.cross(u, v) + w * v)


def _continuous(quat: np.ndarray) -> np.ndarray:
    """Flips signs so that consecutive quaternions lie in the same hemisphere."""
    dots = np.einsum("ij,ij->i", quat[1:], quat[:-1])
    signs = np.concatenate([[1.0], np.cumprod(np.where(dots < 0, -1.0, 1.0))])
    return quat * signs[:, None]


def read_capture(csv_path: str | Path, sidecar_path: str | Path | None = None) -> Capture:
    """Reads and validates a capture; raises a `CaptureError` subclass naming any defect.

    Args:
        csv_path: the CSV file.
        sidecar_path: its sidecar YAML; default: the CSV's path with the suffix ``.yaml``.
    """
    csv_path = Path(csv_path)
    sidecar_path = Path(sidecar_path) if sidecar_path is not None else csv_path.with_suffix(".yaml")
    if not csv_path.is_file():
        raise CaptureError("no such file", csv_path)
    sidecar, env_kwargs = _load_sidecar(sidecar_path)
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaptureFormatError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", csv_path) from None
    header, values = _parse_csv(csv_path, text, sidecar.samples)
    column = {name: values[:, header.index(name)] for name in header}
    t = column["t"]
    _check_timestamps(csv_path, t)
    raw_pose = np.stack([column[c] for c in POSE_COLUMNS[1:]], axis=1)
    _check_quaternions(csv_path, raw_pose[:, 3:])
    pos_m = raw_pose[:, :3] * sidecar.scale
    _check_scale(csv_path, t, pos_m, sidecar.length_unit)
    signals = {name: column[name] for name in header if name not in POSE_COLUMNS}
    unknown = [c for c in (sidecar.task_action_columns or ()) if c not in signals]
    if unknown:
        raise MissingColumnsError(f"task_action_columns names columns the CSV does not have: {unknown}", csv_path,
                                  line=1)

    frame, tool = sidecar.capture_to_cell, sidecar.tcp_in_tool
    quat = _continuous(raw_pose[:, 3:] / np.linalg.norm(raw_pose[:, 3:], axis=1, keepdims=True))
    quat_tool = _quat_mul(np.broadcast_to(frame.quat(), quat.shape), quat)
    pos_tool = pos_m @ frame.rotation().T + np.asarray(frame.translation) * sidecar.scale
    pos_cell = pos_tool + _quat_rotate(quat_tool, np.broadcast_to(np.asarray(tool.translation) * sidecar.scale,
                                                                  pos_tool.shape))
    quat_cell = _continuous(_quat_mul(quat_tool, np.broadcast_to(tool.quat(), quat_tool.shape)))
    return Capture(csv_path=csv_path, sidecar_path=sidecar_path, sidecar=sidecar, env_kwargs=env_kwargs,
                   csv_sha256=sha256_bytes(data), t=t, raw_pose=raw_pose, signals=signals, pos_cell=pos_cell,
                   quat_cell=quat_cell)


# ---------------------------------------------------------------------- resampling

def _box_filter(t: np.ndarray, values: np.ndarray, t_out: np.ndarray, width: float) -> np.ndarray:
    """Mean of the piecewise-linear signal over ``[t - w/2, t + w/2]`` at each ``t_out``.

    The window shrinks symmetrically at the ends of the capture (to a point sample at the first
    and last instant), so a steady motion is not biased there. Works on irregular sampling: it
    differences the running trapezoid integral.
    """
    values = values.reshape(len(t), -1)
    dt = np.diff(t)[:, None]
    integral = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(0.5 * (values[1:] + values[:-1]) * dt, axis=0)])
    half = np.minimum.reduce([np.full_like(t_out, width / 2), t_out - t[0], t[-1] - t_out])
    half = np.maximum(half, 0.0)
    out = np.empty((len(t_out), values.shape[1]))
    point = half < 1e-9
    for j in range(values.shape[1]):
        lo = _integral_at(t, values[:, j], integral[:, j], t_out - half)
        hi = _integral_at(t, values[:, j], integral[:, j], t_out + half)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = (hi - lo) / (2 * half)
        out[point, j] = np.interp(t_out[point], t, values[:, j])
    return out


def _integral_at(t: np.ndarray, v: np.ndarray, integral: np.ndarray, tq: np.ndarray) -> np.ndarray:
    """The running integral of the linear interpolant of ``v``, exactly, at times ``tq``."""
    i = np.clip(np.searchsorted(t, tq, side="right") - 1, 0, len(t) - 2)
    h = tq - t[i]
    slope = (v[i + 1] - v[i]) / (t[i + 1] - t[i])
    return integral[i] + v[i] * h + 0.5 * slope * h * h


def resample_capture(capture: Capture, times: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray,
                                                                                 dict[str, np.ndarray]]:
    """``(pos (K, 3) m, quat (K, 4), signals)`` of the capture at ``times`` (s, absolute), box-filtered."""
    times = np.clip(times, capture.t[0], capture.t[-1])
    pos = _box_filter(capture.t, capture.pos_cell, times, width)
    quat = _box_filter(capture.t, capture.quat_cell, times, width)
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    signals = {name: _box_filter(capture.t, v, times, width)[:, 0] for name, v in capture.signals.items()}
    return pos, quat, signals


# ---------------------------------------------------------------------- kinematics

@dataclass
class KinematicsCheck:
    """Per-pose results of `check_kinematics`: joints, residuals and flags."""

    qpos: np.ndarray  # (K, 6) rad
    position_error: np.ndarray  # (K,) m
    orientation_error: np.ndarray  # (K,) rad
    at_limit: np.ndarray  # (K, 6) bool
    joint_names: list[str]

    @property
    def out_of_reach(self) -> np.ndarray:
        return (self.position_error > REACH_TOLERANCE_M) | (self.orientation_error > REACH_TOLERANCE_RAD)


def check_kinematics(cell, pos: np.ndarray, quat: np.ndarray, q_start: np.ndarray, *, first_iterations: int = 300,
                     iterations: int = 20) -> KinematicsCheck:
    """Solves the arm's IK for each TCP pose (cell frame) with mink, warm-started along the path.

    A `mink.FrameTask` on the TCP site, a light `mink.PostureTask` towards ``q_start`` (so that
    redundant wrist solutions do not wander), and `mink.ConfigurationLimit` (joint limits as QP
    constraints), solved with daqp. Each pose iterates until its residual is below 10 um and
    0.01 deg or the iterations run out; the residual left is what the arm cannot reach.
    """
    import mink

    m = cell.model
    configuration = mink.Configuration(m, q=np.asarray(q_start, float).copy())
    site = m.site(cell.tcp_site).name
    frame = mink.FrameTask(site, "site", position_cost=1.0, orientation_cost=1.0)
    posture = mink.PostureTask(m, cost=1e-4)
    posture.set_target(np.asarray(q_start, float))
    limits = [mink.ConfigurationLimit(m)]
    k = len(pos)
    qpos = np.empty((k, m.nq))
    position_error, orientation_error = np.empty(k), np.empty(k)
    for i in range(k):
        frame.set_target(mink.SE3.from_rotation_and_translation(mink.SO3(quat[i]), pos[i]))
        for _ in range(first_iterations if i == 0 else iterations):
            # dt only scales the velocity the QP returns; 1 makes it a full Gauss-Newton step.
            velocity = mink.solve_ik(configuration, [frame, posture], dt=1.0, solver="daqp", limits=limits,
                                     damping=1e-9)
            configuration.integrate_inplace(velocity, 1.0)
            error = frame.compute_error(configuration)
            if np.linalg.norm(error[:3]) < 1e-5 and np.linalg.norm(error[3:]) < 1e-4:
                break
        qpos[i] = configuration.q
        position_error[i] = np.linalg.norm(error[:3])
        orientation_error[i] = np.linalg.norm(error[3:])
    arm = cell.arm_qpos_adr
    joints = m.dof_jntid[cell.arm_dof_adr]
    low, high = m.jnt_range[joints].T
    q_arm = qpos[:, arm]
    at_limit = (q_arm - low < JOINT_LIMIT_MARGIN_RAD) | (high - q_arm < JOINT_LIMIT_MARGIN_RAD)
    return KinematicsCheck(qpos=q_arm, position_error=position_error, orientation_error=orientation_error,
                           at_limit=at_limit, joint_names=[m.joint(j).name for j in joints])


# ---------------------------------------------------------------------- execution

def _rotvec(quat: np.ndarray) -> np.ndarray:
    out = np.empty(3)
    mujoco.mju_quat2Vel(out, quat, 1.0)
    return out


def _quat_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between orientations given as (..., 4) unit quaternions."""
    dots = np.abs(np.einsum("...i,...i->...", a, b))
    return 2.0 * np.arccos(np.clip(dots, 0.0, 1.0))


def _steps_summary(mask: np.ndarray, times: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(mask)
    return {"count": int(idx.size), "first_steps": idx[:_FIRST].tolist(),
            "first_times_s": [round(float(times[i]), 4) for i in idx[:_FIRST]]}


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"max": 0.0, "mean": 0.0, "rms": 0.0, "p95": 0.0}
    return {"max": round(float(values.max()), 6), "mean": round(float(values.mean()), 6),
            "rms": round(float(np.sqrt(np.mean(values**2))), 6), "p95": round(float(np.percentile(values, 95)), 6)}


def _path_distance(points: np.ndarray, path: np.ndarray, window: int = 40) -> np.ndarray:
    """Distance from each point to the polyline ``path`` (segments within ``window`` steps of it)."""
    out = np.empty(len(points))
    a, b = path[:-1], path[1:]
    ab = b - a
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-18)
    for i, p in enumerate(points):
        lo, hi = max(0, i - window), min(len(a), i + window)
        s = np.clip(np.einsum("ij,ij->i", p - a[lo:hi], ab[lo:hi]) / length2[lo:hi], 0.0, 1.0)
        closest = a[lo:hi] + s[:, None] * ab[lo:hi]
        out[i] = np.sqrt(np.min(np.sum((closest - p) ** 2, axis=1)))
    return out


class _ContactLog:
    """Counts, per control step, contacts of the robot and of the tool with anything else."""

    def __init__(self, cell):
        from skillcell.envs.cell import ROBOT_PREFIX, TOOL_PREFIX

        m = cell.model
        names = [m.body(m.geom_bodyid[g]).name for g in range(m.ngeom)]
        self.kind = np.array([2 if n.startswith(TOOL_PREFIX) else 1 if n.startswith(ROBOT_PREFIX) else 0
                              for n in names])
        self.geom_names = [m.geom(g).name or f"{names[g]}#{g}" for g in range(m.ngeom)]
        self.robot_steps = self.tool_steps = 0
        self.robot_mask: list[bool] = []
        self.pairs: dict[str, int] = {}

    def record(self, data: mujoco.MjData) -> None:
        robot = tool = False
        seen = set()
        for c in range(data.ncon):
            g1, g2 = int(data.contact.geom1[c]), int(data.contact.geom2[c])
            kinds = {int(self.kind[g1]), int(self.kind[g2])}
            if kinds == {0} or kinds == {2}:
                continue  # the cell touching itself, or the tool itself
            if 1 in kinds:
                robot = True
            else:
                tool = True
            pair = " | ".join(sorted((self.geom_names[g1], self.geom_names[g2])))
            if pair not in seen:
                seen.add(pair)
                self.pairs[pair] = self.pairs.get(pair, 0) + 1
        self.robot_steps += robot
        self.tool_steps += tool
        self.robot_mask.append(robot)


def import_capture(csv_path: str | Path, out: str | Path, *, sidecar: str | Path | None = None,
                   progress: bool = True) -> ImportResult:
    """Imports a capture into the dataset folder ``out``: one episode plus its feasibility report.

    Raises a `CaptureError` subclass for a bad capture, before anything is written. An episode
    is written even where the report finds problems (it records what the robot really did); the
    report's ``feasible`` and ``problems`` say what they are.
    """
    from tqdm.auto import tqdm

    capture = read_capture(csv_path, sidecar)
    side = capture.sidecar
    # The episode lasts as long as the capture: no registered time limit, a TimeLimit of its own.
    env = gym.make(side.cell_id, max_episode_steps=-1, **capture.env_kwargs)
    try:
        n = math.floor(capture.duration_s / env.unwrapped.control_dt + 1e-9)
        if n < 1:
            raise CaptureFormatError(f"the capture lasts {capture.duration_s:.4f} s, less than one control step "
                                     f"({env.unwrapped.control_dt} s)", capture.csv_path)
        env = gym.wrappers.TimeLimit(env, max_episode_steps=n)
        cell = env.unwrapped
        control = cell.config.control
        step_translation = control.max_translation_mm * 1e-3
        step_rotation = math.radians(control.max_rotation_deg)
        task_size = cell.action_space.shape[0] - 6
        task_columns = side.task_action_columns
        if task_columns is None:
            # The cell's registration says which capture signal drives which task channel.
            declared = cell_spec(side.cell_id).capture_signals
            task_columns = declared if declared and all(c in capture.signals for c in declared) else ()
        if len(task_columns) not in (0, task_size):
            raise CaptureError(f"task_action_columns: {side.cell_id} has {task_size} task action channel(s), "
                               f"got {list(task_columns)}", capture.sidecar_path)

        t0 = capture.t[0]
        times = t0 + np.arange(n + 1) * cell.control_dt
        width = cell.control_dt
        pos, quat, signals = resample_capture(capture, times, width)
        lookahead = max(0.0, cell.controller.servo_time_constant - cell.controller.feedforward_time
                        - 0.5 * cell.control_dt)
        ahead_pos, ahead_quat, _ = resample_capture(capture, times + lookahead, width)

        recorder = EpisodeRecorder(env, None, source="capture", provenance=side.provenance,
                                   policy={"name": "capture-retarget", "lookahead_s": lookahead})
        recorder.reset(seed=side.seed)
        q_reset = cell.data.qpos.copy()
        kin = check_kinematics(cell, pos, quat, q_reset)
        if kin.out_of_reach[0]:
            raise InfeasibleCaptureError(
                f"the first pose ({pos[0].round(4).tolist()} m in the cell frame) is out of the robot's reach "
                f"(IK residual {kin.position_error[0] * 1e3:.1f} mm, {math.degrees(kin.orientation_error[0]):.1f} "
                "deg); check capture_to_cell and length_unit", capture.sidecar_path)

        # Start at rest at the first pose: the operator's motion begins there, not at the env's reset pose.
        d = cell.data
        d.qpos[cell.arm_qpos_adr] = kin.qpos[0]
        d.qvel[:] = 0.0
        d.ctrl[cell.arm_actuators] = kin.qpos[0]
        mujoco.mj_forward(cell.model, d)
        recorder.restart_from_current_state()

        contacts = _ContactLog(cell)
        contacts.robot_mask.append(False)
        saturated = np.zeros(n, bool)
        ended_by = "end of capture"
        executed = 0
        bar = tqdm(range(n), desc="import", unit="step", disable=not progress, leave=False)
        for k in bar:
            controller = cell.controller
            action = np.zeros(6 + task_size)
            move = (ahead_pos[k + 1] - controller.p_world_cmd) / step_translation
            quat_error = np.empty(4)
            inverse = np.empty(4)
            mujoco.mju_negQuat(inverse, controller.quat_world_cmd)
            mujoco.mju_mulQuat(quat_error, ahead_quat[k + 1], inverse)
            turn = _rotvec(quat_error) / step_rotation
            for i, part in ((0, move), (3, turn)):
                peak = float(np.abs(part).max())
                if peak > 1.0:
                    saturated[k] = True
                    part = part / peak  # keep the direction; the env would clip each axis on its own
                action[i:i + 3] = part
            for j, name in enumerate(task_columns):
                action[6 + j] = 1.0 if signals[name][k + 1] > 0.5 else -1.0
            _, _, terminated, truncated, info = recorder.step(action.astype(np.float32))
            contacts.record(d)
            executed = k + 1
            if terminated:
                ended_by = ("instability: " + info["instability"] if info.get("instability") else
                            "physics invalid" if info.get("physics_invalid") else
                            "task success" if info.get("is_success") else "the cell ended the episode")
                break
            if truncated:
                break
        bar.close()
        episode = recorder.completed[-1]
    finally:
        env.close()

    report = _feasibility_report(capture, cell, n, executed, ended_by, times, pos, quat, kin, saturated, contacts,
                                 episode, lookahead, step_translation, step_rotation, task_columns)
    episode.extras.update({
        "target_time": times - t0, "target_pos": pos, "target_quat": quat, "ik_qpos": kin.qpos,
        "ik_position_error": kin.position_error, "ik_orientation_error": kin.orientation_error,
        "raw_t": capture.t, "raw_pose": capture.raw_pose,
        **{f"signal/{name}": v for name, v in signals.items()},
        **{f"raw_signal/{name}": v for name, v in capture.signals.items()},
    })
    episode.notes = {"capture_file": capture.csv_path.name, "capture_sha256": capture.csv_sha256,
                     "sidecar": {**to_mapping(side), "env_kwargs": capture.env_kwargs},
                     "feasible": report["feasible"], "problems": report["problems"],
                     "max_deviation_mm": report["deviation"]["position_mm"]["max"]}
    entry = DatasetWriter(out).add(episode, report)
    return ImportResult(entry=entry, episode=episode, report=report)


def _feasibility_report(capture: Capture, cell, n: int, executed: int, ended_by: str, times: np.ndarray,
                        pos: np.ndarray, quat: np.ndarray, kin: KinematicsCheck, saturated: np.ndarray,
                        contacts: _ContactLog, episode: Episode, lookahead: float, step_translation: float,
                        step_rotation: float, task_columns) -> dict[str, Any]:
    side = capture.sidecar
    dt = cell.control_dt
    rel = times - times[0]
    raw_dt = np.diff(capture.t)
    median_dt = float(np.median(raw_dt))
    gaps = np.flatnonzero(raw_dt > 2 * median_dt)

    translation = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    rotation = _quat_angle(quat[1:], quat[:-1])
    joint_speed = np.abs(np.diff(kin.qpos, axis=0)) / dt
    control = cell.config.control
    outside = np.any((pos < np.asarray(control.workspace_min_m)) | (pos > np.asarray(control.workspace_max_m)),
                     axis=1)

    m = executed + 1
    executed_pos, executed_quat = episode.tcp_pos[:m], episode.tcp_quat[:m]
    position_error = 1e3 * np.linalg.norm(executed_pos - pos[:m], axis=1)
    orientation_error = np.degrees(_quat_angle(executed_quat, quat[:m]))
    path_error = 1e3 * _path_distance(executed_pos, pos)

    report: dict[str, Any] = {
        "capture": {"file": capture.csv_path.name, "sha256": capture.csv_sha256, "sidecar": capture.sidecar_path.name,
                    "rows": len(capture.t), "duration_s": round(capture.duration_s, 6),
                    "rate_hz": round(1.0 / median_dt, 3), "max_gap_s": round(float(raw_dt.max()), 6),
                    "gaps_over_2x_median": _steps_summary(raw_dt > 2 * median_dt, capture.t[:-1] - capture.t[0])
                    if gaps.size else {"count": 0}},
        "cell_id": side.cell_id, "env_kwargs": capture.env_kwargs, "control_dt_s": dt, "steps": n,
        "executed_steps": executed, "ended_by": ended_by, "lookahead_s": round(lookahead, 6),
        "task_action_columns": list(task_columns),
        "out_of_reach": {**_steps_summary(kin.out_of_reach, rel),
                         "max_position_residual_mm": round(float(kin.position_error.max() * 1e3), 6),
                         "max_orientation_residual_deg": round(float(np.degrees(kin.orientation_error.max())), 6),
                         "tolerance_mm": REACH_TOLERANCE_M * 1e3, "tolerance_deg": math.degrees(REACH_TOLERANCE_RAD)},
        "outside_workspace": _steps_summary(outside, rel),
        "joint_limits": {**_steps_summary(kin.at_limit.any(axis=1), rel),
                         "joints": [kin.joint_names[j] for j in np.flatnonzero(kin.at_limit.any(axis=0))],
                         "margin_deg": math.degrees(JOINT_LIMIT_MARGIN_RAD)},
        "speed": {
            "translation": {**_steps_summary(np.r_[translation > step_translation * (1 + 1e-9), False], rel),
                            "peak_mm_s": round(float(translation.max() / dt * 1e3), 6),
                            "limit_mm_s": round(step_translation / dt * 1e3, 6)},
            "rotation": {**_steps_summary(np.r_[rotation > step_rotation * (1 + 1e-9), False], rel),
                         "peak_deg_s": round(float(np.degrees(rotation.max()) / dt), 6),
                         "limit_deg_s": round(math.degrees(step_rotation) / dt, 6)},
            "joints": {**_steps_summary(np.r_[joint_speed.max(axis=1) > MAX_JOINT_SPEED_RAD_S, False], rel),
                       "peak_deg_s": round(float(np.degrees(joint_speed.max())), 6),
                       "limit_deg_s": math.degrees(MAX_JOINT_SPEED_RAD_S)},
            "commands_scaled_down": int(saturated[:executed].sum()),
        },
        "collisions": {"robot": _steps_summary(np.asarray(contacts.robot_mask), rel),
                       "tool_contact_steps": contacts.tool_steps,
                       "tool_contact_is_collision": side.tool_contact_is_collision,
                       "pairs": dict(sorted(contacts.pairs.items(), key=lambda kv: -kv[1]))},
        "deviation": {"position_mm": _stats(position_error), "path_mm": _stats(path_error),
                      "orientation_deg": _stats(orientation_error), "tolerance_mm": side.deviation_tolerance_mm,
                      "within_tolerance": bool(position_error.max() <= side.deviation_tolerance_mm)},
    }
    # A cell ending the episode early (the peg seated, the seam end reached) is the task's outcome,
    # not a feasibility problem; only a simulation that broke down is.
    problems = []
    for key, label in (("out_of_reach", "poses out of reach"), ("outside_workspace", "poses outside the workspace"),
                       ("joint_limits", "poses at a joint limit")):
        if report[key]["count"]:
            problems.append(f"{report[key]['count']} {label}")
    for key, label in (("translation", "steps faster than the translation limit"),
                       ("rotation", "steps faster than the rotation limit"),
                       ("joints", "steps faster than the joint speed limit")):
        if report["speed"][key]["count"]:
            problems.append(f"{report['speed'][key]['count']} {label}")
    if contacts.robot_steps:
        problems.append(f"robot collisions in {contacts.robot_steps} steps")
    if contacts.tool_steps and side.tool_contact_is_collision:
        problems.append(f"tool collisions in {contacts.tool_steps} steps")
    if not report["deviation"]["within_tolerance"]:
        problems.append(f"executed path deviates up to {report['deviation']['position_mm']['max']:.2f} mm "
                        f"(tolerance {side.deviation_tolerance_mm} mm)")
    if ended_by.startswith(("instability", "physics invalid")):
        problems.append(f"the simulation ended the episode: {ended_by}")
    report["feasible"] = not problems
    report["problems"] = problems
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few lines for people: verdict, problems, deviation."""
    dev = report["deviation"]
    lines = [f"{'feasible' if report['feasible'] else 'NOT feasible'}: {report['capture']['file']} -> "
             f"{report['cell_id']}, {report['executed_steps']}/{report['steps']} steps ({report['ended_by']})",
             f"  deviation: max {dev['position_mm']['max']:.3f} mm, rms {dev['position_mm']['rms']:.3f} mm at the same "
             f"instant; max {dev['path_mm']['max']:.3f} mm from the path; max {dev['orientation_deg']['max']:.3f} deg "
             f"(tolerance {dev['tolerance_mm']} mm)"]
    lines += [f"  problem: {p}" for p in report["problems"]]
    return "\n".join(lines)
