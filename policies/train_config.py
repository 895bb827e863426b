"""The config of a training run: `TrainConfig`, its sections, and their strict loading.

`TrainConfig` is the YAML config of a run (``examples/train_*.yaml``), loaded strictly by
`load_train_config`: an unknown or mistyped key is a `ConfigError` that names it, and each
section checks what its keys mean together in ``__post_init__``. The run itself
(`skillcell.policies.train`) reads nothing but this schema; `skillcell.policies.rundir` writes
the config as run next to its results.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, merge, quote, to_mapping

__all__ = [
    "BCConfig",
    "CurriculumStage",
    "DaggerConfig",
    "DemosConfig",
    "EnvConfig",
    "EvalConfig",
    "FinetuneConfig",
    "ForcePenaltyConfig",
    "PPOConfig",
    "RLConfig",
    "ResidualConfig",
    "SACConfig",
    "TrainConfig",
    "config_to_yaml",
    "load_train_config",
]


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

    def gym_kwargs(self, tier: str | None = None) -> dict[str, Any]:
        """``gym.make`` keywords of the cell at ``tier`` (None: the cell's default tier)."""
        kwargs: dict[str, Any] = {}
        if tier is not None:
            kwargs["tier"] = tier
        if not self.randomize:
            kwargs["randomize"] = False
        if self.cell is not None:
            kwargs["cell"] = self.cell
        if self.overrides:
            kwargs["overrides"] = self.overrides
        return kwargs


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
