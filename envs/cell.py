"""What a cell *is*: its YAML description and the MuJoCo model composed from it.

A cell is the project's own scene MJCF (floor, table, fixture, cameras, physics options) with a
Menagerie robot attached at the scene's ``robot_mount`` site and a tool attached at the robot's
flange site, all with `mujoco.MjSpec` attach, so nothing is copied. Task-specific geometry (a hole
of a given clearance, a seam) is added to the spec by the cell's env before compiling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import mujoco
import mujoco_menagerie

from skillcell import assets
from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, merge, quote
from skillcell.envs.impedance import use_torque_actuators

__all__ = [
    "ROBOT_PREFIX",
    "TOOL_PREFIX",
    "CellConfig",
    "ControlConfig",
    "ImpedanceConfig",
    "MenagerieUnavailableError",
    "RobotConfig",
    "ToolConfig",
    "compose_cell",
    "load_cell_config",
]

ROBOT_PREFIX = "robot/"
TOOL_PREFIX = "tool/"

C = TypeVar("C", bound="CellConfig")


class MenagerieUnavailableError(RuntimeError):
    """The Menagerie robot model cannot be had: `MENAGERIE_ROOT` is wrong, or the download failed (offline)."""


@dataclass(frozen=True)
class RobotConfig:
    """The robot: a MuJoCo Menagerie model, loaded through the `mujoco-menagerie` package."""

    menagerie: str = "universal_robots_ur5e"
    model: str = "ur5e"
    keyframe: str = "home"
    flange_site: str = "attachment_site"
    gravity_compensation: bool = True


@dataclass(frozen=True)
class ToolConfig:
    """The tool MJCF attached at the flange, and the names of its TCP and F/T sites."""

    mjcf: str = "tools/peg_tool/tool.xml"
    body: str = "tool"
    tcp_site: str = "tcp"
    ft_site: str = "ft"


@dataclass(frozen=True)
class ImpedanceConfig:
    """The Cartesian spring and damper of ``control.mode: impedance`` (`skillcell.envs.impedance`), per
    cell axis at the TCP: translation, then rotation."""

    stiffness_n_per_m: tuple[float, float, float] = field(default=(1000.0, 1000.0, 1000.0),
                                                          metadata=bounds(10.0, 1e5))
    stiffness_nm_per_rad: tuple[float, float, float] = field(default=(200.0, 200.0, 200.0),
                                                             metadata=bounds(0.1, 1e4))
    damping_n_s_per_m: tuple[float, float, float] = field(default=(180.0, 180.0, 180.0), metadata=bounds(0.0, 1e5))
    damping_nm_s_per_rad: tuple[float, float, float] = field(default=(14.0, 14.0, 14.0), metadata=bounds(0.0, 1e4))

    @property
    def stiffness(self) -> tuple[float, ...]:
        """The six stiffnesses, translation (N/m) then rotation (N*m/rad)."""
        return (*self.stiffness_n_per_m, *self.stiffness_nm_per_rad)

    @property
    def damping(self) -> tuple[float, ...]:
        """The six dampings, translation (N*s/m) then rotation (N*m*s/rad)."""
        return (*self.damping_n_s_per_m, *self.damping_nm_s_per_rad)


@dataclass(frozen=True)
class ControlConfig:
    """Physics and control rates, the control mode, and the Cartesian action scaling of `CellEnv`.

    ``mode``: ``position`` drives the arm's joint servos by differential IK
    (`skillcell.envs.control.CartesianController`); ``impedance`` makes the joints torque-driven
    and holds the tool on a Cartesian spring and damper (``impedance``) about the commanded pose
    (`skillcell.envs.impedance.ImpedanceController`). The action interface is the same in both.
    """

    mode: Literal["position", "impedance"] = "position"
    impedance: ImpedanceConfig = ImpedanceConfig()
    timestep_s: float = field(default=0.0005, metadata=bounds(1e-5, 0.01))
    control_hz: float = field(default=20.0, metadata=bounds(1.0, 1000.0))
    max_translation_mm: float = field(default=5.0, metadata=bounds(0.01, 50.0))
    max_rotation_deg: float = field(default=3.0, metadata=bounds(0.01, 30.0))
    max_lead_mm: float = field(default=10.0, metadata=bounds(0.1, 100.0))
    max_lead_deg: float = field(default=6.0, metadata=bounds(0.1, 45.0))
    velocity_feedforward: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    workspace_min_m: tuple[float, float, float] = (-1.0, -1.0, 0.0)
    workspace_max_m: tuple[float, float, float] = (1.0, 1.0, 2.0)

    def __post_init__(self) -> None:
        substeps = 1.0 / (self.control_hz * self.timestep_s)
        if abs(substeps - round(substeps)) > 1e-6:
            raise ConfigError(
                f"control_hz: 1/(control_hz*timestep_s) must be a whole number of physics "
                f"steps, got {substeps:.4f}"
            )
        if any(lo >= hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m, strict=True)):
            raise ConfigError("workspace_min_m: must be below workspace_max_m on every axis")

    @property
    def n_substeps(self) -> int:
        return round(1.0 / (self.control_hz * self.timestep_s))


@dataclass(frozen=True)
class CellConfig:
    """Fields every cell shares; a cell's config subclasses this with its task sections."""

    scene: str = ""
    robot: RobotConfig = RobotConfig()
    tool: ToolConfig = ToolConfig()
    control: ControlConfig = ControlConfig()

    def __post_init__(self) -> None:
        if self.control.mode == "impedance" and not self.robot.gravity_compensation:
            raise ConfigError("control.mode: impedance needs robot.gravity_compensation: true (a torque-driven "
                              "arm holds its own weight only with the gravity feed-forward)")


