"""WeldSeam: robotic arc welding along a seam, judged from the torch's motion (``skillcell/WeldSeam-v0``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from gymnasium.utils.ezpickle import EzPickle

from skillcell import assets
from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, merge
from skillcell.envs import kernels
from skillcell.envs.base import CellEnv, ObsField
from skillcell.envs.cell import TOOL_PREFIX, CellConfig, load_cell_config
from skillcell.envs.control import clip_float, float_packer, mul_quat
from skillcell.envs.weld import (
    METRIC_KEYS,
    JointConfig,
    SeamConfig,
    SeamPath,
    WeldMetrics,
    WPSConfig,
    plate_boxes,
    torch_rotation,
)
from skillcell.envs.weld_process import FILLET_JOINTS

__all__ = ["VARIANTS", "BeadSurface", "WeldSeamConfig", "WeldSeamEnv"]

#: registered variants: the overlay YAML in ``assets/cells/weld_seam/`` each one applies
VARIANTS = ("fillet", "lap", "butt", "curved")
PLATE_GROUP = 1  # geom group of the plates: the CTWD ray cast sees only these
LOOKAHEAD_M = (0.010, 0.030)
_PACK6, _PACK13 = float_packer(6), float_packer(13)


@dataclass(frozen=True)
class WorkpiecePoseConfig:
    """Nominal pose of the workpiece frame (base plate top face, seams in its z = 0 plane)."""

    pos_m: tuple[float, float, float] = (0.45, 0.05, 0.808)
    euler_deg: tuple[float, float, float] = field(default=(0.0, 0.0, 90.0), metadata=bounds(-180.0, 180.0))


@dataclass(frozen=True)
class WeldTaskConfig:
    approach_mm: float = field(default=30.0, metadata=bounds(0.0, 150.0))
    end_tolerance_mm: float = field(default=1.0, metadata=bounds(0.1, 20.0))
    leave_distance_mm: float = field(default=30.0, metadata=bounds(1.0, 200.0))
    #: false: the episode runs on past the seam end (crater fill, arc off, hold) to its time limit
    terminate_at_seam_end: bool = True


@dataclass(frozen=True)
class WeldRandomizationConfig:
    """Uniform ranges (plus or minus) sampled at every reset; the gap is added, from 0 up."""

    part_pos_mm: tuple[float, float, float] = field(default=(3.0, 3.0, 1.0), metadata=bounds(0.0, 50.0))
    part_rot_deg: tuple[float, float, float] = field(default=(1.0, 1.0, 2.0), metadata=bounds(0.0, 15.0))
    gap_mm: float = field(default=0.5, metadata=bounds(0.0, 5.0))
    start_pos_mm: tuple[float, float, float] = field(default=(5.0, 5.0, 5.0), metadata=bounds(0.0, 30.0))


@dataclass(frozen=True)
class WeldLimitsConfig:
    """The cell's physical limits, each declared once (`skillcell.envs.limits`); the WPS holds the bands."""

    #: the F/T stop: a torch is not a probe, any real contact is a crash (the envelope's force limit,
    #: the reward's force penalty)
    tool_force_stop_n: float = field(default=20.0, metadata=bounds(1.0, 500.0))


@dataclass(frozen=True)
class WeldRewardConfig:
    weld: float = 10.0  # for the whole seam welded in spec
    track: float = 0.05  # per step, for the aim point on the seam
    quality: float = 0.05  # per step, penalty scaled by how far out of spec
    success: float = 5.0


@dataclass(frozen=True)
class WeldSeamConfig(CellConfig):
    wps: str = "cells/weld_seam/wps_fillet.yaml"
    joint: JointConfig = JointConfig()
    seam: SeamConfig = SeamConfig()
    workpiece: WorkpiecePoseConfig = WorkpiecePoseConfig()
    task: WeldTaskConfig = WeldTaskConfig()
    limits: WeldLimitsConfig = WeldLimitsConfig()
    randomization: WeldRandomizationConfig = WeldRandomizationConfig()
    reward: WeldRewardConfig = WeldRewardConfig()


