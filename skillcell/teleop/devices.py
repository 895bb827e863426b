"""Teleoperation devices: what a person at a keyboard, a SpaceMouse or a script tells a cell.

The protocol, `TeleopDevice`, is shaped like LeRobot's ``Teleoperator`` (``connect`` /
``disconnect`` / ``is_connected``, ``is_calibrated`` / ``calibrate`` / ``configure``,
``action_features`` with ``get_action``, ``feedback_features`` with ``send_feedback``,
``get_teleop_events``), adapted to skillcell's cells: `TeleopDevice.read` returns one
`TeleopCommand` per control step, made of

- ``delta``: the tool-pose delta in the cell frame, normalized as the env's action is
  (``[dx, dy, dz, drx, dry, drz]`` in [-1, 1]; 1.0 is the cell's ``control.max_translation_mm``
  or ``control.max_rotation_deg`` per control period, so a delta of 0.2 on a 5 mm / 50 ms cell
  is 20 mm/s),
- ``task``: the task channels by the env's names (``arc`` for welding), -1.0 off, 1.0 on, as the
  capture importer sets them,
- ``events``: the operator's `TeleopEvent` buttons (save, discard, quit).

Devices here: `KeyboardDevice` (a terminal, standard library only), `SpaceMouseDevice`
(3Dconnexion through ``pyspacemouse`` and hidapi, the ``skillcell[teleop]`` extra) and
`ScriptDevice` (timed commands from a YAML file, for headless runs and tests). `make_device`
builds one from a ``--device`` spec.
"""

from __future__ import annotations

import abc
import enum
import math
import os
import select
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skillcell.config import ConfigError, parse_yaml

__all__ = [
    "DEFAULT_SPEED",
    "DELTA_NAMES",
    "DEVICE_KINDS",
    "SPEED_LEVELS",
    "KeyboardDevice",
    "ScriptDevice",
    "SpaceMouseDevice",
    "TeleopCommand",
    "TeleopDevice",
    "TeleopError",
    "TeleopEvent",
    "check_device_spec",
    "make_device",
]

#: the six pose-delta channels, named as `CellEnv.action_names` names them
DELTA_NAMES = ("tcp_dx", "tcp_dy", "tcp_dz", "tcp_drx", "tcp_dry", "tcp_drz")
#: jog speeds of the keyboard and the SpaceMouse, as fractions of the cell's command limit
#: (on the 5 mm / 50 ms cells: 2, 5, 10, 20, 50 and 100 mm/s; a weld travels at 6-10 mm/s)
SPEED_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
DEFAULT_SPEED = 0.2
_OFF, _ON = -1.0, 1.0


class TeleopError(ValueError):
    """A device that cannot be opened or read, a bad device spec or script: one line for the user."""


class TeleopEvent(enum.Enum):
    """The operator's episode buttons."""

    SAVE = "save"  # end the episode now and keep it
    DISCARD = "discard"  # end the episode now and drop it; the same seed runs again
    QUIT = "quit"  # end the session; an episode in progress is dropped, saved ones stay


@dataclass(frozen=True)
class TeleopCommand:
    """One control step of operator input; see the module docstring for the units."""

    delta: np.ndarray
    task: Mapping[str, float] = field(default_factory=dict)
    events: frozenset[TeleopEvent] = frozenset()

    def action(self, task_channels: Sequence[str]) -> np.ndarray:
        """The env action: ``delta`` then the task channels in the env's order (float32, as its space)."""
        return np.array([*self.delta, *(self.task.get(name, _OFF) for name in task_channels)], dtype=np.float32)

    @property
    def moving(self) -> bool:
        """Whether the operator commands motion or has a task channel on: what starts an episode."""
        return bool(np.any(self.delta != 0.0)) or any(v > 0.0 for v in self.task.values())


