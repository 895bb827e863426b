"""The pre-hardware gate: says, with evidence, whether a policy is ready for a real robot.

``skillcell gate MODEL --env ENV_ID --out DIR`` (or `run_gate`):

1. loads the policy: a trusted SB3 ``.zip`` (PPO, SAC, A2C, TD3; optionally with its
   ``VecNormalize`` statistics), or ``scripted[:skill]`` for the cell's scripted expert;
2. exports an SB3 policy to ``DIR/policy.onnx`` (`skillcell.deploy.export`: normalization,
   clipping, unscaling and physical units in the graph) and checks **ONNX parity** against SB3's
   ``predict`` on observations from rollouts in the evaluated tiers;
3. evaluates the policy in every **tier** (``D0``, ``D1``, ``D2``; `skillcell.envs.tiers`) for
   ``episodes`` episodes with fixed seeds, with the cell's **safety envelope** checked every
   step (`skillcell.deploy.envelope`). An SB3 policy is evaluated through its exported ONNX
   file, so the artifact that goes to the robot is the one judged;
4. runs a few episodes through the **exported runner** (envelope filter and watchdog,
   `skillcell.deploy.runner`), as a hardware driver would run it;
5. compares everything with the **criteria** (``assets/gate_criteria.yaml``, the cell's
   ``criteria.yaml`` with its process KPI limits, a user's ``--criteria`` file): success lower
   95% bound per tier, zero envelope violations, no physics-invalid episodes, process KPIs,
   ONNX parity, no runner interventions;
6. writes ``DIR/gate.yaml`` (machine-readable, with the ONNX file's SHA-256) and
   ``DIR/report.md`` atomically, and exits 0 if every criterion passes, 1 otherwise, naming each
   failed criterion (2 for usage and configuration errors).

SB3 ``.zip`` and ``VecNormalize`` files are read as data, never unpickled, unless ``trusted``
(``--trust-model``) says they come from a trusted source (`skillcell.policies.loading`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import yaml

from skillcell import assets
from skillcell.atomic import atomic_write_bytes
from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, merge, quote, to_mapping
from skillcell.deploy.envelope import EnvelopeMonitor, SafetyEnvelope, load_envelope
from skillcell.deploy.export import export_run, run_parity, sb3_actions
from skillcell.deploy.runner import OnnxPolicy, PolicyRunner, RunnerStats, SimDriver, command_scale
from skillcell.envs.limits import has_limit_refs, resolve_limits
from skillcell.envs.registry import spec_of
from skillcell.evaluation import SuccessCounts
from skillcell.parallel import map_seeds, session
from skillcell.policies import make_expert
from skillcell.policies.loading import TRUST_NOTE, load_sb3_model
from skillcell.policies.residual import ResidualRun, residual_run
from skillcell.policies.rundir import RunDir
from skillcell.rollout import FunctionPolicy, Policy, Rollout, rollout

__all__ = [
    "CriterionResult",
    "EnvelopeViolations",
    "EpisodeRecord",
    "GateCriteria",
    "GatePlan",
    "GateRecord",
    "GateResult",
    "KpiCriterion",
    "KpiStats",
    "OnnxResult",
    "RunnerResult",
    "TierCriterion",
    "TierEpisodeTask",
    "TierResult",
    "check_runner",
    "evaluate_tier",
    "export_candidate",
    "judge",
    "load_criteria",
    "parity_observations",
    "plan_gate",
    "report_markdown",
    "run_gate",
    "write_gate",
]

DEFAULT_CRITERIA = assets.path("gate_criteria.yaml")
ONNX_NAME, GATE_NAME, REPORT_NAME = "policy.onnx", "gate.yaml", "report.md"


# ---------------------------------------------------------------------- criteria


@dataclass(frozen=True)
class TierCriterion:
    """A tier to evaluate and the success it must reach."""

    name: str
    min_success_lower_ci: float = field(default=0.8, metadata=bounds(0.0, 1.0))


@dataclass(frozen=True)
class KpiCriterion:
    """A process KPI limit: a final-step ``info`` value per episode, summarized over a tier."""

    key: str
    stat: Literal["mean", "max", "min", "p95", "p05"] = "mean"
    max: float | None = None
    min: float | None = None
    tiers: tuple[str, ...] = ()  # empty: every evaluated tier

    def __post_init__(self) -> None:
        if self.max is None and self.min is None:
            raise ConfigError("max: a KPI criterion needs max, min or both")


@dataclass(frozen=True)
class GateCriteria:
    """What a policy must show to pass (see ``assets/gate_criteria.yaml`` for the defaults)."""

    episodes: int = field(default=50, metadata=bounds(1, 100000))
    seed: int = field(default=0, metadata=bounds(0, 2**31 - 1))
    tiers: tuple[TierCriterion, ...] = ()
    max_envelope_violations: int = field(default=0, metadata=bounds(0, None))
    max_physics_invalid_episodes: int = field(default=0, metadata=bounds(0, None))
    onnx_parity_atol: float = field(default=1e-5, metadata=bounds(0.0, 1.0))
    parity_observations: int = field(default=256, metadata=bounds(1, 100000))
    runner_episodes: int = field(default=3, metadata=bounds(0, 1000))
    runner_tier: str = "D1"
    max_runner_interventions: int = field(default=0, metadata=bounds(0, None))
    kpis: tuple[KpiCriterion, ...] = ()

    def tier(self, name: str) -> TierCriterion | None:
        return next((t for t in self.tiers if t.name == name), None)


def _criteria_from_mapping(data: dict[str, Any]) -> GateCriteria:
    tiers_data = data.get("tiers", {})
    if not isinstance(tiers_data, dict) or not tiers_data:
        raise ConfigError(f"tiers: expected a mapping of tier name to its criteria, got {quote(tiers_data)}")
    tiers = []
    for name, section in tiers_data.items():
        section = {} if section is None else section
        if not isinstance(section, dict):
            raise ConfigError(f"tiers.{name}: expected a mapping, got {quote(section)}")
        if "name" in section:
            raise ConfigError(f"tiers.{name}.name: unknown key (the tier's name is its key)")
        tiers.append(from_mapping(TierCriterion, {"name": str(name), **section}, f"tiers.{name}"))
    criteria = from_mapping(GateCriteria, {**data, "tiers": []})
    return dataclasses.replace(criteria, tiers=tuple(tiers))


def load_criteria(cell_criteria: Path | None = None, user: str | Path | None = None,
                  overrides: dict[str, Any] | None = None, *, limits: dict[str, Any] | None = None) -> GateCriteria:
    """Packaged defaults, overlaid by the cell's ``criteria.yaml``, a user's file and ``overrides``.

    A KPI bound ``limits.<name>`` is the cell's limit of that name (``limits``: `CellEnv.limits`;
    `skillcell.envs.limits`), so the gate judges against the number the cell declares.
    """
    data: dict[str, Any] = {}
    for layer in (DEFAULT_CRITERIA, cell_criteria, user):
        if layer is not None:
            data = merge(data, load_yaml(layer))
    if overrides:
        data = merge(data, overrides)
    source = str(user) if user is not None else str(cell_criteria or DEFAULT_CRITERIA)
    try:
        if limits is not None:
            data = resolve_limits(data, limits)
        elif has_limit_refs(data):
            raise ConfigError("refers to a cell's limits (limits.<name>): load it with the cell's limits")
        return _criteria_from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"criteria ({source}): {exc}") from None


# ---------------------------------------------------------------------- records


@dataclass(frozen=True)
class KpiStats:
    """A process KPI over a tier's episodes (one final-step ``info`` value per episode)."""

    mean: float
    min: float
    max: float
    p05: float
    p95: float

    @classmethod
    def of(cls, values: np.ndarray) -> KpiStats:
        return cls(mean=float(np.mean(values)), min=float(np.min(values)), max=float(np.max(values)),
                   p05=float(np.percentile(values, 5)), p95=float(np.percentile(values, 95)))

    def stat(self, name: str) -> float:
        """The statistic a `KpiCriterion` names (``mean``, ``max``, ``min``, ``p95``, ``p05``)."""
        return getattr(self, name)


