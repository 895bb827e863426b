"""The KeyedShaft scripted expert: the pilot into the bore, a rotational search for the keyway, the shaft home.

A function of the observation, as every scripted expert (`skillcell.policies.scripted`): what a
phase machine would remember is read from the observation (depth, the commanded pose in
``tcp_lead``/``tcp_lead_rot``, the axial force, the shaft's turn in ``tcp_rot_task``).
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from skillcell.envs.cells.keyed_shaft import KeyedShaftEnv
from skillcell.envs.control import rotvec_from_quat
from skillcell.policies.guarded_insert import FixtureExpert

__all__ = ["KeyedShaftExpert"]


def _about_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _turn_of(R_task_tcp: np.ndarray) -> float:
    """The TCP's turn about the bore axis from aligned: its x axis's angle in the hub's xy plane."""
    return math.atan2(R_task_tcp[1, 0], R_task_tcp[0, 0])


def _ramp(value: float, zero: float, full: float) -> float:
    """0 up to ``zero``, 1 from ``full`` on, linear between: a soft threshold that cannot chatter."""
    return min(1.0, max(0.0, (value - zero) / (full - zero)))


class KeyedShaftExpert(FixtureExpert):
    """Pilot in, then turn the shaft under a light push until the key drops into its keyway, then push home.

    The key's angle in the gripper is not observed, only that it is within
    ``randomization.key_angle_deg`` (0 with the cell's randomization off) of its nominal
    ``workpiece.key_grip_deg``. So the
    search is one sweep in one direction, from ``range + margin`` on one side to as far on the
    other: the key starts clear of the keyway and meets it once. With ``c`` the commanded shaft end
    in the hub frame (the measured end plus the command lead) and ``alpha`` the shaft's turn about
    the bore axis, each step reads its phase from the observation (`phase` keeps the last one, for
    inspection only):

    - **approach** (above the bore): ``c`` to the bore axis, 4 mm over the opening, the tool onto the
      axis and turned to the sweep's start; then down the axis (15 mm/s, a guarded move from 1.5 mm
      above the opening) once lined up (the tip within 0.15-0.3 mm of the axis, tilt within 0.3-0.6
      deg, the turn within 1-2 deg of the start).
    - **pilot** (the shaft's end in the bore, the key above the hub face): a guarded move down the
      bore, side force walking the command away (admittance), the turn still going to the start (the
      depth is held until it is there).
    - **search** (the key's end at the hub face): the command pushes with ``search_push`` along the
      axis (it walks down while the push is under that, back while over: the arm's stiffness differs
      between control modes) and turns on by ``search_speed_deg`` a step (the arm trails it by the
      servo lag) while the face carries that push and no torque about the axis says the key is
      caught. A push lost for a step pauses the turn (the key's sliding contact chatters); the shaft
      going down, or a caught key, takes the commanded turn back onto the measured one (half the
      lead a step, which under two periods of latency overshoots by a quarter at most), so the shaft
      stops within the key clearance's capture window and the key is not wound into the keyway's
      wall. Past the sweep's end (the keyway missed) the shaft lifts the key off the face and the
      approach turns it back to the start.
    - **insert** (the key ``drop_depth`` into its keyway): a guarded move to the bottom, 2 mm past it
      (1.2 mm of lead in the keyway's first 2 mm, then 2.5 mm), the commanded turn on the measured
      one (the keyway guides the key; no torque is wound up), side force walked off as in the pilot.

    Every correction aims the commanded pose, with gains low enough for one or two control periods
    of action latency (see `skillcell.policies.scripted`).
    """

    approach_height = 0.004  # m above the opening
    insert_speed = 0.00075  # m per control step, once guided
    touch_speed = 0.0003  # m per control step where contact is expected (two periods of latency add 0.6 mm)
    touch_zone = 0.0015  # m above the opening where the guarded move starts
    touch_lead = 0.0008  # m the command may lead the tip there (under 10 N on contact, latency included)
    guided_lead = 0.0025  # m the command may lead the tip once the key is 2 mm into its keyway
    guide_depth = 0.002  # m of the key in its keyway from where the keyway guides it
    overdrive = 0.002  # m commanded past the bore bottom
    inside_depth = 2e-4  # m below the opening: the shaft's end is in the bore (or on the chamfer)
    face_band = 5e-4  # m above the key's face contact depth from where the search starts
    drop_depth = 5e-4  # m past the face contact depth: the key has dropped (five times D2's depth noise)
    search_push = 4.0  # N along the axis while searching: a light push
    push_gain = 2e-5  # m of command per N of push error, per control step
    search_max_lead = 3e-3  # m the searching command may lead the shaft's end
    search_speed_deg = 0.3  # deg of turn per control step (6 deg/s)
    search_force = (1.0, 2.5)  # N: the face carries no push / the whole push (turn not at all / fully)
    caught_torque = (0.15, 0.3)  # N*m about the axis: the key slides on the face / is caught in the keyway
    dropping_depth = (1.5e-4, 3.5e-4)  # m past the face contact depth: the key is not / is going down
    pause_snap = 0.2  # of the snap where the push is lost but the shaft does not go down
    lift = 0.0015  # m the key is lifted off the face when the sweep is over
    margin_deg = 5.0  # the sweep starts and ends this far beyond the grip angle's range
    aligned_mm = (0.15, 0.3)  # tip offset from the axis: fully lined up / not at all
    aligned_deg = (0.3, 0.6)  # tilt from the axis: fully lined up / not at all
    turned_deg = (1.0, 2.0)  # turn off the sweep's start: fully lined up / not at all
    #: per control step, on the commanded turn's lead over the measured one where the turn is held: half
    #: of it, so that the command stops the shaft within a period or two yet, repeated under two periods
    #: of action latency, overshoots the measured turn by a quarter of the lead at most
    snap_gain = 0.5
    env_class = KeyedShaftEnv

    def __init__(self, env, skill: str = "expert", seed: int = 0):
        super().__init__(env, skill, seed)
        cell = self.env
        self.bore_depth = cell.bore_depth
        self.key_offset = cell.key_offset
        # What the robot program knows of the grip: the range it lies in.
        grip_range = cell.config.randomization.key_angle_deg if cell.randomize else 0.0
        self.sweep = math.radians(grip_range + self.margin_deg)
        #: the turn that would line up a key at its nominal grip angle: the sweep's centre
        self.centre = -math.radians(cell.config.workpiece.key_grip_deg)
        self.lag_steps = cell.controller.servo_time_constant / cell.control_dt
        #: the guarded moves stop this deep: past the bore's bottom, so that the shaft is pressed home
        self.bottom = self.bore_depth + self.overdrive

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        view = self.view(obs)
        o, R_task_tcp, c, depth, axial = view.obs, view.R_task_tcp, view.c, view.depth, view.axial
        turn = _turn_of(R_task_tcp)
        start = self.centre - self.sweep

        key_face = self.key_offset  # the depth at which the key's end meets the hub face
        if depth > key_face + self.drop_depth:
            phase = "insert"
        elif depth > key_face - self.face_band:
            phase = "search"
        elif depth > self.inside_depth:
            phase = "pilot"
        else:
            phase = "approach"
        self.phase = phase

        def guarded(speed: float, lead: float) -> float:
            return self.guarded(view, speed, lead, self.bottom)

        on_start = 1.0 - _ramp(math.degrees(abs(turn - start)), *self.turned_deg)
        move = np.zeros(3)
        target_turn = turn  # hold the shaft's turn: the command onto the measured one
        turn_gain = self.snap_gain
        feed = 0.0  # commanded turn per step, on top
        if phase == "insert":
            move[:2] = self.admittance(view)
            guided = depth > key_face + self.guide_depth
            move[2] = guarded(self.insert_speed, self.guided_lead) if guided else guarded(self.touch_speed,
                                                                                       self.touch_lead)
        elif phase == "search":
            move[:2] = self.admittance(view)
            if turn > self.centre + self.sweep:  # past the sweep's end: lift the key off the face
                move[2] = self.gain * (-(key_face - self.face_band - self.lift) - c[2])
            else:
                # Force control along the axis: the command walks down while the push is under its target and
                # back while over it (the arm's stiffness differs between control modes; the push should not).
                lead = -c[2] - depth
                pushed = min(max(lead + self.push_gain * (self.search_push - axial), 0.0), self.search_max_lead)
                move[2] = -(pushed - lead)
                # While the face carries the push, the command turns on (the arm trails it by the servo
                # lag); once it does not, the command falls back onto the measured turn.
                # A torque about the axis past the face's sliding friction: the key is caught in the keyway.
                torque = float((R_task_tcp @ o["torque_tool"])[2])
                caught = _ramp(abs(torque), *self.caught_torque)
                carried = _ramp(axial, *self.search_force) * (1.0 - caught)
                feed = carried * math.radians(self.search_speed_deg)
                # A push lost for a step is as often the sliding contact chattering as the key dropping:
                # it pauses the turn; the shaft going down (or a caught key) takes the lead back.
                dropping = _ramp(depth - key_face, *self.dropping_depth)
                turn_gain = max(dropping, caught, self.pause_snap * (1.0 - carried)) * self.snap_gain
        elif phase == "pilot":
            move[:2] = self.admittance(view)
            target_turn, turn_gain = start, self.gain
            move[2] = guarded(self.touch_speed, self.touch_lead) if on_start > 0.5 else 0.5 * (-depth - c[2])
        else:
            move[:2] = -self.gain * c[:2]
            target_turn, turn_gain = start, self.gain
            lined_up = ((1.0 - _ramp(view.lateral_mm, *self.aligned_mm))
                        * (1.0 - _ramp(view.tilt_deg, *self.aligned_deg)) * on_start)
            if lined_up > 0.5:
                near = depth > -self.touch_zone
                move[2] = guarded(self.touch_speed, self.touch_lead) if near else -self.insert_speed
            elif c[2] > self.approach_height:
                move[2] = self.gain * (self.approach_height - c[2])
        # The commanded tool onto the bore axis (gain) and to the target turn about it.
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, (_about_z(target_turn) @ self.env.R_task_tcp_nominal @ view.R_task_cmd.T).ravel())
        omega = rotvec_from_quat(quat)
        omega[:2] *= self.gain
        omega[2] = omega[2] * turn_gain + feed
        return self.act(view, move, omega)