def load_wps(relative: str, cell_yaml: Path | None = None) -> WPSConfig:
    """A WPS YAML (relative to the cell YAML's folder, then to the packaged assets); errors name the key.

    A WPS may start from another (``base:``, relative to its own folder, then to the packaged
    assets) and change some of its keys, as a weave WPS adds a weave to a joint's bands.
    """
    path, chain = _wps_file(relative, cell_yaml), []
    while True:
        try:
            data = load_yaml(path)
        except ConfigError as exc:
            raise ConfigError(f"wps ({path}): {exc}") from None
        chain.append((path, data))
        base = data.pop("base", None)
        if base is None:
            break
        if not isinstance(base, str):
            raise ConfigError(f"wps ({path}): base: expected the path of a WPS YAML, got {base!r}")
        path = _wps_file(base, path, f"wps ({path}): base")
        if any(path.resolve() == seen.resolve() for seen, _ in chain):
            raise ConfigError(f"wps ({chain[-1][0]}): base: {base} is already in the chain of bases")
    merged: dict[str, Any] = {}
    for _, data in reversed(chain):
        merged = merge(merged, data)
    try:
        return from_mapping(WPSConfig, merged)
    except ConfigError as exc:
        raise ConfigError(f"wps ({chain[0][0]}): {exc}") from None


def _wps_file(relative: str, beside: Path | None, key: str = "wps") -> Path:
    path = Path(relative)
    if not path.is_absolute():
        local = beside.parent / path if beside else None
        path = local if local is not None and local.is_file() else assets.path(*path.parts)
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    return path


