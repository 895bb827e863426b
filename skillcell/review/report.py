"""``skillcell report RUN_DIR``: one self-contained HTML page about a training run.

Sections, each present when its data is:

1. **Learning curve** from ``RUN_DIR/metrics.csv``: read generically (any numeric column; the
   x axis is the first of ``env_steps``, ``timesteps``, ... found, else the row number), success
   and return on top, every other numeric column as a small plot below; a ``<col>_std`` column
   shades a band around ``<col>`` (as ``success_ci_low``/``_high`` do around ``success_rate``); a
   ``phase`` (``stage``, ``algo``) text column splits the curves (`skillcell train`: bc, rl).
   SB3's own ``sb3/progress.csv`` (losses, entropy) gets the same treatment.
2. **Run configuration**: the run's ``config.yaml`` and ``summary.yaml`` as text.
3. **Evaluation episodes**: per-episode success, return, the cell's KPIs and skill score, from a
   dataset folder of episodes (`skillcell.demos` format) in ``RUN_DIR`` or given, or rolled out
   from the run's final model (``model.zip``, with its ``vecnormalize.pkl``) on the run's
   evaluation seeds on request.
4. **Best and worst episode**: their process metrics over time with the in-spec bands, the
   moments out of spec, and videos (state replay with overlays).
5. **Weld defects** (welding cells): the best and the worst bead along the seam (heat input
   against the WPS's range, bead width and leg, the stretches each defect indicator flagged), and
   per indicator its cause as the WPS states it and the bead length it flagged per episode.
6. **Demonstrations**: the skill-score distribution of a demonstration dataset, per operator.

Each section is one function returning its HTML fragment (`learning_curve_section`,
`training_log_section`, `configuration_section`, `evaluation_section`, `best_worst_section`,
`defect_section`, `dataset_section`; `run_summary_section` is the page's title line);
`build_report` finds the data and puts the page together.

Plots are PNG images embedded as data URIs (matplotlib, Agg, no display); videos are files in
``<report stem>_files/`` next to the page (``embed_videos`` puts them in the page as well). The
page and every file are written atomically.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from tqdm.auto import tqdm

import skillcell
from skillcell.atomic import atomic_write_text
from skillcell.demos.episode import DemoDataset
from skillcell.demos.recorder import EpisodeRecorder, scripted_provenance
from skillcell.demos.scores import score_episode
from skillcell.envs.registry import cell_spec
from skillcell.evaluation import wilson_interval
from skillcell.policies.rundir import RunDir
from skillcell.review.overlays import DEFECT_COLORS, cell_review, defect_stretches
from skillcell.review.sources import EpisodeSource, load_policy, make_review_env
from skillcell.review.video import FrameRenderer, render_video
from skillcell.rollout import rollout

__all__ = ["EpisodeRow", "MetricsTable", "Ranking", "ReportOptions", "ReportResult", "Section", "best_worst_section",
           "build_report", "configuration_section", "dataset_section", "defect_section", "evaluation_section",
           "find_datasets", "learning_curve_section",
           "read_metrics_csv", "run_summary_section", "training_log_section"]

X_COLUMNS = ("env_steps", "timesteps", "total_timesteps", "num_timesteps", "time/total_timesteps", "env_step", "steps",
             "step", "iteration", "epoch")
PLOT_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class ReportOptions:
    episodes: str | Path | None = None
    dataset: str | Path | None = None
    rollouts: int = 0
    env_id: str | None = None
    videos: bool = True
    embed_videos: bool = False
    camera: str | None = None
    width: int = 640
    height: int = 480
    quality: str = "fast"
    progress: bool = False
    trust_model: bool = False  # unpickle the run's model (runs code from it): trusted runs only
    max_video_frames: int = 400  # longer episodes are rendered every k-th step (still real time)


@dataclass
class ReportResult:
    path: Path
    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------- metrics.csv


@dataclass
class MetricsTable:
    """A CSV read column-wise: ``numeric`` columns as float arrays (blank or bad cells NaN), ``text`` columns."""

    numeric: dict[str, np.ndarray]
    text: dict[str, list[str]]
    rows: int

    def x_column(self) -> str | None:
        lower = {c.lower(): c for c in self.numeric}
        for name in X_COLUMNS:
            if name in lower:
                return lower[name]
        return None


def read_metrics_csv(path: str | Path) -> MetricsTable:
    """Reads any CSV with a header row; a column is numeric when every non-blank cell parses as a float."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file (a header row is needed)") from None
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: repeated column names in the header: {header}")
    numeric: dict[str, np.ndarray] = {}
    text: dict[str, list[str]] = {}
    for j, name in enumerate(header):
        cells = [row[j].strip() if j < len(row) else "" for row in rows]
        values = []
        for cell in cells:
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                break
        if len(values) == len(cells):
            numeric[name] = np.asarray(values, dtype=float)
        else:
            text[name] = cells
    return MetricsTable(numeric=numeric, text=text, rows=len(rows))


