"""Training runs: demonstrations -> behaviour cloning -> RL fine-tuning, into a run directory.

`TrainConfig` is the YAML config of a run (``examples/train_*.yaml``), loaded strictly by
`load_train_config` (an unknown or mistyped key is a `ConfigError` that names it). `train` runs it:

1. **demonstrations**: the cell's scripted expert recorded in memory (``demos.source: expert``),
   or a `skillcell.demos` dataset folder (``dataset``), optionally filtered by skill score; or
   none (RL from scratch);
2. **behaviour cloning** of the SB3 policy's actor (`skillcell.policies.bc`), if ``bc.enabled``;
3. **RL** with SB3 PPO or SAC from that start (`skillcell.policies.finetune`: critic warm-up, a
   decaying BC term, and for SAC a replay buffer that mixes the demonstrations into every batch).
   With ``bc.enabled: false`` the same code path is plain RL from scratch;
4. **evaluation** on a fixed set of episode seeds after BC (env step 0), every
   ``eval.every_steps`` env steps, and at the end.

The run directory holds::

    config.yaml          the config as run (every default filled in)
    metrics.csv          one row per evaluation: env steps, wall time, success rate with its
                         Wilson 95% interval, mean return and length, the cell's process KPIs
    bc_model.zip         the model right after behaviour cloning (when BC ran)
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

from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, merge, quote, to_mapping

__all__ = [
    "BCConfig",
    "DemosConfig",
    "EnvConfig",
    "EvalConfig",
    "EvaluateEvery",
    "FinetuneConfig",
    "PPOConfig",
    "RLConfig",
    "SACConfig",
    "TrainConfig",
    "TrainResult",
    "evaluate_model",
    "load_model",
    "load_train_config",
    "steps_to_success",
    "train",
]


# ---------------------------------------------------------------------- config


@dataclass(frozen=True)
class EnvConfig:
    """The cell to train on; ``overrides`` is a cell-config mapping as ``gym.make(..., overrides=)``."""

    id: str = "skillcell/PegInsert-v0"
    n_envs: int = field(default=1, metadata=bounds(1, 64))
    tier: str | None = None
    randomize: bool = True
    cell: str | None = None  # a cell YAML laid over the packaged one
    obs_norm: Literal["none", "demos"] = "none"
    obs_std_floor: float = field(default=0.01, metadata=bounds(1e-6, 10.0))
    overrides: dict[str, Any] | None = None  # checked by the cell when the env is built


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
class TrainConfig:
    """A training run; see the module docstring and ``examples/train_peg_insert.yaml``."""

    env: EnvConfig = EnvConfig()
    demos: DemosConfig = DemosConfig()
    bc: BCConfig = BCConfig()
    rl: RLConfig = RLConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    eval: EvalConfig = EvalConfig()
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
                              f"got {self.rl.sac.ent_coef!r}")
        if any(w < 1 for w in self.rl.net_arch):
            raise ConfigError(f"rl.net_arch: layer widths must be positive, got {list(self.rl.net_arch)}")


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


def _atomic_write(path: Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` through a temporary file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_model(model, path: Path) -> Path:
    """``model.save`` into memory, then an atomic write: a crash never leaves a half-written zip."""
    buffer = io.BytesIO()
    model.save(buffer)
    return _atomic_write(path, buffer.getvalue())


def _save_vec_normalize(vn, path: Path) -> Path:
    import pickle

    # VecNormalize.save pickles itself minus its venv; the same, through the atomic writer.
    venv, vn.venv = vn.venv, None
    try:
        data = pickle.dumps(vn)
    finally:
        vn.venv = venv
    return _atomic_write(path, data)


class MetricsLog:
    """``metrics.csv``: a header, then one row per evaluation, each appended with a single
    ``os.write`` on an ``O_APPEND`` descriptor and fsynced (a crash loses at most the row being
    written, never an earlier one)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        _atomic_write(path, self._line(columns).encode())

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
    kwargs: dict[str, Any] = {}
    if config.tier is not None:
        kwargs["tier"] = config.tier
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


def _make_vec_env(config: TrainConfig):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    env_id = config.env.id
    # Subprocess workers import nothing by themselves: the module prefix registers the cells there.
    make_id = env_id if ":" in env_id or config.env.n_envs == 1 else f"skillcell:{env_id}"
    return make_vec_env(make_id, n_envs=config.env.n_envs, seed=config.seed,
                        vec_env_cls=SubprocVecEnv if config.env.n_envs > 1 else DummyVecEnv,
                        env_kwargs=_env_kwargs(config.env))


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


def _detect_algorithm(path: Path) -> str:
    from skillcell.policies.export import detect_algorithm

    algo = detect_algorithm(path)
    if algo not in ("ppo", "sac"):
        raise ValueError(f"{path}: not a PPO or SAC model ({algo}); pass --algo")
    return algo


