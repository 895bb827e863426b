"""Welding, kinematically: seams, joints, welding procedure specs and torch process metrics.

MuJoCo has no arc physics, so weld quality is judged from the torch's motion, as a welding
inspector judges it. Frames and conventions:

- **Workpiece frame**: the base plate's top face is ``z = 0``; seams lie in that plane.
- **Seam frame** at arc length ``s``: ``x = t`` (travel direction), ``z = n`` (base plate normal),
  ``y = n x t`` (left of travel). The mate (web, lapped plate, other butt half) lies on the left;
  the torch works from the right (``-y``).
- **Torch axis** ``a``: the TCP z axis, from the contact tip towards the work.
- **Aim point**: the wire tip at the nominal contact-tip-to-work distance, ``p_tcp + ctwd_nom a``;
  on a good pass it sits on the seam (the root of the joint).

Process metrics (units in the names): travel speed along the seam (mm/s); work angle, the angle
between the torch and the base plate in the plane normal to the seam (90 deg = perpendicular,
45 deg bisects a fillet; past vertical towards the mate is above 90); travel angle, the tilt of
the torch along the seam (push positive, drag negative); contact-tip-to-work distance by ray cast
along the torch axis (mm); lateral and vertical deviation of the aim point from the seam along the
seam frame's y and z (mm, left and up positive); weave width (peak to peak of the lateral deviation) and
frequency over a sliding window.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
import sys
from dataclasses import dataclass, field, replace
from typing import Literal

import mujoco
import numpy as np

from skillcell.config import ConfigError, bounds
from skillcell.envs import kernels
from skillcell.envs.weld_process import (
    DEFECT_NAMES,
    ArcConfig,
    BeadModel,
    BeadModelConfig,
    DefectLimitsConfig,
    heat_input_kj_mm,
)

__all__ = [
    "METRIC_KEYS",
    "WEAVE_PATTERNS",
    "JointConfig",
    "SeamConfig",
    "SeamPath",
    "SegmentConfig",
    "WPSConfig",
    "WeaveConfig",
    "WeldMetrics",
    "plate_boxes",
    "torch_rotation",
    "weave_offsets",
]

#: the process metrics with a WPS band, as they appear in ``info`` and in `WPSConfig`
METRIC_KEYS = ("travel_speed_mm_s", "work_angle_deg", "travel_angle_deg", "ctwd_mm",
               "lateral_deviation_mm", "vertical_deviation_mm", "weave_width_mm")


@dataclass(frozen=True)
class SegmentConfig:
    """One piece of a seam path in the workpiece's top plane (millimetres, degrees).

    ``line`` goes to ``to_mm``; ``arc`` turns about ``center_mm`` by ``angle_deg`` (positive =
    counter-clockwise seen from above); ``polyline`` visits ``points_mm`` in order.
    """

    type: Literal["line", "arc", "polyline"]
    to_mm: tuple[float, float] | None = None
    center_mm: tuple[float, float] | None = None
    angle_deg: float | None = None
    points_mm: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        needed = {"line": ("to_mm",), "arc": ("center_mm", "angle_deg"), "polyline": ("points_mm",)}[self.type]
        for key in ("to_mm", "center_mm", "angle_deg", "points_mm"):
            present = getattr(self, key) is not None
            if key in needed and not present:
                raise ConfigError(f"{key}: a {self.type} segment needs it")
            if key not in needed and present:
                raise ConfigError(f"{key}: not used by a {self.type} segment")
        if self.type == "arc" and not 0 < abs(self.angle_deg) <= 360:
            raise ConfigError(f"angle_deg: must be non-zero and at most 360 in size, got {self.angle_deg}")
        if self.type == "polyline" and len(self.points_mm) < 1:
            raise ConfigError("points_mm: a polyline needs at least one point")


@dataclass(frozen=True)
class SeamConfig:
    """The seam path: a start point and segments, in the workpiece frame."""

    start_mm: tuple[float, float] = (0.0, -100.0)
    segments: tuple[SegmentConfig, ...] = (SegmentConfig("line", to_mm=(0.0, 100.0)),)
    sample_spacing_mm: float = field(default=1.0, metadata=bounds(0.1, 10.0))

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError("segments: a seam needs at least one segment")


@dataclass(frozen=True)
class JointConfig:
    """The joint and its plates (millimetres). The mate lies left of the travel direction."""

    type: Literal["fillet", "lap", "butt"] = "fillet"
    plate_thickness_mm: float = field(default=8.0, metadata=bounds(1.0, 40.0))
    base_width_mm: float = field(default=100.0, metadata=bounds(20.0, 500.0))
    mate_size_mm: float = field(default=60.0, metadata=bounds(10.0, 500.0))
    end_margin_mm: float = field(default=20.0, metadata=bounds(0.0, 200.0))
    gap_mm: float = field(default=0.0, metadata=bounds(0.0, 5.0))


WEAVE_PATTERNS = ("zigzag", "triangle", "crescent")
#: the bow of a crescent weave ahead of the straight crossing, a fraction of the weave width
CRESCENT_DEPTH = 1 / 3


@dataclass(frozen=True)
class WeaveConfig:
    """A prescribed weave: the aim point oscillates across the seam while the torch travels.

    One cycle, from the centre line outward: to one toe, ``dwell_s`` there (the lateral motion
    stops, travel goes on), across to the other toe, ``dwell_s`` there, back to the centre line
    (`weave_offsets`). ``zigzag`` travels steadily; ``triangle`` crosses from the second toe to the
    first without advancing (a leg square to the seam, the others diagonal), ``crescent`` bows each
    crossing ahead by `CRESCENT_DEPTH` of the width. The measured width and frequency must lie within
    ``tolerance`` of the prescription (a fraction of it, the rule that derives their bands);
    the dwell within that fraction or one control period, whichever is larger (it is measured in them).
    """

    pattern: Literal["zigzag", "triangle", "crescent"]
    width_mm: float = field(metadata=bounds(0.5, 30.0))
    frequency_hz: float = field(metadata=bounds(0.05, 5.0))
    dwell_s: float = field(default=0.0, metadata=bounds(0.0, 5.0))
    tolerance: float = field(default=0.1, metadata=bounds(0.01, 0.5))

    def __post_init__(self) -> None:
        if self.dwell_s * self.frequency_hz > 0.4:
            raise ConfigError(f"dwell_s: two dwells of {self.dwell_s} s leave a {self.frequency_hz} Hz cycle "
                              "less than a fifth of it to cross (at most 0.4 / frequency_hz)")

    def band(self, key: Literal["width_mm", "frequency_hz"]) -> tuple[float, float]:
        """``prescribed * (1 -+ tolerance)``."""
        value = getattr(self, key)
        return value * (1.0 - self.tolerance), value * (1.0 + self.tolerance)

    def dwell_band(self, control_dt: float) -> tuple[float, float]:
        spread = max(self.tolerance * self.dwell_s, control_dt)
        return max(0.0, self.dwell_s - spread), self.dwell_s + spread


def weave_offsets(weave: WeaveConfig, phase, pitch: float, width: float | None = None) -> tuple[np.ndarray, ...]:
    """``(lateral, along)`` offsets (m) of a weave at ``phase`` (cycles, any real; arrays): across the
    seam from the centre line, and along it from steady travel at ``pitch`` metres per cycle.

    Phase 0 is the centre line, crossed towards the left (positive lateral); ``width`` defaults to
    the prescribed one. The expert welder follows this path and the metrics compare a measured
    cycle with it, so the pattern is defined here once.
    """
    width = weave.width_mm * 1e-3 if width is None else width
    fraction = np.mod(phase, 1.0)
    dwell = weave.dwell_s * weave.frequency_hz
    cross = 0.5 - dwell  # the phase one crossing from toe to toe takes
    knots = (0.0, cross / 2, cross / 2 + dwell, 1.5 * cross + dwell, 1.5 * cross + 2 * dwell, 1.0)
    toe = np.interp(fraction, knots, (0.0, 1.0, 1.0, -1.0, -1.0, 0.0))
    if weave.pattern == "zigzag":
        along = np.zeros_like(toe)
    elif weave.pattern == "triangle":
        # The crossing back (knots 2 to 3) stands still; the rest of the cycle makes up the pitch.
        rate = pitch / (1.0 - cross)
        advanced = rate * np.array([0.0, cross / 2, cross / 2 + dwell, cross / 2 + dwell, cross / 2 + 2 * dwell,
                                    cross + 2 * dwell])
        along = np.interp(fraction, knots, advanced) - pitch * fraction
    else:
        along = CRESCENT_DEPTH * width * (1.0 - toe * toe)
    return 0.5 * width * toe, along


@dataclass(frozen=True)
class WPSConfig:
    """A welding procedure spec: the tolerance band ``[low, high]`` of every process metric.

    The WPS YAML is the one declaration of the bands (no defaults here): the bead metrics, the
    reward, the review's colour bands and the gate's in-spec criterion
    (``limits.min_in_spec_fraction``) all read it. Its ``arc``, ``bead_model`` and ``defects``
    sections feed the heat input, bead and defect models (`skillcell.envs.weld_process`).
    """

    travel_speed_mm_s: tuple[float, float] = field(metadata=bounds(0.0, 200.0))
    work_angle_deg: tuple[float, float] = field(metadata=bounds(0.0, 180.0))
    travel_angle_deg: tuple[float, float] = field(metadata=bounds(-45.0, 45.0))
    ctwd_mm: tuple[float, float] = field(metadata=bounds(1.0, 40.0))
    lateral_deviation_mm: tuple[float, float] = field(metadata=bounds(-20.0, 20.0))
    vertical_deviation_mm: tuple[float, float] = field(metadata=bounds(-20.0, 20.0))
    min_in_spec_fraction: float = field(metadata=bounds(0.0, 1.0))
    arc: ArcConfig
    bead_model: BeadModelConfig
    defects: DefectLimitsConfig
    #: without a weave, the band of the lateral wobble; with one, derived from it (`WeaveConfig.band`)
    weave_width_mm: tuple[float, float] | None = field(default=None, metadata=bounds(0.0, 30.0))
    weave: WeaveConfig | None = None
    name: str = ""
    process: str = "GMAW"

    def __post_init__(self) -> None:
        if self.weave is None and self.weave_width_mm is None:
            raise ConfigError("weave_width_mm: required key is missing (or prescribe a weave:)")
        if self.weave is not None and self.weave_width_mm is not None:
            raise ConfigError("weave_width_mm: a prescribed weave derives this band from weave.width_mm and "
                              "weave.tolerance; give one of the two")
        for key in METRIC_KEYS:
            low, high = self.band(key)
            if low >= high:
                raise ConfigError(f"{key}: the band [low, high] needs low < high, got [{low}, {high}]")

    def band(self, key: str) -> tuple[float, float]:
        if key == "weave_width_mm" and self.weave is not None:
            return self.weave.band("width_mm")
        return getattr(self, key)

    def nominal(self, key: str) -> float:
        """The middle of a band: what a good welder aims for."""
        low, high = self.band(key)
        return 0.5 * (low + high)

    @property
    def heat_input_band(self) -> tuple[float, float]:
        """The heat input (kJ/mm) this WPS qualifies: its arc's ``eta U I / v`` (`heat_input_kj_mm`) at the
        fast end of the travel-speed band (low) and at the slow end (high), as a WPS states the range that
        its electrics and travel speeds give (ASME IX QW-409.1); a band from 0 mm/s has no upper bound (inf)."""
        arc, (slow, fast) = self.arc, self.band("travel_speed_mm_s")

        def q(speed: float) -> float:
            return heat_input_kj_mm(arc.current_a, arc.voltage_v, arc.arc_efficiency, speed) if speed > 0 else math.inf

        return q(fast), q(slow)


class SeamPath:
    """A seam sampled every ``spacing`` metres with exact tangents: ``points``, ``tangents``, ``s``.

    Arc lengths ``s`` are chord sums, short of the true arc length by ``(h/R)^2 / 24`` relatively
    (h the spacing, R the radius): 1e-6 for 1 mm steps on a 50 mm radius.

    All arrays are in the workpiece frame (z = 0). ``corners`` keeps the vertices of straight pieces
    and coarse arc samples, which is all the plate generator needs.
    """

    def __init__(self, seam: SeamConfig):
        spacing = seam.sample_spacing_mm * 1e-3
        current = np.array(seam.start_mm, float) * 1e-3
        points, tangents = [current.copy()], [None]
        self.corners = [current.copy()]

        def add_piece(samples):
            # A junction sample takes the tangent of the piece that starts there.
            for i, (point, tangent) in enumerate(samples):
                if i == 0:
                    tangents[-1] = tangent
                else:
                    points.append(point)
                    tangents.append(tangent)

        for index, seg in enumerate(seam.segments):
            where = f"seam.segments[{index}]"
            if seg.type in ("line", "polyline"):
                targets = [seg.to_mm] if seg.type == "line" else list(seg.points_mm)
                for target in targets:
                    end = np.array(target, float) * 1e-3
                    length = float(np.linalg.norm(end - current))
                    if length < 1e-6:
                        raise ConfigError(f"{where}: a straight piece of zero length at {target}")
                    direction = (end - current) / length
                    n = max(1, math.ceil(length / spacing))
                    add_piece((current + (end - current) * i / n, direction) for i in range(n + 1))
                    current = end
                    self.corners.append(current.copy())
            else:
                center = np.array(seg.center_mm, float) * 1e-3
                radius = float(np.linalg.norm(current - center))
                if radius < 1e-4:
                    raise ConfigError(f"{where}.center_mm: the arc starts on its centre")
                start = math.atan2(current[1] - center[1], current[0] - center[0])
                sweep = math.radians(seg.angle_deg)
                sign = math.copysign(1.0, sweep)

                def on_arc(fraction, center=center, radius=radius, start=start, sweep=sweep):
                    angle = start + sweep * fraction
                    return center + radius * np.array([math.cos(angle), math.sin(angle)])

                def tangent(fraction, start=start, sweep=sweep, sign=sign):
                    angle = start + sweep * fraction
                    return sign * np.array([-math.sin(angle), math.cos(angle)])

                n = max(1, math.ceil(radius * abs(sweep) / spacing))
                add_piece((on_arc(i / n), tangent(i / n)) for i in range(n + 1))
                pieces = math.ceil(abs(sweep) / math.radians(5))
                self.corners.extend(on_arc(j / pieces) for j in range(1, pieces + 1))
                current = points[-1].copy()
        self.points = np.zeros((len(points), 3))
        self.points[:, :2] = points
        self.tangents = np.zeros((len(points), 3))
        self.tangents[:, :2] = tangents
        steps = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        self.s = np.concatenate([[0.0], np.cumsum(steps)])
        self.length = float(self.s[-1])


def plate_boxes(joint: JointConfig, path: SeamPath) -> tuple[list, list]:
    """Boxes ``(half_size, pos, quat)`` for the base plate and for the mate, in the workpiece frame.

    Straight base plates are one box around the whole seam; plates that must follow the seam (the
    web of a fillet, the lapped plate, both halves of a butt joint) are chains of boxes, one per
    straight piece or 5 degree piece of arc, running on past the seam's ends by the plate thickness.

    At a bend a piece's box ends where the mitre (the bend's bisector) crosses the side of its strip
    that reaches farthest: on the outside of the bend the pieces overlap (ending where the seam turns,
    they would leave a wedge-shaped slit there), and what a box has beyond the mitre lies inside its
    neighbour's strip. No box reaches past the seam line: at a bend with the web (or the lapped plate)
    inside the turn, the pieces end on the seam's vertex, where a box run on past it would stand out
    onto the torch's side (``t sin(turn)``: 1.1 mm at 8 degrees with 8 mm plate). That holds for bends
    of up to 90 degrees: past that, a square-ended box reaches across its neighbour's seam line with
    its own far side (a web bent back on itself would need its pieces cut along the mitre).
    """
    t = joint.plate_thickness_mm * 1e-3
    size = joint.mate_size_mm * 1e-3
    gap = joint.gap_mm * 1e-3
    corners = np.asarray(path.corners)
    z = np.array([0.0, 0.0, 1.0])
    pieces = np.diff(corners, axis=0)
    directions = pieces / np.linalg.norm(pieces, axis=1)[:, None]
    (x0, y0), (x1, y1) = directions[:-1].T, directions[1:].T
    # tan of half of each interior vertex's turn (left, towards the mate, positive)
    half_turns = np.tan(0.5 * np.arctan2(x0 * y1 - y0 * x1, x0 * x1 + y0 * y1))

    def chain(offset_left: float, half_width: float, z_centre: float, half_height: float):
        """The boxes of a strip ``offset_left -+ half_width`` left of the seam."""
        # The mitre at lateral y lies -y tan(turn / 2) along the piece past the vertex.
        overrun = np.maximum(-(offset_left - half_width) * half_turns, -(offset_left + half_width) * half_turns)
        before, after = np.r_[t, overrun].tolist(), np.r_[overrun, t].tolist()
        boxes = []
        for i, (a, b) in enumerate(itertools.pairwise(corners)):
            d = b - a
            length = float(np.linalg.norm(d))
            direction = np.r_[d / length, 0.0]
            left = np.cross(z, direction)
            half = np.array([length / 2 + 0.5 * (before[i] + after[i]), half_width, half_height])
            centre = np.r_[(a + b) / 2, 0.0] + direction * (0.5 * (after[i] - before[i])) + left * offset_left \
                + z * z_centre
            yaw = math.atan2(direction[1], direction[0])
            quat = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
            boxes.append((half, centre, quat))
        return boxes

    if joint.type == "butt":
        base = chain(-(gap / 2 + size / 2), size / 2, -t / 2, t / 2)
        mate = chain(gap / 2 + size / 2, size / 2, -t / 2, t / 2)
        return base, mate
    margin = joint.end_margin_mm * 1e-3 + joint.base_width_mm * 1e-3
    low, high = corners.min(axis=0) - margin, corners.max(axis=0) + margin
    base = [(np.r_[(high - low) / 2, t / 2], np.r_[(high + low) / 2, -t / 2], np.array([1.0, 0, 0, 0]))]
    if joint.type == "fillet":
        mate = chain(t / 2, t / 2, gap + size / 2, size / 2)
    else:  # lap: the upper plate lies on the base, its edge on the seam
        mate = chain(size / 2, size / 2, gap + t / 2, t / 2)
    return base, mate


def torch_rotation(work_angle_deg: float, travel_angle_deg: float) -> np.ndarray:
    """``R_seam_tcp``: the torch orientation in the seam frame for a work and a travel angle.

    The back direction ``b = -a`` leans ``work`` from the base plate towards the torch side
    (``-y``) and ``travel`` against the travel direction (push): ``b = cos(tr) (cos(w) (-y) +
    sin(w) z) - sin(tr) x``. The TCP x axis is the travel direction made normal to the axis.
    """
    w, tr = math.radians(work_angle_deg), math.radians(travel_angle_deg)
    back = math.cos(tr) * np.array([0.0, -math.cos(w), math.sin(w)]) - math.sin(tr) * np.array([1.0, 0, 0])
    axis = -back
    x = np.array([1.0, 0.0, 0.0]) - axis[0] * axis
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(axis, x), axis])


class WeaveCheck:
    """A prescribed weave, measured cycle by cycle against it (`WeaveConfig`, `weave_offsets`).

    A cycle runs from one crossing of the seam's centre line towards the left to the next (after
    the aim point has been a quarter of the prescribed width to the right: noise cannot end one),
    the crossing times and seam positions interpolated between control steps. Each closed cycle
    gives its width (peak to peak), frequency, travel speed (seam advance from crossing to
    crossing), centre line (midway between the peaks), dwell (half of what the period leaves
    after two crossings from toe to toe at the speed the aim point crosses the centre line
    with) and its shape: the RMS distance, over the cycle, of the aim point's path (across the
    seam, and along it less the steady travel) from each pattern's path at the same phase, width
    and pitch. The nearest pattern is the cycle's classification; the distance from the
    prescribed one, over the prescribed width, its shape error. A cycle is in spec with its
    width, frequency and dwell in the weave's bands, the WPS's travel speed and lateral deviation
    bands holding its travel speed and centre line, and the prescribed pattern.

    `step` costs a few comparisons and an append; the analysis runs once per cycle.
    """

    def __init__(self, wps: WPSConfig, control_dt: float):
        weave = self.weave = wps.weave
        self.dt = control_dt
        steps_per_cycle = 1.0 / (weave.frequency_hz * control_dt)
        if steps_per_cycle < 8:
            raise ConfigError(f"weave.frequency_hz: {weave.frequency_hz} Hz leaves {steps_per_cycle:.1f} control "
                              f"steps per cycle at {1 / control_dt:g} Hz control; a weave needs at least 8")
        self.bands = {"width": weave.band("width_mm"), "frequency": weave.band("frequency_hz"),
                      "dwell": weave.dwell_band(control_dt), "speed": wps.band("travel_speed_mm_s"),
                      "centre": wps.band("lateral_deviation_mm")}
        self._arm = 0.25e-3 * weave.width_mm
        self._templates = [replace(weave, pattern=pattern) for pattern in WEAVE_PATTERNS]
        self.reset()

    def reset(self) -> None:
        self._k = 0
        self._armed = False
        self._previous = self._previous_s = 0.0
        self._crossed: tuple[float, float, float] | None = None  # the cycle's start: step, seam position, slope
        self._samples: list[tuple[int, float, float]] = []
        #: whether a cycle has been judged yet, and the last one's verdict
        self.judged = self.in_spec = False
        #: the last closed cycle's figures (NaN before the first), as the step's ``info`` holds them
        self.info: dict[str, float | bool | str] = {
            "weave_cycle_width_mm": math.nan, "weave_cycle_frequency_hz": math.nan,
            "weave_cycle_travel_speed_mm_s": math.nan, "weave_centre_mm": math.nan, "weave_dwell_s": math.nan,
            "weave_shape_error": math.nan, "weave_pattern": "", "weave_cycle_in_spec": False}
        self._cycles: list[tuple[float, ...]] = []  # width, frequency, speed, dwell, shape error, match, in spec
        self.bead: dict[str, float | str] = {"bead_weave_cycles": 0}

    def step(self, lateral: float, s: float) -> bool:
        """One arc-on control step: the aim point's lateral deviation and seam position (m). True
        where it closed a cycle."""
        k, previous, previous_s = self._k, self._previous, self._previous_s
        self._k, self._previous, self._previous_s = k + 1, lateral, s
        closed = False
        if lateral < -self._arm:
            self._armed = True
        elif self._armed and lateral >= 0.0:
            self._armed = False
            u = previous / (previous - lateral)  # previous < 0 <= lateral
            crossed = (k - 1 + u, previous_s + u * (s - previous_s), lateral - previous)
            if self._crossed is not None and len(self._samples) >= 4:
                self._close(self._samples, self._crossed, crossed)
                closed = True
            self._crossed, self._samples = crossed, []
        self._samples.append((k, lateral, s))
        return closed

    def _close(self, samples: list[tuple[int, float, float]], start: tuple[float, float, float],
               end: tuple[float, float, float]) -> None:
        """Judges the cycle of ``samples`` between two crossings ``(step, seam position, lateral speed)``."""
        weave, dt, bands = self.weave, self.dt, self.bands
        k, y, s = (np.array(column, float) for column in zip(*samples, strict=True))
        period, pitch = end[0] - start[0], end[1] - start[1]
        high, low = float(y.max()), float(y.min())
        width, centre = high - low, 0.5 * (high + low)
        phase = (k - start[0]) / period
        # Along the seam, less the steady travel from crossing to crossing (a pattern's path repeats
        # itself a pitch on, so that is its travel, whatever it does in between).
        along = s - start[1] - pitch * phase
        along -= along.mean()
        errors = []
        for template in self._templates:
            lateral_path, along_path = weave_offsets(template, phase, pitch, width)
            along_path = along_path - along_path.mean()
            across = float(np.square(y - centre - lateral_path).sum())
            # the pattern mirrored along the seam (bowed or skewed backwards) is the same pattern
            matched = float(along @ along) + float(along_path @ along_path) - 2.0 * abs(float(along @ along_path))
            errors.append(math.sqrt(max(0.0, across + matched) / len(k)))
        classified = WEAVE_PATTERNS[int(np.argmin(errors))]
        # The crossing back: the steepest fall between consecutive samples, where the line is crossed.
        falls = y[:-1] - y[1:]
        crossing = (y[:-1] >= centre) & (y[1:] < centre)
        speed = 0.5 * (start[2] + (float(falls[crossing].max()) if crossing.any() else start[2]))
        dwell = 0.5 * (period - 2.0 * width / speed) * dt
        figures = {"width": width * 1e3, "frequency": 1.0 / (period * dt), "speed": pitch / (period * dt) * 1e3,
                   "dwell": dwell, "centre": centre * 1e3}
        in_spec = classified == weave.pattern and all(lo <= figures[key] <= hi for key, (lo, hi) in bands.items())
        shape_error = errors[WEAVE_PATTERNS.index(weave.pattern)] / (weave.width_mm * 1e-3)
        self.judged, self.in_spec = True, in_spec
        self.info = {"weave_cycle_width_mm": figures["width"], "weave_cycle_frequency_hz": figures["frequency"],
                     "weave_cycle_travel_speed_mm_s": figures["speed"], "weave_centre_mm": figures["centre"],
                     "weave_dwell_s": dwell, "weave_shape_error": shape_error, "weave_pattern": classified,
                     "weave_cycle_in_spec": in_spec}
        self._cycles.append((figures["width"], figures["frequency"], figures["speed"], dwell, shape_error,
                             float(classified == weave.pattern), float(in_spec)))
        table = np.array(self._cycles)
        mean, std = table.mean(axis=0), table.std(axis=0)
        self.bead = {"bead_weave_cycles": len(self._cycles),
                     "bead_weave_width_mm_mean": float(mean[0]), "bead_weave_width_mm_std": float(std[0]),
                     "bead_weave_frequency_hz_mean": float(mean[1]), "bead_weave_frequency_hz_std": float(std[1]),
                     # weaving, the bead's travel speed is its cycles' (the speed within one swings)
                     "bead_travel_speed_mm_s_mean": float(mean[2]), "bead_travel_speed_mm_s_std": float(std[2]),
                     "bead_weave_dwell_s_mean": float(mean[3]), "bead_weave_shape_error_mean": float(mean[4]),
                     "bead_weave_pattern_fraction": float(mean[5]), "bead_weave_in_spec_fraction": float(mean[6])}


#: the nearest-seam-point search window, in samples behind and ahead of the last nearest one
SEARCH_BEHIND, SEARCH_AHEAD = 30, 60


class WeldMetrics:
    """Per-step process metrics of a torch on a seam, and the bead they leave.

    `reset` places the seam in the world (the workpiece pose of this episode); `measure` takes the
    TCP pose and returns the step's metrics; the bead record (which seam samples were welded, and
    whether in spec) accumulates until the next reset.

    `measure` runs every control step, so it costs little: the bead is kept as running counts
    and sums (no full-length masks per step), the seam point is searched near the last one, the
    weave window is a sliding buffer, and 3-vectors are handled as floats in the order of
    operations numpy used, which keeps every result bit-identical to the array formulation.
    """

    def __init__(self, path: SeamPath, wps: WPSConfig, model: mujoco.MjModel, data: mujoco.MjData,
                 plate_group: int, control_dt: float, weave_window_s: float = 2.0,
                 joint: JointConfig = JointConfig()):
        self.path, self.wps, self.model, self.data = path, wps, model, data
        self.bead_model = BeadModel(wps.arc, wps.bead_model, wps.defects, joint.type, joint.plate_thickness_mm,
                                    wps.nominal("work_angle_deg"), wps.weave.width_mm if wps.weave else 0.0)
        #: seam length per sample (mm): what a welded sample stands for in the defect lengths
        self._sample_mm = path.length * 1e3 / max(1, len(path.s) - 1)
        #: a bin shorter than this (mm) counts as this long: a torch that dwells does not divide by zero
        self._min_bin_mm = 0.1 * self._sample_mm
        #: the step's flag key and the per-bead length key of each defect, in `DEFECT_NAMES` order (`_close_bin`)
        self._defect_flag_keys = tuple(f"defect_{name}" for name in DEFECT_NAMES)
        self._defect_length_keys = tuple(f"{key}_mm" for key in self._defect_flag_keys)
        self.dt = control_dt
        self.ctwd_nominal = wps.nominal("ctwd_mm") * 1e-3
        self._ctwd_nominal_mm = wps.nominal("ctwd_mm")
        self._geomgroup = np.zeros(6, np.uint8)
        self._geomgroup[plate_group] = 1
        #: the WPS bands as (low_0, high_0, low_1, ...) in `METRIC_KEYS` order
        self._band_bounds = tuple(bound for key in METRIC_KEYS for bound in wps.band(key))
        #: the summary's mean and std keys of the first four metrics (`bead_summary` unrolls them)
        self._summary_keys = tuple(f"bead_{key}_{stat}" for key in METRIC_KEYS[:4] for stat in ("mean", "std"))
        self._window = max(2, round(weave_window_s / control_dt))
        # The weave's running mean is off the exact one by at most about (3.5 window + 16) eps
        # times the largest deviation summed since the last resynchronization (`_weave`); twice that.
        self._mean_tolerance = (7 * self._window + 32) * sys.float_info.epsilon
        n = len(path.s)
        self._s_list = path.s.tolist()  # bisect on a list beats numpy for one lookup per call
        self.points_world = np.zeros((n, 3))
        self.tangents_world = np.zeros((n, 3))
        self.normal_world = np.zeros(3)
        self.welded = np.zeros(n, bool)
        self.in_spec = np.zeros(n, bool)
        #: the seam frame at the aim point of the last `measure` (updated in place)
        self.p_world_seam = np.zeros(3)
        self.R_world_seam = np.eye(3)
        self._R_world_seam_flat = self.R_world_seam.ravel()  # a view
        #: `R_world_seam` row by row as nine floats
        self.R_world_seam_rows = self._R_world_seam_flat.tolist()
        # An episode's first search runs up to the sample farthest from the start (every sample of an
        # open seam): a seam that comes back to its start (a pipe's circle, its tie-in overlap) is as
        # near the start at its end, and a torch before the start belongs to the start.
        self._first_search_end = int(np.argmax(np.linalg.norm(path.points - path.points[0], axis=1))) + 1
        #: the seam geometry per step, compiled (`skillcell.envs.kernels.Seam`), bound to the arrays above
        self._ray_vec = np.empty(3)
        self._seam = kernels.Seam(points=self.points_world, tangents=self.tangents_world, normal=self.normal_world,
                                  s=path.s, lengths=np.maximum(np.diff(path.s), 1e-12), frame=self._R_world_seam_flat,
                                  point=self.p_world_seam, ray=self._ray_vec, behind=SEARCH_BEHIND, ahead=SEARCH_AHEAD)
        #: the prescribed weave's cycle-by-cycle check (None: the WPS prescribes none)
        self.weave = WeaveCheck(wps, control_dt) if wps.weave is not None else None
        self._weave_pitch = wps.nominal("travel_speed_mm_s") * 1e-3 / wps.weave.frequency_hz if self.weave else 0.0

    def reset(self, p_world_workpiece: np.ndarray, R_world_workpiece: np.ndarray) -> None:
        self.points_world[:] = self.path.points @ R_world_workpiece.T + p_world_workpiece
        self.tangents_world[:] = self.path.tangents @ R_world_workpiece.T
        self.normal_world[:] = R_world_workpiece[:, 2]
        self._normal = self.normal_world.tolist()
        self.welded[:] = False
        self.in_spec[:] = False
        #: how many seam samples are welded, and welded in spec (the counts of `welded`, `in_spec`)
        self.welded_count = self.in_spec_count = 0
        self.index = 0
        self.s = None
        #: the aim point of the last `measure` (world frame, m), and in the seam frame there
        self.aim: tuple[float, float, float] | None = None
        self.aim_seam: tuple[float, float, float] | None = None
        self.R_world_seam_rows = []  # no frame yet: the first `measure` writes `R_world_seam`
        self._seam_rotvec: tuple[float, float, float] | None = None
        self._seam_quat: tuple[float, float, float, float] | None = None
        #: the lateral deviations in the weave window, oldest first
        self._lateral_values: collections.deque[float] = collections.deque()
        self._lateral_sorted: list[float] = []
        self._pair_lows: list[float] = []
        self._pair_highs: list[float] = []
        self._lateral_finite = True
        self._lateral_sum = 0.0  # running, resynchronized every window length
        self._lateral_since_sync = 0
        self._lateral_abs_max = 0.0
        self._weave_cache = (0.0, 0.0)
        self.arc_steps = 0
        self._sum = self._sum_sq = (0.0, 0.0, 0.0, 0.0)
        self._reset_bead()
        #: the bead laid before the first weave cycle closes, ``(samples, in spec but for the weave)``
        #: per step; None: judged as it is laid
        self._pending: list[tuple[list[int], bool]] | None = None
        if self.weave is not None:
            self.weave.reset()
            self._pending = []

    def point(self, s: float) -> np.ndarray:
        """``p_world_seam`` at arc length ``s`` (metres), clamped to the seam."""
        return np.array(self._seam.frame(s)[:3])

    def seam_ahead(self, distances) -> list[float]:
        """The seam points ``distances`` (m) ahead of the last aim point's seam position, from the
        aim point in the seam frame there, flattened: what a seam-tracking sensor reports."""
        return self._seam.ahead(self.s, *self.aim, *distances)

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """``(p_world_seam, R_world_seam)`` at arc length ``s`` (metres), clamped to the seam: the point
        interpolated between samples, the travel direction from their tangents, left ``n x t``."""
        px, py, pz, *axes = self._seam.frame(s)
        R = np.empty((3, 3))
        R.T[:] = axes[:3], axes[3:], self.normal_world
        return np.array((px, py, pz)), R

    def locate(self, p_world) -> float:
        """Arc length of the seam point closest to ``p_world``, searched near the last one: the first sample
        nearest it (as ``np.argmin`` finds it) from `SEARCH_BEHIND` samples behind the last nearest one to
        `SEARCH_AHEAD` ahead (on an episode's first call, the samples up to the one farthest from the
        start), then the nearest point on the pieces either side of that sample."""
        x, y, z = p_world
        self.index, s = self._seam.locate(x, y, z, -1 if self.s is None else self.index, self._first_search_end)
        return s

    def measure(self, p_tcp: np.ndarray, R_world_tcp: np.ndarray, arc_on: bool) -> dict[str, float]:
        """The step's metrics for a TCP pose; with the arc on, it also deposits bead up to here."""
        # The geometry, compiled (`kernels.Seam.pose`): the aim point (the wire tip at the nominal CTWD)
        # located on the seam, the seam frame there (`p_world_seam`, `R_world_seam`: rewritten only where
        # it changed; a straight seam keeps its frame), the aim's offset in it, the work and travel angles,
        # the torch axis (the ray's direction) and the distance along it to the base plate's plane.
        s_previous = self.s
        (self.index, s, aim_x, aim_y, aim_z, ax, ay, az, yx, yy, yz, lateral, vertical, along, work, travel, facing,
         plane, changed) = self._seam.pose(
            p_tcp, R_world_tcp, self.ctwd_nominal, -1 if s_previous is None else self.index, self._first_search_end,
            not self.R_world_seam_rows)
        self.aim, self.aim_seam = (aim_x, aim_y, aim_z), (along, lateral, vertical)
        if changed:
            self.R_world_seam_rows = self._R_world_seam_flat.tolist()
            self._seam_rotvec = self._seam_quat = None
        # CTWD: a ray cast to the plates; where it slips through a root gap (or hits nothing), the
        # distance to the plane of the base plate's top face through the seam, where the arc would burn.
        distance = mujoco.mj_ray(self.model, self.data, p_tcp, self._ray_vec, self._geomgroup, 1, -1, None)
        ctwd = plane if distance < 0 or distance > plane else distance
        speed = 0.0 if s_previous is None else (s - s_previous) / self.dt
        self.s = s

        weave = self.weave
        if arc_on:
            self._append_lateral(lateral)
            if weave is not None and weave.step(lateral, s) and self._pending is not None:
                self._judge_pending()
        weave_width, weave_hz = self._weave_cache
        v0, v3, v4, v5, v6 = speed * 1e3, ctwd * 1e3, lateral * 1e3, vertical * 1e3, weave_width * 1e3
        l0, h0, l1, h1, l2, h2, l3, h3, l4, h4, l5, h5, l6, h6 = self._band_bounds
        if weave is None:
            in_spec = (l0 <= v0 <= h0 and l1 <= work <= h1 and l2 <= travel <= h2 and l3 <= v3 <= h3
                       and l4 <= v4 <= h4 and l5 <= v5 <= h5 and l6 <= v6 <= h6)
        else:  # weaving, the weave, travel speed and lateral deviation are the last cycle's (`WeaveCheck`)
            in_spec = (weave.in_spec and l1 <= work <= h1 and l2 <= travel <= h2 and l3 <= v3 <= h3
                       and l5 <= v5 <= h5)
        if arc_on:
            self.arc_steps += 1
            self._energy += self._net_energy_step
            # Sums of the metrics the bead summary averages (`_summary_keys`: the first four).
            t0, t1, t2, t3 = self._sum
            self._sum = t0 + v0, t1 + work, t2 + travel, t3 + v3
            t0, t1, t2, t3 = self._sum_sq
            self._sum_sq = t0 + v0 * v0, t1 + work * work, t2 + travel * travel, t3 + v3 * v3
            if s_previous is not None:
                if self._pending is None:
                    self._deposit(min(s_previous, s), max(s_previous, s), in_spec)
                else:  # before the first weave cycle closes: welded now, judged by it (`_judge_pending`)
                    count = len(self._new_samples)
                    self._deposit(min(s_previous, s), max(s_previous, s), False)
                    self._pending.append((self._new_samples[count:], l1 <= work <= h1 and l2 <= travel <= h2
                                          and l3 <= v3 <= h3 and l5 <= v5 <= h5))
                new = self._new_samples
                if new and weave is not None:
                    # weaving, a bin of the bead model spans a weave's pitch at least: its heat input
                    # and speed are the weave's, not those of one swing across
                    if self._bin_s is None:
                        self._bin_s = s_previous
                    if abs(s - self._bin_s) < self._weave_pitch:
                        new = None
                if new:
                    # where the arc lands: the wire tip at the measured CTWD, off the root across the seam
                    past = v3 - self._ctwd_nominal_mm
                    self._close_bin(s_previous, s, v3, travel, work,
                                    math.hypot(v4 + past * (ax * yx + ay * yy + az * yz), v5 + past * facing))
            travel_speed = v0 if weave is None or not weave.judged else weave.info["weave_cycle_travel_speed_mm_s"]
            heat = self._heat_per_speed / (travel_speed if travel_speed > self._speed_floor else self._speed_floor)
        else:
            heat = 0.0
            self._bin_s = None  # the next bin starts where the arc strikes again
        # On a copy of the bead model's last millimetre and bead summary (`_close_bin`): a copy costs less
        # than adding its keys to a new dict
        step = self._bead_info.copy()
        step["travel_speed_mm_s"], step["work_angle_deg"], step["travel_angle_deg"] = v0, work, travel
        step["ctwd_mm"], step["lateral_deviation_mm"], step["vertical_deviation_mm"] = v3, v4, v5
        step["weave_width_mm"], step["weave_frequency_hz"], step["in_spec"] = v6, weave_hz, in_spec
        step["seam_position_mm"], step["heat_input_kj_mm"] = s * 1e3, heat
        if weave is not None:
            step.update(weave.info)
        return step

    def set_electrics(self, current_a: float, voltage_v: float) -> None:
        """The arc's current and voltage from the next `measure` on (a capture's measured columns); `reset`
        returns to the WPS's."""
        self.current_a, self.voltage_v = float(current_a), float(voltage_v)
        power = self.wps.arc.arc_efficiency * self.voltage_v * self.current_a  # net arc power, W
        self._net_energy_step = power * self.dt
        self._heat_per_speed = heat_input_kj_mm(self.current_a, self.voltage_v, self.wps.arc.arc_efficiency, 1.0)

    def _reset_bead(self) -> None:
        """The bead model's record: one row per seam sample (`bead_profile`), bin accumulators, the summary."""
        n = len(self._s_list)
        #: per seam sample, `BeadModel.evaluate`'s tuple for the millimetre that welded it (None: not welded)
        self._bead_rows: list[tuple | None] = [None] * n
        self._new_samples: list[int] = []
        self._energy = 0.0  # net arc energy since the reset (J)
        self._bin_s: float | None = None  # where the open bin started (m), None: where the next deposit does
        self._bin_energy, self._bin_steps = 0.0, 0
        self._defect_counts = [0] * len(DEFECT_NAMES)
        self._flagged = False  # whether the last millimetre welded had a defect flag set
        self._any_defect_count = self._out_of_range_count = self._bead_samples = 0
        self._heat_sum = 0.0
        self._leg_min = math.inf
        self._speed_floor = self.wps.bead_model.travel_speed_mm_s[0]
        self._bead_info: dict[str, float | bool] = {
            "bead_width_mm": 0.0, "bead_reinforcement_mm": 0.0, "bead_penetration_mm": 0.0, "bead_leg_mm": 0.0,
            "bead_model_in_range": True, **dict.fromkeys(self._defect_flag_keys, False),
            **dict.fromkeys(self._defect_length_keys, 0.0), "defect_length_mm": 0.0,
            "bead_heat_input_kj_mm_mean": 0.0, "bead_leg_mm_min": 0.0, "bead_out_of_range_mm": 0.0}
        self.set_electrics(self.wps.arc.current_a, self.wps.arc.voltage_v)

    def _close_bin(self, s_previous: float, s: float, ctwd_mm: float, travel: float, work: float,
                   aim_offset_mm: float) -> None:
        """The bead model over the stretch welded since the last bin closed, for the samples it newly welded."""
        start = s_previous if self._bin_s is None else self._bin_s
        length = abs(s - start) * 1e3
        if length < self._min_bin_mm:
            length = self._min_bin_mm
        row = self.bead_model.evaluate(self._energy - self._bin_energy, (self.arc_steps - self._bin_steps) * self.dt,
                                       length, self.current_a, self.voltage_v, ctwd_mm, travel, work, aim_offset_mm)
        self._bin_s, self._bin_energy, self._bin_steps = s, self._energy, self.arc_steps
        new, rows = self._new_samples, self._bead_rows
        count = len(new)
        for i in new:
            rows[i] = row
        new.clear()
        (heat, width, reinforcement, penetration, leg, in_range, porosity, undercut, lack_of_fusion, burn_through,
         short_leg) = row
        counts, info = self._defect_counts, self._bead_info
        info["bead_width_mm"], info["bead_reinforcement_mm"] = width, reinforcement
        info["bead_penetration_mm"], info["bead_leg_mm"], info["bead_model_in_range"] = penetration, leg, in_range
        defective = porosity or undercut or lack_of_fusion or burn_through or short_leg
        if defective or self._flagged:  # the flags stay False along a sound bead: written only where they change
            info.update(zip(self._defect_flag_keys, row[6:], strict=True))
            self._flagged = defective
        if defective:  # rare: the lengths only change then
            mm = self._sample_mm
            for j, (flag, key) in enumerate(zip(row[6:], self._defect_length_keys, strict=True)):
                if flag:
                    counts[j] += count
                    info[key] = counts[j] * mm
            self._any_defect_count += count
            info["defect_length_mm"] = self._any_defect_count * mm
        if not in_range:
            self._out_of_range_count += count
            info["bead_out_of_range_mm"] = self._out_of_range_count * self._sample_mm
        self._bead_samples += count
        self._heat_sum += heat * count
        if leg < self._leg_min:
            self._leg_min = info["bead_leg_mm_min"] = leg
        info["bead_heat_input_kj_mm_mean"] = self._heat_sum / self._bead_samples

    def bead_profile(self) -> dict[str, np.ndarray]:
        """The bead along the seam, one entry per seam sample (unwelded: zeros and False): ``s_mm``,
        ``welded``, ``heat_input_kj_mm``, ``width_mm``, ``reinforcement_mm``, ``penetration_mm``, ``leg_mm``,
        ``in_range``, ``defect_<name>`` for each of `DEFECT_NAMES` and ``defects`` (any of them)."""
        n = len(self._s_list)
        table = np.zeros((n, 6 + len(DEFECT_NAMES)))
        welded = np.array([row is not None for row in self._bead_rows])
        if welded.any():
            table[welded] = [row for row in self._bead_rows if row is not None]
        out = {"s_mm": self.path.s * 1e3, "welded": welded}
        for j, key in enumerate(("heat_input_kj_mm", "width_mm", "reinforcement_mm", "penetration_mm", "leg_mm")):
            out[key] = table[:, j]
        out["in_range"] = table[:, 5].astype(bool) | ~welded
        masks = table[:, 6:].astype(bool)
        for j, name in enumerate(DEFECT_NAMES):
            out[f"defect_{name}"] = masks[:, j]
        out["defects"] = masks.any(axis=1)
        return out

    def seam_rotvec(self) -> tuple[float, float, float]:
        """The rotation vector of `R_world_seam` (rad), computed once per seam frame."""
        if self._seam_rotvec is None:
            self._seam_rotvec = kernels.rotvec(*self.seam_quat())
        return self._seam_rotvec

    def seam_quat(self) -> tuple[float, float, float, float]:
        """The quaternion of `R_world_seam`, computed once per seam frame."""
        if self._seam_quat is None:
            self._seam_quat = kernels.quat_of(self._R_world_seam_flat)
        return self._seam_quat

    def _deposit(self, lo: float, hi: float, in_spec: bool) -> None:
        """Welds the samples with ``lo <= s <= hi`` that are not welded yet (in spec or not)."""
        welded, spec = self.welded, self.in_spec
        for i in range(bisect.bisect_left(self._s_list, lo), bisect.bisect_right(self._s_list, hi)):
            if not welded[i]:
                welded[i] = True
                self.welded_count += 1
                self._new_samples.append(i)
                if in_spec:
                    spec[i] = True
                    self.in_spec_count += 1

    def _judge_pending(self) -> None:
        """The bead laid while the first weave cycle ran, judged by that cycle now that it has closed."""
        verdict, spec = self.weave.in_spec, self.in_spec
        for samples, in_spec in self._pending:
            if verdict and in_spec:
                spec[samples] = True
                self.in_spec_count += len(samples)
        self._pending = None

    def _append_lateral(self, lateral: float) -> None:
        values, window = self._lateral_values, self._window
        oldest = values.popleft() if len(values) == window else None
        # A NaN or an infinity has no place in an ordering or a sum: numpy answers for the rest of the episode.
        self._lateral_finite = self._lateral_finite and math.isfinite(lateral)
        if self._lateral_finite:
            self._slide_orderings(lateral, oldest, values[0] if values and oldest is not None else None,
                                  values[-1] if values else None)
            magnitude = abs(lateral)
            if magnitude > self._lateral_abs_max:
                self._lateral_abs_max = magnitude
        values.append(lateral)
        if self._lateral_finite:
            self._lateral_since_sync += 1
            if self._lateral_since_sync >= window:
                self._lateral_sum, self._lateral_since_sync = math.fsum(values), 0
            else:
                self._lateral_sum = (self._lateral_sum - (oldest or 0.0)) + lateral
        self._weave_cache = self._weave()

    def _slide_orderings(self, lateral: float, oldest: float | None, next_oldest: float | None,
                         newest: float | None) -> None:
        """Adds ``lateral`` to the sorted window and the sorted pair lows and highs, dropping ``oldest``."""
        ordered, lows, highs = self._lateral_sorted, self._pair_lows, self._pair_highs
        if oldest is not None:
            del ordered[bisect.bisect_left(ordered, oldest)]
            low, high = (oldest, next_oldest) if oldest < next_oldest else (next_oldest, oldest)
            del lows[bisect.bisect_left(lows, low)]
            del highs[bisect.bisect_left(highs, high)]
        if newest is not None:
            low, high = (newest, lateral) if newest < lateral else (lateral, newest)
            bisect.insort(lows, low)
            bisect.insort(highs, high)
        bisect.insort(ordered, lateral)

    def _weave(self) -> tuple[float, float]:
        """Peak-to-peak width (m) and frequency (Hz) of the lateral oscillation in the window.

        The frequency counts zero crossings of the deviation about its mean as numpy does,
        ``np.signbit`` changes of ``h - mean`` with ``mean = np.mean(h)``. Consecutive pairs change
        sign where ``low < mean <= high``, so the count comes from the pairs' sorted lows and highs
        and the width from the sorted window, kept up to date as the window slides. The mean is a
        running sum: where no pair bound lies within its error bound of it, it gives numpy's count;
        numpy's own mean answers the rest, as it answers what ordering cannot (a mean at zero,
        where signbit sees -0.0, a zero width, a non-finite value).
        """
        values = self._lateral_values
        size = len(values)
        if size < 4:
            return 0.0, 0.0
        if self._lateral_finite:
            ordered, lows, highs = self._lateral_sorted, self._pair_lows, self._pair_highs
            width = ordered[-1] - ordered[0]
            mean = self._lateral_sum / size
            tolerance = self._mean_tolerance * self._lateral_abs_max
            below, above = mean - tolerance, mean + tolerance
            if width > 0.0 and (below > 0.0 or above < 0.0):
                i, j = bisect.bisect_left(lows, below), bisect.bisect_left(highs, below)
                if (i == len(lows) or lows[i] > above) and (j == len(highs) or highs[j] > above):
                    return width, (i - j) / (2.0 * size * self.dt)
        h = np.array(values)
        mean = float(np.add.reduce(h)) / size  # np.mean's arithmetic: a pairwise sum, one division
        if self._lateral_finite and mean != 0.0 and width > 0.0:
            crossings = bisect.bisect_left(lows, mean) - bisect.bisect_left(highs, mean)
        else:
            below_mean = np.signbit(h - mean)
            width = float(np.maximum.reduce(h) - np.minimum.reduce(h))
            crossings = int(np.count_nonzero(below_mean[1:] != below_mean[:-1]))
        return width, crossings / (2.0 * size * self.dt)

    def bead_summary(self) -> dict[str, float]:
        """Whole-bead figures: coverage, in-spec fractions, means and standard deviations, the bead model's
        last millimetre, defect lengths (`_close_bin`)."""
        return self.add_bead_summary(self._bead_info.copy())

    def add_bead_summary(self, out: dict[str, float]) -> dict[str, float]:
        """`bead_summary`'s entries added to ``out`` (a step's metrics, without a merged copy; `measure` put the
        bead model's in already); returns ``out``."""
        n = len(self._s_list)
        welded, in_spec = self.welded_count, self.in_spec_count
        out["arc_coverage"] = welded / n
        out["in_spec_fraction"] = in_spec / n
        out["bead_in_spec_fraction"] = in_spec / welded if welded else 0.0
        steps = self.arc_steps
        if steps:
            k0, k1, k2, k3, k4, k5, k6, k7 = self._summary_keys
            t0, t1, t2, t3 = self._sum
            q0, q1, q2, q3 = self._sum_sq
            m0, m1, m2, m3 = t0 / steps, t1 / steps, t2 / steps, t3 / steps
            # sqrt(max(variance, 0)), the max by a comparison (a NaN stays a NaN, as through the builtin)
            v0, v1, v2, v3 = q0 / steps - m0 * m0, q1 / steps - m1 * m1, q2 / steps - m2 * m2, q3 / steps - m3 * m3
            out[k0], out[k1] = m0, math.sqrt(0.0 if v0 < 0.0 else v0)
            out[k2], out[k3] = m1, math.sqrt(0.0 if v1 < 0.0 else v1)
            out[k4], out[k5] = m2, math.sqrt(0.0 if v2 < 0.0 else v2)
            out[k6], out[k7] = m3, math.sqrt(0.0 if v3 < 0.0 else v3)
        if self.weave is not None:
            out.update(self.weave.bead)
        return out
