"""The first headline (v1; benchmarks/headline_v2.py is the current one): demonstrations + RL against RL alone.

For each cell, from the same expert demonstrations (seeds 0..N-1) and evaluated on the same
fixed episode seeds (100000..), deterministic actions:

- ``bc``           behaviour cloning only (a PPO policy; no RL)
- ``bc+ppo``       behaviour cloning, then PPO fine-tuning (critic warm-up, low log_std, decaying BC term)
- ``bc+sac``       behaviour cloning, then SAC with the demonstrations in every batch (50 %)
- ``ppo scratch``  PPO from scratch (the same code path with BC and demonstrations off)
- ``sac scratch``  SAC from scratch

Every run is `skillcell.policies.train.train` on the cell's example config
(``examples/train_*.yaml``) with the overrides printed below, in a run directory of its own
(metrics.csv, model.zip). Runs go to Ray workers (``--workers``, default 2: one torch thread
each, which is what two cores do best; ``--address`` for a cluster, whose nodes then need this
checkout and ``--out`` on a shared file system; `skillcell.parallel`), longest first. Prints a
table per cell and writes a plot of success (and for welding, in-spec fraction) against env steps.

    python benchmarks/bc_vs_rl.py                         # both cells, 50k env steps per run
    python benchmarks/bc_vs_rl.py --cells peg --steps 20000 --out runs/bench_small

Env steps count RL interaction only; the demonstrations' own env steps are listed beside them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CELLS = {
    "peg": {"config": ROOT / "examples" / "train_peg_insert.yaml", "env": "skillcell/PegInsert-v0",
            "kpis": ["peak_insertion_force_n", "jam_time_s"], "eval": {"every_steps": 5000, "episodes": 30}},
    # A weld evaluation episode is up to 1000 steps: fewer, sparser evaluations.
    "weld": {"config": ROOT / "examples" / "train_weld_seam.yaml", "env": "skillcell/WeldSeam-v0",
             "kpis": ["in_spec_fraction", "arc_coverage"], "eval": {"every_steps": 10000, "episodes": 10}},
}

# RL from scratch: SB3's usual settings, with the same networks and env as the fine-tuning runs.
SCRATCH = {"bc": {"enabled": False}, "demos": {"source": "none"}}
SCRATCH_PPO = {**SCRATCH, "rl": {"algo": "ppo", "learning_rate": 3.0e-4,
                                 "ppo": {"clip_range": 0.2, "target_kl": None, "log_std_init": 0.0,
                                         "n_epochs": 10, "batch_size": 64}}}
SCRATCH_SAC = {**SCRATCH, "rl": {"algo": "sac", "learning_rate": 3.0e-4,
                                 "sac": {"learning_starts": 1000, "ent_coef": "auto"}}}
RUNS: dict[str, dict[str, Any]] = {
    "bc": {"rl": {"steps": 0}},
    "bc+ppo": {"rl": {"algo": "ppo"}},
    # The settings of examples/train_peg_insert_sac.yaml (SAC fine-tuning from a cloned actor).
    "bc+sac": {"rl": {"algo": "sac", "learning_rate": 3.0e-5,
                      "sac": {"learning_starts": 0, "ent_coef": 0.001, "demo_ratio": 0.5}},
               "finetune": {"critic_warmup_steps": 4000, "bc_steps_per_1k": 1000, "bc_learning_rate": 1.0e-3,
                            "bc_half_life_steps": 20000}},
    "ppo scratch": SCRATCH_PPO,
    "sac scratch": SCRATCH_SAC,
}
ORDER = ["sac scratch", "bc+sac", "ppo scratch", "bc+ppo", "bc"]  # longest first: the pool stays busy


def _run(job: tuple[str, str, dict[str, Any], str]) -> tuple[str, str, float, str]:
    cell, name, overrides, out = job
    os.environ.setdefault("MUJOCO_GL", "egl")
    from skillcell.policies.train import train
    from skillcell.policies.train_config import load_train_config

    config = load_train_config(CELLS[cell]["config"], overrides)
    log_path = Path(out) / "train.log"
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        def log(message: str) -> None:
            log_file.write(message + "\n")
            log_file.flush()

        result = train(config, out=out, overwrite=True, log=log)
    return cell, name, result.wall_time_s, out


@dataclass(frozen=True)
class _Runs:
    """`skillcell.parallel.SeedTask` over the runs: "seed" ``i`` is the ``i``-th run."""

    jobs: tuple[tuple[str, str, dict[str, Any], str], ...]

    def setup(self) -> None:
        return None

    def run(self, state: None, i: int) -> tuple[str, str, float, str]:
        return _run(self.jobs[i])

    def close(self, state: None) -> None:
        pass


def _deep(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    from skillcell.config import merge

    return merge(base, extra)


def _table(cell: str, runs: dict[str, Path], threshold: float, steps: int) -> str:
    from skillcell.policies.rundir import RunDir, steps_to_success

    kpis = CELLS[cell]["kpis"]
    head = (f"{'run':12s} {'RL env steps':>12s} {'demo steps':>10s} {'steps to ' + format(threshold, '.0%'):>13s} "
            f"{'final success (95% CI)':>24s} {'best':>5s} " + " ".join(f"{k[:22]:>22s}" for k in kpis)
            + f" {'wall s':>7s}")
    lines = [head]
    reached: dict[str, float] = {}
    demo_steps_by_run: dict[str, int] = {}
    for name in RUNS:
        if name not in runs:
            continue
        run = RunDir.open(runs[name])
        rows, summary = run.read_metrics(), run.read_summary()
        final = rows[-1]
        demo_steps = (summary.get("demonstrations") or {}).get("steps", 0)
        hit = steps_to_success(rows, threshold)
        reached[name] = hit
        demo_steps_by_run[name] = demo_steps
        best = max(r["success_rate"] for r in rows)
        ci = f"{final['success_rate']:.0%} ({final['success_ci_low']:.0%}-{final['success_ci_high']:.0%})"
        lines.append(f"{name:12s} {int(final['env_steps']):12d} {demo_steps:10d} "
                     f"{('not reached' if math.isnan(hit) else f'{int(hit)}'):>13s} {ci:>24s} {best:5.0%} "
                     + " ".join(f"{final.get(k, math.nan):22.3f}" for k in kpis)
                     + f" {summary['wall_time_s']:7.0f}")
    bc_rl = [(reached[n], n) for n in ("bc+ppo", "bc+sac") if n in reached and not math.isnan(reached[n])]
    scratch = [reached[n] for n in ("ppo scratch", "sac scratch") if n in reached and not math.isnan(reached[n])]
    if not bc_rl:
        lines.append(f"no BC + RL run reached {threshold:.0%} within {steps} RL env steps")
        return "\n".join(lines)
    hit, name = min(bc_rl)
    with_demos = hit + demo_steps_by_run[name]
    where = f"{name} reached {threshold:.0%} at {int(hit)} RL env steps ({int(with_demos)} counting the demonstrations)"
    if scratch:
        best = min(scratch)
        lines.append(f"{where}; the best from-scratch run at {int(best)}: {best / max(hit, 1):.1f}x fewer RL env "
                     f"steps, {best / with_demos:.1f}x fewer counting the demonstrations")
    else:
        lines.append(f"{where}; no from-scratch run reached it within {steps} RL env steps: more than "
                     f"{steps / with_demos:.1f}x fewer env steps even counting the demonstrations")
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, Path]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skillcell.policies.rundir import RunDir

    panels = [(cell, "success_rate", "success rate") for cell in results]
    panels += [(cell, "in_spec_fraction", "in-spec fraction") for cell in results if cell == "weld"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    styles = {"bc": ("k", "--"), "bc+ppo": ("tab:blue", "-"), "bc+sac": ("tab:green", "-"),
              "ppo scratch": ("tab:blue", ":"), "sac scratch": ("tab:green", ":")}
    for ax, (cell, key, label) in zip(axes[0], panels, strict=True):
        steps_max = 1
        for run_dir in results[cell].values():
            rows = RunDir.open(run_dir).read_metrics()
            steps_max = max(steps_max, max(r["env_steps"] for r in rows))
        for name, run_dir in results[cell].items():
            rows = RunDir.open(run_dir).read_metrics()
            x = [r["env_steps"] for r in rows]
            y = [r.get(key, math.nan) for r in rows]
            color, style = styles[name]
            if name == "bc":  # no RL: a flat line at what cloning alone gives
                x, y = [0, steps_max], [y[0], y[0]]
            ax.plot(x, y, color=color, linestyle=style, marker="o" if name != "bc" else None, ms=3, label=name)
            if key == "success_rate" and name != "bc":
                ax.fill_between(x, [r["success_ci_low"] for r in rows], [r["success_ci_high"] for r in rows],
                                color=color, alpha=0.08)
        ax.set_title(f"{CELLS[cell]['env']}: {label}")
        ax.set_xlabel("RL env steps")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=["peg", "weld"])
    parser.add_argument("--steps", type=int, default=50_000, help="RL env steps per run")
    parser.add_argument("--demos", type=int, default=25, help="expert demonstrations (at most 25 for the headline)")
    parser.add_argument("--eval-every", type=int, help="env steps between evaluations (default: per cell)")
    parser.add_argument("--eval-episodes", type=int, help="episodes per evaluation (default: per cell)")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--workers", "--jobs", type=int, default=2, help="runs at a time (Ray workers)")
    parser.add_argument("--address", help="an existing Ray cluster (auto: the one `ray start` runs here)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", default="runs/bc_vs_rl")
    parser.add_argument("--plot", default="docs/bc_vs_rl.png")
    parser.add_argument("--report-only", action="store_true",
                        help="print the tables and plot from the run directories under --out, without training")
    args = parser.parse_args(argv)

    jobs = []
    for cell in args.cells:
        evaluation = dict(CELLS[cell]["eval"])
        if args.eval_every is not None:
            evaluation["every_steps"] = args.eval_every
        if args.eval_episodes is not None:
            evaluation["episodes"] = args.eval_episodes
        CELLS[cell]["eval"] = evaluation
        common = {"rl": {"steps": args.steps}, "demos": {"episodes": args.demos}, "eval": evaluation,
                  "progress": False, "checkpoints": False, "torch_threads": 1}
        for name in sorted(args.runs, key=ORDER.index):
            overrides = _deep(common, RUNS[name])
            if name == "bc":
                overrides = _deep(overrides, {"rl": {"steps": 0}})
            out = str(Path(args.out) / cell / name.replace(" ", "_").replace("+", "_"))
            jobs.append((cell, name, overrides, out))
    jobs.sort(key=lambda j: ORDER.index(j[1]))
    print(f"{len(jobs)} runs, {args.steps} RL env steps each, {args.demos} expert demonstrations; "
          f"{args.workers} workers")
    for cell in args.cells:
        e = CELLS[cell]["eval"]
        print(f"{cell}: base config {CELLS[cell]['config'].relative_to(ROOT)}; evaluation every {e['every_steps']} "
              f"env steps on {e['episodes']} fixed seeds")
    for name in args.runs:
        print(f"  {name:12s} overrides {RUNS[name]}")
    start = time.perf_counter()
    results: dict[str, dict[str, Path]] = {cell: {} for cell in args.cells}
    if args.report_only:
        from skillcell.policies.rundir import RunDir

        for cell, name, _, out in jobs:
            if RunDir(out).summary.is_file():
                results[cell][name] = Path(out)
    else:
        from skillcell.parallel import iter_seeds

        for _, (cell, name, wall, out) in iter_seeds(_Runs(tuple(jobs)), range(len(jobs)), workers=args.workers,
                                                     address=args.address, desc="runs"):
            results[cell][name] = Path(out)
            print(f"  done: {cell} {name} in {wall:.0f} s (wall {time.perf_counter() - start:.0f} s)", flush=True)
    for cell in args.cells:
        results[cell] = {n: results[cell][n] for n in RUNS if n in results[cell]}
        print(f"\n{CELLS[cell]['env']}: {args.demos} expert demonstrations, {args.steps} RL env steps per run, "
              f"evaluation on {CELLS[cell]['eval']['episodes']} fixed seeds")
        print(_table(cell, results[cell], args.threshold, args.steps))
    _plot(results, Path(args.plot))
    print(f"\nplot: {args.plot}; run directories under {args.out}; total wall time "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