def load_model(path: str | Path, algo: str = "auto", vecnormalize: str | Path | None = None):
    """Loads a PPO or SAC ``.zip`` (and a `VecNormalize` pickle) for evaluation; ``(model, vec_normalize)``.

    SB3 zips and VecNormalize files are unpickled when loaded, which runs their code: trusted files only.
    """
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import VecNormalize

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    algo = _detect_algorithm(path) if algo == "auto" else algo.lower()
    if algo not in ("ppo", "sac"):
        raise ValueError(f"--algo must be ppo, sac or auto, got {algo!r}")
    model = (PPO if algo == "ppo" else SAC).load(path, device="cpu")
    vn = None
    if vecnormalize is not None:
        import pickle

        with open(vecnormalize, "rb") as f:
            vn = pickle.load(f)  # trusted files only (see the docstring)
        if not isinstance(vn, VecNormalize):
            raise ValueError(f"{vecnormalize}: expected a pickled VecNormalize, got {type(vn).__name__}")
        vn.training = False
    return model, vn


def evaluate_model(model, env, episodes: int, seed: int, vec_normalize=None, progress: bool = False):
    """`skillcell.evaluation.run_episodes` with ``model.predict(..., deterministic=True)``.

    Observations go through ``vec_normalize`` (default: the model's own env's, if it has one).
    """
    from skillcell.evaluation import run_episodes

    vn = vec_normalize if vec_normalize is not None else model.get_vec_normalize_env()

    def policy(obs: np.ndarray) -> np.ndarray:
        o = vn.normalize_obs(np.asarray(obs, np.float32)) if vn is not None else obs
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


def train(config: TrainConfig, out: str | Path | None = None, *, overwrite: bool = False,
          log=print) -> TrainResult:
    """Runs ``config`` into the run directory ``out`` (default ``config.out``); see the module docstring."""
    import torch as th

    from skillcell.policies.bc import behaviour_clone, demo_vec_normalize, expert_demos, load_demos
    from skillcell.policies.finetune import BCRegularizer, CriticWarmup

    start = time.perf_counter()
    run_dir = Path(out if out is not None else config.out)
    if (run_dir / "metrics.csv").exists() and not overwrite:
        raise FileExistsError(f"{run_dir} already holds a run (metrics.csv); choose another out or pass --overwrite")
    if config.torch_threads > 0:
        # SB3's small networks on a few cores: one thread per process beats contended intra-op threads.
        th.set_num_threads(config.torch_threads)
    env_kwargs = _env_kwargs(config.env)
    eval_env = _make_env(config.env.id, env_kwargs)  # checks the cell overrides before anything is written
    kpi_keys = list(eval_env.unwrapped.kpi_keys)
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

    if overwrite:
        # Nothing of the previous run may survive to be mistaken for this one's (eval picks up a
        # vecnormalize.pkl next to the model by itself).
        stale = [run_dir / n for n in ("metrics.csv", "model.zip", "bc_model.zip", "vecnormalize.pkl", "summary.yaml")]
        for old in [*stale, *(run_dir / "checkpoints").glob("model_*.zip")]:
            old.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / "config.yaml", ("# skillcell train: the config as run\n" + config_to_yaml(config)).encode())

    venv = _make_vec_env(config)
    vec_normalize = None
    if config.env.obs_norm == "demos":
        venv = vec_normalize = demo_vec_normalize(venv, demos, std_floor=config.env.obs_std_floor)
        _save_vec_normalize(vec_normalize, run_dir / "vecnormalize.pkl")
    use_demo_buffer = config.rl.algo == "sac" and demos is not None and config.rl.sac.demo_ratio > 0
    model = build_model(config, venv, demo_buffer=use_demo_buffer)
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(str(run_dir / "sb3"), ["csv"]))

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

    if use_demo_buffer:
        model.replay_buffer.add_demos(demos, scale_action=model.policy.scale_action)
    callbacks: list[BaseCallback] = []
    if config.eval.every_steps > 0:
        callbacks.append(EvaluateEvery(config.eval.every_steps, lambda steps: evaluate(steps, "rl")))
    f = config.finetune
    if bc_result is not None and f.critic_warmup_steps > 0:
        callbacks.append(CriticWarmup(f.critic_warmup_steps))
    if bc_result is not None and f.bc_weight > 0:
        callbacks.append(BCRegularizer(demos, weight=f.bc_weight, half_life=f.bc_half_life_steps,
                                       steps_per_1k=f.bc_steps_per_1k, batch_size=f.bc_batch_size,
                                       learning_rate=f.bc_learning_rate, seed=config.seed))
    if config.rl.steps > 0:
        model.learn(config.rl.steps, callback=callbacks, progress_bar=config.progress)
        if not rows or rows[-1]["env_steps"] != model.num_timesteps:
            evaluate(model.num_timesteps, "rl")
    save_model(model, run_dir / "model.zip")

    wall = time.perf_counter() - start
    final = rows[-1]
    summary = {
        "env_id": config.env.id, "algorithm": config.rl.algo, "env_steps": int(model.num_timesteps),
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
        "final_eval": {k: _none_if_nan(v) if isinstance(v, float) else v for k, v in final.items()},
        "steps_to_90pct_success": _none_if_nan(steps_to_success(rows, 0.9)),
    }
    _atomic_write(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=False).encode())
    eval_env.close()
    venv.close()
    log(f"run directory {run_dir}: model.zip, metrics.csv ({len(rows)} evaluations), {wall:.0f} s")
    return TrainResult(run_dir, model, bc_result, rows, wall)


def _none_if_nan(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
