"""Task-space impedance control: torque-driven joints holding the tool on a Cartesian spring and damper.

``control.mode: impedance`` (`skillcell.envs.cell.ControlConfig`) gives the arm the control law of
Factory's and IndustReal's task-space impedance controllers and of a real UR's force mode,

.. math::
    \\tau = J^\\top \\big(K e - D J \\dot q\\big) + g(q) + c(q, \\dot q),

with :math:`e` the pose error of the TCP from the commanded (equilibrium) pose, :math:`K` and
:math:`D` a diagonal stiffness and damping per cell axis (``control.impedance``) and :math:`J` the
TCP Jacobian. The action interface is the position mode's: an action moves the commanded pose
(`CartesianController`), whose lead on the measured pose is capped at ``control.max_lead_*``, so a
blocked tool presses with at most :math:`K` times the lead. The arm is 6-DOF and :math:`J` square,
so there is no null space to hold a posture in.

How it is integrated, and why: the physics runs ``n_substeps`` (100) MuJoCo steps of 0.5 ms per
control step in one ``mj_step`` call, so the controller acts once per control step (50 ms), yet a
damper evaluated on a velocity 50 ms old, or a spring on a pose 50 ms old, is unstable at any
useful gain. The law is therefore built from MuJoCo actuators, which MuJoCo evaluates every
substep, and only their controls are set once per control step: the model never changes, so the
recorded controls and states replay the physics bit for bit (``skillcell demos replay --mode state``).

- The robot's joint servos become **torque motors** (gear 1), and each joint's total actuator
  torque is clamped to the servo's ``forcerange``, the UR5e's rated joint torques
  (150/150/150/28/28/28 N*m), by ``actfrcrange``.
- **Gravity** :math:`g(q)` is MuJoCo's own gravity compensation (``gravcomp`` on every body),
  routed through the joints' actuators (``actgravcomp``): exact every substep, and counted against
  the rated torques.
- The spring and damper, linearized about the control step's configuration :math:`q_k`, are the
  joint-space stiffness :math:`S = J^\\top K J` and damping :math:`B = J^\\top D J`: about
  :math:`q_k` the joints feel :math:`\\tau = J^\\top K e - S (q - q_k) - B \\dot q`, the law above.
  Any symmetric 6x6 matrix is a sum of the 21 rank-one terms :math:`c c^\\top` over the fixed
  vectors :math:`c = e_i` and :math:`c = e_i + e_j` (:math:`s_{ij}` on :math:`e_i + e_j`,
  :math:`s_{ii} - \\sum_{j \\ne i} s_{ij}` on :math:`e_i`), so 21 fixed tendons :math:`l = c^\\top q`
  each carry a stiffness actuator (``gain = -l``, force :math:`-u\\, l`) and a damping actuator
  (``gain = -\\dot l``) whose controls :math:`u` are those coefficients of :math:`S` and
  :math:`B`; the motors' controls are :math:`J^\\top K e + S q_k` plus the Coriolis and centrifugal
  torque :math:`b - g` (``qfrc_bias``). MuJoCo follows the spring within the step and integrates
  the damping implicitly (``implicitfast`` takes the actuators' velocity derivatives). At rest the
  wrench on the tool is exactly :math:`K e`.
- :math:`K` and :math:`D` are in the model as the custom numerics ``impedance_stiffness`` and
  ``impedance_damping`` (translation, then rotation), where `ImpedanceController` reads them.

Measured on PegInsert (``tests/test_impedance.py``): pressed into a face, the contact force is
``K e`` to 2e-6 relative, and the F/T reading is stiffness times the commanded offset to 1.2e-5;
a peg 0.15 mm off the axis of a 0.1 mm clearance hole with a 0.3 mm chamfer slides in where the
joint servos (position mode: 14-23 kN/m at the TCP, and coupled) tilt and wedge it at 137 N; the
free tool settles on the command, and at 20 times the default stiffness (20 kN/m) it stays stable
in contact. The damping defaults are about critical for the UR5e's
operational-space mass at the PegInsert start pose (9, 5 and 7 kg along x, y, z; 0.28, 0.47 and
0.1 kg*m^2 about them). That mass is anisotropic, so a 100 mm/s start on a diagonal bows the path
by 0.51 mm before the steady lag (the same ``D/K`` on every axis) brings it back on the line,
against 0.04 mm on the servos: fine for an insertion, not for a weld, which stays in position mode.
The simplest alternative, the same law as a torque computed once per control step and held over
it, damps with a velocity 50 ms old: at these gains the tool swings by up to 95 mm with joints at
9-14 rad/s after a 25 mm move, and at a tenth of them it still rings by +-4 mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import mujoco
import numpy as np

from skillcell.config import ConfigError
from skillcell.envs.control import CartesianController, index_of

__all__ = ["PREFIX", "ImpedanceController", "use_torque_actuators"]

#: the names this module adds to the robot: ``impedance_stiffness`` and ``impedance_damping`` (numerics),
#: tendons ``impedance_<i>`` and ``impedance_<i>_<j>`` (arm joint indices), and on each tendon the
#: actuators ``impedance_k_...`` (stiffness) and ``impedance_d_...`` (damping)
PREFIX = "impedance_"
_GAIN_LENGTH, _GAIN_VELOCITY = [0.0, -1.0, 0.0] + [0.0] * 7, [0.0, 0.0, -1.0] + [0.0] * 7


def _terms(n: int) -> list[tuple[int, ...]]:
    """The arm joints of the rank-one terms: each joint, then each pair."""
    return [(i,) for i in range(n)] + list(combinations(range(n), 2))


def use_torque_actuators(robot: mujoco.MjSpec, stiffness: Sequence[float], damping: Sequence[float]) -> None:
    """Makes the robot's joints torque-driven and adds the actuators of the Cartesian spring-damper,
    in its `MjSpec` (module docstring).

    Each joint actuator (a position servo in the Menagerie models) is replaced by a motor of the
    same name; the joint's total actuator torque (gravity compensation included) is clamped to the
    servo's ``forcerange``. ``stiffness`` and ``damping`` (six each: x, y, z, then about them) are
    stored in the model for `ImpedanceController`.
    """
    joints = []
    for servo in list(robot.actuators):
        if servo.trntype != mujoco.mjtTrn.mjTRN_JOINT:
            raise ConfigError(f"control.mode: impedance drives joint actuators; {servo.name!r} is not one")
        low, high = (float(v) for v in servo.forcerange)
        if not low < 0.0 < high:
            raise ConfigError(f"control.mode: impedance needs the joints' rated torques; the robot's actuator "
                              f"{servo.name!r} declares no forcerange")
        name, joint = servo.name, robot.joint(servo.target)
        robot.delete(servo)
        joint.actfrcrange = [low, high]
        joint.actfrclimited = mujoco.mjtLimited.mjLIMITED_TRUE
        joint.actgravcomp = True
        # Unlimited: the command carries S q_k, which the springs' -S q cancel within the joint's clamp.
        robot.add_actuator(name=name, trntype=mujoco.mjtTrn.mjTRN_JOINT, target=joint.name,
                           gainprm=[1.0] + [0.0] * 9, biastype=mujoco.mjtBias.mjBIAS_NONE)
        joints.append(joint.name)
    for term in _terms(len(joints)):
        tag = "_".join(map(str, term))
        tendon = robot.add_tendon(name=f"{PREFIX}{tag}")
        for i in term:
            tendon.wrap_joint(joints[i], 1.0)
        for kind, gain in (("k", _GAIN_LENGTH), ("d", _GAIN_VELOCITY)):
            robot.add_actuator(name=f"{PREFIX}{kind}_{tag}", trntype=mujoco.mjtTrn.mjTRN_TENDON, target=tendon.name,
                               gaintype=mujoco.mjtGain.mjGAIN_AFFINE, gainprm=gain,
                               biastype=mujoco.mjtBias.mjBIAS_NONE)
    robot.add_numeric(name=f"{PREFIX}stiffness", data=[float(v) for v in stiffness])
    robot.add_numeric(name=f"{PREFIX}damping", data=[float(v) for v in damping])


def _named(model: mujoco.MjModel, kind: str, count: int, name: str) -> int:
    """The id of the object ``name`` under any attach prefix."""
    for i in range(count):
        full = getattr(model, kind)(i).name
        if full == name or full.endswith("/" + name):
            return i
    raise ValueError(f"ImpedanceController needs the {kind} {name!r} of use_torque_actuators "
                     "(compose the cell with control.mode: impedance)")


def _gains(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """The stiffness and damping stored by `use_torque_actuators`."""
    out = []
    for name in ("stiffness", "damping"):
        n = _named(model, "numeric", model.nnumeric, PREFIX + name)
        adr = model.numeric_adr[n]
        out.append(model.numeric_data[adr:adr + model.numeric_size[n]].copy())
    return out[0], out[1]


class ImpedanceController(CartesianController):
    """`CartesianController`'s commanded pose, tracked by a Cartesian spring and damper (module docstring).

    ``actuator_ids`` are the arm's torque motors. `servo_time_constant` is ``D/K`` (the median over
    the translation axes): the lag of a steady motion, as a position servo's ``kd/kp`` is;
    ``velocity_feedforward`` feeds that fraction of it forward, which here is the damper's
    desired velocity (:math:`D (\\xi - J \\dot q)`).
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, tcp_site: int, qpos_adr: np.ndarray,
                 dof_adr: np.ndarray, actuator_ids: np.ndarray, **kwargs):
        super().__init__(model, data, tcp_site, qpos_adr, dof_adr, actuator_ids, **kwargs)
        #: the Cartesian stiffness (N/m, N*m/rad) and damping (N*s/m, N*m*s/rad): x, y, z, then about them
        self.stiffness, self.damping = _gains(model)
        n = len(dof_adr)
        joints = model.dof_jntid[dof_adr].tolist()
        terms = _terms(n)
        stiff, damp = [], []
        for term in terms:
            tag = "_".join(map(str, term))
            tendon = _named(model, "tendon", model.ntendon, f"{PREFIX}{tag}")
            adr, num = model.tendon_adr[tendon], model.tendon_num[tendon]
            wraps = sorted(joints.index(int(j)) for j in model.wrap_objid[adr:adr + num])
            if wraps != list(term):
                raise ValueError(f"ImpedanceController: tendon {PREFIX}{tag} wraps arm joints {wraps}, "
                                 f"not {list(term)}")
            stiff.append(_named(model, "actuator", model.nu, f"{PREFIX}k_{tag}"))
            damp.append(_named(model, "actuator", model.nu, f"{PREFIX}d_{tag}"))
        #: the stiffness and damping actuators, one of each per rank-one term (each joint, then each pair)
        self.spring_actuators, self.damper_actuators = np.array(stiff), np.array(damp)
        self._stiff, self._damp = index_of(self.spring_actuators), index_of(self.damper_actuators)
        pairs = np.array(terms[n:])
        self._pair_i, self._pair_j = pairs[:, 0], pairs[:, 1]
        self._motors = index_of(actuator_ids)
        self._qpos_arm, self._dof_arm = index_of(qpos_adr), index_of(dof_adr)
        self._jac_full = np.zeros((6, model.nv))
        self._jac_p, self._jac_r = self._jac_full[:3], self._jac_full[3:]
        self._zero = np.zeros(6)

    @staticmethod
    def _lag_time(model: mujoco.MjModel, actuator_ids: np.ndarray) -> float:
        stiffness, damping = _gains(model)
        return float(np.median(damping[:3] / stiffness[:3]))

    def reset(self) -> None:
        """Commands the current TCP pose (the spring relaxed there) and recomputes what follows."""
        super().reset()
        self._track(self._zero)
        mujoco.mj_forward(self.model, self.data)

    def _coefficients(self, matrix: np.ndarray) -> np.ndarray:
        """The 21 rank-one weights of a symmetric 6x6 ``matrix``: per joint, then per pair."""
        diagonal = np.diagonal(matrix)
        return np.concatenate([2.0 * diagonal - matrix.sum(axis=1), matrix[self._pair_i, self._pair_j]])

    def _track(self, error: np.ndarray) -> None:
        m, d = self.model, self.data
        mujoco.mj_jacSite(m, d, self._jac_p, self._jac_r, self.tcp_site)
        jac = self._jac_full[:, self._dof_arm]
        stiffness = jac.T @ (self.stiffness[:, None] * jac)
        damping = jac.T @ (self.damping[:, None] * jac)
        d.ctrl[self._stiff] = self._coefficients(stiffness)
        d.ctrl[self._damp] = self._coefficients(damping)
        # Coriolis and centrifugal torques; gravity (in qfrc_bias too) is the bodies' gravcomp.
        d.ctrl[self._motors] = (jac.T @ (self.stiffness * error) + stiffness @ d.qpos[self._qpos_arm]
                                + d.qfrc_bias[self._dof_arm] - d.qfrc_gravcomp[self._dof_arm])
