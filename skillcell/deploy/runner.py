"""Running an exported policy the way it will run on hardware: driver, envelope filter, watchdog.

The runner talks to the robot only through a `RobotDriver`: once per control period it reads an
observation and the measured `RobotState`, and sends one command or asks the driver to hold.
`SimDriver` implements that interface on a skillcell env; a hardware driver (UR RTDE, ros2_control)
implements the same four members, so the code that runs in simulation is the code that runs on
the robot.

**Commands are in physical units**: the TCP pose delta for one control period in the cell frame,
``[dx, dy, dz]`` in metres and a rotation vector ``[rx, ry, rz]`` in radians (applied as
``q_cmd <- exp(r) * q_cmd``, i.e. about cell-frame axes through the TCP), followed by the cell's
task channels unchanged (welding: the arc on when positive). A pose delta rather than a velocity,
because that is what the cell's controller integrates each period; the velocity is the delta
divided by the control period, which the exported model records (``control_dt_s``).

Every period, `PolicyRunner.tick`:

1. takes the freshest command, if it is not older than ``timeout_s``: its age is the driver-clock
   time since the observation it answers plus the policy's latency (see "Clocks");
2. passes it through `SafetyEnvelope.filter` (speed, joint, workspace limits; force, torque,
   clearance and non-finite values make it a hold) and sends it;
3. without a fresh command, sends a zero delta (the commanded pose is kept, task channels off)
   until the **watchdog** expires ``timeout_s`` (default 2.5 control periods) after the last fresh
   command; then it asks the driver to **hold**: stop and keep the measured pose, task channels
   off. A tripped watchdog latches: it holds until `PolicyRunner.rearm` (an operator's decision),
   even if commands come back.

`PolicyRunner.run` calls the policy in a worker thread under a deadline of ``timeout_s`` from
the observation's read: a policy that stalls gets no command through (the period keeps, then the
watchdog holds), and the answer of a call that missed its deadline is dropped when it comes, never
sent (`RunnerStats.late`). A late call still running at the next period is waited for within that
period's deadline before the new observation is submitted (one policy call at a time, as on a
robot PC's inference thread); an exception raised by the policy, late or not, ends the run holding.

**Clocks.** Ages are measured on two clocks, each where it is the true one. Watchdog expiry is on
the driver's clock (``RobotState.stamp_s``), i.e. robot time: a hardware driver's controller
clock; `SimDriver`'s simulation time, which advances one control period per ``send``/``hold``.
The policy's latency is measured on ``time.monotonic`` in the runner and added to the command's
age (`Command.latency_s`): on a robot the controller clock runs on while the policy computes, but
a simulation waits for the runner, so without it a stalled policy would look instantaneous in
simulation. The runner ticks with the state read before the policy ran, so the driver-clock part
of a fresh command's age is zero and the latency is counted once, on either.

The runner executes the exported ONNX file (`OnnxPolicy`), whose SHA-256 it checks against the one
the gate recorded; SB3 models are read as data by `skillcell.policies.loading`.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from skillcell.deploy.envelope import RobotState, SafetyEnvelope, robot_state
from skillcell.paths import sha256_file

__all__ = [
    "Command",
    "OnnxPolicy",
    "PolicyRunner",
    "RobotDriver",
    "RunnerStats",
    "SimDriver",
    "TickResult",
    "Watchdog",
    "command_scale",
]


def command_scale(env: Any) -> np.ndarray:
    """Physical command per unit of normalized action: metres, radians, then 1 per task channel."""
    u = env.unwrapped
    control = u.config.control
    size = u.action_space.shape[0]
    scale = np.ones(size)
    scale[:3] = control.max_translation_mm * 1e-3
    scale[3:6] = math.radians(control.max_rotation_deg)
    return scale


@dataclass(frozen=True)
class Command:
    """A command in physical units (see the module docstring), the driver-clock stamp of its
    observation and the policy's latency on the monotonic clock (module docstring, "Clocks")."""

    values: np.ndarray
    stamp_s: float
    latency_s: float = 0.0

    def age_s(self, now_s: float) -> float:
        """Seconds since the observation, ``now_s`` on the driver's clock."""
        return now_s - self.stamp_s + self.latency_s


@runtime_checkable
class RobotDriver(Protocol):
    """What the runner needs from a robot, simulated or real. One `send` or `hold` per period."""

    control_dt: float  # s

    def read(self) -> tuple[np.ndarray, RobotState]:
        """The policy's observation vector and the measured state, of the same instant."""
        ...

    def send(self, command: np.ndarray) -> None:
        """Applies a (filtered) command for one control period."""
        ...

    def hold(self) -> None:
        """Stops and holds the measured pose (task channels off) for one control period."""
        ...


