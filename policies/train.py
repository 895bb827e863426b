"""Training runs: demonstrations -> behaviour cloning -> RL fine-tuning, into a run directory.

`TrainConfig` is the YAML config of a run (``examples/train_*.yaml``), loaded strictly by
`load_train_config` (an unknown or mistyped key is a `ConfigError` that names it). `train` runs it:

1. **demonstrations**: the cell's scripted expert recorded in memory (``demos.source: expert``),
   or a `skillcell.demos` dataset folder (``dataset``), optionally filtered by skill score; or
   none (RL from scratch);
2. **behaviour cloning** of the SB3 policy's actor (`skillcell.policies.bc`), if ``bc.enabled``,
   then ``dagger`` rounds if configured (`skillcell.policies.dagger`);
3. **RL** with SB3 PPO or SAC from that start (`skillcell.policies.finetune`: critic warm-up, a
   decaying BC term, and for SAC a replay buffer that mixes the demonstrations into every batch).
   With ``bc.enabled: false`` the same code path is plain RL from scratch; with ``residual`` RL
   trains a bounded residual on a frozen base instead (`skillcell.policies.residual`). The
   training envs run at ``env.tier`` or through ``env.curriculum``, with the optional force term
   and observation history (`skillcell.policies.train_env`);
4. **evaluation** on a fixed set of episode seeds after BC (env step 0), after every DAgger
   round, every ``eval.every_steps`` env steps, and at the end, at the last training tier.

The run directory holds::

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

Files that matter are written atomically (a temporary file, fsync, rename), and metrics rows are
appended with one ``write`` each and fsynced, so a run killed at any point leaves readable files.
Observation normalization: skillcell observations are already scaled to about unit range, so
the default (``env.obs_norm: none``) feeds them as they are to BC and RL alike. ``demos`` wraps
the env in a `VecNormalize` frozen at the demonstrations' statistics, which BC and RL then both
use (`skillcell.policies.bc.demo_vec_normalize`); on PegInsert it generalized worse (held-out
action error 0.0038 against 0.0006 with 20 demonstrations), so it is not the default.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from skillcell.atomic import atomic_write_bytes, atomic_write_text
from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, merge, quote, to_mapping
from skillcell.paths import sha256_file

__all__ = [
    "BCConfig",
    "CurriculumStage",
    "DaggerConfig",
    "DemosConfig",
    "EnvConfig",
    "EvalConfig",
    "EvaluateEvery",
    "FinetuneConfig",
    "ForcePenaltyConfig",
    "PPOConfig",
    "RLConfig",
    "ResidualConfig",
    "SACConfig",
    "TrainConfig",
    "TrainResult",
    "check_run_dir",
    "evaluate_model",
    "load_train_config",
    "steps_to_success",
    "train",
]


# ---------------------------------------------------------------------- config


@dataclass(frozen=True)
class CurriculumStage:
    """One stage of ``env.curriculum``: train at ``tier`` until RL has run ``until_steps`` env steps
    (DAgger's rollouts, which run at the first tier, do not count; the last stage: none, it lasts to the end)."""

    tier: str
    until_steps: int | None = field(default=None, metadata=bounds(1, 1_000_000_000))


@dataclass(frozen=True)
class ForcePenaltyConfig:
    """``env.force_penalty``: a reward term against force beyond the cell's F/T stop,
    ``limits.tool_force_stop_n`` (`skillcell.policies.force_limit`)."""

    weight: float = field(default=1.0, metadata=bounds(0.0, 1000.0))
    start_fraction: float = field(default=1.0, metadata=bounds(0.01, 1.0))


@dataclass(frozen=True)
class EnvConfig:
    """The cell to train on; ``overrides`` is a cell-config mapping as ``gym.make(..., overrides=)``.

    ``tier`` or ``curriculum`` (not both): the randomization tier(s) to train at; evaluation runs
    at the last one. ``history``: observe the last k observations and the previous action
    (`skillcell.policies.history`; 0: off).
    """

    id: str = "skillcell/PegInsert-v0"
    n_envs: int = field(default=1, metadata=bounds(1, 64))
    tier: str | None = None
    curriculum: tuple[CurriculumStage, ...] = ()
    randomize: bool = True
    cell: str | None = None  # a cell YAML laid over the packaged one
    obs_norm: Literal["none", "demos"] = "none"
    obs_std_floor: float = field(default=0.01, metadata=bounds(1e-6, 10.0))
    history: int = field(default=0, metadata=bounds(0, 64))
    force_penalty: ForcePenaltyConfig | None = None
    overrides: dict[str, Any] | None = None  # checked by the cell when the env is built

    def __post_init__(self) -> None:
        if self.curriculum and self.tier is not None:
            raise ConfigError("curriculum: give env.tier or env.curriculum, not both")
        for i, stage in enumerate(self.curriculum):
            last = i == len(self.curriculum) - 1
            if last and stage.until_steps is not None:
                raise ConfigError(f"curriculum[{i}].until_steps: the last stage lasts to the end of training; "
                                  "leave until_steps out")
            if not last and stage.until_steps is None:
                raise ConfigError(f"curriculum[{i}].until_steps: required (every stage but the last ends)")
            if i and not last and stage.until_steps <= self.curriculum[i - 1].until_steps:
                raise ConfigError(f"curriculum[{i}].until_steps: must exceed the previous stage's "
                                  f"({self.curriculum[i - 1].until_steps}), got {stage.until_steps}")

    @property
    def tiers(self) -> tuple[str | None, ...]:
        """The tiers training runs at, in order (None: the cell's default)."""
        return tuple(s.tier for s in self.curriculum) or (self.tier,)


@dataclass(frozen=True)
class DemosConfig:
    """Where demonstrations come from: the scripted expert in memory, a dataset folder, or none."""

    source: Literal["expert", "dataset", "none"] = "expert"
    path: str | None = None
    episodes: int = field(default=25, metadata=bounds(1, 100000))
    skill: str = "expert"
    seed: int = 0
    min_score: float | None = field(default=None, metadata=bounds(0.0, 1.0))
    holdout_fraction: float = field(default=0.0, metadata=bounds(0.0, 0.9))


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning of the actor (`skillcell.policies.bc.behaviour_clone`)."""

    enabled: bool = True
    steps: int = field(default=2000, metadata=bounds(0, 10_000_000))
    batch_size: int = field(default=256, metadata=bounds(1, 1_000_000))
    learning_rate: float = field(default=1e-3, metadata=bounds(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    loss: Literal["mse", "nll"] = "mse"
    log_std: float | None = field(default=-1.6, metadata=bounds(-10.0, 2.0))
    log_std_weight: float = field(default=0.1, metadata=bounds(0.0, 100.0))


@dataclass(frozen=True)
class PPOConfig:
    n_steps: int = field(default=1024, metadata=bounds(2, 1_000_000))
    batch_size: int = field(default=64, metadata=bounds(2, 1_000_000))
    n_epochs: int = field(default=10, metadata=bounds(1, 1000))
    clip_range: float = field(default=0.2, metadata=bounds(0.0, 1.0))
    target_kl: float | None = field(default=None, metadata=bounds(0.0, 10.0))
    ent_coef: float = field(default=0.0, metadata=bounds(0.0, 1.0))
    gae_lambda: float = field(default=0.95, metadata=bounds(0.0, 1.0))
    vf_coef: float = field(default=0.5, metadata=bounds(0.0, 100.0))
    log_std_init: float = field(default=0.0, metadata=bounds(-10.0, 2.0))


@dataclass(frozen=True)
class SACConfig:
    buffer_size: int = field(default=200_000, metadata=bounds(1, 100_000_000))
    batch_size: int = field(default=256, metadata=bounds(1, 1_000_000))
    learning_starts: int = field(default=1000, metadata=bounds(0, 100_000_000))
    train_freq: int = field(default=1, metadata=bounds(1, 1_000_000))
    gradient_steps: int = field(default=1, metadata=bounds(-1, 1_000_000))
    tau: float = field(default=0.005, metadata=bounds(0.0, 1.0))
    ent_coef: float | str = "auto"
    target_entropy: float | None = None  # None: SB3's -dim(action)
    demo_ratio: float = field(default=0.5, metadata=bounds(0.0, 1.0))


@dataclass(frozen=True)
class RLConfig:
    """The RL algorithm and its budget in env steps (0: behaviour cloning only)."""

    algo: Literal["ppo", "sac"] = "ppo"
    steps: int = field(default=50_000, metadata=bounds(0, 1_000_000_000))
    learning_rate: float = field(default=3e-4, metadata=bounds(0.0, 1.0))
    gamma: float = field(default=0.99, metadata=bounds(0.0, 1.0))
    net_arch: tuple[int, ...] = (256, 256)
    activation: Literal["tanh", "relu"] = "tanh"
    ppo: PPOConfig = PPOConfig()
    sac: SACConfig = SACConfig()


@dataclass(frozen=True)
class FinetuneConfig:
    """What protects a BC start during RL (used only when ``bc.enabled``)."""

    critic_warmup_steps: int = field(default=0, metadata=bounds(0, 1_000_000_000))
    bc_weight: float = field(default=0.0, metadata=bounds(0.0, 1000.0))
    bc_half_life_steps: int = field(default=10_000, metadata=bounds(0, 1_000_000_000))
    bc_steps_per_1k: float = field(default=20.0, metadata=bounds(0.0, 100_000.0))
    bc_learning_rate: float = field(default=3e-4, metadata=bounds(0.0, 1.0))
    bc_batch_size: int = field(default=256, metadata=bounds(1, 1_000_000))


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation on episode seeds ``seed, seed+1, ...`` (the same set every time), deterministic actions."""

    every_steps: int = field(default=5000, metadata=bounds(0, 1_000_000_000))
    episodes: int = field(default=20, metadata=bounds(1, 100_000))
    seed: int = 100_000


@dataclass(frozen=True)
class DaggerConfig:
    """DAgger after behaviour cloning (`skillcell.policies.dagger`): ``rounds`` of ``episodes_per_round``
    rollouts (seeds ``seed, seed+1, ...``) executing the expert with probability
    ``beta0 * beta_decay ** round``; BC continues ``bc_steps`` (default: ``bc.steps``) per round.
    ``expert``: ``scripted``, ``scripted:<skill>`` or an SB3 model path."""

    rounds: int = field(default=3, metadata=bounds(1, 1000))
    episodes_per_round: int = field(default=10, metadata=bounds(1, 100_000))
    beta0: float = field(default=0.5, metadata=bounds(0.0, 1.0))
    beta_decay: float = field(default=0.5, metadata=bounds(0.0, 1.0))
    expert: str = "scripted"
    bc_steps: int | None = field(default=None, metadata=bounds(0, 10_000_000))
    seed: int = 50_000


@dataclass(frozen=True)
class ResidualConfig:
    """Residual RL (`skillcell.policies.residual`): RL learns ``scale * r`` (``r`` in [-1, 1]) added to a
    frozen base: ``bc`` (this run's behaviour-cloned model, after DAgger if configured),
    ``scripted``/``scripted:<skill>``, or an SB3 model path."""

    base: str = "bc"
    scale: float = field(default=0.2, metadata=bounds(0.001, 2.0))


@dataclass(frozen=True)
class TrainConfig:
    """A training run; see the module docstring and ``examples/train_peg_insert.yaml``."""

    env: EnvConfig = EnvConfig()
    demos: DemosConfig = DemosConfig()
    bc: BCConfig = BCConfig()
    rl: RLConfig = RLConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    eval: EvalConfig = EvalConfig()
    dagger: DaggerConfig | None = None
    residual: ResidualConfig | None = None
    seed: int = 0
    out: str = "runs/train"
    checkpoints: bool = True
    progress: bool = True
    torch_threads: int = field(default=1, metadata=bounds(0, 256))

    def __post_init__(self) -> None:
        if self.bc.enabled and self.demos.source == "none":
            raise ConfigError("bc.enabled: behaviour cloning needs demonstrations; set demos.source "
                              "(expert or dataset) or bc.enabled: false")
        if self.env.obs_norm == "demos" and self.demos.source == "none":
            raise ConfigError("env.obs_norm: 'demos' normalizes with the demonstrations' statistics; "
                              "demos.source is none")
        if self.demos.source == "dataset" and not self.demos.path:
            raise ConfigError("demos.path: required when demos.source is dataset")
        if isinstance(self.rl.sac.ent_coef, str) and not re.fullmatch(r"auto(_\d*\.?\d+(e-?\d+)?)?",
                                                                      self.rl.sac.ent_coef):
            raise ConfigError(f"rl.sac.ent_coef: a number, 'auto' or 'auto_<initial value>', "
                              f"got {quote(self.rl.sac.ent_coef)}")
        if any(w < 1 for w in self.rl.net_arch):
            raise ConfigError(f"rl.net_arch: layer widths must be positive, got {quote(list(self.rl.net_arch))}")
        if self.dagger is not None and not self.bc.enabled:
            raise ConfigError("dagger: retrains the behaviour-cloned learner each round; set bc.enabled: true")
        r = self.residual
        if r is not None:
            if (r.base == "bc") != self.bc.enabled:
                raise ConfigError("residual.base: 'bc' takes this run's behaviour-cloned model as the base, so it "
                                  "needs bc.enabled: true; any other base is given, so set bc.enabled: false")
            if self.env.obs_norm != "none":
                raise ConfigError("env.obs_norm: the residual observes [observation, base action] as they are; "
                                  "use obs_norm: none with residual")
            if self.finetune.bc_weight > 0:
                raise ConfigError("finetune.bc_weight: BC steps would pull the residual towards the demonstrated "
                                  "actions, which are actions, not corrections; set it to 0 with residual")
            if self.env.history and (r.base == "scripted" or r.base.startswith("scripted:")):
                raise ConfigError("residual.base: a scripted base reads the plain observation; it cannot be "
                                  "combined with env.history")


_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value: Any) -> Any:
    """PyYAML reads ``1e-3`` (no dot) as a string; in a training config it always means a number."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _SCIENTIFIC.match(value):
        return float(value)
    return value


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The `TrainConfig` of a YAML file (or the defaults) with ``overrides`` (``--set``) laid over it.

    Every key is checked: ``rl.learning_rat: unknown key (expected one of: ...)``.
    """
    data = load_yaml(path) if path is not None else {}
    data = _numbers(merge(data, overrides or {}))
    env = data.get("env")
    cell_overrides = None
    if isinstance(env, dict) and "overrides" in env:
        # A free-form cell mapping: the cell's own config checks it when the env is built.
        env = dict(env)
        cell_overrides = env.pop("overrides")
        if cell_overrides is not None and not isinstance(cell_overrides, dict):
            raise ConfigError(f"env.overrides: expected a mapping of cell config keys, got {quote(cell_overrides)}")
        data = {**data, "env": env}
    config = from_mapping(TrainConfig, data)
    if cell_overrides:
        config = dataclasses.replace(config, env=dataclasses.replace(config.env, overrides=cell_overrides))
    return config