class TeleopDevice(abc.ABC):
    """A teleoperation device for a cell with the task channels ``task_channels``.

    Subclasses implement `connect`, `disconnect`, `is_connected` and `read`; calibration and
    configuration are no-ops unless the hardware needs them. Use as a context manager, or call
    `connect` and `disconnect`.
    """

    #: short name: the ``--device`` kind and the ``source_device`` of the recorded provenance
    name: ClassVar[str]

    #: the jog speed (a fraction of the cell's command limit) where the device has one
    speed: float | None = None

    def __init__(self, task_channels: Sequence[str] = ()):
        self.task_channels = tuple(task_channels)
        self._task = dict.fromkeys(self.task_channels, _OFF)
        self._pending_events: set[TeleopEvent] = set()

    def reset(self) -> None:
        """A new episode starts: every task channel off (an arc left on must not strike at the start)."""
        self._task = dict.fromkeys(self.task_channels, _OFF)

    @property
    def description(self) -> str:
        """What the provenance records as the device (kind, model, file)."""
        return self.name

    @property
    def action_features(self) -> dict[str, type]:
        """The keys of `get_action`: the env's action names, pose delta then task channels."""
        return {name: float for name in (*DELTA_NAMES, *self.task_channels)}

    @property
    def feedback_features(self) -> dict[str, type]:
        """What `send_feedback` uses; the session sends ``recording`` (bool) and ``force_n`` (float)."""
        return {}

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self, calibrate: bool = True) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:  # noqa: B027 (an optional hook, as in LeRobot)
        """Nothing to calibrate: keys and a SpaceMouse's axes are centred by the hardware."""

    def configure(self) -> None:  # noqa: B027 (an optional hook, as in LeRobot)
        """Nothing to configure beyond the constructor's settings."""

    @abc.abstractmethod
    def read(self) -> TeleopCommand:
        """The operator's command for this control step; never blocks."""

    def get_action(self) -> dict[str, float]:
        """LeRobot's view of `read`: a flat mapping over `action_features`; the events wait for
        `get_teleop_events`."""
        command = self.read()
        self._pending_events |= command.events
        return dict(zip(self.action_features, command.action(self.task_channels).tolist(), strict=True))

    def get_teleop_events(self) -> frozenset[TeleopEvent]:
        """The events of the `get_action` calls since the last call."""
        events, self._pending_events = frozenset(self._pending_events), set()
        return events

    def send_feedback(self, feedback: Mapping[str, Any]) -> None:  # noqa: B027 (an optional hook, as in LeRobot)
        """Shows the keys of ``feedback`` that `feedback_features` lists; others are ignored."""

    def _require_connected(self) -> None:
        if not self.is_connected:
            raise TeleopError(f"{self.name}: not connected; call connect() first")

    def __enter__(self) -> TeleopDevice:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_connected:
            self.disconnect()


def _toggle(task: dict[str, float], name: str) -> None:
    task[name] = _OFF if task[name] > 0.0 else _ON


def _step_speed(levels: Sequence[float], speed: float, up: bool) -> float:
    """The next level above (or below) ``speed``, staying at the ends."""
    if up:
        return next((s for s in levels if s > speed + 1e-12), levels[-1])
    return next((s for s in reversed(levels) if s < speed - 1e-12), levels[0])


def _check_speed(speed: float) -> float:
    if not (isinstance(speed, (int, float)) and 0.0 < speed <= 1.0):
        raise TeleopError(f"speed must be in (0, 1] (a fraction of the cell's command limit), got {speed!r}")
    return float(speed)


# ---------------------------------------------------------------------- keyboard

#: key -> (delta channel, sign)
KEY_AXES: dict[bytes, tuple[int, float]] = {
    b"w": (0, 1.0), b"s": (0, -1.0), b"a": (1, 1.0), b"d": (1, -1.0), b"q": (2, 1.0), b"e": (2, -1.0),
    b"i": (3, 1.0), b"k": (3, -1.0), b"j": (4, 1.0), b"l": (4, -1.0), b"u": (5, 1.0), b"o": (5, -1.0),
}
KEY_EVENTS: dict[bytes, TeleopEvent] = {
    b"\r": TeleopEvent.SAVE, b"\n": TeleopEvent.SAVE,
    b"\x7f": TeleopEvent.DISCARD, b"\x08": TeleopEvent.DISCARD,
    b"\x1b": TeleopEvent.QUIT,
}
_ESC = 0x1B


