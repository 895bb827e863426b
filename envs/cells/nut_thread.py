"""NutThread: an M8 nut run onto a bolt by a nutrunner on a UR5e (``skillcell/NutThread-v0``)."""

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
from skillcell.envs.base import ObsField
from skillcell.envs.cell import TOOL_PREFIX, CellConfig
from skillcell.envs.fixture_task import FORCE_STOP_FACTOR, FixtureConfig, FixtureTaskEnv

__all__ = ["NutThreadConfig", "NutThreadEnv", "hex_ring_boxes"]

TWO_PI = 2.0 * math.pi
#: the nut's bore past the bolt's diameter that the penetration budget allows, over the bore's radial clearance
PENETRATION_BUDGET_FRACTION = 0.5
#: the thread follower's mass and rotational inertia (a rotor's: it loads the spindle as the nut turns)
FOLLOWER_MASS_KG = 1.0
FOLLOWER_INERTIA = 1e-3
#: the thread's constraints (helix, grip, seat): as stiff as the 0.5 ms step allows, impedance near 1
STIFF_SOLREF = [0.002, 1.0]
STIFF_SOLIMP = [0.99, 0.999, 0.0001, 0.5, 2.0]


@dataclass(frozen=True)
class ThreadConfig:
    """The bolt's thread and the nut (millimetres)."""

    pitch_mm: float = field(default=1.25, metadata=bounds(0.2, 5.0))
    major_diameter_mm: float = field(default=8.0, metadata=bounds(2.0, 30.0))
    length_mm: float = field(default=7.5, metadata=bounds(2.0, 40.0))
    nut_bore_clearance_mm: float = field(default=0.8, metadata=bounds(0.1, 3.0))
    nut_across_flats_mm: float = field(default=13.0, metadata=bounds(3.0, 50.0))
    nut_height_mm: float = field(default=6.5, metadata=bounds(1.0, 30.0))
    running_torque_nm: float = field(default=0.2, metadata=bounds(0.0, 10.0))

    def __post_init__(self) -> None:
        bore = self.major_diameter_mm + self.nut_bore_clearance_mm
        if self.nut_across_flats_mm < bore + 2.0:
            raise ConfigError(f"nut_across_flats_mm: the nut's flats must be 1 mm clear of its bore ({bore:.1f} mm), "
                              f"got {self.nut_across_flats_mm}")
        if self.length_mm < 2 * self.pitch_mm:
            raise ConfigError(f"length_mm: the thread must be at least two pitches long, got {self.length_mm}")


@dataclass(frozen=True)
class EngagementConfig:
    """How coaxial the nut must be where it reaches the thread's helix for the thread to engage."""

    lateral_tolerance_mm: float = field(default=0.3, metadata=bounds(0.01, 2.0))
    tilt_tolerance_deg: float = field(default=2.0, metadata=bounds(0.1, 15.0))


@dataclass(frozen=True)
class NutrunnerConfig:
    """The spindle: its speed at action 1.0 and its clutch (stall torque at full command)."""

    max_speed_rpm: float = field(default=60.0, metadata=bounds(1.0, 2000.0))
    clutch_factor: float = field(default=0.75, metadata=bounds(0.05, 5.0))


@dataclass(frozen=True)
class NutTaskConfig:
    start_height_mm: float = field(default=20.0, metadata=bounds(5.0, 150.0))
    turns_required: float = field(default=5.0, metadata=bounds(0.5, 30.0))
    seat_tolerance_mm: float = field(default=0.2, metadata=bounds(0.01, 2.0))
    terminate_on_success: bool = True


@dataclass(frozen=True)
class NutLimitsConfig:
    """The cell's physical limits, each declared once (`skillcell.envs.limits`)."""

    #: the spindle torque that says the nut is seated (success needs it)
    seating_torque_nm: float = field(default=3.0, metadata=bounds(0.1, 100.0))
    #: the joint's torque limit: more fails the episode and the gate; the clutch and the F/T torque stop derive from it
    max_torque_nm: float = field(default=6.0, metadata=bounds(0.1, 200.0))
    #: the F/T force stop of the safety envelope
    tool_force_stop_n: float = field(default=50.0, metadata=bounds(1.0, 1000.0))

    def __post_init__(self) -> None:
        if self.seating_torque_nm >= self.max_torque_nm:
            raise ConfigError(f"seating_torque_nm: must be below max_torque_nm ({self.max_torque_nm}), "
                              f"got {self.seating_torque_nm}")