def config_to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(to_mapping(config), sort_keys=False)


# ---------------------------------------------------------------------- files


def save_model(model, path: Path) -> Path:
    """``model.save`` into memory, then an atomic write: a crash never leaves a half-written zip."""
    buffer = io.BytesIO()
    model.save(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _save_vec_normalize(vn, path: Path) -> Path:
    import pickle

    # VecNormalize.save pickles itself minus its venv; the same, through the atomic writer.
    venv, vn.venv = vn.venv, None
    try:
        data = pickle.dumps(vn)
    finally:
        vn.venv = venv
    return atomic_write_bytes(path, data)


class MetricsLog:
    """``metrics.csv``: a header, then one row per evaluation, each appended with a single
    ``os.write`` on an ``O_APPEND`` descriptor and fsynced (a crash loses at most the row being
    written, never an earlier one)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        atomic_write_bytes(path, self._line(columns).encode())

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


# ---------------------------------------------------------------------- models


def _env_kwargs(config: EnvConfig) -> dict[str, Any]:
    """``gym.make`` keywords of the cell at the first tier training runs at."""
    kwargs: dict[str, Any] = {}
    if config.tiers[0] is not None:
        kwargs["tier"] = config.tiers[0]
    if not config.randomize:
        kwargs["randomize"] = False
    if config.cell is not None:
        kwargs["cell"] = config.cell
    if config.overrides:
        kwargs["overrides"] = config.overrides
    return kwargs


def _make_env(env_id: str, env_kwargs: dict[str, Any]):
    import gymnasium as gym

    import skillcell

    if env_id not in skillcell.skillcell_env_ids():
        raise ConfigError(f"env.id: unknown env {quote(env_id)}; "
                          f"registered: {', '.join(skillcell.skillcell_env_ids())}")
    try:
        return gym.make(env_id, **env_kwargs)
    except ConfigError as exc:
        raise ConfigError(f"env.overrides: {exc}") from None


def _train_env_spec(config: TrainConfig, trusted: bool = False):
    """The `TrainEnvSpec` of the RL envs (a residual on a ``bc`` base gets its base once it is trained)."""
    from skillcell.policies.train_env import TrainEnvSpec

    kwargs = {k: v for k, v in _env_kwargs(config.env).items() if k != "tier"}
    penalty, residual = config.env.force_penalty, config.residual
    return TrainEnvSpec(config.env.id, kwargs, config.env.tiers, config.env.history,
                        None if penalty is None else (penalty.weight, penalty.start_fraction),
                        residual.base if residual is not None and residual.base != "bc" else None,
                        residual.scale if residual is not None else 0.2, config.seed, trusted)


def _eval_env(config: TrainConfig, spec):
    """The evaluation env: the cell at the last training tier (checked: a bad id or override is named), wrapped."""
    kwargs = dict(spec.env_kwargs)
    if spec.final_tier is not None:
        kwargs["tier"] = spec.final_tier
    return spec.wrap(_make_env(config.env.id, kwargs))


def _make_vec_env(config: TrainConfig, spec=None):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    # A picklable spec: subprocess workers build (and register) the cell themselves.
    spec = spec if spec is not None else _train_env_spec(config)
    return make_vec_env(spec.make, n_envs=config.env.n_envs, seed=config.seed,
                        vec_env_cls=SubprocVecEnv if config.env.n_envs > 1 else DummyVecEnv)


def _sac_ent_coef(value: float | str) -> float | str:
    return float(value) if isinstance(value, (int, float)) else value


def build_model(config: TrainConfig, venv, *, demo_buffer: bool):
    """The SB3 model for ``config.rl`` on ``venv`` (seeded with ``config.seed``)."""
    import torch as th
    from stable_baselines3 import PPO, SAC

    rl = config.rl
    arch = list(rl.net_arch)
    # Tanh for both (SB3's SAC default is ReLU): cloned from 20 PegInsert demonstrations, a ReLU
    # actor reached 20-24% success and a Tanh one 100% (held-out action MSE 0.0018-0.0022 vs 0.0006-0.0008).
    activation = th.nn.Tanh if rl.activation == "tanh" else th.nn.ReLU
    if rl.algo == "ppo":
        p = rl.ppo
        return PPO("MlpPolicy", venv, learning_rate=rl.learning_rate, n_steps=p.n_steps, batch_size=p.batch_size,
                   n_epochs=p.n_epochs, gamma=rl.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range,
                   ent_coef=p.ent_coef, vf_coef=p.vf_coef, target_kl=p.target_kl, seed=config.seed, device="cpu",
                   policy_kwargs={"net_arch": {"pi": arch, "vf": arch}, "log_std_init": p.log_std_init,
                                  "activation_fn": activation})
    from skillcell.policies.finetune import DemoMixReplayBuffer

    s = rl.sac
    kwargs: dict[str, Any] = {}
    if demo_buffer:
        kwargs = {"replay_buffer_class": DemoMixReplayBuffer, "replay_buffer_kwargs": {"demo_ratio": s.demo_ratio}}
    return SAC("MlpPolicy", venv, learning_rate=rl.learning_rate, buffer_size=s.buffer_size,
               learning_starts=s.learning_starts, batch_size=s.batch_size, tau=s.tau, gamma=rl.gamma,
               train_freq=s.train_freq, gradient_steps=s.gradient_steps, ent_coef=_sac_ent_coef(s.ent_coef),
               target_entropy="auto" if s.target_entropy is None else s.target_entropy,
               seed=config.seed, device="cpu", policy_kwargs={"net_arch": arch, "activation_fn": activation}, **kwargs)


def evaluate_model(model, env, episodes: int, seed: int, normalize: Callable[[np.ndarray], np.ndarray] | None = None,
                   progress: bool = False):
    """`skillcell.evaluation.run_episodes` with ``model.predict(..., deterministic=True)``.

    Observations go through ``normalize`` (a loaded model's `LoadedModel.normalize`; default: the
    model's own env's `VecNormalize`, if it has one).
    """
    from skillcell.evaluation import run_episodes

    if normalize is None and model.get_vec_normalize_env() is not None:
        normalize = model.get_vec_normalize_env().normalize_obs

    def policy(obs: np.ndarray) -> np.ndarray:
        o = normalize(np.asarray(obs, np.float32)) if normalize is not None else obs
        return model.predict(o, deterministic=True)[0]

    return run_episodes(env, policy, episodes, seed=seed, progress=progress)


# ---------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    bc: Any | None
    metrics: list[dict[str, Any]]
    wall_time_s: float


def _eval_row(summary, kpi_keys, env_steps: int, phase: str, wall: float) -> dict[str, Any]:
    low, high = summary.success_ci95
    row = {"phase": phase, "env_steps": env_steps, "wall_time_s": wall, "episodes": len(summary.episodes),
           "success_rate": summary.success_rate, "success_ci_low": low, "success_ci_high": high,
           "mean_return": float(np.mean([e.episode_return for e in summary.episodes])),
           "mean_length": float(np.mean([e.steps for e in summary.episodes]))}
    for key in kpi_keys:
        row[key] = summary.mean(key)
    return row


class EvaluateEvery(BaseCallback):
    """Calls ``evaluate(env_steps)`` every ``every`` env steps (between env steps, mid-rollout is fine:
    evaluation runs its own env and deterministic actions, so it changes nothing in training)."""

    def __init__(self, every: int, evaluate: Callable[[int], Any]):
        super().__init__()
        self.every, self.evaluate = int(every), evaluate
        self.next = self.every

    def _on_step(self) -> bool:
        if self.every > 0 and self.num_timesteps >= self.next:
            self.evaluate(self.num_timesteps)
            while self.next <= self.num_timesteps:
                self.next += self.every
        return True


def check_run_dir(run_dir: str | Path, overwrite: bool = False) -> Path:
    """Raises `FileExistsError` if ``run_dir`` holds a run (a ``metrics.csv``), unless ``overwrite``."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.csv").exists() and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a run (metrics.csv); choose another out or pass --overwrite")
    return run_dir


