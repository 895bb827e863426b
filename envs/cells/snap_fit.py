"""SnapFit: an RJ45-like connector with a cantilever latch pushed into its socket (``skillcell/SnapFit-v0``)."""

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

__all__ = ["PullTestResult", "SnapFitConfig", "SnapFitEnv", "socket_parts"]

PLUG_LENGTH_M = 0.04  # the plug stands 40 mm out of the holder
PLUG_TIP_Z_M = 0.103  # the plug's leading face (the TCP) along the tool axis
HINGE_ABOVE_TIP_M = 0.0005  # the latch's hinge sits this far behind the plug's leading face
ARM_BEYOND_HOOK_M = 0.0005  # the arm's free end, behind the hook's retention face
UNDERCUT_M = 0.0005  # the cavity under the catch reaches this far beyond the hook


@dataclass(frozen=True)
class WorkpieceConfig:
    """The plug body and the socket's cavity (millimetres); the latch side is the socket's +y."""

    plug_width_mm: float = field(default=12.0, metadata=bounds(4.0, 30.0))
    plug_thickness_mm: float = field(default=8.0, metadata=bounds(3.0, 20.0))
    clearance_mm: float = field(default=0.3, metadata=bounds(0.1, 1.0))
    chamfer_mm: float = field(default=1.0, metadata=bounds(0.0, 3.0))
    socket_depth_mm: float = field(default=14.0, metadata=bounds(8.0, 30.0))
    block_size_mm: float = field(default=40.0, metadata=bounds(20.0, 200.0))


@dataclass(frozen=True)
class LatchConfig:
    """The plug's cantilever latch (a hinged arm with a hook, a torsion spring at the hinge) and the
    socket's catch (millimetres, degrees)."""

    arm_width_mm: float = field(default=6.0, metadata=bounds(1.0, 20.0))
    arm_thickness_mm: float = field(default=1.0, metadata=bounds(0.3, 5.0))
    arm_gap_mm: float = field(default=1.3, metadata=bounds(0.2, 5.0))
    hook_height_mm: float = field(default=1.3, metadata=bounds(0.2, 5.0))
    hook_lead_angle_deg: float = field(default=25.0, metadata=bounds(10.0, 60.0))
    catch_clearance_mm: float = field(default=0.3, metadata=bounds(0.05, 2.0))
    catch_thickness_mm: float = field(default=1.5, metadata=bounds(0.5, 5.0))
    catch_lead_angle_deg: float = field(default=45.0, metadata=bounds(15.0, 75.0))
    float_mm: float = field(default=0.5, metadata=bounds(0.05, 3.0))
    stiffness_nm_per_rad: float = field(default=1.6, metadata=bounds(0.05, 100.0))
    damping_nms_per_rad: float = field(default=0.004, metadata=bounds(0.0, 10.0))
    armature_kg_m2: float = field(default=1e-5, metadata=bounds(1e-7, 1e-2))
    preload_deg: float = field(default=2.0, metadata=bounds(0.0, 20.0))

    @property
    def engagement_mm(self) -> float:
        """How far the hook overlaps the catch: the deflection at the hook that the click takes."""
        return self.hook_height_mm - self.catch_clearance_mm

    def __post_init__(self) -> None:
        if self.engagement_mm <= 0.0:
            raise ConfigError(f"latch.hook_height_mm: must exceed catch_clearance_mm ({self.catch_clearance_mm}) "
                              f"or the hook never engages, got {self.hook_height_mm}")
        if self.arm_gap_mm <= self.engagement_mm:
            raise ConfigError(f"latch.arm_gap_mm: must exceed the engagement ({self.engagement_mm:.2f} mm), or the "
                              f"arm cannot deflect past the catch, got {self.arm_gap_mm}")
        if self.catch_lead_angle_deg <= self.hook_lead_angle_deg:
            raise ConfigError("latch.catch_lead_angle_deg: must exceed hook_lead_angle_deg, so that the catch's edge "
                              "(not its lead-in face) rides the hook's ramp")


