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
from collections.abc import Callable
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
from skillcell.deploy.envelope import EnvelopeMonitor, load_envelope
from skillcell.deploy.export import export_run, run_parity, sb3_actions
from skillcell.deploy.runner import OnnxPolicy, PolicyRunner, RunnerStats, SimDriver, command_scale
from skillcell.envs.limits import has_limit_refs, resolve_limits
from skillcell.evaluation import run_episodes
from skillcell.policies import make_expert
from skillcell.policies.loading import TRUST_NOTE, load_sb3_model
from skillcell.policies.residual import ResidualRun, residual_run
from skillcell.rollout import FunctionPolicy, Policy, Rollout

__all__ = [
    "CriterionResult",
    "GateCriteria",
    "GateResult",
    "KpiCriterion",
    "TierCriterion",
    "load_criteria",
    "run_gate",
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


# ---------------------------------------------------------------------- results


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
class GateResult:
    """The gate's outcome; ``record`` is what ``gate.yaml`` holds."""

    passed: bool
    failed: list[str]
    results: list[CriterionResult]
    record: dict[str, Any]
    out_dir: Path

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

    def policy(self, env):
        return self.onnx

    def command_source(self, env):
        return FunctionPolicy(self.onnx.command, reset=self.onnx.reset)

    def provenance(self) -> dict[str, Any]:
        return self.loaded.provenance()


# ---------------------------------------------------------------------- evaluation


def _make_env(env_id: str, tier: str, env_kwargs: dict[str, Any]):
    try:
        return gym.make(env_id, tier=tier, **env_kwargs)
    except TypeError as exc:
        if "tier" in str(exc):
            raise ConfigError(f"tier: {env_id} does not accept tier= yet (its env needs a tier argument "
                              "passed on to CellEnv and a cell_dir; see skillcell.envs.tiers)") from None
        raise


def _stat(values: np.ndarray, stat: str) -> float:
    return float({"mean": np.mean, "max": np.max, "min": np.min,
                  "p95": lambda v: np.percentile(v, 95), "p05": lambda v: np.percentile(v, 5)}[stat](values))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _evaluate_tier(env_id, tier, env_kwargs, envelope, candidate, criteria, progress):
    env = EnvelopeMonitor(_make_env(env_id, tier, env_kwargs), envelope)
    try:
        u = env.unwrapped
        policy = candidate.policy(env)
        bad_actions = [0]

        def guarded(obs: np.ndarray) -> np.ndarray:
            # A diverged network can output NaN; the env would raise. Count it, and apply no
            # motion instead (what the runner's envelope filter does), so the evaluation goes on.
            action = np.asarray(policy(obs), dtype=np.float64)
            if action.shape != u.action_space.shape or not np.isfinite(action).all():
                bad_actions[0] += 1
                return np.zeros(u.action_space.shape)
            return action

        draws: list[dict[str, Any]] = []

        def record_draws(step) -> None:
            if step.index == 0:  # the env was just reset: the tier's draws for the episode, as evidence
                sample = u.tier_sample
                draws.append({"friction_scale": round(float(sample.friction_scale), 4),
                              "mass_scale": [round(float(x), 4) for x in sample.mass_scale],
                              "ft_bias": [round(float(x), 4) for x in sample.ft_bias],
                              "latency_steps": int(sample.latency_steps)})

        summary = run_episodes(env, FunctionPolicy(guarded, reset=policy.reset), criteria.episodes,
                               seed=criteria.seed, on_step=record_draws, progress=progress)
        kpi_keys = sorted({c.key for c in criteria.kpis} | set(u.kpi_keys))
        episodes, violations, episodes_with, worst = [], {}, {}, {}
        for e, drawn in zip(summary.episodes, draws, strict=True):
            info = e.final_info
            invalid = bool(info.get("physics_invalid")) or bool(info.get("instability"))
            counts = info.get("envelope_violations", {})
            for limit, n in counts.items():
                violations[limit] = violations.get(limit, 0) + int(n)
                episodes_with[limit] = episodes_with.get(limit, 0) + 1
                value = float(info["envelope_worst"][limit])
                better = (lambda a, b: a <= b) if limit != "tool_clearance" else (lambda a, b: a >= b)
                if limit not in worst or not better(value, worst[limit]["value"]):
                    worst[limit] = {"value": value, "seed": e.seed}
            episodes.append({
                "seed": e.seed, "success": e.success, "steps": e.steps, "return": round(e.episode_return, 4),
                "physics_invalid": invalid,
                "kpis": {k: float(info[k]) for k in kpi_keys if k in info},
                "envelope_violations": {k: int(v) for k, v in counts.items()},
                "tier_draws": drawn,
            })
        low, high = summary.success_ci95
        kpis = {}
        for key in kpi_keys:
            values = np.array([ep["kpis"][key] for ep in episodes if key in ep["kpis"]], dtype=float)
            if values.size:
                kpis[key] = {s: _stat(values, s) for s in ("mean", "min", "max", "p05", "p95")}
        return {
            "tier": tier,
            "config": {"source": u.tier.source, **to_mapping(u.tier.config)},
            "episodes": len(episodes),
            "seeds": [criteria.seed, criteria.seed + criteria.episodes - 1],
            "successes": summary.successes,
            "success_rate": summary.success_rate,
            "success_ci95": [low, high],
            "physics_invalid_episodes": sum(ep["physics_invalid"] for ep in episodes),
            "non_finite_actions": bad_actions[0],
            "kpis": kpis,
            "envelope_violations": {k: {"steps": violations[k], "episodes": episodes_with[k],
                                        "worst": worst[k]["value"], "worst_seed": worst[k]["seed"]}
                                    for k in sorted(violations)},
            "steps_per_second": _finite(summary.steps_per_second),
            "episode_log": episodes,
        }
    finally:
        env.close()


def _parity_observations(env_id, tiers, env_kwargs, loaded, n):
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


def _runner_check(env_id, env_kwargs, envelope, candidate, criteria):
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
            stats = runner.run(source, steps=max_steps + 1, done=lambda d=driver: d.done)
            successes += bool(driver.info.get("is_success", False))
            total.sent += stats.sent
            total.kept += stats.kept
            total.held += stats.held
            total.watchdog_trips += stats.watchdog_trips
            total.late += stats.late
            total.interventions.update(stats.interventions)
    finally:
        env.close()
    return {"tier": criteria.runner_tier, "episodes": criteria.runner_episodes, "successes": successes,
            **total.to_mapping()}


# ---------------------------------------------------------------------- verdict


def _judge(criteria: GateCriteria, tiers: dict[str, dict], evaluated: list[str], envelope, onnx: dict | None,
           runner: dict | None) -> list[CriterionResult]:
    out: list[CriterionResult] = []
    for tc in criteria.tiers:
        if tc.name not in tiers:
            out.append(CriterionResult(f"{tc.name}.success", None, "tier not evaluated (--tiers)"))
            continue
        t = tiers[tc.name]
        low, high = t["success_ci95"]
        out.append(CriterionResult(
            f"{tc.name}.success", low >= tc.min_success_lower_ci,
            f"{t['successes']}/{t['episodes']} = {t['success_rate']:.1%}, 95% CI [{low:.3f}, {high:.3f}]; "
            f"lower bound must be >= {tc.min_success_lower_ci}"))
    for limit in envelope.active_limits:
        steps = sum(t["envelope_violations"].get(limit, {}).get("steps", 0) for t in tiers.values())
        if steps:
            where = "; ".join(
                f"{name}: {v['steps']} steps in {v['episodes']}/{t['episodes']} episodes, worst "
                f"{v['worst']:.4g} {envelope.unit(limit)} (seed {v['worst_seed']})"
                for name, t in tiers.items() if (v := t["envelope_violations"].get(limit)))
            detail = f"{steps} steps beyond {envelope.bound(limit)} ({where})"
        else:
            detail = f"never beyond {envelope.bound(limit)}"
        out.append(CriterionResult(f"envelope.{limit}", steps <= criteria.max_envelope_violations, detail))
    bad = {name: t["non_finite_actions"] for name, t in tiers.items()}
    out.append(CriterionResult(
        "policy.finite_actions", not any(bad.values()),
        f"{sum(bad.values())} non-finite or malformed actions ({', '.join(f'{k}: {v}' for k, v in bad.items())})"))
    invalid = {name: t["physics_invalid_episodes"] for name, t in tiers.items()}
    out.append(CriterionResult(
        "physics_validity", sum(invalid.values()) <= criteria.max_physics_invalid_episodes,
        f"{sum(invalid.values())} physics-invalid episodes ({', '.join(f'{k}: {v}' for k, v in invalid.items())}); "
        f"at most {criteria.max_physics_invalid_episodes} allowed"))
    for kc in criteria.kpis:
        for name in evaluated:
            if kc.tiers and name not in kc.tiers:
                continue
            stats = tiers[name]["kpis"].get(kc.key)
            label = f"{name}.kpi.{kc.key}"
            if stats is None:
                out.append(CriterionResult(label, False, f"no episode reported {kc.key!r}"))
                continue
            value = stats[kc.stat]
            ok = (kc.max is None or value <= kc.max) and (kc.min is None or value >= kc.min)
            bound = " and ".join(b for b in (f"<= {kc.max}" if kc.max is not None else "",
                                             f">= {kc.min}" if kc.min is not None else "") if b)
            out.append(CriterionResult(label, ok, f"{kc.stat} {value:.4g}, must be {bound}"))
    if onnx is None:
        out.append(CriterionResult("onnx.parity", None, "not an SB3 model: nothing to export"))
    else:
        diff = onnx["parity"]["action_max_abs_diff"]
        out.append(CriterionResult(
            "onnx.parity", diff <= criteria.onnx_parity_atol,
            f"max abs(onnx - sb3) = {diff:.3g} on {onnx['parity']['observations']} observations "
            f"(command: {onnx['parity']['command_max_abs_diff']:.3g}); must be <= {criteria.onnx_parity_atol}"))
    if runner is None:
        out.append(CriterionResult("runner", None, "runner_episodes is 0"))
    else:
        n = sum(runner["interventions"].values())
        ok = n <= criteria.max_runner_interventions and runner["watchdog_trips"] == 0
        names = ", ".join(f"{k} x{v}" for k, v in runner["interventions"].items()) or "none"
        out.append(CriterionResult(
            "runner", ok,
            f"{runner['episodes']} episodes in {runner['tier']} through the envelope filter and watchdog: "
            f"{runner['successes']} successes, {n} filter interventions ({names}), "
            f"{runner['watchdog_trips']} watchdog trips; at most {criteria.max_runner_interventions} interventions"))
    return out


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
             trusted: bool = False, progress: bool = False, log: Callable[[str], None] | None = None) -> GateResult:
    """Runs the gate and writes ``out_dir/gate.yaml`` and ``report.md`` (and ``policy.onnx``).

    ``model``: an SB3 ``.zip`` (unpickled only when ``trusted``) or ``scripted[:skill]``. ``tiers``
    restricts the evaluated tiers to some of the criteria's (the record says the gate is then
    incomplete). Configuration mistakes raise `ConfigError`; a failing policy does not raise.
    """
    log = log or (lambda _msg: None)
    env_kwargs = dict(env_kwargs or {})
    if "tier" in env_kwargs or "randomize" in env_kwargs:
        raise ConfigError("env_kwargs: the gate chooses tier and randomization itself")
    out_dir = Path(out_dir)
    kind, what = _parse_model(model)

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
    evaluated = [t for t in declared if tiers is None or t in tiers]
    needed = evaluated + ([criteria.runner_tier] if criteria.runner_episodes else [])
    for tier in dict.fromkeys(needed):  # every tier must exist before minutes of evaluation
        _make_env(env_id, tier, env_kwargs).close()

    onnx_record: dict[str, Any] | None = None
    if kind == "sb3":
        log(f"loading {what}" + (" (trusted: unpickled)" if trusted else " (as data, nothing unpickled)"))
        try:
            loaded = load_sb3_model(what, algorithm=algorithm, trusted=trusted, vecnormalize=vecnormalize)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        # a residual.yaml next to it: base + residual are the policy
        loaded = residual_run(loaded, trusted) or loaded
        export_env = _make_env(env_id, evaluated[0], env_kwargs)
        try:
            try:
                exported = export_run(loaded, export_env, out_dir / ONNX_NAME, env_id=env_id)
            except ValueError as exc:
                raise ConfigError(f"model: {exc}") from None
            log(f"exported {exported.path} (sha256 {exported.sha256})")
            obs = _parity_observations(env_id, evaluated, env_kwargs, loaded, criteria.parity_observations)
            parity = run_parity(loaded, exported.path, obs, export_env)
        finally:
            export_env.close()
        onnx_record = {"file": ONNX_NAME, "sha256": exported.sha256, "metadata": exported.metadata,
                       "parity": parity}
        candidate: _Candidate = _OnnxCandidate(loaded, exported.path, exported.sha256)
    else:
        candidate = _ScriptedCandidate(what, criteria.seed)

    tier_records: dict[str, dict] = {}
    for tier in evaluated:
        log(f"evaluating {tier}: {criteria.episodes} episodes")
        tier_records[tier] = _evaluate_tier(env_id, tier, env_kwargs, envelope, candidate, criteria, progress)
    runner_record = None
    if criteria.runner_episodes:
        log(f"runner: {criteria.runner_episodes} episodes in {criteria.runner_tier}")
        runner_record = _runner_check(env_id, env_kwargs, envelope, candidate, criteria)

    results = _judge(criteria, tier_records, evaluated, envelope, onnx_record, runner_record)
    failed = [r.name for r in results if r.passed is False]
    complete = len(evaluated) == len(criteria.tiers)
    record = {
        "skillcell_gate": 1,
        "verdict": "pass" if not failed else "fail",
        "passed": not failed,
        "complete": complete,
        "failed": failed,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "env_id": env_id,
        "cell": cell,
        "env_kwargs": env_kwargs,
        "model": candidate.provenance(),
        "trust": TRUST_NOTE,
        "onnx": onnx_record,
        "criteria": {**to_mapping(criteria), "tiers": {t.name: {"min_success_lower_ci": t.min_success_lower_ci}
                                                       for t in criteria.tiers}},
        "envelope": {"source": str(envelope_file) if envelope_file else "cell envelope.yaml",
                     **envelope.to_mapping()},
        "results": [r.to_mapping() for r in results],
        "tiers": tier_records,
        "runner": runner_record,
        "versions": _versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / GATE_NAME, yaml.safe_dump(_plain(record), sort_keys=False).encode())
    atomic_write_bytes(out_dir / REPORT_NAME, _report(record, results).encode())
    return GateResult(not failed, failed, results, record, out_dir)


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