class KeyboardDevice(TeleopDevice):
    """The terminal keyboard: standard input in cbreak mode (``termios``/``tty``), polled with ``select``.

    No X server, no ``pynput``: it works over SSH. Key map (cell frame; upper case works too)::

        w / s   +x / -x        i / k   rotate +x / -x      space   task channel 1 on/off (welding: the arc)
        a / d   +y / -y        j / l   rotate +y / -y      1-9     task channel N on/off
        q / e   +z / -z (up)   u / o   rotate +z / -z      + / -   faster / slower (SPEED_LEVELS)
        enter   save the episode      backspace   discard it      esc   quit      ctrl-c   quit

    A terminal reports key presses, not releases: a key counts as held for ``hold_s`` after
    its last byte, so a tap jogs for ``hold_s`` (0.1 s: 2 mm at the default 20 mm/s) and a held
    key moves steadily once the terminal's key repeat starts (after its repeat delay, typically
    0.25-0.5 s; the repeat interval must stay under ``hold_s``). Of two opposite keys the later
    wins. Escape sequences (arrow and function keys) are ignored.

    Args:
        task_channels: the env's task channel names (``action_names[6:]``).
        speed: the starting jog speed, a fraction of the cell's command limit.
        fd: the terminal's file descriptor (default: standard input).
        hold_s: how long a key press counts as held.
        clock: seconds, monotonic (tests pass their own).
    """

    name = "keyboard"

    def __init__(self, task_channels: Sequence[str] = (), *, speed: float = DEFAULT_SPEED, fd: int | None = None,
                 hold_s: float = 0.1, clock: Callable[[], float] = time.monotonic):
        super().__init__(task_channels)
        self.speed = _check_speed(speed)
        self.fd = fd
        self.hold_s = float(hold_s)
        self.clock = clock
        self._saved_attrs: list | None = None
        self._held: dict[int, tuple[float, float]] = {}  # channel -> (sign, time of the last byte)

    @property
    def is_connected(self) -> bool:
        return self._saved_attrs is not None

    def connect(self, calibrate: bool = True) -> None:
        import termios
        import tty

        try:
            fd = sys.stdin.fileno() if self.fd is None else self.fd
        except (OSError, ValueError):  # standard input closed or replaced (a test runner's capture)
            fd = -1
        if fd < 0 or not os.isatty(fd):
            raise TeleopError("keyboard: standard input is not a terminal; run in a terminal, or record "
                              "headless with --device script:FILE")
        self.fd = fd
        self._saved_attrs = termios.tcgetattr(fd)
        # cbreak, not raw: keys arrive one by one without echo, while ctrl-c still interrupts and
        # output keeps its newline translation, so the status line prints normally.
        tty.setcbreak(fd, termios.TCSANOW)

    def disconnect(self) -> None:
        import termios

        if self._saved_attrs is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_attrs)
            self._saved_attrs = None

    def reset(self) -> None:
        super().reset()
        self._held.clear()

    def read(self) -> TeleopCommand:
        self._require_connected()
        now = self.clock()
        events = self.feed(self._read_available(), now)
        delta = np.zeros(6)
        for channel, (sign, pressed) in self._held.items():
            if now - pressed < self.hold_s:
                delta[channel] = sign * self.speed
        return TeleopCommand(delta, dict(self._task), frozenset(events))

    def feed(self, data: bytes, now: float) -> set[TeleopEvent]:
        """Applies the key bytes ``data`` received at ``now``; returns the events among them."""
        events: set[TeleopEvent] = set()
        i = 0
        while i < len(data):
            byte = data[i:i + 1]
            if data[i] == _ESC and i + 1 < len(data) and data[i + 1] in b"[O":
                i = _skip_escape_sequence(data, i)
                continue
            i += 1
            key = byte.lower()
            if key in KEY_AXES:
                channel, sign = KEY_AXES[key]
                self._held[channel] = (sign, now)
            elif byte in KEY_EVENTS:
                events.add(KEY_EVENTS[byte])
            elif byte in (b"+", b"="):
                self.speed = _step_speed(SPEED_LEVELS, self.speed, up=True)
            elif byte in (b"-", b"_"):
                self.speed = _step_speed(SPEED_LEVELS, self.speed, up=False)
            elif byte == b" " or byte in b"123456789":
                index = 0 if byte == b" " else int(byte) - 1
                if index < len(self.task_channels):
                    _toggle(self._task, self.task_channels[index])
        return events

    def _read_available(self) -> bytes:
        chunks = []
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 1024)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        # A lone trailing ESC may be the start of an arrow key's sequence still on its way.
        if data.endswith(b"\x1b") and select.select([self.fd], [], [], 0.03)[0]:
            data += os.read(self.fd, 1024)
        return data


