"""Export to a LeRobot dataset, format v3.0 (``pip install "skillcell[lerobot]"``), written with pyarrow.

The dataset lands in ``ROOT/<repo_id>``, the folder ``LeRobotDataset(repo_id, root=ROOT/<repo_id>)``
opens (``ROOT`` defaults to LeRobot's own, `lerobot_home`, where ``LeRobotDataset(repo_id)`` finds it)::

    meta/info.json                             codebase_version "v3.0", fps, robot_type, totals, file
                                               layout, and every feature's dtype, shape and names
    meta/stats.json                            min, max, mean, std, count, q01, q10, q50, q90, q99 of
                                               every feature (images: per channel, [3, 1, 1], in [0, 1])
    meta/tasks.parquet                         one task per cell (its one-line description), indexed
                                               by the task text, with its ``task_index``
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, index range, data
                                               and video files with time ranges, the episode's stats
                                               (``stats/<feature>/<stat>``), provenance and skill score
    data/chunk-000/file-000.parquet            one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4   with cameras: H.264, the episodes
                                               one after another

Frame *t* of an episode of N steps holds the observation before action *t* and action *t*; the
step's outcome is in ``next.reward``, ``next.done`` (terminated or truncated) and ``next.success``.
The observation after the last action has no frame, as in the datasets LeRobot records on robots.
``observation.state`` and ``action`` are the stored values bit for bit (the cells' unit-scaled
observation vector: its blocks, scales and units are in ``info.json`` under ``skillcell``).

Images are rendered from the stored MuJoCo states with the cell's cameras (``mujoco.Renderer``,
the cell's ``fast`` render settings, without the review overlays) and encoded by
`skillcell.mp4.VideoWriter` with a keyframe every 2 frames, as LeRobot encodes, so that random
access decodes little. Statistics are exact, over every frame and pixel (LeRobot's own writer
samples images and approximates quantiles with histograms); 8-bit images make exact per-channel
histograms cheap.

The dataset is written into a temporary folder next to the target and renamed into place when
complete; an existing dataset there is replaced only with ``overwrite``, after the new one is done.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from tqdm.auto import tqdm

from skillcell.atomic import replace_dir
from skillcell.demos.episode import DemoDataset, Episode, EpisodeEntry, model_hash
from skillcell.demos.errors import DemoError, ModelMismatchWarning
from skillcell.demos.replay import RENDER_KWARGS
from skillcell.demos.scores import score_dataset, score_episode
from skillcell.mp4 import VideoWriter

__all__ = ["CODEBASE_VERSION", "LeRobotExport", "default_repo_id", "export_lerobot", "lerobot_home",
           "observation_names"]

CODEBASE_VERSION = "v3.0"
# The file layout and size limits of LeRobot's v3.0 writer (`lerobot.datasets.utils`).
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
KEYFRAME_INTERVAL = 2
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                   "task_index": "int64"}


@dataclass(frozen=True)
class LeRobotExport:
    """What `export_lerobot` wrote: the dataset folder (``root=`` for LeRobot) and its size."""

    path: Path
    repo_id: str
    episodes: int
    frames: int
    video_keys: tuple[str, ...]


def _require_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DemoError('LeRobot export needs pyarrow: pip install "skillcell[lerobot]"') from None
    return pyarrow, pyarrow.parquet


def lerobot_home() -> Path:
    """Where LeRobot looks for a dataset by repo id: ``HF_LEROBOT_HOME``, else ``<HF_HOME>/lerobot``."""
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(hf_home).expanduser() / "lerobot"


def default_repo_id(dataset: DemoDataset) -> str:
    """``skillcell/<dataset name>``, e.g. ``skillcell/weld-best``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset.name or "demos").strip("-.") or "demos"
    return f"skillcell/{name}"


def observation_names(obs_fields: Sequence[dict[str, Any]]) -> list[str]:
    """One name per element of the observation vector, from the cell's observation blocks.

    A block of size 1 keeps its name; a 3-vector gets ``.x .y .z``; other sizes ``.0 .1 ...``.
    """
    names: list[str] = []
    for field in obs_fields:
        name, size = field["name"], int(field["size"])
        if size == 1:
            names.append(name)
        elif size == 3:
            names += [f"{name}.{axis}" for axis in "xyz"]
        else:
            names += [f"{name}.{i}" for i in range(size)]
    return names


