"""PegInsert: tight-clearance peg-in-hole assembly with a UR5e (``skillcell/PegInsert-v0``)."""

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

__all__ = ["PegInsertConfig", "PegInsertEnv", "hole_boxes"]

PEG_LENGTH_M = 0.05  # the tool's peg: 50 mm long, 40 mm of it beyond the holder
PEG_TIP_Z_M = 0.103  # peg tip (the TCP) along the tool axis; the peg's far end stays in the holder


@dataclass(frozen=True)
class WorkpieceConfig:
    """The peg and the fixture block with its blind square hole (millimetres)."""

    peg_width_mm: float = field(default=12.0, metadata=bounds(2.0, 30.0))
    clearance_mm: float = field(default=0.4, metadata=bounds(0.1, 1.0))
    chamfer_mm: float = field(default=0.0, metadata=bounds(0.0, 5.0))
    hole_depth_mm: float = field(default=20.0, metadata=bounds(5.0, 35.0))
    block_size_mm: float = field(default=70.0, metadata=bounds(20.0, 200.0))

    def __post_init__(self) -> None:
        opening = self.peg_width_mm + self.clearance_mm + 2 * self.chamfer_mm
        if self.block_size_mm < opening + 10.0:
            raise ConfigError(f"block_size_mm: must exceed the hole opening ({opening:.1f} mm) "
                              f"by at least 10 mm, got {self.block_size_mm}")
        if self.chamfer_mm >= self.hole_depth_mm:
            raise ConfigError("chamfer_mm: must be smaller than hole_depth_mm")


@dataclass(frozen=True)
class PegTaskConfig:
    """Start, success and physics-validity settings."""

    start_height_mm: float = field(default=40.0, metadata=bounds(5.0, 150.0))
    success_depth_tolerance_mm: float = field(default=1.0, metadata=bounds(0.05, 5.0))
    penetration_budget: float = field(default=0.5, metadata=bounds(0.01, 1.0))
    jam_force_n: float = field(default=15.0, metadata=bounds(0.5, 500.0))
    terminate_on_success: bool = True


@dataclass(frozen=True)
class PegLimitsConfig:
    """The cell's physical limits, each declared once (`skillcell.envs.limits`)."""

    #: the press-in force the part and fixture are rated for: the gate's peak-force KPI limit, the
    #: review's red band, the skill score's zero; the F/T stop and the reward's penalty derive from it
    rated_insertion_force_n: float = field(default=40.0, metadata=bounds(1.0, 1000.0))


@dataclass(frozen=True)
class PegRandomizationConfig:
    """Uniform ranges (plus or minus) sampled at every reset."""

    hole_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 0.0), metadata=bounds(0.0, 50.0))
    hole_rot_deg: tuple[float, float, float] = field(default=(2.0, 2.0, 2.0), metadata=bounds(0.0, 15.0))
    start_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 5.0), metadata=bounds(0.0, 30.0))


@dataclass(frozen=True)
class PegInsertConfig(CellConfig):
    workpiece: WorkpieceConfig = WorkpieceConfig()
    fixture: FixtureConfig = FixtureConfig()
    task: PegTaskConfig = PegTaskConfig()
    limits: PegLimitsConfig = PegLimitsConfig()
    randomization: PegRandomizationConfig = PegRandomizationConfig()
    reward: InsertionRewardConfig = InsertionRewardConfig()


