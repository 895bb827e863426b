"""The PegInsert cell's scripted expert: approach, line up, guarded insertion, spiral search on a miss.

A function of the observation, as every scripted expert (`skillcell.policies.scripted`).
"""

from __future__ import annotations

import math

import numpy as np

from skillcell.envs.cells.peg_insert import PegInsertEnv
from skillcell.policies.guarded_insert import FixtureExpert, ramp, rotvec_between

__all__ = ["PegInsertExpert"]


class PegInsertExpert(FixtureExpert):
    """Approach, align, insert with force feedback, and spiral search if the hole is missed.

    The phase is read from the observation every step (`phase` keeps the last one, for
    inspection only). With ``c`` the commanded peg tip in the hole frame (the measured tip plus
    the command lead):

    - **approach** (above the opening, not lined up): ``c`` goes to the hole axis and down to
      4 mm above the opening; the tool turns to the hole axis.
    - **descend** (above the opening, tip within 0.15-0.3 mm of the axis and tilt within
      0.3-0.6 deg): down the axis at 15 mm/s, then, from 1.5 mm above the opening, as a guarded
      move that leads the tip by 1.2 mm at most (about 13 N on a rim, not 100).
    - **search** (tip at the opening plane, pushing on the surface, or already spiralling: the
      command circles the axis at more than 0.6 mm): an Archimedean spiral about the expected
      axis under a light press, 0.3 mm below the opening, until the tip drops in (`_spiral`).
    - **insert** (tip 0.2 mm or more below the opening): guarded move down the hole (1.2 mm of
      lead in the first 2 mm, then 2.5 mm, so stalling never pushes much harder than that),
      2 mm past the bottom; side force walks the command away from the force (admittance), so a
      chamfer centres the peg and wall contact does not build up; a command far off the tip (the
      spiral's lead when the peg drops in) is pulled in to within 0.9 mm.
    """

    approach_height = 0.004  # m above the opening
    insert_speed = 0.00075  # m per control step, once guided by the hole
    touch_speed = 0.0005  # m per control step where first contact is expected
    touch_zone = 0.0015  # m above the opening where the guarded move starts
    touch_lead = 0.0012  # m the command may lead the tip there (about 13 N on contact)
    guide_depth = 0.002  # m below the opening from where the hole guides the peg
    guided_lead = 0.0025  # m the command may lead the tip there
    overdrive = 0.002  # m commanded past the hole bottom
    inside_depth = 2e-4  # m below the opening: the tip is in the hole (or on a chamfer)
    contact_force = 1.0  # N along the axis: pushing on the surface (F/T noise at D2: 0.5 N)
    search_radius = 6e-4  # m of commanded offset from the axis at the opening plane: spiralling
    spiral_pitch = 0.0003  # m of radius per turn: under the 0.4 mm capture window
    spiral_step = 0.0003  # m of arc per control step
    search_press = 0.0003  # m the search commands below the opening (a few newtons at most)
    aligned_mm = (0.15, 0.3)  # tip offset from the axis: fully lined up / not at all
    aligned_deg = (0.3, 0.6)  # tilt from the axis: fully lined up / not at all
    env_class = PegInsertEnv

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        self.hole_depth = self.env.hole_depth
        self.lag_steps = self.env.controller.servo_time_constant / self.env.control_dt
        #: the guarded moves stop this deep: past the hole's bottom, so that the peg is pressed home
        self.bottom = self.hole_depth + self.overdrive

    def _spiral(self, c_xy: np.ndarray) -> np.ndarray:
        """The next commanded point of an Archimedean spiral about the expected hole axis.

        The spiral point ``q`` at angle ``theta`` has the radius ``pitch theta / 2 pi`` and
        advances by ``spiral_step`` of arc per step (one radian per step near the centre). The arm
        trails its command by the servo lag, ``lag`` steps, so the command leads ``q`` by ``lag``
        steps of arc along the tangent and the arm traces the spiral itself. ``q`` follows from
        the command in closed form, so the spiral needs no memory.
        """
        lag, s = self.lag_steps, self.spiral_step
        r_c = math.hypot(c_xy[0], c_xy[1])
        if r_c < s * math.sqrt(1 + lag * lag):
            r, turn = r_c / math.sqrt(1 + lag * lag), 1.0
        else:
            r = math.sqrt(r_c * r_c - (lag * s) ** 2)
            turn = s / r
        theta = math.atan2(c_xy[1], c_xy[0]) - math.atan(lag * turn) + turn
        r += self.spiral_pitch * turn / (2 * math.pi)
        radial = np.array([math.cos(theta), math.sin(theta)])
        tangent = np.array([-radial[1], radial[0]])
        return r * radial + lag * r * (s / max(r, s)) * tangent

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        view = self.view(obs)
        c, depth = view.c, view.depth
        on_surface = depth > -self.inside_depth and (view.axial > self.contact_force
                                                     or math.hypot(c[0], c[1]) > self.search_radius)
        if depth > self.inside_depth:
            phase = "insert"
        elif on_surface:
            phase = "search"
        else:
            lined_up = (ramp(view.lateral_mm, *self.aligned_mm)
                        * ramp(math.degrees(float(np.linalg.norm(view.obs["tcp_rot_task"]))), *self.aligned_deg))
            phase = "descend" if lined_up > 0.5 else "approach"
        self.phase = phase

        def guarded(speed: float, lead: float) -> float:
            return self.guarded(view, speed, lead, self.bottom)

        move = np.zeros(3)
        if phase == "insert":
            move[:2] = self.admittance(view)
            guided = depth > self.guide_depth
            move[2] = guarded(self.insert_speed, self.guided_lead) if guided else guarded(self.touch_speed,
                                                                                       self.touch_lead)
        elif phase == "search":
            move[:2] = self._spiral(c[:2]) - c[:2]
            # Half the error per step: the target is within a millimetre, and latency is 1-2 steps.
            move[2] = 0.5 * (-self.search_press - c[2])
        else:
            move[:2] = -self.gain * c[:2]
            if phase == "descend":
                near = depth > -self.touch_zone
                move[2] = guarded(self.touch_speed, self.touch_lead) if near else -self.insert_speed
            elif c[2] > self.approach_height:
                move[2] = self.gain * (self.approach_height - c[2])
        # Turn the commanded tool onto the hole axis.
        return self.act(view, move, self.gain * rotvec_between(self.env.R_task_tcp_nominal, view.R_task_cmd))
