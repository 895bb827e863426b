"""Capture import throughput: 60 s of a 120 Hz human tool capture into a robot episode.

A synthetic seam capture (`skillcell.demos.synthetic`: a line and a tangent arc above the
PegInsert block, traversed back and forth, in millimetres, with 0.1 mm / 0.1 deg tracker noise
and clock jitter, in a rotated capture frame) is written once; then `import_capture` runs end to
end, as ``skillcell demos import`` does: parse and validate the CSV, build the env, check the
capture against the cell, smooth and resample, solve IK for every control step (mink), execute in
the simulation, measure, write the episode and its report. The stages that can be timed on their
own are timed on their own too.

    python benchmarks/demo_import.py [--seconds 60] [--rate 120] [--repeats 3]

Target: 60 s of 120 Hz capture imported in under 10 s. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)

import skillcell  # noqa: E402,F401  (registers the cells)
from skillcell.demos.capture import (  # noqa: E402
    FrameTransform,
    check_kinematics,
    import_capture,
    read_capture,
    resample_capture,
)
from skillcell.demos.synthetic import line_arc_path, write_capture  # noqa: E402

ENV_ID = "skillcell/PegInsert-v0"
TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="capture duration (s)")
    parser.add_argument("--rate", type=float, default=120.0, help="capture sample rate (Hz)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    env = gym.make(ENV_ID, randomize=False)
    env.reset(seed=0)
    cell = env.unwrapped
    start_pos = cell.data.site_xpos[cell.tcp_site].copy()
    start_quat = np.empty(4)
    mujoco.mju_mat2Quat(start_quat, cell.data.site_xmat[cell.tcp_site])
    path = line_arc_path(start_pos, start_quat, args.seconds, traversals=max(1, round(args.seconds / 6)))
    frame = FrameTransform(translation=(350.0, 50.0, 900.0),
                           quat_wxyz=(math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)))

    folder = Path(tempfile.mkdtemp(prefix="skillcell-import-bench-"))
    try:
        csv, _ = write_capture(folder / "seam.csv", path, args.seconds, cell_id=ENV_ID, capture_to_cell=frame,
                               length_unit="mm", rate_hz=args.rate)
        rows = sum(1 for _ in csv.open()) - 1
        read_times, ik_times, total_times = [], [], []
        result = None
        for i in range(args.repeats):
            t = time.perf_counter()
            capture = read_capture(csv)
            read_times.append(time.perf_counter() - t)

            times = capture.t[0] + np.arange(math.floor(capture.duration_s / cell.control_dt) + 1) * cell.control_dt
            pos, quat, _ = resample_capture(capture, times, cell.control_dt)
            env.reset(seed=0)
            t = time.perf_counter()
            check_kinematics(cell, pos, quat, cell.data.qpos.copy())
            ik_times.append(time.perf_counter() - t)

            t = time.perf_counter()
            result = import_capture(csv, folder / f"out{i}", progress=False)
            total_times.append(time.perf_counter() - t)
    finally:
        env.close()
        shutil.rmtree(folder, ignore_errors=True)

    report = result.report
    best = min(total_times)
    print(f"capture import, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"mujoco {mujoco.__version__}, {args.repeats} repeats (best / median)")
    print(f"capture: {args.seconds:.0f} s at {args.rate:.0f} Hz = {rows} rows (mm, 0.1 mm / 0.1 deg noise) -> "
          f"{report['steps']} control steps of {ENV_ID}")
    print(f"{'stage':44s} {'best s':>8} {'median s':>9}")
    print(f"{'read + validate CSV and sidecar':44s} {min(read_times):8.3f} {statistics.median(read_times):9.3f}")
    print(f"{'IK feasibility, every control step (mink)':44s} {min(ik_times):8.3f} {statistics.median(ik_times):9.3f}")
    print(f"{'import end to end (env build, sim, write)':44s} {best:8.3f} {statistics.median(total_times):9.3f}")
    print(f"throughput: {args.seconds / best:.1f} capture-seconds per second, {rows / best:.0f} rows/s, "
          f"{report['steps'] / best:.0f} control steps/s")
    track = report["tracking"]
    print(f"executed path: max {track['path_mm']['max']:.3f} mm, rms {track['path_mm']['rms']:.3f} mm from the "
          f"captured path, lag max {track['lag_s']['max']:.3f} s; feasible: {report['feasible']}")
    verdict = "met" if best < TARGET_S * args.seconds / 60.0 else "MISSED"
    print(f"target: {args.seconds:.0f} s of capture in under {TARGET_S * args.seconds / 60.0:.1f} s: {verdict}")


if __name__ == "__main__":
    main()
