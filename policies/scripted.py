"""Scripted experts: hand-written controllers that act through the env's own action interface.

They read only the observation (decoded to physical units with `CellEnv.decode_obs`), so what
they do is what a learned policy could do, and their rollouts are valid demonstrations. At skill
``expert`` each is a **function of the observation**: the same observation gives the same action
bit for bit, whatever came before, so behaviour cloning has a well-posed target and DAgger can
relabel any visited state. What a phase machine would remember is read from the observation
instead: the commanded tool pose (``tcp_lead``, ``tcp_lead_rot``: where the expert has already
sent the tool), the arc state and the geometry (depth, offsets from the hole or seam).

They are built for the D2 tier too: every correction aims the *commanded* pose, which an action
moves at once, with gains low enough for one or two control periods of action latency (a gain
``g`` per period on a pure delay of ``L`` periods overshoots nowhere for ``g (L + 1) < 1/2``),
so the command also averages observation noise out; feed-forward terms (travel, the seam's turn,
the servo lag of a spiral) carry the motion. The F/T reading is zeroed at reset by the env.
"""

from __future__ import annotations

import math
from typing import ClassVar

import mujoco
import numpy as np

from skillcell.envs.base import CellEnv
from skillcell.envs.cells.weld_seam import WeldSeamEnv
from skillcell.envs.control import quat_from_rotvec, rotvec_from_quat
from skillcell.envs.registry import UnknownCellError, spec_of
from skillcell.envs.weld import torch_rotation, weave_offsets

__all__ = ["ScriptedExpert", "SeamProgram", "WeldSeamExpert", "make_expert"]