def hole_boxes(width: float, depth: float, chamfer: float, block: float
               ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Convex boxes ``(name, half_size, pos, quat)`` that form a block with a blind square hole.

    Frame: origin at the centre of the hole opening on the top face, z up the hole axis. A mesh
    would collide as its convex hull (a solid plug), so the hole is a union of boxes on one body.
    A chamfer of size ``c`` is a box turned 45 degrees about each edge, centred where the wall's
    top and side planes, moved back by ``c``, meet; its face then runs from ``(w/2, -c)`` to
    ``(w/2 + c, 0)`` in the wall's cross-section and the rest of it lies inside the walls.
    """
    hw, hb, c, d = width / 2, block / 2, chamfer, depth
    boxes = []
    eye = np.array([1.0, 0.0, 0.0, 0.0])

    def add(name, half, pos, quat=eye):
        boxes.append((name, np.asarray(half, float), np.asarray(pos, float), np.asarray(quat, float)))

    lower_top = -c
    lower_half_z = (d + lower_top) / 2
    lower_z = (-d + lower_top) / 2
    for sign, tag in ((1, "pos"), (-1, "neg")):
        add(f"wall_x_{tag}", [(hb - hw) / 2, hb, lower_half_z], [sign * (hw + hb) / 2, 0, lower_z])
        add(f"wall_y_{tag}", [hw, (hb - hw) / 2, lower_half_z], [0, sign * (hw + hb) / 2, lower_z])
        if c > 0:
            hc = hw + c
            add(f"rim_x_{tag}", [(hb - hc) / 2, hb, c / 2], [sign * (hc + hb) / 2, 0, -c / 2])
            add(f"rim_y_{tag}", [hc, (hb - hc) / 2, c / 2], [0, sign * (hc + hb) / 2, -c / 2])
            s = c / math.sqrt(2)
            about_y = [math.cos(math.pi / 8), 0, math.sin(math.pi / 8), 0]
            about_x = [math.cos(math.pi / 8), math.sin(math.pi / 8), 0, 0]
            add(f"chamfer_x_{tag}", [s, hc, s], [sign * hc, 0, -c], about_y)
            add(f"chamfer_y_{tag}", [hc, s, s], [0, sign * hc, -c], about_x)
    add("bottom", [hb, hb, 0.0025], [0, 0, -d - 0.0025])
    return boxes


class PegInsertEnv(InsertionTaskEnv, EzPickle):
    """Insert a square peg, held rigidly by a UR5e, into a tight blind hole in a fixture.

    ## Description
    A UR5e (MuJoCo Menagerie) carries a peg tool with a force/torque sensor at the flange. The peg
    (12 mm square, steel) must be inserted to the bottom of a 20 mm deep blind hole whose width is
    the peg width plus the clearance (0.1 to 1.0 mm, default 0.4 mm), optionally chamfered. Contacts
    are stiff (0.5 ms steps, ``solref 0.002``, elliptic cones), so a tilted peg wedges and jams as a
    real one does instead of sinking into the walls.

    ## Action space
    ``Box(-1, 1, (6,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz). ``control.mode: impedance`` (the default) holds the tool on a Cartesian
    spring and damper about that pose, on torque-driven joints (`ImpedanceController`: 1000 N/m,
    200 N*m/rad, so a blocked peg presses 10 N at the 10 mm lead); ``position`` tracks it by
    differential IK onto the UR5e's joint servos (`CartesianController`), stiff and anisotropic.

    | index | meaning            | scale at 1.0                 |
    |-------|--------------------|------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |

    ## Observation space
    ``Box(-inf, inf, (37,), float32)``; each block is the physical value times a fixed scale, so
    the entries are about unit size. `decode_obs` returns the physical values.

    | block          | size | unit  | scale    | meaning                                              |
    |----------------|------|-------|----------|------------------------------------------------------|
    | joint_pos      | 6    | rad   | 1/pi     | UR5e joint positions                                 |
    | joint_vel      | 6    | rad/s | 1/pi     | joint velocities                                     |
    | tcp_pos_task   | 3    | m     | 1/0.05   | peg tip in the hole frame (origin: hole opening)     |
    | tcp_rot_task   | 3    | rad   | 1/0.1    | tool orientation error from aligned (rotation vector)|
    | tcp_lead       | 3    | m     | 1/lead   | commanded minus measured TCP position (cell frame)   |
    | tcp_lead_rot   | 3    | rad   | 1/lead   | commanded from measured TCP orientation (rot. vector)|
    | force_tool     | 3    | N     | 1/50     | force the tool applies, F/T frame, zeroed at reset   |
    | torque_tool    | 3    | N*m   | 1/5      | torque the tool applies, F/T frame                   |
    | hole_pos       | 3    | m     | 1/0.01   | hole position minus its nominal position (cell frame)|
    | hole_rot       | 3    | rad   | 1/0.05   | hole orientation (rotation vector, cell frame)       |
    | depth          | 1    | m     | 1/0.02   | peg tip depth below the hole opening                 |

    ``lead`` is ``control.max_lead_mm`` and ``control.max_lead_deg``. The F/T blocks have the
    tool's weight removed and are zeroed where the episode starts, the tool in free space (as a
    robot zeroes its sensor before a task; `skillcell.envs.tiers`).

    ## Rewards
    ``reward = align + orient + insert + force + success`` (each weighted by ``reward.*``; each
    weighted term is in ``info["reward_<term>"]``):
    ``align = 1 - tanh(lateral / 5 mm)``, ``orient = 1 - tanh(tilt / 2 deg)``,
    ``insert = align * clip((depth + 10 mm) / (hole depth + 10 mm), 0, 1)``,
    ``force = -clip((|F| - jam force) / (saturation - jam force), 0, 1)`` with the saturation at
    `~skillcell.envs.fixture_task.FORCE_PENALTY_SATURATION` (1.5) times
    ``limits.rated_insertion_force_n`` (40 N), ``success = 1`` when seated.

    ## Randomizations
    Per reset, uniform: hole position ``randomization.hole_pos_mm`` (default +-5 mm in x and y),
    hole orientation ``randomization.hole_rot_deg`` (+-2 deg roll, pitch and yaw), and the TCP start
    position ``randomization.start_pos_mm`` (+-5 mm) around 40 mm above the nominal hole.
    ``randomize=False`` turns all of them off.

    Tiers (``tier=``, ``assets/cells/peg_insert/tiers.yaml``, see `skillcell.envs.tiers`): ``D0``
    nominal (as ``randomize=False``), ``D1`` the ranges above (the default), ``D2`` twice those
    ranges plus friction (x0.7-1.3) and robot/tool mass (x0.9-1.1) variation, F/T noise (0.5 N,
    0.02 N*m) and bias (+-2 N, +-0.1 N*m, zeroed at reset but for the tare's noise), observation
    noise and 1-2 control periods of action latency.

    ## Success and episode end
    Success: the peg tip inside the hole and within ``task.success_depth_tolerance_mm`` (1 mm) of
    its bottom, in a physically valid episode. The episode terminates on success, on physics instability
    (``info["instability"]``), or when the deepest peg-fixture penetration exceeds
    ``task.penetration_budget`` times the clearance (``info["physics_invalid"]``; such an episode
    never counts as a success). Penetration is checked at the end of each control step.
    ``gym.make`` truncates at 200 steps (10 s).

    ## Info
    ``is_success``, ``depth_mm``, ``lateral_error_mm``, ``tilt_deg``, ``axial_force_n`` (along the
    tool axis, pushing positive), ``contact_force_n`` and ``peak_insertion_force_n`` (episode
    maximum of the F/T force magnitude), ``jammed`` (over the opening, unseated, stalled and
    pressing harder than ``task.jam_force_n``), ``jam_time_s``, ``penetration_mm`` and ``max_penetration_mm``,
    ``physics_invalid``, ``instability`` and the reward terms.

    ## Arguments
    ``gym.make("skillcell/PegInsert-v0", cell=None, overrides=None, clearance_mm=None,
    chamfer_mm=None, randomize=True, render_mode=None, width=640, height=480, camera="overview",
    render_quality="fast", tier=None)``. ``cell`` is a YAML file laid over the packaged
    ``assets/cells/peg_insert/cell.yaml``, and ``overrides`` a nested mapping laid over that
    (``{"workpiece": {"chamfer_mm": 0.5}}``); every key is checked and an error names the
    offending key. Cameras: ``overview``, ``side``, ``tool/closeup``.

    ## Version history
    - v0: first version (UR5e, square peg, stiff contacts, F/T at the flange).
    - v0, observation change: ``tcp_lead_rot`` (the commanded orientation) after ``tcp_lead``
      (34 -> 37 entries), and the F/T reading zeroed at reset (tiers' ``ft_tare_readings``).
    - v0, control change: task-space impedance control by default (``control.mode``; the scripted
      expert at D2: 100% success in both modes, peak force 0.23 N mean instead of 1.55 N).
    """

    config_class = PegInsertConfig
    kpi_keys = ("peak_insertion_force_n", "jam_time_s", "max_penetration_mm", "depth_mm")
    default_cell_yaml: Path = assets.path("cells", "peg_insert", "cell.yaml")
    cell_dir = assets.path("cells", "peg_insert")  # tiers.yaml, envelope.yaml, criteria.yaml
    fixture_name, task_site_name = "hole", "hole"  # the fixture's site: the centre of the opening, z up the hole
    workpiece_shortcuts = ("clearance_mm", "chamfer_mm")

    def __init__(self, cell: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 clearance_mm: float | None = None, chamfer_mm: float | None = None, randomize: bool = True,
                 render_mode: str | None = None, width: int = 640, height: int = 480,
                 camera: str = "overview", render_quality: str = "fast", tier: str | None = None):
        EzPickle.__init__(self, cell, overrides, clearance_mm, chamfer_mm, randomize, render_mode, width,
                          height, camera, render_quality, tier)
        super().__init__(self.load_config(cell, overrides, clearance_mm=clearance_mm, chamfer_mm=chamfer_mm),
                         render_mode, width, height, camera, render_quality, tier=tier, randomize=randomize)

    @property
    def task_length_m(self) -> float:
        """The hole's depth: an insertion moves the peg at least that far."""
        return self.hole_depth

    # ------------------------------------------------------------------ world

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        wp = self.config.workpiece
        peg = spec.geom(TOOL_PREFIX + "peg")
        if peg is None:
            raise ConfigError("tool.mjcf: PegInsert needs a tool with a geom named 'peg'")
        half_width = wp.peg_width_mm * 1e-3 / 2
        peg.size = [half_width, half_width, PEG_LENGTH_M / 2]
        peg.pos = [0.0, 0.0, PEG_TIP_Z_M - PEG_LENGTH_M / 2]
        fixture, precision = self._place_fixture(spec)
        for name, half, pos, quat in hole_boxes((wp.peg_width_mm + wp.clearance_mm) * 1e-3,
                                                wp.hole_depth_mm * 1e-3, wp.chamfer_mm * 1e-3,
                                                wp.block_size_mm * 1e-3):
            fixture.add_geom(precision, name=f"hole_{name}", type=mujoco.mjtGeom.mjGEOM_BOX,
                             size=half, pos=pos, quat=quat)

    def _setup_task(self) -> None:
        super()._setup_task()
        self._peg_geoms = frozenset((self.model.geom(TOOL_PREFIX + "peg").id,))
        wp, task = self.config.workpiece, self.config.task
        self.clearance = wp.clearance_mm * 1e-3
        self.hole_depth = wp.hole_depth_mm * 1e-3
        self.penetration_budget = task.penetration_budget * self.clearance
        self._hole_half_width = (wp.peg_width_mm + wp.clearance_mm) * 5e-4
        self._opening_half_width = self._hole_half_width + wp.chamfer_mm * 1e-3

    # ------------------------------------------------------------------ task

    def _episode_start(self) -> None:
        self._peak_force = 0.0
        self._max_penetration = 0.0
        self._jam_time = 0.0
        self._depth = self._previous_depth = self._measure_depth()

    def peg_penetration(self) -> float:
        """Deepest penetration (m) between the peg and the fixture, over current contacts."""
        return self._deepest_penetration(self._peg_geoms, self._fixture_geoms)

    def _evaluate(self) -> dict[str, Any]:
        task = self.config.task
        px, py, lateral, tilt = self._alignment()
        self._previous_depth, self._depth = self._depth, self._measure_depth()
        depth = self._depth
        fx, fy, axial_force = self.wrench_tool[:3].tolist()
        contact_force = math.sqrt(fx * fx + fy * fy + axial_force * axial_force)
        self._peak_force = max(self._peak_force, contact_force)
        penetration = self.peg_penetration()
        self._max_penetration = max(self._max_penetration, penetration)
        # Square hole: the max-norm of the tip's offset says whether it is over (or in) the opening.
        offset = max(abs(px), abs(py))
        inside = offset < self._hole_half_width
        seated = inside and depth >= self.hole_depth - task.success_depth_tolerance_mm * 1e-3
        dt = self.dt
        depth_rate = (depth - self._previous_depth) / dt
        over_opening = offset < self._opening_half_width
        jammed = (not seated and over_opening and axial_force > task.jam_force_n
                  and abs(depth_rate) < 1e-3)
        if jammed:
            self._jam_time += dt
        physics_invalid = self._max_penetration > self.penetration_budget
        return {
            "is_success": bool(seated and not physics_invalid),
            "depth_mm": depth * 1e3,
            "lateral_error_mm": lateral * 1e3,
            "tilt_deg": tilt,
            "axial_force_n": axial_force,
            "contact_force_n": contact_force,
            "peak_insertion_force_n": self._peak_force,
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
            "reward_insert": w.insert * insert,
            "reward_force": -w.force * force,
            "reward_success": w.success * float(metrics["is_success"]),
        }
        return float(sum(terms.values())), terms
