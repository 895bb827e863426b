"""``skillcell train`` and ``skillcell eval``: a thin layer over `skillcell.policies.train`.

Exit codes: 0 done, 1 (eval) no episode succeeded, 2 bad input (a config error names the key).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

from skillcell.cli.common import (
    add_env_options,
    add_parallel_options,
    env_kwargs,
    fail,
    make_env,
    parallel_kwargs,
    parse_set,
)
from skillcell.config import from_mapping
from skillcell.deploy.gate import run_gate
from skillcell.envs.registry import cell_spec
from skillcell.evaluation import run_seeds
from skillcell.paths import check_output
from skillcell.policies.episodes import EpisodeTask, PolicySpec
from skillcell.policies.loading import ALGORITHMS, TRUST_MODEL_HELP
from skillcell.policies.rundir import RunDir
from skillcell.policies.train_config import TrainConfig, load_train_config

__all__ = ["add_commands", "cmd_eval", "cmd_train", "quickstart_learning"]


def cmd_train(args: argparse.Namespace) -> int:
    from skillcell.policies.train import train  # stable-baselines3, torch

    config = load_train_config(args.config, parse_set(args.set))
    check_output(args.out if args.out is not None else config.out, folder=True)
    if args.no_progress:
        config = dataclasses.replace(config, progress=False)
    try:
        train(config, out=args.out, overwrite=args.overwrite, trusted=args.trust_model)
    except FileExistsError as exc:
        return fail(str(exc))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    make_env(args.env).close()  # an unknown id is refused with the list of cells
    spec = PolicySpec(args.model, algorithm=args.algo, vecnormalize=args.vecnormalize, trusted=args.trust_model)
    # A model of a training run: the run's observation normalization, unless another is named.
    vecnormalize = spec.vecnormalize_file()
    try:
        summary = run_seeds(EpisodeTask(args.env, spec, env_kwargs(args)), args.episodes, args.seed,
                            progress=not args.no_progress, **parallel_kwargs(args))
    except ValueError as exc:  # a model that cannot be read, or that observes another shape
        return fail(str(exc))
    print(f"{args.model} on {args.env}, seeds {args.seed}..{args.seed + args.episodes - 1}, deterministic actions"
          + (f", observations normalized by {vecnormalize}" if vecnormalize else ""))
    print(summary.report())
    print(f"mean return {sum(e.episode_return for e in summary.episodes) / len(summary.episodes):.2f}, "
          f"mean length {summary.total_steps / len(summary.episodes):.1f} steps")
    for key in cell_spec(args.env).kpi_keys:
        print(f"mean {key}: {summary.mean(key):.3f}")
    return 0 if summary.successes > 0 else 1


def quickstart_learning(env_id: str, episodes: int, rl_steps: int, out: str | None, progress: bool, *,
                        overwrite: bool = False, gate_episodes: int = 20) -> dict:
    """The learning half of ``skillcell quickstart``: the expert's ``episodes`` (seeds 0..) at the
    D2 tier as demonstrations, behaviour cloning into a PPO policy, ``rl_steps`` of PPO fine-tuning,
    an evaluation on as many unseen D2 episodes (seeds 100000..), and the pre-hardware gate of the
    learned policy with ``gate_episodes`` per tier (0: no gate). Returns the final metrics row. An
    ``out`` that holds a run is replaced only with ``overwrite``."""
    from skillcell.policies.train import train

    config = from_mapping(TrainConfig, {
        # D2, the gate's hardest tier: a policy cloned at D1 alone pushes 125 N into the block there.
        "env": {"id": env_id, "tier": "D2"},
        "demos": {"source": "expert", "episodes": episodes, "seed": 0},
        "bc": {"steps": 1000, "log_std": -3.0},
        # A clone's actions must stay precise: PPO's first Adam steps at 1e-4 took it from 100% to 0-25%
        # (D1); on the D2 seeds, 3e-5 cost one success of 20 and 1e-5 none.
        "rl": {"algo": "ppo", "steps": rl_steps, "learning_rate": 1e-5,
               "ppo": {"n_steps": 1024, "batch_size": 128, "n_epochs": 5, "clip_range": 0.1, "target_kl": 0.02}},
        "finetune": {"critic_warmup_steps": min(2048, rl_steps // 2), "bc_weight": 1.0},
        "eval": {"every_steps": 0, "episodes": episodes, "seed": 100_000},
        "checkpoints": False, "progress": progress,
    })
    # Seating must be worth more than hovering aligned over the hole (examples/train_peg_insert.yaml).
    config = dataclasses.replace(config, env=dataclasses.replace(config.env, overrides={"reward": {"success": 200.0}}))
    with tempfile.TemporaryDirectory(prefix="skillcell-quickstart-") as tmp:
        def log(message: str) -> None:
            if out or not message.startswith("run directory"):  # a temporary one is gone when this returns
                print(f"  {message}")

        result = train(config, out=out or tmp, overwrite=overwrite or out is None, log=log)
        row = result.metrics[-1]
        model = RunDir(result.run_dir).model
        print(f"learned policy (BC + {int(row['env_steps'])} PPO env steps), {episodes} unseen randomized D2 "
              f"episodes: success {row['success_rate']:.1%} (95% CI {row['success_ci_low']:.1%}-"
              f"{row['success_ci_high']:.1%})" + (f"; model in {model} (skillcell eval {model} --env {env_id})"
                                                  if out else ""))
        if gate_episodes > 0:
            gate_dir = result.run_dir / "gate"
            gate = run_gate(model, env_id, gate_dir, criteria_overrides={"episodes": gate_episodes},
                            progress=progress)
            print(f"pre-hardware gate of the learned policy, {gate_episodes} episodes per tier (the default gate "
                  f"runs 50: skillcell gate MODEL --env {env_id} --out DIR):")
            for r in gate.results:
                if r.passed is False:
                    print(f"  [FAIL] {r.name}: {r.detail}")
            print(f"  gate: {'PASS' if gate.passed else 'FAIL: ' + ', '.join(gate.failed)}"
                  f" ({len(gate.results)} criteria" + (f"; report in {gate_dir}" if out else "") + ")")
            row = {**row, "gate_passed": gate.passed}
    return row


def add_commands(subparsers) -> None:
    """Adds ``train`` and ``eval`` to the ``skillcell`` parser's subparsers."""
    p = subparsers.add_parser("train", help="demonstrations -> behaviour cloning -> RL, into a run directory")
    p.add_argument("--config", required=True, metavar="YAML", help="training config (examples/train_*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set rl.steps=20000 --set rl.ppo.target_kl=0.01")
    p.add_argument("--out", help="run directory (default: the config's out)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a run directory that holds a run")
    p.add_argument("--trust-model", action="store_true",
                   help=f"{TRUST_MODEL_HELP}; for the models a config names (DAgger's expert, a residual's base)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="evaluate an SB3 model: success with a 95%% Wilson interval, process KPIs")
    p.add_argument("model", help="SB3 .zip (PPO, SAC, ...); a vecnormalize.pkl next to it is used")
    p.add_argument("--env", required=True, metavar="ENV_ID")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100_000, help="first episode's seed; the next ones count up")
    p.add_argument("--algo", default="auto", choices=("auto", *ALGORITHMS))
    p.add_argument("--vecnormalize", metavar="PKL", help="VecNormalize statistics (default: next to the model)")
    p.add_argument("--trust-model", action="store_true", help=TRUST_MODEL_HELP)
    p.add_argument("--no-progress", action="store_true")
    add_env_options(p)
    add_parallel_options(p)
    p.set_defaults(func=cmd_eval)