@dataclass(frozen=True)
class EnvelopeViolations:
    """One envelope limit over a tier: steps beyond it, in how many episodes, the worst value and its seed."""

    steps: int
    episodes: int
    worst: float
    worst_seed: int | None


@dataclass(frozen=True)
class EpisodeRecord:
    """One evaluated episode: outcome, process KPIs, envelope violations by limit and the tier's draws."""

    seed: int | None
    success: bool
    steps: int
    episode_return: float
    physics_invalid: bool
    kpis: dict[str, float]
    envelope_violations: dict[str, int]
    tier_draws: dict[str, Any]

    def to_mapping(self) -> dict[str, Any]:
        return {"seed": self.seed, "success": self.success, "steps": self.steps,
                "return": round(self.episode_return, 4), "physics_invalid": self.physics_invalid,
                "kpis": self.kpis, "envelope_violations": self.envelope_violations, "tier_draws": self.tier_draws}


@dataclass(frozen=True)
class TierResult(SuccessCounts):
    """A tier's evaluation: its episodes and what the verdict reads of them."""

    tier: str
    config: dict[str, Any]  # the tier's randomization, as it ran
    seeds: tuple[int, int]  # first and last
    episodes: tuple[EpisodeRecord, ...]
    non_finite_actions: int
    kpis: dict[str, KpiStats]
    envelope_violations: dict[str, EnvelopeViolations]
    steps_per_second: float | None

    @property
    def physics_invalid_episodes(self) -> int:
        return sum(e.physics_invalid for e in self.episodes)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "config": self.config,
            "episodes": len(self.episodes),
            "seeds": list(self.seeds),
            "successes": self.successes,
            "success_rate": self.success_rate,
            "success_ci95": list(self.success_ci95),
            "physics_invalid_episodes": self.physics_invalid_episodes,
            "non_finite_actions": self.non_finite_actions,
            "kpis": {k: dataclasses.asdict(s) for k, s in self.kpis.items()},
            "envelope_violations": {k: dataclasses.asdict(v) for k, v in self.envelope_violations.items()},
            "steps_per_second": self.steps_per_second,
            "episode_log": [e.to_mapping() for e in self.episodes],
        }


@dataclass(frozen=True)
class OnnxResult:
    """The exported policy file and its parity with the Python policy it came from."""

    file: str
    sha256: str
    metadata: dict[str, str]
    action_max_abs_diff: float
    command_max_abs_diff: float
    observations: int

    def to_mapping(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "metadata": self.metadata,
                "parity": {"action_max_abs_diff": self.action_max_abs_diff,
                           "command_max_abs_diff": self.command_max_abs_diff, "observations": self.observations}}


