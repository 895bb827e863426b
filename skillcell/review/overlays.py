"""What review videos draw on top of the simulation: scene overlays and the metric strip.

**Scene overlays** are `mjvGeom` decorations appended to ``renderer.scene`` after
``update_scene`` (the model is never edited), so they are lit, shaded and depth-tested like the
scene: the cell's own overlays (`CellEnv.add_overlays`: the seam and the bead of the welding
cells, as wide as the bead model has it), then the tool trace (the TCP's path so far), for cells
that push on things an arrow for the force the tool applies, and for the welding cells a bar
over each stretch of the bead that a defect indicator flags, in that defect's colour
(`DEFECT_COLORS`; one lane per defect, the strip's defect cells carry the same colour as a
legend).

**The metric strip** is a band of text under each frame with the step's process metrics; a value
outside its band (the WPS for welding, the rated force for assembly: the numbers the gate judges)
is drawn on red, one past a warning level (the jam force) on amber. What a cell shows is its
`CellReview` (`cell_review`): the preset its `register_cell` line names (``review="module:name"``,
a function ``cell -> CellReview`` such as `peg_review` and `weld_review`), else a generic one from
its ``kpi_keys``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from skillcell.envs.registry import UnknownCellError, spec_of
from skillcell.envs.weld import METRIC_KEYS
from skillcell.envs.weld_process import DEFECT_NAMES

__all__ = [
    "DEFECT_COLORS",
    "FORCE_RGBA",
    "TRACE_RGBA",
    "CellReview",
    "MetricSpec",
    "MetricStrip",
    "SceneOverlays",
    "block_pad",
    "cell_review",
    "defect_stretches",
    "peg_review",
    "project_points",
    "weld_review",
]

TRACE_RGBA = (0.15, 0.55, 1.0, 1.0)  # blue: no process colour (green/red/amber) is blue
#: force arrow colours: below the warning level, up to the limit, beyond it
FORCE_RGBA = ((0.2, 0.85, 0.3, 1.0), (1.0, 0.65, 0.0, 1.0), (0.95, 0.1, 0.1, 1.0))
ARROW_LENGTH_FIX = 2.0  # see SceneOverlays._draw_force
#: each defect indicator's colour: its bars over the bead, its legend swatch in the strip, its stretches in the
#: report. Hues at least 30 degrees apart, and from the bead's green and the trace's blue; no channel at full
#: scale, so that lighting scales a bar's colour without clipping a channel (and shifting its hue).
DEFECT_COLORS = {"porosity": "#cc00cc", "undercut": "#e06000", "lack_of_fusion": "#00b8b8",
                 "burn_through": "#d8d000", "insufficient_leg": "#7a3cd8"}
# The defect bars: radius, gap over the bead's face and lane pitch (m); partly self-lit (emission) and without
# specular highlights (white), to keep their colour on every side.
_MARK_RADIUS, _MARK_GAP, _MARK_PITCH, _MARK_EMISSION = 0.0012, 0.0025, 0.0034, 0.3

# Strip colours (RGB, 0-255).
_STRIP_BG = (24, 26, 30)
_TEXT = (228, 228, 228)
_IDLE = (135, 138, 145)
_BAD_BG, _BAD_TEXT = (185, 32, 32), (255, 255, 255)
_WARN_BG, _WARN_TEXT = (222, 145, 0), (0, 0, 0)
_OK_TAG, _FAIL_TAG = (30, 140, 60), (185, 32, 32)


@dataclass(frozen=True)
class MetricSpec:
    """One value of the metric strip: ``info[key]`` shown as ``label value unit``.

    ``band`` is the in-spec interval (outside: red), ``warn`` a narrower one (outside it but in
    the band: amber). ``active_when`` names an ``info`` flag that must be set for the bands to
    apply (a weld's angles only matter while the arc burns). A ``flag`` spec shows
    ``on``/``off`` text, and ``bad_when_true`` makes a set flag red (a jam). ``alarm`` names ``info``
    flags that put the value on red while every one of them is set (a defect in the millimetre
    the arc is welding); ``swatch`` is a colour (``#rrggbb``) drawn before the label, a legend of
    what the scene draws in it.
    """

    key: str
    label: str
    unit: str = ""
    fmt: str = "{:.1f}"
    band: tuple[float, float] | None = None
    warn: tuple[float, float] | None = None
    active_when: str | None = None
    flag: bool = False
    on_off: tuple[str, str] = ("on", "off")
    bad_when_true: bool = False
    scale: float = 1.0  # shown value = info value * scale (fractions as percent)
    alarm: tuple[str, ...] = ()
    swatch: str | None = None

    def status(self, info: Mapping[str, Any]) -> str:
        """``"ok"``, ``"warn"``, ``"bad"``, ``"idle"`` (bands do not apply now) or ``"missing"``."""
        value = info.get(self.key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "missing"
        if self.active_when is not None and not _truthy(info.get(self.active_when)):
            return "idle"
        if self.alarm and all(_truthy(info.get(flag)) for flag in self.alarm):
            return "bad"
        if self.flag:
            return "bad" if self.bad_when_true and _truthy(value) else "ok"
        value = float(value) * self.scale
        if not math.isfinite(value):
            return "bad" if self.band is not None else "ok"
        if self.band is not None and not self.band[0] <= value <= self.band[1]:
            return "bad"
        if self.warn is not None and not self.warn[0] <= value <= self.warn[1]:
            return "warn"
        return "ok"

    def text(self, info: Mapping[str, Any]) -> str:
        value = info.get(self.key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            shown = "-"
        elif self.flag:
            shown = self.on_off[0] if _truthy(value) else self.on_off[1]
        else:
            number = float(value) * self.scale
            shown = self.fmt.format(number) if math.isfinite(number) else "inf"
        return f"{self.label} {shown}{' ' + self.unit if self.unit and shown != '-' and not self.flag else ''}"


def _truthy(value: Any) -> bool:
    if isinstance(value, (str, np.str_)):
        return bool(value)
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


@dataclass
class CellReview:
    """How review videos and reports show one cell.

    ``metrics`` are the strip's values; ``series`` the ``info`` keys plotted over time in reports
    (with the bands of the matching metric); ``camera`` the default camera; ``force_arrow`` draws
    the tool's force, green below ``force_warn_n``, amber up to ``force_limit_n``, red beyond;
    ``score_key`` the final-step ``info`` value that ranks episodes when no skill score exists;
    ``defects`` the defect indicators a welding cell flags per millimetre of its bead
    (``metrics.bead_profile()``): the scene marks their stretches, the report plots them.
    """

    camera: str = "overview"
    metrics: list[MetricSpec] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    force_arrow: bool = False
    force_warn_n: float = math.inf
    force_limit_n: float = math.inf
    force_scale_m_per_n: float = 0.002
    score_key: str | None = None
    defects: tuple[str, ...] = ()

    def metric(self, key: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.key == key), None)


def cell_review(cell) -> CellReview:
    """The `CellReview` of a `CellEnv` (wrapped or not): the preset its registration names, else a
    generic one (its KPIs, and a force arrow without colour bands: no limit is made up here)."""
    cell = getattr(cell, "unwrapped", cell)
    try:
        preset = spec_of(cell).review
    except UnknownCellError:
        preset = None
    if preset is not None:
        return preset(cell)
    keys = list(getattr(cell, "kpi_keys", ()))
    return CellReview(camera=getattr(cell, "camera", "overview"),
                      metrics=[MetricSpec(k, k.replace("_", " "), fmt="{:.3g}") for k in keys],
                      series=keys, force_arrow=True, score_key=keys[0] if keys else None)


def weld_review(cell) -> CellReview:
    """Welding: every WPS metric against its band while the arc burns, the bead's in-spec share, the heat
    input against the WPS's range, the bead's width, and per defect indicator the bead length it flagged
    (amber from the first millimetre, red while the arc welds one), with its colour as the legend."""
    wps = cell.wps
    defects = tuple(name for name in DEFECT_NAMES if wps.defects.cause(name))
    labels = {"travel_speed_mm_s": ("speed", "mm/s"), "work_angle_deg": ("work", "deg"),
              "travel_angle_deg": ("travel", "deg"), "ctwd_mm": ("CTWD", "mm"),
              "lateral_deviation_mm": ("lateral", "mm"), "vertical_deviation_mm": ("vertical", "mm"),
              "weave_width_mm": ("weave", "mm")}
    metrics = [MetricSpec(k, *labels.get(k, (k, "")), band=wps.band(k), active_when="arc_on")
               for k in METRIC_KEYS]
    metrics += [
        MetricSpec("arc_on", "arc", flag=True),
        MetricSpec("bead_in_spec_fraction", "bead in spec", "%", fmt="{:.0f}", scale=100.0,
                   band=(100.0 * wps.min_in_spec_fraction, 100.0), active_when="arc_on"),
        MetricSpec("arc_coverage", "welded", "%", fmt="{:.0f}", scale=100.0),
        MetricSpec("in_spec_fraction", "seam in spec", "%", fmt="{:.0f}", scale=100.0),
        MetricSpec("heat_input_kj_mm", "heat", "kJ/mm", fmt="{:.2f}", band=wps.heat_input_band, active_when="arc_on"),
        MetricSpec("bead_width_mm", "bead", "mm", active_when="arc_on"),
    ]
    metrics += [MetricSpec(f"defect_{name}_mm", name.replace("_", " "), "mm", fmt="{:.0f}", warn=(0.0, 0.0),
                           alarm=(f"defect_{name}", "arc_on"), swatch=DEFECT_COLORS[name]) for name in defects]
    return CellReview(camera="seam", metrics=metrics, series=[*METRIC_KEYS, "heat_input_kj_mm"], force_arrow=False,
                      score_key="in_spec_fraction", defects=defects)


def peg_review(cell) -> CellReview:
    """Assembly: forces red past the rated insertion force (the gate's limit), amber past the jam force."""
    limit, jam = cell.config.limits.rated_insertion_force_n, cell.config.task.jam_force_n
    budget_mm = cell.penetration_budget * 1e3
    metrics = [
        MetricSpec("depth_mm", "depth", "mm"),
        MetricSpec("lateral_error_mm", "lateral", "mm", fmt="{:.2f}"),
        MetricSpec("tilt_deg", "tilt", "deg", fmt="{:.2f}"),
        MetricSpec("axial_force_n", "axial F", "N", band=(-limit, limit), warn=(-jam, jam)),
        MetricSpec("contact_force_n", "|F|", "N", band=(0.0, limit), warn=(0.0, jam)),
        MetricSpec("peak_insertion_force_n", "peak |F|", "N", band=(0.0, limit), warn=(0.0, jam)),
        MetricSpec("jammed", "jam", flag=True, on_off=("JAMMED", "no"), bad_when_true=True),
        MetricSpec("penetration_mm", "penetr.", "mm", fmt="{:.3f}", band=(0.0, budget_mm)),
    ]
    return CellReview(camera="overview", metrics=metrics,
                      series=["depth_mm", "lateral_error_mm", "tilt_deg", "axial_force_n", "contact_force_n"],
                      force_arrow=True, force_warn_n=jam, force_limit_n=limit, score_key="peak_insertion_force_n")


# ---------------------------------------------------------------------- scene overlays


def _add_geom(scene: mujoco.MjvScene, kind: mujoco.mjtGeom, width: float, a: np.ndarray, b: np.ndarray,
              rgba, emission: float | None = None) -> bool:
    if scene.ngeom >= scene.maxgeom:
        return False
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, kind, np.zeros(3), np.zeros(3), np.zeros(9), np.asarray(rgba, np.float32))
    mujoco.mjv_connector(geom, kind, width, a, b)
    geom.category = mujoco.mjtCatBit.mjCAT_DECOR
    if emission is not None:  # a colour code, not a material: self-lit, no highlights
        geom.emission, geom.specular = emission, 0.0
    scene.ngeom += 1
    return True


def _camera_eye(scene: mujoco.MjvScene) -> np.ndarray:
    # Both GL cameras (stereo pair) sit at the eye in mono rendering; their mean is the eye.
    return 0.5 * (np.asarray(scene.camera[0].pos) + np.asarray(scene.camera[1].pos))


class SceneOverlays:
    """The review layer's overlay geoms for one rollout: tool trace, force arrow and defect marks.

    Call `observe` once per control step (so the trace is complete when only every k-th step is
    rendered) and `draw` after ``update_scene`` on frames that are rendered; `reset` between
    episodes.
    """

    def __init__(self, review: CellReview, trace: bool = True, force: bool = True, defects: bool = True,
                 trace_spacing_m: float = 0.5e-3, max_trace_points: int = 1500):
        self.review = review
        self.trace = trace
        self.force = force and review.force_arrow
        self.defects = defects and bool(review.defects)
        self.spacing = trace_spacing_m
        self.max_points = max_trace_points
        self.points: list[np.ndarray] = []

    def reset(self) -> None:
        self.points.clear()

    def observe(self, cell) -> None:
        """Records the TCP; points closer than the spacing to the last one are skipped."""
        p = cell.data.site_xpos[cell.tcp_site].copy()
        if self.points and float(np.sum((p - self.points[-1]) ** 2)) < self.spacing**2:
            return
        self.points.append(p)
        if len(self.points) > self.max_points:
            # Long rollouts: keep every other old point, so the scene's geom budget is never hit.
            half = len(self.points) // 2
            self.points[:half] = self.points[:half:2]

    def draw(self, cell, scene: mujoco.MjvScene) -> None:
        if self.trace and len(self.points) > 1:
            # GL lines (width in pixels), not capsules: 150 capsules cost llvmpipe about 14 ms a
            # frame at 640x480, as much as the rest of the scene; lines cost about 1 ms.
            width = max(1.0, round(getattr(cell, "height", 480) / 240))
            for a, b in zip(self.points[:-1], self.points[1:], strict=True):
                if not _add_geom(scene, mujoco.mjtGeom.mjGEOM_LINE, width, a, b, TRACE_RGBA):
                    break
        if self.force:
            self._draw_force(cell, scene)
        if self.defects:
            self._draw_defects(cell, scene)

    def _draw_defects(self, cell, scene: mujoco.MjvScene) -> None:
        """A bar over each defect stretch of the bead (`defect_stretches`), in lanes above its face."""
        profile = cell.metrics.bead_profile()
        if not profile["defects"].any():
            return
        bead = cell.bead_surface(profile)
        top, tangents = bead.top(), cell.metrics.tangents_world
        half_sample = 0.5e-3 * float(np.median(np.diff(profile["s_mm"])))
        for lane, name in enumerate(self.review.defects):
            rgba = (*(c / 255 for c in ImageColor.getrgb(DEFECT_COLORS[name])), 1.0)
            # Lanes stacked along the plate normal: seen from the torch side they stand apart.
            lift = cell.metrics.normal_world * (_MARK_GAP + lane * _MARK_PITCH)
            lift = np.broadcast_to(lift, top.shape)
            for first, last in defect_stretches(profile[f"defect_{name}"]):
                # Through every other sample, half a sample past each end: a 1 mm stretch is a 1 mm bar.
                path = top[first:last + 1:2] + lift[first:last + 1:2]
                path = np.vstack([top[first] + lift[first] - tangents[first] * half_sample, path[1:],
                                  top[last] + lift[last] + tangents[last] * half_sample])
                for a, b in itertools.pairwise(path):
                    if not _add_geom(scene, mujoco.mjtGeom.mjGEOM_CAPSULE, _MARK_RADIUS, a, b, rgba,
                                     emission=_MARK_EMISSION):
                        return

    def force_arrow_world(self, cell) -> tuple[np.ndarray, np.ndarray, tuple] | None:
        """``(tail, head, rgba)`` of the force arrow in the world, before it is pulled to the camera.

        The arrow is the force the tool applies to its surroundings (`CellEnv.wrench_tool`, in the
        F/T frame), its head at the TCP, ``force_scale_m_per_n`` long per newton (at most 12 cm);
        ``None`` under half a newton.
        """
        d = cell.data
        force = d.site_xmat[cell.ft_site].reshape(3, 3) @ cell.wrench_tool[:3]
        magnitude = float(np.linalg.norm(force))
        if magnitude < 0.5:
            return None
        review = self.review
        rgba = FORCE_RGBA[0] if magnitude < review.force_warn_n else (
            FORCE_RGBA[1] if magnitude <= review.force_limit_n else FORCE_RGBA[2])
        length = min(magnitude * review.force_scale_m_per_n, 0.12)
        head = d.site_xpos[cell.tcp_site].copy()
        return head - force / magnitude * length, head, rgba

    def _draw_force(self, cell, scene: mujoco.MjvScene) -> None:
        arrow = self.force_arrow_world(cell)
        if arrow is None:
            return
        tail, head, rgba = arrow
        # The arrow lies along the tool (an axial push), so drawn where it is the peg and the
        # fixture would hide it. Scaling it towards the eye keeps every point on its pixel (a point
        # moved along its line of sight projects to the same place) and puts it in front.
        eye = _camera_eye(scene)
        pull = 0.5
        tail, head = eye + pull * (tail - eye), eye + pull * (head - eye)
        # MuJoCo 4.0 draws a connector arrow half as long as `mjv_connector` is asked for (checked
        # against `project_points`; tests/test_review_overlays.py finds the head at the TCP).
        _add_geom(scene, mujoco.mjtGeom.mjGEOM_ARROW, 0.004 * pull, tail, tail + ARROW_LENGTH_FIX * (head - tail),
                  rgba)


def defect_stretches(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` sample indices (inclusive) of each run of set samples in a per-millimetre mask."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def project_points(scene: mujoco.MjvScene, points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates ``(column, row)`` of world points in the last ``update_scene``'s camera.

    Uses the scene's own GL camera and frustum, so it agrees with what `mujoco.Renderer` draws
    (perspective cameras; a zero frustum width means "from the aspect ratio", as in ``mjr_render``).
    """
    cam = scene.camera[0]
    forward, up = np.asarray(cam.forward), np.asarray(cam.up)
    right = np.cross(forward, up)
    v = np.atleast_2d(points) - _camera_eye(scene)
    z = v @ forward
    x, y = (v @ right) / z * cam.frustum_near, (v @ up) / z * cam.frustum_near
    half = cam.frustum_width if cam.frustum_width > 0 else (
        0.5 * (cam.frustum_top - cam.frustum_bottom) * width / height)
    left = cam.frustum_center - half
    column = (x - left) / (2 * half) * width
    row = (cam.frustum_top - y) / (cam.frustum_top - cam.frustum_bottom) * height
    return np.column_stack([column, row])


# ---------------------------------------------------------------------- metric strip


def block_pad(frame: np.ndarray, block: int = 16, fill=_STRIP_BG) -> np.ndarray:
    """Pads a frame at the right and bottom to multiples of ``block`` pixels.

    H.264 in yuv420p needs even sizes and many players want multiples of 16; padding here keeps
    the encoder from rescaling (and blurring) the text.
    """
    h, w = frame.shape[:2]
    ph, pw = -h % block, -w % block
    if not ph and not pw:
        return frame
    out = np.empty((h + ph, w + pw, 3), np.uint8)
    out[:] = fill
    out[:h, :w] = frame
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


class MetricStrip:
    """Draws the text band under a frame: a header (label, time, step, reward) and the metrics.

    The layout is fixed per video (``width`` and the specs), so every frame has the same size.
    The band's height is rounded so that the frame above it plus the band is a multiple of 16
    rows (see `block_pad`) when ``frame_height`` is given.
    """

    def __init__(self, width: int, specs: list[MetricSpec], label: str = "", frame_height: int | None = None,
                 accent: tuple[int, int, int] = (60, 110, 200)):
        self.width, self.specs, self.label, self.accent = int(width), list(specs), label, accent
        self.font_size = max(10, min(18, self.width // 46))
        self.font = _font(self.font_size)
        self.row_h = self.font_size + 7
        self.columns = max(2, self.width // 150)
        self.cell_w = self.width // self.columns
        rows = 1 + math.ceil(len(self.specs) / self.columns)
        height = rows * self.row_h + 4
        if frame_height is not None:
            height += -(frame_height + height) % 16
        self.height = height

    def render(self, info: Mapping[str, Any], *, time_s: float | None = None, step: int | None = None,
               steps: int | None = None, reward: float | None = None, episode_return: float | None = None,
               outcome: str | None = None) -> np.ndarray:
        """The strip as an ``(height, width, 3)`` uint8 image for one step's ``info``.

        ``outcome`` (``"success"`` or anything else, shown on red) is drawn at the right of the
        header, typically on the last frame.
        """
        image = Image.new("RGB", (self.width, self.height), _STRIP_BG)
        draw = ImageDraw.Draw(image)
        pad, rh, font = 4, self.row_h, self.font
        x = pad
        if self.label:
            w = int(draw.textlength(self.label, font=font))
            draw.rectangle([x - 2, 2, x + w + 4, rh], fill=self.accent)
            draw.text((x + 1, 3), self.label, fill=(255, 255, 255), font=font)
            x += w + 14
        parts = []
        if time_s is not None:
            parts.append(f"t {time_s:6.2f} s")
        if step is not None:
            parts.append(f"step {step}" + (f"/{steps}" if steps else ""))
        if reward is not None:
            parts.append(f"reward {reward:+.3f}")
        if episode_return is not None:
            parts.append(f"return {episode_return:.2f}")
        room = self.width - x - pad - (int(draw.textlength(outcome, font=font)) + 3 * pad if outcome else 0)
        while parts and draw.textlength("   ".join(parts), font=font) > room:
            parts.pop()  # narrow frames: the least important header items go first
        draw.text((x, 3), "   ".join(parts), fill=_TEXT, font=font)
        if outcome:
            w = int(draw.textlength(outcome, font=font))
            x0 = self.width - w - 2 * pad
            draw.rectangle([x0 - 2, 2, self.width - pad, rh], fill=_OK_TAG if outcome == "success" else _FAIL_TAG)
            draw.text((x0 + 1, 3), outcome, fill=(255, 255, 255), font=font)
        for i, spec in enumerate(self.specs):
            row, col = divmod(i, self.columns)
            x0, y0 = col * self.cell_w + pad, (row + 1) * rh + 2
            status = spec.status(info)
            color = _TEXT
            if status == "bad":
                draw.rectangle([x0 - 2, y0, x0 + self.cell_w - 2 * pad, y0 + rh - 2], fill=_BAD_BG)
                color = _BAD_TEXT
            elif status == "warn":
                draw.rectangle([x0 - 2, y0, x0 + self.cell_w - 2 * pad, y0 + rh - 2], fill=_WARN_BG)
                color = _WARN_TEXT
            elif status in ("idle", "missing"):
                color = _IDLE
            if spec.swatch is not None:
                side = rh - 8
                draw.rectangle([x0, y0 + 3, x0 + side, y0 + 3 + side], fill=spec.swatch, outline=(0, 0, 0))
                x0 += side + 4
            draw.text((x0, y0 + 1), spec.text(info), fill=color, font=font)
        return np.asarray(image)

    def cell_box(self, index: int) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)`` of the ``index``-th metric's cell in the strip (for tests)."""
        row, col = divmod(index, self.columns)
        y0 = (row + 1) * self.row_h + 2
        return y0, y0 + self.row_h - 2, col * self.cell_w, (col + 1) * self.cell_w