def train(config: TrainConfig, out: str | Path | None = None, *, overwrite: bool = False, trusted: bool = False,
          log=print) -> TrainResult:
    """Runs ``config`` into the run directory ``out`` (default ``config.out``); see the module docstring.

    ``trusted``: SB3 models the config names (DAgger's expert, a residual's base) are unpickled,
    which runs code from them; by default they are read as data (`skillcell.policies.loading`).
    """
    import torch as th

    from skillcell.policies.bc import behaviour_clone, demo_vec_normalize, expert_demos, load_demos
    from skillcell.policies.finetune import BCRegularizer, CriticWarmup

    start = time.perf_counter()
    run_dir = check_run_dir(out if out is not None else config.out, overwrite)
    if config.torch_threads > 0:
        # SB3's small networks on a few cores: one thread per process beats contended intra-op threads.
        th.set_num_threads(config.torch_threads)
    env_kwargs = _env_kwargs(config.env)
    spec = _train_env_spec(config, trusted)
    eval_env = _eval_env(config, spec)  # checks the cell overrides (and a residual's base) before anything is written
    kpi_keys = list(eval_env.unwrapped.kpi_keys)
    dagger_env = dagger_expert = None
    if config.dagger is not None:
        from skillcell.policies.frozen import frozen_policy

        dagger_env = spec.cell_env(spec.tiers[0])
        dagger_expert = frozen_policy(config.dagger.expert, dagger_env, seed=config.seed, where="dagger.expert",
                                      trusted=trusted)
    # Demonstrations before anything is written: a damaged dataset must not cost the previous run.
    demos = heldout = None
    if config.demos.source != "none":
        d = config.demos
        if d.source == "expert":
            demos = expert_demos(config.env.id, d.episodes, seed=d.seed, skill=d.skill, env_kwargs=env_kwargs,
                                 min_score=d.min_score, progress=config.progress)
        else:
            demos = load_demos(d.path, min_score=d.min_score, max_episodes=d.episodes, env_id=config.env.id)
            recorded = {k: demos.env_kwargs.get(k) for k in ("cell", "overrides", "tier")}
            if recorded != {k: env_kwargs.get(k) for k in recorded}:
                log(f"warning: the demonstrations were recorded with {recorded}, training runs with "
                    f"{ {k: env_kwargs.get(k) for k in recorded} }: their rewards (SAC's demo buffer) and "
                    "observations may not match the training env's")
        demos, heldout = demos.split(d.holdout_fraction, seed=config.seed)
        log(f"demonstrations: {demos.n_episodes} episodes, {len(demos)} steps "
            f"(success {demos.episode_success.mean():.0%})"
            + (f"; {heldout.n_episodes} held out" if heldout is not None else ""))
        if config.env.history:
            from skillcell.policies.dagger import history_transitions

            demos = history_transitions(demos, config.env.history)
            heldout = heldout if heldout is None else history_transitions(heldout, config.env.history)

    if overwrite:
        # Nothing of the previous run may survive to be mistaken for this one's (eval picks up a
        # vecnormalize.pkl next to the model by itself).
        stale = [run_dir / n for n in ("metrics.csv", "model.zip", "bc_model.zip", "dagger_model.zip", "residual.yaml",
                                       "vecnormalize.pkl", "summary.yaml")]
        for old in [*stale, *(run_dir / "checkpoints").glob("model_*.zip")]:
            old.unlink(missing_ok=True)
        if (run_dir / "dagger").is_dir():
            import shutil

            shutil.rmtree(run_dir / "dagger")  # DatasetWriter would append this run's rounds to the old ones
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", "# skillcell train: the config as run\n" + config_to_yaml(config))

    venv = _make_vec_env(config, spec)
    vec_normalize = None
    if config.env.obs_norm == "demos":
        venv = vec_normalize = demo_vec_normalize(venv, demos, std_floor=config.env.obs_std_floor)
        _save_vec_normalize(vec_normalize, run_dir / "vecnormalize.pkl")
    use_demo_buffer = (config.rl.algo == "sac" and demos is not None and config.rl.sac.demo_ratio > 0
                       and config.residual is None)  # demonstrated actions are not residuals
    model = build_model(config, venv, demo_buffer=use_demo_buffer)
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(str(run_dir / "sb3"), ["csv"]))
    if spec.residual_base is not None:
        from skillcell.policies.residual import zero_action_head

        zero_action_head(model)

    columns = ["phase", "env_steps", "wall_time_s", "episodes", "success_rate", "success_ci_low", "success_ci_high",
               "mean_return", "mean_length", *kpi_keys]
    metrics = MetricsLog(run_dir / "metrics.csv", columns)
    rows: list[dict[str, Any]] = []

    def evaluate(env_steps: int, phase: str) -> dict[str, Any]:
        summary = evaluate_model(model, eval_env, config.eval.episodes, config.eval.seed)
        row = _eval_row(summary, kpi_keys, env_steps, phase, time.perf_counter() - start)
        metrics.append(row)
        rows.append(row)
        if config.checkpoints and phase == "rl":
            save_model(model, run_dir / "checkpoints" / f"model_{env_steps:09d}.zip")
        kpi = ", ".join(f"{k} {row[k]:.3g}" for k in kpi_keys[:2])
        log(f"[{phase} {env_steps:>8d} env steps, {row['wall_time_s']:6.0f} s] success {summary.success_rate:.0%} "
            f"(95% CI {row['success_ci_low']:.0%}-{row['success_ci_high']:.0%}), return {row['mean_return']:.1f}, "
            f"{kpi}")
        return row

    bc_result = None
    if config.bc.enabled:
        b = config.bc
        bc_result = behaviour_clone(model, demos, steps=b.steps, batch_size=b.batch_size, learning_rate=b.learning_rate,
                                    weight_decay=b.weight_decay, loss=b.loss, log_std=b.log_std,
                                    log_std_weight=b.log_std_weight, heldout=heldout, seed=config.seed,
                                    progress=config.progress)
        log(bc_result.report())
        save_model(model, run_dir / "bc_model.zip")
    evaluate(0, "bc" if bc_result is not None else "init")
    step_offset = 0  # env steps before RL (DAgger's rollouts): the RL rows count on from them
    buffer_demos = demos
    dagger_rounds = []
    if config.dagger is not None:
        # The aggregate is what BC (and the BC regularizer) learn from; SAC's demo buffer keeps the seed
        # demonstrations: a relabelled step's reward and next state belong to the executed action, not the label.
        dagger_rounds, demos = _dagger_stage(config, model, demos, dagger_env, dagger_expert, run_dir, evaluate, log)
        step_offset = sum(r.steps for r in dagger_rounds)
        save_model(model, run_dir / "dagger_model.zip")
    if config.residual is not None and config.residual.base == "bc":
        from skillcell.policies.residual import zero_action_head

        # The learner becomes the frozen base; RL trains a new model: the residual on top of it.
        spec = dataclasses.replace(spec, residual_base=str(run_dir / ("dagger_model.zip" if dagger_rounds
                                                                        else "bc_model.zip")))
        venv.close()
        eval_env.close()
        venv, eval_env = _make_vec_env(config, spec), _eval_env(config, spec)
        model = build_model(config, venv, demo_buffer=False)
        model.set_logger(configure(str(run_dir / "sb3"), ["csv"]))
        zero_action_head(model)
    if config.residual is not None:
        _write_residual_record(run_dir, config, spec)

    if use_demo_buffer:
        model.replay_buffer.add_demos(buffer_demos, scale_action=model.policy.scale_action)
    callbacks: list[BaseCallback] = []
    if config.eval.every_steps > 0:
        callbacks.append(EvaluateEvery(config.eval.every_steps, lambda steps: evaluate(step_offset + steps, "rl")))
    if len(spec.tiers) > 1:
        from skillcell.policies.curriculum import TierCurriculum

        callbacks.append(TierCurriculum([(s.tier, s.until_steps) for s in config.env.curriculum], log=log))
    f = config.finetune
    if (bc_result is not None or config.residual is not None) and f.critic_warmup_steps > 0:
        callbacks.append(CriticWarmup(f.critic_warmup_steps))
    if bc_result is not None and f.bc_weight > 0:
        callbacks.append(BCRegularizer(demos, weight=f.bc_weight, half_life=f.bc_half_life_steps,
                                       steps_per_1k=f.bc_steps_per_1k, batch_size=f.bc_batch_size,
                                       learning_rate=f.bc_learning_rate, seed=config.seed))
    if config.rl.steps > 0:
        model.learn(config.rl.steps, callback=callbacks, progress_bar=config.progress)
        if not rows or rows[-1]["env_steps"] != step_offset + model.num_timesteps:
            evaluate(step_offset + model.num_timesteps, "rl")
    save_model(model, run_dir / "model.zip")

    wall = time.perf_counter() - start
    final = rows[-1]
    summary = {
        "env_id": config.env.id, "algorithm": config.rl.algo, "env_steps": step_offset + int(model.num_timesteps),
        "rl_env_steps": int(model.num_timesteps), "tiers": list(spec.tiers), "history": config.env.history,
        "wall_time_s": round(wall, 2),
        "demonstrations": None if demos is None else {
            "episodes": demos.n_episodes, "steps": len(demos),
            "heldout_episodes": 0 if heldout is None else heldout.n_episodes},
        "bc": None if bc_result is None else {
            "steps": bc_result.steps, "wall_time_s": round(bc_result.wall_time_s, 2),
            "train_action_mse_before": bc_result.train_error_before,
            "train_action_mse_after": bc_result.train_error_after,
            "heldout_action_mse_before": _none_if_nan(bc_result.heldout_error_before),
            "heldout_action_mse_after": _none_if_nan(bc_result.heldout_error_after)},
        "dagger": [{"round": r.round, "beta": r.beta, "episodes": r.episodes, "env_steps": r.steps,
                    "expert_executed_fraction": r.expert_executed_fraction,
                    "rollout_success_rate": r.learner_success_rate, "aggregate_steps": r.aggregate_steps,
                    "train_action_mse_after": r.bc.train_error_after} for r in dagger_rounds] or None,
        "residual": None if config.residual is None else {"base": spec.residual_base, "scale": spec.residual_scale},
        "final_eval": {k: _none_if_nan(v) if isinstance(v, float) else v for k, v in final.items()},
        "steps_to_90pct_success": _none_if_nan(steps_to_success(rows, 0.9)),
    }
    atomic_write_bytes(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=False).encode())
    eval_env.close()
    venv.close()
    log(f"run directory {run_dir}: model.zip, metrics.csv ({len(rows)} evaluations), {wall:.0f} s")
    return TrainResult(run_dir, model, bc_result, rows, wall)


