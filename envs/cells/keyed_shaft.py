"""KeyedShaft: a round shaft with a parallel key into a hub's bore and keyway (``skillcell/KeyedShaft-v0``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from gymnasium.utils.ezpickle import EzPickle

from skillcell import assets
from skillcell.config import ConfigError, bounds
from skillcell.envs.cell import TOOL_PREFIX, CellConfig
from skillcell.envs.fixture_task import FixtureConfig, InsertionRewardConfig, InsertionTaskEnv

__all__ = ["GRIP_USERDATA", "KEY_DROP_MM", "KeyedShaftConfig", "KeyedShaftEnv", "bore_boxes"]

SHAFT_LENGTH_M = 0.05  # the tool's shaft: 50 mm long, 40 mm of it beyond the holder
SHAFT_TIP_Z_M = 0.103  # the shaft's end face (the TCP) along the tool axis
KEY_ROOT_MM = 1.0  # how deep the key sits in the shaft's own keyseat (it is one rigid part with the shaft)
#: how far (mm) the key's lower end must be below the hub face for the key to count as in its keyway
#: (``info["key_engaged"]``): more than the contact softness, less than anything a jam reaches
KEY_DROP_MM = 0.3
#: the ``data.userdata`` slot of the key's grip angle (rad): drawn at reset, a model parameter (the key
#: body's pose in the tool) kept in the state so that a stored state replays it (`CellEnv.set_state`)
GRIP_USERDATA = 0


@dataclass(frozen=True)
class KeyedShaftWorkpieceConfig:
    """The shaft with its key, and the hub with its blind bore and keyway (millimetres)."""

    shaft_diameter_mm: float = field(default=12.0, metadata=bounds(4.0, 30.0))
    clearance_mm: float = field(default=0.2, metadata=bounds(0.1, 0.5))
    key_width_mm: float = field(default=4.0, metadata=bounds(1.0, 10.0))
    key_height_mm: float = field(default=1.8, metadata=bounds(0.5, 5.0))
    key_clearance_mm: float = field(default=0.2, metadata=bounds(0.1, 0.5))
    key_length_mm: float = field(default=20.0, metadata=bounds(3.0, 40.0))
    key_offset_mm: float = field(default=5.0, metadata=bounds(1.0, 20.0))
    chamfer_mm: float = field(default=0.5, metadata=bounds(0.0, 2.0))
    bore_depth_mm: float = field(default=20.0, metadata=bounds(5.0, 35.0))
    hub_diameter_mm: float = field(default=50.0, metadata=bounds(20.0, 150.0))
    segments: int = field(default=32, metadata=bounds(12, 128))
    #: the key's nominal angle about the shaft in the gripper: where it points, counterclockwise from the
    #: keyway seen from above, with the tool aligned (``randomization.key_angle_deg`` varies it about this)
    key_grip_deg: float = field(default=0.0, metadata=bounds(-180.0, 180.0))

    def __post_init__(self) -> None:
        if self.key_width_mm >= 0.8 * self.shaft_diameter_mm:
            raise ConfigError(f"key_width_mm: must be under 0.8 of shaft_diameter_mm ({self.shaft_diameter_mm}), "
                              f"got {self.key_width_mm}")
        keyway_mm = self.shaft_diameter_mm / 2 + self.key_height_mm + self.key_clearance_mm
        if self.hub_diameter_mm / 2 < keyway_mm + 5.0:
            raise ConfigError(f"hub_diameter_mm: the hub must reach 5 mm past the keyway's bottom "
                              f"({keyway_mm:.1f} mm from the axis), got {self.hub_diameter_mm}")
        if self.chamfer_mm >= self.key_offset_mm:
            raise ConfigError("chamfer_mm: must be smaller than key_offset_mm (the pilot enters the bore first)")
        if self.key_offset_mm >= self.bore_depth_mm:
            raise ConfigError("key_offset_mm: must be smaller than bore_depth_mm (the key must enter the keyway)")
        if self.key_offset_mm + self.key_length_mm > SHAFT_LENGTH_M * 1e3 - 10.0:
            raise ConfigError(f"key_length_mm: the key must end on the shaft, 10 mm before the holder "
                              f"(key_offset_mm + key_length_mm <= {SHAFT_LENGTH_M * 1e3 - 10.0:.0f})")


@dataclass(frozen=True)
class KeyedShaftTaskConfig:
    """Start, success and physics-validity settings."""

    start_height_mm: float = field(default=40.0, metadata=bounds(5.0, 150.0))
    success_depth_tolerance_mm: float = field(default=1.0, metadata=bounds(0.05, 5.0))
    penetration_budget: float = field(default=0.5, metadata=bounds(0.01, 1.0))
    jam_force_n: float = field(default=15.0, metadata=bounds(0.5, 500.0))
    terminate_on_success: bool = True


@dataclass(frozen=True)
class KeyedShaftLimitsConfig:
    """The cell's physical limits, each declared once (`skillcell.envs.limits`)."""

    #: the press-in force the shaft, key and hub are rated for: a success stays below it; the gate's
    #: peak-force KPI limit, the review's red band, the skill score's zero; the F/T stop and the reward's
    #: penalty derive from it
    rated_insertion_force_n: float = field(default=40.0, metadata=bounds(1.0, 1000.0))


