"""H.264 mp4 files written atomically: the one video writer of skillcell (review videos, dataset exports).

`VideoWriter` encodes with libx264 in yuv420p through imageio-ffmpeg to a temporary sibling of the
target (`skillcell.atomic.AtomicFile`) and renames it into place only when complete.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from skillcell.atomic import AtomicFile

__all__ = ["VideoWriter"]


class VideoWriter:
    """An mp4 (H.264) written atomically: ``with VideoWriter(path, fps) as w: w.add(frame)``.

    Frames must all have the same size, a multiple of 16 in both directions (review frames are
    padded by `skillcell.review.overlays.block_pad`), so the encoder never rescales them. On an
    exception inside the ``with`` block the partial file is deleted and the target is left as it was.

    ``threaded`` hands frames to ffmpeg from a background thread (a short queue), so piping a
    frame overlaps with rendering the next one; an encoder error surfaces at the next `add` or
    at `close`.

    ``keyframe_interval`` sets the GOP length (ffmpeg ``-g``): datasets that are read at random
    frames want short ones, so a seek decodes few frames; review videos keep the encoder's default.
    """

    def __init__(self, path: str | Path, fps: float, quality: float = 7.0, preset: str = "veryfast",
                 threaded: bool = True, keyframe_interval: int | None = None):
        import imageio.v2 as imageio

        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"{self.path}: videos are .mp4 files")
        # ffmpeg picks the container from the extension, so the temporary name keeps it.
        self._target = AtomicFile(self.path, suffix=".mp4")
        self.tmp = self._target.tmp
        self.fps = float(fps)
        self.frames = 0
        self.size: tuple[int, int] | None = None
        # `veryfast`: on a 2-core machine the encoder shares the CPU with software OpenGL; it
        # costs little in size for synthetic scenes (flat colours compress well anyway).
        params = ["-preset", preset]
        if keyframe_interval is not None:
            if keyframe_interval < 1:
                raise ValueError(f"keyframe_interval must be at least 1, got {keyframe_interval}")
            params += ["-g", str(int(keyframe_interval))]
        self._writer = imageio.get_writer(self.tmp, format="FFMPEG", fps=self.fps, codec="libx264",
                                          quality=quality, pixelformat="yuv420p", macro_block_size=16,
                                          ffmpeg_log_level="error", ffmpeg_params=params)
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, name="skillcell-video-writer", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self._error is None:
                try:
                    self._writer.append_data(frame)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def add(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self.path}: the video encoder failed: {self._error}") from self._error
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        size = frame.shape[:2]
        if self.size is None:
            if size[0] % 16 or size[1] % 16:
                raise ValueError(f"frame size {size[1]}x{size[0]} is not a multiple of 16; pad it (block_pad)")
            self.size = size
        elif size != self.size:
            raise ValueError(f"frame size {size[1]}x{size[0]} differs from the first frame's "
                             f"{self.size[1]}x{self.size[0]}")
        if self._queue is not None:
            self._queue.put(frame)
        else:
            self._writer.append_data(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finishes the file; renames it into place (``keep``) or deletes it."""
        if self._writer is None:
            return self.path if keep else None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._writer.close()
        self._writer = None
        if keep and self._error is not None:
            self._target.discard()
            raise RuntimeError(f"{self.path}: the video encoder failed: {self._error}") from self._error
        if keep and self.frames:
            return self._target.commit()
        self._target.discard()
        if keep:
            raise ValueError(f"{self.path}: no frames were written")
        return None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)
