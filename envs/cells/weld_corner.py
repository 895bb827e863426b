"""WeldSeamCorner: a fillet weld around the corner of a box section (``skillcell/WeldSeamCorner-v0``).

A rectangular tube stands on the base plate; the seam is the fillet at its foot, along one face,
around a 90 degree corner and along the next face. The tube is what `WeldSeamEnv` calls the mate:
its four walls and corners are collision geometry (geom class ``plate``), so the torch's clearance
and the contact-tip-to-work ray cast see them. The seam is derived from the tube, never declared
apart from it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from skillcell import assets
from skillcell.config import ConfigError, bounds, load_yaml
from skillcell.envs.cell import load_cell_config
from skillcell.envs.cells.weld_seam import WeldSeamConfig, WeldSeamEnv
from skillcell.envs.weld import JointConfig, SeamConfig, SegmentConfig

__all__ = ["CORNER_PIECE_DEG", "CORNER_VARIANTS", "TubeConfig", "WeldCornerConfig", "WeldCornerEnv", "tube_seam",
           "tube_walls"]

#: the packaged corners: ``rounded`` (cold-formed, cell.yaml), ``sharp`` (sharp.yaml over it)
CORNER_VARIANTS = ("rounded", "sharp")
#: the largest angle of one straight piece of a rounded corner's wall
CORNER_PIECE_DEG = 5.0


@dataclass(frozen=True)
class TubeConfig:
    """The box section (millimetres): its wall is ``joint.plate_thickness_mm``, its height ``joint.mate_size_mm``.

    The workpiece frame has the tube's (virtual, sharp) corner at the origin, the first face in the
    plane ``x = 0`` and the second in ``y = 0``; the tube lies at ``x, y >= 0``, left of the travel.
    """

    #: outside widths: of the first face (along y), then of the second (along x)
    size_mm: tuple[float, float] = field(default=(120.0, 120.0), metadata=bounds(40.0, 500.0))
    #: outside corner radius in wall thicknesses; cold-formed hollow sections (EN 10219-2) have
    #: 1.6-2.4 t (t up to 6 mm), 2.0-3.0 t (6 to 10 mm), 2.4-3.6 t (over 10 mm); 0 is a sharp corner
    corner_radius_t: float = field(default=2.5, metadata=bounds(0.0, 3.6))
    #: seam lengths along the first face before the corner and along the second after it
    legs_mm: tuple[float, float] = field(default=(60.0, 60.0), metadata=bounds(5.0, 500.0))


@dataclass(frozen=True)
class WeldCornerConfig(WeldSeamConfig):
    tube: TubeConfig = TubeConfig()


def _corner_radius_mm(tube: TubeConfig, joint: JointConfig) -> float:
    return tube.corner_radius_t * joint.plate_thickness_mm


def tube_seam(tube: TubeConfig, joint: JointConfig, sample_spacing_mm: float) -> SeamConfig:
    """The fillet's root at the tube's foot: along the first face, around the corner (an arc of the
    outside radius, or a polyline's vertex where the corner is sharp), along the second face."""
    r = _corner_radius_mm(tube, joint)
    first, second = tube.legs_mm
    for i, (leg, width) in enumerate(zip(tube.legs_mm, tube.size_mm, strict=True)):
        if leg > width - 2.0 * r:
            raise ConfigError(f"tube.legs_mm[{i}]: {leg} mm does not fit the {width - 2.0 * r:g} mm flat of its "
                              f"face ({width} mm wide, corners of {r:g} mm)")
    if r == 0.0:
        segments = (SegmentConfig("polyline", points_mm=((0.0, 0.0), (second, 0.0))),)
    else:
        segments = (SegmentConfig("line", to_mm=(0.0, r)), SegmentConfig("arc", center_mm=(r, r), angle_deg=90.0),
                    SegmentConfig("line", to_mm=(r + second, 0.0)))
    return SeamConfig(start_mm=(0.0, r + first), segments=segments, sample_spacing_mm=sample_spacing_mm)


def tube_walls(tube: TubeConfig, joint: JointConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The tube as boxes ``(half_size, pos, quat)`` in the workpiece frame (metres): four flat walls and,
    where the corners are rounded, each corner's wall as straight pieces of at most `CORNER_PIECE_DEG`.

    A corner piece's outside face is the chord of the outside radius, so the outside is the inscribed
    polygon (5 degree pieces of a 20 mm radius sit at most 0.02 mm inside it) with no step between
    pieces; the pieces overlap on the inside, where no torch goes. Sharp corners: the walls run to
    the corner and overlap in it.
    """
    t, height = joint.plate_thickness_mm * 1e-3, joint.mate_size_mm * 1e-3
    width_y, width_x = (w * 1e-3 for w in tube.size_mm)
    r = _corner_radius_mm(tube, joint) * 1e-3
    z = joint.gap_mm * 1e-3 + height / 2
    boxes = []

    def wall(a: np.ndarray, b: np.ndarray) -> None:
        """A wall of thickness t whose outside face runs from a to b, the tube to its left."""
        d = b - a
        length = float(np.hypot(*d))
        direction = d / length
        left = np.array([-direction[1], direction[0]])
        yaw = math.atan2(direction[1], direction[0])
        boxes.append((np.array([length / 2, t / 2, height / 2]), np.r_[(a + b) / 2 + left * t / 2, z],
                      np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])))

    # Counter-clockwise seen from above (the travel's sense): each corner, then the face after it.
    centres = [np.array(c) for c in ((r, r), (width_x - r, r), (width_x - r, width_y - r), (r, width_y - r))]
    starts = [-math.pi, -math.pi / 2, 0.0, math.pi / 2]  # the angle about each centre where its corner starts
    pieces = math.ceil(90.0 / CORNER_PIECE_DEG) if r > 0.0 else 0
    for i, (centre, start) in enumerate(zip(centres, starts, strict=True)):
        corner = [centre + r * np.array([math.cos(start + 0.5 * math.pi * j / max(pieces, 1)),
                                         math.sin(start + 0.5 * math.pi * j / max(pieces, 1))])
                  for j in range(pieces + 1)]
        for a, b in itertools.pairwise(corner):
            wall(a, b)
        following = (i + 1) % 4
        wall(corner[-1], centres[following] + r * np.array([math.cos(starts[following]),
                                                              math.sin(starts[following])]))
    return boxes


class WeldCornerEnv(WeldSeamEnv):
    """Weld the fillet around a 90 degree corner of a box section on a UR5e, in spec with a WPS.

    ## Description
    A UR5e (MuJoCo Menagerie) with a straight GMAW torch welds the fillet at the foot of a
    rectangular tube (120 x 120 mm, 8 mm wall, 80 mm of its height modelled) standing on an 8 mm
    base plate: 60 mm along one face, around the corner, 60 mm along the next face. The tube's
    walls are collision geometry: the torch turns about the corner without touching them. The
    ``rounded`` variant (default) is a cold-formed tube with an outside corner radius of 2.5 wall
    thicknesses (20 mm; EN 10219-2 allows 2.0-3.0 t for 6-10 mm walls, ASTM A500 at most 3 t);
    ``sharp`` is a square corner (a section fabricated from plates), which the torch can only
    turn about the wire tip, standing on the vertex. Everything else, the WPS (fillet, 8 mm)
    included, is `WeldSeamEnv`'s (`skillcell.envs.weld`): the torch's motion is judged against
    the WPS bands in the seam frame at the aim point, which turns with the seam around the corner.

    ## Action space
    ``Box(-1, 1, (7,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz), as in `CellEnv`, then the arc.

    | index | meaning             | scale at 1.0                          |
    |-------|---------------------|---------------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |
    | 6     | arc                 | on while positive                     |

    ## Observation space
    ``Box(-inf, inf, (43,), float32)``, as `WeldSeamEnv`'s; each block is the physical value times a
    fixed scale (`decode_obs` returns the physical values). The task frame is the seam frame at the
    seam point nearest the aim point (the wire tip at the nominal CTWD): around the corner it turns
    with the seam's tangent.

    | block        | size | unit  | scale   | meaning                                              |
    |--------------|------|-------|---------|------------------------------------------------------|
    | joint_pos    | 6    | rad   | 1/pi    | UR5e joint positions                                 |
    | joint_vel    | 6    | rad/s | 1/pi    | joint velocities                                     |
    | tcp_pos_task | 3    | m     | 1/0.05  | aim point in the seam frame (zero on a perfect pass) |
    | tcp_rot_task | 3    | rad   | 1/0.1   | torch rotation from the WPS's nominal work and travel angles |
    | tcp_lead     | 3    | m     | 1/lead  | commanded minus measured TCP position (cell frame)   |
    | tcp_lead_rot | 3    | rad   | 1/lead  | commanded from measured TCP orientation (rot. vector)|
    | force_tool   | 3    | N     | 1/50    | force the torch applies, F/T frame, zeroed at reset  |
    | torque_tool  | 3    | N*m   | 1/5     | torque the torch applies, F/T frame                  |
    | seam_ahead   | 6    | m     | 1/0.03  | seam points 10 and 30 mm ahead, from the aim point, seam frame |
    | seam_rot     | 3    | rad   | 1       | seam frame orientation in the cell frame (rotation vector) |
    | progress     | 1    | -     | 1       | arc length of the aim point over the seam length     |
    | arc_on       | 1    | -     | 1       | 1 while the arc is on                                |
    | speed        | 1    | m/s   | 1/0.01  | travel speed along the seam                          |
    | ctwd_error   | 1    | m     | 1/0.005 | ray-cast CTWD minus nominal (clipped at +-50 mm)     |

    ``lead`` is ``control.max_lead_mm`` and ``control.max_lead_deg``.

    ## Rewards
    As `WeldSeamEnv`: ``weld``, ``track``, ``quality``, ``success``, each in ``info["reward_<term>"]``.

    ## Randomizations
    Workpiece pose (base plate and tube together: +-3 mm, +-1 deg roll/pitch, +-2 deg yaw), fit-up
    gap (the tube lifted 0 to 0.5 mm off the plate) and the torch start position (+-5 mm);
    ``randomize=False`` turns them off. The corner radius is the variant's (it shapes the model).
    Tiers (``tier=``) are the weld cells' (``assets/cells/weld_seam/tiers.yaml``): ``D0`` nominal,
    ``D1`` the above (default), ``D2`` twice the ranges plus friction and mass variation, F/T and
    observation noise (seam sensing 0.2 mm) and 1-2 control periods of latency.

    ## Success and episode end
    As `WeldSeamEnv`: the episode terminates when the aim point reaches the seam end or, once the
    arc has been struck, leaves the seam by more than 30 mm. Success: the end reached with at least
    ``min_in_spec_fraction`` (WPS, 0.9) of the seam length welded in spec. ``gym.make`` truncates at
    1000 steps (50 s).

    ## Info
    `WeldSeamEnv`'s keys: the WPS metrics (``travel_speed_mm_s``, ``work_angle_deg``,
    ``travel_angle_deg``, ``ctwd_mm``, ``lateral_deviation_mm``, ``vertical_deviation_mm``,
    ``weave_width_mm``, ``weave_frequency_hz``, ``in_spec``, ``seam_position_mm``), ``arc_on``, the
    bead so far (``arc_coverage``, ``in_spec_fraction``, ``bead_in_spec_fraction``,
    ``bead_<metric>_mean`` and ``_std``), ``is_success``, ``physics_invalid``, ``instability``,
    reward terms. Where the corner lies along the seam: `corner_span_mm`.

    ## Arguments
    ``gym.make("skillcell/WeldSeamCorner-v0", variant="rounded", cell=None, overrides=None,
    randomize=True, render_mode=None, width=640, height=480, camera="overview",
    render_quality="fast", tier=None)``. ``variant`` is ``rounded`` or ``sharp`` (on the CLI:
    ``--set tube.corner_radius_t=0``), ``cell`` a user YAML over it (``tube`` sizes the section; the
    seam follows from it and may not be set), ``overrides`` a mapping over that. Cameras:
    ``overview``, ``seam``, ``corner`` (outside the corner, a little above the torch: the
    review's), ``tool/closeup``.

    ## Version history
    - v0: first version (rounded and sharp corners; the weld cells' WPS, tiers, envelope and criteria).
    """

    config_class = WeldCornerConfig
    cell_dir = assets.path("cells", "weld_corner")

    def __init__(self, variant: str = "rounded", cell: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, randomize: bool = True,
                 render_mode: str | None = None, width: int = 640, height: int = 480,
                 camera: str = "overview", render_quality: str = "fast", tier: str | None = None):
        super().__init__(variant, cell, overrides, randomize, render_mode, width, height, camera, render_quality,
                         tier)

    @classmethod
    def load_config(cls, cell: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                    variant: str = "rounded", **env_kwargs: Any) -> WeldCornerConfig:
        if variant not in CORNER_VARIANTS:
            raise ValueError(f"variant must be one of {CORNER_VARIANTS}, got {variant!r}")
        for source, layer in (("cell", load_yaml(cell) if isinstance(cell, (str, Path)) else {}),
                              ("overrides", overrides or {})):
            seam = layer.get("seam", {}) if isinstance(layer, dict) else {}
            declared = sorted(set(seam) - {"sample_spacing_mm"}) if isinstance(seam, dict) else ["seam"]
            if declared:
                raise ConfigError(f"seam.{declared[0]} ({source}): the corner seam follows from the tube; "
                                  "set tube.size_mm, tube.corner_radius_t or tube.legs_mm instead")
        layers = [WeldSeamEnv.cell_dir / "cell.yaml", cls.cell_dir / "cell.yaml"]
        layers += [cls.cell_dir / f"{variant}.yaml"] if variant != "rounded" else []
        config = load_cell_config(WeldCornerConfig, layers, cell, overrides)
        return replace(config, seam=tube_seam(config.tube, config.joint, config.seam.sample_spacing_mm))

    @property
    def corner_span_mm(self) -> tuple[float, float]:
        """Where the corner lies along the seam (mm of arc length): the rounded corner's arc, or the
        sharp one's vertex (a span of zero length)."""
        first = self.config.tube.legs_mm[0]
        return first, first + 0.5 * math.pi * _corner_radius_mm(self.config.tube, self.config.joint)

    def _build_plates(self, base_body: mujoco.MjsBody, mate_body: mujoco.MjsBody, plate: mujoco.MjsDefault) -> None:
        """The base plate under the tube, ``joint.base_width_mm`` beyond it all round, and the tube's
        walls (`tube_walls`) in the mate body."""
        joint, tube = self.config.joint, self.config.tube
        t, margin = joint.plate_thickness_mm * 1e-3, joint.base_width_mm * 1e-3
        width_y, width_x = (w * 1e-3 for w in tube.size_mm)
        low, high = np.array([-margin, -margin]), np.array([width_x + margin, width_y + margin])
        base_body.add_geom(plate, name="base_plate_0", size=np.r_[(high - low) / 2, t / 2],
                           pos=np.r_[(high + low) / 2, -t / 2])
        for i, (half, pos, quat) in enumerate(tube_walls(tube, joint)):
            mate_body.add_geom(plate, name=f"mate_plate_{i}", size=half, pos=pos, quat=quat)