def _dagger_stage(config: TrainConfig, model, demos, env, expert, run_dir: Path, evaluate, log):
    """DAgger rounds on the behaviour-cloned ``model`` (`skillcell.policies.dagger`); ``(rounds, aggregate)``."""
    from skillcell.policies.dagger import dagger
    from skillcell.policies.frozen import is_scripted

    g, b = config.dagger, config.bc
    bc_kwargs = {"steps": g.bc_steps if g.bc_steps is not None else b.steps, "batch_size": b.batch_size,
                 "learning_rate": b.learning_rate, "weight_decay": b.weight_decay, "loss": b.loss,
                 "log_std": b.log_std, "log_std_weight": b.log_std_weight}

    def after_round(record, env_steps: int) -> None:
        log(f"DAgger round {record.round}: beta {record.beta:.3g}, {record.episodes} episodes, {record.steps} steps "
            f"(expert executed {record.expert_executed_fraction:.0%}, rollout success "
            f"{record.learner_success_rate:.0%}); aggregate {record.aggregate_steps} steps; {record.bc.report()}")
        evaluate(env_steps, "dagger")

    name = g.expert if is_scripted(g.expert) else expert.describe()
    return dagger(model, demos, env=env, expert=expert, expert_name=name, rounds=g.rounds,
                  episodes_per_round=g.episodes_per_round, beta0=g.beta0, beta_decay=g.beta_decay,
                  bc_kwargs=bc_kwargs, dataset=run_dir / "dagger", seed=config.seed, first_episode_seed=g.seed,
                  history=config.env.history, after_round=after_round, progress=config.progress)


def _write_residual_record(run_dir: Path, config: TrainConfig, spec) -> None:
    """``residual.yaml``: what model.zip is a residual of (`skillcell.policies.residual.ResidualRun`).

    A base inside the run directory is named relative to it, so the run can move."""
    from skillcell.policies.frozen import is_scripted
    from skillcell.policies.residual import RECORD_NAME

    base, sha = spec.residual_base, None
    if not is_scripted(base):
        sha, path, root = sha256_file(base), Path(base).resolve(), run_dir.resolve()
        base = str(path.relative_to(root) if path.is_relative_to(root) else path)
    record = {"base": base, "base_sha256": sha, "scale": spec.residual_scale, "algorithm": config.rl.algo,
              "history": config.env.history}
    atomic_write_bytes(run_dir / RECORD_NAME, yaml.safe_dump(record, sort_keys=False).encode())


def _none_if_nan(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
