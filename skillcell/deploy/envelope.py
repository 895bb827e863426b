"""The safety envelope: one object per cell, from YAML, that both judges and filters.

A `SafetyEnvelope` holds the limits a policy must respect before it may drive a real robot:
joint positions and velocities, TCP linear (and optionally angular) speed, a workspace box for the
TCP, the force and torque the tool may apply, and, for welding, the minimum torch-to-part
clearance. The same object is used twice:

- **in evaluation** (`EnvelopeMonitor`, a Gymnasium wrapper): every control step the measured
  state is checked (`SafetyEnvelope.check`) and each exceeded limit is counted, so a gate can
  say which limits a policy violates and how badly;
- **in the exported runner** (`skillcell.deploy.runner`): every command is passed through
  `SafetyEnvelope.filter` before it reaches the driver, which scales it down, clips it to the
  workspace or replaces it by a hold, and names every intervention.

The tool speed limit defaults to 250 mm/s, the reduced speed of ISO 10218-1 (5.6). Limits are
checked at the control rate on the measured state, as sampled at the end of each control step;
the robot's own safety controller (which samples at its servo rate) stays the last line.

A cell's envelope lives in ``envelope.yaml`` in its asset folder (`CellEnv.cell_dir`); every key
is checked and a mistake names its key. A limit the cell declares elsewhere is named, not restated:
``tool_force_max_n: limits.tool_force_stop_n`` takes the cell's value (`skillcell.envs.limits`),
so a change of the cell's declaration (``--set limits.rated_insertion_force_n=45``) moves the
envelope with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, to_mapping
from skillcell.envs.limits import has_limit_refs, resolve_limits

__all__ = [
    "ISO_10218_REDUCED_SPEED_MM_S",
    "LIMITS",
    "EnvelopeMonitor",
    "FilterResult",
    "RobotState",
    "SafetyEnvelope",
    "Violation",
    "load_envelope",
    "robot_state",
]

#: every limit an envelope can declare, in report order; violations and interventions use these names
LIMITS = ("joint_position", "joint_velocity", "tool_speed", "tool_angular_speed", "workspace", "tool_force",
          "tool_torque", "tool_clearance")
#: the reduced TCP speed of ISO 10218-1 (5.6): the tool speed limit of an envelope that declares none
ISO_10218_REDUCED_SPEED_MM_S = 250.0


@dataclass(frozen=True)
class SafetyEnvelope:
    """Limits of one cell, in the units of the key names (cell frame for the workspace box).

    ``None`` switches an optional limit off. Joint limit lists have one entry per arm joint.
    ``min_tool_clearance_mm`` needs a cell that measures the clearance (a ``tool_clearance()``
    method returning metres, e.g. the welding torch to the part).
    """

    joint_position_min_deg: tuple[float, ...]
    joint_position_max_deg: tuple[float, ...]
    joint_velocity_max_deg_s: tuple[float, ...] = field(metadata=bounds(1e-3, 1000.0))
    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    tool_speed_max_mm_s: float = field(default=ISO_10218_REDUCED_SPEED_MM_S, metadata=bounds(0.0, 5000.0))
    tool_angular_speed_max_deg_s: float | None = field(default=None, metadata=bounds(0.0, 2000.0))
    tool_force_max_n: float | None = field(default=None, metadata=bounds(0.0, 10000.0))
    tool_torque_max_nm: float | None = field(default=None, metadata=bounds(0.0, 1000.0))
    min_tool_clearance_mm: float | None = field(default=None, metadata=bounds(0.0, 1000.0))

    def __post_init__(self) -> None:
        n = len(self.joint_position_min_deg)
        for key in ("joint_position_max_deg", "joint_velocity_max_deg_s"):
            if len(getattr(self, key)) != n:
                raise ConfigError(f"{key}: expected {n} values, as joint_position_min_deg has, "
                                  f"got {len(getattr(self, key))}")
        for i, (low, high) in enumerate(zip(self.joint_position_min_deg, self.joint_position_max_deg, strict=True)):
            if low >= high:
                raise ConfigError(f"joint_position_min_deg: joint {i} minimum {low} is not below its maximum {high}")
        if any(lo >= hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m, strict=True)):
            raise ConfigError("workspace_min_m: must be below workspace_max_m on every axis")

    # ------------------------------------------------------------------ arrays in SI units

    @property
    def q_min(self) -> np.ndarray:
        return np.radians(self.joint_position_min_deg)

    @property
    def q_max(self) -> np.ndarray:
        return np.radians(self.joint_position_max_deg)

    @property
    def qd_max(self) -> np.ndarray:
        return np.radians(self.joint_velocity_max_deg_s)

    def bound(self, limit: str) -> str:
        """The limit as text with its unit, for reports (``"250 mm/s"``)."""
        return {
            "joint_position": "joint ranges",
            "joint_velocity": f"{max(self.joint_velocity_max_deg_s):g} deg/s",
            "tool_speed": f"{self.tool_speed_max_mm_s:g} mm/s",
            "tool_angular_speed": f"{self.tool_angular_speed_max_deg_s} deg/s",
            "workspace": f"box {list(self.workspace_min_m)}..{list(self.workspace_max_m)} m",
            "tool_force": f"{self.tool_force_max_n} N",
            "tool_torque": f"{self.tool_torque_max_nm} N*m",
            "tool_clearance": f"{self.min_tool_clearance_mm} mm",
        }[limit]

    @staticmethod
    def unit(limit: str) -> str:
        """The unit of a `Violation.value` for ``limit``."""
        return {"joint_position": "deg", "joint_velocity": "deg/s", "tool_speed": "mm/s",
                "tool_angular_speed": "deg/s", "workspace": "mm outside", "tool_force": "N",
                "tool_torque": "N*m", "tool_clearance": "mm"}[limit]

    @property
    def active_limits(self) -> tuple[str, ...]:
        """The limits this envelope checks (optional ones set to ``None`` are left out)."""
        off = {"tool_angular_speed": self.tool_angular_speed_max_deg_s, "tool_force": self.tool_force_max_n,
               "tool_torque": self.tool_torque_max_nm, "tool_clearance": self.min_tool_clearance_mm}
        return tuple(name for name in LIMITS if off.get(name, 0.0) is not None)

    def to_mapping(self) -> dict[str, Any]:
        return to_mapping(self)

    # ------------------------------------------------------------------ judging

    def check(self, state: RobotState) -> list[Violation]:
        """Every limit the measured ``state`` exceeds, with how far (value in the limit's unit)."""
        out = []
        q_low = state.joint_pos < self.q_min
        q_high = state.joint_pos > self.q_max
        if q_low.any() or q_high.any():
            excess = np.maximum(self.q_min - state.joint_pos, state.joint_pos - self.q_max)
            j = int(np.argmax(excess))
            out.append(Violation("joint_position", math.degrees(state.joint_pos[j]),
                                 f"joint {j} at {math.degrees(state.joint_pos[j]):.1f} deg, outside "
                                 f"[{self.joint_position_min_deg[j]}, {self.joint_position_max_deg[j]}]"))
        ratio = np.abs(state.joint_vel) / self.qd_max
        if (ratio > 1.0).any():
            j = int(np.argmax(ratio))
            out.append(Violation("joint_velocity", math.degrees(abs(state.joint_vel[j])),
                                 f"joint {j} at {math.degrees(abs(state.joint_vel[j])):.1f} deg/s"))
        speed = float(np.linalg.norm(state.tcp_lin_vel)) * 1e3
        if speed > self.tool_speed_max_mm_s:
            out.append(Violation("tool_speed", speed, f"{speed:.1f} mm/s"))
        if self.tool_angular_speed_max_deg_s is not None:
            omega = math.degrees(float(np.linalg.norm(state.tcp_ang_vel)))
            if omega > self.tool_angular_speed_max_deg_s:
                out.append(Violation("tool_angular_speed", omega, f"{omega:.1f} deg/s"))
        low, high = np.array(self.workspace_min_m), np.array(self.workspace_max_m)
        outside = float(np.max(np.maximum(low - state.tcp_pos, state.tcp_pos - high)))
        if outside > 0.0:
            out.append(Violation("workspace", outside * 1e3, f"TCP {outside * 1e3:.1f} mm outside the box"))
        if self.tool_force_max_n is not None:
            force = float(np.linalg.norm(state.force))
            if force > self.tool_force_max_n:
                out.append(Violation("tool_force", force, f"{force:.1f} N"))
        if self.tool_torque_max_nm is not None:
            torque = float(np.linalg.norm(state.torque))
            if torque > self.tool_torque_max_nm:
                out.append(Violation("tool_torque", torque, f"{torque:.2f} N*m"))
        if self.min_tool_clearance_mm is not None and state.clearance_m is not None:
            clearance = state.clearance_m * 1e3
            if clearance < self.min_tool_clearance_mm:
                out.append(Violation("tool_clearance", clearance, f"{clearance:.1f} mm"))
        return out

    # ------------------------------------------------------------------ filtering

    def filter(self, command: np.ndarray, state: RobotState, dt: float) -> FilterResult:
        """Makes a command safe to send, given the measured state; never passes a non-finite value.

        ``command`` is the TCP pose delta for one control period (`skillcell.deploy.runner`):
        ``[dx, dy, dz]`` in metres and a rotation vector ``[rx, ry, rz]`` in radians, both in the
        cell frame, then the cell's task channels. In order:

        1. a command of the wrong shape or with NaN/inf, a tool force or torque over its limit, or
           a clearance under its minimum: **hold** (the driver stops and holds the measured pose;
           holding releases the force a position-controlled arm builds from its command lead);
        2. one factor ``s`` in ``[0, 1]`` scales the whole pose delta (keeping its direction) so
           that the commanded TCP speed, angular speed, the joint velocities and the joint
           positions predicted through the TCP Jacobian (damped least squares) stay in their
           limits; a joint already outside its range may only move back;
        3. the commanded position is clipped to the workspace box.

        Task channels pass unchanged (a hold switches them off).
        """
        interventions: list[str] = []
        command = np.asarray(command, dtype=np.float64).reshape(-1) if np.ndim(command) else np.zeros(0)
        if command.size < 6 or not np.isfinite(command).all():
            return FilterResult(np.zeros(max(command.size, 6)), True, ("non_finite_command",))
        if self.tool_force_max_n is not None and np.linalg.norm(state.force) > self.tool_force_max_n:
            interventions.append("tool_force")
        if self.tool_torque_max_nm is not None and np.linalg.norm(state.torque) > self.tool_torque_max_nm:
            interventions.append("tool_torque")
        if (self.min_tool_clearance_mm is not None and state.clearance_m is not None
                and state.clearance_m * 1e3 < self.min_tool_clearance_mm):
            interventions.append("tool_clearance")
        if interventions:
            return FilterResult(np.zeros_like(command), True, tuple(interventions))

        out = command.copy()
        delta = out[:6]
        factors: dict[str, float] = {}
        translation = float(np.linalg.norm(delta[:3]))
        if translation > 0.0:
            factors["tool_speed"] = self.tool_speed_max_mm_s * 1e-3 * dt / translation
        rotation = float(np.linalg.norm(delta[3:6]))
        if self.tool_angular_speed_max_deg_s is not None and rotation > 0.0:
            factors["tool_angular_speed"] = math.radians(self.tool_angular_speed_max_deg_s) * dt / rotation
        if state.jacobian is not None and (translation > 0.0 or rotation > 0.0):
            j = state.jacobian
            dq = j.T @ np.linalg.solve(j @ j.T + 1e-4 * np.eye(6), delta)
            moving = np.abs(dq) > 1e-12
            if moving.any():
                factors["joint_velocity"] = float(np.min(self.qd_max[moving] * dt / np.abs(dq[moving])))
            room = np.where(dq > 0, self.q_max - state.joint_pos, self.q_min - state.joint_pos)
            # Room of the wrong sign means the joint is already outside: no motion further out.
            allowed = np.where(moving, np.clip(room / np.where(moving, dq, 1.0), 0.0, np.inf), np.inf)
            factors["joint_position"] = float(np.min(allowed))
        scale = 1.0
        for name, factor in factors.items():
            if factor < 1.0 - 1e-9:
                interventions.append(name)
                scale = min(scale, max(factor, 0.0))
        delta *= scale
        low, high = np.array(self.workspace_min_m), np.array(self.workspace_max_m)
        target = state.cmd_pos + delta[:3]
        clipped = np.clip(target, low, high)
        if not np.allclose(clipped, target, rtol=0.0, atol=1e-12):
            interventions.append("workspace")
            delta[:3] = clipped - state.cmd_pos
        return FilterResult(out, False, tuple(interventions))

    def validate_for(self, env: Any) -> SafetyEnvelope:
        """Checks that the envelope fits ``env``'s robot and cell; returns itself."""
        u = env.unwrapped
        n = len(u.arm_qpos_adr)
        if len(self.joint_position_min_deg) != n:
            raise ConfigError(f"joint_position_min_deg: expected {n} values (one per arm joint), "
                              f"got {len(self.joint_position_min_deg)}")
        if self.min_tool_clearance_mm is not None and not callable(getattr(u, "tool_clearance", None)):
            raise ConfigError(f"min_tool_clearance_mm: {type(u).__name__} does not measure a tool clearance "
                              "(it needs a tool_clearance() method returning metres)")
        return self


@dataclass(frozen=True)
class Violation:
    """One limit exceeded at one instant: ``value`` in the limit's unit (mm/s, N, deg, mm...)."""

    limit: str
    value: float
    detail: str


@dataclass(frozen=True)
class FilterResult:
    """What `SafetyEnvelope.filter` made of a command: send ``command``, or hold if ``hold``."""

    command: np.ndarray
    hold: bool
    interventions: tuple[str, ...]


@dataclass
class RobotState:
    """What a driver measures at one control instant; SI units, cell frame.

    A hardware driver fills this from the robot controller (joint state, TCP pose and speed, the
    tared F/T reading rotated into the cell frame, the TCP Jacobian from its kinematic model);
    `robot_state` fills it from the simulation.
    """

    stamp_s: float  # driver clock
    joint_pos: np.ndarray  # rad
    joint_vel: np.ndarray  # rad/s
    tcp_pos: np.ndarray  # m
    tcp_quat: np.ndarray  # (w, x, y, z)
    tcp_lin_vel: np.ndarray  # m/s
    tcp_ang_vel: np.ndarray  # rad/s
    cmd_pos: np.ndarray  # m, the commanded TCP position the next delta moves
    force: np.ndarray  # N, force the tool applies, cell frame
    torque: np.ndarray  # N*m, torque the tool applies, cell frame
    jacobian: np.ndarray | None = None  # (6, n_joints): [linear; angular] TCP velocity per joint velocity
    clearance_m: float | None = None  # tool-to-part clearance where the cell measures one


def robot_state(env: Any) -> RobotState:
    """The measured `RobotState` of a `CellEnv` (ground truth: no tier noise or bias)."""
    u = env.unwrapped
    m, d = u.model, u.data
    vel = np.zeros(6)
    mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, u.tcp_site, vel, 0)
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, d.site_xmat[u.tcp_site])
    R_world_ft = d.site_xmat[u.ft_site].reshape(3, 3)
    jac = np.zeros((6, m.nv))
    mujoco.mj_jacSite(m, d, jac[:3], jac[3:], u.tcp_site)
    clearance = u.tool_clearance() if callable(getattr(u, "tool_clearance", None)) else None
    return RobotState(
        stamp_s=float(d.time),
        joint_pos=d.qpos[u.arm_qpos_adr].copy(),
        joint_vel=d.qvel[u.arm_dof_adr].copy(),
        tcp_pos=d.site_xpos[u.tcp_site].copy(),
        tcp_quat=quat,
        tcp_lin_vel=vel[3:].copy(),
        tcp_ang_vel=vel[:3].copy(),
        cmd_pos=u.controller.p_world_cmd.copy(),
        force=R_world_ft @ u.wrench_tool[:3],
        torque=R_world_ft @ u.wrench_tool[3:],
        jacobian=jac[:, u.arm_dof_adr],
        clearance_m=None if clearance is None else float(clearance),
    )