def load_cell_config(cls: type[C], default_yaml: Path | Sequence[Path], cell: str | Path | None,
                     overrides: dict[str, Any] | None = None) -> C:
    """The packaged YAML (or layers of them, a variant over a base), overlaid by the YAML file
    `cell`, then by the mapping `overrides`.

    Relative asset paths in a user's YAML file resolve against that file's folder first, then the
    packaged assets, so a custom cell can ship its own scene next to its YAML.
    """
    data: dict[str, Any] = {}
    for layer in [default_yaml] if isinstance(default_yaml, Path) else default_yaml:
        data = merge(data, load_yaml(layer))
    if isinstance(cell, (str, Path)):
        user = load_yaml(cell)
        base_dir = Path(cell).resolve().parent
        for section, key in (("", "scene"), ("tool", "mjcf")):
            holder = user.get(section, {}) if section else user
            if isinstance(holder, dict) and isinstance(holder.get(key), str):
                candidate = base_dir / holder[key]
                if candidate.is_file():
                    holder[key] = str(candidate)
        data = merge(data, user)
    elif cell is not None:
        raise ConfigError(f"cell: expected the path of a YAML file, got {type(cell).__name__}")
    if overrides:
        if not isinstance(overrides, dict):
            raise ConfigError(f"overrides: expected a mapping, got {type(overrides).__name__}")
        data = merge(data, overrides)
    return from_mapping(cls, data)


def _asset_file(relative: str, key: str) -> Path:
    path = Path(relative)
    if not path.is_absolute():
        path = assets.path(*path.parts)
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {quote(str(path))}")
    return path


def load_robot_spec(robot: RobotConfig) -> mujoco.MjSpec:
    """The Menagerie robot as an `MjSpec`; offline, `MENAGERIE_ROOT` must point at a Menagerie copy."""
    try:
        entry = mujoco_menagerie.get(robot.menagerie)
    except mujoco_menagerie.MenagerieError as exc:
        raise ConfigError(f"robot.menagerie: {exc}") from None
    try:
        return entry.spec(robot.model)
    except mujoco_menagerie.UnknownEntryPointError as exc:
        raise ConfigError(f"robot.model: {exc}") from None
    except mujoco_menagerie.MenagerieError as exc:
        root = os.environ.get("MENAGERIE_ROOT")
        if root and not (Path(root) / robot.menagerie).is_dir():
            problem = f"MENAGERIE_ROOT={root} has no folder {robot.menagerie}/"
            fix = "point MENAGERIE_ROOT at a copy of the Menagerie model folders, or unset it to download them"
        else:
            problem = " ".join(str(exc).split())  # one line, whatever the download error says
            fix = ("offline, set MENAGERIE_ROOT to a copy of the Menagerie model folders (from a clone's root "
                   "with shared/ beside it: MENAGERIE_ROOT=../shared/menagerie)")
        raise MenagerieUnavailableError(f"cannot load the Menagerie robot {robot.menagerie!r}: {problem}; {fix}") \
            from None


def compose_cell(config: CellConfig) -> mujoco.MjSpec:
    """Scene + robot at ``robot_mount`` + tool at the robot's flange, as one uncompiled `MjSpec`.

    Robot names get the prefix ``robot/`` and tool names ``tool/``. With
    ``robot.gravity_compensation`` every robot and tool body carries ``gravcomp=1``, which stands
    in for the gravity feed-forward of a real arm controller; the F/T sensor still reads the tool
    weight, as a real one does, and `CellEnv` compensates it. With ``control.mode: impedance`` the
    robot's joint servos are replaced by torque motors and Cartesian spring-dampers
    (`skillcell.envs.impedance.use_torque_actuators`).
    """
    scene = mujoco.MjSpec.from_file(str(_asset_file(config.scene, "scene")))
    robot = load_robot_spec(config.robot)
    tool = mujoco.MjSpec.from_file(str(_asset_file(config.tool.mjcf, "tool.mjcf")))

    if config.robot.gravity_compensation:
        for body in (*robot.bodies, *tool.bodies):
            body.gravcomp = 1.0
    if config.control.mode == "impedance":
        impedance = config.control.impedance
        use_torque_actuators(robot, impedance.stiffness, impedance.damping)

    mount = scene.site("robot_mount")
    if mount is None:
        raise ConfigError(f"scene: {config.scene} has no site named 'robot_mount'")
    mount.attach_body(robot.worldbody.first_body(), prefix=ROBOT_PREFIX)

    flange = scene.site(ROBOT_PREFIX + config.robot.flange_site)
    if flange is None:
        raise ConfigError(f"robot.flange_site: the robot has no site {quote(config.robot.flange_site)}")
    tool_body = tool.body(config.tool.body)
    if tool_body is None:
        raise ConfigError(f"tool.body: {config.tool.mjcf} has no body {quote(config.tool.body)}")
    flange.attach_body(tool_body, prefix=TOOL_PREFIX)

    for key in ("tcp_site", "ft_site"):
        name = getattr(config.tool, key)
        if scene.site(TOOL_PREFIX + name) is None:
            raise ConfigError(f"tool.{key}: {config.tool.mjcf} has no site {quote(name)}")
    return scene

