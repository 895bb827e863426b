"""The KeyedShaft skill scorer: a keyed shaft fitted quickly, gently and with little searching."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from skillcell.config import ConfigError
from skillcell.demos.episode import Episode
from skillcell.demos.errors import DemoError
from skillcell.demos.scores import SkillScore, ramp
from skillcell.envs.registry import UnknownCellError, cell_config

__all__ = ["KeyedShaftScorer"]


def _final(episode: Episode, key: str) -> float:
    values = episode.infos.get(key)
    return float(values[-1]) if values is not None and len(values) else math.nan


@dataclass(frozen=True)
class KeyedShaftScorer:
    """Scores a keyed-shaft insertion. Ramps: time to the shaft seated ``time_good_s``..``time_bad_s``
    (the 50 s time limit), peak force from the cell's ``task.jam_force_n`` (full marks) to its
    ``limits.rated_insertion_force_n`` (none), read from the episode's cell config, and the
    rotational search ``search_good_deg``..``search_bad_deg`` (``info["search_rotation_deg"]``: how far
    the shaft turned about the bore axis, either way; a fitter who finds the keyway by eye turns it
    little, a blind sweep over the grip's whole range half a turn). The score is their weighted mean
    for a successful, physically valid insertion and 0 otherwise (success already means the peak
    force stayed under the rating).
    """

    time_good_s: float = 5.0
    time_bad_s: float = 50.0
    search_good_deg: float = 10.0
    search_bad_deg: float = 180.0
    weights: dict[str, float] = field(default_factory=lambda: {"time": 1.0, "peak_force": 1.0, "search": 1.0})

    def __call__(self, episode: Episode) -> SkillScore:
        try:
            config = cell_config(episode.env_id, **episode.env_kwargs)
        except (ConfigError, UnknownCellError) as exc:
            raise DemoError(f"cannot score an episode of {episode.env_id}: its cell config does not load ({exc})"
                            ) from None
        success = episode.success and not bool(episode.infos.get("physics_invalid", [False])[-1])
        flags = np.asarray(episode.infos.get("is_success", []), bool)
        # When it first succeeded: an imported capture runs on past the shaft seated.
        seated_s = float(np.argmax(flags)) * episode.control_dt if flags.any() else episode.duration_s
        metrics = {"time_s": seated_s, "peak_force_n": _final(episode, "peak_insertion_force_n"),
                   "search_rotation_deg": _final(episode, "search_rotation_deg"), "success": float(success)}
        components = {"time": ramp(metrics["time_s"], self.time_good_s, self.time_bad_s),
                      "peak_force": ramp(metrics["peak_force_n"], config.task.jam_force_n,
                                         config.limits.rated_insertion_force_n),
                      "search": ramp(metrics["search_rotation_deg"], self.search_good_deg, self.search_bad_deg)}
        total = sum(self.weights[k] * components[k] for k in self.weights) / sum(self.weights.values())
        return SkillScore(score=total if success else 0.0, components=components, metrics=metrics)