@dataclass(frozen=True)
class NutRandomizationConfig:
    """Uniform ranges (plus or minus) sampled at every reset."""

    bolt_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 0.0), metadata=bounds(0.0, 50.0))
    bolt_rot_deg: tuple[float, float, float] = field(default=(2.0, 2.0, 10.0), metadata=bounds(0.0, 180.0))
    start_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 5.0), metadata=bounds(0.0, 30.0))
    nut_angle_deg: float = field(default=180.0, metadata=bounds(0.0, 360.0))


@dataclass(frozen=True)
class NutRewardConfig:
    align: float = 0.3
    orient: float = 0.1
    advance: float = 0.5
    torque: float = 0.2
    success: float = 5.0


@dataclass(frozen=True)
class NutThreadConfig(CellConfig):
    thread: ThreadConfig = ThreadConfig()
    engagement: EngagementConfig = EngagementConfig()
    nutrunner: NutrunnerConfig = NutrunnerConfig()
    fixture: FixtureConfig = FixtureConfig()
    task: NutTaskConfig = NutTaskConfig()
    limits: NutLimitsConfig = NutLimitsConfig()
    randomization: NutRandomizationConfig = NutRandomizationConfig()
    reward: NutRewardConfig = NutRewardConfig()


def hex_ring_boxes(bore: float, across_flats: float, height: float
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Six boxes ``(half_size, pos, quat)`` that form a hex nut with a bore: one per flat.

    Frame: origin at the centre of the nut's bottom face, z into the nut (the tool axis). A mesh
    would collide as its convex hull (a solid nut that could not pass over the bolt), so the nut is
    a ring of boxes; neighbours overlap towards the bore, which is a hexagon of inradius ``bore/2``.
    """
    r_in, r_out = bore / 2, across_flats / 2
    half = np.array([(r_out - r_in) / 2, r_out * math.tan(math.pi / 6), height / 2])
    boxes = []
    for k in range(6):
        angle = k * math.pi / 3
        pos = np.array([(r_in + r_out) / 2 * math.cos(angle), (r_in + r_out) / 2 * math.sin(angle), -height / 2])
        boxes.append((half, pos, np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])))
    return boxes


class NutThreadEnv(FixtureTaskEnv, EzPickle):
    """Run an M8 nut onto a bolt with a nutrunner held by a UR5e, and seat it.

    ## Description
    A UR5e (MuJoCo Menagerie) carries a nutrunner (``assets/tools/nutrunner``): an F/T sensor at
    the flange and a spindle, a hinge about the tool axis driven by a velocity servo whose torque
    is clamped by its clutch, with an M8 nut (13 mm across flats) in its socket. The nut must be
    run down a bolt's thread (pitch 1.25 mm, 7.5 mm of free thread) onto the washer and seated.

    The thread is not a contact model (no SDF): a *thread follower*, a body on the bolt with a slide
    and a hinge along its axis, carries the thread. Where the nut, coaxial over the bolt (its bore
    0.8 mm over the bolt's diameter, a ring of boxes), reaches the helix for its angle (the depth
    ``pitch * angle / 2 pi`` below the thread start, within one pitch), the thread engages: the
    nut turns in its socket onto the nearest turn of the helix (by at most half a turn; see
    `_engage`), the follower is put at the nut's place on the helix, a joint equality ``slide = pitch / (2 pi) *
    hinge`` couples its two joints and a weld holds the nut to it. From then on the nut turns only
    by advancing one pitch per turn, the thread's running torque (the follower hinge's friction)
    loads the spindle, and the arm is drawn along the axis and must follow. Engaging with the nut's
    axis tilted more than ``engagement.tilt_tolerance_deg`` (2 deg) or off the bolt's axis by more
    than ``engagement.lateral_tolerance_mm`` (0.3 mm) cross-threads it: a weld to a mocap anchor
    set at the nut's pose jams it where it is (no advance, the spindle stalls). Both welds' states
    are ``mjData.eq_active``, and the anchor and follower are simulation state, so `get_state` and
    `set_state` carry them. When the nut's face meets the washer the spindle stalls and its torque
    rises to the clutch's: ``kv * speed command``.

    ## Action space
    ``Box(-1, 1, (7,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz), tracked by differential IK (see `CartesianController`), and the spindle.

    | index | meaning            | scale at 1.0                 |
    |-------|--------------------|------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |
    | 6     | spindle speed command, tightening; 0 or less holds the spindle | ``nutrunner.max_speed_rpm`` (60 rpm) |

    The spindle channel runs forward only (a nutrunner's run-down): capture signals drive task
    channels on and off (+1 / -1), and off must stop the spindle, not reverse it at full speed.
    The clutch: the servo's gain is the stall torque at full command (``nutrunner.clutch_factor``
    times ``limits.max_torque_nm``: 4.5 N*m, past the seating torque and inside the limit, as a
    nutrunner's clutch is set) over the full speed, so a stalled spindle presses its speed
    command's share of that torque; a clutch set past the limit (``--set nutrunner.clutch_factor=1.5``)
    over-torques the joint, which fails the episode and the gate.

    ## Observation space
    ``Box(-inf, inf, (39,), float32)``; each block is the physical value times a fixed scale.

    | block          | size | unit  | scale    | meaning                                              |
    |----------------|------|-------|----------|------------------------------------------------------|
    | joint_pos      | 6    | rad   | 1/pi     | UR5e joint positions                                 |
    | joint_vel      | 6    | rad/s | 1/pi     | joint velocities                                     |
    | tcp_pos_task   | 3    | m     | 1/0.05   | nut face centre in the bolt frame (origin: thread start) |
    | tcp_rot_task   | 3    | rad   | 1/0.1    | tool orientation error from coaxial (rotation vector) |
    | tcp_lead       | 3    | m     | 1/lead   | commanded minus measured TCP position (cell frame)   |
    | tcp_lead_rot   | 3    | rad   | 1/lead   | commanded from measured TCP orientation (rot. vector)|
    | force_tool     | 3    | N     | 1/50     | force the tool applies, F/T frame, zeroed at reset   |
    | torque_tool    | 3    | N*m   | 1/5      | torque the tool applies, F/T frame                   |
    | bolt_pos       | 3    | m     | 1/0.01   | thread start minus its nominal position (cell frame) |
    | bolt_rot       | 3    | rad   | 1/0.05   | bolt orientation (rotation vector, cell frame)       |
    | depth          | 1    | m     | 1/0.01   | nut face below the thread start, along the bolt      |
    | spindle_speed  | 1    | rad/s | 1/max    | spindle speed (tightening positive); max: full speed |
    | spindle_torque | 1    | N*m   | 1/limit  | spindle torque (transducer); limit: ``limits.max_torque_nm`` |

    ## Rewards
    ``reward = align + orient + advance + torque + success`` (weights ``reward.*``; each weighted
    term in ``info["reward_<term>"]``): ``align = 1 - tanh(lateral / 5 mm)``, ``orient = 1 -
    tanh(tilt / 2 deg)``, ``advance = clip(turns / (thread length / pitch), 0, 1)``, ``torque =
    -clip((|spindle torque| - seating torque) / (torque limit - seating torque), 0, 1)``,
    ``success = 1`` when seated.

    ## Randomizations
    Per reset, uniform: bolt position ``randomization.bolt_pos_mm`` (+-5 mm in x and y), bolt
    orientation ``randomization.bolt_rot_deg`` (+-2 deg roll and pitch, +-10 deg yaw: the thread
    start's angle), the TCP start position ``randomization.start_pos_mm`` (+-5 mm) 20 mm above the
    nominal thread start, and the nut's angle in the socket ``randomization.nut_angle_deg``
    (+-180 deg). Tiers (``assets/cells/nut_thread/tiers.yaml``): ``D0`` nominal, ``D1`` these
    ranges, ``D2`` twice them plus friction, mass, F/T noise and bias, observation noise and 1-2
    control periods of action latency.

    ## Success and episode end
    Success: the nut engaged (not cross-threaded), at least ``task.turns_required`` (5) turns down
    the thread, seated (its face within ``task.seat_tolerance_mm`` of the washer) with the spindle
    torque at ``limits.seating_torque_nm`` (3 N*m) or more, and never over ``limits.max_torque_nm``
    (6 N*m) in the episode. The episode terminates on success, on physics instability, or when the
    nut's penetration into the bolt or washer exceeds half the bore's radial clearance
    (``info["physics_invalid"]``). ``gym.make`` truncates at 400 steps (20 s).

    ## Info
    ``is_success``, ``turns``, ``axial_advance_mm`` (the nut's travel down the thread from its
    start), ``spindle_torque_nm``, ``peak_spindle_torque_nm``, ``spindle_speed_rpm``, ``engaged``,
    ``cross_threaded``, ``seated``, ``over_torque``, ``depth_mm``, ``lateral_error_mm``,
    ``tilt_deg``, ``axial_force_n`` (along the tool axis, pushing positive) and
    ``peak_axial_force_n`` (episode maximum of its magnitude), ``penetration_mm``,
    ``max_penetration_mm``, ``physics_invalid``, ``instability`` and the reward terms.

    ## Arguments
    ``gym.make("skillcell/NutThread-v0", cell=None, overrides=None, randomize=True,
    render_mode=None, width=640, height=480, camera="overview", render_quality="fast", tier=None)``;
    ``cell`` and ``overrides`` as for PegInsert. Cameras: ``overview``, ``side``, ``tool/closeup``.

    ## Version history
    - v0: first version (UR5e, nutrunner with a spindle channel, helical thread coupling,
      cross-threading, seating torque).
    """

    config_class = NutThreadConfig
    task_action_size = 1
    task_action_names = ("spindle",)
    kpi_keys = ("peak_spindle_torque_nm", "peak_axial_force_n", "turns", "cross_threaded")
    default_cell_yaml: Path = assets.path("cells", "nut_thread", "cell.yaml")
    cell_dir = assets.path("cells", "nut_thread")
    fixture_name, task_site_name = "bolt", "thread_start"  # coaxial (`R_task_tcp_nominal`): the tool down the bolt
    depth_obs_scale = 1 / 0.01

    def __init__(self, cell: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 randomize: bool = True, render_mode: str | None = None, width: int = 640, height: int = 480,
                 camera: str = "overview", render_quality: str = "fast", tier: str | None = None):
        EzPickle.__init__(self, cell, overrides, randomize, render_mode, width, height, camera, render_quality, tier)
        super().__init__(self.load_config(cell, overrides), render_mode, width, height, camera, render_quality,
                         tier=tier, randomize=randomize)

    @property
    def limits(self) -> dict[str, Any]:
        return {**super().limits, "tool_torque_stop_nm": FORCE_STOP_FACTOR * self.config.limits.max_torque_nm}

    @property
    def task_length_m(self) -> float:
        """The free thread: a run-down moves the nut that far."""
        return self.thread_length

    # ------------------------------------------------------------------ world

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        th, runner = self.config.thread, self.config.nutrunner
        fixture, precision = self._place_fixture(spec)
        nut, spindle = spec.body(TOOL_PREFIX + "nut"), spec.actuator(TOOL_PREFIX + "spindle")
        if spec.body("jam_anchor") is None:
            raise ConfigError("scene: NutThread needs a body 'jam_anchor' (the jammed nut's mocap anchor)")
        if nut is None or spindle is None:
            raise ConfigError("tool.mjcf: NutThread needs a tool with a body 'nut' and a spindle actuator 'spindle'")
        r_bolt, length = th.major_diameter_mm * 5e-4, th.length_mm * 1e-3
        stub = 0.002  # the bolt goes on into the washer, so its edge is no corner the nut's bore can catch
        fixture.add_geom(precision, name="bolt", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                         size=[r_bolt, (length + stub) / 2, 0], pos=[0, 0, -(length + stub) / 2])
        washer_half = 0.0008
        fixture.add_geom(precision, name="washer", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                         size=[0.008, washer_half, 0], pos=[0, 0, -length - washer_half])
        plate_top = -length - 2 * washer_half
        fixture.add_geom(name="plate", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.03, 0.03, 0.01],
                         pos=[0, 0, plate_top - 0.01], contype=0, conaffinity=0, rgba=[0.35, 0.37, 0.40, 1])
        # The follower's frame is the coaxial nut's: z down the bolt (pi about x), so its slide is the depth
        # and its hinge the nut's tightening angle. MuJoCo's constraints are soft in proportion to the
        # inertia they act on, and the helix reaches the slide through the lever pitch / (2 pi), so the seat
        # (the washer face) is a limit of the hinge, where the spindle's torque acts, as well as of the slide.
        follower = fixture.add_body(name="thread_follower", quat=[0, 1, 0, 0], gravcomp=1.0, mass=FOLLOWER_MASS_KG,
                                    inertia=[FOLLOWER_INERTIA] * 3, explicitinertial=True)
        limited = mujoco.mjtLimited.mjLIMITED_TRUE
        pitch = th.pitch_mm * 1e-3
        follower.add_joint(name="thread_slide", type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[0, 0, 1], limited=limited,
                           range=[-pitch, length], solref_limit=STIFF_SOLREF, solimp_limit=STIFF_SOLIMP)
        follower.add_joint(name="thread_hinge", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 0, 1], limited=limited,
                           range=[-TWO_PI, TWO_PI * length / pitch], solref_limit=STIFF_SOLREF,
                           solimp_limit=STIFF_SOLIMP, frictionloss=th.running_torque_nm)
        for i, (half, pos, q) in enumerate(hex_ring_boxes(r_bolt * 2 + th.nut_bore_clearance_mm * 1e-3,
                                                         th.nut_across_flats_mm * 1e-3, th.nut_height_mm * 1e-3)):
            nut.add_geom(precision, name=f"nut_{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=half, pos=pos, quat=q,
                         mass=0.001, rgba=[0.78, 0.7, 0.35, 1])
        helix = np.zeros(mujoco.mjNEQDATA)
        helix[1] = th.pitch_mm * 1e-3 / TWO_PI  # slide = pitch / (2 pi) * hinge
        identity = np.zeros(mujoco.mjNEQDATA)
        identity[6], identity[10] = 1.0, 1.0  # relpose: body2 at body1's frame; torquescale 1
        spec.add_equality(name="thread_helix", type=mujoco.mjtEq.mjEQ_JOINT, objtype=mujoco.mjtObj.mjOBJ_JOINT,
                          name1="thread_slide", name2="thread_hinge", data=helix, active=False, solref=STIFF_SOLREF,
                          solimp=STIFF_SOLIMP)
        for name, anchor in (("thread_grip", "thread_follower"), ("jam", "jam_anchor")):
            spec.add_equality(name=name, type=mujoco.mjtEq.mjEQ_WELD, objtype=mujoco.mjtObj.mjOBJ_BODY,
                              name1=anchor, name2=TOOL_PREFIX + "nut", data=identity, active=False, solref=STIFF_SOLREF,
                          solimp=STIFF_SOLIMP)
        # The clutch: full command stalls at clutch_factor x the torque limit.
        max_speed = runner.max_speed_rpm * TWO_PI / 60
        stall = runner.clutch_factor * self.config.limits.max_torque_nm
        kv = stall / max_speed
        spindle.gainprm[0], spindle.biasprm[2] = kv, -kv
        spindle.forcerange, spindle.ctrlrange = [-stall, stall], [-max_speed, max_speed]

    def _setup_task(self) -> None:
        super()._setup_task()
        m = self.model
        self._anchor_mocap = m.body_mocapid[m.body("jam_anchor").id]
        self._nut_body = m.body(TOOL_PREFIX + "nut").id
        self._eq_helix, self._eq_grip, self._eq_jam = (m.equality(n).id for n in ("thread_helix", "thread_grip", "jam"))
        self._slide_qpos = m.jnt_qposadr[m.joint("thread_slide").id]
        self._hinge_qpos = m.jnt_qposadr[m.joint("thread_hinge").id]
        self._slide_dof = m.jnt_dofadr[m.joint("thread_slide").id]
        self._hinge_dof = m.jnt_dofadr[m.joint("thread_hinge").id]
        spindle_joint = m.joint(TOOL_PREFIX + "spindle").id
        self.spindle_qpos_adr = int(m.jnt_qposadr[spindle_joint])
        self.spindle_dof_adr = int(m.jnt_dofadr[spindle_joint])
        self.spindle_actuator = m.actuator(TOOL_PREFIX + "spindle").id
        self._nut_geoms = frozenset(np.flatnonzero(m.geom_bodyid == self._nut_body).tolist())
        self._bolt_geoms = frozenset(m.geom(n).id for n in ("bolt", "washer"))
        th, eng, runner = self.config.thread, self.config.engagement, self.config.nutrunner
        self.pitch = th.pitch_mm * 1e-3
        self.thread_length = th.length_mm * 1e-3
        self.bolt_radius = th.major_diameter_mm * 5e-4
        self.penetration_budget = PENETRATION_BUDGET_FRACTION * th.nut_bore_clearance_mm * 5e-4
        self.max_spindle_speed = runner.max_speed_rpm * TWO_PI / 60
        self._lateral_tol = eng.lateral_tolerance_mm * 1e-3
        self._tilt_tol = eng.tilt_tolerance_deg
        self._nut_angle_range = math.radians(self.config.randomization.nut_angle_deg)

    def _reset_task(self, rng: np.random.Generator) -> None:
        super()._reset_task(rng)  # the bolt's pose first: seeded episodes depend on the order of the draws
        if self.randomize:
            self.data.qpos[self.spindle_qpos_adr] = rng.uniform(-1.0, 1.0) * self._nut_angle_range

    # ------------------------------------------------------------------ task

    def _task_obs_fields(self) -> list[ObsField]:
        return [*super()._task_obs_fields(), ObsField("spindle_speed", 1, 1 / self.max_spindle_speed, "rad/s"),
                ObsField("spindle_torque", 1, 1 / self.config.limits.max_torque_nm, "N*m")]

    def _task_obs(self, out: np.ndarray) -> None:
        super()._task_obs(out)
        out[7] = self.data.qvel[self.spindle_dof_adr]
        out[8] = self._spindle_torque

    def _apply_task_action(self, action: np.ndarray) -> None:
        self.data.ctrl[self.spindle_actuator] = self.max_spindle_speed * max(0.0, float(action[6]))

    def _episode_start(self) -> None:
        self._peak_torque = 0.0
        self._peak_axial = 0.0
        self._max_penetration = 0.0
        self._depth = self._measure_depth()
        self._spindle_torque = float(self.data.actuator_force[self.spindle_actuator])

    def nut_angle(self) -> float:
        """The nut's tightening angle about the bolt axis (rad, in [0, 2 pi)): its x axis in the follower's
        unturned frame (the bolt frame turned pi about x)."""
        R_task_nut = self._task_xmat.reshape(3, 3).T @ self.data.xmat[self._nut_body].reshape(3, 3)
        return math.atan2(-float(R_task_nut[1, 0]), float(R_task_nut[0, 0])) % TWO_PI

    @property
    def engaged(self) -> bool:
        """The thread is engaged (the helix coupling and the nut's grip on the follower are active)."""
        return bool(self.data.eq_active[self._eq_grip])

    @property
    def cross_threaded(self) -> bool:
        """The nut engaged misaligned and is jammed where it was (held by the jam anchor)."""
        return bool(self.data.eq_active[self._eq_jam])

    def _engage(self, depth: float, lateral: float, tilt: float) -> None:
        """Where the nut reaches the helix for its angle over the bolt, the thread engages or cross-threads.

        The nut passes the thread start freely (its thread is not modelled), so where it reaches the
        helix it may be up to a pitch past the helix point of its angle (it came down in step with a
        turning spindle). It engages at its own depth, on the helix nearest it: it turns in the socket
        by the difference (at most half a turn; the bolt is round, so nothing moves but the nut)
        rather than the arm being jerked along the axis. Changes only simulation state (qpos, qvel,
        mocap pose, eq_active), from the state itself, so a recorded episode's states carry the
        engagement and a replay never redoes it.
        """
        angle = self.nut_angle()
        lead = self.pitch / TWO_PI
        level = lead * angle  # the helix's depth at the nut's angle, in [0, pitch)
        if depth < level or lateral > self.bolt_radius:
            return
        d = self.data
        if lateral <= self._lateral_tol and tilt <= self._tilt_tol:
            turns = round((depth - level) / self.pitch)
            shift = (depth - level - turns * self.pitch) / lead
            d.qpos[self.spindle_qpos_adr] += shift
            d.qpos[self._slide_qpos], d.qpos[self._hinge_qpos] = depth, angle + shift + TWO_PI * turns
            spin = d.qvel[self.spindle_dof_adr]
            d.qvel[self._hinge_dof], d.qvel[self._slide_dof] = spin, spin * lead
            d.eq_active[self._eq_helix] = d.eq_active[self._eq_grip] = 1
        else:
            d.mocap_pos[self._anchor_mocap] = d.xpos[self._nut_body]
            d.mocap_quat[self._anchor_mocap] = d.xquat[self._nut_body]
            d.eq_active[self._eq_jam] = 1

    def nut_penetration(self) -> float:
        """Deepest penetration (m) between the nut and the bolt or washer, over current contacts."""
        return self._deepest_penetration(self._nut_geoms, self._bolt_geoms)

    def _evaluate(self) -> dict[str, Any]:
        d, limits, task = self.data, self.config.limits, self.config.task
        _, _, lateral, tilt = self._alignment()
        self._depth = depth = self._measure_depth()
        if not (d.eq_active[self._eq_grip] or d.eq_active[self._eq_jam]):
            self._engage(depth, lateral, tilt)
        engaged, jammed = self.engaged, self.cross_threaded
        self._spindle_torque = torque = float(d.actuator_force[self.spindle_actuator])
        self._peak_torque = max(self._peak_torque, abs(torque))
        axial_force = float(self.wrench_tool[2])
        self._peak_axial = max(self._peak_axial, abs(axial_force))
        penetration = self.nut_penetration()
        self._max_penetration = max(self._max_penetration, penetration)
        advance = float(d.qpos[self._slide_qpos]) if engaged else 0.0
        turns = float(d.qpos[self._hinge_qpos]) / TWO_PI if engaged else 0.0
        seated = engaged and advance >= self.thread_length - task.seat_tolerance_mm * 1e-3
        over_torque = self._peak_torque > limits.max_torque_nm
        physics_invalid = self._max_penetration > self.penetration_budget
        success = (seated and turns >= task.turns_required and torque >= limits.seating_torque_nm
                   and not over_torque and not physics_invalid)
        return {
            "is_success": bool(success),
            "turns": turns,
            "axial_advance_mm": advance * 1e3,
            "spindle_torque_nm": torque,
            "peak_spindle_torque_nm": self._peak_torque,
            "spindle_speed_rpm": float(d.qvel[self.spindle_dof_adr]) * 60 / TWO_PI,
            "engaged": engaged,
            "cross_threaded": jammed,
            "seated": seated,
            "over_torque": over_torque,
            "depth_mm": depth * 1e3,
            "lateral_error_mm": lateral * 1e3,
            "tilt_deg": tilt,
            "axial_force_n": axial_force,
            "peak_axial_force_n": self._peak_axial,
            "penetration_mm": penetration * 1e3,
            "max_penetration_mm": self._max_penetration * 1e3,
            "physics_invalid": physics_invalid,
        }

    def _reward(self, metrics: dict[str, Any], action: np.ndarray) -> tuple[float, dict[str, float]]:
        w, limits = self.config.reward, self.config.limits
        seat_turns = self.thread_length / self.pitch
        excess = ((abs(metrics["spindle_torque_nm"]) - limits.seating_torque_nm)
                  / (limits.max_torque_nm - limits.seating_torque_nm))
        terms = {
            "reward_align": w.align * (1.0 - math.tanh(metrics["lateral_error_mm"] / 5.0)),
            "reward_orient": w.orient * (1.0 - math.tanh(metrics["tilt_deg"] / 2.0)),
            "reward_advance": w.advance * min(1.0, max(0.0, metrics["turns"] / seat_turns)),
            "reward_torque": -w.torque * min(1.0, max(0.0, excess)),
            "reward_success": w.success * float(metrics["is_success"]),
        }
        return float(sum(terms.values())), terms
