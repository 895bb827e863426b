"""What the scripted experts of the fixture cells share (`skillcell.envs.fixture_task`): PegInsert's,
KeyedShaft's, SnapFit's and NutThread's.

Each reads its observation in the task frame (`TaskView`: the fixture's axis is z, out of the part),
aims the *commanded* pose (the measured TCP plus ``tcp_lead``), and moves it by a task-frame step
that `FixtureExpert.act` turns into an action. The moves they have in common:

- **guarded** along the axis: down by a speed, but never leading the measured tip by more than a
  given lead (on a blocked part the arm's spring then presses with at most its stiffness times
  that lead, in either control mode) nor past a bottom;
- **admittance** sideways: a side force means the axis estimate is off, so the command walks away
  from it, and a command far off the tip is pulled back towards it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from skillcell.envs.control import quat_from_rotvec, rotvec_from_quat
from skillcell.envs.fixture_task import FixtureTaskEnv
from skillcell.policies.scripted import ScriptedExpert

__all__ = ["FixtureExpert", "TaskView", "matrix_from_rotvec", "ramp", "rotvec_between"]


def matrix_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """The rotation matrix of a rotation vector (rad)."""
    R = np.empty(9)
    mujoco.mju_quat2Mat(R, quat_from_rotvec(rotvec))
    return R.reshape(3, 3)


def rotvec_between(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The rotation vector of ``R_target R^T``: what turns ``R`` into ``R_target`` (outer frame)."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (R_target @ R.T).ravel())
    return rotvec_from_quat(quat)


def ramp(value: float, full: float, zero: float) -> float:
    """1 up to ``full``, 0 from ``zero`` on, linear between: a soft threshold that cannot chatter."""
    return min(1.0, max(0.0, (zero - value) / (zero - full)))


@dataclass(frozen=True)
class TaskView:
    """A fixture cell's observation in its task frame: positions in m, the force in N."""

    obs: dict[str, np.ndarray]  # the decoded observation (`CellEnv.decode_obs`)
    R_world_task: np.ndarray
    R_task_tcp: np.ndarray  # the measured tool
    R_task_cmd: np.ndarray  # the commanded tool
    p: np.ndarray  # the measured TCP
    c: np.ndarray  # the commanded TCP
    depth: float  # the TCP's depth below the task site
    force: np.ndarray  # the force the tool applies

    @property
    def axial(self) -> float:
        """The force pushing into the part along its axis (N)."""
        return -float(self.force[2])

    @property
    def lateral_mm(self) -> float:
        """The TCP's distance from the axis (mm)."""
        return 1e3 * math.hypot(self.p[0], self.p[1])

    @property
    def tilt_deg(self) -> float:
        """The tool axis's tilt from the part's axis (deg)."""
        return math.degrees(math.acos(max(-1.0, min(1.0, -float(self.R_task_tcp[2, 2])))))


class FixtureExpert(ScriptedExpert):
    """A scripted expert of a `FixtureTaskEnv` subclass (`env_class`): a function of the observation.

    Its gains: ``gain`` per control step on the commanded position and orientation errors (low
    enough for two periods of action latency, `skillcell.policies.scripted`), ``lateral_admittance``
    (m per N of side force, per step) and ``max_side_lead`` (m) for `admittance`.
    """

    env_class: ClassVar[type[FixtureTaskEnv]]
    gain = 0.15
    lateral_admittance = 2e-5
    max_side_lead = 9e-4

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        if not isinstance(self.env, self.env_class):
            raise TypeError(f"{type(self).__name__} drives {self.env_class.__name__}, got {type(self.env).__name__}")
        control = self.env.config.control
        self.max_translation = control.max_translation_mm * 1e-3
        self.max_rotation = math.radians(control.max_rotation_deg)
        self.phase = "approach"

    def view(self, obs: np.ndarray) -> TaskView:
        """The observation in the task frame."""
        o = self.env.decode_obs(obs)
        R_world_task = matrix_from_rotvec(o[f"{self.env.fixture_name}_rot"])
        R_task_tcp = self.env.R_task_tcp_nominal @ matrix_from_rotvec(o["tcp_rot_task"])
        R_task_cmd = R_world_task.T @ matrix_from_rotvec(o["tcp_lead_rot"]) @ R_world_task @ R_task_tcp
        p = o["tcp_pos_task"]
        return TaskView(obs=o, R_world_task=R_world_task, R_task_tcp=R_task_tcp, R_task_cmd=R_task_cmd, p=p,
                        c=p + R_world_task.T @ o["tcp_lead"], depth=float(o["depth"][0]),
                        force=R_task_tcp @ o["force_tool"])

    @staticmethod
    def guarded(view: TaskView, speed: float, lead: float, bottom: float = math.inf) -> float:
        """The z move of a command that goes down by ``speed`` but leads the tip by ``lead`` at most and
        stops at the depth ``bottom`` (m)."""
        depth_cmd = -float(view.c[2])
        return -(min(depth_cmd + speed, view.depth + lead, bottom) - depth_cmd)

    def admittance(self, view: TaskView) -> np.ndarray:
        """The sideways move (x, y) that walks the command away from a side force and keeps it within
        about ``max_side_lead`` of the tip."""
        move = -self.lateral_admittance * view.force[:2]
        lead = view.p[:2] - view.c[:2]
        excess = math.hypot(lead[0], lead[1]) - self.max_side_lead
        if excess > 0:
            move += lead * excess / (excess + self.max_side_lead)
        return move

    def act(self, view: TaskView, move: np.ndarray, omega: np.ndarray, *task_actions: float) -> np.ndarray:
        """The action that moves the commanded pose by ``move`` (m) and turns it by ``omega`` (rad), task
        frame, then the cell's task channels (``action[6:]``: a spindle's speed)."""
        action = np.zeros(6 + len(task_actions))
        action[:3] = view.R_world_task @ move / self.max_translation
        action[3:6] = view.R_world_task @ omega / self.max_rotation
        action[6:] = task_actions
        return np.clip(action, -1.0, 1.0).astype(np.float32)
