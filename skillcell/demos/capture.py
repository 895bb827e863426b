"""Importing human tool captures: four stages, each a function with a typed record passed to the next.

The capture format (CSV plus a sidecar YAML) is specified in ``docs/capture_format.md``. In short:
a header row, a time column ``t`` (s), the tool pose ``x, y, z`` (in the sidecar's
``length_unit``) and ``qw, qx, qy, qz`` (unit quaternion, capture frame, in the sidecar's
``quat_order``), optional numeric process columns (``arc_on``, current, voltage, wire feed,
force, ...); the sidecar ``<stem>.yaml`` declares ``cell_id``, ``length_unit``,
``capture_to_cell`` and ``provenance``.

`import_capture` runs the stages and writes the episode with its feasibility report:

1. **read** (`read_capture` -> `Capture`): the whole file validated before anything else, every
   defect named by line and column (`skillcell.demos.errors`), and put into the cell frame:
   ``p_cell = R p + t``, ``q_cell = q_frame * q``, then the TCP offset ``tcp_in_tool``;
   quaternion signs made continuous (``q`` and ``-q`` are the same orientation).
2. **retarget** (`retarget` -> `Retargeted`): the capture checked against the cell it is for,
   where a person's mistakes show: a tool axis that does not keep the cell's working tilt
   (quaternions written x, y, z, w), a path mostly outside the cell's workspace or spanning a
   small fraction of the task (inches declared as millimetres); each is refused naming the
   likely cause. Then the path is smoothed (a zero-phase Butterworth low-pass below the 8-12 Hz
   of hand tremor: the robot follows the operator's intent, not their tremor), sampled at the
   control instants, and solved for the arm's joints by inverse kinematics (mink,
   `check_kinematics`). It also fixes how the cell is run (`execution_overrides`).
3. **execute** (`execute` -> `Execution`): the arm starts at rest at the first pose and follows
   the path through the env's own action interface, with velocity feed-forward, until the end of
   the capture (success does not end it: the cell's ``run_to_end`` overrides). Each step's
   action moves the env's commanded pose to the captured pose half a control period ahead (the
   command is held over the step), so the tool tracks the capture in time; a command beyond one
   step's limits is scaled down, keeping its direction, and recorded with the speed it asked for.
4. **assess** (`assess` -> `Feasibility`): reach, joint limits and speeds of the path; commands
   scaled down; collisions and tool force; how the executed tool tracked the capture: its
   distance to the captured path (nearest point, not the same-instant sample) and its lag in
   seconds; gaps in the capture in seconds.

mink is used for the IK rather than the env's own damped least squares because the DLS step
clips joint targets after the fact and cannot say whether a residual comes from reach or from a
limit; mink's QP enforces the limits and exposes both.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np
from tqdm.auto import tqdm

import skillcell
from skillcell.config import ConfigError, bounds, from_mapping, merge, parse_yaml, to_mapping
from skillcell.demos._io import sha256_bytes
from skillcell.demos.episode import SIGNAL_PREFIX, DatasetWriter, Episode, EpisodeEntry, Provenance
from skillcell.demos.errors import (
    CaptureError,
    CaptureFormatError,
    InfeasibleCaptureError,
    MissingColumnsError,
    NonNumericValueError,
    NonUnitQuaternionError,
    ScaleError,
    TimestampError,
    ToolAxisError,
    TruncatedCaptureError,
)
from skillcell.demos.recorder import EpisodeRecorder
from skillcell.envs.cell import ROBOT_PREFIX, TOOL_PREFIX
from skillcell.envs.registry import CellSpec, cell_spec
from skillcell.rollout import Rollout

__all__ = [
    "COMPLIANT_MODE",
    "LENGTH_UNITS",
    "POSE_COLUMNS",
    "Capture",
    "CaptureSidecar",
    "Execution",
    "Feasibility",
    "FrameTransform",
    "ImportResult",
    "KinematicsCheck",
    "Retargeted",
    "SmoothPath",
    "assess",
    "check_kinematics",
    "execute",
    "execution_overrides",
    "format_report",
    "import_capture",
    "quat_mul",
    "read_capture",
    "resample_capture",
    "retarget",
    "smooth_path",
]

POSE_COLUMNS = ("t", "x", "y", "z", "qw", "qx", "qy", "qz")
#: metres per ``length_unit``
LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "in": 0.0254}
_UNIT_NAMES = {"m": "metres", "mm": "millimetres", "in": "inches"}
#: where, in the four quaternion columns ``qw, qx, qy, qz`` as the header names them, w, x, y, z are
_QUAT_ORDERS = {"wxyz": [0, 1, 2, 3], "xyzw": [3, 0, 1, 2]}
#: a quaternion whose norm is further than this from 1 is refused (tracker output is normalized)
QUAT_NORM_TOLERANCE = 0.01
#: no hand-held tool path in a cell spans more than this (m) ...
MAX_PLAUSIBLE_EXTENT_M = 3.0
#: ... or moves faster than this at its median (m/s)
MAX_PLAUSIBLE_MEDIAN_SPEED_M_S = 2.0
#: a path declared in mm that spans less than this (m) over more than a second was probably in m
MIN_PLAUSIBLE_EXTENT_M = 0.0005
#: a person holds the tool axis within this of the cell's nominal one (`CellEnv.nominal_tool_axis`) ...
TOOL_AXIS_TOLERANCE_DEG = 30.0
#: ... on all but this share of the samples; more off, and the capture was mis-read
IMPLAUSIBLE_FRACTION = 0.5
#: a reading that explains a refused capture must fit on at least this share of its samples
EXPLAINING_FRACTION = 0.9
#: a demonstration of the task travels at least this share of the task's length (`CellEnv.task_length_m`)
MIN_TASK_FRACTION = 0.25
#: IK residuals above these are out of reach
REACH_TOLERANCE_M = 1e-3
REACH_TOLERANCE_RAD = math.radians(1.0)
#: IK solutions closer than this to a joint limit count as at the limit
JOINT_LIMIT_MARGIN_RAD = math.radians(1.0)
#: UR5e datasheet: 180 deg/s on every joint
MAX_JOINT_SPEED_RAD_S = math.pi
#: the lag is measured where the captured path moves at least this fast (m/s); standing still has no lag
LAG_MIN_SPEED_M_S = 0.005
#: passes of the captured path this close to the nearest one count as the same place (m): the lag is
#: measured to the pass nearest in time
PATH_SAME_PLACE_M = 2e-4
#: how far behind (and ahead of) its own instant an executed pose is looked for on the captured path (s)
LAG_SEARCH_BEHIND_S, LAG_SEARCH_AHEAD_S = 3.0, 1.0
#: the control mode a contact cell's capture runs in, where the cell's config offers modes (``control.mode``)
COMPLIANT_MODE = "impedance"
_FIRST = 10  # how many offending steps a report lists
_MAX_GAPS_LISTED = 100


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
        m = np.empty(9)
        mujoco.mju_quat2Mat(m, self.quat())
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
    length_unit: Literal["m", "mm", "in"]
    capture_to_cell: FrameTransform
    provenance: Provenance
    quat_order: Literal["wxyz", "xyzw"] = "wxyz"
    tcp_in_tool: FrameTransform = FrameTransform()
    seed: int = 0
    samples: int | None = None
    task_action_columns: tuple[str, ...] | None = None
    deviation_tolerance_mm: float = field(default=2.0, metadata=bounds(0.001, 1000.0))
    lag_tolerance_s: float = field(default=0.1, metadata=bounds(0.001, 60.0))
    smoothing_hz: float = field(default=5.0, metadata=bounds(0.5, 100.0))
    #: None: tool contact is a collision unless the cell is a contact task (`CellSpec.contact_task`)
    tool_contact_is_collision: bool | None = None

    @property
    def scale(self) -> float:
        """Metres per capture length unit."""
        return LENGTH_UNITS[self.length_unit]


@dataclass
class Capture:
    """Stage 1: a validated capture, its raw samples as in the file and its TCP path in the cell frame (m)."""

    csv_path: Path
    sidecar_path: Path
    sidecar: CaptureSidecar
    env_kwargs: dict[str, Any]
    csv_sha256: str
    t: np.ndarray  # (M,) s
    raw_pose: np.ndarray  # (M, 7) x, y, z (length_unit), then the columns qw, qx, qy, qz as in the file
    signals: dict[str, np.ndarray]  # (M,) each, as in the file
    pos_cell: np.ndarray  # (M, 3) TCP position in the cell frame, m
    quat_cell: np.ndarray  # (M, 4) TCP orientation in the cell frame (w, x, y, z), sign-continuous

    @property
    def duration_s(self) -> float:
        return float(self.t[-1] - self.t[0])

    def read_as(self, *, length_unit: str | None = None, frame_unit: str | None = None,
                quat_order: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The TCP path ``(pos, quat)`` in the cell frame had the sidecar declared other units or another
        quaternion order: the samples in ``length_unit``, the sidecar's translations in ``frame_unit``
        (default: as declared). What the retarget stage's checks try to explain a refusal with."""
        side = self.sidecar
        sample_unit = length_unit or side.length_unit
        return _cell_path(self.raw_pose, side, LENGTH_UNITS[sample_unit],
                          LENGTH_UNITS[frame_unit or length_unit or side.length_unit], quat_order or side.quat_order)


