"""The SnapFit cell's scripted expert: line up, push with a force-limited lead until the click, stop pushing.

A function of the observation (`skillcell.policies.scripted`): what a phase machine would remember
is read from the observation, the commanded pose (``tcp_lead``) among it, so behaviour cloning and
DAgger have a well-posed target.
"""

from __future__ import annotations

import math

import numpy as np

from skillcell.envs.cells.snap_fit import SnapFitEnv
from skillcell.policies.guarded_insert import FixtureExpert, ramp, rotvec_between

__all__ = ["SnapFitExpert"]


class SnapFitExpert(FixtureExpert):
    """Approach, line up, push the plug in with a force-limited lead until the click, then stop pushing.

    With ``c`` the commanded plug tip in the socket frame (the measured tip plus the command lead)
    and ``F`` the axial force the F/T reads, the phase is read from the observation every step
    (`phase` keeps the last one, for inspection only):

    - **approach** (above the opening, not lined up): ``c`` goes to the socket axis, 4 mm above the
      opening; the tool turns onto the socket axis and its yaw (the plug is rectangular).
    - **descend** (lined up within 0.15-0.3 mm and 0.3-0.6 deg): down the axis at 10 mm/s to 4 mm
      above the opening, then as the insert phase pushes: at 2 mm/s from there over the lead-ins. The
      impedance's overdamped axis lags a 10 mm/s command by about 3 mm and spends that lead with a
      0.3 s time constant, so the plug slows to the touch speed only a few millimetres after the
      command does: from 2 mm above, it met a chamfer at 7 mm/s (a 55 N, 3 ms spike on the 2 ms
      contact), from 4 mm at about 2 mm/s.
    - **insert** (the tip below that): the command advances by ``v * clip((F_max - F) / F_max, -1, 1)``
      per step, a lead that grows while the force is under ``F_max`` and shrinks above it: 10 mm/s
      under ``free_force`` (4 N) until 1.5 mm before the hook meets the catch, then 4 mm/s under
      ``push_force`` (20 N: over the latch's peak, under the 30 N rating, whatever the friction).
      Side force walks the command away from it (`FixtureExpert.admittance`), so the lead-ins centre
      the plug.
    - **release** (the tip past halfway from the click depth to the floor: the hook can only be
      there by clicking past the catch): the command returns onto the measured tip, so the push
      stops at the click and nothing presses on the latched part.
    """

    approach_height = 0.004  # m above the opening
    descend_speed = 0.0005  # m per control step in free space, lined up (the axis damper lags it: a lead)
    touch_zone = 0.004  # m above the opening where the slow, force-limited push starts
    free_speed = 0.0005  # m per control step in the socket, before the latch
    entry_depth = 0.0015  # m below the opening: the lead-ins, taken at the touch speed
    touch_speed = 0.0001  # m per control step from the touch zone over the lead-ins
    push_speed = 0.0002  # m per control step over the latch
    push_margin = 0.0015  # m before the hook meets the catch where the slow push starts
    free_force = 4.0  # N: in free sliding the plug presses no harder
    push_force = 20.0  # N: the most the push leans on the latch
    aligned_mm = (0.15, 0.3)  # tip offset from the axis: fully lined up / not at all
    aligned_deg = (0.3, 0.6)  # tilt from the axis: fully lined up / not at all
    env_class = SnapFitEnv

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        cell = self.env
        # The part's drawing: where the hook meets the catch, and where only a click can put the tip.
        self.push_depth = cell.engage_depth - self.push_margin
        self.release_depth = 0.5 * (cell.click_depth + cell.socket_depth)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        view = self.view(obs)
        p, c, depth = view.p, view.c, view.depth
        if depth > self.release_depth:
            phase = "release"
        elif depth > -self.touch_zone:
            phase = "insert"
        else:
            lined_up = (ramp(view.lateral_mm, *self.aligned_mm)
                        * ramp(math.degrees(float(np.linalg.norm(view.obs["tcp_rot_task"]))), *self.aligned_deg))
            phase = "descend" if lined_up > 0.5 else "approach"
        self.phase = phase

        move = np.zeros(3)
        if phase == "approach":
            move[:2] = -self.gain * c[:2]
            move[2] = self.gain * (self.approach_height - c[2])
        elif phase == "descend":
            move[:2] = -self.gain * c[:2]
            move[2] = -self.descend_speed
        elif phase == "release":
            move = 0.5 * (p - c)  # the command onto the tip: no push left, sideways or down
        else:
            move[:2] = self.admittance(view)
            pushing = depth > self.push_depth
            speed, limit = (self.push_speed, self.push_force) if pushing else (self.free_speed, self.free_force)
            if depth < self.entry_depth:  # over the lead-ins: slowly, so meeting an edge is no impact
                speed = self.touch_speed
            move[2] = -speed * min(1.0, max(-1.0, (limit - view.axial) / limit))
        return self.act(view, move, self.gain * rotvec_between(self.env.R_task_tcp_nominal, view.R_task_cmd))
