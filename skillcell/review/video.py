"""Review videos: frames of a source with overlays and a metric strip, side by side pairs, mp4.

One `mujoco.Renderer` per env serves a whole video (the env's own, at its size and render
quality); every control step goes through the overlays (so the tool trace is complete) and every
``every``-th is rendered. The frame rate is the control rate over ``every`` times ``speed``, so
at ``speed=1`` the video runs in real time.

Files are written by `skillcell.mp4.VideoWriter` (re-exported here): H.264 (libx264, yuv420p) through
imageio-ffmpeg to a temporary name next to the target, renamed into place only when complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from skillcell.mp4 import VideoWriter
from skillcell.review.overlays import MetricStrip, SceneOverlays, block_pad, cell_review
from skillcell.review.sources import Step

__all__ = ["FrameRenderer", "VideoWriter", "render_video", "side_by_side", "video_frames"]

LEFT_ACCENT, RIGHT_ACCENT = (60, 110, 200), (150, 70, 170)


class FrameRenderer:
    """Renders one env's current state with overlays and the metric strip below.

    Args:
        env: a render-enabled env (`skillcell.review.sources.make_review_env`); its shared
            renderer is used for every frame.
        camera: a camera of the cell (``None``: the cell's review default, see `CellReview`).
        overlays: draw the cell's overlays, the tool trace and the force arrow.
        strip: draw the metric strip (``False``: the bare frame, padded to multiples of 16).
        label: text in the strip's header (e.g. "demonstration").
    """

    def __init__(self, env, camera: str | None = None, overlays: bool = True, strip: bool = True,
                 label: str = "", accent: tuple[int, int, int] = LEFT_ACCENT):
        self.env, self.cell = env, env.unwrapped
        self.review = cell_review(self.cell)
        self.camera = resolve_camera(self.cell, camera or self.review.camera)
        self.overlays = overlays
        self.scene_overlays = SceneOverlays(self.review, trace=overlays, force=overlays)
        self.strip = (MetricStrip(self.cell.width, self.review.metrics, label=label,
                                  frame_height=self.cell.height, accent=accent) if strip else None)

    def observe(self, step: Step) -> None:
        """Every control step, rendered or not: the trace needs all of them."""
        if step.index == 0:
            self.scene_overlays.reset()
        self.scene_overlays.observe(self.cell)

    def render(self, step: Step, steps: int | None = None) -> np.ndarray:
        cell = self.cell
        renderer = cell.renderer
        renderer.update_scene(cell.data, camera=self.camera)
        if self.overlays:
            cell.add_overlays(renderer.scene)
            self.scene_overlays.draw(cell, renderer.scene)
        rgb = renderer.render()
        if self.strip is None:
            return block_pad(rgb)
        outcome = None
        if step.last and step.success is not None:
            outcome = "success" if step.success else "no success"
        band = self.strip.render(step.info, time_s=step.time_s, step=step.index, steps=steps, reward=step.reward,
                                 episode_return=step.episode_return, outcome=outcome)
        return block_pad(np.concatenate([rgb, band], axis=0))


def resolve_camera(cell, name: str) -> str:
    """``name`` if the cell has that camera; ``closeup`` is short for ``tool/closeup``."""
    names = cell.camera_names
    if name in names:
        return name
    matches = [n for n in names if n.split("/")[-1] == name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"camera {name!r} is not one of this cell's cameras: {', '.join(names)}")


def video_frames(source: Iterable[Step], renderer: FrameRenderer, every: int = 1,
                 steps: int | None = None) -> Iterator[tuple[Step, np.ndarray]]:
    """``(step, frame)`` for steps ``0, every, 2*every, ...`` and always the last one."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    for step in source:
        renderer.observe(step)
        if step.index % every == 0 or step.last:
            yield step, renderer.render(step, steps)


def _hold_last(frames: Iterator[tuple[Step, np.ndarray]]) -> Iterator[tuple[Step, np.ndarray] | None]:
    yield from frames
    while True:
        yield None


def side_by_side(left: Iterator[tuple[Step, np.ndarray]], right: Iterator[tuple[Step, np.ndarray]]
                 ) -> Iterator[np.ndarray]:
    """Time-aligned pairs of two frame streams rendered at the same step spacing, as one frame.

    Frame *i* of each half shows the same time since its episode start; the half that ends first
    holds its last frame (its strip says how it ended) until the other ends.
    """
    last_left = last_right = None
    for a, b in zip(_hold_last(left), _hold_last(right), strict=False):
        if a is None and b is None:
            return
        if a is not None:
            last_left = a[1]
        if b is not None:
            last_right = b[1]
        if last_left is None or last_right is None:  # pragma: no cover - both yield a first frame
            continue
        height = max(last_left.shape[0], last_right.shape[0])
        yield np.concatenate([block_pad(_pad_rows(last_left, height)), block_pad(_pad_rows(last_right, height))],
                             axis=1)


def _pad_rows(frame: np.ndarray, height: int) -> np.ndarray:
    if frame.shape[0] == height:
        return frame
    out = np.zeros((height, frame.shape[1], 3), np.uint8)
    out[: frame.shape[0]] = frame
    return out


def render_video(out: str | Path, source, renderer: FrameRenderer, *, every: int = 1, speed: float = 1.0,
                 vs: tuple | None = None, progress: bool = False, quality: float = 7.0) -> dict:
    """Writes ``source`` (and, side by side, ``vs = (source2, renderer2)``) to ``out`` (mp4).

    Returns ``{"path", "frames", "fps", "size", "seconds"}``; ``seconds`` is the wall time taken.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    dt = renderer.cell.control_dt
    fps = speed / (dt * every)
    n_steps = getattr(source, "total_steps", None)
    if vs is not None:
        other, other_renderer = vs
        if abs(other_renderer.cell.control_dt - dt) > 1e-12:
            raise ValueError("side by side needs both sources at the same control rate")
        m_steps = getattr(other, "total_steps", None)
        total = max(n_steps or 0, m_steps or 0) or None
        frames = side_by_side(video_frames(source, renderer, every, n_steps),
                              video_frames(other, other_renderer, every, m_steps))
    else:
        total = n_steps
        frames = (frame for _, frame in video_frames(source, renderer, every, n_steps))
    expected = None if total is None else total // every + 1 + (1 if total % every else 0)
    # Open the GL context(s) before the output file: without OpenGL nothing is created.
    renderer.cell.renderer  # noqa: B018
    if vs is not None:
        vs[1].cell.renderer  # noqa: B018
    start = time.perf_counter()
    bar = tqdm(total=expected, desc=f"render {Path(out).name}", unit="frame", disable=not progress, leave=False)
    with VideoWriter(out, fps, quality=quality) as writer:
        for frame in frames:
            writer.add(frame)
            bar.update(1)
    bar.close()
    return {"path": Path(out), "frames": writer.frames, "fps": fps,
            "size": (writer.size[1], writer.size[0]) if writer.size else None,
            "seconds": time.perf_counter() - start}