@dataclass
class ImportResult:
    """What `import_capture` wrote: the manifest entry, the episode and the feasibility report."""

    entry: EpisodeEntry
    episode: Episode
    report: dict[str, Any]

    @property
    def feasible(self) -> bool:
        return bool(self.report["feasible"])


# ---------------------------------------------------------------------- stage 1: read

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
            f"{bad.size} of {len(quat)} rows; the columns must hold a unit quaternion",
            path, line=i + 2, column="qw")


def _check_scale(path: Path, t: np.ndarray, pos_m: np.ndarray, unit: str) -> None:
    extent = float(np.linalg.norm(pos_m.max(axis=0) - pos_m.min(axis=0)))
    speed = np.linalg.norm(np.diff(pos_m, axis=0), axis=1) / np.diff(t)
    median_speed = float(np.median(speed))
    if extent > MAX_PLAUSIBLE_EXTENT_M or median_speed > MAX_PLAUSIBLE_MEDIAN_SPEED_M_S:
        factor = LENGTH_UNITS["mm"] / LENGTH_UNITS[unit]
        hint = (f"; read as millimetres it would span {extent * factor * 1e3:.1f} mm at "
                f"{median_speed * factor * 1e3:.1f} mm/s: is the capture in mm? set length_unit: mm"
                if unit != "mm" else "")
        raise ScaleError(f"implausible scale for length_unit {unit!r}: the path spans {extent:.3g} m and moves at a "
                         f"median {median_speed:.3g} m/s (limits {MAX_PLAUSIBLE_EXTENT_M} m, "
                         f"{MAX_PLAUSIBLE_MEDIAN_SPEED_M_S} m/s){hint}", path, column="x")
    if unit == "mm" and extent < MIN_PLAUSIBLE_EXTENT_M and t[-1] - t[0] > 1.0:
        raise ScaleError(f"implausible scale for length_unit 'mm': the whole path spans {extent * 1e3:.4f} mm "
                         f"over {t[-1] - t[0]:.1f} s; read as metres it would span {extent * 1e3:.1f} mm: is the "
                         "capture in m? set length_unit: m", path, column="x")


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


def _cell_path(raw_pose: np.ndarray, side: CaptureSidecar, sample_scale: float, frame_scale: float,
               quat_order: str) -> tuple[np.ndarray, np.ndarray]:
    """The TCP path in the cell frame (m, w-first quaternions) of raw samples read with these units and order."""
    quat = raw_pose[:, 3:][:, _QUAT_ORDERS[quat_order]]
    quat = _continuous(quat / np.linalg.norm(quat, axis=1, keepdims=True))
    frame, tool = side.capture_to_cell, side.tcp_in_tool
    quat_tool = quat_mul(np.broadcast_to(frame.quat(), quat.shape), quat)
    pos_tool = raw_pose[:, :3] * sample_scale @ frame.rotation().T + np.asarray(frame.translation) * frame_scale
    pos_cell = pos_tool + _quat_rotate(quat_tool, np.broadcast_to(np.asarray(tool.translation) * frame_scale,
                                                                  pos_tool.shape))
    return pos_cell, _continuous(quat_mul(quat_tool, np.broadcast_to(tool.quat(), quat_tool.shape)))