@dataclass(frozen=True)
class SnapTaskConfig:
    """Start, success and physics-validity settings."""

    start_height_mm: float = field(default=40.0, metadata=bounds(5.0, 150.0))
    seat_tolerance_mm: float = field(default=0.8, metadata=bounds(0.05, 5.0))
    detent_fraction: float = field(default=0.3, metadata=bounds(0.05, 0.9))
    penetration_budget: float = field(default=0.5, metadata=bounds(0.01, 1.0))
    press_force_n: float = field(default=5.0, metadata=bounds(0.5, 500.0))
    terminate_on_success: bool = True


@dataclass(frozen=True)
class SnapLimitsConfig:
    """The cell's physical limits, each declared once (`skillcell.envs.limits`)."""

    #: the push the connector and socket are rated for: success needs the episode's peak below it; the
    #: gate's peak-force KPI limit, the review's red band, the skill score's zero; the F/T stop derives from it
    rated_insertion_force_n: float = field(default=30.0, metadata=bounds(1.0, 1000.0))
    #: the pull a latched connector must hold: the stated pull of `SnapFitEnv.pull_test`
    retention_force_n: float = field(default=50.0, metadata=bounds(1.0, 1000.0))


@dataclass(frozen=True)
class SnapRandomizationConfig:
    """Uniform ranges (plus or minus) sampled at every reset."""

    socket_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 0.0), metadata=bounds(0.0, 50.0))
    socket_rot_deg: tuple[float, float, float] = field(default=(2.0, 2.0, 2.0), metadata=bounds(0.0, 15.0))
    start_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 5.0), metadata=bounds(0.0, 30.0))


@dataclass(frozen=True)
class SnapFitConfig(CellConfig):
    workpiece: WorkpieceConfig = WorkpieceConfig()
    latch: LatchConfig = LatchConfig()
    fixture: FixtureConfig = FixtureConfig()
    task: SnapTaskConfig = SnapTaskConfig()
    limits: SnapLimitsConfig = SnapLimitsConfig()
    randomization: SnapRandomizationConfig = SnapRandomizationConfig()
    reward: InsertionRewardConfig = InsertionRewardConfig()

    def __post_init__(self) -> None:
        super().__post_init__()
        wp, latch = self.workpiece, self.latch
        if latch.arm_width_mm >= wp.plug_width_mm:
            raise ConfigError(f"latch.arm_width_mm: must be narrower than the plug ({wp.plug_width_mm} mm), "
                              f"got {latch.arm_width_mm}")
        catch_top = _latch_side(wp, latch)["catch_top"] * 1e3
        if wp.block_size_mm / 2 < catch_top + 3.0:
            raise ConfigError(f"block_size_mm: the catch needs a half size over {catch_top + 3.0:.1f} mm, "
                              f"got {wp.block_size_mm}")
        if latch.catch_thickness_mm + latch.float_mm + latch.hook_height_mm / math.tan(
                math.radians(latch.hook_lead_angle_deg)) + 2.0 > wp.socket_depth_mm:
            raise ConfigError("workpiece.socket_depth_mm: too shallow for the catch, the float and the hook's ramp")


def _latch_side(wp: WorkpieceConfig, latch: LatchConfig) -> dict[str, float]:
    """Where the latch side's surfaces are, in the socket frame (m, along +y): the arm's faces with the
    plug centred, the catch's edge and the top of its lead-in face, the hook's tip, the undercut wall."""
    arm_in = (wp.plug_thickness_mm / 2 + latch.arm_gap_mm) * 1e-3
    arm_out = arm_in + latch.arm_thickness_mm * 1e-3
    edge = arm_out + latch.catch_clearance_mm * 1e-3
    thickness = latch.catch_thickness_mm * 1e-3
    return {"arm_in": arm_in, "arm_out": arm_out, "edge": edge,
            "catch_top": edge + thickness * math.tan(math.radians(latch.catch_lead_angle_deg)),
            "hook": arm_out + latch.hook_height_mm * 1e-3,
            "undercut": arm_out + latch.hook_height_mm * 1e-3 + UNDERCUT_M}


def _prism(section: list[tuple[float, float]], x0: float, x1: float) -> list[float]:
    """The vertices of a prism along x over a convex (y, z) section, flattened for `MjSpec.add_mesh`."""
    return [v for x in (x0, x1) for y, z in section for v in (x, y, z)]


