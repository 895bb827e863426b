"""Training runs: demonstrations -> behaviour cloning -> DAgger -> RL -> evaluation, into a run directory.

The config schema is `skillcell.policies.train_config` (`TrainConfig`, `load_train_config`); the run
directory's layout is `skillcell.policies.rundir.RunDir`. `train` runs a config as named stages,
each returning a typed record that the later stages and the summary read:

1. **demos** (`DemosRecord`): the cell's scripted expert recorded in memory (``demos.source:
   expert``), or a `skillcell.demos` dataset folder (``dataset``), optionally filtered by skill
   score, with a held-out split; or none (RL from scratch);
2. **bc** (`skillcell.policies.bc.BCResult`): behaviour cloning of the SB3 policy's actor, if
   ``bc.enabled``;
3. **dagger** (`DaggerRecord`): ``dagger`` rounds if configured (`skillcell.policies.dagger`);
4. **rl** (`RLRecord`): SB3 PPO or SAC from that start (`skillcell.policies.finetune`: critic
   warm-up, a decaying BC term, and for SAC a replay buffer that mixes the demonstrations into
   every batch). With ``bc.enabled: false`` the same code path is plain RL from scratch; with
   ``residual`` RL trains a bounded residual on a frozen base instead (`skillcell.policies.residual`).
   The training envs run at ``env.tier`` or through ``env.curriculum``, with the optional force
   term and observation history (`skillcell.policies.train_env`);
5. **evaluate** (`Evaluation`, one ``metrics.csv`` row each): on a fixed set of episode seeds after
   BC (env step 0), after every DAgger round, every ``eval.every_steps`` env steps, and at the end,
   at the last training tier;
6. **write**: the final model and ``summary.yaml``.

Everything that can fail on bad input (the cell, its overrides, a residual's base, DAgger's
expert, the demonstrations) is checked before the run directory is touched, so a mistake never
costs the previous run. Observation normalization: skillcell observations are already scaled to
about unit range, so the default (``env.obs_norm: none``) feeds them as they are to BC and RL
alike. ``demos`` wraps the env in a `VecNormalize` frozen at the demonstrations' statistics,
which BC and RL then both use (`skillcell.policies.bc.demo_vec_normalize`); on PegInsert it
generalized worse (held-out action error 0.0038 against 0.0006 with 20 demonstrations), so it is
not the default.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

import skillcell
from skillcell.config import ConfigError, quote
from skillcell.evaluation import RolloutSummary, run_episodes
from skillcell.paths import sha256_file
from skillcell.policies.bc import (
    BCResult,
    DemoTransitions,
    behaviour_clone,
    demo_vec_normalize,
    expert_demos,
    load_demos,
)
from skillcell.policies.dagger import DaggerRound, dagger, history_transitions
from skillcell.policies.frozen import frozen_policy, is_scripted
from skillcell.policies.residual import zero_action_head
from skillcell.policies.rundir import RunDir, steps_to_success
from skillcell.policies.train_config import TrainConfig, config_to_yaml
from skillcell.policies.train_env import TrainEnvSpec

__all__ = [
    "DaggerRecord",
    "DemosRecord",
    "EvaluateEvery",
    "Evaluation",
    "RLRecord",
    "TrainResult",
    "build_model",
    "evaluate_model",
    "train",
]


# ---------------------------------------------------------------------- models


def _make_env(env_id: str, env_kwargs: dict[str, Any]):
    if env_id not in skillcell.skillcell_env_ids():
        raise ConfigError(f"env.id: unknown env {quote(env_id)}; "
                          f"registered: {', '.join(skillcell.skillcell_env_ids())}")
    try:
        return gym.make(env_id, **env_kwargs)
    except ConfigError as exc:
        raise ConfigError(f"env.overrides: {exc}") from None


def _train_env_spec(config: TrainConfig, trusted: bool = False):
    """The `TrainEnvSpec` of the RL envs (a residual on a ``bc`` base gets its base once it is trained)."""
    kwargs = config.env.gym_kwargs()
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
    if normalize is None and model.get_vec_normalize_env() is not None:
        normalize = model.get_vec_normalize_env().normalize_obs

    def policy(obs: np.ndarray) -> np.ndarray:
        o = normalize(np.asarray(obs, np.float32)) if normalize is not None else obs
        return model.predict(o, deterministic=True)[0]

    return run_episodes(env, policy, episodes, seed=seed, progress=progress)


# ---------------------------------------------------------------------- stage records


@dataclass
class DemosRecord:
    """The demonstrations stage: what BC trains on and what it is checked against (None: no demos)."""

    demos: DemoTransitions | None = None
    heldout: DemoTransitions | None = None

    def summary(self, trained_on: DemoTransitions | None = None) -> dict[str, Any] | None:
        """``trained_on``: what BC ended on (DAgger's aggregate; default the demonstrations)."""
        if self.demos is None:
            return None
        trained_on = trained_on if trained_on is not None else self.demos
        return {"episodes": trained_on.n_episodes, "steps": len(trained_on),
                "heldout_episodes": 0 if self.heldout is None else self.heldout.n_episodes}


@dataclass
class DaggerRecord:
    """The DAgger stage: its rounds and the aggregate BC (and the BC regularizer) learned from."""

    rounds: list[DaggerRound] = field(default_factory=list)
    aggregate: DemoTransitions | None = None

    @property
    def env_steps(self) -> int:
        return sum(r.steps for r in self.rounds)

    def summary(self) -> list[dict[str, Any]] | None:
        return [{"round": r.round, "beta": r.beta, "episodes": r.episodes, "env_steps": r.steps,
                 "expert_executed_fraction": r.expert_executed_fraction,
                 "rollout_success_rate": r.learner_success_rate, "aggregate_steps": r.aggregate_steps,
                 "train_action_mse_after": r.bc.train_error_after} for r in self.rounds] or None


@dataclass
class RLRecord:
    """The RL stage: the model it trained and its env steps (counted after DAgger's)."""

    model: Any
    spec: TrainEnvSpec
    step_offset: int

    @property
    def rl_env_steps(self) -> int:
        return int(self.model.num_timesteps)

    @property
    def env_steps(self) -> int:
        return self.step_offset + self.rl_env_steps


@dataclass
class Evaluation:
    """One evaluation of the model on the fixed episode seeds: a ``metrics.csv`` row."""

    phase: str
    env_steps: int
    wall_time_s: float
    rollouts: RolloutSummary
    kpi_keys: list[str]

    def row(self) -> dict[str, Any]:
        episodes = self.rollouts.episodes
        low, high = self.rollouts.success_ci95
        row = {"phase": self.phase, "env_steps": self.env_steps, "wall_time_s": self.wall_time_s,
               "episodes": len(episodes), "success_rate": self.rollouts.success_rate, "success_ci_low": low,
               "success_ci_high": high, "mean_return": float(np.mean([e.episode_return for e in episodes])),
               "mean_length": float(np.mean([e.steps for e in episodes]))}
        for key in self.kpi_keys:
            row[key] = self.rollouts.mean(key)
        return row


@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    bc: BCResult | None
    metrics: list[dict[str, Any]]
    wall_time_s: float
    demos: DemosRecord = field(default_factory=DemosRecord)
    dagger: DaggerRecord = field(default_factory=DaggerRecord)


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


# ---------------------------------------------------------------------- the stages


_METRIC_COLUMNS = ["phase", "env_steps", "wall_time_s", "episodes", "success_rate", "success_ci_low",
                   "success_ci_high", "mean_return", "mean_length"]


class _Run:
    """One training run: the state its stages share (config, run directory, envs, the model, the metrics)."""

    def __init__(self, config: TrainConfig, run: RunDir, trusted: bool, log: Callable[[str], None]):
        self.config, self.run, self.trusted, self.log = config, run, trusted, log
        self.start = time.perf_counter()
        self.spec = _train_env_spec(config, trusted)
        # checks the cell overrides (and a residual's base) before anything is written
        self.eval_env = _eval_env(config, self.spec)
        self.kpi_keys = list(self.eval_env.unwrapped.kpi_keys)
        self.dagger_env = self.dagger_expert = None
        if config.dagger is not None:
            self.dagger_env = self.spec.cell_env(self.spec.tiers[0])
            self.dagger_expert = frozen_policy(config.dagger.expert, self.dagger_env, seed=config.seed,
                                               where="dagger.expert", trusted=trusted)
        self.venv = self.model = self.metrics = None
        self.evaluations: list[Evaluation] = []

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [e.row() for e in self.evaluations]

    def close(self) -> None:
        for env in (self.eval_env, self.venv, self.dagger_env):
            if env is not None:
                env.close()

    # ------------------------------------------------------------------ 1. demonstrations

    def demos(self) -> DemosRecord:
        """Read or recorded before anything is written: a damaged dataset must not cost the previous run."""
        config, d = self.config, self.config.demos
        if d.source == "none":
            return DemosRecord()
        env_kwargs = config.env.gym_kwargs(config.env.tiers[0])
        if d.source == "expert":
            demos = expert_demos(config.env.id, d.episodes, seed=d.seed, skill=d.skill, env_kwargs=env_kwargs,
                                 min_score=d.min_score, progress=config.progress)
        else:
            demos = load_demos(d.path, min_score=d.min_score, max_episodes=d.episodes, env_id=config.env.id)
            recorded = {k: demos.env_kwargs.get(k) for k in ("cell", "overrides", "tier")}
            if recorded != {k: env_kwargs.get(k) for k in recorded}:
                self.log(f"warning: the demonstrations were recorded with {recorded}, training runs with "
                         f"{ {k: env_kwargs.get(k) for k in recorded} }: their rewards (SAC's demo buffer) and "
                         "observations may not match the training env's")
        demos, heldout = demos.split(d.holdout_fraction, seed=config.seed)
        self.log(f"demonstrations: {demos.n_episodes} episodes, {len(demos)} steps "
                 f"(success {demos.episode_success.mean():.0%})"
                 + (f"; {heldout.n_episodes} held out" if heldout is not None else ""))
        if config.env.history:
            demos = history_transitions(demos, config.env.history)
            heldout = heldout if heldout is None else history_transitions(heldout, config.env.history)
        return DemosRecord(demos, heldout)

    # ------------------------------------------------------------------ the run directory, the model

    def begin(self, demos: DemosRecord, overwrite: bool) -> None:
        """Clears a replaced run, writes the config, builds the envs, the model and the metrics log."""
        config, run = self.config, self.run
        if overwrite:
            run.clear()
        run.write_config(config_to_yaml(config))
        self.venv = _make_vec_env(config, self.spec)
        if config.env.obs_norm == "demos":
            self.venv = demo_vec_normalize(self.venv, demos.demos, std_floor=config.env.obs_std_floor)
            run.save_vec_normalize(self.venv)
        self.model = self._build_model(demo_buffer=self.demo_buffer(demos))
        self.metrics = run.metrics_log(_METRIC_COLUMNS + self.kpi_keys)

    def demo_buffer(self, demos: DemosRecord) -> bool:
        c = self.config
        return (c.rl.algo == "sac" and demos.demos is not None and c.rl.sac.demo_ratio > 0
                and c.residual is None)  # demonstrated actions are not residuals

    def _build_model(self, demo_buffer: bool):
        from stable_baselines3.common.logger import configure

        model = build_model(self.config, self.venv, demo_buffer=demo_buffer)
        model.set_logger(configure(str(self.run.sb3_log), ["csv"]))
        if self.spec.residual_base is not None:
            zero_action_head(model)
        return model

    # ------------------------------------------------------------------ 5. evaluation

    def evaluate(self, env_steps: int, phase: str) -> Evaluation:
        rollouts = evaluate_model(self.model, self.eval_env, self.config.eval.episodes, self.config.eval.seed)
        evaluation = Evaluation(phase, env_steps, time.perf_counter() - self.start, rollouts, self.kpi_keys)
        row = evaluation.row()
        self.metrics.append(row)
        self.evaluations.append(evaluation)
        if self.config.checkpoints and phase == "rl":
            RunDir.save_model(self.model, self.run.checkpoint(env_steps))
        kpi = ", ".join(f"{k} {row[k]:.3g}" for k in self.kpi_keys[:2])
        self.log(f"[{phase} {env_steps:>8d} env steps, {row['wall_time_s']:6.0f} s] success "
                 f"{rollouts.success_rate:.0%} (95% CI {row['success_ci_low']:.0%}-{row['success_ci_high']:.0%}), "
                 f"return {row['mean_return']:.1f}, {kpi}")
        return evaluation

    # ------------------------------------------------------------------ 2. behaviour cloning

    def behaviour_clone(self, demos: DemosRecord) -> BCResult | None:
        b = self.config.bc
        if not b.enabled:
            return None
        result = behaviour_clone(self.model, demos.demos, steps=b.steps, batch_size=b.batch_size,
                                 learning_rate=b.learning_rate, weight_decay=b.weight_decay, loss=b.loss,
                                 log_std=b.log_std, log_std_weight=b.log_std_weight, heldout=demos.heldout,
                                 seed=self.config.seed, progress=self.config.progress)
        self.log(result.report())
        RunDir.save_model(self.model, self.run.bc_model)
        return result

    # ------------------------------------------------------------------ 3. DAgger

    def dagger(self, demos: DemosRecord) -> DaggerRecord:
        """DAgger rounds on the behaviour-cloned model (`skillcell.policies.dagger`)."""
        config, g, b = self.config, self.config.dagger, self.config.bc
        if g is None:
            return DaggerRecord(aggregate=demos.demos)
        bc_kwargs = {"steps": g.bc_steps if g.bc_steps is not None else b.steps, "batch_size": b.batch_size,
                     "learning_rate": b.learning_rate, "weight_decay": b.weight_decay, "loss": b.loss,
                     "log_std": b.log_std, "log_std_weight": b.log_std_weight}

        def after_round(record, env_steps: int) -> None:
            self.log(f"DAgger round {record.round}: beta {record.beta:.3g}, {record.episodes} episodes, "
                     f"{record.steps} steps (expert executed {record.expert_executed_fraction:.0%}, rollout success "
                     f"{record.learner_success_rate:.0%}); aggregate {record.aggregate_steps} steps; "
                     f"{record.bc.report()}")
            self.evaluate(env_steps, "dagger")

        name = g.expert if is_scripted(g.expert) else self.dagger_expert.describe()
        rounds, aggregate = dagger(
            self.model, demos.demos, env=self.dagger_env, expert=self.dagger_expert, expert_name=name,
            rounds=g.rounds, episodes_per_round=g.episodes_per_round, beta0=g.beta0, beta_decay=g.beta_decay,
            bc_kwargs=bc_kwargs, dataset=self.run.dagger_dataset, seed=config.seed, first_episode_seed=g.seed,
            history=config.env.history, after_round=after_round, progress=config.progress)
        self.dagger_env = None  # dagger closed it
        RunDir.save_model(self.model, self.run.dagger_model)
        return DaggerRecord(rounds, aggregate)

    # ------------------------------------------------------------------ 4. RL

    def rl(self, demos: DemosRecord, bc: BCResult | None, dag: DaggerRecord) -> RLRecord:
        from skillcell.policies.curriculum import TierCurriculum
        from skillcell.policies.finetune import BCRegularizer, CriticWarmup

        config, run = self.config, self.run
        if config.residual is not None and config.residual.base == "bc":
            # The learner becomes the frozen base; RL trains a new model: the residual on top of it.
            base = run.dagger_model if dag.rounds else run.bc_model
            self.spec = dataclasses.replace(self.spec, residual_base=str(base))
            self.venv.close()
            self.eval_env.close()
            self.venv, self.eval_env = _make_vec_env(config, self.spec), _eval_env(config, self.spec)
            self.model = self._build_model(demo_buffer=False)
        if config.residual is not None:
            self._write_residual_record()
        record = RLRecord(self.model, self.spec, dag.env_steps)
        model = self.model
        if self.demo_buffer(demos):
            # SAC's demo buffer keeps the seed demonstrations: a relabelled step's reward and next state
            # belong to the executed action, not to DAgger's label.
            model.replay_buffer.add_demos(demos.demos, scale_action=model.policy.scale_action)
        callbacks: list[BaseCallback] = []
        if config.eval.every_steps > 0:
            callbacks.append(EvaluateEvery(config.eval.every_steps,
                                           lambda steps: self.evaluate(record.step_offset + steps, "rl")))
        if len(self.spec.tiers) > 1:
            callbacks.append(TierCurriculum([(s.tier, s.until_steps) for s in config.env.curriculum], log=self.log))
        f = config.finetune
        if (bc is not None or config.residual is not None) and f.critic_warmup_steps > 0:
            callbacks.append(CriticWarmup(f.critic_warmup_steps))
        if bc is not None and f.bc_weight > 0:
            callbacks.append(BCRegularizer(dag.aggregate, weight=f.bc_weight, half_life=f.bc_half_life_steps,
                                           steps_per_1k=f.bc_steps_per_1k, batch_size=f.bc_batch_size,
                                           learning_rate=f.bc_learning_rate, seed=config.seed))
        if config.rl.steps > 0:
            model.learn(config.rl.steps, callback=callbacks, progress_bar=config.progress)
            if self.evaluations[-1].env_steps != record.env_steps:
                self.evaluate(record.env_steps, "rl")
        return record

    def _write_residual_record(self) -> None:
        """``residual.yaml``: what model.zip is a residual of (`skillcell.policies.residual.ResidualRun`);
        a base inside the run directory is named relative to it, so the run can move."""
        base, sha = self.spec.residual_base, None
        if not is_scripted(base):
            sha, base = sha256_file(base), self.run.relative(base)
        self.run.write_residual_record({"base": base, "base_sha256": sha, "scale": self.spec.residual_scale,
                                        "algorithm": self.config.rl.algo, "history": self.config.env.history})

    # ------------------------------------------------------------------ 6. write

    def write(self, demos: DemosRecord, bc: BCResult | None, dag: DaggerRecord, rl: RLRecord) -> float:
        """The final model and ``summary.yaml``; returns the run's wall time."""
        config, rows = self.config, self.rows
        RunDir.save_model(rl.model, self.run.model)
        wall = time.perf_counter() - self.start
        self.run.write_summary({
            "env_id": config.env.id, "algorithm": config.rl.algo, "env_steps": rl.env_steps,
            "rl_env_steps": rl.rl_env_steps, "tiers": list(rl.spec.tiers), "history": config.env.history,
            "wall_time_s": round(wall, 2),
            "demonstrations": demos.summary(dag.aggregate),
            "bc": None if bc is None else {
                "steps": bc.steps, "wall_time_s": round(bc.wall_time_s, 2),
                "train_action_mse_before": bc.train_error_before,
                "train_action_mse_after": bc.train_error_after,
                "heldout_action_mse_before": _none_if_nan(bc.heldout_error_before),
                "heldout_action_mse_after": _none_if_nan(bc.heldout_error_after)},
            "dagger": dag.summary(),
            "residual": None if config.residual is None else {"base": rl.spec.residual_base,
                                                              "scale": rl.spec.residual_scale},
            "final_eval": {k: _none_if_nan(v) if isinstance(v, float) else v for k, v in rows[-1].items()},
            "steps_to_90pct_success": _none_if_nan(steps_to_success(rows, 0.9)),
        })
        return wall


def train(config: TrainConfig, out: str | Path | None = None, *, overwrite: bool = False, trusted: bool = False,
          log=print) -> TrainResult:
    """Runs ``config`` into the run directory ``out`` (default ``config.out``); see the module docstring.

    ``trusted``: SB3 models the config names (DAgger's expert, a residual's base) are unpickled,
    which runs code from them; by default they are read as data (`skillcell.policies.loading`).
    """
    import torch as th

    run_dir = RunDir.check_new(out if out is not None else config.out, overwrite)
    if config.torch_threads > 0:
        # SB3's small networks on a few cores: one thread per process beats contended intra-op threads.
        th.set_num_threads(config.torch_threads)
    run = _Run(config, run_dir, trusted, log)
    try:
        demos = run.demos()
        run.begin(demos, overwrite)
        bc = run.behaviour_clone(demos)
        run.evaluate(0, "bc" if bc is not None else "init")
        dag = run.dagger(demos)
        rl = run.rl(demos, bc, dag)
        wall = run.write(demos, bc, dag, rl)
    finally:
        run.close()
    rows = run.rows
    log(f"run directory {run_dir}: model.zip, metrics.csv ({len(rows)} evaluations), {wall:.0f} s")
    return TrainResult(run_dir.path, rl.model, bc, rows, wall, demos, dag)


def _none_if_nan(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