def _report(record: dict[str, Any], results: list[CriterionResult]) -> str:
    verdict = "PASS" if record["passed"] else "FAIL"
    lines = [f"# Pre-hardware gate: {verdict}", ""]
    lines += [f"- env: `{record['env_id']}` ({record['cell']})",
              f"- policy: {_describe_model(record['model'])}",
              f"- created: {record['created_utc']}"]
    if record["onnx"]:
        lines.append(f"- exported: `{record['onnx']['file']}`, SHA-256 `{record['onnx']['sha256']}`")
    if not record["complete"]:
        lines.append("- **incomplete**: not every tier of the criteria was evaluated")
    if record["failed"]:
        lines.append(f"- failed: {', '.join(record['failed'])}")
    lines += ["", "## Criteria", "", "| criterion | result | evidence |", "|---|---|---|"]
    for r in results:
        status = {True: "pass", False: "**FAIL**", None: "n/a"}[r.passed]
        lines.append(f"| {r.name} | {status} | {r.detail} |")
    lines += ["", "## Tiers", "", "| tier | episodes | success | 95% CI | physics-invalid | envelope violations |",
              "|---|---|---|---|---|---|"]
    for name, t in record["tiers"].items():
        low, high = t["success_ci95"]
        env_v = ", ".join(f"{k}: {v['steps']}" for k, v in t["envelope_violations"].items()) or "none"
        lines.append(f"| {name} | {t['episodes']} | {t['success_rate']:.1%} | {low:.3f}-{high:.3f} | "
                     f"{t['physics_invalid_episodes']} | {env_v} |")
    keys = sorted({k for t in record["tiers"].values() for k in t["kpis"]})
    if keys:
        lines += ["", "## Process KPIs (mean / p95 / max over episodes)", "",
                  "| KPI | " + " | ".join(record["tiers"]) + " |", "|---|" + "---|" * len(record["tiers"])]
        for key in keys:
            cells = []
            for t in record["tiers"].values():
                s = t["kpis"].get(key)
                cells.append(f"{s['mean']:.3g} / {s['p95']:.3g} / {s['max']:.3g}" if s else "-")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "## Safety envelope", ""]
    lines += [f"- `{k}`: {v}" for k, v in record["envelope"].items()]
    if record["runner"]:
        r = record["runner"]
        lines += ["", "## Exported runner", "",
                  f"{r['episodes']} episodes in {r['tier']}: {r['successes']} successes; periods sent {r['sent']}, "
                  f"kept {r['kept']}, held {r['held']}; watchdog trips {r['watchdog_trips']}; "
                  f"late policy answers dropped {r['late']}; "
                  f"filter interventions {r['interventions'] or 'none'}."]
    lines += ["", "## Trust", "", record["trust"], "", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in record["versions"].items()]
    return "\n".join(lines) + "\n"


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
