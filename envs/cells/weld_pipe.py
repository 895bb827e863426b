"""WeldPipe: a circumferential fillet weld of a pipe standing on a plate (``skillcell/WeldPipe-v0``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from skillcell import assets
from skillcell.config import ConfigError, bounds
from skillcell.envs.cell import ROBOT_PREFIX, load_cell_config
from skillcell.envs.cells.weld_seam import WeldSeamConfig, WeldSeamEnv
from skillcell.envs.control import index_of
from skillcell.envs.weld import SeamConfig, SegmentConfig, plate_boxes

__all__ = ["PIPE_CAMERAS", "VARIANTS", "PipeConfig", "WeldPipeConfig", "WeldPipeEnv", "wrist_flip"]

#: registered variants (one today: the pipe on a plate)
VARIANTS = ("pipe",)
#: the review cameras the cell adds, ``name -> (position from the pipe's foot in the cell frame (m), fovy)``;
#: each looks at the pipe (``targetbody``)
PIPE_CAMERAS = {"pipe": ((0.32, -0.10, 0.30), 35.0), "pipe_left": ((0.34, 0.30, 0.22), 35.0)}
#: the arm's joints as the Menagerie UR5e names them: the two whose anchors bound the reach, the wrist-2
#: joint whose crossings of 0 or 180 deg are wrist flips, the wrist-3 joint that winds with the pass
SHOULDER, WRIST_1, WRIST_2, WRIST_3 = "shoulder_lift_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"


@dataclass(frozen=True)
class PipeConfig:
    """The pipe (millimetres, degrees); its length above the plate is ``joint.mate_size_mm``.

    The seam is the circle at the pipe's foot, travelled counter-clockwise seen from above (the pipe
    on the left of travel, as the mate of every weld cell), from ``start_angle_deg`` once round and
    ``overlap_mm`` on over the start: the tie-in.
    """

    outer_diameter_mm: float = field(default=60.3, metadata=bounds(20.0, 400.0))
    wall_thickness_mm: float = field(default=3.91, metadata=bounds(0.5, 50.0))
    start_angle_deg: float = field(default=-90.0, metadata=bounds(-180.0, 180.0))
    overlap_mm: float = field(default=10.0, metadata=bounds(0.0, 50.0))

    def __post_init__(self) -> None:
        if self.wall_thickness_mm >= self.outer_diameter_mm / 2:
            raise ConfigError(f"wall_thickness_mm: must be below the radius {self.outer_diameter_mm / 2}, "
                              f"got {self.wall_thickness_mm}")
        if self.overlap_mm >= math.pi * self.outer_diameter_mm:
            raise ConfigError(f"overlap_mm: must be below the circumference {math.pi * self.outer_diameter_mm:.1f}")

    @property
    def radius_mm(self) -> float:
        return self.outer_diameter_mm / 2

    def seam(self) -> SeamConfig:
        """The seam: a full circle about the pipe axis (the workpiece origin), then the overlap."""
        r, a = self.radius_mm, math.radians(self.start_angle_deg)
        segments = [SegmentConfig("arc", center_mm=(0.0, 0.0), angle_deg=360.0)]
        if self.overlap_mm > 0:
            segments.append(SegmentConfig("arc", center_mm=(0.0, 0.0), angle_deg=math.degrees(self.overlap_mm / r)))
        return SeamConfig(start_mm=(r * math.cos(a), r * math.sin(a)), segments=tuple(segments))


@dataclass(frozen=True)
class WeldPipeConfig(WeldSeamConfig):
    #: derived from ``pipe`` (`PipeConfig.seam`): the YAML leaves it unset
    seam: SeamConfig | None = None
    pipe: PipeConfig = PipeConfig()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.joint.type != "fillet":
            raise ConfigError(f"joint.type: a pipe on a plate is a fillet joint, got {self.joint.type!r}")
        derived = self.pipe.seam()
        if self.seam is not None and self.seam != derived:  # (`dataclasses.replace` passes the derived one)
            raise ConfigError("seam: the pipe cell's seam is the circle at the pipe's foot; set pipe.* "
                              "(outer_diameter_mm, start_angle_deg, overlap_mm) instead")
        object.__setattr__(self, "seam", derived)


def wrist_flip(previous: float | None, angle: float) -> bool:
    """Whether the wrist-2 angle went from ``previous`` to ``angle`` (rad) through a wrist singularity:
    ``sin`` changed sign (through 0 or 180 deg, where the wrist-1 and wrist-3 axes line up)."""
    return previous is not None and (math.sin(previous) < 0.0) != (math.sin(angle) < 0.0)


class WeldPipeEnv(WeldSeamEnv):
    """Weld a pipe onto a plate all the way round with a torch on a UR5e, in spec with a WPS.

    ## Description
    A DN50 pipe (outer diameter 60.3 mm, ``pipe`` section) stands on a 10 mm plate; the seam is
    the fillet at its foot, welded once round counter-clockwise seen from above and 10 mm on past
    the start (the tie-in), 199 mm in all. The pipe is a cylinder that collides (geom class
    ``plate``: the CTWD ray cast and the torch clearance see it). Everything else is `WeldSeamEnv`'s
    (the shared ``weld_seam/cell.yaml`` under ``weld_pipe/cell.yaml``; the fillet WPS): the torch
    metrics, the bead, rewards, tiers and gate criteria, and the scripted welder; the envelope is
    the weld cells' about the pipe (``weld_pipe/envelope.yaml``).

    **Going round.** The torch follows the seam frame (its x axis the travel direction), so over
    the pass the tool turns 375 deg about the vertical, and nearly all of it is wrist 3's: the
    other joints swing and come back, and a full turn of the tool that they do not make is one of
    wrist 3. The UR5e's +-360 deg wrist 3 allows it from a start near +180 deg, so the seam starts
    behind the pipe seen from the robot (``pipe.start_angle_deg`` 20), where the start-pose IK from
    the Menagerie ``home`` keyframe puts wrist 3 at 164 deg; the pass ends at -204 (156 deg from the
    limit, 151 from the envelope's). The torch is round, so its roll is free in principle: holding
    the roll instead, the torch counter-rotating about its own axis, would keep wrist 3 within a
    half turn, but the observation, the WPS metrics' nominal torch and the shared scripted welder all
    work in the seam frame, and a hose pack on a +-360 deg wrist takes one turn. The roll moves no
    other joint (wrist 3 is the torch axis), so it cannot help the reach. Wrist 2 stays between
    -137 and -43 deg: no wrist flip.

    **Where the pipe stands.** A straight torch at the WPS's 45 deg work angle puts the flange 0.23 m
    out from the pipe axis, so the wrist circles the pipe on a 0.6 m wide ring: behind the pipe the
    arm stretches, in front of it the elbow folds. The pipe stands 0.48 m out and its plate 0.1 m
    above the table on a stand (``workpiece.pos_m``): behind it the elbow stretches to 20 mm short
    of straight (``reach_margin_mm``, D2), in front of it the elbow folds to 160 deg, where from
    about 163 deg the wrist-2 link meets the upper arm (at 0.53 m on the table it does). The arm's
    figures of every step are in ``info`` (below).

    ## Action space
    ``Box(-1, 1, (7,), float32)``: the delta of the commanded tool pose in the cell frame per
    control step (20 Hz), then the arc, as `WeldSeamEnv`.

    | index | meaning             | scale at 1.0                          |
    |-------|---------------------|---------------------------------------|
    | 0-2   | TCP translation xyz | ``control.max_translation_mm`` (5 mm) |
    | 3-5   | TCP rotation vector | ``control.max_rotation_deg`` (3 deg)  |
    | 6     | arc                 | on while positive                     |

    ## Observation space
    ``Box(-inf, inf, (43,), float32)``, `WeldSeamEnv`'s blocks; the seam frame at the aim point
    turns once round (and on over the tie-in) during the pass.

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
    `WeldSeamEnv`'s: ``weld``, ``track``, ``quality``, ``success``, each in ``info["reward_<term>"]``.

    ## Randomizations
    As the weld cells (``weld_seam/cell.yaml`` and ``tiers.yaml``): the workpiece pose (+-3 mm,
    +-1 deg roll and pitch, +-2 deg yaw about the pipe axis), the fit-up gap (the pipe lifted by
    0 to 0.5 mm) and the torch start position (+-5 mm); ``D0`` nominal, ``D1`` the above (default),
    ``D2`` twice the ranges, friction and mass variation, F/T and observation noise and 1-2 control
    periods of action latency. ``randomize=False`` turns the cell's own draws off.

    ## Success and episode end
    As `WeldSeamEnv`: the aim point reaches the seam end (past the tie-in) with at least the WPS's
    ``min_in_spec_fraction`` (0.9) of the seam length welded in spec; the episode ends there, or when
    the aim leaves the seam by more than ``task.leave_distance_mm`` once the arc was struck.
    ``gym.make`` truncates at 1000 steps (50 s; a pass takes about 27 s).

    ## Info
    `WeldSeamEnv`'s keys (the torch metrics, the bead so far, ``is_success``, ``physics_invalid``,
    ``instability``, reward terms) and the arm's, every step:

    | key                              | unit | meaning                                                |
    |----------------------------------|------|--------------------------------------------------------|
    | ``joint_limit_margin_deg``       | deg  | smallest distance of any arm joint to its range's end  |
    | ``min_joint_limit_margin_deg``   | deg  | its smallest value this episode                        |
    | ``reach_margin_mm``              | mm   | the elbow short of straight (below)                    |
    | ``min_reach_margin_mm``          | mm   | its smallest value this episode                        |
    | ``tcp_target_reach_m``           | m    | the commanded TCP's distance from the shoulder         |
    | ``wrist_2_deg``, ``wrist_3_deg`` | deg  | the wrist-2 and wrist-3 angles (wrist 3 winds)         |
    | ``wrist_singularity_margin_deg`` | deg  | wrist 2 from 0 or 180 deg, the nearer                  |
    | ``wrist_flips``                  | -    | wrist-2 crossings of 0 or 180 deg (`wrist_flip`)       |

    Joint ranges are the model's (the Menagerie UR5e: +-360 deg, the elbow +-180). The reach margin
    is the upper arm's and the forearm's lengths in the arm's plane (the plane normal to the
    parallel shoulder, elbow and wrist-1 axes) minus the shoulder-to-wrist-1 distance in it: zero
    with the elbow straight, the workspace's outer limit. At wrist 2 at 0 or 180 deg the wrist-1
    and wrist-3 axes line up (the UR's wrist singularity), and passing through it flips the wrist.

    KPIs (``kpi_keys``): the weld cells', ``min_joint_limit_margin_deg``, ``min_reach_margin_mm``
    and ``wrist_flips``.

    ## Arguments
    ``gym.make("skillcell/WeldPipe-v0", variant="pipe", cell=None, overrides=None, randomize=True,
    render_mode=None, width=640, height=480, camera="overview", render_quality="fast", tier=None)``;
    ``cell`` a user YAML over the packaged one, ``overrides`` a mapping over that. Cameras:
    ``overview``, ``seam``, ``pipe`` (from beyond the pipe, a little right, above: out of the arm's
    way all round; the review's), ``pipe_left`` (beyond it on the left), ``tool/closeup``.

    ## Version history
    - v0: first version (DN50 pipe on a plate, 10 mm tie-in, the fillet WPS).
    """

    config_class = WeldPipeConfig
    kpi_keys = (*WeldSeamEnv.kpi_keys, "min_joint_limit_margin_deg", "min_reach_margin_mm", "wrist_flips")
    cell_dir = assets.path("cells", "weld_pipe")

    def __init__(self, variant: str = "pipe", cell: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, randomize: bool = True,
                 render_mode: str | None = None, width: int = 640, height: int = 480,
                 camera: str = "overview", render_quality: str = "fast", tier: str | None = None):
        super().__init__(variant, cell, overrides, randomize, render_mode, width, height, camera, render_quality,
                         tier)

    @classmethod
    def load_config(cls, cell: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                    variant: str = "pipe", **env_kwargs: Any) -> WeldPipeConfig:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        layers = [WeldSeamEnv.cell_dir / "cell.yaml", cls.cell_dir / "cell.yaml"]
        return load_cell_config(WeldPipeConfig, layers, cell, overrides)

    # ------------------------------------------------------------------ world

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        super()._build_task(spec)
        foot = np.array(self.config.workpiece.pos_m)
        # The stand that lifts the plate off the table (drawn only: the plate is a mocap body, the stand
        # only shows what holds it).
        table, furniture = spec.geom("table"), spec.find_default("furniture")
        if table is not None and furniture is not None:
            ((half, pos, _),), _ = plate_boxes(self.config.joint, self.path)
            top, bottom = table.pos[2] + table.size[2], foot[2] + pos[2] - half[2]
            if bottom > top:
                spec.worldbody.add_geom(furniture, name="stand", type=mujoco.mjtGeom.mjGEOM_BOX,
                                        size=[half[0] - 0.01, half[1] - 0.01, (bottom - top) / 2],
                                        pos=[foot[0] + pos[0], foot[1] + pos[1], (bottom + top) / 2])
        for name, (offset, fovy) in PIPE_CAMERAS.items():
            spec.worldbody.add_camera(name=name, pos=foot + offset, mode=mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODY,
                                      targetbody="workpiece_mate", fovy=fovy)

    def _build_plates(self, base_body: mujoco.MjsBody, mate_body: mujoco.MjsBody, plate: mujoco.MjsDefault) -> None:
        """The base plate (the weld cells' box around the seam) and the pipe: a cylinder of class
        ``plate`` standing on it (lifted by the nominal gap), its bore drawn on top (visual only)."""
        joint, pipe = self.config.joint, self.config.pipe
        ((half, pos, quat),), _ = plate_boxes(joint, self.path)
        base_body.add_geom(plate, name="base_plate_0", size=half, pos=pos, quat=quat)
        r, height, gap = pipe.radius_mm * 1e-3, joint.mate_size_mm * 1e-3, joint.gap_mm * 1e-3
        mate_body.add_geom(plate, name="pipe", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[r, height / 2, 0.0],
                           pos=[0.0, 0.0, gap + height / 2])
        bore = r - pipe.wall_thickness_mm * 1e-3
        mate_body.add_geom(name="pipe_bore", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[bore, 0.0005, 0.0],
                           pos=[0.0, 0.0, gap + height], contype=0, conaffinity=0, group=0, mass=0.0,
                           rgba=[0.08, 0.08, 0.09, 1.0])

    def _setup_task(self) -> None:
        super()._setup_task()
        m = self.model
        arm_joints = m.dof_jntid[self.arm_dof_adr]
        self._joint_low, self._joint_high = (np.degrees(bound).tolist() for bound in m.jnt_range[arm_joints].T)
        names = [m.joint(j).name.removeprefix(ROBOT_PREFIX) for j in arm_joints]
        missing = [n for n in (SHOULDER, WRIST_1, WRIST_2, WRIST_3) if n not in names]
        if missing:
            raise ConfigError(f"robot: WeldPipe reports the reach and wrist flips of a UR arm; no joints {missing}")
        self._wrist_2, self._wrist_3 = names.index(WRIST_2), names.index(WRIST_3)
        self._shoulder_joint, self._wrist_1_joint = (int(arm_joints[names.index(n)]) for n in (SHOULDER, WRIST_1))
        # The arm's reach: the shoulder-to-wrist-1 distance in the plane of the parallel shoulder,
        # elbow and wrist-1 axes, at most the two links' lengths in that plane (the elbow straight).
        scratch = mujoco.MjData(m)
        mujoco.mj_kinematics(m, scratch)
        elbow = int(arm_joints[names.index(WRIST_1) - 1])
        self._max_reach = sum(self._in_plane(scratch.xanchor[a], scratch.xaxis[a], scratch.xanchor[b])
                              for a, b in ((self._shoulder_joint, elbow), (elbow, self._wrist_1_joint)))
        # What every step reads, as views into mjData (its arrays never move; a property read makes a new one).
        d = self.data
        self._shoulder_anchor, self._shoulder_axis = d.xanchor[self._shoulder_joint], d.xaxis[self._shoulder_joint]
        self._wrist_1_anchor = d.xanchor[self._wrist_1_joint]
        arm = index_of(self.arm_qpos_adr)
        self._arm_qpos = d.qpos[arm] if isinstance(arm, slice) else None

    @staticmethod
    def _in_plane(anchor_a: np.ndarray, axis_a: np.ndarray, anchor_b: np.ndarray) -> float:
        """Distance between the anchors of joints ``a`` and ``b`` normal to joint ``a``'s axis (m)."""
        # On floats, in numpy's order of operations (np.linalg.norm's bits): a step's hot path.
        (ax, ay, az), (bx, by, bz) = anchor_a.tolist(), anchor_b.tolist()
        ux, uy, uz = axis_a.tolist()
        dx, dy, dz = bx - ax, by - ay, bz - az
        along = dx * ux + dy * uy + dz * uz
        ex, ey, ez = dx - along * ux, dy - along * uy, dz - along * uz
        return math.sqrt(ex * ex + ey * ey + ez * ez)

    # ------------------------------------------------------------------ task

    def _episode_start(self) -> None:
        super()._episode_start()
        self._wrist_2_previous: float | None = None
        self._flips = 0
        self._min_margin = self._min_reach = math.inf

    def _evaluate(self) -> dict[str, Any]:
        step = super()._evaluate()
        q = (self.data.qpos[self.arm_qpos_adr] if self._arm_qpos is None else self._arm_qpos).tolist()
        margin = None
        for v, lo, hi in zip(q, self._joint_low, self._joint_high, strict=True):  # min(min(...)), unrolled
            deg = math.degrees(v)
            below, above = deg - lo, hi - deg
            nearest = above if above < below else below
            if margin is None or nearest < margin:
                margin = nearest
        wrist_2 = q[self._wrist_2]
        self._flips += wrist_flip(self._wrist_2_previous, wrist_2)
        self._wrist_2_previous = wrist_2
        in_plane = self._in_plane(self._shoulder_anchor, self._shoulder_axis, self._wrist_1_anchor)
        reach = (self._max_reach - in_plane) * 1e3
        self._min_margin, self._min_reach = min(self._min_margin, margin), min(self._min_reach, reach)
        off_singular = math.degrees(abs(wrist_2)) % 180.0
        step["joint_limit_margin_deg"], step["min_joint_limit_margin_deg"] = margin, self._min_margin
        step["reach_margin_mm"], step["min_reach_margin_mm"] = reach, self._min_reach
        (cx, cy, cz), (sx, sy, sz) = self.controller.p_world_cmd.tolist(), self._shoulder_anchor.tolist()
        cx, cy, cz = cx - sx, cy - sy, cz - sz
        step["tcp_target_reach_m"] = math.sqrt(cx * cx + cy * cy + cz * cz)
        step["wrist_2_deg"], step["wrist_3_deg"] = math.degrees(wrist_2), math.degrees(q[self._wrist_3])
        step["wrist_singularity_margin_deg"] = min(off_singular, 180.0 - off_singular)
        step["wrist_flips"] = self._flips
        return step