class Watchdog:
    """Expires when the last fresh command is older than ``timeout_s`` on the driver's clock."""

    def __init__(self, timeout_s: float):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.last_feed_s: float | None = None

    def feed(self, stamp_s: float) -> None:
        self.last_feed_s = stamp_s

    def expired(self, now_s: float) -> bool:
        """True when no command was ever fed, or the last one is too old."""
        return self.last_feed_s is None or now_s - self.last_feed_s > self.timeout_s


@dataclass
class TickResult:
    """What one period did: ``send`` a filtered command, ``keep`` (zero delta) or ``hold``."""

    action: Literal["send", "keep", "hold"]
    command: np.ndarray
    interventions: tuple[str, ...] = ()


@dataclass
class RunnerStats:
    """Counts over a run: periods by outcome, envelope interventions by limit, watchdog trips, and
    policy calls that missed their deadline (``late``: their answers were dropped)."""

    sent: int = 0
    kept: int = 0
    held: int = 0
    watchdog_trips: int = 0
    late: int = 0
    interventions: Counter = field(default_factory=Counter)

    def to_mapping(self) -> dict[str, Any]:
        return {"sent": self.sent, "kept": self.kept, "held": self.held, "watchdog_trips": self.watchdog_trips,
                "late": self.late, "interventions": dict(sorted(self.interventions.items()))}

    def add(self, other: RunnerStats) -> None:
        """Adds another run's counts to these."""
        for name in ("sent", "kept", "held", "watchdog_trips", "late"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.interventions.update(other.interventions)


class PolicyRunner:
    """Envelope filter plus watchdog between a command source and a `RobotDriver`."""

    def __init__(self, driver: RobotDriver, envelope: SafetyEnvelope, timeout_s: float | None = None,
                 command_size: int | None = None):
        self.driver = driver
        self.envelope = envelope
        self.watchdog = Watchdog(timeout_s if timeout_s is not None else 2.5 * driver.control_dt)
        self.command_size = command_size
        self.tripped = False
        self.stats = RunnerStats()

    def rearm(self) -> None:
        """Clears a tripped watchdog (an operator's decision); the next fresh command moves again."""
        self.tripped = False
        self.watchdog.last_feed_s = None

    def tick(self, command: Command | None, state: RobotState) -> TickResult:
        """One control period, ``state`` being the measured state read at its start."""
        now = state.stamp_s
        fresh = command is not None and command.age_s(now) <= self.watchdog.timeout_s
        if fresh and not self.tripped:
            self.watchdog.feed(command.stamp_s)
            result = self.envelope.filter(command.values, state, self.driver.control_dt)
            self.stats.interventions.update(result.interventions)
            if result.hold:
                self.driver.hold()
                self.stats.held += 1
                return TickResult("hold", np.zeros_like(result.command), result.interventions)
            self.driver.send(result.command)
            self.stats.sent += 1
            return TickResult("send", result.command, result.interventions)
        if not self.tripped and self.watchdog.expired(now) and self.watchdog.last_feed_s is not None:
            self.tripped = True
            self.stats.watchdog_trips += 1
        if self.tripped or self.watchdog.last_feed_s is None:
            self.driver.hold()
            self.stats.held += 1
            return TickResult("hold", np.zeros(self._size(command)), ("watchdog",) if self.tripped else ())
        zero = np.zeros(self._size(command))
        self.driver.send(zero)
        self.stats.kept += 1
        return TickResult("keep", zero)

    def _size(self, command: Command | None) -> int:
        if self.command_size is not None:
            return self.command_size
        return int(np.size(command.values)) if command is not None else 6

    def run(self, source: Callable[[np.ndarray], np.ndarray | None], steps: int,
            done: Callable[[], bool] | None = None) -> RunnerStats:
        """Runs ``source`` (observation -> physical command, or None when none arrives) for
        ``steps`` periods or until ``done()``, each call under the deadline of the module docstring
        (``source`` runs in a worker thread); whatever happens, the driver is left holding."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="skillcell-policy")
        pending: concurrent.futures.Future | None = None  # a call that missed its deadline, still running
        try:
            for _ in range(steps):
                if done is not None and done():
                    break
                obs, state = self.driver.read()
                start = time.monotonic()
                deadline = start + self.watchdog.timeout_s
                command = None
                if pending is not None:
                    try:
                        pending.result(timeout=max(0.0, deadline - time.monotonic()))  # its answer is dropped
                        pending = None
                    except concurrent.futures.TimeoutError:
                        pass
                if pending is None:
                    future = pool.submit(source, obs)
                    try:
                        values = future.result(timeout=max(0.0, deadline - time.monotonic()))
                    except concurrent.futures.TimeoutError:
                        pending = future
                        self.stats.late += 1
                    else:
                        if values is not None:
                            command = Command(np.asarray(values, dtype=np.float64), state.stamp_s,
                                              latency_s=time.monotonic() - start)
                self.tick(command, state)
        finally:
            # A stalled call cannot be interrupted; its thread ends when the call returns, unheard.
            pool.shutdown(wait=False, cancel_futures=True)
            if done is None or not done():
                self.driver.hold()
        return self.stats


class SimDriver:
    """`RobotDriver` on a skillcell env: one `send` or `hold` steps the env by one control period.

    Its clock (``RobotState.stamp_s``) is the simulation time: it advances one control period per
    `send` or `hold` and stands still in between, so the simulated robot waits however long the
    policy computes. `PolicyRunner` adds the policy's wall-clock latency to command ages, so a
    command that would be stale on the robot is stale here too (module docstring, "Clocks").

    ``send`` converts the physical command back to the env's normalized action (clipped to
    ``[-1, 1]``, as the robot controller's own per-period limits would); ``hold`` commands the
    measured TCP pose at the first period of a hold and keeps it after that, with the task
    channels at zero. The env may be wrapped (e.g. by `EnvelopeMonitor`); `reset` starts an
    episode, `done` says when it ended, `info` holds the last step's ``info``.
    """

    def __init__(self, env: Any):
        self.env = env
        u = env.unwrapped
        self.control_dt = float(u.control_dt)
        self.scale = command_scale(env)
        self._zero = np.zeros(u.action_space.shape[0])
        self._obs: np.ndarray | None = None
        self._holding = False
        self.done = False
        self.info: dict[str, Any] = {}
        self.steps = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._obs, self.info = self.env.reset(seed=seed)
        self._holding, self.done, self.steps = False, False, 0
        return self._obs

    def read(self) -> tuple[np.ndarray, RobotState]:
        if self._obs is None:
            raise RuntimeError("SimDriver.reset() first")
        return self._obs, robot_state(self.env)

    def send(self, command: np.ndarray) -> None:
        self._holding = False
        command = np.asarray(command, dtype=np.float64)
        if command.shape != self.scale.shape or not np.isfinite(command).all():
            # The envelope never sends these; a driver refuses them all the same.
            raise ValueError(f"command must be {self.scale.shape[0]} finite values, got {command!r}")
        self._step(np.clip(command / self.scale, -1.0, 1.0))

    def hold(self) -> None:
        if not self._holding:
            self.env.unwrapped.controller.reset()  # command the measured pose: stop here
            self._holding = True
        self._step(self._zero)

    def _step(self, action: np.ndarray) -> None:
        if self.done:
            return
        self._obs, _, terminated, truncated, self.info = self.env.step(action)
        self.steps += 1
        self.done = bool(terminated or truncated)


class OnnxPolicy:
    """An exported policy run with onnxruntime: raw observation in, action and command out.

    ``expected_sha256`` (from ``gate.yaml``) makes loading refuse a file that is not the one the
    gate judged. The graph's outputs are ``action`` (the env's normalized action, clipped and
    unscaled as SB3's ``predict`` does) and ``command`` (physical units, module docstring).
    """

    def __init__(self, path: str | Path, expected_sha256: str | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.sha256 = sha256_file(self.path)
        if expected_sha256 is not None and self.sha256 != expected_sha256.lower():
            raise ValueError(f"{self.path}: SHA-256 {self.sha256} does not match the expected {expected_sha256}; "
                             "refusing to load a policy other than the one that was gated")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # tiny MLPs: threads cost more than they save
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(action, command)`` for a batch ``(n, obs_size)`` of raw observations."""
        obs = np.asarray(obs, dtype=np.float32)
        action, command = self.session.run(["action", "command"], {self.input_name: obs})
        return action, command

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The normalized action for one observation (a `skillcell.rollout.Policy`)."""
        return self.run(np.asarray(obs, dtype=np.float32)[None])[0][0]

    def reset(self) -> None:
        """A feed-forward graph keeps nothing between episodes."""

    def command(self, obs: np.ndarray) -> np.ndarray:
        """The physical command for one observation (a runner command source)."""
        return self.run(np.asarray(obs, dtype=np.float32)[None])[1][0].astype(np.float64)