def _skip_escape_sequence(data: bytes, i: int) -> int:
    """Index after the CSI/SS3 sequence starting at ``data[i]`` (ESC [ ... final byte, or ESC O x)."""
    if data[i + 1:i + 2] == b"O":
        return min(i + 3, len(data))
    j = i + 2
    while j < len(data) and not 0x40 <= data[j] <= 0x7E:
        j += 1
    return j + 1


# ---------------------------------------------------------------------- SpaceMouse

_TELEOP_EXTRA = 'pip install "skillcell[teleop]"'


class SpaceMouseDevice(TeleopDevice):
    """A 3Dconnexion SpaceMouse through ``pyspacemouse`` (raw HID via hidapi; no 3Dconnexion driver).

    Axes in pyspacemouse's ``HID_Z_UP`` convention (right-handed: x right, y away from the
    operator, z up; roll, pitch, yaw about them) drive the cell frame's x, y, z and rotations
    about them, each deflection in [-1, 1] times ``speed``, with a ``deadband`` against drift.
    Buttons act on release, so that pressing both is a gesture of its own:

    ===================  ==========================================================
    left button          task channel 1 on/off (welding: the arc)
    right button         save the episode
    both together        discard the episode
    ===================  ==========================================================

    Quit with ctrl-c in the terminal. The LED (where the model has one) is on while recording.
    Linux needs read access to ``/dev/hidraw*`` (pyspacemouse documents a udev rule) and
    hidapi (Debian: ``libhidapi-hidraw0``).

    Args:
        task_channels: the env's task channel names.
        speed: a full deflection's delta, a fraction of the cell's command limit.
        deadband: deflections below this read as zero.
        open_device: returns an opened device with ``read()`` (a ``SpaceMouseState``: ``x, y,
            z, roll, pitch, yaw, buttons``), ``close()`` and ``set_led(on)``; default
            ``pyspacemouse.open``.
    """

    name = "spacemouse"

    def __init__(self, task_channels: Sequence[str] = (), *, speed: float = DEFAULT_SPEED, deadband: float = 0.05,
                 open_device: Callable[[], Any] | None = None):
        super().__init__(task_channels)
        self.speed = _check_speed(speed)
        self.deadband = float(deadband)
        self._open_device = open_device or _open_spacemouse
        self._device: Any = None
        self._down: set[int] = set()  # buttons held in the current gesture
        self._gesture: set[int] = set()  # every button pressed since the gesture began
        self._led: bool | None = None

    @property
    def description(self) -> str:
        model = getattr(self._device, "name", "")
        return f"{self.name}:{model}" if model else self.name

    @property
    def feedback_features(self) -> dict[str, type]:
        return {"recording": bool}

    @property
    def is_connected(self) -> bool:
        return self._device is not None

    def connect(self, calibrate: bool = True) -> None:
        self._device = self._open_device()

    def disconnect(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def read(self) -> TeleopCommand:
        self._require_connected()
        return self.command_from_state(self._device.read())

    def command_from_state(self, state: Any) -> TeleopCommand:
        """The command for one pyspacemouse state (its axes and button list)."""
        axes = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], dtype=np.float64)
        axes[np.abs(axes) < self.deadband] = 0.0
        delta = np.clip(axes, -1.0, 1.0) * self.speed
        events: set[TeleopEvent] = set()
        down = {i for i, pressed in enumerate(state.buttons) if pressed}
        self._gesture |= down
        if self._down and not down:  # the gesture ends when the last button is released
            if {0, 1} <= self._gesture:
                events.add(TeleopEvent.DISCARD)
            elif self._gesture == {0} and self.task_channels:
                _toggle(self._task, self.task_channels[0])
            elif self._gesture == {1}:
                events.add(TeleopEvent.SAVE)
            self._gesture = set()
        self._down = down
        return TeleopCommand(delta, dict(self._task), frozenset(events))

    def send_feedback(self, feedback: Mapping[str, Any]) -> None:
        recording = feedback.get("recording")
        if recording is not None and self.is_connected and bool(recording) != self._led:
            self._led = bool(recording)
            self._device.set_led(self._led)


