"""The NutThread scripted expert: the nut coaxial over the bolt, a light touch-down, the run-down, the seat.

A function of the observation, as every scripted expert (`skillcell.policies.scripted`): the phase is
read from the nut's depth below the thread start and its offset from the bolt axis, the commanded
pose from ``tcp_lead``/``tcp_lead_rot``.
"""

from __future__ import annotations

import math

import numpy as np

from skillcell.envs.cells.nut_thread import NutThreadEnv
from skillcell.policies.guarded_insert import FixtureExpert, ramp, rotvec_between

__all__ = ["NutThreadExpert"]


class NutThreadExpert(FixtureExpert):
    """Align coaxially, touch down lightly, spin slowly while following the advance, stall at the seat.

    With ``c`` the commanded nut face in the bolt frame (the measured face plus the command lead):

    - **approach** (more than ``touch_zone`` above the thread start): ``c`` to the bolt axis,
      ``approach_height`` over the thread start, the tool axis onto the bolt's (its turn about the
      axis held); down the axis at ``descend_speed`` as it lines up (blended by how lined up: the
      face within 0.1-0.2 mm of the axis, tilt within 0.3-0.6 deg, fully / not at all).
    - **thread** (the face within ``touch_zone`` of the thread start or below it): a guarded move
      down the axis that leads the measured face by ``follow_lead`` at most (a light push on the
      thread, about 1 N on the impedance spring) at the thread's own advance (one pitch per turn
      at ``spin``), ``c`` kept on the axis; the spindle runs at
      ``spin`` of its full speed from ``spin_zone`` above the thread start, times how lined up
      (from a pitch down the thread on, where the nut has engaged, in full). The nut finds
      the thread within a turn and runs down one pitch per turn with the command following it.
      ``seat_zone`` above the washer the run-down ends and a tightening step at ``seat_spin``
      starts, as a nutrunner's two-step program does: the nut meets the washer slower (at full
      speed the stop reached the F/T as a one-substep 123 N jolt, D1 seed 13) and the spindle
      stalls at the clutch's torque for that speed (``seat_spin`` times the stall torque at full
      command: 3.6 N*m, between the seating torque and the torque limit), which ends the episode
      as a success.
    """

    approach_height = 0.003  # m above the thread start
    descend_speed = 0.0006  # m per control step over the bolt, lined up
    touch_zone = 0.001  # m above the thread start where the guarded move starts
    spin_zone = 0.0005  # m above the thread start where the spindle starts
    follow_lead = 0.0004  # m the command may lead the nut's face down the thread
    spin = 1.0  # of the spindle's full speed (1 rev/s at 60 rpm)
    seat_zone = 0.0006  # m above the washer where the run-down ends and the tightening step starts
    seat_spin = 0.8  # the tightening step's speed: its stall torque (3.6 N*m) still past the seating torque
    aligned_mm = (0.1, 0.2)  # face offset from the axis: fully lined up / not at all
    aligned_deg = (0.3, 0.6)  # tilt from the axis: fully lined up / not at all
    env_class = NutThreadEnv

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        # Onto the thread at the speed the thread will carry the nut (one pitch per turn of the spindle):
        # the helix then takes the nut over without stopping the arm's descent (a jolt of 10 N or more).
        self.touch_speed = self.env.pitch * self.spin * self.env.max_spindle_speed / (2 * math.pi) * self.env.dt

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        view = self.view(obs)
        c, depth, R_task_cmd = view.c, view.depth, view.R_task_cmd
        # How lined up, in [0, 1], not a yes/no: D2's observation noise (0.1 mm a reading) is as wide as the
        # band, so a threshold would flip the action from step to step, which a cloned policy averages into
        # a hover; the blend is the mean such a policy learns, with the noise a smooth function of it.
        lined_up = ramp(view.lateral_mm, *self.aligned_mm) * ramp(view.tilt_deg, *self.aligned_deg)

        move = np.zeros(3)
        move[:2] = -self.gain * c[:2]
        spindle = 0.0
        if depth > -self.touch_zone:
            self.phase = "thread"
            move[2] = self.guarded(view, self.touch_speed, self.follow_lead)
            # Lined up matters until the nut has met the helix (within a pitch of the thread start it has
            # engaged or jammed); past that the thread holds the nut and the measured offset is noise about it.
            if depth > self.env.thread_length - self.seat_zone:
                spindle = self.seat_spin
            elif depth > self.env.pitch:
                spindle = self.spin
            elif depth > -self.spin_zone:
                spindle = self.spin * lined_up
        else:
            self.phase = "approach"
            depth_cmd = -c[2]
            down = -(min(depth_cmd + self.descend_speed, depth + self.follow_lead + self.touch_zone) - depth_cmd)
            move[2] = lined_up * down + (1.0 - lined_up) * self.gain * (self.approach_height - c[2])
        # The commanded tool axis onto the bolt's, its turn about that axis left as it is.
        turn = math.atan2(R_task_cmd[1, 0], R_task_cmd[0, 0])
        c_t, s_t = math.cos(turn), math.sin(turn)
        R_target = np.array([[c_t, -s_t, 0.0], [s_t, c_t, 0.0], [0.0, 0.0, 1.0]]) @ self.env.R_task_tcp_nominal
        return self.act(view, move, self.gain * rotvec_between(R_target, R_task_cmd), spindle)
