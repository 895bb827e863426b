"""A teleoperation session: a person drives a cell through a `TeleopDevice` and episodes are recorded.

`record_teleop` runs the cell at its control rate (``env.unwrapped.dt`` per step, in real time
unless told otherwise) through the one rollout loop (`skillcell.rollout.Rollout`, the operator
being its policy) and records through `skillcell.demos.EpisodeRecorder` into a `skillcell.demos`
dataset, with the operator and the device in every episode's provenance, so a teleoperated
episode is stored, replayed, scored and exported like any other.

An episode waits at its reset state until the operator's first command (motion, or a task
channel switched on), so nobody records seconds of standing still; the device's task channels
are switched off at every episode's start. It ends when the env ends it (termination, or the
time limit: saved, successful or not), when the operator saves it (kept, its last step marked
truncated) or discards it (dropped; the same seed runs again), or when the operator quits (an
episode in progress is dropped; saved ones stay). Seeds count up from ``seed``, by default from
after the seeds the dataset holds.

What the person sees: the MuJoCo viewer (``mujoco.viewer.launch_passive``) where there is a
display, and always a one-line status (step, time, TCP position, tool force, commanded speed,
task channels and the cell's live metrics, those out of band marked ``!``), refreshed in place on
a terminal; optionally a preview image file (``preview``) rendered with the review overlays and
metric strip of `skillcell.review` and rewritten atomically every ``preview_every_s``.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import math
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import gymnasium as gym
import numpy as np
from PIL import Image

from skillcell.atomic import atomic_write_bytes
from skillcell.demos.episode import DatasetWriter, EpisodeEntry, Provenance
from skillcell.demos.recorder import EpisodeRecorder
from skillcell.review.overlays import cell_review
from skillcell.review.sources import Step
from skillcell.review.video import FrameRenderer
from skillcell.rollout import Rollout, RolloutStep
from skillcell.teleop.devices import (
    DEFAULT_SPEED,
    DELTA_NAMES,
    TeleopCommand,
    TeleopDevice,
    TeleopError,
    TeleopEvent,
    check_device_spec,
    make_device,
)

__all__ = ["TeleopSummary", "has_display", "record_teleop"]


@dataclass
class TeleopSummary:
    """What a session recorded: the saved episodes' entries, how many were discarded, and
    ``late_steps``, the control periods that could not be held in real time."""

    env_id: str
    device: str
    operator: str
    entries: list[EpisodeEntry] = field(default_factory=list)
    discarded: int = 0
    quit: bool = False
    late_steps: int = 0

    def report(self) -> str:
        if not self.entries:
            return f"no episodes saved (teleop: {self.device}, operator {self.operator}; {self.discarded} discarded)"
        successes = sum(e.success for e in self.entries)
        seeds = [e.seed for e in self.entries]
        late = f"; {self.late_steps} control periods ran late" if self.late_steps else ""
        return (f"saved {len(self.entries)} episodes of {self.env_id} (teleop: {self.device}, operator "
                f"{self.operator}, seeds {', '.join(map(str, seeds))}): success {successes}/{len(self.entries)}, "
                f"{sum(e.steps for e in self.entries)} steps, {self.discarded} discarded; episode ids "
                f"{self.entries[0].id}..{self.entries[-1].id}{late}")


def has_display() -> bool:
    """Whether a window can be opened: an X or Wayland display (macOS needs ``mjpython`` instead)."""
    return sys.platform != "darwin" and bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def record_teleop(env_id: str, device: str | TeleopDevice, out: str | Path, *, episodes: int = 1,
                  seed: int | None = None, operator: str | None = None, env_kwargs: Mapping[str, Any] | None = None,
                  speed: float = DEFAULT_SPEED, realtime_factor: float = 1.0, viewer: bool | None = None,
                  preview: str | Path | None = None, preview_every_s: float = 1.0,
                  status: TextIO | None = None) -> TeleopSummary:
    """Records up to ``episodes`` teleoperated episodes of ``env_id`` into the dataset ``out``.

    Args:
        device: a ``--device`` spec (``keyboard``, ``spacemouse``, ``script:FILE``; built for the
            cell's task channels and control period, at ``speed``) or a `TeleopDevice`.
        operator: who operates (default: the login name); stored as the provenance's operator.
        realtime_factor: 1 runs at the control rate, 2 twice as fast, 0 unpaced (scripts).
        viewer: open the MuJoCo viewer (``None``: where there is a display; failing to open it
            is then a message, not an error).
        preview: a PNG rewritten every ``preview_every_s`` seconds of wall time.
        status: where the status line goes (default standard output).

    A dataset of another env id is refused before anything runs (`skillcell.demos.DatasetError`).
    """
    if realtime_factor < 0 or not math.isfinite(realtime_factor):
        raise TeleopError(f"realtime factor must be 0 (unpaced) or positive, got {realtime_factor}")
    if isinstance(device, str):
        check_device_spec(device)  # a bad spec is refused before the cell is built
    writer = DatasetWriter(out)
    writer.check_env(env_id)
    if seed is None:
        seed = max([e.seed for e in writer.entries() if e.seed is not None], default=-1) + 1
    operator = operator or _login_name()
    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        cell = env.unwrapped
        task_channels = tuple(cell.action_names[len(DELTA_NAMES):])
        if isinstance(device, str):
            device = make_device(device, task_channels, cell.dt, speed=speed)
        elif device.task_channels != task_channels:
            raise TeleopError(f"{device.name}: made for task channels {list(device.task_channels)}, the cell has "
                              f"{list(task_channels)}")
        session = _Session(env, device, writer, operator, status or sys.stdout, realtime_factor)
        with contextlib.ExitStack() as stack:
            device.connect()
            stack.callback(device.disconnect)
            if viewer if viewer is not None else has_display():
                session.viewer = _open_viewer(cell, required=viewer is True, status=session.status)
                if session.viewer is not None:
                    stack.callback(session.viewer.close)
            if preview is not None:
                session.preview = _Preview(env, Path(preview), preview_every_s, label=f"teleop {operator}")
            return session.run(episodes, seed)
    finally:
        env.close()


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return "unknown"


class _Stop(Exception):
    """The operator ended the episode (`TeleopEvent.SAVE`, ``DISCARD`` or ``QUIT``) before the env did."""

    def __init__(self, event: TeleopEvent, message: str = ""):
        super().__init__(event.value)
        self.event, self.message = event, message


class _Operator:
    """The `skillcell.rollout.Policy` of a teleoperated episode: the person at the device.

    Each call waits for the next control period, reads the device and returns its action. Until
    the operator's first command it keeps reading (and showing) without returning, so the
    episode waits at its reset state; an episode-ending event raises `_Stop` before the step.
    """

    def __init__(self, session: _Session):
        self.session = session
        self.started = False

    def reset(self) -> None:
        self.session.device.reset()
        self.session.pacer.restart()  # building and resetting the cell took time that is nobody's lag
        self.started = False

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        session = self.session
        while True:
            session.pacer.wait()
            command = session.command = session.device.read()
            events = command.events
            if self.started and (TeleopEvent.SAVE in events or TeleopEvent.DISCARD in events):
                raise _Stop(TeleopEvent.SAVE if TeleopEvent.SAVE in events else TeleopEvent.DISCARD)
            if TeleopEvent.QUIT in events:
                raise _Stop(TeleopEvent.QUIT, "quit: the episode in progress is dropped" if self.started else "")
            if TeleopEvent.SAVE in events:
                session.status.message("nothing to save yet: the episode starts at the first command")
            if self.started or command.moving:
                self.started = True
                return command.action(session.device.task_channels)
            session.show(recording=False)


class _Session:
    def __init__(self, env: gym.Env, device: TeleopDevice, writer: DatasetWriter, operator: str, stream: TextIO,
                 realtime_factor: float):
        self.env, self.cell, self.device = env, env.unwrapped, device
        self.writer, self.operator = writer, operator
        self.status = _StatusLine(stream, self.cell)
        self.pacer = _Pacer(self.cell.dt / realtime_factor if realtime_factor > 0 else 0.0)
        self.viewer: _Viewer | None = None
        self.preview: _Preview | None = None
        self.command = TeleopCommand(np.zeros(6))
        self.step: RolloutStep | None = None
        self.episode_return = 0.0
        self.where = ""  # "ep 1/3 seed 0" for the status line

    def run(self, episodes: int, seed: int) -> TeleopSummary:
        device = self.device
        summary = TeleopSummary(self.env.spec.id, device.description, self.operator)
        provenance = Provenance(operator_id=self.operator, site="simulation", source_device=device.description,
                                consent=True, notes=f"teleoperation: a person's commands at {device.description}, "
                                                    "recorded in a session they ran")
        recorder = EpisodeRecorder(self.env, self.writer, source=f"teleop:{device.name}", provenance=provenance,
                                   policy={"name": "teleop", "device": device.description})
        episode_seed = seed
        try:
            while len(summary.entries) < episodes and not summary.quit:
                self.where = f"ep {len(summary.entries) + 1}/{episodes} seed {episode_seed}"
                try:
                    self._episode(recorder, episode_seed)
                except _Stop as stop:
                    if stop.message:
                        self.status.message(stop.message)
                    if stop.event is TeleopEvent.QUIT:
                        summary.quit = True
                        continue
                    if stop.event is TeleopEvent.DISCARD:
                        summary.discarded += 1
                        self.status.message(f"episode discarded; seed {episode_seed} again")
                        continue
                    recorder.finish()
                entry = recorder.entries[-1]
                summary.entries.append(entry)
                self.status.message(f"episode {entry.id} saved: {entry.steps} steps, "
                                    f"{'success' if entry.success else 'no success'}")
                episode_seed += 1
        except KeyboardInterrupt:
            summary.quit = True
            self.status.message("interrupted: the episode in progress is dropped, saved episodes stay")
        summary.late_steps = self.pacer.late
        return summary

    def _episode(self, recorder: EpisodeRecorder, seed: int) -> None:
        """One episode through the rollout loop, until the env ends it (the recorder has written
        it) or the operator does (`_Stop`)."""
        self.status.message(f"{self.where}: ready, move to start")
        self.episode_return = 0.0
        for step in Rollout(recorder, _Operator(self), seed=seed):
            self.step = step
            self.episode_return += step.reward or 0.0
            if step.done:
                return
            if step.index == 0 and self.preview is not None:
                self.preview.start(step.info)
            self.show(recording=step.index > 0)

    def show(self, recording: bool) -> None:
        """What the operator sees and feels after every control period, waiting or recording."""
        step, cell = self.step, self.cell
        self.device.send_feedback({"recording": recording, "force_n": float(np.linalg.norm(cell.wrench_tool[:3]))})
        if self.viewer is not None:
            if not self.viewer.is_running():
                raise _Stop(TeleopEvent.QUIT, "viewer closed: quit; the episode in progress is dropped")
            self.viewer.sync()
        self.status.update(self.command, step.info, recording, self.where, step.index, self.device)
        if self.preview is not None and step.index > 0:
            self.preview.step(step.index, step.info, step.reward, self.episode_return)


class _Pacer:
    """Holds the loop to one iteration per ``period`` seconds of wall time; counts the late ones."""

    def __init__(self, period: float):
        self.period = period
        self.late = 0
        self.restart()

    def restart(self) -> None:
        self.next = time.perf_counter() + self.period

    def wait(self) -> None:
        if self.period <= 0:
            return
        now = time.perf_counter()
        if now < self.next:
            time.sleep(self.next - now)
            self.next += self.period
            return
        if now - self.next > self.period:
            # A stall (a slow frame, a paused terminal) is not caught up in a burst of fast steps.
            self.late += 1
            self.next = now
        self.next += self.period


class _StatusLine:
    """The one-line status: refreshed in place on a terminal (10 times a second), else one line per
    second of episode time while recording."""

    def __init__(self, stream: TextIO, cell):
        self.stream, self.cell = stream, cell
        self.metrics = cell_review(cell).metrics
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every_steps = max(1, round(1.0 / cell.dt))
        self.last_refresh = -math.inf
        control = cell.config.control
        self.mm_s_per_unit = control.max_translation_mm / cell.dt

    def update(self, command: TeleopCommand, info: Mapping[str, Any], recording: bool, where: str, steps: int,
               device: TeleopDevice) -> None:
        if self.tty:
            now = time.monotonic()
            if now - self.last_refresh < 0.1:
                return
            self.last_refresh = now
        elif not recording or steps % self.every_steps:
            return
        line = self.line(command, info, recording, where, steps, device)
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns
            self.stream.write("\r" + line[:max(20, width - 1)] + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, command: TeleopCommand, info: Mapping[str, Any], recording: bool, where: str, steps: int,
             device: TeleopDevice) -> str:
        cell = self.cell
        x, y, z = (cell.data.site_xpos[cell.tcp_site] * 1e3).tolist()
        force = float(np.linalg.norm(cell.wrench_tool[:3]))
        speed = float(np.linalg.norm(command.delta[:3])) * self.mm_s_per_unit
        parts = [f"{'REC' if recording else 'READY'} {where} step {steps} t {steps * cell.dt:.2f} s",
                 f"TCP {x:+.1f} {y:+.1f} {z:+.1f} mm", f"F {force:.1f} N", f"cmd {speed:.0f} mm/s"]
        jog = getattr(device, "speed", None)
        if jog is not None:
            parts.append(f"jog {jog * self.mm_s_per_unit:.0f} mm/s")
        parts += [f"{name} {'ON' if value > 0 else 'off'}" for name, value in command.task.items()]
        parts += [spec.text(info) + ("!" if spec.status(info) == "bad" else "") for spec in self.metrics]
        return " | ".join(parts)

    def message(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()


class _Preview:
    """A PNG of the cell with the review overlays and metric strip, rewritten atomically when due."""

    def __init__(self, env: gym.Env, path: Path, every_s: float, label: str):
        if every_s <= 0:
            raise TeleopError(f"preview period must be positive, got {every_s}")
        self.path, self.every_s = path, every_s
        self.renderer = FrameRenderer(env, label=label)
        self.dt = env.unwrapped.dt
        self.due = -math.inf

    def start(self, info: Mapping[str, Any]) -> None:
        # Rendered at once, so that a machine without OpenGL says so before anything is recorded.
        self.due = -math.inf
        self.step(0, info, None, 0.0)

    def step(self, index: int, info: Mapping[str, Any], reward: float | None, episode_return: float) -> None:
        step = Step(index=index, time_s=index * self.dt, info=info, reward=reward, episode_return=episode_return)
        self.renderer.observe(step)
        now = time.monotonic()
        if now < self.due:
            return
        self.due = now + self.every_s
        buffer = io.BytesIO()
        Image.fromarray(self.renderer.render(step)).save(buffer, format="PNG")
        atomic_write_bytes(self.path, buffer.getvalue())


class _Viewer:
    """The passive MuJoCo viewer (``mujoco.viewer.launch_passive``) on the cell's model and data.

    `close` waits for the viewer's thread to finish: the thread is a daemon, and an interpreter
    that exits while it still draws crashes in GLX (seen on Xvfb) or hangs.
    """

    def __init__(self, cell):
        import glfw  # the viewer's windowing library, a dependency of mujoco
        import mujoco.viewer

        # Probed here: the viewer's own thread ends the process (mju_error) when GLFW cannot start.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = glfw.init()
        if not started:
            raise RuntimeError("; ".join(str(w.message) for w in caught) or "GLFW could not start")
        before = set(threading.enumerate())
        self.handle = mujoco.viewer.launch_passive(cell.model, cell.data, show_left_ui=False, show_right_ui=False)
        self.threads = [t for t in threading.enumerate() if t not in before]

    def is_running(self) -> bool:
        return self.handle.is_running()

    def sync(self) -> None:
        self.handle.sync()

    def close(self) -> None:
        self.handle.close()
        for thread in self.threads:
            thread.join(timeout=10.0)


def _open_viewer(cell, *, required: bool, status: _StatusLine) -> _Viewer | None:
    """The viewer, or None (with a message) where it cannot open and was not required."""
    try:
        return _Viewer(cell)
    except Exception as exc:  # GLFW and the platforms raise a variety of types
        if required:
            raise TeleopError(f"viewer: cannot open the MuJoCo viewer ({exc})") from None
        status.message(f"no MuJoCo viewer ({exc}); the status line shows the session")
        return None
