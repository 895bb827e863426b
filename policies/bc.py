"""Behaviour cloning into stable-baselines3 policies: the actor of a `PPO` or a `SAC` model.

The result is the SB3 model itself, trained in place, so it ``.predict``s, saves, loads and
fine-tunes with RL like any other SB3 model. The loop is written on SB3's policy API (the
``imitation`` library pins gymnasium 0.29 and SB3 2.2, so it cannot be used with this stack):

- **PPO** (`ActorCriticPolicy`, a diagonal Gaussian): by default the mean of the action
  distribution (``policy.get_distribution(obs).distribution.mean``, what ``predict(...,
  deterministic=True)`` returns before clipping) is regressed onto the demonstrated actions with
  a mean squared error. ``loss="nll"`` instead maximizes ``policy.evaluate_actions`` log
  likelihood, which also fits ``log_std``. Either way ``log_std`` is set to a configured value
  afterwards: NLL drives it towards the demonstrator's (near zero) spread, and PPO with a
  collapsed spread stops exploring.
- **SAC** (`SACPolicy`, a tanh-squashed Gaussian): the squashed mean ``tanh(mu(s))`` is regressed
  onto the demonstrated actions (scaled to the actor's [-1, 1] space with
  ``policy.scale_action``), and the state-dependent ``log_std`` head towards a target value, so
  the fine-tuning starts from a sane spread rather than from whatever the untrained head says.

Observations are normalized exactly as the model sees them during RL: if the model's env is a
`VecNormalize`, its (frozen) statistics normalize the demonstrations here too
(`demo_vec_normalize` builds such a wrapper from the demonstrations' own statistics).

Demonstrations enter as `DemoTransitions`, flat arrays of ``(obs, action, reward, next_obs,
termination, truncation)``; `load_demos` reads a `skillcell.demos` dataset folder (optionally
filtered by skill score), `expert_demos` records the cell's scripted expert in memory through
the same `skillcell.demos.EpisodeRecorder`, so both paths yield the same structure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from skillcell.demos.episode import DemoDataset
from skillcell.demos.errors import DatasetError
from skillcell.demos.recorder import EpisodeRecorder, scripted_provenance
from skillcell.demos.scores import score_episode
from skillcell.policies.scripted import make_expert
from skillcell.rollout import rollout

__all__ = [
    "BCResult",
    "DemoTransitions",
    "action_error",
    "actor_parameters",
    "bc_loss",
    "behaviour_clone",
    "demo_tensors",
    "demo_vec_normalize",
    "expert_demos",
    "load_demos",
    "normalize_obs",
    "set_log_std",
]


@dataclass
class DemoTransitions:
    """Demonstrations as flat transition arrays (raw env observations, env actions in [-1, 1]).

    ``episode`` says which episode each transition came from; ``infos`` holds each ``info``
    metric after the step (e.g. ``is_success``), one row per transition; ``episode_scores`` is
    the skill score of every episode, where one was computed.
    """

    observations: np.ndarray  # (N, obs) float32
    actions: np.ndarray  # (N, act) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs) float32
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    episode: np.ndarray  # (N,) int
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    env_id: str = ""
    episode_scores: tuple[float, ...] = ()
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # of the first episode's env, where known

    def __post_init__(self) -> None:
        n = len(self.actions)
        for name in ("observations", "rewards", "next_observations", "terminations", "truncations", "episode"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"DemoTransitions.{name} has {len(getattr(self, name))} rows, "
                                 f"actions has {n}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def n_episodes(self) -> int:
        return len(np.unique(self.episode))

    @property
    def episode_success(self) -> np.ndarray:
        """Whether each episode (in order of first appearance) ended in success."""
        flags = self.infos.get("is_success")
        ids = list(dict.fromkeys(self.episode.tolist()))
        if flags is None:
            return np.zeros(len(ids), bool)
        return np.array([bool(flags[self.episode == i][-1]) for i in ids])

    @classmethod
    def from_episodes(cls, episodes: Iterable[Any], env_id: str = "",
                      scores: Sequence[float] = ()) -> DemoTransitions:
        """From `skillcell.demos.Episode` objects (or anything with the same arrays).

        An episode has ``observations`` (N+1 rows: the reset observation, then one per step),
        ``actions``, ``rewards``, ``terminations``, ``truncations`` (N rows) and optionally
        ``infos`` (each N+1 rows, as the episode files store them).
        """
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc", "ep")}
        infos: dict[str, list[np.ndarray]] = {}
        episodes = list(episodes)
        if not episodes:
            raise ValueError("no demonstration episodes")
        for i, ep in enumerate(episodes):
            obs = np.asarray(ep.observations, np.float32)
            n = len(ep.actions)
            if len(obs) != n + 1:
                raise ValueError(f"episode {i}: {len(obs)} observations for {n} actions (expected {n + 1})")
            parts["obs"].append(obs[:-1])
            parts["next"].append(obs[1:])
            parts["act"].append(np.asarray(ep.actions, np.float32).reshape(n, -1))
            parts["rew"].append(np.asarray(ep.rewards, np.float32))
            parts["term"].append(np.asarray(ep.terminations, bool))
            parts["trunc"].append(np.asarray(ep.truncations, bool))
            parts["ep"].append(np.full(n, i))
            for key, values in (getattr(ep, "infos", None) or {}).items():
                values = np.asarray(values)
                if values.dtype.kind in "biuf" and len(values) == n + 1:
                    infos.setdefault(key, []).append(values[1:])
            env_id = env_id or getattr(ep, "env_id", "")
        env_kwargs = dict(getattr(episodes[0], "env_kwargs", None) or {})
        # Keep only info keys that every episode has (a key absent from some would misalign rows).
        infos = {k: v for k, v in infos.items() if len(v) == len(episodes)}
        return cls(np.concatenate(parts["obs"]), np.concatenate(parts["act"]), np.concatenate(parts["rew"]),
                   np.concatenate(parts["next"]), np.concatenate(parts["term"]), np.concatenate(parts["trunc"]),
                   np.concatenate(parts["ep"]), {k: np.concatenate(v) for k, v in infos.items()}, env_id,
                   tuple(float(s) for s in scores), env_kwargs)

    def select_episodes(self, ids: Iterable[int]) -> DemoTransitions:
        """The transitions of the episodes ``ids`` (values of `episode`)."""
        ids = np.asarray(sorted(set(ids)))
        mask = np.isin(self.episode, ids)
        order = list(dict.fromkeys(self.episode.tolist()))
        scores = tuple(s for i, s in zip(order, self.episode_scores, strict=False) if i in set(ids.tolist()))
        return DemoTransitions(self.observations[mask], self.actions[mask], self.rewards[mask],
                               self.next_observations[mask], self.terminations[mask], self.truncations[mask],
                               self.episode[mask], {k: v[mask] for k, v in self.infos.items()}, self.env_id, scores,
                               self.env_kwargs)

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[DemoTransitions, DemoTransitions | None]:
        """``(train, held_out)`` by whole episodes (steps of one episode are strongly correlated,
        so a step-level split would measure memorization, not generalization)."""
        ids = np.array(list(dict.fromkeys(self.episode.tolist())))
        n_held = round(holdout_fraction * len(ids))
        if n_held == 0:
            return self, None
        if n_held >= len(ids):
            raise ValueError(f"holdout_fraction {holdout_fraction} leaves no training episode of {len(ids)}")
        held = np.random.default_rng(seed).choice(ids, size=n_held, replace=False)
        return self.select_episodes(np.setdiff1d(ids, held)), self.select_episodes(held)


def _episode_scores(episodes: list[Any]) -> list[float]:
    return [float(score_episode(ep).score) for ep in episodes]


def _filter(episodes: list[Any], min_score: float | None) -> tuple[list[Any], list[float]]:
    if min_score is None:
        return episodes, []
    scores = _episode_scores(episodes)
    kept = [(ep, s) for ep, s in zip(episodes, scores, strict=True) if s >= min_score]
    if not kept:
        raise ValueError(f"no demonstration scores at least {min_score} (scores {min(scores):.3f}.."
                         f"{max(scores):.3f})")
    return [ep for ep, _ in kept], [s for _, s in kept]


def load_demos(path: str | Path, *, min_score: float | None = None, max_episodes: int | None = None,
               env_id: str | None = None) -> DemoTransitions:
    """Reads a `skillcell.demos` dataset folder into `DemoTransitions`.

    ``min_score`` keeps the episodes whose skill score (`skillcell.demos.score_episode`) is at
    least that; ``max_episodes`` then keeps the first that many; ``env_id``, when given, must
    match every episode's env (a dataset of another cell is refused, naming it).
    """
    dataset = DemoDataset(path)
    episodes = list(dataset)
    if not episodes:
        raise DatasetError(f"{path}: the dataset has no episodes")
    if env_id is not None:
        others = sorted({ep.env_id for ep in episodes} - {env_id})
        if others:
            raise DatasetError(f"{path}: episodes of {others}, but training is on {env_id}")
    episodes, scores = _filter(episodes, min_score)
    if max_episodes is not None:
        episodes, scores = episodes[:max_episodes], scores[:max_episodes]
    return DemoTransitions.from_episodes(episodes, scores=scores)


def expert_demos(env_id: str, episodes: int, *, seed: int = 0, skill: str = "expert",
                 env_kwargs: dict[str, Any] | None = None, min_score: float | None = None,
                 progress: bool = False) -> DemoTransitions:
    """Records the cell's scripted expert for ``episodes`` episodes (seeds ``seed, seed+1, ...``)
    in memory, through the same `EpisodeRecorder` that writes datasets; see `load_demos`."""
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        expert = make_expert(env, skill=skill, seed=seed)
        recorder = EpisodeRecorder(env, None, source=f"scripted:{skill}",
                                   provenance=scripted_provenance(f"scripted-{skill}"))
        for i in tqdm(range(episodes), desc="demos", unit="ep", disable=not progress, leave=False):
            rollout(recorder, expert, seed=seed + i)
        kept, scores = _filter(recorder.completed, min_score)
        return DemoTransitions.from_episodes(kept, env_id=env_id, scores=scores)
    finally:
        env.close()


# ---------------------------------------------------------------------- observation normalization


def demo_vec_normalize(venv, demos: DemoTransitions, *, std_floor: float = 0.01, clip_obs: float = 10.0):
    """A frozen `VecNormalize` over ``venv`` with the demonstrations' observation statistics.

    Frozen (``training=False``) so that the normalization the policy was cloned under is the one
    it meets during RL and evaluation: running statistics would drift as RL visits new states and
    silently change the inputs of what BC learned. The standard deviation is floored at
    ``std_floor`` (in the env's already unit-scaled observation units): observation entries that
    barely move in the demonstrations (a joint that stays put, a constant hole height) would
    otherwise be blown up by orders of magnitude and amplify noise; ``clip_obs`` bounds states
    far outside the demonstrations. Rewards are not normalized.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    vn = VecNormalize(venv, training=False, norm_obs=True, norm_reward=False, clip_obs=clip_obs)
    obs = np.concatenate([demos.observations, demos.next_observations]).astype(np.float64)
    vn.obs_rms.mean = obs.mean(axis=0)
    vn.obs_rms.var = np.maximum(obs.var(axis=0), std_floor**2)
    vn.obs_rms.count = float(len(obs))
    return vn


def normalize_obs(model, obs: np.ndarray) -> np.ndarray:
    """Observations as ``model`` sees them: through its env's `VecNormalize`, if it has one."""
    vn = model.get_vec_normalize_env()
    obs = np.asarray(obs, np.float32)
    return vn.normalize_obs(obs) if vn is not None else obs


# ---------------------------------------------------------------------- behaviour cloning


@dataclass
class BCResult:
    """What a behaviour-cloning run did: losses, and the action error before and after.

    ``*_error`` is the mean squared error (over steps and action channels) between the model's
    deterministic ``predict`` and the demonstrated action, on the training and on held-out
    demonstrations (NaN where there were none).
    """

    algorithm: str
    steps: int
    losses: list[float]
    train_error_before: float
    train_error_after: float
    heldout_error_before: float
    heldout_error_after: float
    wall_time_s: float
    log_std: float | None = None

    def report(self) -> str:
        held = (f", held-out {self.heldout_error_before:.4f} -> {self.heldout_error_after:.4f}"
                if math.isfinite(self.heldout_error_after) else "")
        return (f"BC ({self.algorithm}, {self.steps} steps, {self.wall_time_s:.1f} s): action MSE train "
                f"{self.train_error_before:.4f} -> {self.train_error_after:.4f}{held}")


def _algorithm(model) -> str:
    from stable_baselines3 import PPO, SAC

    if isinstance(model, SAC):
        return "sac"
    if isinstance(model, PPO):
        return "ppo"
    raise TypeError(f"behaviour cloning supports SB3 PPO and SAC models, got {type(model).__name__}")


def action_error(model, demos: DemoTransitions | None) -> float:
    """Mean squared error of ``model.predict(obs, deterministic=True)`` against the demo actions."""
    if demos is None or len(demos) == 0:
        return math.nan
    actions, _ = model.predict(normalize_obs(model, demos.observations), deterministic=True)
    return float(np.mean((actions - np.clip(demos.actions, -1.0, 1.0)) ** 2))


def set_log_std(model, value: float) -> None:
    """Sets a PPO Gaussian policy's state-independent ``log_std`` to ``value`` in every channel."""
    import torch as th

    if _algorithm(model) != "ppo":
        raise TypeError("set_log_std applies to PPO's state-independent log_std; SAC's is a network head "
                        "(behaviour_clone's log_std trains it towards a target)")
    with th.no_grad():
        model.policy.log_std.fill_(float(value))


def behaviour_clone(model, demos: DemoTransitions, *, steps: int = 2000, batch_size: int = 256,
                    learning_rate: float = 1e-3, weight_decay: float = 0.0, loss: str = "mse",
                    log_std: float | None = -1.6, log_std_weight: float = 0.1, max_grad_norm: float = 1.0,
                    heldout: DemoTransitions | None = None, seed: int = 0, progress: bool = False) -> BCResult:
    """Trains the actor of the SB3 ``model`` (PPO or SAC) in place to imitate ``demos``.

    Args:
        steps: gradient steps (minibatches of ``batch_size`` transitions, drawn without
            replacement epoch by epoch).
        learning_rate, weight_decay: of a fresh Adam over the actor's parameters (the model's own
            optimizer and its moment estimates are left for RL).
        loss: PPO only: ``"mse"`` on the Gaussian mean, or ``"nll"`` (negative log likelihood of
            the demo actions, with a 1e-3 entropy bonus). SAC always regresses the squashed mean.
        log_std: PPO: the value ``log_std`` is set to afterwards (None leaves it). SAC: the target
            of the ``log_std`` head, trained with weight ``log_std_weight`` (None: not trained).
        heldout: demonstrations not trained on, for the held-out action error.
        seed: the minibatch order (the network's initialization is the model's seed).
    """
    import torch as th

    algorithm = _algorithm(model)
    if loss not in ("mse", "nll"):
        raise ValueError(f"loss must be 'mse' or 'nll', got {loss!r}")
    if len(demos) == 0:
        raise ValueError("no demonstration transitions to clone")
    policy = model.policy
    if getattr(policy, "use_sde", False) or getattr(model, "use_sde", False):
        raise ValueError("behaviour cloning does not support gSDE policies (use_sde=True)")
    expected = policy.observation_space.shape
    if demos.observations.shape[1:] != expected or demos.actions.shape[1:] != policy.action_space.shape:
        raise ValueError(f"demonstrations have observations {demos.observations.shape[1:]} and actions "
                         f"{demos.actions.shape[1:]}; the model expects {expected} and "
                         f"{policy.action_space.shape} (a dataset of another cell?)")

    start = time.perf_counter()
    train_before, held_before = action_error(model, demos), action_error(model, heldout)
    obs, acts = demo_tensors(model, demos)
    device = policy.device

    actor_params = actor_parameters(model)
    if algorithm == "ppo" and loss == "mse":
        actor_params = [p for p in actor_params if p is not policy.log_std]  # no gradient reaches it
    optimizer = th.optim.Adam(actor_params, lr=learning_rate, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(demos))
    order: list[np.ndarray] = []
    losses: list[float] = []
    policy.set_training_mode(True)
    for _ in tqdm(range(steps), desc="behaviour cloning", unit="step", disable=not progress, leave=False):
        if not order:
            perm = rng.permutation(len(demos))
            order = [perm[i:i + batch_size] for i in range(0, len(perm) - batch_size + 1, batch_size)]
        idx = th.as_tensor(order.pop(), device=device)
        value = bc_loss(model, obs[idx], acts[idx], loss=loss, log_std=log_std, log_std_weight=log_std_weight)
        optimizer.zero_grad()
        value.backward()
        th.nn.utils.clip_grad_norm_(actor_params, max_grad_norm)
        optimizer.step()
        losses.append(float(value.detach()))
    policy.set_training_mode(False)
    if algorithm == "ppo" and log_std is not None:
        set_log_std(model, log_std)
    return BCResult(algorithm, steps, losses, train_before, action_error(model, demos), held_before,
                    action_error(model, heldout), time.perf_counter() - start, log_std)


def demo_tensors(model, demos: DemoTransitions):
    """``(obs, actions)`` torch tensors on the model's device, as its actor sees them: observations
    through the model's `VecNormalize` (if any), actions clipped to [-1, 1] (the env clips them, so
    that is what was executed) and, for SAC, scaled to the actor's space with ``scale_action``."""
    import torch as th

    policy = model.policy
    actions = np.clip(demos.actions, -1.0, 1.0).astype(np.float32)
    if _algorithm(model) == "sac":
        actions = policy.scale_action(actions).astype(np.float32)  # the identity for Box(-1, 1)
    return (th.as_tensor(normalize_obs(model, demos.observations), device=policy.device),
            th.as_tensor(actions, device=policy.device))


def bc_loss(model, obs, actions, *, loss: str = "mse", log_std: float | None = None, log_std_weight: float = 0.0):
    """The behaviour-cloning loss of ``model``'s actor on a batch (torch tensors, ``obs`` normalized as
    the model sees them, ``actions`` in the actor's space); see `behaviour_clone`."""
    import torch as th

    policy = model.policy
    if _algorithm(model) == "ppo":
        if loss == "mse":
            return ((policy.get_distribution(obs).distribution.mean - actions) ** 2).mean()
        _, log_prob, entropy = policy.evaluate_actions(obs, actions)
        return -log_prob.mean() - 1e-3 * entropy.mean()
    mean_actions, head_log_std, _ = model.actor.get_action_dist_params(obs)
    value = ((th.tanh(mean_actions) - actions) ** 2).mean()
    if log_std is not None and log_std_weight > 0:
        value = value + log_std_weight * ((head_log_std - log_std) ** 2).mean()
    return value


def actor_parameters(model) -> list:
    """The parameters that shape the model's action distribution (what BC trains, warm-up freezes)."""
    if _algorithm(model) == "sac":
        return list(model.actor.parameters())
    return _ppo_actor_parameters(model.policy)


def _ppo_actor_parameters(policy) -> list:
    """The parameters that shape PPO's action distribution: shared features, policy net, head, log_std."""
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    params.append(policy.log_std)
    if policy.share_features_extractor:
        params += list(policy.features_extractor.parameters())
    else:
        params += list(policy.pi_features_extractor.parameters())
    return params