def _matrix_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_from_rotvec(rotvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _rotvec_between(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The rotation vector of ``R_target R^T``: what turns ``R`` into ``R_target`` (outer frame)."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (R_target @ R.T).ravel())
    return rotvec_from_quat(quat)


def _ramp(value: float, full: float, zero: float) -> float:
    """1 up to ``full``, 0 from ``zero`` on, linear between: a soft threshold that cannot chatter."""
    return min(1.0, max(0.0, (zero - value) / (zero - full)))


class ScriptedExpert:
    """A policy ``action = expert(obs)``; call `reset` at the start of every episode.

    ``skill`` picks one of the class's `skills`; ``seed`` seeds whatever noise that skill level
    has, so a run of episodes is reproducible. At skill ``expert`` the action is a function of the
    observation alone (`reset` changes nothing).
    """

    skills: tuple[str, ...] = ("expert",)

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        if skill not in self.skills:
            raise ValueError(f"{type(self).__name__} has the skill levels {self.skills}, got {skill!r}")
        self.env: CellEnv = env.unwrapped
        self.skill = skill
        self.rng = np.random.default_rng(seed)

    @classmethod
    def for_episode(cls, env, skill: str, seed: int, episode_seed: int) -> ScriptedExpert:
        """An expert for the one episode seeded ``episode_seed`` of a run seeded ``seed``.

        Its noise is drawn from both seeds, not carried over from the episodes before, so that the
        episode is the same whichever process runs it and whatever ran there first (`skillcell.parallel`).
        """
        return cls(env, skill=skill, seed=[seed, episode_seed])

    def reset(self) -> None:
        """Forgets the previous episode."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SeamProgram:
    """A seam's weld program, as a robot programmer reads it off the drawing: pose-free, along its length.

    Along the arc length ``s`` (metres): the seam's **heading**, the angle of its tangent about the
    base plate normal, unwrapped (radians, left turns positive), so the turn between two points is
    a difference of headings, a sharp corner's within the one sample piece before its vertex; and
    the **planned travel speed**: the nominal speed, lowered where the seam turns so the torch turns
    no faster than ``max_turn_rate`` (rad/s), never below ``floor`` (m/s), and reached by linear
    ramps ``ramp_before`` long before a turn and ``ramp_after`` after it (metres). Both come from
    the seam's shape only, so a workpiece placed anywhere has the same program; the torch finds
    where along it it is from the observed ``progress``.
    """

    def __init__(self, path, nominal: float, floor: float, max_turn_rate: float, ramp_before: float,
                 ramp_after: float):
        self.s = path.s
        tangents = path.tangents
        self.headings = np.unwrap(np.arctan2(tangents[:, 1], tangents[:, 0]))
        # Curvature at each sample from its neighbours (at a vertex: the turn over the piece before it).
        curvature = np.gradient(self.headings, self.s) if len(self.s) > 2 else np.zeros(len(self.s))
        with np.errstate(divide="ignore"):
            limit = np.clip(max_turn_rate / np.abs(curvature), floor, nominal)
        # The plan at s: the lowest limit ahead (or behind), raised linearly with its distance from s.
        distance = self.s[None, :] - self.s[:, None]  # [k, j]: s_j - s_k
        reach = np.where(distance >= 0.0, distance / ramp_before, -distance / ramp_after)
        self.speeds = np.min(limit[None, :] + (nominal - limit[None, :]) * np.minimum(reach, 1.0), axis=1)

    def heading(self, s: float) -> float:
        """The seam heading at ``s`` (rad), clamped to the seam."""
        return float(np.interp(s, self.s, self.headings))

    def speed(self, s: float) -> float:
        """The planned travel speed at ``s`` (m/s)."""
        return float(np.interp(s, self.s, self.speeds))


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class WeldSeamExpert(ScriptedExpert):
    """A welder: line up before the seam start, run up, strike the arc, travel to the seam end.

    The torch is held at the WPS's nominal work and travel angles (but see
    `work_angle_offset_deg`) and contact-tip-to-work distance in the seam frame at the aim point,
    and moves along the seam's tangent at the speed of the seam's weld program (`SeamProgram`:
    the nominal travel speed, lowered into turns), read at the observed ``progress``. What it
    does is read from the observation each step:

    - **approach** (arc off, not lined up): the commanded aim point goes to the run-up point, 6 mm
      before the seam start on the seam's tangent, and the torch to its working angles;
    - **run-up** (arc off, the aim point within 0.5-1.5 mm of the run-up line and the torch
      within 1-2 deg of its working angles): travel at the travel speed (a flying start: the torch
      is at speed when it reaches the seam), and strike the arc once past the seam start;
    - **weld** (arc on): travel along the seam, to its end.

    **Turns and corners.** The torch turns with the seam's tangent about the aim point (the turn
    of the aim point's own swing cancelled), so its work and travel angles, measured in the seam
    frame, stay put; it anticipates: the commanded torch is turned to the heading
    `turn_lead_steps` control periods of travel ahead (the servos trail the command by about
    that), and fed forward by the program's turn over the step. Into a turn the program slows the
    travel so the torch turns at most `max_turn_rate_deg_s`, never below the lower quarter of the
    WPS speed band. A corner sharper than the torch can follow (a polyline's vertex) is turned
    about the wire tip: the travel waits while the commanded torch is more than `turn_wait_deg`
    (fully: `turn_stop_deg`) off that target, which holds the aim point on the vertex, where no
    seam length is welded while it turns. The turn commanded is no more than the controller lets
    the command lead the torch (`max_lead_rotation`), so the aim point's compensation matches the
    turn the torch makes.

    Between approach and run-up the travel blends with how well the torch is lined up, so there
    is no switch to chatter on noise. The novice adds Ornstein-Uhlenbeck wander (mean-reverting
    drift with time constant ``1/theta``, seeded by ``seed``) while the arc is on, to what a human
    varies; that wander is state, so the novice is a source of mixed-skill data, not a teacher:

    | skill  | speed  | work, travel angle | stand-off | lateral |
    |--------|--------|--------------------|-----------|---------|
    | expert | 0      | 0                  | 0         | 0       |
    | novice | 20 %   | 5 deg              | 1.5 mm    | 0.8 mm  |

    (standard deviations of the stationary process). An expert's bead is in spec; a novice's
    mostly is not.

    **Weave.** Where the WPS prescribes one, the commanded aim point follows the weave's path
    (`skillcell.envs.weld.weave_offsets`: across the seam, and along it over steady travel at
    the travel speed over the frequency per cycle), anchored at the seam start. Its phase is
    where the commanded aim point lies on that path (the nearest point within a cycle of where
    steady travel would be), so it comes from the observation; each step the command moves on
    by the frequency's share of a cycle and is pulled onto the path. The novice's weave wanders
    too, in width and frequency (`weave_wander`, same process).
    """

    skills = ("expert", "novice")
    wander: ClassVar[dict[str, tuple[float, float, float, float]]] = {
        "expert": (0.0, 0.0, 0.0, 0.0), "novice": (0.20, 5.0, 1.5e-3, 0.8e-3)}
    theta = 0.4  # 1/s: how fast the wander reverts
    #: standard deviations of the novice's weave width and frequency, fractions of the prescribed
    weave_wander: ClassVar[dict[str, tuple[float, float]]] = {"expert": (0.0, 0.0), "novice": (0.25, 0.2)}
    weave_phase_step = 1e-3  # cycles: the resolution of the phase search
    run_up = 0.006  # m before the seam start where the torch starts moving
    lined_up_mm = (0.5, 1.5)  # aim point off the run-up line: fully lined up / not at all
    lined_up_deg = (1.0, 2.0)  # torch off the nominal angles: fully lined up / not at all
    gain = 0.15  # per control step, on the commanded aim point and torch orientation errors
    #: the torch's turn rate that sets the program's speed in turns: a 20 mm corner radius at 7 mm/s
    max_turn_rate_deg_s = 20.0
    #: the program's speed ramps: over this distance before a turn, and after it (m)
    turn_ramp_m = (0.010, 0.005)
    #: how far ahead of the aim point the commanded torch is turned, in control periods of travel:
    #: the command's own period and the servos' lag
    turn_lead_steps = 2.0
    #: the commanded torch this far off its target (deg) slows the travel, this far stops it: a
    #: degree or two of yaw inside the WPS's angle bands
    turn_wait_deg, turn_stop_deg = 2.5, 5.0
    #: work angle off the WPS's nominal, per joint type, inside the band: on a lap joint the
    #: lapped plate's edge is the gas nozzle's nearest obstacle, and a fit-up gap lifts it towards
    #: the nozzle (0.8 mm per mm); the nominal 60 deg clears it by 1.6 mm, 56 deg by 2.0 mm, so a
    #: 1 mm gap (D2) still leaves the envelope's 1 mm
    work_angle_offset_deg: ClassVar[dict[str, float]] = {"lap": -4.0}

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)

        if not isinstance(self.env, WeldSeamEnv):
            raise TypeError(f"WeldSeamExpert drives WeldSeamEnv, got {type(self.env).__name__}")
        wps = self.env.wps
        self.speed = wps.nominal("travel_speed_mm_s") * 1e-3
        self.work = wps.nominal("work_angle_deg") + self.work_angle_offset_deg.get(self.env.config.joint.type, 0.0)
        self.travel = wps.nominal("travel_angle_deg")
        self.ctwd = wps.nominal("ctwd_mm") * 1e-3
        self.dt = self.env.control_dt
        low, high = wps.band("travel_speed_mm_s")
        self.program = SeamProgram(self.env.path, self.speed, (low + 0.25 * (high - low)) * 1e-3,
                                   math.radians(self.max_turn_rate_deg_s), *self.turn_ramp_m)
        self.length = self.env.path.length
        self.weave = wps.weave
        if self.weave is not None:
            self.weave_pitch = self.speed / self.weave.frequency_hz
            self._phase_offsets = np.arange(-1.0, 1.0, self.weave_phase_step)
        control = self.env.config.control
        self.max_translation = control.max_translation_mm * 1e-3
        self.max_rotation = math.radians(control.max_rotation_deg)
        #: most of the command's lead over the torch that the controller allows (the rest: servo lag)
        self.max_lead_rotation = 0.8 * math.radians(control.max_lead_deg)
        self.reset()

    def reset(self) -> None:
        self.noise = np.zeros(5)  # speed fraction, work deg, travel deg, stand-off m, lateral m
        self.weave_noise = np.zeros(2)  # weave width and frequency fractions

    def _wander(self) -> np.ndarray:
        sigma = np.array(self.wander[self.skill])
        if not sigma.any():
            return self.noise
        sigma = np.r_[sigma[0], sigma[1], sigma[1], sigma[2], sigma[3]]
        decay = math.exp(-self.theta * self.dt)
        self.noise = self.noise * decay + sigma * math.sqrt(1 - decay**2) * self.rng.standard_normal(5)
        if self.weave is not None:  # drawn after the rest: a seam without a weave draws what it drew before
            self.weave_noise = (self.weave_noise * decay + np.array(self.weave_wander[self.skill])
                                * math.sqrt(1 - decay**2) * self.rng.standard_normal(2))
        return self.noise

    def _weave_move(self, s_cmd: float, lateral_cmd: float) -> tuple[float, float, float]:
        """The weave's part of this step's move of the commanded aim point (m): along the seam (on
        along the path and pulled onto it), the path's offset across here (for the caller's pull)
        and its move across over the step.

        ``s_cmd`` and ``lateral_cmd`` are the commanded aim point's seam position and its offset
        across the seam from the weave's centre line.
        """
        weave, pitch = self.weave, self.weave_pitch
        width_scale, frequency_scale = 1.0 + self.weave_noise
        width = weave.width_mm * 1e-3 * width_scale
        phases = self._phase_offsets + s_cmd / pitch
        lateral, along = weave_offsets(weave, phases, pitch, width)
        i = int(np.argmin(np.square(pitch * phases + along - s_cmd) + np.square(lateral - lateral_cmd)))
        phase, path_lateral, path_along = phases[i], float(lateral[i]), float(along[i])
        lateral_next, along_next = weave_offsets(weave, phase + weave.frequency_hz * frequency_scale * self.dt,
                                                 pitch, width)
        # The steady travel is the caller's.
        return (float(along_next) - path_along + self.gain * (pitch * phase + path_along - s_cmd), path_lateral,
                float(lateral_next) - path_lateral)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        o = self.env.decode_obs(obs)
        R_world_seam = _matrix_from_rotvec(o["seam_rot"])
        R_seam_tcp = self.env.R_task_tcp_nominal @ _matrix_from_rotvec(o["tcp_rot_task"])
        R_seam_cmd = R_world_seam.T @ _matrix_from_rotvec(o["tcp_lead_rot"]) @ R_world_seam @ R_seam_tcp
        aim = o["tcp_pos_task"]
        p_cmd = aim - self.ctwd * R_seam_tcp[:, 2] + R_world_seam.T @ o["tcp_lead"]
        aim_cmd = p_cmd + self.ctwd * R_seam_cmd[:, 2]
        welding = o["arc_on"][0] > 0.5
        noise = self._wander() if welding else np.zeros(5)
        R_seam_working = torch_rotation(self.work + noise[1], self.travel + noise[2])

        # Where along the program the aim is, and the seam's turn ahead of it, relative to here.
        program, s = self.program, float(o["progress"][0]) * self.length
        step = program.speed(s) * (1.0 + noise[0]) * self.dt
        here = program.heading(s)
        lead = s + self.turn_lead_steps * step
        turn_lead = program.heading(lead) - here
        turn_step = program.heading(s + step) - here
        R_seam_target = _rot_z(turn_lead) @ R_seam_working
        direction = np.array([math.cos(0.5 * turn_step), math.sin(0.5 * turn_step), 0.0])  # the chord of the step

        along = float(aim_cmd @ direction)
        across = aim_cmd - along * direction
        offset = np.zeros(3)
        weave_across = 0.0
        omega = self.gain * _rotvec_between(R_seam_target, R_seam_cmd)
        if welding:
            # A corner sharper than the torch turns: wait on it while the torch turns.
            off = math.degrees(float(np.linalg.norm(_rotvec_between(R_seam_target, R_seam_cmd))))
            along_move = step * _ramp(off, self.turn_wait_deg, self.turn_stop_deg)
            # Stand-off and lateral wander move the aim point off the root, across the seam only.
            stand_off = R_seam_target[:, 2] * -noise[3]
            offset[1:] = stand_off[1:] + np.array([noise[4], 0.0])
            omega[2] += program.heading(lead + along_move) - program.heading(lead)  # turn with the seam
            if self.weave is not None:
                weave_along, weave_offset, weave_across = self._weave_move(s + float(aim_cmd[0]),
                                                                          float(aim_cmd[1]) - offset[1])
                along_move += weave_along
                offset[1] += weave_offset
            arc = 1.0
        else:
            off_line = aim - float(aim @ direction) * direction
            tilt = math.degrees(float(np.linalg.norm(_rotvec_between(R_seam_target, R_seam_tcp))))
            lined_up = (_ramp(1e3 * math.sqrt(float(off_line @ off_line)), *self.lined_up_mm)
                        * _ramp(tilt, *self.lined_up_deg))
            approach = float(np.clip(self.gain * (-self.run_up - along), -self.max_translation,
                                     self.max_translation))
            along_move = lined_up * step + (1.0 - lined_up) * approach
            arc = 1.0 if lined_up > 0.5 and o["progress"][0] > 0.0 else -1.0
        # The turn that happens: each axis of the cell frame at most the rotation scale, and the command
        # no further ahead of the torch than the controller lets it lead (it pulls a command back to
        # that), so the aim point's compensation below is for the turn the torch makes.
        omega_world = R_world_seam @ omega
        lead_room = self.max_lead_rotation - float(np.linalg.norm(o["tcp_lead_rot"]))
        turn = float(np.linalg.norm(omega_world))
        excess = max(float(np.max(np.abs(omega_world))) / self.max_rotation,
                     turn / lead_room if lead_room > 0.0 else math.inf)
        if excess > 1.0:
            omega, omega_world = omega / excess, omega_world / excess
        move = along_move * direction + self.gain * (offset - across)
        if self.weave is not None:
            move[1] += weave_across  # the weave's own move across, not through the gain
        # The controller turns the torch about the contact tip, which swings the aim point; cancel that.
        move -= np.cross(omega, self.ctwd * R_seam_cmd[:, 2])

        action = np.zeros(7)
        action[:3] = R_world_seam @ move / self.max_translation
        action[3:6] = omega_world / self.max_rotation
        action[6] = arc
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_expert(env, skill: str = "expert", seed: int = 0) -> ScriptedExpert:
    """The scripted expert that the cell registry declares for ``env``'s cell (``env`` may be
    wrapped; `skillcell.envs.registry`), at a skill level."""
    try:
        spec = spec_of(env)
    except UnknownCellError as exc:
        raise ValueError(f"no scripted expert: {exc}") from None
    if spec.expert is None:
        raise ValueError(f"no scripted expert for {spec.id}: its register_cell declares none")
    return spec.expert(env, skill=skill, seed=seed)
