"""Running a policy for episodes (`skillcell.rollout`) and summarizing them (success with a confidence interval)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from skillcell.parallel import SeedTask, map_seeds
from skillcell.rollout import EpisodeRecord, Policy, RolloutStep, as_policy, rollout

__all__ = ["RolloutSummary", "SuccessCounts", "run_episodes", "run_seeds", "wilson_interval"]


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class SuccessCounts:
    """Success count, rate and Wilson 95% interval of a record holding ``episodes`` with ``success``."""

    episodes: list

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / max(len(self.episodes), 1)

    @property
    def success_ci95(self) -> tuple[float, float]:
        """Wilson 95% interval of the success rate."""
        return wilson_interval(self.successes, len(self.episodes))


@dataclass
class RolloutSummary(SuccessCounts):
    episodes: list[EpisodeRecord] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def total_steps(self) -> int:
        return sum(e.steps for e in self.episodes)

    @property
    def steps_per_second(self) -> float:
        return self.total_steps / self.wall_time_s if self.wall_time_s > 0 else float("nan")

    def mean(self, key: str) -> float:
        """Mean of a numeric final-step ``info`` entry over the episodes that have it."""
        values = [float(e.final_info[key]) for e in self.episodes if key in e.final_info]
        return float(np.mean(values)) if values else float("nan")

    def report(self) -> str:
        low, high = self.success_ci95
        return (f"success {self.successes}/{len(self.episodes)} = {self.success_rate:.1%} "
                f"(95% CI {low:.1%}-{high:.1%}); {self.total_steps} steps in {self.wall_time_s:.2f} s "
                f"= {self.steps_per_second:.0f} steps/s")


def run_episodes(env, policy: Policy | Callable[[np.ndarray], np.ndarray], episodes: int, seed: int = 0, *,
                 on_step: Callable[[RolloutStep], None] | Iterable[Callable[[RolloutStep], None]] = (),
                 progress: bool = False) -> RolloutSummary:
    """`rollout` of ``episodes`` episodes with seeds ``seed, seed+1, ...``; ``env`` must truncate (TimeLimit)."""
    policy = as_policy(policy)
    summary = RolloutSummary()
    start = time.perf_counter()
    bar = tqdm(range(episodes), desc="episodes", unit="ep", disable=not progress, leave=False)
    for i in bar:
        summary.episodes.append(rollout(env, policy, seed=seed + i, on_step=on_step))
        bar.set_postfix(success=f"{summary.success_rate:.0%}")
    summary.wall_time_s = time.perf_counter() - start
    return summary


def run_seeds(task: SeedTask[EpisodeRecord], episodes: int, seed: int = 0, *, workers: int | None = 1,
              address: str | None = None, progress: bool = False) -> RolloutSummary:
    """``task``'s episodes with seeds ``seed, seed+1, ...``, spread over workers (`skillcell.parallel.map_seeds`).

    The episodes are in seed order and the same for any worker count; the wall time is the
    whole call's (a Ray start included).
    """
    successes = [0, 0]

    def status(record: EpisodeRecord) -> str:
        successes[0] += record.success
        successes[1] += 1
        return f"success={successes[0] / successes[1]:.0%}"

    start = time.perf_counter()
    records = map_seeds(task, range(seed, seed + episodes), workers=workers, address=address, progress=progress,
                        status=status)
    return RolloutSummary(records, time.perf_counter() - start)
