"""``skillcell gate``: the pre-hardware gate (`skillcell.deploy.gate`) from the command line.

Prints each criterion and the verdict; exit 0 pass, 1 fail, 2 bad input (nothing evaluated).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skillcell.cli.common import add_env_options, add_parallel_options, env_kwargs, parallel_kwargs
from skillcell.deploy.gate import GATE_NAME, ONNX_NAME, REPORT_NAME, run_gate
from skillcell.paths import check_output
from skillcell.policies.loading import ALGORITHMS, TRUST_MODEL_HELP

__all__ = ["add_commands", "cmd_gate"]


def cmd_gate(args: argparse.Namespace) -> int:
    for name in (GATE_NAME, REPORT_NAME, ONNX_NAME):  # before minutes of evaluation
        check_output(check_output(args.out, folder=True) / name, force=args.force)
    overrides: dict[str, Any] = {}
    if args.gate_episodes is not None:
        overrides["episodes"] = args.gate_episodes
    if args.gate_seed is not None:
        overrides["seed"] = args.gate_seed
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()] if args.tiers else None
    parallel = parallel_kwargs(args)
    result = run_gate(args.model, args.env_id, args.out, criteria_file=args.criteria,
                      criteria_overrides=overrides or None, tiers=tiers, algorithm=args.algo,
                      vecnormalize=args.vecnormalize, envelope_file=args.envelope, env_kwargs=env_kwargs(args),
                      trusted=args.trust_model, progress=not args.no_progress,
                      log=lambda msg: print(f"gate: {msg}", file=sys.stderr), **parallel)
    for r in result.results:
        status = {True: "PASS", False: "FAIL", None: "n/a "}[r.passed]
        print(f"[{status}] {r.name}: {r.detail}")
    if not result.record["complete"]:
        print("note: incomplete gate, not every tier of the criteria was evaluated")
    if result.record["onnx"]:
        print(f"onnx: {result.out_dir / ONNX_NAME} sha256 {result.record['onnx']['sha256']}")
    print(f"wrote {result.out_dir / GATE_NAME} and {result.out_dir / REPORT_NAME}")
    print("gate: PASS" if result.passed else f"gate: FAIL: {', '.join(result.failed)}")
    return result.exit_code


def add_commands(subparsers) -> None:
    """Adds ``gate`` to the ``skillcell`` parser's subparsers."""
    parser = subparsers.add_parser("gate", help="pre-hardware gate: tiers, safety envelope, process KPIs, ONNX "
                                                "export and parity")
    parser.add_argument("model", help="SB3 .zip (PPO, SAC, A2C, TD3, DDPG) or scripted[:skill] for the cell's "
                                      "scripted expert")
    parser.add_argument("--trust-model", action="store_true", help=TRUST_MODEL_HELP)
    parser.add_argument("--env", required=True, dest="env_id", metavar="ENV_ID")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/gate.yaml, report.md, policy.onnx")
    parser.add_argument("--force", action="store_true", help="overwrite the files of an earlier gate in DIR")
    parser.add_argument("--vecnormalize", metavar="PKL", help="VecNormalize statistics saved with the model")
    parser.add_argument("--algo", default="auto", help=f"{', '.join(ALGORITHMS)} or auto (read from the zip's JSON)")
    parser.add_argument("--criteria", metavar="YAML", help="criteria laid over the defaults and the cell's")
    parser.add_argument("--envelope", metavar="YAML", help="safety envelope instead of the cell's envelope.yaml")
    parser.add_argument("--tiers", metavar="D0,D1", help="evaluate only these tiers (the gate is then incomplete)")
    # Own dest names: the CLI's generic --episodes check expects an int, and these default to None.
    parser.add_argument("--episodes", type=int, dest="gate_episodes", help="episodes per tier (criteria default: 50)")
    parser.add_argument("--seed", type=int, dest="gate_seed", help="first episode seed")
    add_env_options(parser, tier=False, randomize=False)  # the gate chooses tiers and randomization itself
    add_parallel_options(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=cmd_gate)
