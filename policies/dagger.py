"""DAgger: the learner drives, an expert labels every state it visits, and BC retrains on all of it.

Behaviour cloning learns only the states the demonstrator visited; once the learner drifts off
them its errors compound (Ross, Gordon & Bagnell 2011). Each DAgger round here:

1. rolls out ``episodes_per_round`` episodes from the env's own resets (seeds continue from the
   run's), executing at every step the expert's action with probability ``beta`` and the
   learner's deterministic action otherwise; ``beta = beta0 * beta_decay ** round`` (round 0 first);
2. labels every visited observation with the expert's action (the expert is called at every
   step, executed or not, and `reset` at every episode start);
3. stores the relabelled episodes in the run directory as a `skillcell.demos` dataset
   (``dagger/``): ``actions`` are the expert's labels (what BC trains on), ``extra/executed_actions``
   what was applied (so an action replay of these episodes does not reproduce them; a state
   replay does), provenance operator ``dagger-relabel`` with the expert and the round in its notes;
4. aggregates them with the demonstrations and all earlier rounds, and continues behaviour
   cloning of the same model on the aggregate.

**From human captures.** Imported captures start where the operator's tool was, while every
evaluation starts from the env's reset pose, so a policy cloned from them has never seen the
states it starts in. DAgger's rollouts start from resets: the expert's labels there are exactly
the missing data, whatever the seed demonstrations were.

**The expert must be a function of the observation.** A label is what the expert would do in the
visited state; an expert whose action also depends on a latched phase or an integrator of its
own gives labels that depend on the learner's path, which BC cannot learn from the observation.
Any `skillcell.rollout.Policy` (the scripted expert, a learned SB3 policy) is accepted; it sees the cell's
plain observation, also when the learner observes a history (`skillcell.policies.history`).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from skillcell.demos.episode import DatasetWriter, Provenance
from skillcell.demos.recorder import EpisodeRecorder
from skillcell.policies.bc import BCResult, DemoTransitions, behaviour_clone, normalize_obs
from skillcell.policies.history import current_observation, history_env, stack_history
from skillcell.rollout import rollout

__all__ = ["DaggerRound", "MixedPolicy", "concat_transitions", "dagger", "history_transitions", "relabel_rollout"]

OPERATOR = "dagger-relabel"


@dataclass
class DaggerRound:
    """What one round did."""

    round: int
    beta: float
    episodes: int
    steps: int
    expert_executed_fraction: float
    learner_success_rate: float  # of the rollouts, with the mixing
    aggregate_steps: int
    bc: BCResult
    dataset_entries: list[Any] = field(default_factory=list)


def concat_transitions(parts: Sequence[DemoTransitions]) -> DemoTransitions:
    """One `DemoTransitions` of several; episode ids are renumbered so that they stay distinct."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        raise ValueError("no transitions to aggregate")
    keys = set.intersection(*(set(p.infos) for p in parts))
    episodes, offset = [], 0
    for p in parts:
        _, ids = np.unique(p.episode, return_inverse=True)
        episodes.append(ids + offset)
        offset += int(ids.max()) + 1
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return DemoTransitions(cat("observations"), cat("actions"), cat("rewards"), cat("next_observations"),
                           cat("terminations"), cat("truncations"), np.concatenate(episodes),
                           {k: np.concatenate([p.infos[k] for p in parts]) for k in sorted(keys)},
                           parts[0].env_id, (), parts[0].env_kwargs)


def history_transitions(demos: DemoTransitions, k: int) -> DemoTransitions:
    """``demos`` with history observations (`skillcell.policies.history.stack_history`), the
    demonstrated actions being what was executed. Each episode's rows must be contiguous and in
    order, as `DemoTransitions.from_episodes` lays them out."""
    obs, nxt = [], []
    start = 0
    for i in dict.fromkeys(demos.episode.tolist()):
        rows = np.flatnonzero(demos.episode == i)
        if not np.array_equal(rows, np.arange(start, start + len(rows))):
            raise ValueError("history_transitions: each episode's transitions must be contiguous and in order")
        start += len(rows)
        full = np.vstack([demos.observations[rows], demos.next_observations[rows[-1:]]])
        stacked = stack_history(full, demos.actions[rows], k)
        obs.append(stacked[:-1])
        nxt.append(stacked[1:])
    return dataclasses.replace(demos, observations=np.concatenate(obs), next_observations=np.concatenate(nxt))


class MixedPolicy:
    """DAgger's executed policy: the expert's label with probability ``beta``, else the learner's action.

    The expert labels every observation (called at every step, executed or not, and `reset` with
    the episode); ``labels``, ``executed`` and ``expert_executed`` keep what happened this episode.
    ``plain`` maps the learner's observation to the cell's plain one, which the expert reads.
    """

    def __init__(self, learner: Callable[[np.ndarray], np.ndarray], expert, *, beta: float,
                 rng: np.random.Generator, plain: Callable[[np.ndarray], np.ndarray]):
        self.learner, self.expert, self.beta, self.rng, self.plain = learner, expert, beta, rng, plain
        self.labels: list[np.ndarray] = []
        self.executed: list[np.ndarray] = []
        self.expert_executed: list[bool] = []

    def reset(self) -> None:
        self.expert.reset()
        self.labels, self.executed, self.expert_executed = [], [], []

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        label = np.asarray(self.expert(self.plain(obs)), np.float32)
        use_expert = bool(self.rng.random() < self.beta)
        action = label if use_expert else np.asarray(self.learner(obs), np.float32)
        self.labels.append(label)
        self.executed.append(np.array(action, np.float32))
        self.expert_executed.append(use_expert)
        return action


