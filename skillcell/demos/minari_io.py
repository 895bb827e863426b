"""Export to Minari (``pip install "skillcell[minari]"``), the Gymnasium offline-RL dataset format.

Minari datasets live under ``MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) at the path
of their id, ``namespace/env_name/dataset_name-vN``. `export_minari` writes there, Minari's own
root as `minari.storage.get_dataset_path` finds it, so ``minari.load_dataset(ID)`` opens the
export with nothing else set; ``out`` writes under another root instead (then
``MINARI_DATASETS_PATH=<out> python -c "import minari; minari.load_dataset(ID)"``). Each episode
keeps its observations (N+1), actions, rewards, terminations, truncations, seed and numeric and
flag ``info`` metrics; the MuJoCo states, model and provenance stay in the
native files (Minari has no place for them).

The episodes are built as `minari.data_collector.EpisodeBuffer` directly: Minari's
`DataCollector` wrapper needs jax, and the episodes already exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from skillcell.atomic import replace_dir
from skillcell.demos.episode import DemoDataset, Episode
from skillcell.demos.errors import DemoError
from skillcell.demos.scores import score_dataset

__all__ = ["default_dataset_id", "export_minari"]


def _require_minari():
    try:
        import minari
    except ImportError:
        raise DemoError('Minari export needs minari: pip install "skillcell[minari]"') from None
    return minari


@contextlib.contextmanager
def _datasets_path(root: Path) -> Iterator[None]:
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def default_dataset_id(dataset: DemoDataset, env_id: str) -> str:
    """``skillcell/<cell>/<dataset name>-v0``, e.g. ``skillcell/peginsert/expert-demos-v0``."""
    cell = env_id.split("/")[-1].rsplit("-v", 1)[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", (dataset.name or "demos").lower()).strip("-") or "demos"
    name = re.sub(r"-v\d+$", "", name)
    return f"skillcell/{cell}/{name}-v0"


def _buffer(episode: Episode, index: int):
    from minari.data_collector import EpisodeBuffer

    # Minari checks observations and actions against the env's float32 spaces.
    infos = {k: np.asarray(v) for k, v in episode.infos.items() if np.asarray(v).dtype.kind in "bif"}
    return EpisodeBuffer(id=index, seed=episode.seed, observations=np.asarray(episode.observations, np.float32),
                         actions=np.asarray(episode.actions, np.float32), rewards=list(map(float, episode.rewards)),
                         terminations=list(map(bool, episode.terminations)),
                         truncations=list(map(bool, episode.truncations)), infos=infos)


def export_minari(path: str | Path, *, out: str | Path | None = None, dataset_id: str | None = None,
                  min_score: float | None = None, description: str | None = None, progress: bool = False,
                  overwrite: bool = False):
    """Exports the dataset at ``path`` to a Minari dataset; returns ``(dataset_id, datasets_root)``.

    Args:
        out: the Minari datasets root to write under (default Minari's own: ``MINARI_DATASETS_PATH``,
            else ``~/.minari/datasets``).
        dataset_id: Minari id (default `default_dataset_id`); an existing one is replaced only with
            ``overwrite``, once the new one is complete.
        min_score: export only episodes with at least this skill score (`skillcell.demos.scores`).

    All episodes must come from one env id with the same kwargs (one Minari dataset has one env
    spec). The dataset is built in a temporary folder and moved into place when complete.
    """
    minari = _require_minari()
    dataset = DemoDataset(path)
    entries = list(dataset.entries)
    if min_score is not None:
        keep = set(score_dataset(path).select(min_score))
        entries = [e for e in entries if e.id in keep]
    if not entries:
        raise DemoError(f"{path}: no episodes to export" + (f" with score >= {min_score}" if min_score else ""))
    episodes = [dataset.load(e) for e in tqdm(entries, desc="loading", unit="ep", disable=not progress, leave=False)]
    first = episodes[0]
    for entry, episode in zip(entries, episodes, strict=True):
        if episode.env_id != first.env_id or episode.env_kwargs != first.env_kwargs:
            raise DemoError(f"{path}: episode {entry.id} was recorded on {episode.env_id} {episode.env_kwargs}, "
                            f"episode {entries[0].id} on {first.env_id} {first.env_kwargs}; a Minari dataset holds "
                            "one env: export them separately (skillcell demos score --min-score/--out to split)")
    dataset_id = dataset_id or default_dataset_id(dataset, first.env_id)
    root = Path(out) if out is not None else minari.storage.get_dataset_path()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise DemoError(f"{final}: a Minari dataset {dataset_id!r} exists already; pass --force to replace it, "
                        "or another --dataset-id")

    # Episodes may be longer than the registered time limit (captures), so the spec carries the longest.
    steps = max(e.steps for e in episodes)
    limit = first.max_episode_steps if first.max_episode_steps and first.max_episode_steps > 0 else None
    env = gym.make(first.env_id, max_episode_steps=max(limit or 0, steps), **first.env_kwargs)
    staging = root / f".staging-{os.getpid()}"
    try:
        with _datasets_path(staging), warnings.catch_warnings():
            # Operators are identified by id only and the code version is in `requirements` and each
            # episode file; Minari's reminders for an e-mail and a code link do not apply.
            warnings.filterwarnings("ignore", message=".*(author_email|code_permalink).*", category=UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id, [_buffer(e, i) for i, e in enumerate(episodes)], env=env, eval_env=env.spec,
                algorithm_name=", ".join(sorted({e.source for e in episodes})),
                author=", ".join(sorted({e.provenance.operator_id for e in episodes})),
                description=description or f"skillcell demonstrations from {Path(path).resolve().name} "
                                           f"({len(episodes)} episodes of {first.env_id})",
                requirements=[f"skillcell=={first.versions['skillcell']}", f"mujoco=={first.versions['mujoco']}"],
                data_format="hdf5")
        # overwrite: the old one moves aside only now that the new one is complete
        replace_dir(staging / dataset_id, final)
        # Minari keeps namespace metadata next to the datasets; bring it along where missing.
        namespace = dataset_id.split("/")[0]
        for meta in (staging / namespace).glob("*.json"):
            if not (root / namespace / meta.name).exists():
                os.replace(meta, root / namespace / meta.name)
    finally:
        env.close()
        shutil.rmtree(staging, ignore_errors=True)
    return dataset_id, root
