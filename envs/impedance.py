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
substep, and refreshed once per control step:

- the robot's joint servos become **torque motors** (gear 1; their ``ctrl`` the Coriolis and
  centrifugal feed-forward :math:`c = b - g` from ``qfrc_bias``, once per control step), and each
  joint's total actuator torque is clamped to the servo's ``forcerange`` (the UR5e's rated joint
  torques, 150/150/150/28/28/28 N*m) by ``actfrcrange``;
- **gravity** :math:`g(q)` is MuJoCo's own gravity compensation (``gravcomp`` on every body),
  routed through the joints' actuators (``actgravcomp``), so it is exact every substep and counts
  against the rated torques;
- the spring and damper are six **fixed tendons** :math:`l_i = J_i q` (row :math:`i` of the TCP
  Jacobian, rewritten every control step, ``wrap_prm``) with a general actuator each,
  :math:`f_i = K_i (u_i - l_i) - D_i \\dot l_i` with :math:`u_i = J_i q_k + e_i`. Through the
  tendon the joints feel :math:`J^\\top f = J^\\top (K (e - J (q - q_k)) - D J \\dot q)`: the law
  above, its spring linearized about the control step's configuration :math:`q_k` and followed by
  MuJoCo within the step, its damping integrated implicitly (``implicitfast`` takes the
  actuators' velocity derivatives). At rest the wrench on the tool is exactly :math:`K e`.

Measured on PegInsert: the free tool follows a 50 mm move to within 2 um of the straight line and
settles on the command; pressed into a face it pushes with ``K e`` to 1e-5 relative; no
instability at the default gains. The damping defaults are about critical for the UR5e's
operational-space mass at the PegInsert start pose (9, 5 and 7 kg along x, y, z; 0.28, 0.47 and
0.1 kg*m^2 about them). A Jacobian-transpose torque computed once per control step, the simplest
alternative, needs the damping to be stale for 50 ms and oscillates; joint-space servos
(position mode) are stiff (14-23 kN/m at the TCP) and anisotropic, so a chamfer cannot centre a peg.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from skillcell.config import ConfigError
from skillcell.envs.control import CartesianController, index_of

__all__ = ["AXES", "SPRING_PREFIX", "ImpedanceController", "use_torque_actuators"]

#: the cell axes of the Cartesian spring, one tendon and actuator each
AXES = ("x", "y", "z", "rx", "ry", "rz")
#: the spring tendons' and actuators' names: ``impedance_x`` ... ``impedance_rz`` (in the robot's namespace)
SPRING_PREFIX = "impedance_"


def use_torque_actuators(robot: mujoco.MjSpec, stiffness: Sequence[float], damping: Sequence[float]) -> None:
    """Makes the robot's joints torque-driven and adds the Cartesian spring-dampers, in its `MjSpec`.

    Each joint actuator (a position servo in the Menagerie models) is replaced by a motor of the
    same name whose torque range is the servo's ``forcerange``; the joint's total actuator torque
    (gravity compensation included) is clamped to it. Then six fixed tendons over the arm's joints
    (coefficients set by `ImpedanceController` every control step) each get an actuator
    ``K (ctrl - length) - D velocity`` with the axis' stiffness and damping.
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
        robot.add_actuator(name=name, trntype=mujoco.mjtTrn.mjTRN_JOINT, target=joint.name,
                           gainprm=[1.0] + [0.0] * 9, biastype=mujoco.mjtBias.mjBIAS_NONE,
                           ctrlrange=[low, high], ctrllimited=mujoco.mjtLimited.mjLIMITED_TRUE)
        joints.append(joint.name)
    for axis, k, c in zip(AXES, stiffness, damping, strict=True):
        tendon = robot.add_tendon(name=SPRING_PREFIX + axis)
        for name in joints:
            tendon.wrap_joint(name, 0.0)
        robot.add_actuator(name=SPRING_PREFIX + axis, trntype=mujoco.mjtTrn.mjTRN_TENDON, target=tendon.name,
                           gainprm=[float(k)] + [0.0] * 9, biastype=mujoco.mjtBias.mjBIAS_AFFINE,
                           biasprm=[0.0, -float(k), -float(c)] + [0.0] * 7)


def _spring_actuators(model: mujoco.MjModel) -> np.ndarray:
    """The spring actuators of `use_torque_actuators`, in `AXES` order, under any attach prefix."""
    found = {}
    for a in range(model.nu):
        name = model.actuator(a).name
        for axis in AXES:
            if name.endswith("/" + SPRING_PREFIX + axis) or name == SPRING_PREFIX + axis:
                found[axis] = a
    if len(found) != len(AXES):
        raise ValueError("ImpedanceController needs the spring actuators of use_torque_actuators "
                         "(compose the cell with control.mode: impedance)")
    return np.array([found[axis] for axis in AXES])


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
        springs = _spring_actuators(model)
        #: the spring-damper actuators, one per axis of `AXES`
        self.spring_actuators = springs
        self.stiffness = model.actuator_gainprm[springs, 0].copy()
        self.damping = -model.actuator_biasprm[springs, 2]
        tendons = model.actuator_trnid[springs, 0]
        adr, num = model.tendon_adr[tendons], model.tendon_num[tendons]
        n = len(dof_adr)
        if not (np.all(num == n) and np.array_equal(adr, adr[0] + n * np.arange(len(AXES)))):
            raise ValueError("ImpedanceController: the spring tendons must each wrap the arm's joints, in one block")
        # wrap_prm[block][i, k] is tendon i's coefficient on the joint of wrap k: the arm's dof `order[k]`.
        wrap_dofs = model.jnt_dofadr[model.wrap_objid[adr[0]:adr[0] + n]]
        order = [int(np.flatnonzero(np.asarray(dof_adr) == dof)[0]) for dof in wrap_dofs]
        self._wrap_coef = model.wrap_prm[adr[0]:adr[0] + n * len(AXES)].reshape(len(AXES), n)  # a view
        self._wrap_order = index_of(np.array(order))
        self._springs, self._motors = index_of(springs), index_of(actuator_ids)
        self._qpos_arm, self._dof_arm = index_of(qpos_adr), index_of(dof_adr)
        self._jac_full = np.zeros((6, model.nv))
        self._jac_p, self._jac_r = self._jac_full[:3], self._jac_full[3:]
        self._zero = np.zeros(6)

    @staticmethod
    def _lag_time(model: mujoco.MjModel, actuator_ids: np.ndarray) -> float:
        springs = _spring_actuators(model)
        k = model.actuator_gainprm[springs[:3], 0]
        c = -model.actuator_biasprm[springs[:3], 2]
        return float(np.median(c / k))

    def reset(self) -> None:
        """Commands the current TCP pose (the springs relaxed there) and recomputes what follows."""
        super().reset()
        self._track(self._zero)
        mujoco.mj_forward(self.model, self.data)

    def _track(self, error: np.ndarray) -> None:
        m, d = self.model, self.data
        mujoco.mj_jacSite(m, d, self._jac_p, self._jac_r, self.tcp_site)
        jac = self._jac_full[:, self._dof_arm]
        self._wrap_coef[...] = jac[:, self._wrap_order]
        d.ctrl[self._springs] = jac @ d.qpos[self._qpos_arm] + error
        # Coriolis and centrifugal torques; gravity (in qfrc_bias too) is the bodies' gravcomp.
        d.ctrl[self._motors] = d.qfrc_bias[self._dof_arm] - d.qfrc_gravcomp[self._dof_arm]