@dataclass(frozen=True)
class RunnerResult:
    """Episodes through the exported runner (envelope filter, watchdog) and its counts over them."""

    tier: str
    episodes: int
    successes: int
    stats: RunnerStats

    @property
    def interventions(self) -> int:
        return sum(self.stats.interventions.values())

    def to_mapping(self) -> dict[str, Any]:
        return {"tier": self.tier, "episodes": self.episodes, "successes": self.successes, **self.stats.to_mapping()}


@dataclass
class CriterionResult:
    """One criterion's verdict: ``passed`` is None where it does not apply (say why in ``detail``)."""

    name: str
    passed: bool | None
    detail: str

    def to_mapping(self) -> dict[str, Any]:
        return {"name": self.name, "status": {True: "pass", False: "fail", None: "n/a"}[self.passed],
                "detail": self.detail}


@dataclass
class GateRecord:
    """Everything the gate found, typed; `to_mapping` is ``gate.yaml``, `report_markdown` the report."""

    env_id: str
    cell: str
    env_kwargs: dict[str, Any]
    model: dict[str, Any]  # the candidate's provenance (`skillcell.policies.loading.LoadedModel.provenance`)
    onnx: OnnxResult | None
    criteria: GateCriteria
    envelope: SafetyEnvelope
    envelope_source: str
    results: list[CriterionResult]
    tiers: dict[str, TierResult]
    runner: RunnerResult | None
    versions: dict[str, str]
    created_utc: str

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.passed is False]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def complete(self) -> bool:
        """Whether every tier of the criteria was evaluated."""
        return len(self.tiers) == len(self.criteria.tiers)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "skillcell_gate": 1,
            "verdict": "pass" if self.passed else "fail",
            "passed": self.passed,
            "complete": self.complete,
            "failed": self.failed,
            "created_utc": self.created_utc,
            "env_id": self.env_id,
            "cell": self.cell,
            "env_kwargs": self.env_kwargs,
            "model": self.model,
            "trust": TRUST_NOTE,
            "onnx": self.onnx.to_mapping() if self.onnx else None,
            "criteria": {**to_mapping(self.criteria),
                         "tiers": {t.name: {"min_success_lower_ci": t.min_success_lower_ci}
                                   for t in self.criteria.tiers}},
            "envelope": {"source": self.envelope_source, **self.envelope.to_mapping()},
            "results": [r.to_mapping() for r in self.results],
            "tiers": {name: t.to_mapping() for name, t in self.tiers.items()},
            "runner": self.runner.to_mapping() if self.runner else None,
            "versions": self.versions,
        }


@dataclass
class GateResult:
    """The gate's outcome: the verdict, the typed `GateRecord` and ``record``, what ``gate.yaml`` holds."""

    gate: GateRecord
    record: dict[str, Any]
    out_dir: Path

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def failed(self) -> list[str]:
        return self.gate.failed

    @property
    def results(self) -> list[CriterionResult]:
        return self.gate.results

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


# ---------------------------------------------------------------------- candidates


class _Candidate:
    """The policy under test, as an env policy (normalized action) and a runner command source."""

    kind: str
    onnx_sha256: str | None = None

    def policy(self, env) -> Policy:
        raise NotImplementedError

    def command_source(self, env) -> Policy:
        """The policy's physical command (the runner's input) rather than its normalized action."""
        policy = self.policy(env)
        scale = command_scale(env)
        return FunctionPolicy(lambda obs: np.asarray(policy(obs), dtype=np.float64) * scale, reset=policy.reset)


class _ScriptedCandidate(_Candidate):
    kind = "scripted"

    def __init__(self, skill: str, seed: int):
        self.skill, self.seed = skill, seed
        self.source = _ScriptedSource(skill, seed)

    def policy(self, env):
        return make_expert(env, skill=self.skill, seed=self.seed)

    def provenance(self) -> dict[str, Any]:
        return {"kind": "scripted", "skill": self.skill}


class _OnnxCandidate(_Candidate):
    kind = "sb3"

    def __init__(self, loaded, onnx_path: Path, sha256: str):
        self.loaded = loaded
        self.onnx = OnnxPolicy(onnx_path, expected_sha256=sha256)
        self.onnx_sha256 = sha256
        self.source = _OnnxSource(str(onnx_path), sha256)

    def policy(self, env):
        return self.onnx

    def command_source(self, env):
        return FunctionPolicy(self.onnx.command, reset=self.onnx.reset)

    def provenance(self) -> dict[str, Any]:
        return self.loaded.provenance()


@dataclass(frozen=True)
class _ScriptedSource:
    """The scripted candidate as a worker builds it: an expert per episode (`ScriptedExpert.for_episode`)."""

    skill: str
    seed: int

    def setup(self) -> None:
        return None

    def policy(self, state: None, env, seed: int) -> Policy:
        return spec_of(env).expert.for_episode(env, self.skill, self.seed, seed)


