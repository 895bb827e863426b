"""Replaying episodes: ``state`` mode (bit-exact physics check) and ``action`` mode (drift).

**state** restores every stored ``mjSTATE_INTEGRATION`` state and checks each recorded transition:
from state *k*, with the inputs of step *k* (controls, applied forces, mocap poses: the
``mjSTATE_USER`` part of state *k+1*, which the env set before stepping), ``mj_step`` must give
state *k+1* bit for bit. This checks the physics alone, whatever policy or controller produced
the controls, and holds on any machine and MuJoCo build that computes the same floating point.
(Restarting the *env* mid-episode could not be bit-exact: between steps the env works from the
kinematics of the last substep's start, which a restored state recomputes from its end.)

**action** starts the env from the stored first state (as the recorder did) and steps the stored
actions through it: the controller, the physics and the metrics, each step with the measured process
signals it ran with (`Episode.process_signals`: a weld capture's current and voltage, so the heat
input and the bead are the capture's, not the WPS's nominal). Per step it measures the TCP
position error against the recording (drift, mm) and fails above a threshold. On the machine
and versions that recorded the episode the drift is exactly zero.

A replay under another MuJoCo version than the recording warns (`ReplayVersionWarning`): the
contact solver's floating point changes between releases, so action replays drift. Either mode
can write an mp4 video.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from tqdm.auto import tqdm

from skillcell.demos.episode import Episode, load_episode, model_hash
from skillcell.demos.errors import DemoError, ModelMismatchWarning, ReplayVersionWarning
from skillcell.mp4 import VideoWriter
from skillcell.rollout import ActionReplay, RolloutStep, rollout

__all__ = ["DEFAULT_DRIFT_THRESHOLD_MM", "RENDER_KWARGS", "ReplayReport", "replay_episode"]

#: action replays drifting further than this (TCP position, mm) fail
DEFAULT_DRIFT_THRESHOLD_MM = 0.5
#: env kwargs that only affect rendering: a stored episode's values give way to the renderer's
RENDER_KWARGS = ("render_mode", "width", "height", "camera", "render_quality")


@dataclass
class ReplayReport:
    """What a replay found. ``drift_mm`` has one entry per stored step and ``final_info`` is the replayed
    episode's last ``info`` (action mode only)."""

    mode: str
    source: str
    steps: int
    replayed_steps: int
    bit_exact: bool
    first_mismatch_step: int | None = None
    max_state_error: float = 0.0
    drift_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    threshold_mm: float = DEFAULT_DRIFT_THRESHOLD_MM
    passed: bool = False
    warnings: list[str] = field(default_factory=list)
    video: Path | None = None
    final_info: dict = field(default_factory=dict)

    @property
    def max_drift_mm(self) -> float:
        return float(self.drift_mm.max()) if self.drift_mm.size else 0.0

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.mode == "state":
            detail = (f"{self.replayed_steps}/{self.steps} transitions bit-exact" if self.bit_exact else
                      f"transition {self.first_mismatch_step} differs (max state error {self.max_state_error:.3g})")
        else:
            worst = int(self.drift_mm.argmax()) if self.drift_mm.size else 0
            detail = (f"{self.replayed_steps}/{self.steps} steps, max TCP drift {self.max_drift_mm:.6f} mm "
                      f"(step {worst}; threshold {self.threshold_mm} mm), states "
                      + ("bit-exact" if self.bit_exact else f"differ from step {self.first_mismatch_step}"))
        lines = [f"[{verdict}] {self.source}: {self.mode} replay, {detail}"]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.video is not None:
            lines.append(f"  video: {self.video}")
        return "\n".join(lines)


def _make_env(episode: Episode, render: bool, width: int, height: int, camera: str | None) -> gym.Env:
    kwargs = {k: v for k, v in episode.env_kwargs.items() if k not in RENDER_KWARGS}
    if render:
        kwargs.update(render_mode="rgb_array", width=width, height=height)
        if camera is not None:
            kwargs["camera"] = camera
    if episode.max_episode_steps is not None:
        kwargs["max_episode_steps"] = episode.max_episode_steps
    return gym.make(episode.env_id, **kwargs)


