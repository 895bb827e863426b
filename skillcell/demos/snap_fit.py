"""The SnapFit cell's skill scorer: a latched connector, pushed with margin on its rating, quickly, once.

Read from the episode file alone (`skillcell.demos.scores`): the final ``info`` metrics and the
cell's limits from the config its ``env_kwargs`` give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from skillcell.config import ConfigError
from skillcell.demos.episode import Episode
from skillcell.demos.errors import DemoError
from skillcell.demos.scores import SkillScore, ramp
from skillcell.envs.registry import UnknownCellError, cell_config

__all__ = ["SnapFitScorer"]


@dataclass(frozen=True)
class SnapFitScorer:
    """Scores a snap-fit insertion. Ramps: the peak force's margin on the rating (full marks up to
    ``force_good_fraction`` of ``limits.rated_insertion_force_n``, none at the rating, where the gate
    fails it), the time to the latched connector ``time_good_s``..``time_bad_s`` (the 15 s time
    limit), and the double push: time spent pressing on the latched part (``press_after_click_s``),
    ``press_good_s``..``press_bad_s``. The score is their weighted mean for a latched, seated,
    physically valid insertion and 0 otherwise.
    """

    force_good_fraction: float = 0.5
    time_good_s: float = 5.0
    time_bad_s: float = 15.0
    press_good_s: float = 0.15
    press_bad_s: float = 1.0
    weights: dict[str, float] = field(default_factory=lambda: {"force_margin": 1.0, "time": 1.0,
                                                               "single_push": 1.0})

    def __call__(self, episode: Episode) -> SkillScore:
        infos = episode.infos

        def final(key: str) -> float:
            values = infos.get(key)
            return float(values[-1]) if values is not None and len(values) else math.nan

        try:
            rated = cell_config(episode.env_id, **episode.env_kwargs).limits.rated_insertion_force_n
        except (ConfigError, UnknownCellError) as exc:
            raise DemoError(f"cannot score an episode of {episode.env_id}: its cell config does not load ({exc})"
                            ) from None
        flags = np.asarray(infos.get("is_success", []), bool)
        # An episode may run on past its success (an import keeps the hold after the click).
        time_s = float(np.argmax(flags)) * episode.control_dt if flags.any() else episode.duration_s
        success = bool(flags.any()) and not bool(final("physics_invalid"))
        metrics = {"time_s": time_s, "peak_force_n": final("peak_insertion_force_n"),
                   "press_after_click_s": final("press_after_click_s"), "success": float(success)}
        components = {"force_margin": ramp(metrics["peak_force_n"], self.force_good_fraction * rated, rated),
                      "time": ramp(time_s, self.time_good_s, self.time_bad_s),
                      "single_push": ramp(metrics["press_after_click_s"], self.press_good_s, self.press_bad_s)}
        score = sum(self.weights[k] * components[k] for k in self.weights) / sum(self.weights.values())
        return SkillScore(score=score if success else 0.0, components=components, metrics=metrics)