def socket_parts(wp: WorkpieceConfig, latch: LatchConfig) -> tuple[list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                                                                    list[float]]:
    """The socket as convex parts: boxes ``(name, half_size, pos, quat)`` and the catch's prism vertices.

    Frame: origin at the centre of the opening on the top face, z up the socket axis, the latch side
    along +y. The cavity is the plug plus the clearance in x and y, open on +y to the latch; there the
    catch (a prism: its edge ``catch_clearance_mm`` beyond the arm, a lead-in face at
    ``catch_lead_angle_deg`` above it and a flat underside, the face the hook holds on) closes the
    opening to ``catch_thickness_mm`` deep, and under it the cavity widens to take the hook. The three
    plain edges of the opening have a 45 degree chamfer (boxes turned about the edge, as
    `skillcell.envs.cells.peg_insert.hole_boxes`). A mesh collides as its convex hull, so every part
    is convex.
    """
    c, d = wp.chamfer_mm * 1e-3, wp.socket_depth_mm * 1e-3
    hw = (wp.plug_width_mm + wp.clearance_mm) * 5e-4
    y_low = -(wp.plug_thickness_mm + wp.clearance_mm) * 5e-4
    hb = wp.block_size_mm * 5e-4
    side = _latch_side(wp, latch)
    t_catch = latch.catch_thickness_mm * 1e-3
    eye = np.array([1.0, 0.0, 0.0, 0.0])
    about_y = np.array([math.cos(math.pi / 8), 0, math.sin(math.pi / 8), 0])
    about_x = np.array([math.cos(math.pi / 8), math.sin(math.pi / 8), 0, 0])
    boxes = []

    def add(name, low, high, quat=eye):
        low, high = np.asarray(low, float), np.asarray(high, float)
        boxes.append((name, (high - low) / 2, (high + low) / 2, np.asarray(quat, float)))

    for sign, tag in ((1, "pos"), (-1, "neg")):
        add(f"wall_x_{tag}", [hw if sign > 0 else -hb, -hb, -d], [hb if sign > 0 else -hw, hb, -c])
        if c > 0:
            add(f"rim_x_{tag}", [hw + c if sign > 0 else -hb, -hb, -c], [hb if sign > 0 else -hw - c, hb, 0.0])
            s = c / math.sqrt(2)
            y0, y1 = y_low - c, side["edge"]
            boxes.append((f"chamfer_x_{tag}", np.array([s, (y1 - y0) / 2, s]),
                          np.array([sign * (hw + c), (y0 + y1) / 2, -c]), about_y))
    add("wall_y", [-hw, -hb, -d], [hw, y_low, -c])
    if c > 0:
        add("rim_y", [-hw - c, -hb, -c], [hw + c, y_low - c, 0.0])
        s = c / math.sqrt(2)
        boxes.append(("chamfer_y", np.array([hw + c, s, s]), np.array([0.0, y_low - c, -c]), about_x))
    add("undercut", [-hw, side["undercut"], -d], [hw, hb, -t_catch])
    add("floor", [-hb, -hb, -d - 0.005], [hb, hb, -d])
    section = [(side["edge"], -t_catch), (hb, -t_catch), (hb, 0.0), (side["catch_top"], 0.0)]
    return boxes, _prism(section, -hw - c, hw + c)


@dataclass(frozen=True)
class PullTestResult:
    """What `SnapFitEnv.pull_test` measured; forces in N, lengths in mm."""

    held: bool  # latched at every step of the hold, with the stated pull applied
    target_n: float  # the stated pull
    pull_n: float  # the mean pull the F/T read over the hold
    min_pull_n: float  # the least pull over the hold
    withdrawal_mm: float  # how far the plug came out, at most, from where the test started
    latched_throughout: bool
    steps: int