@dataclass(frozen=True)
class KeyedShaftRandomizationConfig:
    """Uniform ranges (plus or minus) sampled at every reset."""

    hub_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 0.0), metadata=bounds(0.0, 50.0))
    hub_rot_deg: tuple[float, float, float] = field(default=(2.0, 2.0, 2.0), metadata=bounds(0.0, 15.0))
    start_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 5.0), metadata=bounds(0.0, 30.0))
    key_angle_deg: float = field(default=30.0, metadata=bounds(0.0, 90.0))


@dataclass(frozen=True)
class KeyedShaftRewardConfig(InsertionRewardConfig):
    """Weights of the reward terms (see `KeyedShaftEnv`): an insertion's and the key's alignment."""

    key: float = 0.1


@dataclass(frozen=True)
class KeyedShaftConfig(CellConfig):
    workpiece: KeyedShaftWorkpieceConfig = KeyedShaftWorkpieceConfig()
    fixture: FixtureConfig = FixtureConfig()
    task: KeyedShaftTaskConfig = KeyedShaftTaskConfig()
    limits: KeyedShaftLimitsConfig = KeyedShaftLimitsConfig()
    randomization: KeyedShaftRandomizationConfig = KeyedShaftRandomizationConfig()
    reward: KeyedShaftRewardConfig = KeyedShaftRewardConfig()


def _about_z(angle: float) -> np.ndarray:
    return np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])


def _spans(theta: float, r_in: float, r_out: float, half: float, slot_half: float) -> list[tuple[float, float]]:
    """The parts ``[u0, u1]`` of a bore segment's tangential extent ``[-half, half]`` that stay out of the
    keyway strip ``|y| < slot_half`` (``x > 0``) at every radius from ``r_in`` to ``r_out``.

    A point of the segment is ``r n + u t`` with ``n = (cos, sin)`` and ``t = (-sin, cos)`` of
    ``theta``, so ``y = r sin + u cos`` is linear in both: its extremes over the segment's box are at
    its corners, which gives each bound in closed form.
    """
    c, s = math.cos(theta), math.sin(theta)
    if c <= 1e-9:
        return [(-half, half)]
    y_low = min(r_in * s, r_out * s)  # the smallest and largest r sin over the box's radii
    y_high = max(r_in * s, r_out * s)
    spans = []
    above = max(-half, (slot_half - y_low) / c)  # y >= slot_half from here on
    if above < half:
        spans.append((above, half))
    below = min(half, (-slot_half - y_high) / c)  # y <= -slot_half up to here
    if below > -half:
        spans.append((-half, below))
    return spans


