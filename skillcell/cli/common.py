"""What every ``skillcell`` command shares: env options, ``--set`` parsing, building the env, exit codes
and the mapping of bad input to one line on stderr.

Exit codes of every command: 0 done, 1 done but failed (a gate, a check, an infeasible import; an
episode on a Ray worker that failed), 2 bad input (nothing was written; no Ray cluster at
``--address``), 3 no working OpenGL (only commands that render).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from skillcell.config import ConfigError, parse_yaml, quote
from skillcell.demos.errors import DemoError
from skillcell.envs import MenagerieUnavailableError, skillcell_env_ids
from skillcell.parallel import ClusterUnavailableError, SeedFailedError
from skillcell.paths import OutputError

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_NO_GL", "EXIT_OK", "add_env_options", "add_parallel_options",
           "env_kwargs", "fail", "make_env", "parallel_kwargs", "parse_set", "run_command"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_GL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Prints ``skillcell: message`` to stderr and returns ``code``, the command's exit code."""
    print(f"skillcell: {message}", file=sys.stderr)
    return code


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["workpiece.clearance_mm=0.2", ...]`` -> nested mapping, values parsed as YAML scalars/lists."""
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


def add_env_options(parser: argparse.ArgumentParser, *, tier: bool = True, randomize: bool = True) -> None:
    """``--cell``, ``--set`` (and ``--no-randomize``, ``--tier``): how a command configures its cell."""
    parser.add_argument("--cell", metavar="YAML", help="cell YAML laid over the packaged default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a cell config key, e.g. --set workpiece.clearance_mm=0.2")
    if randomize:
        parser.add_argument("--no-randomize", action="store_true", help="nominal task, no randomization")
    if tier:
        parser.add_argument("--tier", metavar="TIER", help="randomization tier: D0 nominal, D1 default, D2 harder "
                                                           "(the cell's tiers.yaml)")


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--address``: episodes spread by seed over Ray workers (`skillcell.parallel`)."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help="episodes at a time, by seed: 1 (default) runs here without Ray, N > 1 on a local Ray "
                             "instance of N CPUs; with --address, at most N at a time (default: the cluster's CPUs)")
    parser.add_argument("--address", metavar="ADDR", help="an existing Ray cluster (auto: the one `ray start` runs "
                                                          "here; or HOST:PORT of its head)")


def parallel_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``workers`` and ``address`` for `skillcell.parallel` from the options `add_parallel_options` added."""
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    workers = args.workers if args.workers is not None or args.address is not None else 1
    return {"workers": workers, "address": args.address}


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `gym.make` keywords of the options `add_env_options` added."""
    kwargs: dict[str, Any] = {}
    if getattr(args, "cell", None):
        kwargs["cell"] = args.cell
    if getattr(args, "set", None):
        kwargs["overrides"] = parse_set(args.set)
    if getattr(args, "no_randomize", False):
        kwargs["randomize"] = False
    if getattr(args, "tier", None):
        kwargs["tier"] = args.tier
    return kwargs


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` for a registered cell; an unknown id is a `ConfigError` listing them."""
    if env_id not in skillcell_env_ids():
        raise ConfigError(f"unknown env {quote(env_id)}; registered: {', '.join(skillcell_env_ids())}")
    return gym.make(env_id, **kwargs)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs a command; bad input (a config error, an unwritable ``--out``, a damaged dataset, no
    Menagerie) becomes one line on stderr and `EXIT_BAD_INPUT`."""
    try:
        return func(args)
    except ConfigError as exc:
        return fail(f"config error: {exc}")
    except (MenagerieUnavailableError, OutputError, DemoError, ClusterUnavailableError) as exc:
        return fail(str(exc))
    except SeedFailedError as exc:  # a worker kept dying, or an episode raised: named, never dropped
        return fail(str(exc), EXIT_FAILED)