def replay_episode(episode: Episode | str | Path, mode: str = "state", *, video: str | Path | None = None,
                   threshold_mm: float = DEFAULT_DRIFT_THRESHOLD_MM, width: int = 640, height: int = 480,
                   camera: str | None = None, progress: bool = False) -> ReplayReport:
    """Replays one episode (an `Episode` or an episode file) and reports what it found.

    Args:
        mode: ``"state"`` (bit-exact physics check) or ``"action"`` (re-execute the actions).
        video: an ``.mp4`` path to render the replay to (the env's default camera).
        threshold_mm: action mode fails when the TCP drifts further than this from the recording.
        width, height: video size in pixels, multiples of 16 (the encoder's macroblocks).
    """
    if mode not in ("state", "action"):
        raise ValueError(f"mode must be 'state' or 'action', got {mode!r}")
    if video is not None and (width <= 0 or height <= 0 or width % 16 or height % 16):
        raise DemoError(f"video size {width}x{height}: width and height must be positive multiples of 16")
    source = str(episode) if isinstance(episode, (str, Path)) else f"episode of {episode.env_id}"
    if isinstance(episode, (str, Path)):
        episode = load_episode(episode)
    report = ReplayReport(mode=mode, source=source, steps=episode.steps, replayed_steps=0, bit_exact=False,
                          threshold_mm=threshold_mm)
    recorded = episode.versions.get("mujoco")
    if recorded != mujoco.__version__:
        message = (f"episode recorded with mujoco {recorded}, replaying with mujoco {mujoco.__version__}: "
                   "physics may differ in floating point, so action replays can drift")
        warnings.warn(message, ReplayVersionWarning, stacklevel=2)
        report.warnings.append(message)

    if episode.seed is None:
        report.warnings.append("the episode was reset without a seed: model parameters that its env randomizes "
                               "at reset (a tier's friction and mass), which MuJoCo's state does not hold, cannot "
                               "be reproduced")
    env = _make_env(episode, video is not None, width, height, camera)
    writer = None
    try:
        cell = env.unwrapped
        if model_hash(cell.model) != episode.model_hash:
            message = (f"{episode.env_id} with the stored kwargs builds a different model than the recording "
                       "(model hash differs: cell assets, Menagerie or skillcell changed)")
            warnings.warn(message, ModelMismatchWarning, stacklevel=2)
            report.warnings.append(message)
        if episode.states.shape[1] != mujoco.mj_stateSize(cell.model, mujoco.mjtState.mjSTATE_INTEGRATION):
            raise DemoError(f"{source}: stored states have {episode.states.shape[1]} values, the model's have "
                            f"{mujoco.mj_stateSize(cell.model, mujoco.mjtState.mjSTATE_INTEGRATION)}")
        if video is not None:
            writer = VideoWriter(video, fps=1.0 / episode.control_dt)
            report.video = Path(video)
        if mode == "state":
            _replay_states(env, episode, report, writer, progress)
        else:
            _replay_actions(env, episode, report, writer, progress)
        if writer is not None:
            writer.close()
    finally:
        if writer is not None:
            writer.close(keep=False)  # a no-op once closed; an interrupted replay leaves no partial video
        env.close()
    return report


def _steps_bar(n: int, progress: bool, desc: str):
    return tqdm(range(n), desc=desc, unit="step", disable=not progress, leave=False)


def _replay_states(env, episode: Episode, report: ReplayReport, writer: VideoWriter | None,
                   progress: bool) -> None:
    cell = env.unwrapped
    m = cell.model
    integration, user = mujoco.mjtState.mjSTATE_INTEGRATION, mujoco.mjtState.mjSTATE_USER
    states = np.asarray(episode.states, dtype=np.float64)
    d = mujoco.MjData(m)
    inputs = np.empty(mujoco.mj_stateSize(m, user))
    out = np.empty(states.shape[1])
    # The recording's reset may have edited the model (a tier's friction and mass draws): the same
    # seed makes the same edits. MuJoCo's state does not hold model parameters.
    env.reset(seed=episode.seed)
    for k in _steps_bar(episode.steps, progress, "state replay"):
        if writer is not None:
            _render_state(env, states[k], writer)
        mujoco.mj_setState(m, d, states[k], integration)
        mujoco.mj_extractState(m, states[k + 1], integration, inputs, user)
        mujoco.mj_setState(m, d, inputs, user)
        mujoco.mj_step(m, d, cell.n_substeps)
        mujoco.mj_getState(m, d, out, integration)
        if not np.array_equal(out, states[k + 1]):
            error = float(np.nanmax(np.abs(out - states[k + 1])))
            report.max_state_error = max(report.max_state_error, error if math.isfinite(error) else math.inf)
            if report.first_mismatch_step is None:
                report.first_mismatch_step = k
        report.replayed_steps += 1
    if writer is not None:
        _render_state(env, states[-1], writer)
    report.bit_exact = report.first_mismatch_step is None
    report.passed = report.bit_exact


def _render_state(env, state: np.ndarray, writer: VideoWriter) -> None:
    cell = env.unwrapped
    mujoco.mj_setState(cell.model, cell.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(cell.model, cell.data)
    writer.add(env.render())


def _replay_actions(env, episode: Episode, report: ReplayReport, writer: VideoWriter | None,
                    progress: bool) -> None:
    cell = env.unwrapped
    drift = np.full(episode.steps + 1, math.nan)
    bar = tqdm(total=episode.steps, desc="action replay", unit="step", disable=not progress, leave=False)
    signals = episode.process_signals(cell.process_signals)

    def start(obs, info):
        return cell.set_state(episode.states[0])

    def check(step: RolloutStep) -> None:
        k = step.index
        drift[k] = 1e3 * float(np.linalg.norm(cell.data.site_xpos[cell.tcp_site] - episode.tcp_pos[k]))
        if k:
            bar.update()
            state = cell.get_state()
            if report.first_mismatch_step is None and not np.array_equal(state, episode.states[k]):
                report.first_mismatch_step = k
            report.max_state_error = max(report.max_state_error, float(np.abs(state - episode.states[k]).max()))
        if writer is not None:
            writer.add(env.render())
        if signals and k < episode.steps:  # for the step that follows, as the recording ran it
            cell.set_process_signals({name: float(values[k]) for name, values in signals.items()})

    # stepping on after an instability raises: the replay ends there, with a warning
    record = rollout(env, ActionReplay(episode.actions), seed=episode.seed, start=start, max_steps=episode.steps,
                     stop_on=(RuntimeError,), on_step=check)
    bar.close()
    report.replayed_steps, report.final_info = record.steps, record.final_info
    if record.error is not None:
        report.warnings.append(f"step {record.steps}: {record.error}")
    elif record.steps < episode.steps:
        report.warnings.append(f"the replayed episode ended at step {record.steps} of {episode.steps}")
    report.drift_mm = drift[: report.replayed_steps + 1]
    complete = report.replayed_steps == episode.steps
    report.bit_exact = complete and report.first_mismatch_step is None
    report.passed = complete and report.max_drift_mm <= report.threshold_mm