@dataclass(frozen=True)
class _OnnxSource:
    """The exported candidate as a worker loads it: the ONNX file the gate judges, checked by its SHA-256."""

    path: str
    sha256: str

    def setup(self) -> OnnxPolicy:
        return OnnxPolicy(self.path, expected_sha256=self.sha256)

    def policy(self, state: OnnxPolicy, env, seed: int) -> Policy:
        return state


# ---------------------------------------------------------------------- criteria -> plan


@dataclass(frozen=True)
class GatePlan:
    """What the gate will judge against, checked before minutes of evaluation."""

    criteria: GateCriteria
    envelope: SafetyEnvelope
    envelope_source: str
    evaluated: tuple[str, ...]  # the criteria's tiers, or the ``tiers`` asked for
    cell: str


def _make_env(env_id: str, tier: str, env_kwargs: dict[str, Any]):
    try:
        return gym.make(env_id, tier=tier, **env_kwargs)
    except TypeError as exc:
        if "tier" in str(exc):
            raise ConfigError(f"tier: {env_id} does not accept tier= yet (its env needs a tier argument "
                              "passed on to CellEnv and a cell_dir; see skillcell.envs.tiers)") from None
        raise


def plan_gate(env_id: str, env_kwargs: dict[str, Any], *, criteria: GateCriteria | None = None,
              criteria_file: str | Path | None = None, criteria_overrides: dict[str, Any] | None = None,
              tiers: list[str] | None = None, envelope_file: str | Path | None = None) -> GatePlan:
    """The criteria (defaults, the cell's, a user's), the envelope and the tiers to evaluate, each
    checked against the cell: every KPI key is an ``info`` key, every tier exists."""
    probe = _make_env(env_id, "D1", env_kwargs)  # every cell has D1 (its default randomization)
    try:
        u = probe.unwrapped
        if criteria is None:
            criteria = load_criteria(u.cell_file("criteria.yaml"), criteria_file, criteria_overrides, limits=u.limits)
        envelope = load_envelope(probe) if envelope_file is None else load_envelope(envelope_file, env=probe)
        envelope.validate_for(probe)
        _, reset_info = probe.reset(seed=criteria.seed)
        for i, kc in enumerate(criteria.kpis):
            if kc.key not in reset_info:
                raise ConfigError(f"kpis[{i}].key: {quote(kc.key)} is not an info key of {type(u).__name__} "
                                  f"(its KPIs: {', '.join(u.kpi_keys)})")
        cell = type(u).__name__
    finally:
        probe.close()
    declared = [t.name for t in criteria.tiers]
    if tiers is not None:
        unknown = [t for t in tiers if t not in declared]
        if unknown:
            raise ConfigError(f"tiers: {', '.join(unknown)} not in the criteria's tiers ({', '.join(declared)})")
    evaluated = tuple(t for t in declared if tiers is None or t in tiers)
    needed = evaluated + ((criteria.runner_tier,) if criteria.runner_episodes else ())
    for tier in dict.fromkeys(needed):  # every tier must exist before minutes of evaluation
        _make_env(env_id, tier, env_kwargs).close()
    return GatePlan(criteria, envelope, str(envelope_file) if envelope_file else "cell envelope.yaml", evaluated,
                    cell)


# ---------------------------------------------------------------------- evaluate


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _worse(limit: str, value: float, than: float) -> bool:
    # Clearance is a lower bound (smaller is worse); every other limit is an upper bound.
    return value < than if limit == "tool_clearance" else value > than


def _envelope_violations(episodes: list[EpisodeRecord],
                         worst_values: list[dict[str, float]]) -> dict[str, EnvelopeViolations]:
    steps: dict[str, int] = {}
    count: dict[str, int] = {}
    worst: dict[str, tuple[float, int | None]] = {}
    for episode, episode_worst in zip(episodes, worst_values, strict=True):
        for limit, n in episode.envelope_violations.items():
            steps[limit] = steps.get(limit, 0) + n
            count[limit] = count.get(limit, 0) + 1
            value = episode_worst[limit]
            if limit not in worst or _worse(limit, value, worst[limit][0]):
                worst[limit] = (value, episode.seed)
    return {k: EnvelopeViolations(steps[k], count[k], *worst[k]) for k in sorted(steps)}


@dataclass(frozen=True)
class _TierEpisode:
    """A tier's episode as a worker returns it: the record, the envelope's worst values, malformed actions."""

    record: EpisodeRecord
    envelope_worst: dict[str, float]
    non_finite_actions: int