def read_capture(csv_path: str | Path, sidecar_path: str | Path | None = None) -> Capture:
    """Stage 1: reads and validates a capture; raises a `CaptureError` subclass naming any defect.

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
    _check_scale(csv_path, t, raw_pose[:, :3] * sidecar.scale, sidecar.length_unit)
    signals = {name: column[name] for name in header if name not in POSE_COLUMNS}
    unknown = [c for c in (sidecar.task_action_columns or ()) if c not in signals]
    if unknown:
        raise MissingColumnsError(f"task_action_columns names columns the CSV does not have: {unknown}", csv_path,
                                  line=1)
    pos_cell, quat_cell = _cell_path(raw_pose, sidecar, sidecar.scale, sidecar.scale, sidecar.quat_order)
    return Capture(csv_path=csv_path, sidecar_path=sidecar_path, sidecar=sidecar, env_kwargs=env_kwargs,
                   csv_sha256=sha256_bytes(data), t=t, raw_pose=raw_pose, signals=signals, pos_cell=pos_cell,
                   quat_cell=quat_cell)


# ---------------------------------------------------------------------- stage 2: retarget

def _check_tool_axis(capture: Capture, cell) -> dict[str, float]:
    """Refuses a capture whose tool axis (TCP z) strays from the cell's nominal one (`CellEnv.nominal_tool_axis`)
    on most samples, naming the quaternion order that would explain it where one does."""
    side = capture.sidecar

    def off(pos: np.ndarray, quat: np.ndarray) -> tuple[float, float]:
        axis = _quat_rotate(quat, np.broadcast_to([0.0, 0.0, 1.0], pos.shape))
        cosine = np.einsum("ij,ij->i", axis, cell.nominal_tool_axis(pos))
        angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
        return float(np.mean(angle > TOOL_AXIS_TOLERANCE_DEG)), float(np.median(angle))

    share, median = off(capture.pos_cell, capture.quat_cell)
    figures = {"median_off_deg": round(median, 3), "tolerance_deg": TOOL_AXIS_TOLERANCE_DEG,
               "share_off": round(share, 4)}
    if share <= IMPLAUSIBLE_FRACTION:
        return figures
    where = (f"the tool axis (TCP z) points {median:.0f} deg (median) away from the cell's nominal tool axis on "
             f"{share:.0%} of the samples, where a person holds it within {TOOL_AXIS_TOLERANCE_DEG:.0f} deg")
    other = "xyzw" if side.quat_order == "wxyz" else "wxyz"
    other_share, other_median = off(*capture.read_as(quat_order=other))
    if other_share <= 1.0 - EXPLAINING_FRACTION:
        raise ToolAxisError(f"{where}; read as {','.join(other)} it points {other_median:.0f} deg away: quaternions "
                            f"look {','.join(other)}; set quat_order: {other}", capture.csv_path, column="qw")
    raise ToolAxisError(f"{where}, in either quaternion order: check capture_to_cell's rotation and tcp_in_tool",
                        capture.csv_path, column="qw")


def _inside_share(pos: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    return float(np.mean(np.all((pos >= low) & (pos <= high), axis=1)))


def _check_units(capture: Capture, low: np.ndarray, high: np.ndarray, task_length_m: float | None) -> None:
    """Refuses a path mostly outside the cell's workspace, or spanning a small part of the task, naming
    the length unit that would explain it where one does."""
    side, path = capture.sidecar, capture.csv_path
    declared = side.length_unit
    inside = _inside_share(capture.pos_cell, low, high)
    if 1.0 - inside > IMPLAUSIBLE_FRACTION:
        box = ", ".join(f"{axis} {lo:.3g}..{hi:.3g}" for axis, lo, hi in zip("xyz", low, high, strict=True))
        where = (f"{1.0 - inside:.0%} of the path lies outside the cell's workspace ({box} m) read in "
                 f"{_UNIT_NAMES[declared]}")
        for unit in LENGTH_UNITS:
            if unit == declared:
                continue
            if _inside_share(capture.read_as(length_unit=unit)[0], low, high) >= EXPLAINING_FRACTION:
                raise ScaleError(f"{where}; read in {_UNIT_NAMES[unit]} it lies inside: looks like "
                                 f"{_UNIT_NAMES[unit]}; set length_unit: {unit}", path, column="x")
            if _inside_share(capture.read_as(length_unit=unit, frame_unit=declared)[0], low,
                             high) >= EXPLAINING_FRACTION:
                raise ScaleError(f"{where}; the samples look like {_UNIT_NAMES[unit]} while capture_to_cell and "
                                 f"tcp_in_tool read right in {_UNIT_NAMES[declared]}: write all of them in one "
                                 "unit, the sidecar's length_unit", path, column="x")
        raise InfeasibleCaptureError(f"{where}, and in no other length unit: check capture_to_cell",
                                     capture.sidecar_path)
    if task_length_m is None:
        return
    extent = float(np.linalg.norm(np.ptp(capture.raw_pose[:, :3], axis=0))) * side.scale
    if extent >= MIN_TASK_FRACTION * task_length_m:
        return
    # Of the larger units, the one that makes the path span most nearly the task's length.
    spans = {unit: extent * scale / side.scale for unit, scale in LENGTH_UNITS.items() if scale > side.scale}
    fits = [unit for unit, span in spans.items() if MIN_TASK_FRACTION * task_length_m <= span <= MAX_PLAUSIBLE_EXTENT_M]
    if fits:
        unit = min(fits, key=lambda u: abs(math.log(spans[u] / task_length_m)))
        raise ScaleError(f"the path spans {extent * 1e3:.3g} mm read in {_UNIT_NAMES[declared]}, under "
                         f"{MIN_TASK_FRACTION:.0%} of the task's {task_length_m * 1e3:.0f} mm; read in "
                         f"{_UNIT_NAMES[unit]} it spans {spans[unit] * 1e3:.0f} mm: looks like {_UNIT_NAMES[unit]}; "
                         f"set length_unit: {unit} (the unit of capture_to_cell and tcp_in_tool too)", path, column="x")


@dataclass
class SmoothPath:
    """The captured TCP path low-passed below hand tremor on a uniform grid: the operator's intended motion."""

    t: np.ndarray  # (G,) s, absolute capture time
    pos: np.ndarray  # (G, 3) m, cell frame
    quat: np.ndarray  # (G, 4) w-first, sign-continuous
    cutoff_hz: float

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pos, quat)`` at ``times`` (s, absolute; held at the ends), linearly interpolated."""
        times = np.clip(np.asarray(times, float), self.t[0], self.t[-1])
        pos = np.stack([np.interp(times, self.t, self.pos[:, j]) for j in range(3)], axis=-1)
        quat = np.stack([np.interp(times, self.t, self.quat[:, j]) for j in range(4)], axis=-1)
        return pos, quat / np.linalg.norm(quat, axis=-1, keepdims=True)


def smooth_path(capture: Capture, cutoff_hz: float, *, min_rate_hz: float = 0.0) -> SmoothPath:
    """The capture's path, interpolated onto a uniform grid and low-passed forwards and backwards.

    A 2nd-order Butterworth filter run both ways (`scipy.signal.sosfiltfilt`): zero phase, so the
    smoothing adds no lag, a 4th-order fall-off above ``cutoff_hz`` (physiological tremor lies at
    8-12 Hz, voluntary motion below about 5 Hz) and flat below it. Quaternions are filtered
    component-wise after sign alignment and renormalized, which is accurate for the small rotation
    within the filter's window. The grid runs at the capture's median rate, at least ``min_rate_hz``.
    """
    from scipy.signal import butter, sosfiltfilt

    t = capture.t
    rate = max(1.0 / float(np.median(np.diff(t))), min_rate_hz, 4.0 * cutoff_hz)
    grid = t[0] + np.arange(math.floor(capture.duration_s * rate + 1e-9) + 1) / rate
    if grid[-1] < t[-1]:
        grid = np.append(grid, t[-1])
    values = np.column_stack([np.interp(grid, t, v) for v in (*capture.pos_cell.T, *capture.quat_cell.T)])
    sos = butter(2, cutoff_hz, fs=rate, output="sos")
    # The default pad (odd extension) keeps the first and last pose: the arm starts at rest at the first one.
    pad = min(3 * (2 * len(sos) + 1), len(grid) - 1)
    smooth = sosfiltfilt(sos, values, axis=0, padlen=pad) if pad > 0 else values
    quat = smooth[:, 3:] / np.linalg.norm(smooth[:, 3:], axis=1, keepdims=True)
    return SmoothPath(t=grid, pos=smooth[:, :3], quat=quat, cutoff_hz=cutoff_hz)


def _box_filter(t: np.ndarray, values: np.ndarray, t_out: np.ndarray, width: float) -> np.ndarray:
    """Mean of the piecewise-linear signal over ``[t - w/2, t + w/2]`` at each ``t_out``.

    The window shrinks symmetrically at the ends of the capture (to a point sample at the first
    and last instant), so a steady signal is not biased there. Works on irregular sampling: it
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