class SnapFitEnv(InsertionTaskEnv, EzPickle):
    """Push an RJ45-like connector, held by a UR5e, into its socket until its latch clicks.

    ## Description
    A UR5e (MuJoCo Menagerie) holds a plug (12 x 8 mm) with a cantilever latch by a holder on a
    force/torque sensor. The latch is an arm hinged at the plug's leading end (a hinge joint with a
    torsion spring, damping and an outward stop, as an RJ45 latch bends at its root) with a hook whose
    ramp meets the edge of the socket's catch: pushing in deflects the arm, so the insertion force
    rises; when the hook's tip passes the catch's edge the arm springs back under the catch (the
    click) and the force drops; the plug then has ``latch.float_mm`` of axial play to the socket floor
    (14 mm deep). Pulled back, the hook's flat top bears on the catch's underside, and the hinge sits
    beyond the contact, so a pull turns the arm onto its stop: a latched connector holds. The plug
    and the socket walls are stiff contacts (0.5 ms steps, ``solref 0.002``, elliptic cones); the
    floor, where the click's free travel ends, has an 8 ms time constant for the compliance of the
    arm's joints and the holder that the rigid model lacks (the scene's ``stop`` class says why); the
    hook and the catch are convex prisms (meshes), plastic on plastic (friction 0.3).

    ## Action space
    ``Box(-1, 1, (6,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz), tracked by a Cartesian spring and damper (``control.mode: impedance``, the
    default here, `skillcell.envs.impedance`: stiffer and overdamped along the socket axis, so the
    push the click frees does not slam the plug onto the floor) or by differential IK (``position``).

    | index | meaning            | scale at 1.0                 |
    |-------|--------------------|------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |

    ## Observation space
    ``Box(-inf, inf, (37,), float32)``; each block is the physical value times a fixed scale, so
    the entries are about unit size. `decode_obs` returns the physical values. The latch itself is
    not observed (a robot cell does not see it): the click shows in the force and the depth.

    | block          | size | unit  | scale    | meaning                                              |
    |----------------|------|-------|----------|------------------------------------------------------|
    | joint_pos      | 6    | rad   | 1/pi     | UR5e joint positions                                 |
    | joint_vel      | 6    | rad/s | 1/pi     | joint velocities                                     |
    | tcp_pos_task   | 3    | m     | 1/0.05   | plug tip in the socket frame (origin: the opening)   |
    | tcp_rot_task   | 3    | rad   | 1/0.1    | plug orientation error from aligned (rotation vector)|
    | tcp_lead       | 3    | m     | 1/lead   | commanded minus measured TCP position (cell frame)   |
    | tcp_lead_rot   | 3    | rad   | 1/lead   | commanded from measured TCP orientation (rot. vector)|
    | force_tool     | 3    | N     | 1/50     | force the tool applies, F/T frame, zeroed at reset   |
    | torque_tool    | 3    | N*m   | 1/5      | torque the tool applies, F/T frame                   |
    | socket_pos     | 3    | m     | 1/0.01   | socket position minus its nominal position (cell)    |
    | socket_rot     | 3    | rad   | 1/0.05   | socket orientation (rotation vector, cell frame)     |
    | depth          | 1    | m     | 1/0.02   | plug tip depth below the socket opening              |

    ``lead`` is ``control.max_lead_mm`` and ``control.max_lead_deg``. The F/T blocks have the
    tool's weight removed and are zeroed where the episode starts, the tool in free space.

    ## Rewards
    ``reward = align + orient + insert + force + success`` (each weighted by ``reward.*``; each
    weighted term is in ``info["reward_<term>"]``): ``align = 1 - tanh(lateral / 5 mm)``,
    ``orient = 1 - tanh(tilt / 2 deg)``, ``insert = align * clip((depth + 10 mm) / (socket depth +
    10 mm), 0, 1)``, ``force = -clip((|F| - press force) / (saturation - press force), 0, 1)`` with
    the saturation at 1.5 times ``limits.rated_insertion_force_n`` (30 N), ``success = 1`` when
    latched and seated.

    ## Randomizations
    Per reset, uniform: socket position ``randomization.socket_pos_mm`` (default +-5 mm in x and y),
    orientation ``randomization.socket_rot_deg`` (+-2 deg roll, pitch and yaw), and the TCP start
    position ``randomization.start_pos_mm`` (+-5 mm) around 40 mm above the nominal socket.
    ``randomize=False`` turns all of them off. Tiers (``tier=``, ``assets/cells/snap_fit/tiers.yaml``):
    ``D0`` nominal, ``D1`` the ranges above (the default), ``D2`` twice those ranges plus friction
    (x0.7-1.3, the latch's too) and mass variation, F/T noise and bias (zeroed at reset), observation
    noise and 1-2 control periods of action latency.

    ## Success and episode end
    Success: **latched** (the hook below the catch and the latch back in its detent, deflected less
    than ``task.detent_fraction`` of the engagement), the plug's tip within ``task.seat_tolerance_mm``
    of the socket floor (**seated**), the episode's peak force at most ``limits.rated_insertion_force_n``
    (a harder push may have damaged the part: that episode never succeeds), in a physically valid
    episode. The episode terminates on success, on physics instability (``info["instability"]``), or
    when the deepest plug/latch-to-socket penetration exceeds ``task.penetration_budget`` times the
    clearance (``info["physics_invalid"]``). ``gym.make`` truncates at 300 steps (15 s).

    After a success, `pull_test` pulls the connector back with the stated retention force,
    ``limits.retention_force_n`` (50 N by default), and says whether the latch held.

    ## Info
    ``is_success``, ``latched``, ``seated``, ``seated_depth_mm`` (the plug tip's depth below the
    opening: fully seated at the socket depth), ``latch_deflection_deg`` (the hinge angle, inward
    positive), ``click_detected`` (the latch was deflected past half its engagement and is back in its
    detent with the hook under the catch), ``click_step`` and ``click_time_s`` (the control step and
    time of the click; -1 before it), ``click_force_n`` (the peak force up to the click: what
    the click took), ``peak_insertion_force_n`` (episode maximum of the F/T force magnitude: the force
    profile's peak), ``over_rated_force``, ``axial_force_n`` (along the tool axis, pushing positive),
    ``contact_force_n``, ``press_after_click_s`` (time spent pushing harder than ``task.press_force_n``
    after the click: a double push), ``lateral_error_mm``, ``tilt_deg``, ``penetration_mm`` and
    ``max_penetration_mm``, ``physics_invalid``, ``instability`` and the reward terms.

    ## Arguments
    ``gym.make("skillcell/SnapFit-v0", cell=None, overrides=None, clearance_mm=None, randomize=True,
    render_mode=None, width=640, height=480, camera="overview", render_quality="fast", tier=None)``.
    ``cell`` is a YAML file laid over the packaged ``assets/cells/snap_fit/cell.yaml``, and
    ``overrides`` a nested mapping laid over that (``{"latch": {"stiffness_nm_per_rad": 2.0}}``);
    every key is checked and an error names the offending key. Cameras: ``overview``, ``side``,
    ``latch`` (across the catch side), ``tool/closeup``.

    ## Version history
    - v0: first version (UR5e, RJ45-like plug, hinged cantilever latch with a hook, socket catch).
    """

    config_class = SnapFitConfig
    kpi_keys = ("peak_insertion_force_n", "click_force_n", "press_after_click_s", "max_penetration_mm",
                "seated_depth_mm")
    default_cell_yaml: Path = assets.path("cells", "snap_fit", "cell.yaml")
    cell_dir = assets.path("cells", "snap_fit")  # tiers.yaml, envelope.yaml, criteria.yaml
    fixture_name, task_site_name = "socket", "socket"  # the socket's site: the centre of its opening, z out
    workpiece_shortcuts = ("clearance_mm",)
    # Aligned (`R_task_tcp_nominal`, pi about x): the tool's -y (where the latch is) faces the socket's +y
    # (where the catch is).

    def __init__(self, cell: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 clearance_mm: float | None = None, randomize: bool = True, render_mode: str | None = None,
                 width: int = 640, height: int = 480, camera: str = "overview", render_quality: str = "fast",
                 tier: str | None = None):
        EzPickle.__init__(self, cell, overrides, clearance_mm, randomize, render_mode, width, height, camera,
                          render_quality, tier)
        super().__init__(self.load_config(cell, overrides, clearance_mm=clearance_mm), render_mode, width, height,
                         camera, render_quality, tier=tier, randomize=randomize)

    @property
    def task_length_m(self) -> float:
        """The socket's depth: an insertion moves the plug at least that far."""
        return self.socket_depth

    # ------------------------------------------------------------------ world

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        wp, latch = self.config.workpiece, self.config.latch
        tool = spec.body(TOOL_PREFIX + self.config.tool.body)
        fixture, precision = self._place_fixture(spec)
        latch_class, stop = spec.find_default("latch"), spec.find_default("stop")
        if latch_class is None or stop is None:
            raise ConfigError("scene: SnapFit needs the default classes 'latch' and 'stop'")
        boxes, catch = socket_parts(wp, latch)
        for name, half, pos, q in boxes:
            fixture.add_geom(stop if name == "floor" else precision, name=f"socket_{name}",
                             type=mujoco.mjtGeom.mjGEOM_BOX, size=half, pos=pos, quat=q)
        spec.add_mesh(name="socket_catch", uservert=catch)
        fixture.add_geom(latch_class, name="socket_catch", type=mujoco.mjtGeom.mjGEOM_MESH, meshname="socket_catch")

        # The plug, on the tool (named as the attached tool's parts are); the tool's -y is the socket's +y.
        tool.add_geom(precision, name=TOOL_PREFIX + "plug", type=mujoco.mjtGeom.mjGEOM_BOX, mass=0.02,
                      size=[wp.plug_width_mm * 5e-4, wp.plug_thickness_mm * 5e-4, PLUG_LENGTH_M / 2],
                      pos=[0.0, 0.0, PLUG_TIP_Z_M - PLUG_LENGTH_M / 2], rgba=[0.92, 0.92, 0.88, 1.0])
        side = _latch_side(wp, latch)
        arm_t = latch.arm_thickness_mm * 1e-3
        apex = self._hook_apex_above_tip  # the hook's tip, over the plug's leading face
        arm_length = apex - HINGE_ABOVE_TIP_M + ARM_BEYOND_HOOK_M
        hinge = [0.0, -(side["arm_in"] + arm_t / 2), PLUG_TIP_Z_M - HINGE_ABOVE_TIP_M]
        body = tool.add_body(name=TOOL_PREFIX + "latch", pos=hinge,
                             mass=0.002, inertia=[1e-7, 1e-7, 1e-8], explicitinertial=True,
                             gravcomp=1.0 if self.config.robot.gravity_compensation else 0.0)
        engage = latch.engagement_mm * 1e-3
        body.add_joint(name=TOOL_PREFIX + "latch_hinge", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[1.0, 0.0, 0.0],
                       stiffness=latch.stiffness_nm_per_rad, springref=-math.radians(latch.preload_deg),
                       damping=latch.damping_nms_per_rad, armature=latch.armature_kg_m2,
                       range=[0.0, 2.0 * engage / (apex - HINGE_ABOVE_TIP_M) + 0.05],
                       limited=mujoco.mjtLimited.mjLIMITED_TRUE, solref_limit=[0.002, 1.0],
                       solimp_limit=[0.95, 0.99, 0.0005, 0.5, 2.0])
        body.add_geom(latch_class, name=TOOL_PREFIX + "latch_arm", type=mujoco.mjtGeom.mjGEOM_BOX,
                      size=[latch.arm_width_mm * 5e-4, arm_t / 2, arm_length / 2], pos=[0.0, 0.0, -arm_length / 2])
        # The hook: a prism on the arm's outer face (latch frame -y), its ramp rising from the plug's tip
        # side to the tip, then a flat top (the retention face) back to the arm.
        z_tip = -(apex - HINGE_ABOVE_TIP_M)
        z_ramp = z_tip + latch.hook_height_mm * 1e-3 / math.tan(math.radians(latch.hook_lead_angle_deg))
        h = latch.hook_height_mm * 1e-3
        section = [(0.0, z_ramp), (-arm_t / 2, z_ramp), (-arm_t / 2 - h, z_tip), (0.0, z_tip)]
        half_w = latch.arm_width_mm * 5e-4
        spec.add_mesh(name="latch_hook", uservert=_prism(section, -half_w, half_w))
        body.add_geom(latch_class, name=TOOL_PREFIX + "latch_hook", type=mujoco.mjtGeom.mjGEOM_MESH,
                      meshname="latch_hook")

    @property
    def _hook_apex_above_tip(self) -> float:
        """The hook's tip over the plug's leading face (m): seated, it is ``float_mm`` under the catch."""
        wp, latch = self.config.workpiece, self.config.latch
        return (wp.socket_depth_mm - latch.catch_thickness_mm - latch.float_mm) * 1e-3

    def _setup_task(self) -> None:
        super()._setup_task()
        m = self.model
        self._part_geoms = frozenset(m.geom(TOOL_PREFIX + name).id for name in ("plug", "latch_arm", "latch_hook"))
        self._hook_geom = m.geom(TOOL_PREFIX + "latch_hook").id
        self._latch_qadr = int(m.jnt_qposadr[m.joint(TOOL_PREFIX + "latch_hinge").id])
        wp, latch, task = self.config.workpiece, self.config.latch, self.config.task
        self.clearance = wp.clearance_mm * 1e-3
        self.socket_depth = wp.socket_depth_mm * 1e-3
        self.penetration_budget = task.penetration_budget * self.clearance
        #: the plug tip's depth at which the hook's tip passes the catch's edge: the click
        self.click_depth = self.socket_depth - latch.float_mm * 1e-3
        #: the plug tip's depth at which the hook's ramp reaches the catch's edge: the push starts
        tan_lead = math.tan(math.radians(latch.hook_lead_angle_deg))
        self.engage_depth = self.click_depth - latch.engagement_mm * 1e-3 / tan_lead
        #: the hinge angle (rad) at which the hook's tip clears the catch's edge
        self.engagement_angle = latch.engagement_mm * 1e-3 / (self._hook_apex_above_tip - HINGE_ABOVE_TIP_M)
        self._detent_angle = task.detent_fraction * self.engagement_angle
        self._half_width = (wp.plug_width_mm + wp.clearance_mm) * 5e-4

    # ------------------------------------------------------------------ task

    def _episode_start(self) -> None:
        self._step_index = -1
        self._peak_force = 0.0
        self._max_penetration = 0.0
        self._was_deflected = False
        self._click_step = -1
        self._click_force = 0.0
        self._press_after_click = 0.0
        self._depth = self._measure_depth()

    def latch_angle(self) -> float:
        """The latch's hinge angle (rad), inward (towards the plug) positive; 0 on its stop."""
        return float(self.data.qpos[self._latch_qadr])

    def part_penetration(self) -> float:
        """Deepest penetration (m) between the plug or its latch and the socket, over current contacts."""
        return self._deepest_penetration(self._part_geoms, self._fixture_geoms)

    def _evaluate(self) -> dict[str, Any]:
        task = self.config.task
        self._step_index += 1
        px, _, lateral, tilt = self._alignment()
        depth = self._depth = self._measure_depth()
        fx, fy, axial_force = self.wrench_tool[:3].tolist()
        contact_force = math.sqrt(fx * fx + fy * fy + axial_force * axial_force)
        self._peak_force = max(self._peak_force, contact_force)
        penetration = self.part_penetration()
        self._max_penetration = max(self._max_penetration, penetration)
        angle = float(self._qpos[self._latch_qadr])
        if angle > 0.5 * self.engagement_angle:
            self._was_deflected = True
        inside = abs(px) < self._half_width
        # The hook can be under the catch only by passing its edge (a small pull back keeps it there).
        latched = inside and depth > self.click_depth - 2.5e-4 and angle < self._detent_angle
        dt = self.dt
        clicked = self._click_step >= 0
        if not clicked:
            self._click_force = self._peak_force
            if latched and self._was_deflected:
                self._click_step, clicked = self._step_index, True
        elif axial_force > task.press_force_n:
            self._press_after_click += dt
        seated = latched and depth >= self.socket_depth - task.seat_tolerance_mm * 1e-3
        over_rated = self._peak_force > self.config.limits.rated_insertion_force_n
        physics_invalid = self._max_penetration > self.penetration_budget
        return {
            "is_success": bool(seated and not over_rated and not physics_invalid),
            "latched": latched,
            "seated": seated,
            "seated_depth_mm": depth * 1e3,
            "latch_deflection_deg": math.degrees(angle),
            "click_detected": clicked,
            "click_step": self._click_step,
            "click_time_s": self._click_step * dt if clicked else -1.0,
            "click_force_n": self._click_force,
            "peak_insertion_force_n": self._peak_force,
            "over_rated_force": over_rated,
            "axial_force_n": axial_force,
            "contact_force_n": contact_force,
            "press_after_click_s": self._press_after_click,
            "lateral_error_mm": lateral * 1e3,
            "tilt_deg": tilt,
            "penetration_mm": penetration * 1e3,
            "max_penetration_mm": self._max_penetration * 1e3,
            "physics_invalid": physics_invalid,
        }

    def _reward(self, metrics: dict[str, Any], action: np.ndarray) -> tuple[float, dict[str, float]]:
        w = self.config.reward
        align, orient, insert, force = self._insertion_shaping(metrics, metrics["seated_depth_mm"],
                                                               self.config.task.press_force_n)
        terms = {
            "reward_align": w.align * align,
            "reward_orient": w.orient * orient,
            "reward_insert": w.insert * insert,
            "reward_force": -w.force * force,
            "reward_success": w.success * float(metrics["is_success"]),
        }
        return float(sum(terms.values())), terms

    # ------------------------------------------------------------------ review and tests

    def add_overlays(self, scene: mujoco.MjvScene) -> None:
        """A marker on the hook: green latched, amber deflected (pushing over the catch), grey otherwise."""
        if scene.ngeom >= scene.maxgeom:
            return
        d = self.data
        angle = float(self._qpos[self._latch_qadr])
        latched = self._depth > self.click_depth - 2.5e-4 and angle < self._detent_angle
        rgba = (0.2, 0.85, 0.3, 0.9) if latched else (
            (1.0, 0.65, 0.0, 0.9) if angle > self._detent_angle else (0.6, 0.6, 0.65, 0.6))
        geom = scene.geoms[scene.ngeom]
        mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_SPHERE, np.array([0.0015, 0, 0]),
                            d.geom_xpos[self._hook_geom], np.eye(3).ravel(), np.asarray(rgba, np.float32))
        geom.category = mujoco.mjtCatBit.mjCAT_DECOR
        scene.ngeom += 1

    def pull_test(self, force_n: float | None = None, hold_s: float = 1.0, ramp_s: float = 0.5) -> PullTestResult:
        """Pulls the connector back out along the socket axis with a stated force and says whether it held.

        The stated pull is ``force_n`` (default ``limits.retention_force_n``, 50 N), ramped up over
        ``ramp_s`` and held for ``hold_s``, applied as a test rig would through the robot: every
        control step the commanded pose moves out along the socket axis so that the pull the F/T
        reads (ground truth, not the tier's noisy reading) meets the ramp, by a secant update on the
        arm's stiffness measured over the last five steps (so it works in either control mode). The connector held if it
        stayed latched at every step and the pull read at least 95% of the stated force over the
        hold. The test continues the episode from where it is (call it after a success; its steps
        count in the episode's statistics, not in its outcome).
        """
        target = float(self.config.limits.retention_force_n if force_n is None else force_n)
        R_world_task = self._task_xmat.reshape(3, 3)
        outward = R_world_task[:, 2]  # out of the socket, cell frame
        scale = self.config.control.max_translation_mm * 1e-3
        ramp_steps, hold_steps = max(1, round(ramp_s / self.dt)), max(1, round(hold_s / self.dt))
        start_depth, deepest_loss = self._depth, 0.0
        pulls, latched_all = [], True
        seen_pull, seen_lead = [], []  # the last readings: the contacts chatter, one is too noisy to steer by
        for step in range(ramp_steps + hold_steps):
            wanted = target * min(1.0, (step + 1) / ramp_steps)
            lead = float(self.controller.pose_error()[:3] @ outward)
            seen_pull.append(-float(self.wrench_tool[2]))  # along the tool axis, out of the socket
            seen_lead.append(lead)
            pull, stretch = sum(seen_pull[-5:]), sum(seen_lead[-5:])
            if pull > 5.0 and stretch > 5e-5:
                move = 0.5 * (wanted / (pull / stretch) - lead)  # towards the lead the measured stiffness needs
            else:
                move = 2e-4
            move = min(max(move, -scale), scale)
            action = np.zeros(6)
            action[:3] = outward * move / scale
            _, _, _, _, info = self.step(action)
            deepest_loss = max(deepest_loss, start_depth - self._depth)
            if step >= ramp_steps:
                pulls.append(-info["axial_force_n"])
                latched_all = latched_all and bool(info["latched"])
        pulls_arr = np.array(pulls)
        held = latched_all and float(pulls_arr.mean()) >= 0.95 * target
        return PullTestResult(held=bool(held), target_n=target, pull_n=float(pulls_arr.mean()),
                              min_pull_n=float(pulls_arr.min()), withdrawal_mm=deepest_loss * 1e3,
                              latched_throughout=latched_all, steps=ramp_steps + hold_steps)
