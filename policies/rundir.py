"""`RunDir`: a training run directory, the one place its layout is written down.

`skillcell train` writes a run through it; ``eval``, ``gate``, ``render`` and ``report`` read runs
and the models in them through it, so no other module spells a run's file names::

    config.yaml          the config as run (every default filled in)
    metrics.csv          one row per evaluation: env steps, wall time, success rate with its
                         Wilson 95% interval, mean return and length, the cell's process KPIs
    bc_model.zip         the model right after behaviour cloning (when BC ran)
    dagger/              the relabelled DAgger episodes (a skillcell.demos dataset) and
    dagger_model.zip     the learner after the last round (when DAgger ran)
    residual.yaml        the base and scale model.zip is a residual of (residual runs)
    checkpoints/         model_<env steps>.zip at every evaluation
    model.zip            the final model (an ordinary SB3 zip: PPO.load / SAC.load)
    vecnormalize.pkl     the frozen observation normalization, if ``env.obs_norm: demos``
    summary.yaml         BC action errors, final evaluation, timings
    sb3/progress.csv     SB3's own training log (losses, KL, entropy coefficient, ...)

Files are written atomically (`skillcell.atomic`), and metrics rows are appended with one
``write`` each and fsynced, so a run killed at any point leaves readable files.

A model file belongs to a run by where it lies: a run's models are in its folder, its checkpoints
one level down in ``checkpoints/``. That run's ``vecnormalize.pkl`` normalizes every model of it;
its ``residual.yaml`` makes the RL models (``model.zip``, checkpoints) residuals of the base it names.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skillcell.atomic import atomic_write_bytes, atomic_write_text
from skillcell.config import ConfigError, parse_yaml
from skillcell.policies.train_config import load_train_config

__all__ = ["MetricsLog", "RunDir", "RunDirError", "read_metrics", "steps_to_success"]

CONFIG, METRICS, SUMMARY = "config.yaml", "metrics.csv", "summary.yaml"
MODEL, BC_MODEL, DAGGER_MODEL = "model.zip", "bc_model.zip", "dagger_model.zip"
VECNORMALIZE, RESIDUAL = "vecnormalize.pkl", "residual.yaml"
CHECKPOINTS, DAGGER, SB3_LOG = "checkpoints", "dagger", "sb3"


class RunDirError(ValueError):
    """A run directory, or a file a command needs in it, is missing."""


@dataclass(frozen=True)
class RunDir:
    """The run directory at ``path`` (see the module docstring for its layout)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ the layout

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def bc_model(self) -> Path:
        return self.path / BC_MODEL

    @property
    def dagger_model(self) -> Path:
        return self.path / DAGGER_MODEL

    @property
    def vecnormalize(self) -> Path:
        return self.path / VECNORMALIZE

    @property
    def residual_record(self) -> Path:
        return self.path / RESIDUAL

    @property
    def dagger_dataset(self) -> Path:
        return self.path / DAGGER

    @property
    def sb3_log(self) -> Path:
        """SB3's logger folder (``progress.csv`` in it)."""
        return self.path / SB3_LOG

    @property
    def sb3_progress(self) -> Path:
        return self.sb3_log / "progress.csv"

    def checkpoint(self, env_steps: int) -> Path:
        return self.path / CHECKPOINTS / f"model_{env_steps:09d}.zip"

    def checkpoints(self) -> list[Path]:
        return sorted((self.path / CHECKPOINTS).glob("model_*.zip"))

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory; its files are checked when they are asked for (`require`)."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path}: not a folder (a training run directory is expected)")
        return run

    def require(self, file: Path, what: str = "") -> Path:
        """``file`` (one of this run's paths) if it exists, else a `RunDirError` that names it."""
        if not file.exists():
            raise RunDirError(f"{self.path}: no {file.relative_to(self.path)}"
                              + (f" ({what})" if what else " (not a finished skillcell train run?)"))
        return file

    def final_model(self) -> Path:
        return self.require(self.model, "the final model; skillcell train writes it when training ends")

    @classmethod
    def of_model(cls, model: str | Path) -> RunDir:
        """The run a model file belongs to by its place: its folder, or the run above ``checkpoints/``."""
        folder = Path(model).parent
        return cls(folder.parent if folder.name == CHECKPOINTS else folder)

    @classmethod
    def vecnormalize_of(cls, model: str | Path) -> Path | None:
        """The observation normalization of ``model``'s run, if the run has one."""
        file = cls.of_model(model).vecnormalize
        return file if file.is_file() else None

    @classmethod
    def residual_record_of(cls, model: str | Path) -> Path | None:
        """``residual.yaml`` of ``model``'s run if ``model`` is one of its RL models (the BC and DAgger
        models of a residual run are its base, not residuals)."""
        model = Path(model)
        if model.name in (BC_MODEL, DAGGER_MODEL):
            return None
        file = cls.of_model(model).residual_record
        return file if file.is_file() else None

    # ------------------------------------------------------------------ reading

    def config_mapping(self) -> dict[str, Any] | None:
        """``config.yaml`` as a mapping (None without one; a `ConfigError` naming the file if it is broken)."""
        if not self.config.is_file():
            return None
        data = parse_yaml(self.config.read_text(errors="replace"), str(self.config))
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config}: expected a mapping of config sections")
        return data

    def train_config(self):
        """The run's `TrainConfig` (strictly loaded, as `skillcell train` ran it)."""
        return load_train_config(self.require(self.config, "the config as run"))

    def env(self) -> tuple[str, dict[str, Any]]:
        """``(env_id, gym.make kwargs)`` of the cell the run was evaluated on (its last training tier)."""
        env = self.train_config().env
        return env.id, env.gym_kwargs(env.tiers[-1])

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary.is_file():
            return None
        return parse_yaml(self.summary.read_text(errors="replace"), str(self.summary))

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.require(self.metrics, "one row per evaluation"))

    # ------------------------------------------------------------------ writing

    @classmethod
    def check_new(cls, path: str | Path, overwrite: bool = False) -> RunDir:
        """The run directory a new run will write; `FileExistsError` if it holds a run, unless ``overwrite``."""
        run = cls(path)
        if run.metrics.exists() and not overwrite:
            raise FileExistsError(f"{run.path} already holds a run ({METRICS}); choose another out or pass "
                                  "--overwrite")
        return run

    def clear(self) -> None:
        """Deletes a previous run's results, so that nothing of it can be mistaken for the new run's
        (a model's ``vecnormalize.pkl`` is picked up by its place, DAgger's dataset would be appended to)."""
        for name in (METRICS, MODEL, BC_MODEL, DAGGER_MODEL, RESIDUAL, VECNORMALIZE, SUMMARY):
            (self.path / name).unlink(missing_ok=True)
        for old in self.checkpoints():
            old.unlink()
        if self.dagger_dataset.is_dir():
            shutil.rmtree(self.dagger_dataset)

    def write_config(self, text: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.config, "# skillcell train: the config as run\n" + text)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return atomic_write_text(self.summary, yaml.safe_dump(summary, sort_keys=False))

    def write_residual_record(self, record: dict[str, Any]) -> Path:
        return atomic_write_text(self.residual_record, yaml.safe_dump(record, sort_keys=False))

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the run if it lies inside it (the run can then move), else absolute."""
        path, root = Path(path).resolve(), self.path.resolve()
        return str(path.relative_to(root) if path.is_relative_to(root) else path)

    @staticmethod
    def save_model(model, path: Path) -> Path:
        """``model.save`` into memory, then an atomic write: a crash never leaves a half-written zip."""
        buffer = io.BytesIO()
        model.save(buffer)
        return atomic_write_bytes(path, buffer.getvalue())

    def save_vec_normalize(self, vn) -> Path:
        # VecNormalize.save pickles itself minus its venv; the same, through the atomic writer.
        venv, vn.venv = vn.venv, None
        try:
            data = pickle.dumps(vn)
        finally:
            vn.venv = venv
        return atomic_write_bytes(self.vecnormalize, data)

    def metrics_log(self, columns: list[str]) -> MetricsLog:
        return MetricsLog(self.metrics, columns)


class MetricsLog:
    """``metrics.csv``: a header, then one row per evaluation, each appended with a single
    ``os.write`` on an ``O_APPEND`` descriptor and fsynced (a crash loses at most the row being
    written, never an earlier one)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        atomic_write_text(path, self._line(columns))

    @staticmethod
    def _line(values: list[Any]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(values)
        return out.getvalue()

    def append(self, row: dict[str, Any]) -> None:
        values = [_fmt(row.get(c, "")) for c in self.columns]
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, self._line(values).encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.csv``, numbers as floats (empty cells as NaN)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value) if value != "" else math.nan
                except ValueError:
                    parsed[key] = value
            rows.append(parsed)
    return rows


def steps_to_success(rows: list[dict[str, Any]], threshold: float = 0.9, key: str = "success_rate") -> float:
    """The first ``env_steps`` at which ``key`` reached ``threshold`` (NaN if it never did)."""
    for row in rows:
        if row.get(key, math.nan) >= threshold:
            return float(row["env_steps"])
    return math.nan