@dataclass(frozen=True)
class TierEpisodeTask:
    """`skillcell.parallel.SeedTask`: one gate episode of a candidate in a tier, the envelope checked every step."""

    env_id: str
    tier: str
    env_kwargs: dict[str, Any]
    envelope: SafetyEnvelope
    source: _ScriptedSource | _OnnxSource
    kpi_keys: tuple[str, ...]

    def setup(self) -> tuple[EnvelopeMonitor, Any]:
        env = EnvelopeMonitor(_make_env(self.env_id, self.tier, self.env_kwargs), self.envelope)
        try:
            return env, self.source.setup()
        except BaseException:
            env.close()
            raise

    def run(self, state: tuple[EnvelopeMonitor, Any], seed: int) -> _TierEpisode:
        env, built = state
        u = env.unwrapped
        policy = self.source.policy(built, env, seed)
        bad_actions = [0]

        def guarded(obs: np.ndarray) -> np.ndarray:
            # A diverged network can output NaN; the env would raise. Count it, and apply no
            # motion instead (what the runner's envelope filter does), so the evaluation goes on.
            action = np.asarray(policy(obs), dtype=np.float64)
            if action.shape != u.action_space.shape or not np.isfinite(action).all():
                bad_actions[0] += 1
                return np.zeros(u.action_space.shape)
            return action

        draws: dict[str, Any] = {}

        def record_draws(step) -> None:
            if step.index == 0:  # the env was just reset: the tier's draws for the episode, as evidence
                sample = u.tier_sample
                draws.update({"friction_scale": round(float(sample.friction_scale), 4),
                              "mass_scale": [round(float(x), 4) for x in sample.mass_scale],
                              "ft_bias": [round(float(x), 4) for x in sample.ft_bias],
                              "latency_steps": int(sample.latency_steps)})

        e = rollout(env, FunctionPolicy(guarded, reset=policy.reset), seed=seed, on_step=record_draws)
        info = e.final_info
        violations = {k: int(v) for k, v in info.get("envelope_violations", {}).items()}
        record = EpisodeRecord(
            seed=e.seed, success=e.success, steps=e.steps, episode_return=e.episode_return,
            physics_invalid=bool(info.get("physics_invalid")) or bool(info.get("instability")),
            kpis={k: float(info[k]) for k in self.kpi_keys if k in info},
            envelope_violations=violations, tier_draws=draws)
        return _TierEpisode(record, {k: float(info["envelope_worst"][k]) for k in violations}, bad_actions[0])

    def close(self, state: tuple[EnvelopeMonitor, Any]) -> None:
        state[0].close()


def evaluate_tier(env_id: str, tier: str, env_kwargs: dict[str, Any], envelope: SafetyEnvelope, candidate,
                  criteria: GateCriteria, progress: bool = False, *, workers: int | None = 1,
                  address: str | None = None) -> TierResult:
    """``criteria.episodes`` seeded episodes of ``candidate`` in ``tier``, the envelope checked every step.

    ``workers``, ``address``: the episodes spread by seed (`skillcell.parallel.map_seeds`); the
    result is the same for any worker count.
    """
    probe = _make_env(env_id, tier, env_kwargs)
    try:
        u = probe.unwrapped
        kpi_keys = tuple(sorted({c.key for c in criteria.kpis} | set(u.kpi_keys)))
        config = {"source": u.tier.source, **to_mapping(u.tier.config)}
    finally:
        probe.close()
    task = TierEpisodeTask(env_id, tier, dict(env_kwargs), envelope, candidate.source, kpi_keys)
    start = time.perf_counter()
    done = map_seeds(task, range(criteria.seed, criteria.seed + criteria.episodes), workers=workers,
                     address=address, progress=progress, desc=tier, check=False)  # plan_gate checked the input
    wall = time.perf_counter() - start
    episodes = [d.record for d in done]
    kpis = {}
    for key in kpi_keys:
        values = np.array([ep.kpis[key] for ep in episodes if key in ep.kpis], dtype=float)
        if values.size:
            kpis[key] = KpiStats.of(values)
    steps = sum(ep.steps for ep in episodes)
    return TierResult(tier=tier, config=config, seeds=(criteria.seed, criteria.seed + criteria.episodes - 1),
                      episodes=tuple(episodes), non_finite_actions=sum(d.non_finite_actions for d in done),
                      kpis=kpis, envelope_violations=_envelope_violations(episodes, [d.envelope_worst for d in done]),
                      steps_per_second=_finite(steps / wall) if wall > 0 else None)


def parity_observations(env_id: str, tiers: Sequence[str], env_kwargs: dict[str, Any], loaded, n: int) -> np.ndarray:
    """Observations from rollouts of the SB3 policy (or residual run) itself, spread over the evaluated tiers."""
    obs_list: list[np.ndarray] = []
    per_tier = max(1, math.ceil(n / len(tiers)))
    for k, tier in enumerate(tiers):
        env = _make_env(env_id, tier, env_kwargs)

        def act(obs: np.ndarray, env=env) -> np.ndarray:
            action = (loaded.actions(env, obs[None]) if isinstance(loaded, ResidualRun)
                      else sb3_actions(loaded, obs[None]))[0]
            # judged by the parity and finite-action criteria
            return action if np.isfinite(action).all() else np.zeros_like(action)

        try:
            seed, kept = 10_000 + k, []
            while len(kept) < per_tier:  # episodes after the first continue the env's seeding
                for step in Rollout(env, act, seed=seed):
                    if step.done or len(kept) == per_tier:
                        break
                    kept.append(step.obs)
                seed = None
            obs_list += kept
        finally:
            env.close()
    return np.array(obs_list[:n], dtype=np.float32)