def load_envelope(source: Any, overrides: dict[str, Any] | None = None, *, env: Any = None) -> SafetyEnvelope:
    """The envelope from a YAML path, or a cell env's own ``envelope.yaml``; checked against the env.

    ``overrides`` is a mapping laid over the file (e.g. ``{"tool_speed_max_mm_s": 100}``). Values
    ``limits.<name>`` are the env's limits (`CellEnv.limits`); a file loaded by path takes them
    from ``env`` (which it is then also checked against).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
    else:
        env = source
        found = env.unwrapped.cell_file("envelope.yaml")
        if found is None:
            raise ConfigError(f"envelope: {type(env.unwrapped).__name__} declares no envelope.yaml in its cell "
                              f"folder ({env.unwrapped.cell_dir}); pass one explicitly")
        path = found
    data = load_yaml(path)
    if overrides:
        data = {**data, **overrides}
    try:
        if env is not None:
            data = resolve_limits(data, env.unwrapped.limits)
        elif has_limit_refs(data):
            raise ConfigError("refers to a cell's limits (limits.<name>): load it for a cell (env=...)")
        envelope = from_mapping(SafetyEnvelope, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if env is not None:
        try:
            envelope.validate_for(env)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return envelope


class EnvelopeMonitor(gym.Wrapper):
    """Checks the envelope after every step and counts violations per limit over the episode.

    Adds to ``info``: ``envelope_violations`` (``{limit: steps in violation so far}``),
    ``envelope_worst`` (``{limit: worst value}``, in the limit's unit) and ``envelope_step``
    (this step's violated limits). Steps that end in physics instability are not judged: the
    engine has already reset the state.
    """

    def __init__(self, env: gym.Env, envelope: SafetyEnvelope):
        super().__init__(env)
        self.envelope = envelope.validate_for(env)
        self.violations: dict[str, int] = {}
        self.worst: dict[str, float] = {}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.violations, self.worst = {}, {}
        return obs, {**info, **self._info(())}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        found: Sequence[Violation] = () if info.get("instability") else self.envelope.check(robot_state(self.env))
        for v in found:
            self.violations[v.limit] = self.violations.get(v.limit, 0) + 1
            # For a minimum (clearance) the worst is the smallest value, else the largest.
            worse = min if v.limit == "tool_clearance" else max
            self.worst[v.limit] = worse(self.worst.get(v.limit, v.value), v.value)
        return obs, reward, terminated, truncated, {**info, **self._info(found)}

    def _info(self, found: Sequence[Violation]) -> dict[str, Any]:
        return {"envelope_violations": dict(self.violations), "envelope_worst": dict(self.worst),
                "envelope_step": [v.limit for v in found]}