def _video_key(camera: str) -> str:
    # LeRobot feature names may not contain "/" (``tool/closeup`` is an attached body's camera).
    return "observation.images." + camera.replace("/", "_")


def _feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics over the frames (axis 0), quantiles exact (linear)."""
    x = values.reshape(len(values), -1)
    if x.dtype == bool:
        x = x.astype(np.float64)
    stats = {"min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0, dtype=np.float64),
             "std": x.std(axis=0, dtype=np.float64), "count": np.array([len(x)])}
    quantiles = np.quantile(x.astype(np.float64), list(QUANTILES.values()), axis=0)
    stats.update(zip(QUANTILES, quantiles, strict=True))
    return stats


def _image_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel statistics of 8-bit images from their value histogram (3, 256), scaled to [0, 1].

    The same numbers as NumPy's over every pixel (quantiles by its default linear rule), shaped
    [3, 1, 1] as LeRobot stores image statistics; ``count`` is the number of frames.
    """
    values = np.arange(256, dtype=np.float64)
    n = histogram.sum(axis=1)
    mean = histogram @ values / n
    std = np.sqrt((histogram * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n)
    present = histogram > 0
    stats = {"min": present.argmax(axis=1).astype(np.float64),
             "max": 255.0 - present[:, ::-1].argmax(axis=1), "mean": mean, "std": std}
    cumulative = np.cumsum(histogram, axis=1)
    for key, q in QUANTILES.items():
        out = np.empty(3)
        for c in range(3):
            # the value at sorted position r is the first whose cumulative count exceeds r
            position = (n[c] - 1) * q
            low = math.floor(position)
            v_low = np.searchsorted(cumulative[c], low, side="right")
            v_high = np.searchsorted(cumulative[c], min(low + 1, n[c] - 1), side="right")
            out[c] = v_low + (position - low) * (v_high - v_low)
        stats[key] = out
    stats = {k: (v / 255.0).reshape(3, 1, 1) for k, v in stats.items()}
    stats["count"] = np.array([frames])
    return stats


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def _jsonable(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


class _ParquetFiles:
    """``data/chunk-XXX/file-XXX.parquet``: frames appended, a new file past the size limit."""

    def __init__(self, root: Path, pq):
        self.root, self.pq = root, pq
        self.chunk = self.file = 0
        self.writer = None
        self.bytes = 0

    def write(self, table) -> tuple[int, int]:
        limit = DATA_FILES_SIZE_IN_MB * 2**20
        if self.writer is not None and self.bytes + table.nbytes > limit:
            self.writer.close()
            self.writer = None
            self.chunk, self.file = _next_file(self.chunk, self.file)
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = self.pq.ParquetWriter(path, table.schema, compression="snappy")
            self.bytes = 0
        self.writer.write_table(table)
        self.bytes += table.nbytes
        return self.chunk, self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _VideoFiles:
    """``videos/<key>/chunk-XXX/file-XXX.mp4`` of one camera: episodes one after another."""

    def __init__(self, root: Path, key: str, fps: int):
        self.root, self.key, self.fps = root, key, fps
        self.chunk = self.file = 0
        self.writer = None
        self.frames = 0  # in the current file
        self.paths: list[Path] = []

    def start_episode(self) -> tuple[int, int, float]:
        """Opens a file where needed; returns its chunk and file index and the episode's start time."""
        if self.writer is not None and self.writer.tmp.stat().st_size >= VIDEO_FILES_SIZE_IN_MB * 2**20:
            self.writer.close()
            self.writer = None
            self.chunk, self.file = _next_file(self.chunk, self.file)
        if self.writer is None:
            path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
            self.writer = VideoWriter(path, self.fps, keyframe_interval=KEYFRAME_INTERVAL)
            self.paths.append(path)
            self.frames = 0
        return self.chunk, self.file, self.frames / self.fps

    def add(self, frame: np.ndarray) -> None:
        self.writer.add(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.writer is not None:
            self.writer.close(keep=keep)
            self.writer = None


def _video_info(path: Path) -> dict[str, Any]:
    """What LeRobot records of a video stream, read back from the encoded file."""
    import imageio.v2 as imageio

    with imageio.get_reader(path, "ffmpeg") as reader:
        meta = reader.get_meta_data()
    width, height = meta["size"]
    return {"video.height": int(height), "video.width": int(width), "video.codec": meta["codec"],
            "video.pix_fmt": meta["pix_fmt"].split("(")[0], "video.is_depth_map": False,
            "video.fps": round(meta["fps"]), "video.channels": 3, "has_audio": False}


class _Cells:
    """The envs the episodes were recorded on (one per env id and kwargs), built once each."""

    def __init__(self, render: bool, width: int, height: int):
        self.render, self.width, self.height = render, width, height
        self.envs: dict[tuple[str, str], gym.Env] = {}

    def get(self, episode: Episode) -> gym.Env:
        kwargs = {k: v for k, v in episode.env_kwargs.items() if k not in RENDER_KWARGS}
        key = (episode.env_id, json.dumps(kwargs, sort_keys=True, default=str))
        if key not in self.envs:
            if self.render:
                kwargs.update(render_mode="rgb_array", width=self.width, height=self.height, render_quality="fast")
            try:
                self.envs[key] = gym.make(episode.env_id, **kwargs)
            except gym.error.Error as exc:
                raise DemoError(f"cannot make {episode.env_id} to export its episodes: {exc}") from None
        return self.envs[key]

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


class _DatasetWriter:
    """Writes the episodes one at a time into ``root``; `finish` writes the metadata."""

    def __init__(self, root: Path, cameras: Sequence[str], width: int, height: int, task: str | None):
        self.pa, self.pq = _require_pyarrow()
        self.root = root
        self.cameras = list(cameras)
        self.video_keys = {camera: _video_key(camera) for camera in self.cameras}
        self.task = task
        self.cells = _Cells(bool(self.cameras), width, height)
        self.data = _ParquetFiles(root, self.pq)
        self.videos: dict[str, _VideoFiles] = {}
        self.tasks: dict[str, int] = {}
        self.features: dict[str, dict[str, Any]] = {}
        self.first: tuple[EpisodeEntry, Episode] | None = None
        self.fps = 0
        self.robot_type = ""
        self.has_success = False
        self.columns: dict[str, list[np.ndarray]] = {}
        self.histograms = {key: np.zeros((3, 256), np.int64) for key in self.video_keys.values()}
        self._episode_histograms: dict[str, np.ndarray] = {}
        self.rows: list[dict[str, Any]] = []
        self.frames = 0

    # ---------------------------------------------------------------- first episode: the layout

    def _start(self, entry: EpisodeEntry, episode: Episode, cell) -> None:
        rate = 1.0 / episode.control_dt
        if abs(rate - round(rate)) > 1e-6:
            raise DemoError(f"episode {entry.id}: LeRobot datasets have an integer frame rate; the control period "
                            f"{episode.control_dt} s gives {rate} Hz")
        self.fps = round(rate)
        self.first = (entry, episode)
        self.robot_type = cell.config.robot.model
        self.has_success = "is_success" in episode.infos
        obs_names = observation_names(episode.obs_fields)
        if len(obs_names) != episode.observations.shape[1]:
            raise DemoError(f"episode {entry.id}: the observation layout names {len(obs_names)} values, the "
                            f"observations have {episode.observations.shape[1]}")
        action_names = list(cell.action_names)
        if len(action_names) != episode.actions.shape[1]:
            raise DemoError(f"episode {entry.id}: {episode.env_id} names {len(action_names)} action channels, the "
                            f"actions have {episode.actions.shape[1]}")
        features: dict[str, dict[str, Any]] = {
            "observation.state": {"dtype": episode.observations.dtype.name, "shape": [len(obs_names)],
                                  "names": obs_names},
            "action": {"dtype": episode.actions.dtype.name, "shape": [len(action_names)], "names": action_names},
            "next.reward": {"dtype": episode.rewards.dtype.name, "shape": [1], "names": ["reward"]},
            "next.done": {"dtype": "bool", "shape": [1], "names": ["done"]},
        }
        if self.has_success:
            features["next.success"] = {"dtype": "bool", "shape": [1], "names": ["success"]}
        missing = [c for c in self.cameras if c not in cell.camera_names]
        if missing:
            raise DemoError(f"{episode.env_id} has no camera {', '.join(missing)}; its cameras: "
                            f"{', '.join(cell.camera_names)}")
        for key in self.video_keys.values():
            features[key] = {"dtype": "video", "shape": [cell.height, cell.width, 3],
                             "names": ["height", "width", "channels"]}
            self.videos[key] = _VideoFiles(self.root, key, self.fps)
        for key, dtype in _INDEX_FEATURES.items():
            features[key] = {"dtype": dtype, "shape": [1], "names": [key]}
        self.features = features

    def _check_like_first(self, entry: EpisodeEntry, episode: Episode) -> None:
        first_entry, first = self.first
        where = f"episode {entry.id}"
        if [(f["name"], f["size"]) for f in episode.obs_fields] != [(f["name"], f["size"]) for f in first.obs_fields]:
            raise DemoError(f"{where} ({episode.env_id}) has another observation layout than episode "
                            f"{first_entry.id} ({first.env_id}); one LeRobot dataset has one: export them separately")
        if abs(episode.control_dt - first.control_dt) > 1e-12:
            raise DemoError(f"{where}: control period {episode.control_dt} s, episode {first_entry.id}'s "
                            f"{first.control_dt} s; one LeRobot dataset has one frame rate")
        for name, array in (("observations", episode.observations), ("actions", episode.actions),
                            ("rewards", episode.rewards)):
            reference = getattr(first, name)
            if array.dtype != reference.dtype or array.shape[1:] != reference.shape[1:]:
                raise DemoError(f"{where}: {name} are {array.dtype} {array.shape[1:]}, episode {first_entry.id}'s "
                                f"{reference.dtype} {reference.shape[1:]}")
        if self.has_success and "is_success" not in episode.infos:
            raise DemoError(f"{where} has no 'is_success' info, episode {first_entry.id} has")

    # ---------------------------------------------------------------- every episode

    def add(self, entry: EpisodeEntry, episode: Episode) -> None:
        n = episode.steps
        if n == 0:
            raise DemoError(f"episode {entry.id} has no steps; a LeRobot episode needs at least one frame")
        env = self.cells.get(episode)
        cell = env.unwrapped
        if self.first is None:
            self._start(entry, episode, cell)
        else:
            self._check_like_first(entry, episode)
        task = self.task or (type(cell).__doc__ or episode.env_id).strip().splitlines()[0]
        task_index = self.tasks.setdefault(task, len(self.tasks))
        episode_index = len(self.rows)
        values: dict[str, np.ndarray] = {
            "observation.state": np.asarray(episode.observations[:n]),
            "action": np.asarray(episode.actions),
            "next.reward": np.asarray(episode.rewards),
            "next.done": np.asarray(episode.terminations, bool) | np.asarray(episode.truncations, bool),
        }
        if self.has_success:
            values["next.success"] = np.asarray(episode.infos["is_success"][1:], bool)
        values.update({
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, episode_index, np.int64),
            "index": np.arange(self.frames, self.frames + n, dtype=np.int64),
            "task_index": np.full(n, task_index, np.int64),
        })
        for key, array in values.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = np.flatnonzero(~np.isfinite(array.reshape(n, -1)).all(axis=1))
                raise DemoError(f"episode {entry.id}: {key} has non-finite values at frames {bad[:10].tolist()}")
        chunk, file = self.data.write(self.pa.table({key: self._arrow(array) for key, array in values.items()}))
        row: dict[str, Any] = {
            "episode_index": episode_index, "tasks": [task], "length": n,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": self.frames, "dataset_to_index": self.frames + n,
        }
        stats = {key: _feature_stats(array) for key, array in values.items()}
        if self.cameras:
            for key, (v_chunk, v_file, start) in self._render(entry, episode, env).items():
                row.update({f"videos/{key}/chunk_index": v_chunk, f"videos/{key}/file_index": v_file,
                            f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + n / self.fps})
                stats[key] = _image_stats(self._episode_histograms[key], n)
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        for feature, feature_stats in stats.items():
            row.update({f"stats/{feature}/{k}": v.tolist() for k, v in feature_stats.items()})
        row.update(_provenance_columns(entry, episode, _score(episode)))
        self.rows.append(row)
        for key, array in values.items():
            self.columns.setdefault(key, []).append(array)
        self.frames += n

    def _arrow(self, array: np.ndarray):
        if array.ndim == 1:
            return self.pa.array(array)
        return self.pa.FixedSizeListArray.from_arrays(self.pa.array(array.reshape(-1)), array.shape[1])

    def _render(self, entry: EpisodeEntry, episode: Episode, env) -> dict[str, tuple[int, int, float]]:
        """Renders frames 0..N-1 from the stored states into each camera's video; their file and start time."""
        cell = env.unwrapped
        m, d = cell.model, cell.data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        if episode.states.shape[1] != mujoco.mj_stateSize(m, spec):
            raise DemoError(f"episode {entry.id}: stored states have {episode.states.shape[1]} values, "
                            f"{episode.env_id} with the stored kwargs has {mujoco.mj_stateSize(m, spec)}")
        missing = [c for c in self.cameras if c not in cell.camera_names]
        if missing:
            raise DemoError(f"{episode.env_id} has no camera {', '.join(missing)}; its cameras: "
                            f"{', '.join(cell.camera_names)}")
        # The recording's reset may have edited the model (a tier's draws); the same seed repeats them.
        env.reset(seed=episode.seed)
        if model_hash(m) != episode.model_hash:
            warnings.warn(f"episode {entry.id}: {episode.env_id} with the stored kwargs builds a different model "
                          "than the recording; its images show the stored states in today's model",
                          ModelMismatchWarning, stacklevel=4)
        starts = {key: self.videos[key].start_episode() for key in self.video_keys.values()}
        self._episode_histograms = {key: np.zeros((3, 256), np.int64) for key in self.video_keys.values()}
        renderer = cell.renderer
        states = np.asarray(episode.states, dtype=np.float64)
        for k in range(episode.steps):
            mujoco.mj_setState(m, d, states[k], spec)
            mujoco.mj_forward(m, d)
            for camera, key in self.video_keys.items():
                renderer.update_scene(d, camera=camera)
                frame = renderer.render()
                self.videos[key].add(frame)
                for c in range(3):
                    self._episode_histograms[key][c] += np.bincount(frame[..., c].ravel(), minlength=256)
        for key, histogram in self._episode_histograms.items():
            self.histograms[key] += histogram
        return starts

    # ---------------------------------------------------------------- metadata

    def finish(self, source: Path) -> None:
        for videos in self.videos.values():
            videos.close()
        self.data.close()
        for key, videos in self.videos.items():
            self.features[key]["info"] = _video_info(videos.paths[0])
        stats = {key: _jsonable(_feature_stats(np.concatenate(arrays))) for key, arrays in self.columns.items()}
        for key, histogram in self.histograms.items():
            stats[key] = _jsonable(_image_stats(histogram, self.frames))
        first = self.first[1]
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self.rows), "total_frames": self.frames, "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB, "fps": self.fps,
            "splits": {"train": f"0:{len(self.rows)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.videos else None, "features": self.features,
            # LeRobot reads the keys above; this one says what the numbers mean.
            "skillcell": {"source_dataset": str(source), "skillcell_version": first.versions.get("skillcell", ""),
                          "mujoco_version": first.versions.get("mujoco", ""), "obs_fields": first.obs_fields,
                          "frames": "frame t: observation before action t, action t, that step's reward/done/success"},
        }
        meta = self.root / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "info.json").write_text(json.dumps(info, indent=4, ensure_ascii=False, allow_nan=False))
        (meta / "stats.json").write_text(json.dumps(stats, indent=4, allow_nan=False))
        self._write_tasks(meta / "tasks.parquet")
        path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        self.pq.write_table(self.pa.table({k: [row.get(k) for row in self.rows] for k in keys}), path,
                            compression="snappy")

    def _write_tasks(self, path: Path) -> None:
        """The table ``pandas.DataFrame({"task_index": ...}, index=tasks).to_parquet()`` writes, without pandas."""
        pa = self.pa
        table = pa.table({"task_index": pa.array(list(self.tasks.values()), pa.int64()),
                          "__index_level_0__": pa.array(list(self.tasks), pa.string())})
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                                "metadata": {"encoding": "UTF-8"}}],
            "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                         "numpy_type": "int64", "metadata": None},
                        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                         "numpy_type": "object", "metadata": None}],
            "creator": {"library": "pyarrow", "version": pa.__version__},
        }
        self.pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)

    def abort(self) -> None:
        for videos in self.videos.values():
            videos.close(keep=False)
        self.data.close()

    def close(self) -> None:
        self.cells.close()


