"""Skill scores: how well a demonstration did its job, from the cell's process metrics.

A *scorer* maps an `Episode` to a `SkillScore`: a few physical metrics, each turned into a
component in [0, 1] by a linear ramp between a *good* and a *bad* value, and an overall score in
[0, 1] (a weighted mean of the components). A cell declares its scorer class in its
`register_cell` line (``scorer="module:Name"``, `skillcell.envs.registry`); scoring reads only the
episode file (``info`` metrics, decoded observations, and the cell's limits from the config its
``env_kwargs`` give), never builds an env.

Built in:

- **PegInsert** (`PegInsertScorer`): insertion time, peak contact force (full marks up to the
  cell's ``task.jam_force_n``, none at its ``limits.rated_insertion_force_n``, where the gate
  fails it), and search length (the lateral distance the peg tip travelled while pressed on the
  surface around the opening). A failed or physics-invalid insertion scores 0: it did not do the
  job.
- **WeldSeam** (`WeldSeamScorer`): the in-spec fraction of the seam (the welding inspector's
  headline figure), travel-speed steadiness (coefficient of variation over the bead), torch
  angle steadiness (the larger of the work- and travel-angle standard deviations over the bead)
  and soundness (the share of the seam the defect indicators flag, `skillcell.envs.weld_process`).

`score_dataset` scores every episode and aggregates per operator; `filter_dataset` writes the
episodes above a score into a new dataset for training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from skillcell.atomic import atomic_write_text
from skillcell.config import ConfigError, parse_yaml
from skillcell.demos.episode import DatasetWriter, DemoDataset, Episode, EpisodeEntry
from skillcell.demos.errors import DatasetError, DemoError
from skillcell.envs.registry import UnknownCellError, cell_config, cell_spec
from skillcell.envs.weld import SeamPath

__all__ = [
    "DatasetScores",
    "EpisodeScore",
    "PegInsertScorer",
    "SkillScore",
    "WeldSeamScorer",
    "check_filter_out",
    "filter_dataset",
    "ramp",
    "score_dataset",
    "score_episode",
    "scorer_for",
]


@dataclass(frozen=True)
class SkillScore:
    """``score`` and ``components`` in [0, 1] (1 is best); ``metrics`` in the units their keys name."""

    score: float
    components: dict[str, float]
    metrics: dict[str, float]


Scorer = Callable[[Episode], SkillScore]


def ramp(value: float, good: float, bad: float) -> float:
    """1 at or beyond ``good``, 0 at or beyond ``bad``, linear between; NaN scores 0."""
    if not math.isfinite(value):
        return 0.0
    return float(min(1.0, max(0.0, (bad - value) / (bad - good))))


def scorer_for(env_id: str) -> Scorer:
    """The skill scorer that the cell registry declares for ``env_id`` (`skillcell.envs.registry`)."""
    try:
        spec = cell_spec(env_id)
    except UnknownCellError as exc:
        raise DemoError(f"no skill scorer: {exc}") from None
    if spec.scorer is None:
        raise DemoError(f"no skill scorer for {env_id}: its register_cell declares none")
    return spec.scorer()


def score_episode(episode: Episode) -> SkillScore:
    return scorer_for(episode.env_id)(episode)


def _final(episode: Episode, key: str) -> float:
    values = episode.infos.get(key)
    return float(values[-1]) if values is not None and len(values) else math.nan


def _time_to_success(episode: Episode) -> float:
    """When the episode first succeeded (s), else its duration: an episode may run on past its success
    (an imported capture keeps the operator's hold after the peg is seated)."""
    flags = np.asarray(episode.infos.get("is_success", []), bool)
    return float(np.argmax(flags)) * episode.control_dt if flags.any() else episode.duration_s


def _weighted(components: dict[str, float], weights: dict[str, float]) -> float:
    return sum(weights[k] * components[k] for k in weights) / sum(weights.values())


def _cell_config(episode: Episode):
    try:
        return cell_config(episode.env_id, **episode.env_kwargs)
    except (ConfigError, UnknownCellError) as exc:
        raise DemoError(f"cannot score an episode of {episode.env_id}: its cell config does not load ({exc})"
                        ) from None


@dataclass(frozen=True)
class PegInsertScorer:
    """Scores a peg insertion. Ramps: time to the peg seated ``time_good_s``..``time_bad_s`` (the 10 s time limit),
    peak force from the cell's ``task.jam_force_n`` (full marks) to its
    ``limits.rated_insertion_force_n`` (none), read from the episode's cell config, search
    ``search_good_mm``..``search_bad_mm``; the score is their weighted mean for a successful,
    physically valid insertion and 0 otherwise.

    Search: lateral travel of the peg tip in the hole frame while it is pressed on the surface
    (tip within ``surface_band_mm`` above or below the opening plane, F/T force above
    ``contact_force_n``), from the episode's decoded observations.
    """

    time_good_s: float = 3.0
    time_bad_s: float = 10.0
    search_good_mm: float = 0.0
    search_bad_mm: float = 20.0
    surface_band_mm: float = 1.0
    contact_force_n: float = 2.0
    weights: dict[str, float] = field(default_factory=lambda: {"time": 1.0, "peak_force": 1.0, "search": 1.0})

    def search_length_mm(self, episode: Episode) -> float:
        obs = episode.decode_observations()
        xy = obs["tcp_pos_task"][:, :2]
        depth = obs["depth"][:, 0]
        force = np.linalg.norm(obs["force_tool"], axis=1)
        pressing = (np.abs(depth) < self.surface_band_mm * 1e-3) & (force > self.contact_force_n)
        moving = pressing[1:] & pressing[:-1]
        return float(1e3 * np.linalg.norm(np.diff(xy, axis=0), axis=1)[moving].sum())

    def __call__(self, episode: Episode) -> SkillScore:
        success = episode.success and not bool(episode.infos.get("physics_invalid", [False])[-1])
        config = _cell_config(episode)
        force_good, force_bad = config.task.jam_force_n, config.limits.rated_insertion_force_n
        metrics = {"time_s": _time_to_success(episode), "peak_force_n": _final(episode, "peak_insertion_force_n"),
                   "search_length_mm": self.search_length_mm(episode), "success": float(success)}
        components = {"time": ramp(metrics["time_s"], self.time_good_s, self.time_bad_s),
                      "peak_force": ramp(metrics["peak_force_n"], force_good, force_bad),
                      "search": ramp(metrics["search_length_mm"], self.search_good_mm, self.search_bad_mm)}
        score = _weighted(components, self.weights) if success else 0.0
        return SkillScore(score=score, components=components, metrics=metrics)


@dataclass(frozen=True)
class WeldSeamScorer:
    """Scores a weld from the bead: in-spec fraction (as is), speed steadiness (coefficient of
    variation ``speed_cv_good``..``speed_cv_bad``), angle steadiness (larger of the work and
    travel angle standard deviations, ``angle_std_good_deg``..``angle_std_bad_deg``), soundness
    (the seam length with any defect indication, ``defect_length_mm``, over the seam's length:
    ``defect_fraction_good``..``defect_fraction_bad``); weighted mean with ``weights``. A weld
    without a bead (arc never on) scores 0.
    """

    speed_cv_good: float = 0.05
    speed_cv_bad: float = 0.30
    angle_std_good_deg: float = 1.0
    angle_std_bad_deg: float = 5.0
    defect_fraction_good: float = 0.0
    defect_fraction_bad: float = 0.2
    weights: dict[str, float] = field(default_factory=lambda: {"in_spec": 2.0, "speed_steadiness": 1.0,
                                                               "angle_steadiness": 1.0, "soundness": 1.0})

    def __call__(self, episode: Episode) -> SkillScore:
        in_spec = _final(episode, "in_spec_fraction")
        mean, std = _final(episode, "bead_travel_speed_mm_s_mean"), _final(episode, "bead_travel_speed_mm_s_std")
        angle_std = max(_final(episode, "bead_work_angle_deg_std"), _final(episode, "bead_travel_angle_deg_std"))
        seam_mm = SeamPath(_cell_config(episode).seam).length * 1e3
        defect_mm = _final(episode, "defect_length_mm")
        metrics = {"in_spec_fraction": in_spec, "travel_speed_mm_s_mean": mean, "travel_speed_cv": std / mean
                   if mean > 0 else math.nan, "angle_std_deg": angle_std, "defect_length_mm": defect_mm,
                   "defect_fraction": defect_mm / seam_mm, "success": float(episode.success)}
        components = {"in_spec": in_spec if math.isfinite(in_spec) else 0.0,
                      "speed_steadiness": ramp(metrics["travel_speed_cv"], self.speed_cv_good, self.speed_cv_bad),
                      "angle_steadiness": ramp(angle_std, self.angle_std_good_deg, self.angle_std_bad_deg),
                      "soundness": ramp(metrics["defect_fraction"], self.defect_fraction_good,
                                        self.defect_fraction_bad)}
        if "defect_length_mm" not in episode.infos:  # recorded before the defect indicators: not judged on them
            del components["soundness"]
        weights = {k: w for k, w in self.weights.items() if k in components}
        return SkillScore(score=_weighted(components, weights), components=components, metrics=metrics)


@dataclass(frozen=True)
class EpisodeScore:
    """One episode's score with what identifies it."""

    id: int
    operator_id: str
    env_id: str
    source: str
    success: bool
    skill: SkillScore


@dataclass
class DatasetScores:
    """Scores of a dataset's episodes, with per-operator aggregates."""

    path: Path
    episodes: list[EpisodeScore]

    def per_operator(self) -> dict[str, dict[str, float]]:
        """``operator -> {episodes, mean, std, min, max, success_rate}`` of the overall score."""
        out: dict[str, dict[str, float]] = {}
        for operator in sorted({e.operator_id for e in self.episodes}):
            scores = np.array([e.skill.score for e in self.episodes if e.operator_id == operator])
            successes = [e.success for e in self.episodes if e.operator_id == operator]
            out[operator] = {"episodes": len(scores), "mean": float(scores.mean()), "std": float(scores.std()),
                             "min": float(scores.min()), "max": float(scores.max()),
                             "success_rate": float(np.mean(successes))}
        return out

    def select(self, min_score: float) -> list[int]:
        """Ids of the episodes scoring at least ``min_score``."""
        return [e.id for e in self.episodes if e.skill.score >= min_score]

    def to_mapping(self) -> dict[str, Any]:
        return {"dataset": str(self.path),
                "episodes": [{"id": e.id, "operator_id": e.operator_id, "env_id": e.env_id, "source": e.source,
                              "success": e.success, "score": round(e.skill.score, 6),
                              "components": {k: round(v, 6) for k, v in e.skill.components.items()},
                              "metrics": {k: round(v, 6) if math.isfinite(v) else None
                                          for k, v in e.skill.metrics.items()}}
                             for e in self.episodes],
                "operators": {k: {m: round(v, 6) if isinstance(v, float) else v for m, v in agg.items()}
                              for k, agg in self.per_operator().items()}}

    def save(self, path: str | Path | None = None) -> Path:
        """Writes the scores as YAML (default ``<dataset>/scores.yaml``), atomically."""
        path = Path(path) if path is not None else self.path / "scores.yaml"
        text = yaml.safe_dump(self.to_mapping(), sort_keys=False)
        return atomic_write_text(path, text)

    def report(self) -> str:
        lines = [f"{'id':>5} {'operator':20s} {'ok':3s} {'score':>6}  components"]
        for e in self.episodes:
            parts = " ".join(f"{k}={v:.2f}" for k, v in e.skill.components.items())
            lines.append(f"{e.id:5d} {e.operator_id[:20]:20s} {'yes' if e.success else 'no':3s} "
                         f"{e.skill.score:6.3f}  {parts}")
        lines.append(f"{'operator':20s} {'n':>4} {'mean':>6} {'std':>6} {'min':>6} {'max':>6} {'success':>8}")
        for operator, agg in self.per_operator().items():
            lines.append(f"{operator[:20]:20s} {agg['episodes']:4d} {agg['mean']:6.3f} {agg['std']:6.3f} "
                         f"{agg['min']:6.3f} {agg['max']:6.3f} {agg['success_rate']:8.0%}")
        return "\n".join(lines)


def score_dataset(path: str | Path, progress: bool = False) -> DatasetScores:
    """Scores every episode of the dataset at ``path``."""
    dataset = DemoDataset(path)
    scores = []
    for entry in tqdm(dataset.entries, desc="scoring", unit="ep", disable=not progress, leave=False):
        episode = dataset.load(entry)
        scores.append(EpisodeScore(id=entry.id, operator_id=episode.provenance.operator_id, env_id=episode.env_id,
                                   source=episode.source, success=episode.success, skill=score_episode(episode)))
    return DatasetScores(path=Path(path), episodes=scores)


def check_filter_out(source: str | Path, out: str | Path, *, force: bool = False) -> None:
    """Raises `DemoError` if `filter_dataset` may not write ``out``: the source itself, or (without
    ``force``) a folder that holds anything already."""
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise DemoError(f"{out}: filtering writes a new dataset; choose another folder than the source")
    if out.is_dir() and not force and any(out.iterdir()):
        raise DemoError(f"{out}: the folder is not empty; choose a new folder, or pass --force to add the "
                        "selected episodes to the dataset there")


def filter_dataset(source: str | Path, out: str | Path, *, min_score: float = 0.0,
                   operators: Sequence[str] | None = None, force: bool = False) -> list[EpisodeEntry]:
    """Writes the episodes of ``source`` scoring at least ``min_score`` (and, if given, recorded by one
    of ``operators``) into the dataset ``out``, with their reports; returns the new entries.

    ``out`` must be a new or empty folder (a dataset is never filtered in place, nor mixed into
    another by accident: what was saved is never lost); ``force`` appends to a non-empty one.
    """
    source, out = Path(source), Path(out)
    check_filter_out(source, out, force=force)
    dataset = DemoDataset(source)
    scores = score_dataset(source)
    keep = set(scores.select(min_score))
    writer = DatasetWriter(out, name=f"{dataset.name}-min{min_score:g}")
    entries = []
    for entry in dataset.entries:
        if entry.id not in keep or (operators is not None and entry.operator_id not in operators):
            continue
        episode = dataset.load(entry)
        episode.notes = {**episode.notes, "filtered_from": {"dataset": str(source), "id": entry.id,
                                                            "min_score": min_score}}
        report = None
        if entry.report:
            try:
                report = parse_yaml((source / entry.report).read_text(), str(source / entry.report))
            except ConfigError as exc:
                raise DatasetError(str(exc)) from None
        entries.append(writer.add(episode, report))
    return entries