def _open_spacemouse():
    try:
        import pyspacemouse
    except ImportError:
        raise TeleopError(f"spacemouse: pyspacemouse is not installed; {_TELEOP_EXTRA}") from None
    try:
        return pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.HID_Z_UP)
    except (RuntimeError, ValueError, OSError) as exc:  # no hidapi, no device, no permission
        raise TeleopError(f"spacemouse: {exc} (is it plugged in, /dev/hidraw* readable and hidapi installed? "
                          "Debian: apt install libhidapi-hidraw0)") from None


# ---------------------------------------------------------------------- script

_SCRIPT_KEYS = ("t", "delta", "task", "event")


@dataclass(frozen=True)
class _ScriptEntry:
    tick: int
    delta: tuple[float, ...] | None
    task: dict[str, float]
    event: TeleopEvent | None


class ScriptDevice(TeleopDevice):
    """Timed commands from a YAML file: what a person would have sent, for headless sessions and tests.

    The file is a list of entries, each at a time ``t`` (seconds from the session's start,
    non-decreasing) with any of ``delta`` (the six normalized pose-delta channels, held until
    the next ``delta``), ``task`` (channel name -> on/off, held; every episode starts with them
    off) and ``event`` (``save``, ``discard`` or ``quit``, once)::

        - {t: 0.0, delta: [0, 0, -0.4, 0, 0, 0]}
        - {t: 0.5, task: {arc: on}, delta: [0.08, 0, 0, 0, 0, 0]}
        - {t: 3.0, event: save}
        - {t: 3.05, event: quit}

    The script's clock is the session's: each `read` is one control period ``dt`` (whether the
    session runs in real time or not), and an entry applies from the first read at or after
    its time. One read after the last entry the script reports ``quit``.
    """

    name = "script"

    def __init__(self, path: str | Path, task_channels: Sequence[str], dt: float):
        super().__init__(task_channels)
        self.path = Path(path)
        self.dt = float(dt)
        self.entries = _read_script(self.path, self.task_channels, self.dt)
        self._connected = False
        self._tick = 0
        self._next = 0
        self._delta = np.zeros(6)

    @property
    def description(self) -> str:
        return f"{self.name}:{self.path.name}"

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True
        self._tick = self._next = 0

    def disconnect(self) -> None:
        self._connected = False

    def read(self) -> TeleopCommand:
        self._require_connected()
        events: set[TeleopEvent] = set()
        while self._next < len(self.entries) and self.entries[self._next].tick <= self._tick:
            entry = self.entries[self._next]
            if entry.delta is not None:
                self._delta = np.array(entry.delta)
            self._task.update(entry.task)
            if entry.event is not None:
                events.add(entry.event)
            self._next += 1
        if self._next == len(self.entries) and self._tick > (self.entries[-1].tick if self.entries else -1):
            events.add(TeleopEvent.QUIT)
        self._tick += 1
        return TeleopCommand(self._delta.copy(), dict(self._task), frozenset(events))