def _provenance_columns(entry: EpisodeEntry, episode: Episode, score) -> dict[str, Any]:
    p = episode.provenance
    columns = {
        "skillcell/source_episode": entry.id, "skillcell/env_id": episode.env_id,
        "skillcell/env_kwargs": json.dumps(episode.env_kwargs, sort_keys=True, default=str),
        "skillcell/seed": episode.seed, "skillcell/source": episode.source, "skillcell/success": episode.success,
        "skillcell/return": episode.total_reward, "skillcell/model_hash": episode.model_hash,
        "skillcell/mujoco_version": episode.versions.get("mujoco", ""), "skillcell/created_utc": episode.created_utc,
        "provenance/operator_id": p.operator_id, "provenance/site": p.site,
        "provenance/source_device": p.source_device, "provenance/consent": p.consent, "provenance/notes": p.notes,
    }
    if score is not None:
        columns["skill_score"] = score.score
        columns.update({f"skill_score/{k}": v for k, v in score.components.items()})
        columns.update({f"skill_metric/{k}": v for k, v in score.metrics.items()})
    return columns


def _score(episode: Episode):
    try:
        return score_episode(episode)
    except DemoError:  # a cell without a scorer: its episodes travel without a score
        return None


def export_lerobot(path: str | Path, *, out: str | Path | None = None, repo_id: str | None = None,
                   cameras: Sequence[str] = (), width: int = 320, height: int = 240, task: str | None = None,
                   min_score: float | None = None, overwrite: bool = False, progress: bool = False) -> LeRobotExport:
    """Exports the dataset at ``path`` as a LeRobot v3.0 dataset in ``<out>/<repo_id>``.

    Args:
        out: the root to write under (default `lerobot_home`, where ``LeRobotDataset(repo_id)`` looks).
        repo_id: ``owner/name`` (default `default_repo_id`); the dataset folder is ``<out>/<repo_id>``.
        cameras: cameras of the cell to render into ``observation.images.<camera>`` videos.
        width, height: image size in pixels, multiples of 16 (the encoder never rescales).
        task: the task text of every episode (default: each cell's one-line description).
        min_score: export only episodes with at least this skill score (`skillcell.demos.scores`).
        overwrite: replace a dataset already in the folder (once the new one is complete).

    Every episode must have the first one's observation layout, action and reward types and
    control rate (one LeRobot dataset has one feature set and one fps); env kwargs may differ.
    """
    _require_pyarrow()
    dataset = DemoDataset(path)
    entries = list(dataset.entries)
    if min_score is not None:
        keep = set(score_dataset(path).select(min_score))
        entries = [e for e in entries if e.id in keep]
    if not entries:
        raise DemoError(f"{path}: no episodes to export" + (f" with score >= {min_score}" if min_score else ""))
    repo_id = repo_id or default_repo_id(dataset)
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise DemoError(f"repo id {repo_id!r}: expected owner/name of letters, digits, '-', '_' and '.'")
    cameras = list(dict.fromkeys(cameras))
    if cameras and (width <= 0 or height <= 0 or width % 16 or height % 16):
        raise DemoError(f"image size {width}x{height}: width and height must be positive multiples of 16")
    final = (Path(out) if out is not None else lerobot_home()) / repo_id
    if final.exists() and not final.is_dir():
        raise DemoError(f"{final}: exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise DemoError(f"{final}: holds files already; pass --force to replace the dataset there, or another "
                        "--repo-id")

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    writer = _DatasetWriter(staging, cameras, width, height, task)
    try:
        for entry in tqdm(entries, desc="lerobot export", unit="ep", disable=not progress, leave=False):
            episode = dataset.load(entry)
            writer.add(entry, episode)
        writer.finish(Path(path).resolve())
        replace_dir(staging, final)  # the old dataset moves aside only now that the new one is complete
    except BaseException:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        writer.close()
    return LeRobotExport(final, repo_id, len(writer.rows), writer.frames, tuple(writer.video_keys.values()))