def export_candidate(what: str, env_id: str, plan: GatePlan, env_kwargs: dict[str, Any], out_dir: Path, *,
                     algorithm: str, vecnormalize: str | Path | None, trusted: bool,
                     log: Callable[[str], None]) -> tuple[_OnnxCandidate, OnnxResult]:
    """Loads the SB3 model (a residual run with its base), exports it to ``out_dir/policy.onnx`` and
    measures parity; the candidate is then the exported file."""
    log(f"loading {what}" + (" (trusted: unpickled)" if trusted else " (as data, nothing unpickled)"))
    try:
        # a model of a training run: the run's observation normalization unless another is named
        vecnormalize = vecnormalize if vecnormalize is not None else RunDir.vecnormalize_of(what)
        loaded = load_sb3_model(what, algorithm=algorithm, trusted=trusted, vecnormalize=vecnormalize)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    loaded = residual_run(loaded, trusted) or loaded  # a residual run: base + residual are the policy
    export_env = _make_env(env_id, plan.evaluated[0], env_kwargs)
    try:
        try:
            exported = export_run(loaded, export_env, out_dir / ONNX_NAME, env_id=env_id)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        log(f"exported {exported.path} (sha256 {exported.sha256})")
        obs = parity_observations(env_id, plan.evaluated, env_kwargs, loaded, plan.criteria.parity_observations)
        parity = run_parity(loaded, exported.path, obs, export_env)
    finally:
        export_env.close()
    onnx = OnnxResult(ONNX_NAME, exported.sha256, exported.metadata, parity["action_max_abs_diff"],
                      parity["command_max_abs_diff"], parity["observations"])
    return _OnnxCandidate(loaded, exported.path, exported.sha256), onnx


def check_runner(env_id: str, env_kwargs: dict[str, Any], envelope: SafetyEnvelope, candidate,
                 criteria: GateCriteria) -> RunnerResult:
    """Episodes through `PolicyRunner` + `SimDriver`: the deployment path, filter and watchdog on."""
    env = EnvelopeMonitor(_make_env(env_id, criteria.runner_tier, env_kwargs), envelope)
    total = RunnerStats()
    successes = 0
    try:
        source = candidate.command_source(env)
        max_steps = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
        for i in range(criteria.runner_episodes):
            driver = SimDriver(env)
            driver.reset(seed=criteria.seed + i)
            source.reset()
            runner = PolicyRunner(driver, envelope, command_size=env.action_space.shape[0])
            total.add(runner.run(source, steps=max_steps + 1, done=lambda d=driver: d.done))
            successes += bool(driver.info.get("is_success", False))
    finally:
        env.close()
    return RunnerResult(criteria.runner_tier, criteria.runner_episodes, successes, total)


# ---------------------------------------------------------------------- verdict


def _success_results(criteria: GateCriteria, tiers: dict[str, TierResult]) -> list[CriterionResult]:
    out = []
    for tc in criteria.tiers:
        t = tiers.get(tc.name)
        if t is None:
            out.append(CriterionResult(f"{tc.name}.success", None, "tier not evaluated (--tiers)"))
            continue
        low, high = t.success_ci95
        out.append(CriterionResult(
            f"{tc.name}.success", low >= tc.min_success_lower_ci,
            f"{t.successes}/{len(t.episodes)} = {t.success_rate:.1%}, 95% CI [{low:.3f}, {high:.3f}]; "
            f"lower bound must be >= {tc.min_success_lower_ci}"))
    return out


def _envelope_results(criteria: GateCriteria, tiers: dict[str, TierResult],
                      envelope: SafetyEnvelope) -> list[CriterionResult]:
    out = []
    for limit in envelope.active_limits:
        found = {name: v for name, t in tiers.items() if (v := t.envelope_violations.get(limit))}
        steps = sum(v.steps for v in found.values())
        if steps:
            where = "; ".join(f"{name}: {v.steps} steps in {v.episodes}/{len(tiers[name].episodes)} episodes, worst "
                              f"{v.worst:.4g} {envelope.unit(limit)} (seed {v.worst_seed})"
                              for name, v in found.items())
            detail = f"{steps} steps beyond {envelope.bound(limit)} ({where})"
        else:
            detail = f"never beyond {envelope.bound(limit)}"
        out.append(CriterionResult(f"envelope.{limit}", steps <= criteria.max_envelope_violations, detail))
    return out


