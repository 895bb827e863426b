"""Scripted experts: hand-written controllers that act through the env's own action interface.

They read only the observation (decoded to physical units with `CellEnv.decode_obs`), so what
they do is what a learned policy could do, and their rollouts are valid demonstrations.
"""

from __future__ import annotations

import math

import numpy as np

from skillcell.envs.base import CellEnv
from skillcell.envs.cells.peg_insert import PegInsertEnv
from skillcell.envs.control import quat_from_rotvec

__all__ = ["PegInsertExpert", "ScriptedExpert", "make_expert"]


def _matrix_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_from_rotvec(rotvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class ScriptedExpert:
    """A stateful policy ``action = expert(obs)``; call `reset` at the start of every episode."""

    def __init__(self, env):
        self.env: CellEnv = env.unwrapped

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

    def __init__(self, env):
        super().__init__(env)
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


_EXPERTS: dict[type, type[ScriptedExpert]] = {PegInsertEnv: PegInsertExpert}


def make_expert(env, skill: str = "expert") -> ScriptedExpert:
    """The scripted expert for ``env``'s cell (``env`` may be wrapped)."""
    cell = type(env.unwrapped)
    for env_class, expert_class in _EXPERTS.items():
        if issubclass(cell, env_class):
            if skill != "expert":
                raise ValueError(f"{expert_class.__name__} has only the 'expert' skill level, got {skill!r}")
            return expert_class(env)
    raise ValueError(f"no scripted expert for {cell.__name__}")
