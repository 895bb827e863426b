"""The ``skillcell`` command line (also ``python -m skillcell``): a thin layer over the library."""

from __future__ import annotations

import argparse
import time

import skillcell
from skillcell.checks import run_env_checks
from skillcell.cli import demos, gate, review, teleop, train
from skillcell.cli.common import (
    add_env_options,
    add_parallel_options,
    env_kwargs,
    fail,
    make_env,
    parallel_kwargs,
    run_command,
)
from skillcell.envs.registry import cell_ids, cell_spec
from skillcell.evaluation import run_seeds
from skillcell.paths import check_output
from skillcell.policies.episodes import EpisodeTask, PolicySpec
from skillcell.policies.rundir import RunDir

__all__ = ["build_parser", "main"]

DEFAULT_ENV = "skillcell/PegInsert-v0"


def cmd_list(args: argparse.Namespace) -> int:
    for env_id in cell_ids():
        spec = cell_spec(env_id)
        summary = (spec.env_class.__doc__ or "").strip().splitlines()[0]
        print(f"{env_id:28s} {summary} (max {spec.max_episode_steps} steps; KPIs: {', '.join(spec.kpi_keys)})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    make_env(args.env_id).close()
    results = run_env_checks(args.env_id, steps=args.steps, seed=args.seed, **env_kwargs(args))
    for r in results:
        print(f"[{'PASS' if r.passed else 'FAIL'}] {r.name}: {r.detail}")
    failed = [r.name for r in results if not r.passed]
    print(f"{args.env_id}: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


def _run_expert(env_id: str, episodes: int, seed: int, skill: str, progress: bool, *, workers: int | None = 1,
                address: str | None = None, **kwargs):
    make_env(env_id).close()  # an unknown id is refused with the list of cells
    task = EpisodeTask(env_id, PolicySpec(f"scripted:{skill}", seed=seed), kwargs)
    summary = run_seeds(task, episodes, seed, workers=workers, address=address, progress=progress)
    return summary, cell_spec(env_id).kpi_keys


def cmd_expert(args: argparse.Namespace) -> int:
    try:
        summary, kpi_keys = _run_expert(args.env_id, args.episodes, args.seed, args.skill, not args.no_progress,
                                        **parallel_kwargs(args), **env_kwargs(args))
    except ValueError as exc:  # e.g. a skill level the cell's expert does not have
        return fail(str(exc))
    print(f"{args.env_id} scripted {args.skill}, seeds {args.seed}..{args.seed + args.episodes - 1}")
    print(summary.report())
    for key in kpi_keys:
        print(f"mean {key}: {summary.mean(key):.3f}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    if args.gate_episodes < 0:
        return fail(f"--gate-episodes must be 0 (no gate) or more, got {args.gate_episodes}")
    if args.out is not None:
        try:
            RunDir.check_new(check_output(args.out, folder=True), args.overwrite)
        except FileExistsError as exc:
            return fail(str(exc))
    start = time.perf_counter()
    env = make_env(args.env)
    build = time.perf_counter() - start
    u = env.unwrapped
    print(f"skillcell {skillcell.__version__}: {args.env} built in {build:.2f} s "
          f"({u.model.nbody} bodies, {u.model.ngeom} geoms, {u.n_substeps} physics steps of "
          f"{u.model.opt.timestep * 1e3:.1f} ms per {u.control_dt * 1e3:.0f} ms control step)")
    env.close()
    summary, _ = _run_expert(args.env, args.episodes, 0, "expert", not args.no_progress, tier="D2")
    print(f"scripted expert, {args.episodes} randomized D2 episodes: {summary.report()}")
    if args.rl_steps >= 0:
        # Those expert episodes become demonstrations -> behaviour cloning -> short RL -> evaluation -> gate.
        train.quickstart_learning(args.env, args.episodes, args.rl_steps, args.out, not args.no_progress,
                                  overwrite=args.overwrite, gate_episodes=args.gate_episodes)
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0 if summary.success_rate > 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skillcell", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered cells, one line each")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="env checkers, a random rollout and a determinism check")
    p.add_argument("env_id")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    add_env_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("expert", help="run the cell's scripted expert; prints success rate and steps/s")
    p.add_argument("env_id")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skill", default="expert", help="skill level of the scripted expert (welding: expert, novice)")
    p.add_argument("--no-progress", action="store_true")
    add_env_options(p)
    add_parallel_options(p)
    p.set_defaults(func=cmd_expert)

    p = sub.add_parser("quickstart", help="the main job end to end on the default cell")
    p.add_argument("--env", default=DEFAULT_ENV)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--rl-steps", type=int, default=4096,
                   help="PPO env steps after behaviour cloning (0: cloning only; -1: no learning)")
    p.add_argument("--gate-episodes", type=int, default=20,
                   help="episodes per tier of the closing pre-hardware gate (the default gate runs 50; 0: no gate)")
    p.add_argument("--out", help="keep the run directory here (default: a temporary one)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_quickstart)
    for group in (train, gate, review, demos, teleop):  # train, eval; gate; render, report; demos ...; teleop
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        return fail("--episodes must be at least 1")
    return run_command(args.func, args)
