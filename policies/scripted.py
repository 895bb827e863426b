"""Scripted experts: hand-written controllers that act through the env's own action interface.

They read only the observation (decoded to physical units with `CellEnv.decode_obs`), so what
they do is what a learned policy could do, and their rollouts are valid demonstrations.
"""

from __future__ import annotations

import math
from typing import ClassVar

import mujoco
import numpy as np

from skillcell.envs.base import CellEnv
from skillcell.envs.cells.peg_insert import PegInsertEnv
from skillcell.envs.control import quat_from_rotvec, rotvec_from_quat
from skillcell.envs.registry import UnknownCellError, spec_of

__all__ = ["PegInsertExpert", "ScriptedExpert", "WeldSeamExpert", "make_expert"]


def _matrix_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_from_rotvec(rotvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class ScriptedExpert:
    """A stateful policy ``action = expert(obs)``; call `reset` at the start of every episode.

    ``skill`` picks one of the class's `skills`; ``seed`` seeds whatever noise that skill level
    has, so a run of episodes is reproducible.
    """

    skills: tuple[str, ...] = ("expert",)

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        if skill not in self.skills:
            raise ValueError(f"{type(self).__name__} has the skill levels {self.skills}, got {skill!r}")
        self.env: CellEnv = env.unwrapped
        self.skill = skill
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forgets the previous episode."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class PegInsertExpert(ScriptedExpert):
    """Approach, align, insert with force feedback, and spiral search if the hole is missed.

    Phases:

    1. **approach**: bring the peg tip 4 mm above the hole opening, on the hole axis, with the tool
       axis aligned to the hole axis (the hole pose is observed).
    2. **insert**: move down the hole axis at 15 mm/s, but as a guarded move near the opening,
       where contact is expected (the command leads the tip by 1.2 mm at most, so touching the
       rim costs about 13 N, not 100); command 2 mm past the bottom so the peg seats. Side force
       from the F/T reading walks the commanded axis away from the force (admittance), so a
       chamfer centres the peg and wall contact does not build up.
    3. **search**: if the peg lands on the surface (axial force without depth), trace an
       Archimedean spiral around the expected axis under light force until the tip drops in,
       then take the tip position as the hole axis.
    4. **back off**: if the peg jams (stalled under high axial force), lift 2 mm and realign.
    """

    approach_height = 0.004  # m above the opening
    insert_speed = 0.00075  # m per control step, inside the hole
    touch_speed = 0.0005  # m per control step where first contact is expected
    touch_lead = 0.0012  # m the command may lead the tip there (about 13 N on contact)
    overdrive = 0.002  # m commanded past the hole bottom
    lateral_admittance = 2e-5  # m per N of side force, per control step
    contact_force = 5.0  # N: touching
    jam_force = 25.0  # N: stalled and pressing this hard means jammed
    spiral_pitch = 0.0003  # m of radius per turn: under the 0.4 mm capture window
    spiral_step = 0.0003  # m of arc per control step
    search_press = 0.0003  # m the search commands below the surface (a few newtons)

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        if not isinstance(self.env, PegInsertEnv):
            raise TypeError(f"PegInsertExpert drives PegInsertEnv, got {type(self.env).__name__}")
        control = self.env.config.control
        self.max_translation = control.max_translation_mm * 1e-3
        self.max_rotation = math.radians(control.max_rotation_deg)
        self.hole_depth = self.env.hole_depth
        self.lag_steps = self.env.controller.servo_time_constant / self.env.control_dt
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.spiral_angle = 0.0
        self.stall_steps = 0
        self.backoff_steps = 0
        self.depth_target = -self.approach_height
        self.axis_xy = np.zeros(2)  # where the hole axis is believed to be, task frame
        self.spiral_point = np.zeros(2)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        o = self.env.decode_obs(obs)
        R_world_task = _matrix_from_rotvec(o["hole_rot"])
        R_task_tcp = self.env.R_task_tcp_nominal @ _matrix_from_rotvec(o["tcp_rot_task"])
        p_task_tcp = o["tcp_pos_task"]
        p_task_cmd = p_task_tcp + R_world_task.T @ o["tcp_lead"]
        depth = float(o["depth"][0])
        force_task = R_task_tcp @ o["force_tool"]  # force the tool applies, task frame
        axial = -force_task[2]  # pushing down the hole is positive

        target = np.zeros(3)
        if self.phase == "approach":
            target[2] = self.approach_height
            aligned = (np.hypot(*p_task_tcp[:2]) < 2e-4 and abs(p_task_tcp[2] - self.approach_height) < 1e-3
                       and np.linalg.norm(o["tcp_rot_task"]) < math.radians(0.3))
            if aligned:
                self.phase = "insert"
                self.depth_target = -p_task_tcp[2]
        elif self.phase == "backoff":
            self.backoff_steps -= 1
            target[2] = p_task_cmd[2] + 0.0005
            self.depth_target = -target[2]
            if self.backoff_steps <= 0:
                self.phase = "insert"
        else:
            if self.phase == "insert" and axial > self.contact_force and depth < 2e-4:
                self.phase = "search"
            if self.phase == "search":
                if depth > 5e-4:
                    # The tip has dropped into the opening: that is where the hole really is.
                    self.phase = "insert"
                    self.axis_xy = p_task_tcp[:2].copy()
                else:
                    radius = self.spiral_pitch * self.spiral_angle / (2 * math.pi)
                    self.spiral_angle += self.spiral_step / max(radius, self.spiral_step)
                    point = radius * np.array([math.cos(self.spiral_angle), math.sin(self.spiral_angle)])
                    # The arm trails a moving command by its servo lag; lead by as much to keep the radius.
                    target[:2] = self.axis_xy + point + (point - self.spiral_point) * self.lag_steps
                    target[2] = -self.search_press
                    self.spiral_point = point
            if self.phase == "insert":
                if -0.0015 < depth < 0.002:
                    # Guarded move where contact is expected: the command leads the tip by little.
                    self.depth_target = min(self.depth_target + self.touch_speed, depth + self.touch_lead)
                else:
                    self.depth_target += self.insert_speed
                self.depth_target = min(self.depth_target, self.hole_depth + self.overdrive)
                target[2] = -self.depth_target
                # Admittance: side force means the axis estimate is off; walk it away from the force.
                self.axis_xy -= self.lateral_admittance * force_task[:2]
                target[:2] = self.axis_xy
                stalled = axial > self.jam_force and depth < self.hole_depth - 1e-3
                self.stall_steps = self.stall_steps + 1 if stalled else 0
                if self.stall_steps > 5:
                    self.phase, self.backoff_steps, self.stall_steps = "backoff", 4, 0

        move_task = target - p_task_cmd
        action = np.zeros(6)
        action[:3] = R_world_task @ move_task / self.max_translation
        # Rotation that takes the tool orientation error to zero, in the cell frame.
        omega_world = -R_world_task @ self.env.R_task_tcp_nominal @ o["tcp_rot_task"]
        action[3:] = 0.7 * omega_world / self.max_rotation
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class WeldSeamExpert(ScriptedExpert):
    """A welder: line up before the seam start, run up, strike the arc, travel to the seam end.

    The torch is held at the WPS's nominal work and travel angles and contact-tip-to-work
    distance, and moves at the nominal travel speed; the aim point follows the seam by
    interpolating the observed seam points ahead. Skill levels add Ornstein-Uhlenbeck wander
    (mean-reverting drift with time constant ``1/theta``) to what a human varies:

    | skill  | speed  | work, travel angle | stand-off | lateral |
    |--------|--------|--------------------|-----------|---------|
    | expert | 2 %    | 0.7 deg            | 0.3 mm    | 0.15 mm |
    | novice | 20 %   | 5 deg              | 1.5 mm    | 0.8 mm  |

    (standard deviations of the stationary process). An expert's bead is in spec; a novice's
    mostly is not, which makes datasets of mixed skill.
    """

    skills = ("expert", "novice")
    wander: ClassVar[dict[str, tuple[float, float, float, float]]] = {
        "expert": (0.02, 0.7, 0.3e-3, 0.15e-3), "novice": (0.20, 5.0, 1.5e-3, 0.8e-3)}
    theta = 0.4  # 1/s: how fast the wander reverts
    run_up = 0.006  # m before the seam start where the torch starts moving

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        from skillcell.envs.cells.weld_seam import LOOKAHEAD_M, WeldSeamEnv

        if not isinstance(self.env, WeldSeamEnv):
            raise TypeError(f"WeldSeamExpert drives WeldSeamEnv, got {type(self.env).__name__}")
        wps = self.env.wps
        self.speed = wps.nominal("travel_speed_mm_s") * 1e-3
        self.work, self.travel = wps.nominal("work_angle_deg"), wps.nominal("travel_angle_deg")
        self.dt = self.env.control_dt
        self.lookahead = LOOKAHEAD_M[0]
        control = self.env.config.control
        self.max_translation = control.max_translation_mm * 1e-3
        self.max_rotation = math.radians(control.max_rotation_deg)
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.noise = np.zeros(5)  # speed fraction, work deg, travel deg, stand-off m, lateral m

    def _wander(self) -> np.ndarray:
        sigma = np.array(self.wander[self.skill])
        sigma = np.r_[sigma[0], sigma[1], sigma[1], sigma[2], sigma[3]]
        decay = math.exp(-self.theta * self.dt)
        self.noise = self.noise * decay + sigma * math.sqrt(1 - decay**2) * self.rng.standard_normal(5)
        return self.noise

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        from skillcell.envs.weld import torch_rotation

        o = self.env.decode_obs(obs)
        R_world_seam = _matrix_from_rotvec(o["seam_rot"])
        aim = o["tcp_pos_task"]
        aim_cmd = aim + R_world_seam.T @ o["tcp_lead"]
        R_seam_tcp = self.env.R_task_tcp_nominal @ _matrix_from_rotvec(o["tcp_rot_task"])
        noise = self._wander() if self.phase == "weld" else np.zeros(5)
        R_seam_target = torch_rotation(self.work + noise[1], self.travel + noise[2])

        arc = -1.0
        if self.phase == "approach":
            # A flying start: line up a few millimetres before the seam, so that the torch is
            # already at travel speed when it strikes the arc on the seam's first millimetre.
            target = np.array([-self.run_up, 0.0, 0.0])
            error = np.linalg.norm(aim - target)
            tilt = np.linalg.norm(o["tcp_rot_task"])
            if error < 3e-4 and tilt < math.radians(0.5):
                self.phase = "run-up"
        if self.phase in ("run-up", "weld"):
            if self.phase == "run-up" and o["progress"][0] > 0.0:
                self.phase = "weld"
            arc = 1.0 if self.phase == "weld" else -1.0
            # Follow the chord towards the seam point ahead (its direction; near the seam end,
            # where the points ahead bunch up, the tangent).
            ahead = aim + o["seam_ahead"][:3]
            reach = np.linalg.norm(ahead)
            direction = ahead / reach if reach > 0.2 * self.lookahead else np.array([1.0, 0.0, 0.0])
            along = aim_cmd[0] + self.speed * (1.0 + noise[0]) * self.dt
            target = direction * along
            # Stand-off and lateral wander move the aim point off the root, across the seam only:
            # the along-seam target is relative to the command, so an offset there would integrate.
            stand_off = R_seam_target[:, 2] * -noise[3]
            target[1:] += stand_off[1:] + np.array([noise[4], 0.0])

        action = np.zeros(7)
        action[:3] = R_world_seam @ (target - aim_cmd) / self.max_translation
        quat_error = np.empty(4)
        mujoco.mju_mat2Quat(quat_error, (R_seam_target @ R_seam_tcp.T).ravel())
        action[3:6] = 0.3 * R_world_seam @ rotvec_from_quat(quat_error) / self.max_rotation
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