def bore_boxes(shaft_radius: float, clearance: float, key_width: float, key_height: float, key_clearance: float,
               chamfer: float, depth: float, hub_radius: float, segments: int
               ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Convex boxes ``(name, half_size, pos, quat)`` that form a hub with a blind bore and its keyway.

    Frame: origin at the centre of the bore opening on the top face, z up the bore axis, the
    keyway along +x. A mesh would collide as its convex hull (a solid plug), so the hub is a union
    of boxes on one body: the bore is a regular polygon of ``segments`` flat faces at the bore
    radius (shaft radius plus half the clearance; the corners stand back from the circle by
    ``r (1/cos(pi/N) - 1)``, 0.03 mm at 32 faces), each face a box out to the hub radius and wide
    enough that neighbours overlap outside the bore. The keyway is the strip ``|y| < (key width +
    key clearance) / 2`` out to ``shaft radius + key height + key clearance``: the faces it crosses
    are cut back to its side walls (a box each) and a box closes its bottom. A chamfer of size ``c``
    on the bore edge is, per face, a box turned 45 degrees about the face's tangent whose sloped
    face runs from ``(r, -c)`` to ``(r + c, 0)`` (as `skillcell.envs.cells.peg_insert.hole_boxes`);
    the keyway's edges stay sharp.
    """
    radius = shaft_radius + clearance / 2
    slot = (key_width + key_clearance) / 2
    slot_bottom = shaft_radius + key_height + key_clearance
    c, d, rh = chamfer, depth, hub_radius
    half_step = math.pi / segments
    half_tangent = rh * math.tan(half_step)  # at the hub radius: neighbours meet there, overlap inside
    boxes = []

    def add(name, half, pos, quat):
        boxes.append((name, np.asarray(half, float), np.asarray(pos, float), np.asarray(quat, float)))

    def add_segment(name, theta, r_in, r_out, z_low, z_high, tilt=None, trim_in=None):
        n, t = np.array([math.cos(theta), math.sin(theta)]), np.array([-math.sin(theta), math.cos(theta)])
        quat = _about_z(theta)
        if tilt is not None:
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, _about_z(theta), tilt)
        low_r, high_r = trim_in if trim_in is not None else (r_in, r_out)
        for k, (u0, u1) in enumerate(_spans(theta, low_r, high_r, half_tangent, slot)):
            centre = (r_in + r_out) / 2 * n + (u0 + u1) / 2 * t
            add(f"{name}_{k}", [(r_out - r_in) / 2, (u1 - u0) / 2, (z_high - z_low) / 2],
                [centre[0], centre[1], (z_low + z_high) / 2], quat)

    about_t = np.array([math.cos(math.pi / 8), 0.0, math.sin(math.pi / 8), 0.0])
    for i in range(segments):
        theta = 2 * half_step * (i + 0.5)  # a corner, not a face, on the keyway's centre line
        add_segment(f"wall_{i}", theta, radius, rh, -d, -c)
        if c > 0:
            add_segment(f"rim_{i}", theta, radius + c, rh, -c, 0.0)
            # The chamfer box reaches from r to r + 2c: it is cut back as a box of that radial extent.
            s = c / math.sqrt(2)
            add_segment(f"chamfer_{i}", theta, radius + c - s, radius + c + s, -c - s, -c + s, tilt=about_t,
                        trim_in=(radius, radius + 2 * c))

    def wall_start(r: float) -> float:
        """Where the line ``y = slot`` leaves the bore polygon of face distance ``r`` (its x)."""
        return min((r - slot * math.sin(2 * half_step * (i + 0.5))) / math.cos(2 * half_step * (i + 0.5))
                   for i in range(segments) if math.cos(2 * half_step * (i + 0.5)) > 1e-9)

    eye = np.array([1.0, 0.0, 0.0, 0.0])
    # The walls reach as far across as the faces were cut back: the removed parts' farthest corner.
    reach = slot
    for i in range(segments):
        theta = 2 * half_step * (i + 0.5)
        kept = _spans(theta, radius, rh, half_tangent, slot)
        if kept == [(-half_tangent, half_tangent)]:
            continue
        for r in (radius, rh):
            for u in np.linspace(-half_tangent, half_tangent, 9):
                if not any(u0 <= u <= u1 for u0, u1 in kept):
                    reach = max(reach, abs(r * math.sin(theta) + u * math.cos(theta)))
    side = reach - slot
    for sign, tag in ((1, "pos"), (-1, "neg")):
        for part, (r, z_low, z_high) in (("", (radius, -d, -c)), ("_rim", (radius + c, -c, 0.0))):
            if z_high <= z_low:
                continue
            x0 = wall_start(r)
            add(f"keyway_{tag}{part}", [(rh - x0) / 2, side / 2, (z_high - z_low) / 2],
                [(rh + x0) / 2, sign * (slot + side / 2), (z_low + z_high) / 2], eye)
    add("keyway_bottom", [(rh - slot_bottom) / 2, slot, d / 2], [(rh + slot_bottom) / 2, 0.0, -d / 2], eye)
    add("bottom", [rh, rh, 0.0025], [0.0, 0.0, -d - 0.0025], eye)
    return boxes


class KeyedShaftEnv(InsertionTaskEnv, EzPickle):
    """Insert a round shaft with a parallel key, held rigidly by a UR5e, into a hub's bore and keyway.

    ## Description
    A UR5e (MuJoCo Menagerie) carries a shaft tool with a force/torque sensor at the flange. The
    shaft (12 mm diameter, steel) carries a parallel key (4 mm wide, 1.8 mm above the shaft, its
    lower end 5 mm above the shaft's end face) and must go to the bottom of a 20 mm deep blind bore
    in a hub, whose diameter is the shaft's plus the clearance (0.1 to 0.5 mm, default 0.2 mm), with
    a keyway as wide as the key plus the key clearance (0.1 to 0.5 mm, default 0.2). The bore has a
    0.5 mm chamfer by default (``workpiece.chamfer_mm``, 0 for a sharp edge). Shaft and key are a
    cylinder and a box, the hub a union of boxes (`bore_boxes`), so the collision is exact to the
    polygon: the key passes only through the keyway. The shaft's 5 mm pilot enters the round bore
    at any angle; the key then lands on the hub face unless it is within about 0.7 deg of the
    keyway (``key_capture_window_deg``: half the key clearance over its outer radius), so the task
    needs a rotational search under light axial load. Contacts are stiff (0.5 ms steps, ``solref
    0.004``: twice PegInsert's time constant, which keeps the key's sliding contact on the hub face
    from chattering; ``scene.xml``).

    What is known: the hub's pose (a fixture, located by vision as PegInsert's hole: ``hub_pos``,
    ``hub_rot``), and with it the keyway's direction, and the robot's own wrist angle. What is not:
    the key's angle about the shaft in the gripper (a shaft picked from a feeder sits at any angle
    within ``randomization.key_angle_deg``), so the key's angle to the keyway is not observed; a
    policy finds it by turning the shaft under a light push and feeling the drop.

    ## Action space
    ``Box(-1, 1, (6,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz), tracked by differential IK (see `CartesianController`).

    | index | meaning            | scale at 1.0                 |
    |-------|--------------------|------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |

    ## Observation space
    ``Box(-inf, inf, (37,), float32)``; each block is the physical value times a fixed scale, so
    the entries are about unit size. `decode_obs` returns the physical values. PegInsert's blocks,
    the hole being the bore: the rotational search needs nothing more (the shaft's turn is in
    ``tcp_rot_task``, the key's drop in ``depth`` and ``force_tool``, a key caught in the keyway in
    ``torque_tool``).

    | block          | size | unit  | scale    | meaning                                              |
    |----------------|------|-------|----------|------------------------------------------------------|
    | joint_pos      | 6    | rad   | 1/pi     | UR5e joint positions                                 |
    | joint_vel      | 6    | rad/s | 1/pi     | joint velocities                                     |
    | tcp_pos_task   | 3    | m     | 1/0.05   | shaft end in the hub frame (origin: bore opening)    |
    | tcp_rot_task   | 3    | rad   | 1/0.1    | tool orientation from aligned, keyway on the TCP x   |
    | tcp_lead       | 3    | m     | 1/0.01   | commanded minus measured TCP position (cell frame)   |
    | tcp_lead_rot   | 3    | rad   | 1/6 deg  | commanded from measured TCP orientation (rot. vector)|
    | force_tool     | 3    | N     | 1/50     | force the tool applies, F/T frame, zeroed at reset   |
    | torque_tool    | 3    | N*m   | 1/5      | torque the tool applies, F/T frame                   |
    | hub_pos        | 3    | m     | 1/0.01   | hub position minus its nominal position (cell frame) |
    | hub_rot        | 3    | rad   | 1/0.05   | hub orientation (rotation vector, cell frame)        |
    | depth          | 1    | m     | 1/0.02   | shaft end depth below the bore opening               |

    The command-lead blocks have fixed scales (`skillcell.envs.base.LEAD_OBS_SCALE_M` and
    ``LEAD_OBS_SCALE_RAD``, the packaged lead limits). The F/T blocks have the tool's weight removed
    and are zeroed where the episode starts, the tool in free space. Aligned means the tool axis
    down the bore and the TCP's x axis towards the keyway: a key at grip angle 0 is then in line
    with it.

    ## Rewards
    ``reward = align + orient + key + insert + force + success`` (each weighted by ``reward.*``;
    each weighted term is in ``info["reward_<term>"]``): PegInsert's terms (``align = 1 - tanh(lateral
    / 5 mm)``, ``orient = 1 - tanh(tilt / 2 deg)``, ``insert = align * clip((depth + 10 mm) / (bore
    depth + 10 mm), 0, 1)``, ``force = -clip((|F| - jam force) / (saturation - jam force), 0, 1)``
    with the saturation at `~skillcell.envs.fixture_task.FORCE_PENALTY_SATURATION` times the rated
    force, ``success = 1`` when seated) and ``key = 1 - tanh(|key angle| / 5 deg)``, from the true key
    angle (the reward may know what the policy does not).

    ## Randomizations
    Per reset, uniform: hub position ``randomization.hub_pos_mm`` (default +-5 mm in x and y), hub
    orientation ``randomization.hub_rot_deg`` (+-2 deg roll, pitch and yaw), the key's grip angle
    about the shaft ``randomization.key_angle_deg`` (+-30 deg about ``workpiece.key_grip_deg``, 0; the
    key body's pose in the tool, ``grip_angle``, kept in ``data.userdata`` so that it is part of the
    state, which `set_state` writes back into the model) and
    the TCP start position ``randomization.start_pos_mm`` (+-5 mm) around 40 mm above the nominal bore.
    ``randomize=False`` turns all of them off (the key then sits at ``workpiece.key_grip_deg``).

    Tiers (``tier=``, ``assets/cells/keyed_shaft/tiers.yaml``, see `skillcell.envs.tiers`): ``D0``
    nominal (as ``randomize=False``), ``D1`` the ranges above (the default), ``D2`` twice those
    ranges (the key +-60 deg) plus friction (x0.7-1.3) and robot/tool mass (x0.9-1.1) variation, F/T
    noise (0.5 N, 0.02 N*m) and bias (+-2 N, +-0.1 N*m, zeroed at reset but for the tare's noise),
    observation noise and 1-2 control periods of action latency.

    ## Success and episode end
    Success: the shaft end inside the bore and within ``task.success_depth_tolerance_mm`` (1 mm) of
    its bottom (the key then necessarily in its keyway), the episode's peak F/T force never over
    ``limits.rated_insertion_force_n`` (40 N), in a physically valid episode. The episode
    terminates on success, on physics instability (``info["instability"]``), or when the deepest
    shaft-or-key-to-hub penetration exceeds ``task.penetration_budget`` times the smaller of the two
    clearances (``info["physics_invalid"]``; never a success). ``gym.make`` truncates at 1000 steps
    (50 s: a sweep over D2's 130 degrees at 6 deg/s takes 22 s unpaused; the expert's takes up to 35).

    ## Info
    ``is_success``, ``depth_mm``, ``lateral_error_mm``, ``tilt_deg``, ``key_angle_deg`` (the key's
    angle about the bore axis from the keyway's centre line, counterclockwise seen from above, true
    value), ``shaft_rotation_deg`` (the TCP's turn about the bore axis from aligned, what the robot
    knows), ``search_rotation_deg`` (how far the shaft has turned about the bore axis in the episode,
    either way), ``key_engaged`` (the key's lower end `KEY_DROP_MM` into the keyway), ``axial_force_n``
    (along the tool axis, pushing positive), ``axial_torque_nm`` (about it), ``contact_force_n`` and
    ``peak_insertion_force_n`` (episode maximum of the F/T force magnitude), ``over_rated_force``,
    ``jammed`` (over the opening, unseated, stalled and pressing harder than ``task.jam_force_n``: a
    misaligned key on the hub face, or a tilted shaft), ``jam_time_s``, ``penetration_mm`` and
    ``max_penetration_mm``, ``physics_invalid``, ``instability`` and the reward terms.

    ## Arguments
    ``gym.make("skillcell/KeyedShaft-v0", cell=None, overrides=None, clearance_mm=None,
    key_clearance_mm=None, chamfer_mm=None, randomize=True, render_mode=None, width=640,
    height=480, camera="overview", render_quality="fast", tier=None)``. ``cell`` is a YAML file laid
    over the packaged ``assets/cells/keyed_shaft/cell.yaml``, and ``overrides`` a nested mapping laid
    over that; every key is checked and an error names the offending key. Cameras: ``overview``,
    ``side``, ``closeup`` (the hub face, key and keyway in view) and ``tool/closeup``.

    ## Version history
    - v0: first version (UR5e, 12 mm shaft with a 4 mm parallel key, hub of boxes with a keyway,
      unobserved grip angle, stiff contacts, F/T at the flange).
    """

    config_class = KeyedShaftConfig
    kpi_keys = ("peak_insertion_force_n", "jam_time_s", "max_penetration_mm", "depth_mm", "search_rotation_deg")
    default_cell_yaml: Path = assets.path("cells", "keyed_shaft", "cell.yaml")
    cell_dir = assets.path("cells", "keyed_shaft")  # tiers.yaml, envelope.yaml, criteria.yaml
    fixture_name, task_site_name = "hub", "bore"  # the bore's site: the centre of its opening, z up the bore
    workpiece_shortcuts = ("clearance_mm", "key_clearance_mm", "chamfer_mm")
    # Aligned (`R_task_tcp_nominal`): the tool axis points down the bore, the TCP x to the keyway (task +x).

    def __init__(self, cell: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 clearance_mm: float | None = None, key_clearance_mm: float | None = None,
                 chamfer_mm: float | None = None, randomize: bool = True, render_mode: str | None = None,
                 width: int = 640, height: int = 480, camera: str = "overview", render_quality: str = "fast",
                 tier: str | None = None):
        EzPickle.__init__(self, cell, overrides, clearance_mm, key_clearance_mm, chamfer_mm, randomize, render_mode,
                          width, height, camera, render_quality, tier)
        config = self.load_config(cell, overrides, clearance_mm=clearance_mm, key_clearance_mm=key_clearance_mm,
                                  chamfer_mm=chamfer_mm)
        super().__init__(config, render_mode, width, height, camera, render_quality, tier=tier, randomize=randomize)

    @property
    def task_length_m(self) -> float:
        """The bore's depth: an insertion moves the shaft at least that far."""
        return self.bore_depth

    # ------------------------------------------------------------------ world

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        wp = self.config.workpiece
        shaft, key, key_body = (spec.geom(TOOL_PREFIX + "shaft"), spec.geom(TOOL_PREFIX + "key"),
                                spec.body(TOOL_PREFIX + "key"))
        if shaft is None or key is None or key_body is None:
            raise ConfigError("tool.mjcf: KeyedShaft needs a tool with geoms named 'shaft' and 'key', the key in "
                              "a body named 'key'")
        radius = wp.shaft_diameter_mm * 5e-4
        shaft.size = [radius, SHAFT_LENGTH_M / 2, 0.0]
        shaft.pos = [0.0, 0.0, SHAFT_TIP_Z_M - SHAFT_LENGTH_M / 2]
        root = KEY_ROOT_MM * 1e-3
        key_radial = wp.key_height_mm * 1e-3 + root
        key.size = [key_radial / 2, wp.key_width_mm * 5e-4, wp.key_length_mm * 5e-4]
        # Along the TCP's x (the keyway's direction when aligned); the key's body turns it to the grip angle,
        # the nominal one here (so the model is what the spec compiles to), a drawn one at reset.
        key.pos = [radius - root + key_radial / 2, 0.0,
                   SHAFT_TIP_Z_M - (wp.key_offset_mm + wp.key_length_mm / 2) * 1e-3]
        key_body.quat = _about_z(0.0 - math.radians(wp.key_grip_deg))
        fixture, precision = self._place_fixture(spec)
        for name, half, pos, quat in bore_boxes(radius, wp.clearance_mm * 1e-3, wp.key_width_mm * 1e-3,
                                                wp.key_height_mm * 1e-3, wp.key_clearance_mm * 1e-3,
                                                wp.chamfer_mm * 1e-3, wp.bore_depth_mm * 1e-3,
                                                wp.hub_diameter_mm * 5e-4, wp.segments):
            fixture.add_geom(precision, name=f"hub_{name}", type=mujoco.mjtGeom.mjGEOM_BOX,
                             size=half, pos=pos, quat=quat)

    def _setup_task(self) -> None:
        super()._setup_task()
        m = self.model
        self._shaft_geom = m.geom(TOOL_PREFIX + "shaft").id
        self._key_geom = m.geom(TOOL_PREFIX + "key").id
        self._key_body = m.geom_bodyid[self._key_geom]
        if (self._key_body == self.tool_body or m.body_parentid[self._key_body] != self.tool_body
                or m.body_pos[self._key_body].any()):
            raise ConfigError("tool.mjcf: KeyedShaft needs the key geom in a body of its own, a child of the tool "
                              "body with its origin on the tool axis")
        self._part_geoms = frozenset((self._shaft_geom, self._key_geom))
        # What every step reads: views into mjData (its arrays never move).
        d = self.data
        self._tcp_xmat, self._key_xpos = d.site_xmat[self.tcp_site], d.geom_xpos[self._key_geom]
        wp, task = self.config.workpiece, self.config.task
        self.clearance = wp.clearance_mm * 1e-3
        self.key_clearance = wp.key_clearance_mm * 1e-3
        self.bore_depth = wp.bore_depth_mm * 1e-3
        self.key_offset = wp.key_offset_mm * 1e-3
        self.penetration_budget = task.penetration_budget * min(self.clearance, self.key_clearance)
        self.bore_radius = (wp.shaft_diameter_mm + wp.clearance_mm) * 5e-4
        #: how far (deg) the key may be off the keyway's centre line and still drop in: half the key
        #: clearance over the key's outer radius (the bore's own play widens it a little)
        self.key_capture_window_deg = math.degrees(wp.key_clearance_mm / 2
                                                   / (wp.shaft_diameter_mm / 2 + wp.key_height_mm))
        self._opening_radius = self.bore_radius + wp.chamfer_mm * 1e-3
        self._key_angle_range = math.radians(self.config.randomization.key_angle_deg)
        self._grip_nominal = math.radians(wp.key_grip_deg)
        if m.nuserdata <= GRIP_USERDATA:
            raise ConfigError(f"scene: KeyedShaft keeps the grip angle in userdata[{GRIP_USERDATA}]: the scene needs "
                              f"<size nuserdata=\"{GRIP_USERDATA + 1}\"/>")

    def _set_grip_angle(self, angle: float) -> None:
        """Turns the key's body about the shaft axis (the tool's z) so that, aligned, the key points
        ``angle`` (rad) counterclockwise from the keyway seen from above (the tool's z points down).
        The angle is kept in ``data.userdata`` (`GRIP_USERDATA`), which MuJoCo's state holds."""
        self.data.userdata[GRIP_USERDATA] = angle
        self._state_restored()

    def _state_restored(self) -> None:
        # 0.0 - angle, not -angle: a nominal 0 stays +0.0, bit for bit the compiled model's quaternion.
        self.model.body_quat[self._key_body] = _about_z(0.0 - self.data.userdata[GRIP_USERDATA])

    @property
    def grip_angle(self) -> float:
        """The key's grip angle (rad) this episode: where it points with the tool aligned, from the keyway."""
        return float(self.data.userdata[GRIP_USERDATA])

    def _reset_task_nominal(self) -> None:
        super()._reset_task_nominal()
        self._set_grip_angle(self._grip_nominal)

    def _reset_task(self, rng: np.random.Generator) -> None:
        super()._reset_task(rng)  # the hub's pose first: seeded episodes depend on the order of the draws
        if self.randomize:
            self._set_grip_angle(self._grip_nominal + rng.uniform(-1.0, 1.0) * self._key_angle_range)

    # ------------------------------------------------------------------ task

    def _episode_start(self) -> None:
        self._peak_force = 0.0
        self._max_penetration = 0.0
        self._jam_time = 0.0
        self._search_rotation = 0.0
        self._depth = self._previous_depth = self._measure_depth()
        self._rotation = self._shaft_rotation()

    def _shaft_rotation(self) -> float:
        """The TCP's turn about the bore axis from aligned (rad): its x axis's angle in the hub's xy plane."""
        t = self._task_xmat.tolist()
        r = self._tcp_xmat.tolist()
        x_task = (t[0] * r[0] + t[3] * r[3] + t[6] * r[6], t[1] * r[0] + t[4] * r[3] + t[7] * r[6])
        return math.atan2(x_task[1], x_task[0])

    def key_angle(self) -> float:
        """The key's angle (rad) about the bore axis from the keyway, counterclockwise seen from above: the
        direction from the shaft's axis to the key, in the hub's xy plane."""
        t, r = self._task_xmat.tolist(), self._tcp_xmat.tolist()
        vx, vy, vz = (self._key_xpos - self._tcp_xpos).tolist()
        ax, ay, az = r[2], r[5], r[8]  # the shaft's axis (the TCP's z)
        along = vx * ax + vy * ay + vz * az
        vx, vy, vz = vx - along * ax, vy - along * ay, vz - along * az  # off the axis, not along it
        return math.atan2(t[1] * vx + t[4] * vy + t[7] * vz, t[0] * vx + t[3] * vy + t[6] * vz)

    def part_penetration(self) -> float:
        """Deepest penetration (m) between the shaft or its key and the hub, over current contacts."""
        return self._deepest_penetration(self._part_geoms, self._fixture_geoms)

    def _evaluate(self) -> dict[str, Any]:
        task = self.config.task
        _, _, lateral, tilt = self._alignment()
        self._previous_depth, self._depth = self._depth, self._measure_depth()
        depth = self._depth
        rotation = self._shaft_rotation()
        turn = rotation - self._rotation
        self._search_rotation += abs(math.remainder(turn, 2 * math.pi))
        self._rotation = rotation
        fx, fy, axial_force = self.wrench_tool[:3].tolist()
        contact_force = math.sqrt(fx * fx + fy * fy + axial_force * axial_force)
        self._peak_force = max(self._peak_force, contact_force)
        over_rated = self._peak_force > self.config.limits.rated_insertion_force_n
        penetration = self.part_penetration()
        self._max_penetration = max(self._max_penetration, penetration)
        inside = lateral < self.bore_radius
        seated = inside and depth >= self.bore_depth - task.success_depth_tolerance_mm * 1e-3
        dt = self.dt
        depth_rate = (depth - self._previous_depth) / dt
        jammed = (not seated and lateral < self._opening_radius and axial_force > task.jam_force_n
                  and abs(depth_rate) < 1e-3)
        if jammed:
            self._jam_time += dt
        physics_invalid = self._max_penetration > self.penetration_budget
        return {
            "is_success": bool(seated and not over_rated and not physics_invalid),
            "depth_mm": depth * 1e3,
            "lateral_error_mm": lateral * 1e3,
            "tilt_deg": tilt,
            "key_angle_deg": math.degrees(self.key_angle()),
            "shaft_rotation_deg": math.degrees(rotation),
            "search_rotation_deg": math.degrees(self._search_rotation),
            "key_engaged": bool(inside and depth > self.key_offset + KEY_DROP_MM * 1e-3),
            "axial_force_n": axial_force,
            "axial_torque_nm": float(self.wrench_tool[5]),
            "contact_force_n": contact_force,
            "peak_insertion_force_n": self._peak_force,
            "over_rated_force": over_rated,
            "jammed": jammed,
            "jam_time_s": self._jam_time,
            "penetration_mm": penetration * 1e3,
            "max_penetration_mm": self._max_penetration * 1e3,
            "physics_invalid": physics_invalid,
        }

    def _reward(self, metrics: dict[str, Any], action: np.ndarray) -> tuple[float, dict[str, float]]:
        w = self.config.reward
        align, orient, insert, force = self._insertion_shaping(metrics, metrics["depth_mm"],
                                                               self.config.task.jam_force_n)
        terms = {
            "reward_align": w.align * align,
            "reward_orient": w.orient * orient,
            "reward_key": w.key * (1.0 - math.tanh(abs(metrics["key_angle_deg"]) / 5.0)),
            "reward_insert": w.insert * insert,
            "reward_force": -w.force * force,
            "reward_success": w.success * float(metrics["is_success"]),
        }
        return float(sum(terms.values())), terms