def resample_capture(capture: Capture, times: np.ndarray, control_dt: float, *,
                     smoothing_hz: float | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(pos (K, 3) m, quat (K, 4), signals)`` of the capture at ``times`` (s, absolute).

    The pose from `smooth_path` (``smoothing_hz``, default the sidecar's); the process signals
    box-filtered one control period wide (their anti-aliasing filter for the control rate).
    """
    smooth = smooth_path(capture, smoothing_hz or capture.sidecar.smoothing_hz, min_rate_hz=2.0 / control_dt)
    pos, quat = smooth.at(times)
    clipped = np.clip(times, capture.t[0], capture.t[-1])
    signals = {name: _box_filter(capture.t, v, clipped, control_dt)[:, 0] for name, v in capture.signals.items()}
    return pos, quat, signals


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


def execution_overrides(spec: CellSpec, config, servo_time_constant: float, control_dt: float, *,
                        run_to_end: bool = True) -> dict[str, Any]:
    """The cell config overrides (``gym.make(..., overrides=...)``) a capture of this cell executes under.

    - A contact cell (`CellSpec.contact_task`) whose config offers control modes (``control.mode``)
      runs in `COMPLIANT_MODE`: the operator's hand is compliant, and a search pattern that passes
      within the clearance seats the part only on an arm that yields sideways. The whole episode
      runs so (the mode is the cell's config, fixed for an episode); a compliant arm tracks free
      motion as well.
    - In position mode the joint servos lag a moving target by their time constant ``kd/kp``
      (0.2 s on the UR5e) unless it is fed forward: ``control.velocity_feedforward: 1``. The
      servo target then leads the tool by that lag times the speed, which ``control.max_lead_*``
      caps, so the lead is raised to what the command limit needs (its speed times the lag plus a
      control period), except on a contact cell, where the lead is the bound on the force a
      blocked tool builds up and stays the cell's.
    - ``run_to_end``: the cell's `CellSpec.run_to_end` overrides, so that reaching the task's
      outcome does not end the episode before the capture does.
    """
    control = config.control
    has_modes = "mode" in {f.name for f in fields(control)}
    overrides: dict[str, Any] = {}
    if spec.contact_task and has_modes:
        overrides["control"] = {"mode": COMPLIANT_MODE}
    else:
        tracking: dict[str, Any] = {"velocity_feedforward": 1.0}
        if not spec.contact_task:
            lag = servo_time_constant + control_dt
            tracking["max_lead_mm"] = max(control.max_lead_mm, control.max_translation_mm / control_dt * lag)
            tracking["max_lead_deg"] = max(control.max_lead_deg, control.max_rotation_deg / control_dt * lag)
        overrides["control"] = tracking
    if run_to_end:
        overrides = merge(overrides, spec.run_to_end)
    return overrides


@dataclass
class Retargeted:
    """Stage 2: a capture checked against its cell, smoothed, sampled at the control instants, solved by IK,
    with the env it executes in."""

    capture: Capture
    env_kwargs: dict[str, Any]  # for gym.make: the sidecar's, over the import's `overrides`
    overrides: dict[str, Any]  # the import's own (`execution_overrides`)
    control_dt: float
    times: np.ndarray  # (n+1,) s, the control instants in capture time
    pos: np.ndarray  # (n+1, 3) the smoothed path at the control instants, m
    quat: np.ndarray  # (n+1, 4)
    signals: dict[str, np.ndarray]  # (n+1,) each, box-filtered
    path: SmoothPath
    kinematics: KinematicsCheck
    task_columns: tuple[str, ...]
    tool_contact_is_collision: bool
    tool_axis: dict[str, float]  # the tool axis check's figures
    workspace: tuple[np.ndarray, np.ndarray]  # the controller's box (m), where commands are clipped

    @property
    def steps(self) -> int:
        return len(self.times) - 1


def retarget(capture: Capture, *, run_to_end: bool = True) -> Retargeted:
    """Stage 2: checks the capture against its cell and turns it into what the robot executes.

    Raises `ToolAxisError`, `ScaleError` or `InfeasibleCaptureError` (nothing is written) where the
    tool axis, the units or the first pose cannot be right.
    """
    side = capture.sidecar
    spec = cell_spec(side.cell_id)
    env = gym.make(side.cell_id, **capture.env_kwargs)
    try:
        cell = env.unwrapped
        env.reset(seed=side.seed)
        control, dt = cell.config.control, cell.control_dt
        # The tool axis first: a mis-read orientation also moves a TCP offset from the tracked body.
        tool_axis = _check_tool_axis(capture, cell)
        workspace = np.asarray(control.workspace_min_m), np.asarray(control.workspace_max_m)
        _check_units(capture, *workspace, cell.task_length_m)

        n = math.floor(capture.duration_s / dt + 1e-9)
        if n < 1:
            raise CaptureFormatError(f"the capture lasts {capture.duration_s:.4f} s, less than one control step "
                                     f"({dt} s)", capture.csv_path)
        if side.smoothing_hz >= 0.5 / dt:
            raise CaptureError(f"smoothing_hz: must be below half the control rate ({0.5 / dt:g} Hz), got "
                               f"{side.smoothing_hz:g}", capture.sidecar_path)
        task_size = cell.action_space.shape[0] - 6
        task_columns = side.task_action_columns
        if task_columns is None:
            # The cell's registration says which capture signal drives which task channel.
            declared = spec.capture_signals
            task_columns = declared if declared and all(c in capture.signals for c in declared) else ()
        if len(task_columns) not in (0, task_size):
            raise CaptureError(f"task_action_columns: {side.cell_id} has {task_size} task action channel(s), "
                               f"got {list(task_columns)}", capture.sidecar_path)

        times = capture.t[0] + np.arange(n + 1) * dt
        path = smooth_path(capture, side.smoothing_hz, min_rate_hz=2.0 / dt)
        pos, quat = path.at(times)
        signals = {name: _box_filter(capture.t, v, times, dt)[:, 0] for name, v in capture.signals.items()}
        kin = check_kinematics(cell, pos, quat, cell.data.qpos.copy())
        if kin.out_of_reach[0]:
            raise InfeasibleCaptureError(
                f"the first pose ({pos[0].round(4).tolist()} m in the cell frame) is out of the robot's reach "
                f"(IK residual {kin.position_error[0] * 1e3:.1f} mm, {math.degrees(kin.orientation_error[0]):.1f} "
                "deg); check capture_to_cell and length_unit", capture.sidecar_path)
        overrides = execution_overrides(spec, cell.config, cell.controller.servo_time_constant, dt,
                                        run_to_end=run_to_end)
    finally:
        env.close()
    # The sidecar's own overrides win over the import's: an explicit choice of the person importing.
    env_kwargs = {**capture.env_kwargs, "overrides": merge(overrides, capture.env_kwargs.get("overrides") or {})}
    collision = side.tool_contact_is_collision
    return Retargeted(capture=capture, env_kwargs=env_kwargs, overrides=overrides, control_dt=dt, times=times,
                      pos=pos, quat=quat, signals=signals, path=path, kinematics=kin,
                      task_columns=tuple(task_columns),
                      tool_contact_is_collision=not spec.contact_task if collision is None else collision,
                      tool_axis=tool_axis, workspace=workspace)


# ---------------------------------------------------------------------- stage 3: execute

def _rotvec(quat: np.ndarray) -> np.ndarray:
    out = np.empty(3)
    mujoco.mju_quat2Vel(out, quat, 1.0)
    return out


class _ContactLog:
    """Counts, per control step, contacts of the robot and of the tool with anything else."""

    def __init__(self, cell):
        m = cell.model
        names = [m.body(m.geom_bodyid[g]).name for g in range(m.ngeom)]
        self.kind = np.array([2 if n.startswith(TOOL_PREFIX) else 1 if n.startswith(ROBOT_PREFIX) else 0
                              for n in names])
        self.geom_names = [m.geom(g).name or f"{names[g]}#{g}" for g in range(m.ngeom)]
        self.robot_steps = self.tool_steps = 0
        self.robot_mask: list[bool] = [False]
        self.tool_mask: list[bool] = [False]
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
        self.tool_mask.append(tool)


class _PathFollower:
    """The import's policy: each step, the action that moves the env's commanded pose onto the path.

    It reads the command from the env (not integrating its own actions), so the command stays on
    the path after the env clipped it or the controller pulled it back in contact.
    """

    def __init__(self, cell, target_pos: np.ndarray, target_quat: np.ndarray, task_actions: np.ndarray,
                 process: dict[str, np.ndarray]):
        control = cell.config.control
        self.cell, self.controller = cell, cell.controller
        self.process = process  # the cell's measured process signals (`CellEnv.process_signals`), per step
        self.step_translation = control.max_translation_mm * 1e-3
        self.step_rotation = math.radians(control.max_rotation_deg)
        self.target_pos, self.target_quat, self.task_actions = target_pos, target_quat, task_actions
        n = len(target_pos)
        self.requested = np.zeros((n, 2))  # |translation| (m), |rotation| (rad) each command asked for
        self.scaled_down = np.zeros(n, bool)
        self.k = 0

    def reset(self) -> None:
        self.k = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        k, controller = self.k, self.controller
        move = self.target_pos[k] - controller.p_world_cmd
        inverse, quat_error = np.empty(4), np.empty(4)
        mujoco.mju_negQuat(inverse, controller.quat_world_cmd)
        mujoco.mju_mulQuat(quat_error, self.target_quat[k], inverse)
        turn = _rotvec(quat_error)
        self.requested[k] = np.linalg.norm(move), np.linalg.norm(turn)
        action = np.zeros(6 + self.task_actions.shape[1])
        for i, part in ((0, move / self.step_translation), (3, turn / self.step_rotation)):
            peak = float(np.abs(part).max())
            if peak > 1.0:
                self.scaled_down[k] = True
                part = part / peak  # keep the direction; the env would clip each axis on its own
            action[i:i + 3] = part
        action[6:] = self.task_actions[k]
        if self.process:
            self.cell.set_process_signals({name: float(values[k]) for name, values in self.process.items()})
        self.k += 1
        return action.astype(np.float32)


@dataclass
class Execution:
    """Stage 3: the executed episode and what happened while it ran."""

    episode: Episode
    executed_steps: int
    ended_by: str
    control_mode: str
    command_offset_s: float  # each step's command is the captured pose this long after the step's start
    requested_speed: np.ndarray  # (n, 2) m/s and rad/s each step's command asked for, before scaling
    scaled_down: np.ndarray  # (n,) bool: the command was scaled down to the action limits
    robot_contact: np.ndarray  # (executed+1,) bool
    tool_contact: np.ndarray  # (executed+1,) bool: the tool touches the cell (the part, the fixture)
    tool_contact_steps: int
    contact_pairs: dict[str, int]
    tool_force_limit_n: float | None  # the cell's F/T stop (`limits.tool_force_stop_n`), where it has one
    translation_limit_m_s: float
    rotation_limit_rad_s: float


def execute(plan: Retargeted, *, progress: bool = True) -> Execution:
    """Stage 3: runs the retargeted capture in the simulation, recording every step (`EpisodeRecorder`)."""
    capture, n, dt = plan.capture, plan.steps, plan.control_dt
    side = capture.sidecar
    # The episode lasts as long as the capture: no registered time limit, a TimeLimit of its own.
    env = gym.wrappers.TimeLimit(gym.make(side.cell_id, max_episode_steps=-1, **plan.env_kwargs),
                                 max_episode_steps=n)
    try:
        cell = env.unwrapped
        controller = cell.controller
        mode = getattr(cell.config.control, "mode", "position")
        # The command is held over the step, which a moving tool crosses: aim it half a step on. A
        # servo lag the controller does not feed forward (a controller without position servos has none)
        # is led as well, which a capture, unlike a live operator, allows.
        offset = 0.5 * dt + max(0.0, getattr(controller, "servo_time_constant", 0.0)
                                - getattr(controller, "feedforward_time", 0.0))
        target_pos, target_quat = plan.path.at(plan.times[:-1] + offset)
        # Task channels without a capture column stay at 0, as a policy that does not use them would leave them.
        task_actions = np.zeros((n, cell.action_space.shape[0] - 6))
        for j, name in enumerate(plan.task_columns):
            task_actions[:, j] = np.where(plan.signals[name][1:] > 0.5, 1.0, -1.0)
        # Measured process signals the cell takes (a weld's current and voltage) drive it step by step.
        process = {name: plan.signals[name] for name in cell.process_signals if name in plan.signals}
        follower = _PathFollower(cell, target_pos, target_quat, task_actions, process)
        recorder = EpisodeRecorder(env, None, source="capture", provenance=side.provenance,
                                   policy={"name": "capture-retarget", "command_offset_s": offset,
                                           "control_mode": mode, "smoothing_hz": plan.path.cutoff_hz})
        q0 = plan.kinematics.qpos[0]

        def start_at_first_pose(obs, info):
            # At rest at the first pose: the operator's motion begins there, not at the env's reset pose.
            d = cell.data
            d.qpos[cell.arm_qpos_adr] = q0
            d.qvel[:] = 0.0
            if mode == "position":
                d.ctrl[cell.arm_actuators] = q0  # the servos hold it
            mujoco.mj_forward(cell.model, d)
            return recorder.restart_from_current_state()

        contacts = _ContactLog(cell)
        bar = tqdm(total=n, desc="import", unit="step", disable=not progress, leave=False)
        run = Rollout(recorder, follower, seed=side.seed, start=start_at_first_pose, max_steps=n)
        for step in run:
            if step.index:
                contacts.record(cell.data)
                bar.update()
        bar.close()
        record, info = run.record, run.record.final_info
        ended_by = ("end of capture" if not record.terminated else
                    "instability: " + info["instability"] if info.get("instability") else
                    "physics invalid" if info.get("physics_invalid") else
                    "task success" if info.get("is_success") else "the cell ended the episode")
        force_limit = cell.limits.get("tool_force_stop_n")
        episode = recorder.completed[-1]
        return Execution(episode=episode, executed_steps=record.steps, ended_by=ended_by, control_mode=mode,
                         command_offset_s=offset, requested_speed=follower.requested / dt,
                         scaled_down=follower.scaled_down, robot_contact=np.asarray(contacts.robot_mask),
                         tool_contact=np.asarray(contacts.tool_mask),
                         tool_contact_steps=contacts.tool_steps,
                         contact_pairs=dict(sorted(contacts.pairs.items(), key=lambda kv: -kv[1])),
                         tool_force_limit_n=None if force_limit is None else float(force_limit),
                         translation_limit_m_s=follower.step_translation / dt,
                         rotation_limit_rad_s=follower.step_rotation / dt)
    finally:
        env.close()


# ---------------------------------------------------------------------- stage 4: assess

def _quat_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between orientations given as (..., 4) unit quaternions."""
    dots = np.abs(np.einsum("...i,...i->...", a, b))
    return 2.0 * np.arccos(np.clip(dots, 0.0, 1.0))


def _steps_summary(mask: np.ndarray, times: np.ndarray) -> dict[str, Any]:
    idx = np.flatnonzero(mask)
    return {"count": int(idx.size), "first_steps": idx[:_FIRST].tolist(),
            "first_times_s": [round(float(times[i]), 4) for i in idx[:_FIRST]]}


def _stats(values: np.ndarray, digits: int = 6) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"max": 0.0, "mean": 0.0, "rms": 0.0, "p95": 0.0}
    return {"max": round(float(values.max()), digits), "mean": round(float(values.mean()), digits),
            "rms": round(float(np.sqrt(np.mean(values**2))), digits),
            "p95": round(float(np.percentile(values, 95)), digits)}


def _nearest_on_path(points: np.ndarray, times: np.ndarray, path: SmoothPath) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """For each executed point at its time: the distance to the captured path (nearest point on the
    polyline, searched from `LAG_SEARCH_BEHIND_S` before its time to `LAG_SEARCH_AHEAD_S` after),
    the capture time of that nearest point, and the path's speed there."""
    a, b = path.pos[:-1], path.pos[1:]
    ab = b - a
    span = np.diff(path.t)
    length2 = np.einsum("ij,ij->i", ab, ab)
    speed = np.sqrt(length2) / span
    distance, when, speed_there = np.empty(len(points)), np.empty(len(points)), np.empty(len(points))
    lows = np.searchsorted(path.t, times - LAG_SEARCH_BEHIND_S, side="right") - 1
    highs = np.searchsorted(path.t, times + LAG_SEARCH_AHEAD_S, side="left") + 1
    for i, p in enumerate(points):
        lo, hi = max(0, lows[i]), min(len(a), max(highs[i], lows[i] + 1))
        s = np.clip(np.einsum("ij,ij->i", p - a[lo:hi], ab[lo:hi]) / np.maximum(length2[lo:hi], 1e-18), 0.0, 1.0)
        d = np.sqrt(np.sum((a[lo:hi] + s[:, None] * ab[lo:hi] - p) ** 2, axis=1))
        t_near = path.t[lo:hi] + s * span[lo:hi]
        # Where the path passes the same place more than once (back and forth), each pass is a local minimum
        # of the distance along it; of the passes about as near as the nearest, the one nearest in time.
        padded = np.r_[np.inf, d, np.inf]
        passes = np.flatnonzero((d <= padded[:-2]) & (d <= padded[2:]) &
                                (d <= d.min() + max(PATH_SAME_PLACE_M, 0.5 * d.min())))
        j = int(passes[np.argmin(np.abs(t_near[passes] - times[i]))])
        distance[i], when[i], speed_there[i] = d.min(), t_near[j], speed[lo + j]
    return distance, when, speed_there


def _gaps(capture: Capture) -> dict[str, Any]:
    """Sampling gaps over twice the median period, in seconds from the capture's start."""
    dt = np.diff(capture.t)
    threshold = 2.0 * float(np.median(dt))
    idx = np.flatnonzero(dt > threshold)
    listed = [{"start_s": round(float(capture.t[i] - capture.t[0]), 6), "length_s": round(float(dt[i]), 6)}
              for i in idx[:_MAX_GAPS_LISTED]]
    return {"count": int(idx.size), "threshold_s": round(threshold, 6),
            "longest_s": round(float(dt[idx].max()), 6) if idx.size else 0.0,
            "total_s": round(float(dt[idx].sum()), 6), "gaps": listed}


@dataclass
class Feasibility:
    """Stage 4: the verdict, one line per problem, the headline tracking figures and the full report."""

    feasible: bool
    problems: list[str]
    max_path_deviation_mm: float
    max_lag_s: float
    report: dict[str, Any]  # what ``reports/episode_NNNNNN_feasibility.yaml`` holds (docs/capture_format.md)


def assess(plan: Retargeted, run: Execution) -> Feasibility:
    """Stage 4: the feasibility report of an executed capture."""
    capture, side, dt, kin = plan.capture, plan.capture.sidecar, plan.control_dt, plan.kinematics
    episode, executed = run.episode, run.executed_steps
    rel = plan.times - plan.times[0]
    pos, quat = plan.pos, plan.quat

    step_translation = run.translation_limit_m_s * dt
    step_rotation = run.rotation_limit_rad_s * dt
    path_step = np.abs(np.diff(pos, axis=0))
    translation = np.linalg.norm(path_step, axis=1)
    rotation = _quat_angle(quat[1:], quat[:-1])
    rotation_step = np.abs(np.array([_rotvec(q) for q in quat_mul(quat[1:], quat[:-1] * [1, -1, -1, -1])]))
    joint_speed = np.abs(np.diff(kin.qpos, axis=0)) / dt
    outside = np.any((pos < plan.workspace[0]) | (pos > plan.workspace[1]), axis=1)

    m = executed + 1
    executed_pos, executed_quat = episode.tcp_pos[:m], episode.tcp_quat[:m]
    same_instant = 1e3 * np.linalg.norm(executed_pos - pos[:m], axis=1)
    orientation_error = np.degrees(_quat_angle(executed_quat, quat[:m]))
    distance, when, speed_there = _nearest_on_path(executed_pos, plan.times[:m], plan.path)
    path_error = 1e3 * distance
    # A tool held back by the part it presses on (a peg on the hole's bottom) is in contact, not lagging.
    moving = (speed_there >= LAG_MIN_SPEED_M_S) & ~run.tool_contact[:m]
    lag = np.where(moving, plan.times[:m] - when, np.nan)

    scaled = run.scaled_down[:executed]
    requested = run.requested_speed[:executed]
    force = np.linalg.norm(episode.decode_observations()["force_tool"], axis=1)
    success = np.asarray(episode.infos.get("is_success", np.zeros(m, bool)), bool)
    first_success = int(np.argmax(success)) if success.any() else None
    within = bool(path_error.max() <= side.deviation_tolerance_mm)
    lag_ok = bool(np.nan_to_num(lag, nan=0.0).max() <= side.lag_tolerance_s)

    report: dict[str, Any] = {
        "capture": {"file": capture.csv_path.name, "sha256": capture.csv_sha256, "sidecar": capture.sidecar_path.name,
                    "rows": len(capture.t), "duration_s": round(capture.duration_s, 6),
                    "rate_hz": round(1.0 / float(np.median(np.diff(capture.t))), 3),
                    "length_unit": side.length_unit, "quat_order": side.quat_order, "gaps": _gaps(capture)},
        "cell_id": side.cell_id, "env_kwargs": plan.env_kwargs, "control_dt_s": dt, "steps": plan.steps,
        "executed_steps": executed, "ended_by": run.ended_by,
        "execution": {"control_mode": run.control_mode, "overrides": plan.overrides,
                      "command_offset_s": round(run.command_offset_s, 6), "smoothing_hz": plan.path.cutoff_hz},
        "task": {"success": episode.success,
                 "first_success_s": None if first_success is None else round(float(rel[first_success]), 4)},
        "task_action_columns": list(plan.task_columns),
        "tool_axis": plan.tool_axis,
        "out_of_reach": {**_steps_summary(kin.out_of_reach, rel),
                         "max_position_residual_mm": round(float(kin.position_error.max() * 1e3), 6),
                         "max_orientation_residual_deg": round(float(np.degrees(kin.orientation_error.max())), 6),
                         "tolerance_mm": REACH_TOLERANCE_M * 1e3, "tolerance_deg": math.degrees(REACH_TOLERANCE_RAD)},
        "outside_workspace": _steps_summary(outside, rel),
        "joint_limits": {**_steps_summary(kin.at_limit.any(axis=1), rel),
                         "joints": [kin.joint_names[j] for j in np.flatnonzero(kin.at_limit.any(axis=0))],
                         "margin_deg": math.degrees(JOINT_LIMIT_MARGIN_RAD)},
        "speed": {
            "translation": {**_steps_summary(np.r_[path_step.max(axis=1) > step_translation * (1 + 1e-9), False],
                                             rel),
                            "peak_mm_s": round(float(translation.max() / dt * 1e3), 6),
                            "limit_mm_s_per_axis": round(run.translation_limit_m_s * 1e3, 6)},
            "rotation": {**_steps_summary(np.r_[rotation_step.max(axis=1) > step_rotation * (1 + 1e-9), False], rel),
                         "peak_deg_s": round(float(np.degrees(rotation.max()) / dt), 6),
                         "limit_deg_s_per_axis": round(math.degrees(run.rotation_limit_rad_s), 6)},
            "joints": {**_steps_summary(np.r_[joint_speed.max(axis=1) > MAX_JOINT_SPEED_RAD_S, False], rel),
                       "peak_deg_s": round(float(np.degrees(joint_speed.max())), 6),
                       "limit_deg_s": math.degrees(MAX_JOINT_SPEED_RAD_S)},
            "commands_scaled_down": {
                **_steps_summary(scaled, rel),
                "peak_requested_mm_s": round(float(requested[scaled, 0].max() * 1e3), 3) if scaled.any() else 0.0,
                "peak_requested_deg_s": round(float(np.degrees(requested[scaled, 1].max())), 3)
                if scaled.any() else 0.0},
        },
        "collisions": {"robot": _steps_summary(run.robot_contact, rel),
                       "tool_contact_steps": run.tool_contact_steps,
                       "tool_contact_is_collision": plan.tool_contact_is_collision, "pairs": run.contact_pairs},
        "tool_force": {"peak_n": round(float(force.max()), 3), "limit_n": run.tool_force_limit_n},
        "tracking": {"path_mm": _stats(path_error), "tolerance_mm": side.deviation_tolerance_mm,
                     "within_tolerance": within,
                     "lag_s": _stats(lag, 4), "lag_tolerance_s": side.lag_tolerance_s, "lag_within_tolerance": lag_ok,
                     "lag_measured_steps": int(moving.sum()),
                     "same_instant_mm": _stats(same_instant), "orientation_deg": _stats(orientation_error)},
    }
    problems = []
    for key, label in (("out_of_reach", "poses out of reach"), ("outside_workspace", "poses outside the workspace"),
                       ("joint_limits", "poses at a joint limit")):
        if report[key]["count"]:
            problems.append(f"{report[key]['count']} {label}")
    speed = report["speed"]
    if speed["translation"]["count"]:
        problems.append(f"{speed['translation']['count']} steps of the capture faster than the translation limit "
                        f"(peak {speed['translation']['peak_mm_s']:.1f} mm/s, limit "
                        f"{speed['translation']['limit_mm_s_per_axis']:.0f} mm/s per axis)")
    if speed["rotation"]["count"]:
        problems.append(f"{speed['rotation']['count']} steps of the capture faster than the rotation limit "
                        f"(peak {speed['rotation']['peak_deg_s']:.1f} deg/s, limit "
                        f"{speed['rotation']['limit_deg_s_per_axis']:.0f} deg/s per axis)")
    if speed["joints"]["count"]:
        problems.append(f"{speed['joints']['count']} steps faster than the joint speed limit (peak "
                        f"{speed['joints']['peak_deg_s']:.0f} deg/s, limit {speed['joints']['limit_deg_s']:.0f} deg/s)")
    scaled_report = speed["commands_scaled_down"]
    if scaled_report["count"]:
        problems.append(f"{scaled_report['count']} commands scaled down to the action limits (first at "
                        f"{scaled_report['first_times_s'][0]} s; asked for up to "
                        f"{scaled_report['peak_requested_mm_s']:.1f} mm/s and "
                        f"{scaled_report['peak_requested_deg_s']:.1f} deg/s)")
    if run.robot_contact.any():
        problems.append(f"robot collisions in {int(run.robot_contact.sum())} steps")
    if run.tool_contact_steps and plan.tool_contact_is_collision:
        problems.append(f"tool collisions in {run.tool_contact_steps} steps")
    if run.tool_force_limit_n is not None and force.max() > run.tool_force_limit_n:
        problems.append(f"tool force up to {force.max():.1f} N, over the cell's {run.tool_force_limit_n:g} N stop")
    if not within:
        problems.append(f"the executed tool strays up to {path_error.max():.2f} mm from the captured path "
                        f"(tolerance {side.deviation_tolerance_mm} mm)")
    if not lag_ok:
        problems.append(f"the executed tool lags the capture by up to {np.nanmax(lag):.3f} s (tolerance "
                        f"{side.lag_tolerance_s} s)")
    if run.ended_by.startswith(("instability", "physics invalid")):
        problems.append(f"the simulation ended the episode: {run.ended_by}")
    report["feasible"] = not problems
    report["problems"] = problems
    max_lag = float(np.nanmax(lag)) if moving.any() else 0.0
    return Feasibility(feasible=not problems, problems=problems, max_path_deviation_mm=float(path_error.max()),
                       max_lag_s=max_lag, report=report)


def import_capture(csv_path: str | Path, out: str | Path, *, sidecar: str | Path | None = None,
                   run_to_end: bool = True, progress: bool = True) -> ImportResult:
    """Imports a capture into the dataset folder ``out``: one episode plus its feasibility report.

    ``run_to_end``: the episode runs to the end of the capture (arc off, crater fill, hold), its
    success judged where the cell judges it; ``False`` ends it at the task's outcome.

    Raises a `CaptureError` subclass for a bad capture, before anything is written. An episode
    is written even where the report finds problems (it records what the robot really did); the
    report's ``feasible`` and ``problems`` say what they are.
    """
    capture = read_capture(csv_path, sidecar)
    plan = retarget(capture, run_to_end=run_to_end)
    run = execute(plan, progress=progress)
    verdict = assess(plan, run)
    episode = run.episode
    episode.extras.update({
        "target_time": plan.times - plan.times[0], "target_pos": plan.pos, "target_quat": plan.quat,
        "ik_qpos": plan.kinematics.qpos, "ik_position_error": plan.kinematics.position_error,
        "ik_orientation_error": plan.kinematics.orientation_error,
        "raw_t": capture.t, "raw_pose": capture.raw_pose,
        **{SIGNAL_PREFIX + name: v for name, v in plan.signals.items()},
        **{f"raw_signal/{name}": v for name, v in capture.signals.items()},
    })
    episode.notes = {"capture_file": capture.csv_path.name, "capture_sha256": capture.csv_sha256,
                     "sidecar": {**to_mapping(capture.sidecar), "env_kwargs": capture.env_kwargs},
                     "feasible": verdict.feasible, "problems": verdict.problems,
                     "max_path_deviation_mm": verdict.max_path_deviation_mm, "max_lag_s": verdict.max_lag_s}
    entry = DatasetWriter(out).add(episode, verdict.report)
    return ImportResult(entry=entry, episode=episode, report=verdict.report)


def format_report(report: dict[str, Any]) -> str:
    """A few lines for people: verdict, how the tool tracked the capture, problems."""
    track, task = report["tracking"], report["task"]
    outcome = ("task success" + (f" at {task['first_success_s']} s" if task["first_success_s"] is not None else "")
               if task["success"] else "task not achieved")
    gaps = report["capture"]["gaps"]
    lines = [f"{'feasible' if report['feasible'] else 'NOT feasible'}: {report['capture']['file']} -> "
             f"{report['cell_id']}, {report['executed_steps']}/{report['steps']} steps ({report['ended_by']}; "
             f"{outcome}); {report['execution']['control_mode']} control",
             f"  tracking: max {track['path_mm']['max']:.3f} mm from the path (tolerance {track['tolerance_mm']} mm), "
             f"lag max {track['lag_s']['max']:.3f} s, p95 {track['lag_s']['p95']:.3f} s (tolerance "
             f"{track['lag_tolerance_s']} s); {track['orientation_deg']['max']:.3f} deg max"]
    if gaps["count"]:
        lines.append(f"  gaps: {gaps['count']} over {gaps['threshold_s']} s, longest {gaps['longest_s']} s, first at "
                     f"{gaps['gaps'][0]['start_s']} s")
    lines += [f"  problem: {p}" for p in report["problems"]]
    return "\n".join(lines)