def _read_script(path: Path, task_channels: tuple[str, ...], dt: float) -> list[_ScriptEntry]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TeleopError(f"{path}: cannot read the teleop script ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TeleopError(f"{path}: not a text file") from None
    try:
        data = parse_yaml(text, str(path))
    except ConfigError as exc:
        raise TeleopError(str(exc)) from None
    if not isinstance(data, list) or not data:
        raise TeleopError(f"{path}: a teleop script is a non-empty list of entries ({{t: ..., delta: ...}})")
    entries, last_t = [], 0.0
    for index, raw in enumerate(data):
        where = f"{path}: entry {index}"
        if not isinstance(raw, dict):
            raise TeleopError(f"{where}: expected a mapping with t and delta, task or event")
        unknown = sorted(set(raw) - set(_SCRIPT_KEYS))
        if unknown:
            raise TeleopError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(_SCRIPT_KEYS)})")
        t = raw.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < last_t:
            raise TeleopError(f"{where}: t must be a number of seconds, not below the previous entry's "
                              f"({last_t:g}), got {t!r}")
        last_t = float(t)
        entries.append(_ScriptEntry(tick=math.ceil(t / dt - 1e-9), delta=_script_delta(raw.get("delta"), where),
                                    task=_script_task(raw.get("task"), task_channels, where),
                                    event=_script_event(raw.get("event"), where)))
    return entries


def _script_delta(value: Any, where: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 6
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and -1.0 <= v <= 1.0 for v in value)):
        raise TeleopError(f"{where}: delta must be 6 numbers in [-1, 1] ({', '.join(DELTA_NAMES)}), got {value!r}")
    return tuple(float(v) for v in value)


def _script_task(value: Any, task_channels: tuple[str, ...], where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TeleopError(f"{where}: task must map channel names to on/off, got {value!r}")
    out = {}
    for name, on in value.items():
        if name not in task_channels:
            known = ", ".join(task_channels) if task_channels else "none: this cell has no task channels"
            raise TeleopError(f"{where}: unknown task channel {name!r} ({known})")
        if not isinstance(on, bool):
            raise TeleopError(f"{where}: task.{name} must be on or off, got {on!r}")
        out[name] = _ON if on else _OFF
    return out


def _script_event(value: Any, where: str) -> TeleopEvent | None:
    if value is None:
        return None
    try:
        return TeleopEvent(value)
    except ValueError:
        raise TeleopError(f"{where}: event must be one of {', '.join(e.value for e in TeleopEvent)}, "
                          f"got {value!r}") from None


# ---------------------------------------------------------------------- specs

DEVICE_KINDS = ("keyboard", "spacemouse", "script:FILE")


def check_device_spec(spec: str) -> tuple[str, str]:
    """``(kind, argument)`` of a ``--device`` spec, or a `TeleopError` naming the kinds."""
    kind, sep, arg = spec.partition(":")
    if kind in ("keyboard", "spacemouse") and not sep:
        return kind, ""
    if kind == "script" and arg:
        return kind, arg
    if kind == "script":
        raise TeleopError("--device script needs a file: script:FILE (a YAML list of timed commands)")
    raise TeleopError(f"--device: unknown device {spec!r}; expected one of {', '.join(DEVICE_KINDS)}")


def make_device(spec: str, task_channels: Sequence[str], dt: float, *, speed: float = DEFAULT_SPEED) -> TeleopDevice:
    """The device a ``--device`` spec names, for a cell with ``task_channels`` and control period ``dt``."""
    kind, arg = check_device_spec(spec)
    if kind == "keyboard":
        return KeyboardDevice(task_channels, speed=speed)
    if kind == "spacemouse":
        return SpaceMouseDevice(task_channels, speed=speed)
    return ScriptDevice(arg, task_channels, dt)
