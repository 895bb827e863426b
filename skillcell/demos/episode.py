"""Episode files and datasets: the native demonstration format.

A dataset is a folder::

    dataset.yaml                          manifest: one entry per episode (file, sha256, env, seed,
                                          steps, return, success, operator, consent, model hash)
    episodes/episode_000000.npz           one compressed NumPy archive per episode
    reports/episode_000000_feasibility.yaml   capture imports only: what was feasible

An episode archive (``np.load(path, allow_pickle=False)``; no member needs pickle) holds, for an
episode of N steps:

=====================  ==================  ===================================================
member                 shape               meaning
=====================  ==================  ===================================================
``observations``       (N+1, obs)          the reset observation, then one per step
``actions``            (N, act)            exactly what was passed to ``env.step``
``rewards``            (N,)
``terminations``       (N,) bool
``truncations``        (N,) bool
``states``             (N+1, S) float64    ``mj_getState(m, d, s, mjSTATE_INTEGRATION)`` after
                                           reset and after every step
``tcp_pos``            (N+1, 3)            TCP position in the cell frame (m)
``tcp_quat``           (N+1, 4)            TCP orientation in the cell frame (w, x, y, z)
``command_pos``        (N+1, 3)            the controller's commanded TCP position (m)
``command_quat``       (N+1, 4)            the commanded orientation (w, x, y, z)
``info/<key>``         (N+1, ...)          each ``info`` metric: reset info, then every step's
``extra/<key>``        any                 source data (capture targets, raw capture samples);
                                           ``extra/signal/<name>`` (N+1,): a measured process
                                           signal, step k ran with entry k (`Episode.process_signals`)
``model_xml``          () str              MJCF of the model as built (``CellEnv.mj_spec.to_xml()``)
``meta``               () str              JSON: env id and kwargs, seed, control period,
                                           observation layout, versions, model hash,
                                           provenance, source, creation time
=====================  ==================  ===================================================

Info keys absent from some steps (reward terms at reset, bead statistics before the arc is struck)
are filled with NaN (numbers), False (flags) or "" (text), so that every key has N+1 rows, as
Minari requires.

Writes are atomic (`skillcell.atomic`): the episode file is renamed into place
complete, then the manifest is replaced; a writer killed between the two leaves a complete
episode that the next writer adopts. `DemoDataset` checks each file's sha256 against the
manifest when it loads it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import platform
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import mujoco
import numpy as np
import yaml

import skillcell
from skillcell.atomic import atomic_write_bytes, atomic_write_text, is_temporary
from skillcell.config import ConfigError, from_mapping, parse_yaml, to_mapping
from skillcell.demos._io import dataset_lock, sha256_bytes
from skillcell.demos.errors import DatasetError

__all__ = [
    "EPISODE_FORMAT_VERSION",
    "SIGNAL_PREFIX",
    "DatasetWriter",
    "DemoDataset",
    "Episode",
    "EpisodeEntry",
    "Provenance",
    "load_episode",
    "model_hash",
    "save_episode",
    "stack_infos",
    "versions",
]

EPISODE_FORMAT_VERSION = 1
MANIFEST_NAME = "dataset.yaml"
_ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations", "states",
           "tcp_pos", "tcp_quat", "command_pos", "command_quat")
_EPISODE_RE = re.compile(r"^episode_(\d{6,})\.npz$")
#: the extras that hold a measured process signal (a capture's ``current_a`` column: ``signal/current_a``)
SIGNAL_PREFIX = "signal/"


@dataclass(frozen=True)
class Provenance:
    """Who and what produced a demonstration; travels with every episode.

    ``consent`` records that the operator agreed to their motion being recorded and used for robot
    learning. Captures of people without it are refused by the importer; scripted and policy
    rollouts carry ``consent: true`` with a note, as no person is recorded.
    """

    operator_id: str
    site: str = ""
    source_device: str = ""
    consent: bool = False
    notes: str = ""


@dataclass(frozen=True)
class EpisodeEntry:
    """One episode's line in ``dataset.yaml``; ``file`` and ``report`` are relative to the dataset."""

    id: int
    file: str
    sha256: str
    env_id: str
    source: str
    steps: int
    total_reward: float
    success: bool
    seed: int | None = None
    operator_id: str = ""
    consent: bool = False
    model_hash: str = ""
    mujoco_version: str = ""
    report: str = ""