# ---------------------------------------------------------------------- plotting


def _figure(width: float = 9.0, height: float = 3.2, ncols: int = 1, nrows: int = 1):
    # The object API (no pyplot): no global state, no display, safe to call from any thread.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _series_groups(table: MetricsTable) -> list[tuple[str, np.ndarray]]:
    """Row groups by a ``phase``/``stage``/``algo`` text column with 2-6 values (bc, rl), else one group.

    Only those names: a free-text column (notes) must not split the curves.
    """
    for name, cells in table.text.items():
        if name.lower() not in ("phase", "stage", "algo", "algorithm"):
            continue
        values = list(dict.fromkeys(c for c in cells if c))
        if 2 <= len(values) <= 6:
            return [(f"{name}={v}", np.array([c == v for c in cells])) for v in values]
    return [("", np.ones(table.rows, bool))]


def _plot_column(ax, table: MetricsTable, x: np.ndarray, column: str, groups, xlabel: str) -> None:
    y = table.numeric[column]
    std = table.numeric.get(f"{column}_std")
    low, high = _interval_columns(table, column)
    for i, (group, mask) in enumerate(groups):
        color = PLOT_COLORS[i % len(PLOT_COLORS)]
        ok = mask & np.isfinite(y) & np.isfinite(x)
        if not ok.any():
            continue
        ax.plot(x[ok], y[ok], marker="o" if ok.sum() < 30 else None, markersize=3, color=color,
                label=group or None)
        if std is not None:
            band = ok & np.isfinite(std)
            ax.fill_between(x[band], (y - std)[band], (y + std)[band], color=color, alpha=0.2, linewidth=0)
        elif low is not None:
            band = ok & np.isfinite(low) & np.isfinite(high)
            ax.fill_between(x[band], low[band], high[band], color=color, alpha=0.2, linewidth=0)
    ax.set_title(column, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if any(g for g, _ in groups):
        ax.legend(fontsize=7)


def _interval_columns(table: MetricsTable, column: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``<col>_low``/``<col>_high``, or for ``<x>_rate`` the ``<x>_ci_low``/``<x>_ci_high`` pair (skillcell train)."""
    stem = column[:-5] if column.endswith("_rate") else column
    for low, high in ((f"{column}_low", f"{column}_high"), (f"{stem}_ci_low", f"{stem}_ci_high")):
        if low in table.numeric and high in table.numeric:
            return table.numeric[low], table.numeric[high]
    return None, None


def _is_band_column(name: str) -> bool:
    return name.endswith(("_std", "_low", "_high"))


def learning_curve_plots(table: MetricsTable) -> tuple[list[str], list[str]]:
    """``(main, others)``: data-URI PNGs of the success/return curves and of the other columns."""
    xname = table.x_column()
    x = table.numeric[xname] if xname else np.arange(table.rows, dtype=float)
    xlabel = xname or "row"
    groups = _series_groups(table)
    columns = [c for c in table.numeric if c != xname and not _is_band_column(c)]
    success = next((c for c in columns if "success" in c.lower()), None)
    ret = next((c for c in columns if "return" in c.lower()), None) or next(
        (c for c in columns if "reward" in c.lower()), None)
    main = [c for c in (success, ret) if c]
    # Constant columns (episodes per evaluation) and empty ones say nothing as a curve.
    rest = [c for c in columns if c not in main and np.unique(table.numeric[c][np.isfinite(table.numeric[c])]).size > 1]
    images = []
    if main:
        fig, axes = _figure(9.0, 3.2, ncols=len(main))
        for ax, column in zip(axes[0], main, strict=True):
            _plot_column(ax, table, x, column, groups, xlabel)
            if column == success and np.nanmax(table.numeric[column], initial=0) <= 1.0:
                ax.set_ylim(-0.03, 1.03)
        images.append(_png(fig))
    others = []
    for start in range(0, len(rest), 6):
        chunk = rest[start:start + 6]
        ncols = min(3, len(chunk))
        nrows = math.ceil(len(chunk) / ncols)
        fig, axes = _figure(9.0, 2.4 * nrows, ncols=ncols, nrows=nrows)
        for k, ax in enumerate(axes.flat):
            if k < len(chunk):
                _plot_column(ax, table, x, chunk[k], groups, xlabel)
            else:
                ax.set_visible(False)
        others.append(_png(fig))
    return images, others


def _series_plot(episodes: Sequence[tuple[str, Any]], keys: Sequence[str], review) -> str:
    """Process metrics over time for the labelled episodes, bands shaded, one panel per key."""
    keys = [k for k in keys if any(k in ep.infos for _, ep in episodes)]
    ncols = 2 if len(keys) > 1 else 1
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig, axes = _figure(9.0, 2.1 * nrows, ncols=ncols, nrows=nrows)
    for k, ax in enumerate(axes.flat):
        if k >= len(keys):
            ax.set_visible(False)
            continue
        key = keys[k]
        spec = review.metric(key) if review is not None else None
        for i, (label, ep) in enumerate(episodes):
            if key not in ep.infos:
                continue
            values = np.asarray(ep.infos[key], dtype=float) * (spec.scale if spec else 1.0)
            t = np.arange(len(values)) * ep.control_dt
            if spec is not None and spec.active_when and spec.active_when in ep.infos:
                # Outside the band's active phase (e.g. arc off) the value is not judged: dim it.
                active = np.asarray(ep.infos[spec.active_when], dtype=bool)
                ax.plot(t, np.where(active, np.nan, values), color=PLOT_COLORS[i], alpha=0.25, linewidth=1)
                values = np.where(active, values, np.nan)
            ax.plot(t, values, color=PLOT_COLORS[i], linewidth=1.2, label=label)
        if spec is not None and spec.band is not None:
            # Shade the band without stretching the axis to it: a 60 N force limit would flatten
            # a 5 N signal. A panel that is all green is a metric that stayed in spec.
            limits = ax.get_ylim()
            ax.axhspan(*spec.band, color="#2ca02c", alpha=0.12, linewidth=0)
            ax.set_ylim(limits)
        ax.set_title(key + (f" [{spec.unit}]" if spec is not None and spec.unit else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
        ax.set_xlabel("time [s]", fontsize=7)
    return _png(fig)


def _bead_plot(beads: Sequence[tuple[str, dict[str, np.ndarray]]], review, wps) -> str:
    """Per episode (a column): heat input along the seam against the WPS's range, the bead's width and
    leg against the design leg, and the stretches of each defect indicator as bars in its colour."""
    fig, axes = _figure(9.0, 5.6, ncols=len(beads), nrows=3)
    heat_band = review.metric("heat_input_kj_mm").band
    leg = wps.defects.insufficient_leg
    for col, (label, bead) in enumerate(beads):
        heat_ax, size_ax, defect_ax = axes[:, col]
        s, welded = bead["s_mm"], bead["welded"]
        heat_ax.plot(s, np.where(welded, bead["heat_input_kj_mm"], np.nan), color=PLOT_COLORS[0], linewidth=1.2)
        limits = heat_ax.get_ylim()
        heat_ax.axhspan(*heat_band, color="#2ca02c", alpha=0.12, linewidth=0, label="WPS range")
        heat_ax.set_ylim(min(limits[0], heat_band[0] * 0.9), max(limits[1], heat_band[1] * 1.1))
        heat_ax.set_title(f"{label}: heat input [kJ/mm]", fontsize=9)
        heat_ax.legend(fontsize=7, loc="upper right")
        size_ax.plot(s, np.where(welded, bead["width_mm"], np.nan), color=PLOT_COLORS[2], linewidth=1.2,
                     label="width")
        if leg is not None:
            size_ax.plot(s, np.where(welded, bead["leg_mm"], np.nan), color=PLOT_COLORS[3], linewidth=1.2, label="leg")
            size_ax.axhline(leg.leg_min_mm, color=PLOT_COLORS[3], linestyle="--", linewidth=0.8, label="design leg")
        size_ax.set_title("bead [mm]", fontsize=9)
        size_ax.legend(fontsize=7, loc="upper right", ncols=3)
        spacing = float(np.median(np.diff(s))) if len(s) > 1 else 1.0
        for lane, name in enumerate(review.defects):
            bars = [(s[a] - spacing / 2, s[b] - s[a] + spacing) for a, b in defect_stretches(bead[f"defect_{name}"])]
            defect_ax.broken_barh(bars, (lane - 0.4, 0.8), facecolors=DEFECT_COLORS[name])
        defect_ax.set_yticks(range(len(review.defects)), [n.replace("_", " ") for n in review.defects])
        defect_ax.set_ylim(-0.6, len(review.defects) - 0.4)
        defect_ax.invert_yaxis()
        defect_ax.set_title("defect stretches", fontsize=9)
        defect_ax.set_xlabel("seam position [mm]", fontsize=8)
        for ax in (heat_ax, size_ax, defect_ax):
            ax.set_xlim(s[0], s[-1])
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    for row in axes[:2]:  # the same scale side by side
        low, high = min(ax.get_ylim()[0] for ax in row), max(ax.get_ylim()[1] for ax in row)
        for ax in row:
            ax.set_ylim(low, high)
    return _png(fig)


def _histogram(groups: dict[str, list[float]], xlabel: str) -> str:
    fig, axes = _figure(9.0, 3.0)
    ax = axes[0][0]
    names = list(groups)
    bins = np.linspace(0.0, 1.0, 21) if all(0 <= v <= 1 for vs in groups.values() for v in vs) else 20
    ax.hist([groups[n] for n in names], bins=bins, stacked=True, label=names,
            color=[PLOT_COLORS[i % len(PLOT_COLORS)] for i in range(len(names))])
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("episodes", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if len(names) > 1 or names[0]:
        ax.legend(fontsize=7)
    return _png(fig)


# ---------------------------------------------------------------------- data discovery


def find_datasets(folder: Path, depth: int = 3) -> list[Path]:
    """Dataset folders (with a ``dataset.yaml``) in ``folder`` and up to ``depth`` levels below it."""
    found = []
    for path in sorted(folder.rglob("dataset.yaml")):
        if len(path.relative_to(folder).parts) <= depth + 1:
            found.append(path.parent)
    return found


# ---------------------------------------------------------------------- episodes


@dataclass
class EpisodeRow:
    """An episode of a dataset with its id and skill score (None: the cell has no scorer)."""

    id: int
    episode: Any
    score: float | None
    components: dict[str, float]


def _score(episode) -> tuple[float | None, dict[str, float]]:
    try:
        skill = score_episode(episode)
    except Exception as exc:  # a cell without a scorer: the report ranks by return instead
        warnings.warn(f"no skill score for {episode.env_id}: {exc}", stacklevel=2)
        return None, {}
    return float(skill.score), dict(skill.components)


def _load_episodes(path: Path) -> list[EpisodeRow]:
    dataset = DemoDataset(path)
    rows = []
    for entry in dataset.entries:
        episode = dataset.load(entry)
        score, components = _score(episode)
        rows.append(EpisodeRow(entry.id, episode, score, components))
    return rows


def _roll_out(model: Path, env_id: str, env_kwargs: dict, episodes: int, seed: int, out: Path,
              progress: bool, trusted: bool) -> Path:
    """Rolls the run's final model out for ``episodes`` episodes (seeds ``seed``..) into a dataset at ``out``.

    ``out`` is the report's own folder: a previous report's rollouts there are replaced, not added to.
    """
    if (out / "dataset.yaml").is_file():
        shutil.rmtree(out)
    env = gym.make(env_id, **env_kwargs)
    try:
        policy = load_policy(model, env, trusted=trusted)
        recorder = EpisodeRecorder(env, out, source="policy", provenance=scripted_provenance(f"policy-{model.stem}"),
                                   policy={"name": policy.name, "file": str(model)})

        for k in tqdm(range(episodes), desc="rollouts", unit="ep", disable=not progress, leave=False):
            rollout(recorder, policy, seed=seed + k)
    finally:
        env.close()
    return out


def _bookmarks(episode, review, limit: int = 8) -> list[str]:
    """Time ranges where a process metric was out of spec, with the metrics that were.

    Only the instantaneous metrics (the review's ``series``): a running figure such as the bead's
    in-spec share stays low long after the moment that lowered it, and would mark everything after.
    """
    if review is None or not episode.infos:
        return []
    n = episode.steps + 1
    bad = np.zeros(n, bool)
    names: list[set[str]] = [set() for _ in range(n)]
    keys = [s for s in review.metrics if s.key in episode.infos and s.key in review.series]
    for k in range(n):
        info = {key: values[k] for key, values in episode.infos.items()}
        for spec in keys:
            if spec.status(info) == "bad":
                bad[k] = True
                names[k].add(spec.label)
    out = []
    k = 0
    while k < n and len(out) < limit:
        if not bad[k]:
            k += 1
            continue
        start, which = k, set()
        while k < n and bad[k]:
            which |= names[k]
            k += 1
        out.append(f"{start * episode.control_dt:.2f}-{k * episode.control_dt:.2f} s: {', '.join(sorted(which))}")
    return out


# ---------------------------------------------------------------------- html


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d2127}
h1{font-size:24px;margin-bottom:4px}
h2{font-size:19px;border-bottom:2px solid #dde1e6;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin-bottom:6px} .meta{color:#5b6470;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #d0d5db;padding:3px 7px;text-align:right}
th{background:#f1f3f5} td.l,th.l{text-align:left} tr.best td{background:#e6f4ea} tr.worst td{background:#fdecea}
.ok{color:#1e7b34;font-weight:600} .bad{color:#b42318;font-weight:600} img{max-width:100%;display:block;margin:6px 0}
video{max-width:100%;background:#000} pre{background:#f6f8fa;padding:10px;font-size:12px;overflow:auto;max-height:360px}
.note{color:#7a5b00;background:#fff8e1;padding:6px 10px;font-size:13px} .pair{display:flex;gap:12px;flex-wrap:wrap}
.pair>div{flex:1 1 420px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:5px;border:1px solid #555;vertical-align:middle}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if not math.isfinite(number):
        return "-"
    return f"{number:.3g}" if abs(number) < 1e4 else f"{number:.4g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = (),
           left: int = 0) -> str:
    head = "".join(f'<th class="l">{_esc(h)}</th>' if j < left else f"<th>{_esc(h)}</th>"
                   for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        cells = "".join(f'<td class="l">{c}</td>' if j < left else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


# ---------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """A section of the page: its name (as `ReportResult.sections` lists it) and its HTML fragment."""

    name: str
    html: str


@dataclass(frozen=True)
class Ranking:
    """Best and worst evaluation episode, by skill score where every episode has one, else by return."""

    best: EpisodeRow
    worst: EpisodeRow
    scored: bool

    @classmethod
    def of(cls, rows: list[EpisodeRow]) -> Ranking:
        scored = all(r.score is not None for r in rows)

        def rank(r: EpisodeRow) -> tuple[float, float]:
            # Ties in score (every failed insertion scores 0) are broken by return.
            return (r.score if scored else 0.0, r.episode.total_reward)

        return cls(max(rows, key=rank), min(rows, key=rank), scored)


def run_summary_section(run: RunDir, env_id: str | None) -> str:
    """The page's title line: the run directory, its cell, when and by which skillcell version."""
    generated = dt.datetime.now().isoformat(timespec="seconds")
    return (f"<h1>{_esc(_title(run))}</h1><p class='meta'>run directory {_esc(run.path.resolve())}"
            + (f" &middot; cell {_esc(env_id)}" if env_id else "")
            + f" &middot; generated {generated} by skillcell {_esc(skillcell.__version__)}</p>")


def learning_curve_section(run: RunDir, notes: list[str]) -> Section | None:
    """``metrics.csv``: success and return on top, every other numeric column below."""
    path = run.metrics
    if not path.is_file():
        notes.append(f"no metrics.csv in {run.path}: no learning curve")
        return None
    table = read_metrics_csv(path)
    if not table.rows:
        notes.append(f"{path} has a header but no rows")
        return None
    main, others = learning_curve_plots(table)
    columns = ", ".join(list(table.numeric) + list(table.text))
    parts = ["<h2>Learning curve</h2>",
             f'<p class="meta">{_esc(path.name)}: {table.rows} rows, columns {_esc(columns)}</p>',
             *(_img(uri, "learning curve") for uri in main)]
    if others:
        parts += ["<h3>Other logged metrics</h3>", *(_img(uri, "logged metrics") for uri in others)]
    return Section("learning curve", "\n".join(parts))


def training_log_section(run: RunDir) -> Section | None:
    """SB3's own log (losses, entropy, ...), plotted as the learning curve is."""
    path = run.sb3_progress
    table = read_metrics_csv(path) if path.is_file() else None
    if table is None or not table.rows:
        return None
    main, others = learning_curve_plots(table)
    return Section("training log", "\n".join([
        "<h2>Training log</h2>", f'<p class="meta">{_esc(path.relative_to(run.path))}: {table.rows} rows</p>',
        *(_img(uri, "training log") for uri in main + others)]))


def configuration_section(run: RunDir, config: dict[str, Any] | None) -> Section | None:
    """The run's config as it ran, and its summary."""
    if config is None:
        return None
    text = yaml.safe_dump(config, sort_keys=False)
    html_ = f"<h2>Run configuration</h2><p class='meta'>{_esc(run.config.name)}</p><pre>{_esc(text)}</pre>"
    if run.summary.is_file():
        html_ += f"\n<p class='meta'>{_esc(run.summary.name)}</p><pre>{_esc(run.summary.read_text())}</pre>"
    return Section("configuration", html_)


def evaluation_section(rows: list[EpisodeRow], ranking: Ranking, episodes_dir: Path) -> Section:
    """One table row per evaluation episode (success, return, score, the cell's KPIs), and the KPIs over them."""
    env_id = rows[0].episode.env_id
    kpi_keys = list(cell_spec(env_id).kpi_keys) if env_id else []
    successes = sum(r.episode.success for r in rows)
    low, high = wilson_interval(successes, len(rows))
    scored = ranking.scored
    rank_by = "skill score" if scored else "return"
    parts = ["<h2>Evaluation episodes</h2>",
             f'<p class="meta">{_esc(episodes_dir)}: {len(rows)} episodes of {_esc(env_id)}; success '
             f"{successes}/{len(rows)} = {successes / len(rows):.0%} (95% CI {low:.0%}-{high:.0%}); "
             f"best and worst by {rank_by}{' (ties by return)' if scored else ''}</p>"]
    headers = ["episode", "seed", "source", "success", "steps", "return"] + (["score"] if scored else []) + kpi_keys
    table_rows, classes = [], []
    for r in rows:
        ep = r.episode
        ok = '<span class="ok">yes</span>' if ep.success else '<span class="bad">no</span>'
        final = {k: v[-1] for k, v in ep.infos.items() if len(v)}
        cells = [str(r.id), "-" if ep.seed is None else str(int(ep.seed)), _esc(ep.source), ok, str(ep.steps),
                 _fmt(ep.total_reward)]
        cells += [_fmt(r.score)] if scored else []
        cells += [_fmt(final.get(k, math.nan)) for k in kpi_keys]
        table_rows.append(cells)
        classes.append("best" if r is ranking.best else "worst" if r is ranking.worst else "")
    parts.append(_table(headers, table_rows, classes, left=3))
    if kpi_keys:
        means = []
        for k in kpi_keys:
            values = np.array([float(r.episode.infos[k][-1]) for r in rows if k in r.episode.infos])
            values = values[np.isfinite(values)]
            means.append([_esc(k), *((_fmt(f(values)) if values.size else "-")
                                     for f in (np.mean, np.std, np.min, np.max))])
        parts.append("<h3>KPIs over the episodes</h3>" + _table(["KPI", "mean", "std", "min", "max"], means, left=1))
    return Section("evaluation episodes", "\n".join(parts))


def best_worst_section(ranking: Ranking, out: Path, files_dir: Path, options: ReportOptions,
                       files: list[Path]) -> Section:
    """The best and the worst episode: process metrics over time with their bands, the moments out of
    spec, and their videos (written under ``files_dir``, appended to ``files``)."""
    best, worst = ranking.best, ranking.worst
    ep0 = best.episode
    env = make_review_env(ep0.env_id, ep0.env_kwargs, width=options.width, height=options.height,
                          quality=options.quality, max_episode_steps=ep0.max_episode_steps)
    try:
        review = cell_review(env)
        pairs = [(f"best (#{best.id})", best)] + ([(f"worst (#{worst.id})", worst)] if worst is not best else [])
        parts = ["<h2>Best and worst episode</h2>",
                 _img(_series_plot([(label, row.episode) for label, row in pairs], review.series, review),
                      "process metrics over time")]
        blocks = []
        for label, row in pairs:
            episode = row.episode
            marks = _bookmarks(episode, review)
            block = [f"<h3>{_esc(label)}: {'success' if episode.success else 'no success'}, return "
                     f"{episode.total_reward:.2f}" + (f", score {row.score:.2f}" if row.score is not None else "")
                     + "</h3>",
                     "<p class='meta'>out of spec: " + "; ".join(_esc(m) for m in marks) + "</p>" if marks
                     else "<p class='meta'>no metric out of spec</p>"]
            if options.videos:
                block.append(_episode_video(env, row is best, label, episode, out, files_dir, options, files))
            blocks.append("<div>" + "".join(block) + "</div>")
        parts.append('<div class="pair">' + "".join(blocks) + "</div>")
    finally:
        env.close()
    return Section("best and worst episode", "\n".join(parts))


def _episode_video(env, is_best: bool, label: str, episode, out: Path, files_dir: Path, options: ReportOptions,
                   files: list[Path]) -> str:
    path = files_dir / ("best.mp4" if is_best else "worst.mp4")
    every = max(1, math.ceil((episode.steps + 1) / options.max_video_frames))
    render_video(path, EpisodeSource(env, episode, label=label), FrameRenderer(env, options.camera, label=label),
                 every=every, progress=options.progress)
    files.append(path)
    if options.embed_videos:
        src = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    else:
        src = os.path.relpath(path, out.parent)
    return f'<video controls preload="metadata" src="{_esc(src)}"></video>'


def _replayed_bead(env, episode) -> dict[str, np.ndarray]:
    """The bead model's per-millimetre profile of a stored episode, its states replayed in ``env``."""
    for _ in EpisodeSource(env, episode):
        pass
    return {k: v.copy() for k, v in env.unwrapped.metrics.bead_profile().items()}


def defect_section(rows: list[EpisodeRow], ranking: Ranking) -> Section | None:
    """Welding cells (a review preset with ``defects``; otherwise None): the best and the worst episode's bead
    along the seam (`_bead_plot`, replayed from their states), and per defect indicator the WPS's cause and
    the bead length flagged in each ranked episode and over all of them."""
    best, worst = ranking.best, ranking.worst
    ep0 = best.episode
    env = make_review_env(ep0.env_id, ep0.env_kwargs, max_episode_steps=ep0.max_episode_steps)
    try:
        review = cell_review(env)
        if not review.defects:
            return None
        wps = env.unwrapped.wps
        pairs = [(f"best (#{best.id})", best)] + ([(f"worst (#{worst.id})", worst)] if worst is not best else [])
        beads = [(label, _replayed_bead(env, row.episode)) for label, row in pairs]
    finally:
        env.close()
    spacing = float(np.median(np.diff(beads[0][1]["s_mm"])))
    table = []
    for name in (*review.defects, None):
        key = f"defect_{name}_mm" if name else "defect_length_mm"
        finals = np.array([float(r.episode.infos[key][-1]) for r in rows if key in r.episode.infos])
        mask = f"defect_{name}" if name else "defects"
        swatch = f'<span class="swatch" style="background:{DEFECT_COLORS[name]}"></span>' if name else ""
        table.append([swatch + _esc(name.replace("_", " ") if name else "any defect"),
                      _esc(wps.defects.cause(name)) if name else "",
                      *(_fmt(bead[mask].sum() * spacing) for _, bead in beads),
                      _fmt(finals.mean()) if finals.size else "-", _fmt(finals.max()) if finals.size else "-",
                      f"{int((finals > 0).sum())}/{finals.size}" if finals.size else "-"])
    headers = ["defect", "cause (WPS)", *(f"{label} [mm]" for label, _ in beads), "mean [mm]", "max [mm]",
               "episodes with it"]
    return Section("weld defects", "\n".join([
        "<h2>Weld defects</h2>",
        f'<p class="meta">the bead model along the seam ({_esc(wps.name or "WPS")}): heat input against the range '
        f"the WPS's arc gives over its travel-speed band, the bead's size, and where each defect indicator fired; "
        f"lengths over the {len(rows)} evaluation episodes</p>",
        _img(_bead_plot(beads, review, wps), "heat input, bead size and defects along the seam"),
        _table(headers, table, left=2)]))


def dataset_section(path: Path, notes: list[str]) -> Section | None:
    """A demonstration dataset's skill-score distribution (return where the cell has no scorer), per operator."""
    rows = _load_episodes(path)
    if not rows:
        notes.append(f"demonstration dataset {path} holds no episodes")
        return None
    scored = all(r.score is not None for r in rows)
    groups: dict[str, list[float]] = {}
    for r in rows:
        value = r.score if scored else r.episode.total_reward
        groups.setdefault(r.episode.provenance.operator_id or "unknown", []).append(value)
    what = "skill score" if scored else "return (no skill scorer for this cell)"
    table = []
    for operator, values in groups.items():
        v = np.asarray(values)
        ok = [r.episode.success for r in rows if (r.episode.provenance.operator_id or "unknown") == operator]
        table.append([_esc(operator), str(len(v)), _fmt(v.mean()), _fmt(v.std()), _fmt(v.min()), _fmt(v.max()),
                      f"{np.mean(ok):.0%}"])
    return Section("demonstrations", "\n".join([
        "<h2>Demonstrations</h2>",
        f'<p class="meta">{_esc(path)}: {len(rows)} episodes, {len(groups)} operator(s); {what} distribution</p>',
        _img(_histogram(groups, what), "skill score distribution"),
        _table(["operator", "episodes", "mean", "std", "min", "max", "success"], table, left=1)]))


# ---------------------------------------------------------------------- the report


def _title(run: RunDir) -> str:
    return f"skillcell report: {run.path.name}"


def _demo_dataset(options: ReportOptions, train_config, run_dir: Path) -> Path | None:
    """``--dataset``, else the dataset the run's config trained on, where it is found."""
    if options.dataset:
        return Path(options.dataset)
    named = train_config.demos.path if train_config is not None else None
    for base in (Path.cwd(), run_dir):
        if isinstance(named, str) and (base / named / "dataset.yaml").is_file():
            return base / named
    return None


def _evaluation_dataset(run: RunDir, options: ReportOptions, demo_dataset: Path | None, env_id: str | None,
                        env_kwargs: dict[str, Any], seed: int, files_dir: Path, notes: list[str]) -> Path | None:
    """``--eval``, else a dataset in the run directory, else (``--rollouts N``) the final model rolled out."""
    if options.episodes:
        return Path(options.episodes)
    # DAgger's relabelled rollouts are training data, not evaluation episodes
    skip = {p.resolve() for p in (demo_dataset, run.dagger_dataset) if p is not None}
    candidates = [p for p in find_datasets(run.path) if p.resolve() not in skip]
    if len(candidates) > 1:
        notes.append(f"several episode datasets in {run.path}; used {candidates[0]} (choose with --eval)")
    if candidates or options.rollouts <= 0:
        return candidates[0] if candidates else None
    if env_id is None:
        raise ValueError("rolling out the final model needs the cell: --env ENV_ID (the config names none)")
    model = run.final_model()
    episodes_dir = _roll_out(model, env_id, env_kwargs, options.rollouts, seed, files_dir / "rollouts",
                             options.progress, options.trust_model)
    notes.append(f"rolled out {model.name} for {options.rollouts} episodes into {episodes_dir}")
    return episodes_dir


def build_report(run_dir: str | Path, out: str | Path, options: ReportOptions | None = None) -> ReportResult:
    """Writes the report of ``run_dir`` to ``out`` (see the module docstring); returns what it wrote."""
    options = options or ReportOptions()
    run, out = RunDir.open(run_dir), Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{out}: the report is an .html file")
    files_dir = out.with_name(out.stem + "_files")
    result = ReportResult(path=out)
    notes = result.notes

    config = run.config_mapping()
    train_config = run.train_config() if config is not None else None
    run_env_id, run_env_kwargs = run.env() if train_config is not None else (None, {})
    env_id = options.env_id or run_env_id

    sections = [learning_curve_section(run, notes), training_log_section(run), configuration_section(run, config)]
    demo_dataset = _demo_dataset(options, train_config, run.path)
    episodes_dir = _evaluation_dataset(
        run, options, demo_dataset, env_id, run_env_kwargs if env_id == run_env_id else {},
        train_config.eval.seed if train_config is not None else 0, files_dir, notes)  # the run's evaluation seeds
    rows = _load_episodes(episodes_dir) if episodes_dir is not None else []
    if rows:
        ranking = Ranking.of(rows)
        sections += [evaluation_section(rows, ranking, episodes_dir),
                     best_worst_section(ranking, out, files_dir, options, result.files), defect_section(rows, ranking)]
    elif episodes_dir is not None:
        notes.append(f"{episodes_dir} holds no episodes")
    else:
        notes.append("no evaluation episodes (a dataset folder in the run directory, --eval DIR, or --rollouts N)")
    if demo_dataset is not None:
        sections.append(dataset_section(demo_dataset, notes))

    present = [s for s in sections if s is not None]
    result.sections += [s.name for s in present]
    note_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_esc(_title(run))}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{run_summary_section(run, env_id)}\n{note_html}\n"
            + "\n".join(s.html for s in present) + "\n</body>\n</html>\n")
    atomic_write_text(out, page)
    return result
