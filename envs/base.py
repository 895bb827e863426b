"""`CellEnv`: the Gymnasium env every skillcell cell derives from.

The base class owns what all cells share: composing the cell (`skillcell.envs.cell`), Cartesian
control of the tool by differential IK (`skillcell.envs.control`), the F/T reading, observation
scaling, action validation, instability detection, seeding, the start-pose randomization and
headless rendering. A cell adds its task through the hooks listed in `CellEnv`'s docstring (the one
place that says what a subclass must and may override, and when each hook runs), its config
(`CellEnv.load_config`) and its named limits (`CellEnv.limits`, `skillcell.envs.limits`); one
`register_cell` line (`skillcell.envs.registry`) tells the rest of skillcell about it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from skillcell.config import to_mapping
from skillcell.envs import kernels
from skillcell.envs.cell import ROBOT_PREFIX, TOOL_PREFIX, CellConfig, compose_cell
from skillcell.envs.control import CartesianController, rotate_transposed
from skillcell.envs.impedance import ImpedanceController
from skillcell.envs.tiers import TierRuntime, resolve_tier

__all__ = ["CellEnv", "ObsField", "RenderUnavailableError"]

#: the command lead that observes as 1.0 (the packaged cells' ``control.max_lead_mm`` / ``_deg``)
LEAD_OBS_SCALE_M = 0.010
LEAD_OBS_SCALE_RAD = math.radians(6.0)

_GL_HELP = (
    "MuJoCo could not open an OpenGL context for offscreen rendering (MUJOCO_GL={backend!r}). "
    "Headless machines need MUJOCO_GL=egl with Debian's libegl1, libegl-mesa0 and libgl1-mesa-dri "
    "(or MUJOCO_GL=osmesa with libosmesa6). Original error: {error}"
)


class RenderUnavailableError(RuntimeError):
    """No OpenGL backend could be opened for rendering."""


@dataclass(frozen=True)
class ObsField:
    """One named block of the observation vector: ``obs[slice] = value * scale``."""

    name: str
    size: int
    scale: float
    unit: str


class CellEnv(gym.Env):
    """Base class of the skillcell cells; see a cell's docstring for its spaces, reward and success.

    The first six action channels are always the normalized Cartesian delta of the tool pose in the
    cell frame (see `CartesianController`); cells may append task channels (`task_action_size`).

    ## The public contract
    What code outside ``skillcell.envs`` may use (``tests/test_contract.py`` checks that nothing
    there touches an underscore name of a cell): the Gymnasium API (`reset`, `step`, `render`,
    `close`); `get_state` and `set_state` (start an episode at a stored state: ``(obs, info)``, as
    `reset` returns); `replay_step` (a step whose physics comes from a recording); `decode_obs`,
    `obs_fields`, `obs_slices`, `action_names`; `tcp_pose_task`, `wrench_tool`, ``controller``;
    `add_overlays`, `renderer`, `camera_names`; `limits`, `task_length_m`, ``tier``,
    `tier_sample`, `dt`, `cell_file`, `load_config`; ``config``, ``model``, ``data`` and the
    model's ids (``tcp_site``, ``ft_site``, ``task_site``, ``tool_body``, ``arm_qpos_adr``,
    ``arm_dof_adr``, ``arm_actuators``). ``mj_spec`` is the `mujoco.MjSpec` the model was compiled
    from, as built (a tier's per-episode model edits are not in it); ``mj_spec.to_xml()`` is the
    model's MJCF. It is not called ``spec``: Gymnasium's `Env.spec` is the env's registration
    (`gymnasium.envs.registration.EnvSpec`), which ``gym.make`` sets and wrappers read.

    ## What a cell declares and overrides
    Class attributes: `config_class`, `task_action_size` and `task_action_names`, `kpi_keys`,
    `process_signals` (with `set_process_signals`), `R_task_tcp_nominal`, `cell_dir`. Its
    ``__init__`` loads its config (`load_config`) and calls
    ``CellEnv.__init__(config, ..., tier=tier, randomize=randomize)`` last; the hooks then run in
    the order of this table (*must*: the base has no implementation).

    | hook                        |      | runs                               | may touch                           |
    |-----------------------------|------|------------------------------------|-------------------------------------|
    | `load_config` (classmethod) | must | the cell's ``__init__``; scorers   | nothing: returns the config         |
    | `_build_task(spec)`         | may  | init: tier applied, cell composed  | the `MjSpec`: geoms, bodies, sites  |
    | `_setup_task()`             | must | init: compiled, robot found        | its attributes; sets ``task_site``  |
    | `_reset_task_nominal()`     | may  | init (start pose); `_reset_task`   | ``data`` (mocap), its task state    |
    | `_nominal_start_pose()`     | must | init, after `_reset_task_nominal`  | nothing: returns ``(p, quat)``      |
    | `_task_obs_fields()`        | may  | init, after the tool payload       | nothing: returns its fields         |
    | `_reset_task(rng)`          | may  | reset, first                       | ``data`` (mocap), its task state    |
    | `_sample_start_offset(rng)` | may  | reset, after `_reset_task`         | nothing: returns metres             |
    | `_state_restored()`         | may  | `set_state`, `replay_step`         | the model, from ``data.userdata``   |
    | `_episode_start()`          | may  | reset, `set_state`: F/T zeroed     | its episode statistics              |
    | `_apply_task_action(a)`     | may  | step: arm commanded, pre-physics   | its task state (``a[6:]``)          |
    | `_evaluate()`               | must | reset, `set_state`, step: F/T read | its statistics; a new metrics dict  |
    | `_reward(metrics, a)`       | must | step, after `_evaluate`            | its statistics; ``(reward, terms)`` |
    | `_task_done()`              | may  | step, after `_reward`              | nothing: True ends the episode      |
    | `_task_obs(out)`            | may  | every observation                  | ``out`` (unscaled task blocks)      |
    | `tcp_pose_task()`           | may  | `_tcp_obs`; callers                | nothing: returns the pose           |
    | `_tcp_obs(out)`             | may  | every observation                  | ``out`` (tcp_pos_task, tcp_rot_task) |
    | `add_overlays(scene)`       | may  | `render`, review frames            | ``scene`` only, never the model     |
    | `limits`, `task_length_m`   | may  | when read (properties)             | nothing                             |

    Init, in full: tier -> config -> compose -> `_build_task` -> compile -> find the robot ->
    `_setup_task` -> controller -> start pose (`_reset_task_nominal`, `_nominal_start_pose`) -> tool
    payload -> observation fields (`_task_obs_fields`). Reset: ``mj_resetData`` -> `_reset_task` ->
    `_sample_start_offset` -> the tier's draws -> the arm at the start pose plus the offset ->
    ``mj_forward`` -> controller reset -> F/T update and tare -> `_episode_start` -> `_evaluate` ->
    observation (`_task_obs`). Step: action checked -> the tier's latency -> controller command ->
    `_apply_task_action` -> physics (`replay_step`: the stored state instead) -> instability check ->
    F/T update -> `_evaluate` -> `_reward` -> termination (`_task_done`) -> observation.

    Randomization helpers in the base: `_sample_start_offset` draws the TCP start offset uniformly
    in ``config.randomization.start_pos_mm`` where the config declares it (and ``randomize`` is
    on); `_draw_pose` draws a part's pose about its nominal one (a cell's `_reset_task`).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}
    config_class: ClassVar[type[CellConfig]] = CellConfig
    task_action_size: ClassVar[int] = 0
    #: one name per task channel (`action_names`); unnamed channels are ``task_<i>``
    task_action_names: ClassVar[tuple[str, ...]] = ()
    #: final-step ``info`` entries that summarize an episode's process quality (reports, CLI, gate;
    #: read through the cell registry, `skillcell.envs.registry.CellSpec.kpi_keys`)
    kpi_keys: ClassVar[tuple[str, ...]] = ()
    #: measured process signals the cell takes from a capture's columns (`set_process_signals`)
    process_signals: ClassVar[tuple[str, ...]] = ()
    _terminate_on_success: bool = True

    #: orientation of the TCP in the task frame when the tool is aligned with the task
    R_task_tcp_nominal: np.ndarray = np.eye(3)
    #: the cell's asset folder, where the pre-hardware gate finds the cell's optional files:
    #: ``tiers.yaml`` (`skillcell.envs.tiers`), ``envelope.yaml`` (`skillcell.deploy.envelope`)
    #: and ``criteria.yaml`` (process KPI limits, `skillcell.deploy.gate`); a cell derived from another
    #: finds what its own folder lacks in the other's (`cell_file`)
    cell_dir: ClassVar[Path | None] = None

    def __init__(self, config: CellConfig, render_mode: str | None = None, width: int = 640,
                 height: int = 480, camera: str = "overview", render_quality: str = "fast",
                 tier: str | None = None, randomize: bool = True):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        if render_quality not in ("fast", "high"):
            raise ValueError(f"render_quality must be 'fast' or 'high', got {render_quality!r}")
        # The tier is resolved before anything reads the config: it may widen the randomization
        # ranges, and D0 turns the cell's own randomization off.
        self.tier = resolve_tier(self.cell_file("tiers.yaml"), tier, bool(randomize), type(self).__name__)
        config = self.tier.apply(config)
        #: the cell's own randomization (part poses, start offset): off at D0 or with ``randomize=False``
        self.randomize = bool(randomize) and self.tier.config.randomize
        self.config = config
        start_range = getattr(getattr(config, "randomization", None), "start_pos_mm", None)
        self._start_pos_range = None if start_range is None else np.array(start_range) * 1e-3
        self.render_mode, self.camera, self.render_quality = render_mode, camera, render_quality
        self.width, self.height = int(width), int(height)

        self.mj_spec = spec = compose_cell(config)
        spec.option.timestep = config.control.timestep_s
        spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, self.width)
        spec.visual.global_.offheight = max(spec.visual.global_.offheight, self.height)
        self._build_task(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.n_substeps = config.control.n_substeps
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}
        if camera not in self.camera_names:
            raise ValueError(f"camera must be one of {self.camera_names}, got {camera!r}")

        self._find_robot()
        self._setup_task()

        control = config.control
        # control.mode: joint servos by differential IK, or a Cartesian spring (skillcell.envs.impedance).
        controller_class = ImpedanceController if control.mode == "impedance" else CartesianController
        self.controller = controller_class(
            self.model, self.data, self.tcp_site, self.arm_qpos_adr, self.arm_dof_adr, self.arm_actuators,
            max_translation=control.max_translation_mm * 1e-3,
            max_rotation=math.radians(control.max_rotation_deg),
            max_lead_translation=control.max_lead_mm * 1e-3,
            max_lead_rotation=math.radians(control.max_lead_deg),
            workspace_min=np.array(control.workspace_min_m), workspace_max=np.array(control.workspace_max_m),
            control_dt=self.dt, velocity_feedforward=control.velocity_feedforward,
        )
        self._solve_start_pose()
        self._measure_payload()

        self.obs_fields: list[ObsField] = [
            ObsField("joint_pos", 6, 1 / math.pi, "rad"),
            ObsField("joint_vel", 6, 1 / math.pi, "rad/s"),
            ObsField("tcp_pos_task", 3, 1 / 0.05, "m"),
            ObsField("tcp_rot_task", 3, 1 / 0.1, "rad"),
            # Fixed scales, not the configured lead limits: capture import raises those limits to
            # follow a person, and its episodes must share the observation layout of ordinary ones.
            ObsField("tcp_lead", 3, 1 / LEAD_OBS_SCALE_M, "m"),
            ObsField("tcp_lead_rot", 3, 1 / LEAD_OBS_SCALE_RAD, "rad"),
            ObsField("force_tool", 3, 1 / 50.0, "N"),
            ObsField("torque_tool", 3, 1 / 5.0, "N*m"),
            *self._task_obs_fields(),
        ]
        self.obs_slices: dict[str, slice] = {}
        start = 0
        for field in self.obs_fields:
            self.obs_slices[field.name] = slice(start, start + field.size)
            start += field.size
        self._obs_raw = np.zeros(start)
        self._obs_scale = np.concatenate([np.full(f.size, f.scale) for f in self.obs_fields])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (start,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (6 + self.task_action_size,), np.float32)
        self._tier_runtime = TierRuntime(self.tier, self.model, self.obs_slices, self.action_space.shape[0])

        self._renderer: mujoco.Renderer | None = None
        self._needs_reset = True
        self.wrench_tool = np.zeros(6)
        self._setup_hot_path()

    def _setup_hot_path(self) -> None:
        """Views and buffers for `step`: what it reads and writes every control step, found once."""
        d = self.data
        # mjData's arrays never move, so views into them stay valid for the env's lifetime.
        self._qpos, self._qvel, self._warnings = d.qpos, d.qvel, d.warning.number
        self._action_shape = self.action_space.shape
        self._tcp_xmat_3x3 = d.site_xmat[self.tcp_site].reshape(3, 3)
        self._task_xmat = d.site_xmat[self.task_site]
        # A transposed view: the operands' layout picks numpy's kernel, and with it the rounding.
        self._task_xmat_T = self._task_xmat.reshape(3, 3).T
        self._tcp_xpos, self._task_xpos = d.site_xpos[self.tcp_site], d.site_xpos[self.task_site]
        sl = self.obs_slices
        self._task_obs_view = self._obs_raw[self._task_obs_start:]
        self._tcp_obs_view = self._obs_raw[sl["tcp_pos_task"].start:sl["tcp_rot_task"].stop]
        self._tcp_rot_view = self._obs_raw[sl["tcp_rot_task"]]
        self._R_nominal = np.ascontiguousarray(self.R_task_tcp_nominal)
        self._R_obs = np.empty((3, 3))
        self._R_obs_flat = self._R_obs.ravel()  # a view
        self._quat_obs = np.empty(4)
        # The F/T compensation and the observation's shared blocks, compiled (`_update_wrench`,
        # `_get_obs`); the two pairs of blocks filled from one source each (the commanded pose
        # error: tcp_lead and tcp_lead_rot; the F/T reading: force_tool and torque_tool) are adjacent.
        for first, second in (("tcp_lead", "tcp_lead_rot"), ("force_tool", "torque_tool")):
            if sl[first].stop != sl[second].start:
                raise ValueError(f"the observation needs {second} right after {first}")
        self._noise_index = self._tier_runtime.noise_index
        self._observer = kernels.Observer(
            raw=self._obs_raw, scale=self._obs_scale, qpos=d.qpos, qvel=d.qvel,
            qpos_index=self.arm_qpos_adr.tolist(), qvel_index=self.arm_dof_adr.tolist(), wrench=self.wrench_tool,
            ft_offset=self._tier_runtime.ft_offset, ft_xmat=d.site_xmat[self.ft_site],
            payload_force=self._payload_force_world, payload_com=self._payload_com_ft,
            force=d.sensordata[self._force_adr:self._force_adr + 3],
            torque=d.sensordata[self._torque_adr:self._torque_adr + 3], controller=self.controller.kernel,
            joint_pos=sl["joint_pos"].start, joint_vel=sl["joint_vel"].start, lead=sl["tcp_lead"].start,
            ft=sl["force_tool"].start, empty=np.empty, dtype=np.float32, warnings=d.warning.number)

    # ------------------------------------------------------------------ setup

    def _find_robot(self) -> None:
        m = self.model
        arm_joints = [j for j in range(m.njnt) if m.joint(j).name.startswith(ROBOT_PREFIX)
                      and int(m.jnt_type[j]) in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))]
        if len(arm_joints) != 6:
            raise ValueError(f"CellEnv drives 6-joint arms; the robot has {len(arm_joints)} joints")
        self.arm_qpos_adr = m.jnt_qposadr[arm_joints].copy()
        self.arm_dof_adr = m.jnt_dofadr[arm_joints].copy()
        by_joint = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu)
                    if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)}
        self.arm_actuators = np.array([by_joint[j] for j in arm_joints])
        tool = self.config.tool
        self.tcp_site = m.site(TOOL_PREFIX + tool.tcp_site).id
        self.ft_site = m.site(TOOL_PREFIX + tool.ft_site).id
        self.tool_body = m.site_bodyid[self.ft_site]
        sensors = {int(m.sensor_type[s]): s for s in range(m.nsensor)
                   if int(m.sensor_objid[s]) == self.ft_site}
        force, torque = int(mujoco.mjtSensor.mjSENS_FORCE), int(mujoco.mjtSensor.mjSENS_TORQUE)
        if force not in sensors or torque not in sensors:
            raise ValueError(f"the tool needs <force> and <torque> sensors on site {tool.ft_site!r}")
        self._force_adr = m.sensor_adr[sensors[force]]
        self._torque_adr = m.sensor_adr[sensors[torque]]
        self.robot_key = m.key(ROBOT_PREFIX + self.config.robot.keyframe).id

    def _solve_start_pose(self) -> None:
        """Joint configuration for the nominal start pose, by damped least squares from the keyframe."""
        m, d = self.model, self.data
        mujoco.mj_resetDataKeyframe(m, d, self.robot_key)
        self._reset_task_nominal()
        p_target, quat_target = self._nominal_start_pose()
        self.controller.p_world_cmd[:] = p_target
        self.controller.quat_world_cmd[:] = quat_target
        jac = np.zeros((6, m.nv))
        arm_joints = m.dof_jntid[self.arm_dof_adr]
        low, high = m.jnt_range[arm_joints].T
        for _ in range(500):
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            error = self.controller.pose_error()
            if np.abs(error).max() < 1e-9:
                break
            mujoco.mj_jacSite(m, d, jac[:3], jac[3:], self.tcp_site)
            j = jac[:, self.arm_dof_adr]
            step = np.linalg.solve(j.T @ j + 1e-6 * np.eye(6), j.T @ error)
            # Short steps inside the joint limits: long Gauss-Newton steps wander off to
            # solutions many turns away that the servos cannot reach.
            step *= min(1.0, 0.2 / np.abs(step).max())
            d.qpos[self.arm_qpos_adr] = np.clip(d.qpos[self.arm_qpos_adr] + step, low, high)
        else:
            raise ValueError(f"the start pose {p_target} is out of the robot's reach")
        self._q_start = d.qpos[self.arm_qpos_adr].copy()
        # Start offsets are a few millimetres: one linear IK step maps them to joints exactly enough.
        self._dq_per_dp = np.linalg.inv(j)[:, :3]

    def _measure_payload(self) -> None:
        """Mass and centre of mass of the tool, in the F/T frame, for gravity compensation."""
        m, d = self.model, self.data
        mujoco.mj_forward(m, d)
        self._payload_mass = m.body_subtreemass[self.tool_body]
        R_world_ft = d.site_xmat[self.ft_site].reshape(3, 3)
        self._payload_com_ft = R_world_ft.T @ (d.subtree_com[self.tool_body] - d.site_xpos[self.ft_site])
        self._payload_force_world = self._payload_mass * m.opt.gravity

    # ------------------------------------------------------------------ task hooks

    def _build_task(self, spec: mujoco.MjSpec) -> None:
        """Adds task geometry to the composed spec before it compiles."""

    def _setup_task(self) -> None:
        """Looks up task ids after compiling; must set ``self.task_site``."""
        raise NotImplementedError

    def _reset_task_nominal(self) -> None:
        """Puts the task in its nominal (unrandomized) configuration."""

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Randomizes the task for a new episode."""

    def _nominal_start_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The TCP start pose ``(p_world, quat_world)`` with the task nominal."""
        raise NotImplementedError

    def _sample_start_offset(self, rng: np.random.Generator) -> np.ndarray:
        """TCP start position offset (m): uniform in +-``config.randomization.start_pos_mm`` per axis.

        Zero, drawing nothing, where the cell's randomization is off or its config declares no
        ``start_pos_mm``.
        """
        if not self.randomize or self._start_pos_range is None:
            return np.zeros(3)
        return rng.uniform(-1.0, 1.0, 3) * self._start_pos_range

    @staticmethod
    def _draw_pose(rng: np.random.Generator, pos_nominal: np.ndarray, quat_nominal: np.ndarray,
                   pos_range: np.ndarray, rot_range: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A pose ``(pos, quat)`` drawn uniformly about a nominal one (a part's mocap pose).

        The position moves by up to +-``pos_range`` (m, cell axes), the orientation turns by xyz
        Euler angles of up to +-``rot_range`` (rad) about the part's own axes. Draws the three
        position offsets, then the three angles (the order seeded episodes depend on).
        """
        pos = pos_nominal + rng.uniform(-1.0, 1.0, 3) * pos_range
        euler = rng.uniform(-1.0, 1.0, 3) * rot_range
        tilt, quat = np.empty(4), np.empty(4)
        mujoco.mju_euler2Quat(tilt, euler, "xyz")
        mujoco.mju_mulQuat(quat, quat_nominal, tilt)
        return pos, quat

    def _task_obs_fields(self) -> list[ObsField]:
        return []

    def _task_obs(self, out: np.ndarray) -> None:
        """Writes the unscaled task observation into ``out``."""

    def _apply_task_action(self, action: np.ndarray) -> None:
        """Applies the task channels ``action[6:]``."""

    def _evaluate(self) -> dict[str, Any]:
        """Metrics of the current step; must include ``is_success`` and ``physics_invalid``."""
        raise NotImplementedError

    def _reward(self, metrics: dict[str, Any], action: np.ndarray) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def _episode_start(self) -> None:
        """Resets per-episode statistics."""

    def _task_done(self) -> bool:
        """Whether the task ends the episode now, besides success and physics invalidity."""
        return False

    def _state_restored(self) -> None:
        """Rewrites into the model what a cell keeps in the state, after a stored state is written and
        before ``mj_forward``: a model parameter the cell draws at reset and stores in ``data.userdata``
        (part of ``mjSTATE_INTEGRATION``), so that a state replays without the episode's reset."""

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._reset_task(self.np_random)
        offset = self._sample_start_offset(self.np_random)
        # After the cell's own draws, so that D0 and D1 draw exactly what they drew before tiers.
        self._tier_runtime.reset(self.np_random)
        d.qpos[self.arm_qpos_adr] = self._q_start + self._dq_per_dp @ offset
        d.ctrl[self.arm_actuators] = d.qpos[self.arm_qpos_adr]
        mujoco.mj_forward(m, d)
        self.controller.reset()
        self._update_wrench()
        self._tier_runtime.tare(self.wrench_tool, self.np_random)  # the tool is free at the start
        self._episode_start()
        self._needs_reset = False
        metrics = self._evaluate()
        return self._get_obs(), {**metrics, "instability": ""}

    def step(self, action):
        a = self._command(action)
        mujoco.mj_step(self.model, self.data, self.n_substeps)
        return self._measure_step(a, self._instability())

    def replay_step(self, state: np.ndarray, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """`step` with the physics read from a recording: ``state`` is the stored state after ``action``.

        Everything but the physics runs as in `step` (the action's latency, command and task
        channels, the F/T reading, metrics, reward, termination), so the episode's statistics, a
        weld's bead among them, follow the recording even where today's model would move
        differently. Returns what `step` returns (``truncated`` is False: the time limit is a
        wrapper's). The values agree with the recorded step's to within one physics substep of
        motion, not bit for bit: after ``mj_step`` the kinematics and sensors a step measures are
        those MuJoCo computed at the start of its last substep, a replay's those of the stored
        state itself.
        """
        a = self._command(action)
        self._write_state(state)
        return self._measure_step(a, self._instability())

    def set_process_signals(self, values: dict[str, float]) -> None:
        """Measured process signals (a capture's columns, by `process_signals` name) for the steps that
        follow, until the next reset; a cell that takes some overrides this."""
        unknown = sorted(set(values) - set(self.process_signals))
        if unknown:
            raise ValueError(f"{type(self).__name__} takes no process signal(s) {unknown}; it takes "
                             f"{list(self.process_signals)}")

    def _command(self, action) -> np.ndarray:
        """The first half of a step: the action checked, delayed by the tier and commanded."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has not started or the "
                               "physics became unstable")
        a = self._check_action(action)
        applied = self._tier_runtime.delay(a)  # the tier's action latency, if any
        self.controller.command(applied)
        self._apply_task_action(applied)
        return a

    def _measure_step(self, a: np.ndarray, instability: str):
        """The second half of a step, after the physics: metrics, reward, termination, observation."""
        self._update_wrench()
        metrics = self._evaluate()
        reward, terms = self._reward(metrics, a)
        if instability:
            # The engine has already reset the state: nothing after this step is physics.
            self._needs_reset = True
            metrics["is_success"] = False
            metrics["physics_invalid"] = True
        terminated = bool(instability or metrics["physics_invalid"] or
                          (metrics["is_success"] and self._terminate_on_success) or self._task_done())
        # The step's own dict (`_evaluate` makes a new one each step) becomes its info: no copy of 50 keys.
        metrics.update(terms)
        metrics["instability"] = instability
        return self._get_obs(), reward, terminated, False, metrics

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        renderer = self.renderer
        renderer.update_scene(self.data, camera=self.camera)
        self.add_overlays(renderer.scene)
        return renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ helpers

    @property
    def dt(self) -> float:
        """The control period (s): ``model.opt.timestep * n_substeps``, as Gymnasium's ``MujocoEnv.dt``."""
        return self.model.opt.timestep * self.n_substeps

    @property
    def control_dt(self) -> float:
        """The control period (s); the same as `dt`."""
        return self.dt

    @property
    def tier_sample(self):
        """What the tier drew for this episode: friction and mass factors, F/T bias, latency."""
        return self._tier_runtime.sample

    @classmethod
    def load_config(cls, cell: str | Path | None = None, overrides: dict[str, Any] | None = None,
                    **env_kwargs: Any) -> CellConfig:
        """The config an env made with these `gym.make` keywords would have, without building it
        (the skill scorer reads an episode's limits this way); a cell implements it and its
        ``__init__`` calls it. Keywords that do not configure the cell (``render_mode``,
        ``tier``, ``randomize``...) are ignored."""
        raise NotImplementedError(f"{cls.__name__} does not implement load_config")

    @property
    def limits(self) -> dict[str, Any]:
        """The cell's limits by name (`skillcell.envs.limits`): its config's ``limits`` section; cells
        add what they derive by a named rule or keep elsewhere (a WPS). ``envelope.yaml`` and
        ``criteria.yaml`` refer to them as ``limits.<name>``."""
        section = getattr(self.config, "limits", None)
        return to_mapping(section) if section is not None else {}

    @property
    def task_length_m(self) -> float | None:
        """The tool travel the task itself takes (m: a seam's length, a hole's depth), which a
        demonstration of it spans at least; the capture importer checks a capture's units against it.
        None where a cell declares none."""
        return None

    def nominal_tool_axis(self, points: np.ndarray) -> np.ndarray:
        """The tool axis (the TCP's z, cell frame) of the tool aligned with the task near each of
        ``points`` (K, 3): `R_task_tcp_nominal` in the task frame as it is now (after `reset`). A cell
        whose task frame varies along the work (a seam) gives the one nearest each point. The capture
        importer checks a person's tool orientation against it."""
        axis = self.data.site_xmat[self.task_site].reshape(3, 3) @ self.R_task_tcp_nominal[:, 2]
        return np.tile(axis, (len(points), 1))

    def cell_file(self, name: str) -> Path | None:
        """The file ``name`` in the cell's asset folder (`cell_dir`), else in the folder of the cell it derives
        from, and so on up (a corner or pipe cell keeps only what differs from the weld cells' tiers,
        envelope and criteria), or None where none has it."""
        for cls in type(self).__mro__:
            folder = vars(cls).get("cell_dir")
            if folder is not None and (Path(folder) / name).is_file():
                return Path(folder) / name
        return None

    @property
    def action_names(self) -> list[str]:
        """One name per action channel: the TCP pose delta in the cell frame, then the task channels."""
        task = list(self.task_action_names) or [f"task_{i}" for i in range(self.task_action_size)]
        return ["tcp_dx", "tcp_dy", "tcp_dz", "tcp_drx", "tcp_dry", "tcp_drz", *task]

    @property
    def camera_names(self) -> list[str]:
        return [self.model.camera(i).name for i in range(self.model.ncam)]

    @property
    def renderer(self) -> mujoco.Renderer:
        """A `mujoco.Renderer` at the env's size; ``fast`` quality drops shadows, reflections and MSAA."""
        if self._renderer is None:
            # Multisampling is fixed when the GL context is made (from `vis.quality.offsamples`);
            # on software OpenGL (Mesa llvmpipe) 4x MSAA halves the frame rate, so `fast` makes the
            # context without it. The model's setting is restored: it is render-only, never physics.
            samples = self.model.vis.quality.offsamples
            if self.render_quality == "fast":
                self.model.vis.quality.offsamples = 0
            try:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as exc:  # the GL backends raise a variety of types
                raise RenderUnavailableError(
                    _GL_HELP.format(backend=os.environ.get("MUJOCO_GL"), error=exc)) from exc
            finally:
                self.model.vis.quality.offsamples = samples
            if self.render_quality == "fast":
                self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
                self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        return self._renderer

    def add_overlays(self, scene: mujoco.MjvScene) -> None:
        """Appends the cell's overlay geoms to ``scene`` after ``update_scene`` (no model edits)."""

    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action must be numeric, got {action!r}") from exc
        if a.shape != self._action_shape:
            raise ValueError(f"action must have shape {self._action_shape}, got {a.shape}")
        values = a.tolist()
        # A sum is finite exactly when every term is, unless it overflows; only then look closer.
        if not math.isfinite(sum(values)) and not np.isfinite(a).all():
            raise ValueError(f"action has non-finite values at indices {np.flatnonzero(~np.isfinite(a)).tolist()}: "
                             f"{values}; nothing was applied")
        if min(values) >= -1.0 and max(values) <= 1.0:  # what np.clip would return, without the call
            return a.copy() if a is action else a
        # np.clip's Python wrapper costs more than the two ufuncs (same values: the bounds are +-1).
        return np.minimum(np.maximum(a, -1.0), 1.0)

    def _instability(self) -> str:
        """What makes the physics invalid now (MuJoCo's warnings, or a non-finite state), "" while it is sound."""
        if self._observer.sound():
            return ""
        counts = self._warnings
        if any(counts.tolist()):
            d = self.data
            return "; ".join(f"{mujoco.mjtWarning(i).name} x{counts[i]} (info {d.warning.lastinfo[i]})"
                             for i in np.flatnonzero(counts))
        return "non-finite state"

    def _update_wrench(self) -> None:
        """F/T reading minus the tool's weight: the wrench the tool applies to its surroundings.

        With :math:`R` the F/T frame orientation, :math:`m g` the tool weight and :math:`c` its
        centre of mass in the F/T frame, the sensor reads :math:`f_s = -R^\\top(m g + f_c)` for a
        contact force :math:`f_c` on the tool, so :math:`f = f_s + R^\\top m g`, and likewise
        :math:`\\tau = \\tau_s + c \\times R^\\top m g`, both in the F/T (flange) frame.
        """
        self._observer.wrench()  # in numpy's order of operations (the kernel's bits are numpy's)

    def tcp_pose_task(self) -> tuple[np.ndarray, np.ndarray]:
        """``(p_task_tcp, R_task_tcp)``: the TCP in the task frame."""
        (px, py, pz), (qx, qy, qz) = self._tcp_xpos.tolist(), self._task_xpos.tolist()
        p_task_tcp = np.array(rotate_transposed(self._task_xmat.tolist(), (px - qx, py - qy, pz - qz)))
        return p_task_tcp, self._task_xmat_T @ self._tcp_xmat_3x3

    def _tcp_obs(self, out: np.ndarray) -> None:
        """Writes ``tcp_pos_task`` and ``tcp_rot_task`` (unscaled) into ``out``, from `tcp_pose_task`: the
        position, and the rotation from `R_task_tcp_nominal` as a rotation vector."""
        p_task_tcp, R_task_tcp = self.tcp_pose_task()
        out[:3] = p_task_tcp
        mujoco.mju_mulMatTMat(self._R_obs, self._R_nominal, R_task_tcp)  # R_task_tcp_nominal.T @ R_task_tcp
        mujoco.mju_mat2Quat(self._quat_obs, self._R_obs_flat)
        mujoco.mju_quat2Vel(self._tcp_rot_view, self._quat_obs, 1.0)

    def _get_obs(self) -> np.ndarray:
        """The observation: the cell's blocks (`_tcp_obs`, `_task_obs`) into the unscaled buffer, then the
        kernel adds the shared ones (joints; the commanded pose relative to the measured one, with which
        a policy knows where it has sent the tool, not only where it is; the F/T reading with the tier's
        bias less the tare) and the tier's noise, and scales it to float32."""
        self._tcp_obs(self._tcp_obs_view)
        self._task_obs(self._task_obs_view)
        return self._observer.observe(self._noise_index, self._tier_runtime.obs_noise(self.np_random))

    @property
    def _task_obs_start(self) -> int:
        return self.obs_slices["torque_tool"].stop

    def decode_obs(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Splits a (batch of) observation(s) into named blocks in physical units."""
        obs = np.asarray(obs, dtype=np.float64)
        return {f.name: obs[..., self.obs_slices[f.name]] / f.scale for f in self.obs_fields}

    def get_state(self) -> np.ndarray:
        """The full integration state (``mjSTATE_INTEGRATION``): enough to replay bit-exactly."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return state

    def set_state(self, state: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode at a stored ``mjSTATE_INTEGRATION`` state; ``(obs, info)`` as `reset` returns.

        The controller commands the restored TCP pose, the F/T sensor is zeroed there and the
        episode statistics start afresh, as after `reset`, so stepping the same actions from an
        episode's first state reproduces it. What `reset` drew for the episode (the tier's
        factors, the task's state such as the arc) stays: call `reset` with the episode's seed first.
        """
        self._write_state(state)
        self.controller.reset()
        self._tier_runtime.restart()
        self._update_wrench()
        self._tier_runtime.tare(self.wrench_tool, self.np_random)
        self._episode_start()
        self._needs_reset = False
        metrics = self._evaluate()
        return self._get_obs(), {**metrics, "instability": ""}

    def _write_state(self, state: np.ndarray) -> None:
        """Restores a ``mjSTATE_INTEGRATION`` state (checked) and computes what follows from it."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.asarray(state, dtype=np.float64)
        expected = mujoco.mj_stateSize(self.model, spec)
        if state.shape != (expected,):
            raise ValueError(f"state must have shape ({expected},) for this model, got {state.shape}")
        if not np.isfinite(state).all():
            raise ValueError("state has non-finite values")
        mujoco.mj_setState(self.model, self.data, state, spec)
        self._state_restored()
        mujoco.mj_forward(self.model, self.data)
