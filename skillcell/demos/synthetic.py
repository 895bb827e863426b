"""Synthetic captures with a known answer, for tests, benchmarks and trying the importer.

`line_arc_path` is a seam-like tool path in the cell frame (a straight line, then a tangent arc,
with a gentle tilt); `write_capture` samples any such path as a tracker would (a capture frame of
its own, millimetres or metres, a sample rate with clock jitter, position and orientation noise)
and writes the CSV and its sidecar YAML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skillcell.config import to_mapping
from skillcell.demos.capture import FrameTransform, quat_mul
from skillcell.demos.episode import Provenance

__all__ = ["PathFunction", "line_arc_path", "write_capture"]

#: ``path(t) -> (pos (K, 3) m, quat (K, 4) w-first)`` in the cell frame, for times ``t`` (K,) in s
PathFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = 0.5 * angle
    with np.errstate(invalid="ignore", divide="ignore"):
        axis = np.where(angle > 1e-12, rotvec / angle, 0.0)
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def line_arc_path(start_pos: np.ndarray, start_quat: np.ndarray, duration_s: float, *, line_mm: float = 25.0,
                  radius_mm: float = 12.0, arc_deg: float = 180.0, drop_mm: float = 5.0, tilt_deg: float = 4.0,
                  traversals: int = 1) -> PathFunction:
    """A line along the cell's +x, then a tangent arc turning towards +y, traversed rest to rest.

    The path starts at ``start_pos`` (m) with orientation ``start_quat``; it descends ``drop_mm``
    along the line, and the tool tilts about the cell's x axis by up to ``tilt_deg`` and back.
    The arc length follows ``L (1 - cos(pi traversals t / T)) / 2``: smooth starts and stops,
    ``traversals`` passes back and forth over ``duration_s``. All lengths in mm, angles in deg.
    """
    start_pos = np.asarray(start_pos, float)
    start_quat = np.asarray(start_quat, float)
    line, radius = line_mm * 1e-3, radius_mm * 1e-3
    arc = radius * math.radians(arc_deg)
    length = line + arc

    def path(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, float)
        s = 0.5 * length * (1.0 - np.cos(math.pi * traversals * np.clip(t, 0.0, duration_s) / duration_s))
        on_line = np.minimum(s, line)
        phi = np.maximum(s - line, 0.0) / radius
        offset = np.stack([on_line + radius * np.sin(phi), radius * (1.0 - np.cos(phi)),
                           -drop_mm * 1e-3 * on_line / line], axis=-1)
        tilt = math.radians(tilt_deg) * np.sin(math.pi * s / length)
        turn = _quat_from_rotvec(np.stack([tilt, np.zeros_like(tilt), np.zeros_like(tilt)], axis=-1))
        return start_pos + offset, quat_mul(turn, np.broadcast_to(start_quat, turn.shape))

    return path


def write_capture(csv_path: str | Path, path: PathFunction, duration_s: float, *, cell_id: str,
                  capture_to_cell: FrameTransform, length_unit: str = "mm", rate_hz: float = 120.0,
                  position_noise_mm: float = 0.1, orientation_noise_deg: float = 0.1, jitter_s: float = 0.0005,
                  signals: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
                  provenance: Provenance | None = None, env_kwargs: Mapping[str, Any] | None = None,
                  seed: int = 0, extra_sidecar: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Samples ``path`` as a tracker in the frame ``capture_to_cell`` would and writes CSV + sidecar.

    Returns ``(csv_path, sidecar_path)``. ``signals`` maps extra column names to functions of time.
    Positions are written in ``length_unit`` with 6 decimals, quaternions with 9.
    """
    rng = np.random.default_rng(seed)
    csv_path = Path(csv_path)
    n = round(duration_s * rate_hz) + 1
    t = np.arange(n) / rate_hz
    t[1:-1] += rng.uniform(-jitter_s, jitter_s, n - 2)  # stays monotonic for jitter < period / 2
    pos_cell, quat_cell = path(t)
    scale = 1e-3 if length_unit == "mm" else 1.0
    R, p = capture_to_cell.rotation(), np.asarray(capture_to_cell.translation) * scale
    pos = (pos_cell - p) @ R / scale
    inverse = capture_to_cell.quat() * np.array([1.0, -1.0, -1.0, -1.0])
    quat = quat_mul(np.broadcast_to(inverse, quat_cell.shape), quat_cell)
    pos += rng.normal(0.0, position_noise_mm * 1e-3 / scale, pos.shape)
    wobble = _quat_from_rotvec(rng.normal(0.0, math.radians(orientation_noise_deg), (n, 3)))
    quat = quat_mul(quat, wobble)
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    quat *= np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]  # trackers flip signs freely
    columns = {"t": t, "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "qw": quat[:, 0], "qx": quat[:, 1],
               "qy": quat[:, 2], "qz": quat[:, 3]}
    for name, fn in (signals or {}).items():
        columns[name] = np.asarray(fn(t), float)
    formats = {"t": "%.6f", "x": "%.6f", "y": "%.6f", "z": "%.6f", "qw": "%.9f", "qx": "%.9f", "qy": "%.9f",
               "qz": "%.9f"}
    table = np.stack(list(columns.values()), axis=1)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(csv_path, table, delimiter=",", header=",".join(columns), comments="",
               fmt=[formats.get(c, "%.6g") for c in columns])
    sidecar = {
        "cell_id": cell_id, "length_unit": length_unit,
        "capture_to_cell": to_mapping(capture_to_cell),
        "provenance": to_mapping(provenance or Provenance(operator_id="synthetic", site="simulation",
                                                          source_device="skillcell.demos.synthetic", consent=True,
                                                          notes="synthetic capture with a known path")),
        "env_kwargs": dict(env_kwargs or {"randomize": False}), "samples": n, **dict(extra_sidecar or {}),
    }
    sidecar_path = csv_path.with_suffix(".yaml")
    sidecar_path.write_text(yaml.safe_dump(sidecar, sort_keys=False))
    return csv_path, sidecar_path