def _per_tier(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _action_result(tiers: dict[str, TierResult]) -> CriterionResult:
    bad = {name: t.non_finite_actions for name, t in tiers.items()}
    return CriterionResult("policy.finite_actions", not any(bad.values()),
                           f"{sum(bad.values())} non-finite or malformed actions ({_per_tier(bad)})")


def _physics_result(criteria: GateCriteria, tiers: dict[str, TierResult]) -> CriterionResult:
    invalid = {name: t.physics_invalid_episodes for name, t in tiers.items()}
    return CriterionResult(
        "physics_validity", sum(invalid.values()) <= criteria.max_physics_invalid_episodes,
        f"{sum(invalid.values())} physics-invalid episodes ({_per_tier(invalid)}); "
        f"at most {criteria.max_physics_invalid_episodes} allowed")


def _kpi_results(criteria: GateCriteria, tiers: dict[str, TierResult]) -> list[CriterionResult]:
    out = []
    for kc in criteria.kpis:
        for name, t in tiers.items():
            if kc.tiers and name not in kc.tiers:
                continue
            stats = t.kpis.get(kc.key)
            label = f"{name}.kpi.{kc.key}"
            if stats is None:
                out.append(CriterionResult(label, False, f"no episode reported {kc.key!r}"))
                continue
            value = stats.stat(kc.stat)
            ok = (kc.max is None or value <= kc.max) and (kc.min is None or value >= kc.min)
            bound = " and ".join(b for b in (f"<= {kc.max}" if kc.max is not None else "",
                                             f">= {kc.min}" if kc.min is not None else "") if b)
            out.append(CriterionResult(label, ok, f"{kc.stat} {value:.4g}, must be {bound}"))
    return out


def _onnx_result(criteria: GateCriteria, onnx: OnnxResult | None) -> CriterionResult:
    if onnx is None:
        return CriterionResult("onnx.parity", None, "not an SB3 model: nothing to export")
    return CriterionResult(
        "onnx.parity", onnx.action_max_abs_diff <= criteria.onnx_parity_atol,
        f"max abs(onnx - sb3) = {onnx.action_max_abs_diff:.3g} on {onnx.observations} observations "
        f"(command: {onnx.command_max_abs_diff:.3g}); must be <= {criteria.onnx_parity_atol}")


def _runner_result(criteria: GateCriteria, runner: RunnerResult | None) -> CriterionResult:
    if runner is None:
        return CriterionResult("runner", None, "runner_episodes is 0")
    stats = runner.stats
    names = ", ".join(f"{k} x{v}" for k, v in stats.interventions.items()) or "none"
    return CriterionResult(
        "runner", runner.interventions <= criteria.max_runner_interventions and stats.watchdog_trips == 0,
        f"{runner.episodes} episodes in {runner.tier} through the envelope filter and watchdog: "
        f"{runner.successes} successes, {runner.interventions} filter interventions ({names}), "
        f"{stats.watchdog_trips} watchdog trips; at most {criteria.max_runner_interventions} interventions")


def judge(criteria: GateCriteria, tiers: dict[str, TierResult], envelope: SafetyEnvelope, onnx: OnnxResult | None,
          runner: RunnerResult | None) -> list[CriterionResult]:
    """Every criterion's verdict on the evaluated tiers, the export and the runner, in report order."""
    return [*_success_results(criteria, tiers), *_envelope_results(criteria, tiers, envelope),
            _action_result(tiers), _physics_result(criteria, tiers), *_kpi_results(criteria, tiers),
            _onnx_result(criteria, onnx), _runner_result(criteria, runner)]


# ---------------------------------------------------------------------- the gate


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("skillcell", "mujoco", "numpy", "gymnasium", "stable_baselines3", "torch", "onnx",
                    "onnxruntime", "onnxscript"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _parse_model(model: str | Path) -> tuple[str, str]:
    text = str(model)
    if text == "scripted" or text.startswith("scripted:"):
        return "scripted", text.partition(":")[2] or "expert"
    return "sb3", text


def run_gate(model: str | Path, env_id: str, out_dir: str | Path, *, criteria: GateCriteria | None = None,
             criteria_file: str | Path | None = None, criteria_overrides: dict[str, Any] | None = None,
             tiers: list[str] | None = None, algorithm: str = "auto", vecnormalize: str | Path | None = None,
             envelope_file: str | Path | None = None, env_kwargs: dict[str, Any] | None = None,
             trusted: bool = False, progress: bool = False, log: Callable[[str], None] | None = None,
             workers: int | None = 1, address: str | None = None) -> GateResult:
    """Runs the gate and writes ``out_dir/gate.yaml`` and ``report.md`` (and ``policy.onnx``):
    `plan_gate` (criteria), `export_candidate`, `evaluate_tier` and `check_runner` (evaluate),
    `judge` (verdict), `write_gate` (report).

    ``model``: an SB3 ``.zip`` (unpickled only when ``trusted``) or ``scripted[:skill]``. ``tiers``
    restricts the evaluated tiers to some of the criteria's (the record says the gate is then
    incomplete). Configuration mistakes raise `ConfigError`; a failing policy does not raise.
    ``workers``, ``address``: the tiers' episodes spread by seed over Ray workers
    (`skillcell.parallel`; one Ray start for every tier); the verdict is the same for any count.
    """
    log = log or (lambda _msg: None)
    env_kwargs = dict(env_kwargs or {})
    if "tier" in env_kwargs or "randomize" in env_kwargs:
        raise ConfigError("env_kwargs: the gate chooses tier and randomization itself")
    out_dir = Path(out_dir)
    kind, what = _parse_model(model)
    plan = plan_gate(env_id, env_kwargs, criteria=criteria, criteria_file=criteria_file,
                     criteria_overrides=criteria_overrides, tiers=tiers, envelope_file=envelope_file)
    criteria = plan.criteria

    onnx: OnnxResult | None = None
    candidate: _Candidate
    if kind == "sb3":
        candidate, onnx = export_candidate(what, env_id, plan, env_kwargs, out_dir, algorithm=algorithm,
                                           vecnormalize=vecnormalize, trusted=trusted, log=log)
    else:
        candidate = _ScriptedCandidate(what, criteria.seed)
    tier_results: dict[str, TierResult] = {}
    with session(workers=workers, address=address):
        for tier in plan.evaluated:
            log(f"evaluating {tier}: {criteria.episodes} episodes")
            tier_results[tier] = evaluate_tier(env_id, tier, env_kwargs, plan.envelope, candidate, criteria,
                                               progress, workers=workers, address=address)
    runner = None
    if criteria.runner_episodes:
        log(f"runner: {criteria.runner_episodes} episodes in {criteria.runner_tier}")
        runner = check_runner(env_id, env_kwargs, plan.envelope, candidate, criteria)

    gate = GateRecord(
        env_id=env_id, cell=plan.cell, env_kwargs=env_kwargs, model=candidate.provenance(), onnx=onnx,
        criteria=criteria, envelope=plan.envelope, envelope_source=plan.envelope_source,
        results=judge(criteria, tier_results, plan.envelope, onnx, runner), tiers=tier_results, runner=runner,
        versions=_versions(), created_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return GateResult(gate, write_gate(gate, out_dir), out_dir)


# ---------------------------------------------------------------------- report


def _plain(obj: Any) -> Any:
    """numpy scalars and tuples -> plain YAML types."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_gate(gate: GateRecord, out_dir: Path) -> dict[str, Any]:
    """Writes ``gate.yaml`` and ``report.md`` into ``out_dir``, atomically; returns what ``gate.yaml`` holds."""
    record = _plain(gate.to_mapping())
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / GATE_NAME, yaml.safe_dump(record, sort_keys=False).encode())
    atomic_write_bytes(out_dir / REPORT_NAME, report_markdown(gate).encode())
    return record


def _describe_model(model: dict[str, Any]) -> str:
    if model["kind"] == "scripted":
        return f"scripted {model['skill']} (no exported artifact: not a hardware candidate)"
    vn = model["vecnormalize"]
    return (f"{model['algorithm'].upper()} `{model['path']}` (SHA-256 `{model['sha256']}`)"
            + (f" with VecNormalize `{vn['path']}`" if vn else "")
            + (", loaded trusted (unpickled)" if model["trusted"] else ", read as data (nothing unpickled)")
            + (f"; a residual (scale {model['residual']['scale']}) on the base `{model['residual']['base']}` "
               f"(SHA-256 `{model['residual']['base_sha256']}`), exported as one policy" if model.get("residual")
               else ""))


def _summary_section(gate: GateRecord) -> list[str]:
    lines = [f"# Pre-hardware gate: {'PASS' if gate.passed else 'FAIL'}", "",
             f"- env: `{gate.env_id}` ({gate.cell})", f"- policy: {_describe_model(gate.model)}",
             f"- created: {gate.created_utc}"]
    if gate.onnx:
        lines.append(f"- exported: `{gate.onnx.file}`, SHA-256 `{gate.onnx.sha256}`")
    if not gate.complete:
        lines.append("- **incomplete**: not every tier of the criteria was evaluated")
    if gate.failed:
        lines.append(f"- failed: {', '.join(gate.failed)}")
    return lines


def _criteria_section(gate: GateRecord) -> list[str]:
    lines = ["## Criteria", "", "| criterion | result | evidence |", "|---|---|---|"]
    for r in gate.results:
        lines.append(f"| {r.name} | {({True: 'pass', False: '**FAIL**', None: 'n/a'})[r.passed]} | {r.detail} |")
    return lines


def _tiers_section(gate: GateRecord) -> list[str]:
    lines = ["## Tiers", "", "| tier | episodes | success | 95% CI | physics-invalid | envelope violations |",
             "|---|---|---|---|---|---|"]
    for name, t in gate.tiers.items():
        low, high = t.success_ci95
        violations = ", ".join(f"{k}: {v.steps}" for k, v in t.envelope_violations.items()) or "none"
        lines.append(f"| {name} | {len(t.episodes)} | {t.success_rate:.1%} | {low:.3f}-{high:.3f} | "
                     f"{t.physics_invalid_episodes} | {violations} |")
    return lines


def _kpi_section(gate: GateRecord) -> list[str]:
    keys = sorted({k for t in gate.tiers.values() for k in t.kpis})
    if not keys:
        return []
    lines = ["## Process KPIs (mean / p95 / max over episodes)", "",
             "| KPI | " + " | ".join(gate.tiers) + " |", "|---|" + "---|" * len(gate.tiers)]
    for key in keys:
        cells = [f"{s.mean:.3g} / {s.p95:.3g} / {s.max:.3g}" if (s := t.kpis.get(key)) else "-"
                 for t in gate.tiers.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _envelope_section(gate: GateRecord) -> list[str]:
    return ["## Safety envelope", "",
            *(f"- `{k}`: {v}" for k, v in {"source": gate.envelope_source, **gate.envelope.to_mapping()}.items())]


def _runner_section(gate: GateRecord) -> list[str]:
    r = gate.runner
    if r is None:
        return []
    s = r.stats
    return ["## Exported runner", "",
            f"{r.episodes} episodes in {r.tier}: {r.successes} successes; periods sent {s.sent}, kept {s.kept}, "
            f"held {s.held}; watchdog trips {s.watchdog_trips}; late policy answers dropped {s.late}; "
            f"filter interventions {dict(sorted(s.interventions.items())) or 'none'}."]


def _provenance_section(gate: GateRecord) -> list[str]:
    return ["## Trust", "", TRUST_NOTE, "", "## Versions", "", *(f"- {k}: {v}" for k, v in gate.versions.items())]


def report_markdown(gate: GateRecord) -> str:
    """``report.md``: the verdict, each criterion with its evidence, tiers, KPIs, envelope, runner, provenance."""
    sections = [_summary_section, _criteria_section, _tiers_section, _kpi_section, _envelope_section,
                _runner_section, _provenance_section]
    return "\n\n".join("\n".join(lines) for section in sections if (lines := section(gate))) + "\n"
