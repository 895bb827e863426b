"""Speed-up of episode-parallel work on Ray (`skillcell.parallel`): ``gate`` and ``demos generate``, N workers vs 1.

The scripted gate on one cell (every tier of its criteria, ``--episodes`` per tier, the runner
check included) and ``demos generate`` of ``--demos`` expert episodes, each with 1 worker (in this
process, no Ray) and with ``--workers`` (a local Ray instance of that many CPUs). Ray's start-up
is timed on its own and the parallel runs are reported with and without it: it is paid once per
command, whatever the number of episodes. The results are checked to be the same for both worker
counts (the gate's episode log, the datasets' episodes), so the speed-up is of the same work.

    python benchmarks/parallel_speedup.py                       # PegInsert, 50 episodes per tier, 50 demos
    python benchmarks/parallel_speedup.py --env skillcell/WeldSeam-v0 --episodes 10 --demos 10
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MENAGERIE_ROOT", str(ROOT.parent / "shared" / "menagerie"))

import mujoco  # noqa: E402

from skillcell import parallel  # noqa: E402
from skillcell.demos.episode import load_episode  # noqa: E402
from skillcell.demos.recorder import generate_demos  # noqa: E402
from skillcell.deploy.gate import run_gate  # noqa: E402


def _gate(env_id: str, episodes: int, out: Path, workers: int):
    start = time.perf_counter()
    result = run_gate("scripted", env_id, out, criteria_overrides={"episodes": episodes}, workers=workers)
    return time.perf_counter() - start, [t["episode_log"] for t in result.record["tiers"].values()]


def _demos(env_id: str, episodes: int, out: Path, workers: int):
    start = time.perf_counter()
    entries = generate_demos(env_id, episodes, out, progress=False, workers=workers)
    wall = time.perf_counter() - start
    return wall, [load_episode(out / e.file).actions for e in entries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="skillcell/PegInsert-v0")
    parser.add_argument("--episodes", type=int, default=50, help="gate episodes per tier (the criteria's default)")
    parser.add_argument("--demos", type=int, default=50, help="expert episodes of demos generate")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.env}; {os.cpu_count()} cpus (load average {load} before), mujoco {mujoco.__version__}, "
          f"python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="skillcell-parallel-") as tmp:
        tmp = Path(tmp)
        serial_gate, log_1 = _gate(args.env, args.episodes, tmp / "gate1", 1)
        serial_demos, demos_1 = _demos(args.env, args.demos, tmp / "demos1", 1)
        start = time.perf_counter()
        with parallel.session(workers=args.workers):
            ray_start = time.perf_counter() - start
            par_gate, log_n = _gate(args.env, args.episodes, tmp / "gate2", args.workers)
            par_demos, demos_n = _demos(args.env, args.demos, tmp / "demos2", args.workers)
        same_gate = log_1 == log_n
        same_demos = all(np.array_equal(a, b) for a, b in zip(demos_1, demos_n, strict=True))
    tiers = len(log_1)
    rows.append((f"gate scripted ({tiers} tiers x {args.episodes} ep + runner)", serial_gate, par_gate, same_gate))
    rows.append((f"demos generate ({args.demos} ep)", serial_demos, par_demos, same_demos))
    print(f"Ray start-up ({args.workers} CPUs, local): {ray_start:.1f} s, paid once per command")
    head = (f"{'work':44s} {'1 worker':>9s} {f'{args.workers} workers':>10s} {'speed-up':>9s} "
            f"{'+ Ray start':>12s} {'same result':>12s}")
    print(head)
    print("-" * len(head))
    for name, one, many, same in rows:
        print(f"{name:44s} {one:8.1f}s {many:9.1f}s {one / many:8.2f}x {one / (many + ray_start):11.2f}x "
              f"{'yes' if same else 'NO':>12s}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