def relabel_rollout(env, learner: Callable[[np.ndarray], np.ndarray], expert, *, beta: float, seed: int,
                    rng: np.random.Generator, history: int = 0):
    """One mixed rollout (`MixedPolicy`) from ``env.reset(seed=seed)``; ``(episode, labels, executed,
    expert_executed)``.

    ``env`` is an `EpisodeRecorder` (no dataset) around the cell; ``learner`` maps the learner's
    observation (the plain one, or its history when ``history`` > 0) to an action.
    """
    learner_env = history_env(env, history) if history else env
    mixed = MixedPolicy(learner, expert, beta=beta, rng=rng, plain=lambda obs: _plain(obs, env, history))
    rollout(learner_env, mixed, seed=seed)
    episode = env.completed.pop()
    return episode, np.stack(mixed.labels), np.stack(mixed.executed), np.array(mixed.expert_executed)


def _plain(obs: np.ndarray, env, history: int) -> np.ndarray:
    if not history:
        return obs

    return current_observation(obs, env.observation_space.shape[0], env.action_space.shape[0], history)


def _relabelled(episode, labels, executed, mask, *, expert_name: str, round_: int, beta: float):
    notes = {"dagger": {"round": round_, "beta": beta, "expert": expert_name,
                        "expert_executed_steps": int(mask.sum()),
                        "actions": "the expert's labels of the visited observations; extra/executed_actions "
                                   "is what was applied"}}
    provenance = Provenance(operator_id=OPERATOR, site="simulation", source_device="skillcell", consent=True,
                            notes=f"DAgger round {round_}: states visited by the learner (expert executed with "
                                  f"probability {beta:.3g}), actions relabelled by {expert_name}; no person "
                                  "was recorded")
    return dataclasses.replace(episode, actions=labels, source=OPERATOR, provenance=provenance, notes=notes,
                               policy={"name": "dagger", "expert": expert_name, "round": round_},
                               extras={**episode.extras, "executed_actions": executed,
                                       "expert_executed": mask})


def _transitions(episode, executed, history: int) -> DemoTransitions:
    """BC transitions of a relabelled episode: its labels on the learner's observations."""
    obs = episode.observations
    if history:
        obs = stack_history(obs, executed, history)
    view = types.SimpleNamespace(observations=obs, actions=episode.actions, rewards=episode.rewards,
                                 terminations=episode.terminations, truncations=episode.truncations,
                                 infos=episode.infos, env_id=episode.env_id, env_kwargs=episode.env_kwargs)
    return DemoTransitions.from_episodes([view], env_id=episode.env_id)


def dagger(model, demos: DemoTransitions | None, *, env, expert, expert_name: str,
           rounds: int, episodes_per_round: int, beta0: float, beta_decay: float, bc_kwargs: dict[str, Any],
           dataset: str | Path | None, seed: int = 0, first_episode_seed: int = 0, history: int = 0,
           after_round: Callable[[DaggerRound, int], None] | None = None, progress: bool = False,
           ) -> tuple[list[DaggerRound], DemoTransitions]:
    """Runs the DAgger rounds on the SB3 ``model`` (trained in place); ``(rounds, aggregate)``.

    ``env`` is the cell as ``gym.make`` gives it (the recorder wraps it; closed at the end);
    ``expert`` is a `skillcell.rollout.Policy` of its plain observation; ``bc_kwargs`` go to
    `behaviour_clone` each round;
    episode seeds are ``first_episode_seed, +1, ...`` over all rounds; ``after_round(round,
    env_steps)`` runs after each round's BC (the evaluation). Returns the rounds and the final
    aggregate of ``demos`` and every relabelled episode.
    """
    if rounds < 1 or episodes_per_round < 1:
        raise ValueError(f"dagger: rounds and episodes_per_round must be >= 1, got {rounds}, {episodes_per_round}")
    writer = DatasetWriter(dataset, name="dagger") if dataset is not None else None
    env = EpisodeRecorder(env, None, source=OPERATOR)
    rng = np.random.default_rng(seed)
    aggregate = demos
    out: list[DaggerRound] = []
    env_steps, episode_seed = 0, first_episode_seed

    def learner(obs: np.ndarray) -> np.ndarray:
        return model.predict(normalize_obs(model, obs), deterministic=True)[0]

    try:
        for r in range(rounds):
            beta = float(beta0 * beta_decay ** r)
            new, steps, expert_steps, successes, entries = [], 0, 0, 0, []
            for _ in tqdm(range(episodes_per_round), desc=f"dagger round {r}", unit="ep", disable=not progress,
                          leave=False):
                episode, labels, executed, mask = relabel_rollout(env, learner, expert, beta=beta, seed=episode_seed,
                                                                  rng=rng, history=history)
                episode_seed += 1
                episode = _relabelled(episode, labels, executed, mask, expert_name=expert_name, round_=r, beta=beta)
                if writer is not None:
                    entries.append(writer.add(episode))
                new.append(_transitions(episode, executed, history))
                steps += episode.steps
                expert_steps += int(mask.sum())
                successes += episode.success
            env_steps += steps
            aggregate = concat_transitions([aggregate, *new])
            result = behaviour_clone(model, aggregate, seed=seed + r + 1, progress=progress, **bc_kwargs)
            record = DaggerRound(r, beta, episodes_per_round, steps, expert_steps / max(steps, 1),
                                 successes / episodes_per_round, len(aggregate), result, entries)
            out.append(record)
            if after_round is not None:
                after_round(record, env_steps)
    finally:
        env.close()
    return out, aggregate

