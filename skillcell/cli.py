"""The ``skillcell`` command line (also ``python -m skillcell``): a thin layer over the library."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["main"]

DEFAULT_ENV = "skillcell/PegInsert-v0"


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``["workpiece.clearance_mm=0.2", ...]`` -> nested mapping, values parsed as YAML scalars/lists."""
    from skillcell.config import ConfigError, parse_yaml, quote

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {quote(item)}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {quote(key)}: {part} is set to a value already, not a mapping")
        node[leaf] = parse_yaml(raw, f"--set {quote(key)}")
    return out


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if getattr(args, "cell", None):
        kwargs["cell"] = args.cell
    if getattr(args, "set", None):
        kwargs["overrides"] = _parse_set(args.set)
    if getattr(args, "no_randomize", False):
        kwargs["randomize"] = False
    if getattr(args, "tier", None):
        kwargs["tier"] = args.tier
    return kwargs


def _add_env_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cell", metavar="YAML", help="cell YAML laid over the packaged default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a cell config key, e.g. --set workpiece.clearance_mm=0.2")
    parser.add_argument("--no-randomize", action="store_true", help="nominal task, no randomization")
    parser.add_argument("--tier", metavar="TIER", help="randomization tier: D0 nominal, D1 default, D2 harder "
                                                       "(the cell's tiers.yaml)")


def _make_env(env_id: str, **kwargs):
    import gymnasium as gym

    import skillcell
    from skillcell.config import ConfigError, quote

    if env_id not in skillcell.skillcell_env_ids():  # bad input: one line and exit 2, as every other mistake
        raise ConfigError(f"unknown env {quote(env_id)}; registered: {', '.join(skillcell.skillcell_env_ids())}")
    return gym.make(env_id, **kwargs)


def cmd_list(args: argparse.Namespace) -> int:
    from skillcell.envs.registry import cell_ids, cell_spec

    for env_id in cell_ids():
        spec = cell_spec(env_id)
        summary = (spec.env_class.__doc__ or "").strip().splitlines()[0]
        print(f"{env_id:28s} {summary} (max {spec.max_episode_steps} steps; KPIs: {', '.join(spec.kpi_keys)})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from skillcell.checks import run_env_checks

    _make_env(args.env_id).close()
    results = run_env_checks(args.env_id, steps=args.steps, seed=args.seed, **_env_kwargs(args))
    for r in results:
        print(f"[{'PASS' if r.passed else 'FAIL'}] {r.name}: {r.detail}")
    failed = [r.name for r in results if not r.passed]
    print(f"{args.env_id}: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


def _run_expert(env_id: str, episodes: int, seed: int, skill: str, progress: bool, **env_kwargs):
    from skillcell.envs.registry import cell_spec
    from skillcell.evaluation import run_episodes
    from skillcell.policies import make_expert

    env = _make_env(env_id, **env_kwargs)
    try:
        expert = make_expert(env, skill=skill, seed=seed)
        summary = run_episodes(env, expert, episodes, seed=seed, reset_policy=expert.reset, progress=progress)
        return summary, cell_spec(env_id).kpi_keys
    finally:
        env.close()


def cmd_expert(args: argparse.Namespace) -> int:
    try:
        summary, kpi_keys = _run_expert(args.env_id, args.episodes, args.seed, args.skill, not args.no_progress,
                                        **_env_kwargs(args))
    except ValueError as exc:  # e.g. a skill level the cell's expert does not have
        print(f"skillcell: {exc}", file=sys.stderr)
        return 2
    print(f"{args.env_id} scripted {args.skill}, seeds {args.seed}..{args.seed + args.episodes - 1}")
    print(summary.report())
    for key in kpi_keys:
        print(f"mean {key}: {summary.mean(key):.3f}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    import skillcell

    if args.out is not None:
        from skillcell.paths import check_output
        from skillcell.policies.train import check_run_dir

        try:
            check_run_dir(check_output(args.out, folder=True), args.overwrite)
        except FileExistsError as exc:
            print(f"skillcell: {exc}", file=sys.stderr)
            return 2
    start = time.perf_counter()
    env = _make_env(args.env)
    build = time.perf_counter() - start
    u = env.unwrapped
    print(f"skillcell {skillcell.__version__}: {args.env} built in {build:.2f} s "
          f"({u.model.nbody} bodies, {u.model.ngeom} geoms, {u.n_substeps} physics steps of "
          f"{u.model.opt.timestep * 1e3:.1f} ms per {u.control_dt * 1e3:.0f} ms control step)")
    env.close()
    summary, _ = _run_expert(args.env, args.episodes, 0, "expert", not args.no_progress)
    print(f"scripted expert, {args.episodes} randomized episodes: {summary.report()}")
    if args.rl_steps >= 0:
        # Those expert episodes become demonstrations -> behaviour cloning -> short RL -> evaluation.
        from skillcell.train_cli import quickstart_learning

        quickstart_learning(args.env, args.episodes, args.rl_steps, args.out, not args.no_progress,
                            overwrite=args.overwrite)
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0 if summary.success_rate > 0 else 1


def cmd_gate(args: argparse.Namespace) -> int:
    from skillcell.deploy.gate import main as gate_main

    return gate_main(args, _parse_set)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skillcell", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered cells, one line each")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="env checkers, a random rollout and a determinism check")
    p.add_argument("env_id")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    _add_env_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("expert", help="run the cell's scripted expert; prints success rate and steps/s")
    p.add_argument("env_id")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skill", default="expert", help="skill level of the scripted expert (welding: expert, novice)")
    p.add_argument("--no-progress", action="store_true")
    _add_env_options(p)
    p.set_defaults(func=cmd_expert)

    p = sub.add_parser("quickstart", help="the main job end to end on the default cell")
    p.add_argument("--env", default=DEFAULT_ENV)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--rl-steps", type=int, default=4096,
                   help="PPO env steps after behaviour cloning (0: cloning only; -1: no learning)")
    p.add_argument("--out", help="keep the run directory here (default: a temporary one)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quickstart)
    __import__("skillcell.train_cli", fromlist=["add_commands"]).add_commands(sub)  # train, eval
    p = sub.add_parser("gate", help="pre-hardware gate: tiers, safety envelope, process KPIs, ONNX export and parity")
    from skillcell.deploy.gate import add_arguments as add_gate_arguments
    add_gate_arguments(p)
    p.set_defaults(func=cmd_gate)
    __import__("skillcell.review.cli", fromlist=["add_commands"]).add_commands(sub)  # render, report
    from skillcell.demos.cli import add_commands as add_demo_commands
    add_demo_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from skillcell.config import ConfigError
    from skillcell.demos.errors import DemoError
    from skillcell.envs import MenagerieUnavailableError
    from skillcell.paths import OutputError

    args = build_parser().parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        print("skillcell: --episodes must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"skillcell: config error: {exc}", file=sys.stderr)
        return 2
    except MenagerieUnavailableError as exc:  # every command builds its cells through compose_cell
        print(f"skillcell: {exc}", file=sys.stderr)
        return 2
    except (OutputError, DemoError) as exc:  # an unwritable --out, a damaged or mixed-up dataset
        print(f"skillcell: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