class WeldSeamEnv(CellEnv, EzPickle):
    """Weld a seam with a torch on a UR5e, in spec with a welding procedure (WPS).

    ## Description
    A UR5e (MuJoCo Menagerie) carries a straight GMAW torch (TCP at the contact tip, wire sticking
    out). The workpiece is generated from ``cell.yaml``: a fillet T-joint, a lap or a butt joint,
    plates as boxes, and a seam of lines, arcs and polylines. There is no arc physics: the bead is
    judged from the torch's motion against the WPS bands (`skillcell.envs.weld`): travel speed,
    work and travel angles, contact-tip-to-work distance (ray cast), lateral and vertical
    deviation of the aim point, weave, arc-on coverage. The headline figure is the in-spec
    fraction of the seam length.

    ## Action space
    ``Box(-1, 1, (7,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz), as in `CellEnv`, then the arc.

    | index | meaning             | scale at 1.0                          |
    |-------|---------------------|---------------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |
    | 6     | arc                 | on while positive                     |

    ## Observation space
    ``Box(-inf, inf, (43,), float32)``; each block is the physical value times a fixed scale
    (`decode_obs` returns the physical values). The task frame is the seam frame at the seam point
    nearest the aim point (the wire tip at the nominal CTWD).

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
    ``weld`` (``reward.weld`` times the seam fraction welded in spec this step), ``track``
    (``1 - tanh(aim point to seam / 5 mm)``), ``quality`` (minus the mean excess over the WPS
    bands in band-widths, capped at 1, while the arc is on), ``success``; each in
    ``info["reward_<term>"]``.

    ## Randomizations
    Workpiece pose (+-3 mm, +-1 deg roll/pitch, +-2 deg yaw), fit-up gap (0 to 0.5 mm: the web
    lifted, the lapped plate raised, the butt halves apart) and the torch start position (+-5 mm).
    ``randomize=False`` turns them off. Tiers (``tier=``, ``assets/cells/weld_seam/tiers.yaml``):
    ``D0`` nominal, ``D1`` the above (default), ``D2`` twice the ranges plus friction and mass
    variation, F/T and observation noise (seam sensing 0.2 mm) and 1-2 control periods of latency.

    ## Success and episode end
    The episode terminates when the aim point reaches the seam end or, once the arc has been
    struck, leaves the seam by more than ``task.leave_distance_mm`` (30 mm). Success: the end reached with at least
    ``min_in_spec_fraction`` (WPS, 0.9) of the seam length welded in spec, judged where the aim
    first reaches the end. With ``task.terminate_at_seam_end: false`` the episode runs on past the
    seam end (crater fill, arc off, the torch backed away) until it is truncated, ``is_success``
    keeping that verdict. ``gym.make`` truncates at 1000 steps (50 s).

    ## Info
    Every step: the metrics of `skillcell.envs.weld` (``travel_speed_mm_s``, ``work_angle_deg``,
    ``travel_angle_deg``, ``ctwd_mm``, ``lateral_deviation_mm``, ``vertical_deviation_mm``,
    ``weave_width_mm``, ``weave_frequency_hz``, ``in_spec``, ``seam_position_mm``), ``arc_on``,
    the bead so far (``arc_coverage``, ``in_spec_fraction``, ``bead_in_spec_fraction``,
    ``bead_<metric>_mean`` and ``_std``), ``is_success``, ``physics_invalid``, ``instability``,
    reward terms. The arc process (`skillcell.envs.weld_process`, inputs in the WPS's ``arc``,
    ``bead_model`` and ``defects``): ``heat_input_kj_mm`` (``eta U I / v``, 0 with the arc off),
    from the WPS's current and voltage or a capture's (`set_process_signals`), the bead model's
    last millimetre welded (``bead_width_mm``, ``bead_reinforcement_mm``, ``bead_penetration_mm``,
    ``bead_leg_mm``, ``bead_model_in_range``, ``defect_<name>`` flags for porosity, undercut,
    lack_of_fusion, burn_through, insufficient_leg) and the bead's (``defect_<name>_mm``,
    ``defect_length_mm``, ``bead_heat_input_kj_mm_mean``, ``bead_leg_mm_min``,
    ``bead_out_of_range_mm``); the per-millimetre profile is ``metrics.bead_profile()``. With a weave
    in the WPS (`skillcell.envs.weld.WeaveCheck`), the last closed weave cycle's
    ``weave_cycle_width_mm``, ``weave_cycle_frequency_hz``, ``weave_cycle_travel_speed_mm_s``,
    ``weave_centre_mm``, ``weave_dwell_s``, ``weave_shape_error``, ``weave_pattern`` and
    ``weave_cycle_in_spec``, and the bead's ``bead_weave_*``; ``in_spec`` then judges the travel
    speed and lateral deviation on the cycle. ``assets/cells/weld_seam/butt_weave.yaml`` (as
    ``cell=``) is a weaved cover pass on the butt joint.

    ## Arguments
    ``gym.make("skillcell/WeldSeam-v0", variant="fillet", cell=None, overrides=None,
    randomize=True, render_mode=None, width=640, height=480, camera="overview",
    render_quality="fast", tier=None)``. ``variant`` picks a packaged joint (``fillet``, ``lap``, ``butt``,
    ``curved``), ``cell`` a user YAML over it, ``overrides`` a mapping over that. Cameras:
    ``overview``, ``seam``, ``tool/closeup``. Rendered frames show the seam and the deposited
    bead (green in spec, red out of spec) as overlay geoms.

    ## Version history
    - v0: first version (fillet, lap, butt and curved fillet variants; WPS from YAML).
    - v0, observation change: ``tcp_lead_rot`` (the commanded orientation) after ``tcp_lead``
      (40 -> 43 entries), and the F/T reading zeroed at reset (tiers' ``ft_tare_readings``).
    """

    config_class = WeldSeamConfig
    task_action_size = 1
    task_action_names = ("arc",)
    kpi_keys = ("in_spec_fraction", "arc_coverage", "bead_travel_speed_mm_s_mean", "bead_travel_speed_mm_s_std",
                "bead_work_angle_deg_std", "bead_travel_angle_deg_std", "bead_ctwd_mm_std")

    #: a capture's measured arc current and voltage (`set_process_signals`): the heat input uses them
    process_signals = ("current_a", "voltage_v")

    cell_dir = assets.path("cells", "weld_seam")

    def __init__(self, variant: str = "fillet", cell: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, randomize: bool = True,
                 render_mode: str | None = None, width: int = 640, height: int = 480,
                 camera: str = "overview", render_quality: str = "fast", tier: str | None = None):
        EzPickle.__init__(self, variant, cell, overrides, randomize, render_mode, width, height, camera,
                          render_quality, tier)
        config = self.load_config(cell, overrides, variant=variant)
        self.variant = variant
        self.wps = load_wps(config.wps, Path(cell) if isinstance(cell, (str, Path)) else None)
        self.path = SeamPath(config.seam)
        self._terminate_on_success = False  # the episode ends at the seam end either way (`_task_done`)
        self.R_task_tcp_nominal = torch_rotation(self.wps.nominal("work_angle_deg"),
                                                 self.wps.nominal("travel_angle_deg"))
        super().__init__(config, render_mode, width, height, camera, render_quality, tier, randomize)

    @classmethod
    def load_config(cls, cell: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                    variant: str = "fillet", **env_kwargs: Any) -> WeldSeamConfig:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        folder = assets.path("cells", "weld_seam")
        layers = [folder / "cell.yaml"] + ([folder / f"{variant}.yaml"] if variant != "fillet" else [])
        return load_cell_config(WeldSeamConfig, layers, cell, overrides)

    @property
    def limits(self) -> dict[str, Any]:
        """``cell.yaml``'s limits and the WPS's acceptance level; its bands are read from the WPS itself
        (`WPSConfig.band`)."""
        return {**super().limits, "min_in_spec_fraction": self.wps.min_in_spec_fraction}

    @property
    def task_length_m(self) -> float:
        """The seam's length: a pass travels all of it."""
        return self.path.length

    def nominal_tool_axis(self, points: np.ndarray) -> np.ndarray:
        """The torch axis at the WPS's nominal work and travel angles in the seam frame at the seam sample
        nearest each point."""
        metrics = self.metrics
        seam = metrics.points_world
        nearest = np.concatenate([np.argmin(((chunk[:, None, :] - seam[None]) ** 2).sum(axis=2), axis=1)
                                  for chunk in np.array_split(np.asarray(points, float), max(1, len(points) // 512))])
        tangent, normal = metrics.tangents_world[nearest], metrics.normal_world
        a = self.R_task_tcp_nominal[:, 2]  # in the seam frame: tangent, left (normal x tangent), normal
        return a[0] * tangent + a[1] * np.cross(normal, tangent) + a[2] * normal

    # ------------------------------------------------------------------ world

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        base_body, mate_body = spec.body("workpiece"), spec.body("workpiece_mate")
        plate = spec.find_default("plate")
        if base_body is None or mate_body is None or plate is None:
            raise ConfigError("scene: WeldSeam needs bodies 'workpiece', 'workpiece_mate' and a class 'plate'")
        self._build_plates(base_body, mate_body, plate)
        pose = self.config.workpiece
        quat = np.empty(4)
        mujoco.mju_euler2Quat(quat, np.radians(pose.euler_deg), "xyz")
        for body in (base_body, mate_body):
            body.pos, body.quat = pose.pos_m, quat
        wire = spec.geom(TOOL_PREFIX + "wire")
        tcp = spec.site(TOOL_PREFIX + self.config.tool.tcp_site)
        if wire is not None and tcp is not None:
            stickout = self.wps.nominal("ctwd_mm") * 1e-3
            wire.size = [wire.size[0], stickout / 2, 0.0]
            wire.pos = [tcp.pos[0], tcp.pos[1], tcp.pos[2] + stickout / 2]

    def _build_plates(self, base_body: mujoco.MjsBody, mate_body: mujoco.MjsBody, plate: mujoco.MjsDefault) -> None:
        """The joint's plates as geoms of class ``plate`` in the base and mate bodies (workpiece frame)."""
        base, mate = plate_boxes(self.config.joint, self.path)
        for body, boxes, name in ((base_body, base, "base"), (mate_body, mate, "mate")):
            for i, (half, pos, quat) in enumerate(boxes):
                body.add_geom(plate, name=f"{name}_plate_{i}", size=half, pos=pos, quat=quat)

    def _setup_task(self) -> None:
        m = self.model
        self.task_site = m.site("workpiece").id
        self._base_mocap = m.body_mocapid[m.body("workpiece").id]
        self._mate_mocap = m.body_mocapid[m.body("workpiece_mate").id]
        self._part_pos_nominal = m.body_pos[m.body("workpiece").id].copy()
        self._part_quat_nominal = m.body_quat[m.body("workpiece").id].copy()
        rnd = self.config.randomization
        self._part_pos_range = np.array(rnd.part_pos_mm) * 1e-3
        self._part_rot_range = np.radians(rnd.part_rot_deg)
        try:
            self.metrics = WeldMetrics(self.path, self.wps, m, self.data, PLATE_GROUP, self.dt, joint=self.config.joint)
        except ConfigError as exc:  # a WPS that this cell's control rate cannot carry out
            raise ConfigError(f"wps ({self.config.wps}): {exc}") from None
        self._arc_on = False
        # What every step reads: views into mjData (its arrays never move) and constants.
        self._tcp_xpos, self._tcp_xmat = self.data.site_xpos[self.tcp_site], self.data.site_xmat[self.tcp_site]
        self._tcp_xmat_3x3 = self._tcp_xmat.reshape(3, 3)
        self._quat_nominal = kernels.quat_of(np.ascontiguousarray(self.R_task_tcp_nominal))
        self._obs_frame_rows: list[float] | None = None
        self._end_mm = self.path.length * 1e3 - self.config.task.end_tolerance_mm
        self._leave_distance_mm = self.config.task.leave_distance_mm
        self._stop_at_end = self.config.task.terminate_at_seam_end
        self._band_centres = []  # (key, middle, half width) of each WPS band
        # weaving, the travel speed and the lateral deviation are judged per weave cycle (`WeaveCheck`)
        cycle_keys = {"travel_speed_mm_s": "weave_cycle_travel_speed_mm_s", "lateral_deviation_mm": "weave_centre_mm"}
        for key in METRIC_KEYS:
            low, high = self.wps.band(key)
            judged = cycle_keys.get(key, key) if self.wps.weave is not None else key
            self._band_centres.append((judged, (low + high) / 2, (high - low) / 2))

        plates = [g for g in range(m.ngeom) if int(m.geom_group[g]) == PLATE_GROUP]
        torch = [g for g in range(m.ngeom) if m.geom(g).name.startswith(TOOL_PREFIX + "nozzle")]
        self._clearance_pairs = [(a, b) for a in torch for b in plates]

    def set_process_signals(self, values: dict[str, float]) -> None:
        """The arc's measured ``current_a`` and ``voltage_v`` (either may be left out: the WPS's) for the steps
        that follow; `reset` returns to the WPS's."""
        super().set_process_signals(values)
        arc = self.wps.arc
        self.metrics.set_electrics(values.get("current_a", arc.current_a), values.get("voltage_v", arc.voltage_v))

    def tool_clearance(self, max_distance: float = 0.05) -> float:
        """Torch-to-part clearance (m): the smallest distance from the gas nozzle to any plate.

        What the safety envelope's ``min_tool_clearance_mm`` checks; capped at ``max_distance``
        (beyond it the exact value does not matter and the distance query is skipped).
        """
        fromto = np.empty(6)
        return min((mujoco.mj_geomDistance(self.model, self.data, a, b, max_distance, fromto)
                    for a, b in self._clearance_pairs), default=max_distance)

    def _part_pose(self) -> tuple[np.ndarray, np.ndarray]:
        R = np.empty(9)
        mujoco.mju_quat2Mat(R, self.data.mocap_quat[self._base_mocap])
        return self.data.mocap_pos[self._base_mocap].copy(), R.reshape(3, 3)

    def _reset_task_nominal(self) -> None:
        d = self.data
        for mocap in (self._base_mocap, self._mate_mocap):
            d.mocap_pos[mocap] = self._part_pos_nominal
            d.mocap_quat[mocap] = self._part_quat_nominal
        self.metrics.reset(*self._part_pose())

    def _reset_task(self, rng: np.random.Generator) -> None:
        d = self.data
        self._reset_task_nominal()
        if self.randomize:
            pos, quat = self._draw_pose(rng, self._part_pos_nominal, self._part_quat_nominal, self._part_pos_range,
                                        self._part_rot_range)
            gap = rng.uniform(0.0, 1.0) * self.config.randomization.gap_mm * 1e-3
            for mocap in (self._base_mocap, self._mate_mocap):
                d.mocap_pos[mocap] = pos
                d.mocap_quat[mocap] = quat
            R = np.empty(9)
            mujoco.mju_quat2Mat(R, quat)
            R = R.reshape(3, 3)
            # Fit-up gap: the mate moves away from the root (up for a web or a lapped plate,
            # sideways for the other half of a butt joint).
            away = R[:, 1] if self.config.joint.type == "butt" else R[:, 2]
            d.mocap_pos[self._mate_mocap] += gap * away
        self._arc_on = False

    def _nominal_start_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The torch at the nominal angles over the seam start, backed off ``approach_mm``."""
        p_seam, R_world_seam = self.metrics.frame(0.0)
        R_world_tcp = R_world_seam @ self.R_task_tcp_nominal
        axis = R_world_tcp[:, 2]
        back_off = self.metrics.ctwd_nominal + self.config.task.approach_mm * 1e-3
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, R_world_tcp.ravel())
        return p_seam - axis * back_off, quat

    # ------------------------------------------------------------------ task

    def _apply_task_action(self, action: np.ndarray) -> None:
        self._arc_on = bool(action[6] > 0.0)

    def tcp_pose_task(self) -> tuple[np.ndarray, np.ndarray]:
        """``(p_seam_aim, R_seam_tcp)``: the aim point and the torch in the seam frame at the aim."""
        # `_evaluate` measured this step already: its aim point, and its seam frame there.
        R_seam_tcp = np.empty((3, 3))
        mujoco.mju_mulMatTMat(R_seam_tcp, self.metrics.R_world_seam, self._tcp_xmat_3x3)
        return np.array(self.metrics.aim_seam), R_seam_tcp

    def _tcp_obs(self, out: np.ndarray) -> None:
        # On floats: the torch's quaternion relative to the nominal torch in the seam frame there,
        # conj(q_seam q_nominal) q_tcp, its conjugated reference computed once per seam frame.
        metrics = self.metrics
        if metrics.R_world_seam_rows is not self._obs_frame_rows:
            self._obs_frame_rows = metrics.R_world_seam_rows
            w, x, y, z = mul_quat(metrics.seam_quat(), self._quat_nominal)
            self._obs_reference = w, -x, -y, -z
        rx, ry, rz = kernels.relative_rotvec(*self._obs_reference, self._tcp_xmat)
        _PACK6(out, 0, *metrics.aim_seam, rx, ry, rz)

    def _task_obs_fields(self) -> list[ObsField]:
        return [ObsField("seam_ahead", 6, 1 / 0.03, "m"), ObsField("seam_rot", 3, 1.0, "rad"),
                ObsField("progress", 1, 1.0, "-"), ObsField("arc_on", 1, 1.0, "-"),
                ObsField("speed", 1, 1 / 0.01, "m/s"), ObsField("ctwd_error", 1, 1 / 0.005, "m")]

    def _task_obs(self, out: np.ndarray) -> None:
        metrics, last = self.metrics, self._last
        ctwd = last.get("ctwd_mm", math.inf) * 1e-3
        _PACK13(out, 0, *metrics.seam_ahead(LOOKAHEAD_M), *metrics.seam_rotvec(), metrics.s / self.path.length,
                float(self._arc_on), last.get("travel_speed_mm_s", 0.0) * 1e-3,
                clip_float(ctwd - metrics.ctwd_nominal, -0.05, 0.05))

    def _episode_start(self) -> None:
        self.metrics.reset(*self._part_pose())
        self._last: dict[str, Any] = {}
        self._welded_in_spec = 0
        self._engaged = False  # leaving the seam ends the episode once the arc has been struck
        self._verdict: bool | None = None  # success as judged where the aim first reached the seam end

    def _evaluate(self) -> dict[str, Any]:
        metrics = self.metrics
        step = self._last = metrics.measure(self._tcp_xpos, self._tcp_xmat, self._arc_on)
        aim_offset_mm = math.hypot(step["lateral_deviation_mm"], step["vertical_deviation_mm"])
        reached_end = step["seam_position_mm"] >= self._end_mm
        self._engaged |= self._arc_on
        left = self._engaged and aim_offset_mm > self._leave_distance_mm
        metrics.add_bead_summary(step)
        self._judged_now = self._verdict is None and reached_end
        if self._judged_now:
            self._verdict = step["in_spec_fraction"] >= self.wps.min_in_spec_fraction
        success = bool(self._verdict)
        if self._stop_at_end:
            self._done = reached_end or left
        else:  # running on past the seam end, the torch backs away from it: the pass finished, not left
            self._done = left and self._verdict is None
        # Into the step's own dict (a new one every step), not a merged copy.
        step["arc_on"], step["seam_end_reached"], step["left_seam"] = self._arc_on, reached_end, left
        step["aim_offset_mm"], step["is_success"], step["physics_invalid"] = aim_offset_mm, success, False
        return step

    def _reward(self, metrics: dict[str, Any], action: np.ndarray) -> tuple[float, dict[str, float]]:
        w = self.config.reward
        welded_in_spec = self.metrics.in_spec_count
        newly = welded_in_spec - self._welded_in_spec
        self._welded_in_spec = welded_in_spec
        excess = 0.0
        if metrics["arc_on"] and not metrics["in_spec"]:  # in spec, every band's excess is zero
            for key, middle, half in self._band_centres:
                value = metrics[key]
                if not math.isfinite(value):
                    excess += 1.0
                    continue
                excess += min(1.0, max(0.0, abs(value - middle) - half) / half)
            excess /= len(METRIC_KEYS)
        terms = {
            "reward_weld": w.weld * newly / len(self.path.s),
            "reward_track": w.track * (1.0 - math.tanh(metrics["aim_offset_mm"] / 5.0)),
            "reward_quality": -w.quality * excess,
            "reward_success": w.success * float(metrics["is_success"] and self._judged_now),  # paid once
        }
        return float(sum(terms.values())), terms

    def _task_done(self) -> bool:
        return self._done  # the seam end reached or the seam left, as `_evaluate` judged

    # ------------------------------------------------------------------ rendering

    def bead_surface(self, profile: dict[str, np.ndarray] | None = None) -> BeadSurface:
        """Where the bead of the bead model (``metrics.bead_profile()``, or ``profile``) lies in the world,
        per seam sample: what `add_overlays` draws, and where the review marks its defects.

        A fillet's (and a lap's) bead is the fillet in the root corner on the torch side (``-y``, away
        from the mate): its face runs from toe to toe across the corner, ``leg`` from the root on each
        plate; a butt joint's bead is a cap on the plates centred on the root line.
        """
        metrics = self.metrics
        profile = metrics.bead_profile() if profile is None else profile
        root, n = metrics.points_world, metrics.normal_world
        left = np.cross(n, metrics.tangents_world)  # towards the mate
        width = profile["width_mm"] * 1e-3
        if self.config.joint.type in FILLET_JOINTS:
            outward, across = (n - left) / math.sqrt(2.0), (n + left) / math.sqrt(2.0)
            centre = root + 0.5 * (profile["leg_mm"] * 1e-3)[:, None] * (n - left)
            crown = FILLET_CROWN * 0.5 * width
        else:
            outward, across = np.broadcast_to(n, root.shape).copy(), left
            centre, crown = root.copy(), profile["reinforcement_mm"] * 1e-3
        return BeadSurface(centre, outward, across, 0.5 * width, crown)

    def add_overlays(self, scene: mujoco.MjvScene) -> None:
        """The seam (thin, grey) and the bead where the arc was on (green in spec, red out), as wide and
        as high as the bead model has it (`bead_surface`)."""
        metrics = self.metrics
        points = metrics.points_world
        bead = self.bead_surface()
        tangents = metrics.tangents_world
        stride = 4
        for i in range(0, len(points) - stride, stride):
            j = i + stride
            if metrics.welded[i] and metrics.welded[j - 1]:
                color = (0.15, 0.85, 0.25, 1.0) if metrics.in_spec[i] else (0.95, 0.15, 0.1, 1.0)
                # One ellipsoid per segment, 1.5 segments long each way: they overlap like ripples, the
                # bead's width dips by 6 % between their centres (it ends 4 mm past the welded length).
                k = (i + j) // 2
                semi_axes = [1.5 * float(np.linalg.norm(points[j] - points[i])),
                             float(bead.half_width_m[i:j + 1].mean()),
                             max(float(bead.crown_m[i:j + 1].mean()), 2e-4)]  # a flat bead still shows
                frame = np.column_stack([tangents[k], bead.across[k], bead.outward[k]])
                _add_ellipsoid(scene, bead.centre[i:j + 1].mean(axis=0), frame, semi_axes, color)
            elif i % (stride * 3) == 0:
                lift = metrics.normal_world * 0.0005
                _add_capsule(scene, points[i] + lift, points[min(j + 2 * stride, len(points) - 1)] + lift,
                             0.0006, (0.95, 0.95, 0.95, 0.8))


#: the crown drawn on a fillet's face, over its half width: the model's fillet is flat-faced (its throat
#: is its reinforcement), and a flat disc between the plates' faces would flicker against them
FILLET_CROWN = 0.25


@dataclass(frozen=True)
class BeadSurface:
    """The drawn bead per seam sample, in the world (m): the middle of its face, the face's outward
    normal, the direction across it (from the base plate's toe towards the other), the half width
    and the crown (the height of the face above its chord)."""

    centre: np.ndarray
    outward: np.ndarray
    across: np.ndarray
    half_width_m: np.ndarray
    crown_m: np.ndarray

    def top(self) -> np.ndarray:
        """The highest point of the face per sample: where marks above the bead start."""
        return self.centre + self.outward * np.asarray(self.crown_m).reshape(-1, 1)


def _add_capsule(scene: mujoco.MjvScene, a: np.ndarray, b: np.ndarray, radius: float, rgba) -> None:
    if scene.ngeom >= scene.maxgeom:
        return
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), np.zeros(9),
                        np.asarray(rgba, np.float32))
    mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, radius, a, b)
    scene.ngeom += 1


def _add_ellipsoid(scene: mujoco.MjvScene, centre: np.ndarray, frame: np.ndarray, semi_axes, rgba) -> None:
    """An ellipsoid with its axes along the columns of ``frame``."""
    if scene.ngeom >= scene.maxgeom:
        return
    mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_ELLIPSOID, np.asarray(semi_axes, float),
                        np.asarray(centre, float), frame.ravel(), np.asarray(rgba, np.float32))
    scene.ngeom += 1