@dataclass(frozen=True)
class Manifest:
    """``dataset.yaml``."""

    format: str = "skillcell-demos"
    format_version: int = EPISODE_FORMAT_VERSION
    name: str = ""
    created_utc: str = ""
    episodes: tuple[EpisodeEntry, ...] = ()


def versions() -> dict[str, str]:
    """Versions that decide whether a replay can be bit-exact."""
    return {"mujoco": mujoco.__version__, "skillcell": skillcell.__version__, "gymnasium": gymnasium.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}


def model_hash(model: mujoco.MjModel) -> str:
    """``sha256:<hex>`` of a compiled model's content: every numeric array and the physics options.

    Asset file paths (``paths``, ``*_pathadr``) are left out, so the same model built from a
    Menagerie copy in another folder hashes the same; render-only settings (``vis``) are left out
    because they do not change the physics.
    """
    h = hashlib.sha256()
    for name in sorted(dir(model)):
        if name.startswith("_") or name == "paths" or name.endswith("_pathadr"):
            continue
        value = getattr(model, name, None)
        if isinstance(value, np.ndarray):
            h.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
            h.update(np.ascontiguousarray(value).tobytes())
    opt = model.opt
    for name in sorted(dir(opt)):
        value = getattr(opt, name, None)
        if name.startswith("_") or callable(value):
            continue
        h.update(f"opt.{name}:{np.asarray(value).tolist()!r};".encode())
    return "sha256:" + h.hexdigest()


