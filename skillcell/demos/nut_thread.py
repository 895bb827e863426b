"""The NutThread skill scorer: a run-down done quickly, with a light hand on the thread, seated in the torque window."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from skillcell.config import ConfigError
from skillcell.demos.episode import Episode
from skillcell.demos.errors import DemoError
from skillcell.demos.scores import SkillScore, ramp
from skillcell.envs.registry import UnknownCellError, cell_config

__all__ = ["NutThreadScorer"]


@dataclass(frozen=True)
class NutThreadScorer:
    """Scores a nut run-down. Ramps: time to seated ``time_good_s``..``time_bad_s`` (the 20 s time limit); peak
    axial force on the thread ``force_good_n``..``force_bad_n`` (the gate's p95 limit); peak spindle torque from
    the cell's ``limits.seating_torque_nm`` halfway to its ``limits.max_torque_nm`` (full marks) to the limit
    (none), read from the episode's cell config. The score is their weighted mean for a seated, not
    cross-threaded, physically valid run-down and 0 otherwise.
    """

    time_good_s: float = 8.0
    time_bad_s: float = 20.0
    force_good_n: float = 5.0
    force_bad_n: float = 20.0
    weights: dict[str, float] = field(default_factory=lambda: {"time": 1.0, "axial_force": 1.0, "torque": 1.0})

    def __call__(self, episode: Episode) -> SkillScore:
        try:
            limits = cell_config(episode.env_id, **episode.env_kwargs).limits
        except (ConfigError, UnknownCellError) as exc:
            raise DemoError(f"cannot score an episode of {episode.env_id}: {exc}") from None
        infos = episode.infos

        def final(key: str) -> float:
            values = infos.get(key)
            return float(values[-1]) if values is not None and len(values) else math.nan

        flags = np.asarray(infos.get("is_success", []), bool)
        time_s = float(np.argmax(flags)) * episode.control_dt if flags.any() else episode.duration_s
        success = bool(flags.any()) and not final("cross_threaded") and not final("physics_invalid")
        metrics = {"time_s": time_s, "peak_axial_force_n": final("peak_axial_force_n"),
                   "peak_spindle_torque_nm": final("peak_spindle_torque_nm"), "turns": final("turns"),
                   "success": float(success)}
        torque_good = 0.5 * (limits.seating_torque_nm + limits.max_torque_nm)
        components = {"time": ramp(time_s, self.time_good_s, self.time_bad_s),
                      "axial_force": ramp(metrics["peak_axial_force_n"], self.force_good_n, self.force_bad_n),
                      "torque": ramp(metrics["peak_spindle_torque_nm"], torque_good, limits.max_torque_nm)}
        total = sum(self.weights[k] * components[k] for k in self.weights) / sum(self.weights.values())
        return SkillScore(score=total if success else 0.0, components=components, metrics=metrics)
