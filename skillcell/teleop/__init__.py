"""Teleoperation: a person drives a cell through a device, and the episodes are recorded.

- `TeleopDevice` (shaped like LeRobot's ``Teleoperator``) and its devices: `KeyboardDevice` (a
  terminal), `SpaceMouseDevice` (``pyspacemouse``, the ``skillcell[teleop]`` extra) and
  `ScriptDevice` (timed commands from a YAML file); `make_device` builds one from a spec.
- `record_teleop` runs a session at the cell's control rate into a `skillcell.demos` dataset,
  with the operator and the device in every episode's provenance.

``skillcell teleop ENV_ID --device ... --out DATASET`` is the command line over these.
"""

from skillcell.teleop.devices import (
    KeyboardDevice,
    ScriptDevice,
    SpaceMouseDevice,
    TeleopCommand,
    TeleopDevice,
    TeleopError,
    TeleopEvent,
    make_device,
)
from skillcell.teleop.session import TeleopSummary, record_teleop

__all__ = [
    "KeyboardDevice",
    "ScriptDevice",
    "SpaceMouseDevice",
    "TeleopCommand",
    "TeleopDevice",
    "TeleopError",
    "TeleopEvent",
    "TeleopSummary",
    "make_device",
    "record_teleop",
]