def _json_safe(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise DatasetError(f"{key}: {type(value).__name__} cannot be stored in an episode's metadata "
                       "(JSON values, lists and mappings only)")


def stack_infos(infos: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Turns a list of ``info`` dicts into one array per key (see the module docstring for fills).

    Values that are neither numbers, flags, text nor fixed-shape numeric arrays (e.g. the
    ``episode`` dict of `RecordEpisodeStatistics`) are left out with a warning naming the keys.
    """
    keys: dict[str, None] = {}
    for info in infos:
        keys.update(dict.fromkeys(info))
    out: dict[str, np.ndarray] = {}
    skipped = []
    for key in keys:
        values = [info.get(key, None) for info in infos]
        present = [v for v in values if v is not None]
        if all(isinstance(v, (bool, np.bool_)) for v in present):
            out[key] = np.array([bool(v) if v is not None else False for v in values])
        elif all(isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)) for v in present):
            out[key] = np.array([float(v) if v is not None else math.nan for v in values])
        elif all(isinstance(v, str) for v in present):
            out[key] = np.array([v if v is not None else "" for v in values], dtype=str)
        elif all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.shape == present[0].shape
                 for v in present):
            filler = np.full(present[0].shape, math.nan)
            out[key] = np.stack([np.asarray(v, float) if v is not None else filler for v in values])
        else:
            skipped.append(key)
    if skipped:
        warnings.warn(f"info keys {skipped} hold values that episodes cannot store; left out", stacklevel=2)
    return out


@dataclass
class Episode:
    """One recorded episode in memory; see the module docstring for the arrays and their shapes."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    states: np.ndarray
    tcp_pos: np.ndarray
    tcp_quat: np.ndarray
    command_pos: np.ndarray
    command_quat: np.ndarray
    infos: dict[str, np.ndarray]
    env_id: str
    env_kwargs: dict[str, Any]
    seed: int | None
    max_episode_steps: int | None
    control_dt: float
    obs_fields: list[dict[str, Any]]
    provenance: Provenance
    source: str
    model_hash: str
    model_xml: str = ""
    versions: dict[str, str] = field(default_factory=versions)
    created_utc: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    policy: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards))

    @property
    def success(self) -> bool:
        flags = self.infos.get("is_success")
        return bool(flags[-1]) if flags is not None and len(flags) else False

    @property
    def duration_s(self) -> float:
        return self.steps * self.control_dt

    def process_signals(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The measured process signals among ``names`` (a cell's `CellEnv.process_signals`) that the episode
        holds (a capture's columns, extras ``signal/<name>``), one value per control instant: step k ran with
        entry k set (`CellEnv.set_process_signals`), so a replay that sets them so re-measures what ran."""
        return {name: np.asarray(self.extras[SIGNAL_PREFIX + name], dtype=np.float64) for name in names
                if SIGNAL_PREFIX + name in self.extras}

    def decode_observations(self) -> dict[str, np.ndarray]:
        """Observation blocks in physical units, as `CellEnv.decode_obs` returns them, without an env."""
        out, start = {}, 0
        obs = np.asarray(self.observations, dtype=np.float64)
        for f in self.obs_fields:
            out[f["name"]] = obs[:, start:start + f["size"]] / f["scale"]
            start += f["size"]
        return out

    def check(self) -> None:
        """Raises `DatasetError` naming the first array whose length does not fit the others."""
        n = len(self.actions)
        expected = {"observations": n + 1, "rewards": n, "terminations": n, "truncations": n, "states": n + 1,
                    "tcp_pos": n + 1, "tcp_quat": n + 1, "command_pos": n + 1, "command_quat": n + 1}
        for name, length in expected.items():
            if len(getattr(self, name)) != length:
                raise DatasetError(f"episode array {name!r} has {len(getattr(self, name))} rows, expected "
                                   f"{length} for {n} actions")
        for key, values in self.infos.items():
            if len(values) != n + 1:
                raise DatasetError(f"info {key!r} has {len(values)} rows, expected {n + 1}")

    def meta(self) -> dict[str, Any]:
        """The JSON metadata stored in the archive's ``meta`` member."""
        return _json_safe({
            "format": "skillcell-episode", "format_version": EPISODE_FORMAT_VERSION,
            "env_id": self.env_id, "env_kwargs": self.env_kwargs, "seed": self.seed,
            "max_episode_steps": self.max_episode_steps, "control_dt": self.control_dt,
            "state_spec": "mjSTATE_INTEGRATION", "obs_fields": self.obs_fields,
            "provenance": to_mapping(self.provenance), "source": self.source, "model_hash": self.model_hash,
            "versions": self.versions, "created_utc": self.created_utc, "policy": self.policy, "notes": self.notes,
        }, "meta")

    def entry(self, episode_id: int, file: str, sha256: str, report: str = "") -> EpisodeEntry:
        return EpisodeEntry(id=episode_id, file=file, sha256=sha256, env_id=self.env_id, source=self.source,
                            steps=self.steps, total_reward=self.total_reward, success=self.success, seed=self.seed,
                            operator_id=self.provenance.operator_id, consent=self.provenance.consent,
                            model_hash=self.model_hash, mujoco_version=self.versions.get("mujoco", ""),
                            report=report)


def _episode_bytes(episode: Episode) -> bytes:
    episode.check()
    arrays: dict[str, np.ndarray] = {name: np.asarray(getattr(episode, name)) for name in _ARRAYS}
    for key, value in episode.infos.items():
        arrays[f"info/{key}"] = np.asarray(value)
    for key, value in episode.extras.items():
        arrays[f"extra/{key}"] = np.asarray(value)
    for key, value in arrays.items():
        if value.dtype == object:
            raise DatasetError(f"episode member {key!r} has dtype object, which would need pickle to load")
    arrays["model_xml"] = np.array(episode.model_xml)
    arrays["meta"] = np.array(json.dumps(episode.meta()))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def save_episode(episode: Episode, path: str | Path) -> str:
    """Writes ``episode`` to ``path`` atomically; returns the file's sha256."""
    data = _episode_bytes(episode)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def _episode_from_bytes(data: bytes, where: str) -> Episode:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # zipfile and numpy raise several types for damaged archives
        raise DatasetError(f"{where}: not a readable episode archive ({exc})") from None
    with archive:
        names = set(archive.files)
        missing = [m for m in (*_ARRAYS, "meta", "model_xml") if m not in names]
        if missing:
            raise DatasetError(f"{where}: episode archive lacks {missing}")
        try:
            members = {name: archive[name] for name in archive.files}
        except ValueError as exc:  # an object array: loading it would need pickle, which is refused
            raise DatasetError(f"{where}: {exc}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # a bad CRC, truncated data
            raise DatasetError(f"{where}: damaged episode archive ({exc})") from None
    try:
        meta = json.loads(str(members.pop("meta")))
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{where}: episode metadata is not valid JSON ({exc})") from None
    if meta.get("format") != "skillcell-episode":
        raise DatasetError(f"{where}: not a skillcell episode (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > EPISODE_FORMAT_VERSION:
        raise DatasetError(f"{where}: episode format version {meta['format_version']} is newer than this "
                           f"skillcell reads ({EPISODE_FORMAT_VERSION}); upgrade skillcell")
    xml = str(members.pop("model_xml"))
    try:
        provenance = from_mapping(Provenance, meta["provenance"], "provenance")
        episode = Episode(
            **{name: members[name] for name in _ARRAYS},
            infos={n[5:]: v for n, v in members.items() if n.startswith("info/")},
            extras={n[6:]: v for n, v in members.items() if n.startswith("extra/")},
            env_id=meta["env_id"], env_kwargs=meta["env_kwargs"], seed=meta["seed"],
            max_episode_steps=meta["max_episode_steps"], control_dt=float(meta["control_dt"]),
            obs_fields=meta["obs_fields"], provenance=provenance, source=meta["source"],
            model_hash=meta["model_hash"], model_xml=xml, versions=meta["versions"],
            created_utc=meta["created_utc"], policy=meta.get("policy", {}), notes=meta.get("notes", {}),
        )
    except KeyError as exc:
        raise DatasetError(f"{where}: episode metadata lacks {exc}") from None
    except ConfigError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    episode.check()
    return episode


def load_episode(path: str | Path, sha256: str | None = None) -> Episode:
    """Reads an episode archive; with ``sha256``, a file whose content changed is a `DatasetError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read episode ({exc.strerror})") from None
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise DatasetError(f"{path}: content does not match the manifest's sha256 (changed or damaged)")
    return _episode_from_bytes(data, str(path))


def _read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest; ``None`` when there is none, or an empty file (as a crash mid-write leaves)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = parse_yaml(path.read_text(), str(path))
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file") from None
    if data is None:
        return None
    try:
        manifest = from_mapping(Manifest, data)
    except ConfigError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if manifest.format != "skillcell-demos":
        raise DatasetError(f"{path}: not a skillcell dataset manifest (format {manifest.format!r})")
    return manifest


def _episode_files(folder: Path) -> list[Path]:
    episodes = folder / "episodes"
    return sorted(p for p in episodes.iterdir() if _EPISODE_RE.match(p.name)) if episodes.is_dir() else []


def _refuse_other_env(folder: Path, listed: Sequence[EpisodeEntry], env_id: str) -> None:
    others = sorted({e.env_id for e in listed} - {env_id})
    if others:
        raise DatasetError(f"{folder}: the dataset holds episodes of {', '.join(others)}, not {env_id}; one dataset "
                           "holds one cell: choose another folder")


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    text = ("# skillcell demonstration dataset; written by skillcell.demos, one entry per episode file\n"
            + yaml.safe_dump(to_mapping(manifest), sort_keys=False, allow_unicode=True))
    atomic_write_text(folder / MANIFEST_NAME, text)


class DemoDataset:
    """A dataset folder opened for reading: ``len(ds)``, ``ds[i]`` (an `Episode`), iteration.

    Every load checks the file against the manifest's sha256. `verify` lists what is wrong with
    the folder without raising.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        if manifest is None:
            files = _episode_files(self.path)
            if not files:
                raise DatasetError(f"{self.path}: no {MANIFEST_NAME}; not a skillcell dataset")
            state = "is empty" if (self.path / MANIFEST_NAME).exists() else "is missing"
            names = ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            raise DatasetError(f"{self.path / MANIFEST_NAME} {state}, so nothing lists or checks the episode files "
                               f"{names}: restore the manifest from a copy of the dataset")
        self.manifest = manifest

    @property
    def entries(self) -> tuple[EpisodeEntry, ...]:
        return self.manifest.episodes

    @property
    def name(self) -> str:
        return self.manifest.name

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Episode:
        return self.load(self.entries[index])

    def __iter__(self) -> Iterator[Episode]:
        for entry in self.entries:
            yield self.load(entry)

    def entry(self, episode_id: int) -> EpisodeEntry:
        for entry in self.entries:
            if entry.id == episode_id:
                return entry
        raise DatasetError(f"{self.path}: no episode with id {episode_id} "
                           f"(ids {[e.id for e in self.entries]})")

    def load(self, entry: EpisodeEntry | int) -> Episode:
        if isinstance(entry, int):
            entry = self.entry(entry)
        return load_episode(self.path / entry.file, sha256=entry.sha256)

    def verify(self) -> list[str]:
        """Problems: missing or changed episode files, unlisted episode files, leftover temp files."""
        problems = []
        listed = set()
        for entry in self.entries:
            listed.add(Path(entry.file).name)
            try:
                self.load(entry)
            except DatasetError as exc:
                problems.append(str(exc))
        folder = self.path / "episodes"
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if _EPISODE_RE.match(p.name) and p.name not in listed:
                    problems.append(f"{p}: episode file not in the manifest (a writer stopped before updating it)")
                elif is_temporary(p):
                    problems.append(f"{p}: leftover temporary file of an interrupted write")
        return problems


class DatasetWriter:
    """Appends episodes to a dataset folder; safe against crashes and against other writers.

    Nothing is created on disk until the first `add`. Each `add` holds the dataset lock, adopts
    episode files that a killed writer renamed into place but did not list, removes that writer's
    temporary files, writes the episode (and its report), then the manifest.
    """

    def __init__(self, path: str | Path, name: str = ""):
        self.path = Path(path)
        self.name = name

    def entries(self) -> tuple[EpisodeEntry, ...]:
        """The episodes the dataset lists so far (none in a new folder)."""
        manifest = _read_manifest(self.path) if self.path.is_dir() else None
        return manifest.episodes if manifest is not None else ()

    def check_env(self, env_id: str) -> None:
        """Raises `DatasetError` if the dataset holds episodes of another env id than ``env_id``."""
        _refuse_other_env(self.path, self.entries(), env_id)

    def add(self, episode: Episode, report: Mapping[str, Any] | None = None) -> EpisodeEntry:
        """Writes ``episode`` (and a feasibility ``report`` next to it) and lists it; returns its entry."""
        data = _episode_bytes(episode)  # serialize first: a bad episode must not touch the folder
        report_text = (yaml.safe_dump(_json_safe(dict(report), "report"), sort_keys=False)
                       if report is not None else None)
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"{self.path}: exists and is not a folder")
        with dataset_lock(self.path):
            manifest = self._recover(_read_manifest(self.path) or Manifest(
                name=self.name or self.path.name,
                created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
            _refuse_other_env(self.path, manifest.episodes, episode.env_id)
            episode_id = max([e.id for e in manifest.episodes] + [-1]) + 1
            file = f"episodes/episode_{episode_id:06d}.npz"
            atomic_write_bytes(self.path / file, data)
            report_file = ""
            if report_text is not None:
                report_file = f"reports/episode_{episode_id:06d}_feasibility.yaml"
                atomic_write_text(self.path / report_file, report_text)
            entry = episode.entry(episode_id, file, sha256_bytes(data), report_file)
            _write_manifest(self.path, Manifest(manifest.format, manifest.format_version, manifest.name,
                                                 manifest.created_utc, (*manifest.episodes, entry)))
        return entry

    def _recover(self, manifest: Manifest) -> Manifest:
        """Under the lock: adopt complete but unlisted episodes, delete dead writers' temp files."""
        listed = {Path(e.file).name for e in manifest.episodes}
        adopted = []
        for sub in ("episodes", "reports"):
            folder = self.path / sub
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if is_temporary(p):
                    p.unlink()  # every live writer holds the lock while its temp files exist
                elif sub == "episodes" and _EPISODE_RE.match(p.name) and p.name not in listed:
                    data = p.read_bytes()
                    try:
                        episode = _episode_from_bytes(data, str(p))
                    except DatasetError as exc:
                        warnings.warn(f"{exc}; not adopted into the manifest", stacklevel=3)
                        continue
                    episode_id = int(_EPISODE_RE.match(p.name).group(1))
                    report = f"reports/episode_{episode_id:06d}_feasibility.yaml"
                    adopted.append(episode.entry(episode_id, f"episodes/{p.name}", sha256_bytes(data),
                                                 report if (self.path / report).is_file() else ""))
        if not adopted:
            return manifest
        warnings.warn(f"{self.path}: adopted {len(adopted)} episode file(s) that an interrupted writer had "
                      "saved but not listed", stacklevel=3)
        episodes = tuple(sorted((*manifest.episodes, *adopted), key=lambda e: e.id))
        return Manifest(manifest.format, manifest.format_version, manifest.name, manifest.created_utc, episodes)
