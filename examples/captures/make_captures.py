"""Writes the example captures: a welder's fillet pass and a fitter's peg insertion, as a tracker records them.

    python examples/captures/make_captures.py [--out examples/captures]

Each capture is a CSV and its sidecar YAML in the format of docs/capture_format.md: millimetres in
the tracker's own frame (a stand beside the cell, turned 90 degrees to it), 120 Hz with clock
jitter, the pose of a rigid body on the tool (not of the TCP; ``tcp_in_tool`` says where the TCP
is), 0.05 mm / 0.05 deg of tracker noise. The motion is a person's, modelled here rather than taken
from the importer: minimum-jerk reaches, physiological hand tremor (a narrow band around 9 Hz, a
tenth of a millimetre, less when the hand is braced), travel speed that drifts by a few percent,
torch angles and stand-off that wander slowly around what the welding procedure asks for, and a
peg brought in slightly off the hole and corrected before it goes in. Only where the work is comes
from the cell (the seam and the hole of the nominal workpiece, as a person would measure them).
The seed is fixed, so the files are reproducible; ``skillcell demos import`` takes them as they are.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import yaml

import skillcell  # noqa: F401  (registers the cells)

RATE_HZ = 120.0
SEED = 7
# The tracker's frame in the cell frame: on a stand 1.5 m along the cell's x, turned 90 degrees about z.
CAPTURE_TO_CELL = {"translation": [1500.0, -400.0, 0.0], "quat_wxyz": [math.cos(math.pi / 4), 0.0, 0.0,
                                                                        math.sin(math.pi / 4)]}


# ---------------------------------------------------------------- rotations (w-first quaternions)

def rotvec_matrix(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(v) / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def matrix_quat(R: np.ndarray) -> np.ndarray:
    w = math.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def quat_matrix(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


# ---------------------------------------------------------------- a person's motion

def min_jerk(u: np.ndarray) -> np.ndarray:
    """The minimum-jerk profile of a human reach, 0 -> 1 for u in [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10 - 15 * u + 6 * u**2)


def slow_wander(rng: np.random.Generator, t: np.ndarray, sigma: float, tau_s: float) -> np.ndarray:
    """Mean-reverting drift (Ornstein-Uhlenbeck, time constant ``tau_s``) with standard deviation ``sigma``."""
    out = np.zeros_like(t)
    for i in range(1, len(t)):
        decay = math.exp(-(t[i] - t[i - 1]) / tau_s)
        out[i] = out[i - 1] * decay + sigma * math.sqrt(1 - decay**2) * rng.standard_normal()
    return out


def tremor(rng: np.random.Generator, t: np.ndarray, rms_mm: float) -> np.ndarray:
    """Physiological tremor, (K, 3) mm: a few incoherent components between 8 and 11 Hz."""
    out = np.zeros((len(t), 3))
    for _ in range(4):
        f = rng.uniform(8.0, 11.0)
        out += np.sin(2 * math.pi * f * t[:, None] + rng.uniform(0, 2 * math.pi, 3)) * rng.uniform(0.5, 1.0, 3)
    return out * rms_mm / max(float(np.sqrt((out**2).mean())), 1e-12)


# ---------------------------------------------------------------- the tracker

def write(folder: Path, stem: str, t: np.ndarray, p_tcp: np.ndarray, R_tcp: np.ndarray, tcp_in_tool_mm: float,
          rng: np.random.Generator, cell_id: str, provenance: dict, signals: dict[str, np.ndarray],
          extra: dict | None = None) -> Path:
    """The tracked rigid body's pose, in mm in the tracker frame, with its noise, as CSV + sidecar."""
    R_frame = quat_matrix(CAPTURE_TO_CELL["quat_wxyz"])
    origin = np.array(CAPTURE_TO_CELL["translation"]) * 1e-3
    rows = []
    for i in range(len(t)):
        R_body = R_tcp[i]  # the rigid body sits on the tool axis, ``tcp_in_tool_mm`` behind the TCP
        p_body = p_tcp[i] - R_body[:, 2] * tcp_in_tool_mm * 1e-3
        p = R_frame.T @ (p_body - origin) * 1e3 + rng.normal(0.0, 0.05, 3)
        R = R_frame.T @ R_body @ rotvec_matrix(rng.normal(0.0, math.radians(0.05), 3))
        q = matrix_quat(R) * (1 if rng.random() < 0.5 else -1)  # trackers do not keep the sign
        rows.append([t[i], *p, *q, *(signals[k][i] for k in signals)])
    csv = folder / f"{stem}.csv"
    header = ["t", "x", "y", "z", "qw", "qx", "qy", "qz", *signals]
    fmt = ["%.6f"] + ["%.3f"] * 3 + ["%.6f"] * 4 + ["%.4g"] * len(signals)
    np.savetxt(csv, np.array(rows), delimiter=",", header=",".join(header), comments="", fmt=fmt)
    sidecar = {"cell_id": cell_id, "length_unit": "mm", "capture_to_cell": CAPTURE_TO_CELL,
               "tcp_in_tool": {"translation": [0.0, 0.0, tcp_in_tool_mm], "quat_wxyz": [1.0, 0.0, 0.0, 0.0]},
               "provenance": provenance, "samples": len(t), **(extra or {})}
    csv.with_suffix(".yaml").write_text(yaml.safe_dump(sidecar, sort_keys=False))
    return csv


def sample_times(rng: np.random.Generator, duration_s: float) -> np.ndarray:
    t = np.arange(round(duration_s * RATE_HZ) + 1) / RATE_HZ
    t[1:-1] += rng.uniform(-0.0004, 0.0004, len(t) - 2)  # the tracker's clock jitter
    return t


# ---------------------------------------------------------------- the weld

def weld_seam(folder: Path, rng: np.random.Generator, *, env_id: str = "skillcell/WeldSeam-v0",
              seed: int | None = None, stem: str = "weld_fillet_pass", operator_id: str = "welder-07") -> Path:
    """A fillet pass along the seam of ``env_id``: approach, strike, travel, crater fill, lift off.

    ``seed`` None: the nominal workpiece. Otherwise the part where the env's default tier (D1) puts it
    at ``reset(seed=seed)``, as a person welds whatever part is in the fixture; the sidecar's
    ``env_kwargs`` and ``seed`` say so, so the imported episode's part is the one welded.
    """
    from skillcell.envs.weld import torch_rotation

    env_kwargs = {"randomize": False} if seed is None else {"tier": "D1"}
    env = gym.make(env_id, **env_kwargs)
    env.reset(seed=0 if seed is None else seed)
    cell = env.unwrapped
    frame = cell.metrics.frame  # the seam frame at an arc length, where the person sees the joint
    length = cell.path.length
    wps = cell.wps
    speed = wps.nominal("travel_speed_mm_s") * 1e-3
    work, travel, ctwd = wps.nominal("work_angle_deg"), wps.nominal("travel_angle_deg"), wps.nominal("ctwd_mm")

    hold, reach, dwell, ramp = 1.0, 1.5, 0.3, 0.5
    travel_time = length / speed
    strike = hold + reach
    duration = strike + dwell + travel_time + 0.3 + dwell + 1.2
    t = sample_times(rng, duration)

    # Travel: the speed the welder holds drifts by a few percent and starts and ends gently.
    drift = 1.0 + 0.04 * np.sin(2 * math.pi * t / 11.0 + rng.uniform(0, 2 * math.pi)) \
        + slow_wander(rng, t, 0.02, 3.0)
    moving = (t > strike + dwell).astype(float) * min_jerk((t - strike - dwell) / ramp)
    s = np.minimum(np.cumsum(np.r_[0.0, np.diff(t)] * speed * drift * moving), length)
    end_time = float(t[np.argmax(s >= length)]) if s[-1] >= length else t[-1]
    arc = ((t >= strike) & (t <= end_time + dwell)).astype(float)

    work_angle = work + slow_wander(rng, t, 1.2, 2.5)
    travel_angle = travel + slow_wander(rng, t, 1.5, 2.5)
    standoff = ctwd + slow_wander(rng, t, 0.3, 2.0)
    lateral = slow_wander(rng, t, 0.2, 3.0)
    # Away from the seam before the strike and after the crater fill: backed off along the torch axis.
    back_off = 25.0 * (1 - min_jerk((t - hold) / reach)) + 20.0 * min_jerk((t - end_time - dwell) / 1.0)
    shake = tremor(rng, t, 0.12)

    p_tcp, R_tcp = np.empty((len(t), 3)), np.empty((len(t), 3, 3))
    for i in range(len(t)):
        p_seam, R_seam = frame(float(s[i]))
        R = R_seam @ torch_rotation(work_angle[i], travel_angle[i])
        aim = p_seam + R_seam[:, 1] * lateral[i] * 1e-3
        p_tcp[i] = aim - R[:, 2] * (standoff[i] + back_off[i]) * 1e-3 + shake[i] * 1e-3
        R_tcp[i] = R
    env.close()
    signals = {"arc_on": arc, "current_a": arc * (185.0 + rng.normal(0, 4.0, len(t))),
               "voltage_v": arc * (19.5 + rng.normal(0, 0.3, len(t)))}
    provenance = {"operator_id": operator_id, "site": "example", "source_device": "optical tracker, torch rigid body",
                  "consent": True, "notes": "fillet T-joint, 8 mm plate, one pass (skillcell example, modelled)"}
    part = {} if seed is None else {"env_kwargs": env_kwargs, "seed": seed}
    return write(folder, stem, t, p_tcp, R_tcp, 150.0, rng, env_id, provenance, signals, extra=part)


# ---------------------------------------------------------------- the insertion

def peg_insertion(folder: Path, rng: np.random.Generator) -> Path:
    """A peg brought over the hole, 1.5 mm off at first, lined up by eye and touch, pushed home."""
    env = gym.make("skillcell/PegInsert-v0", randomize=False)
    env.reset(seed=0)
    cell = env.unwrapped
    hole = cell.data.site_xpos[cell.task_site].copy()
    R_hole = cell.data.site_xmat[cell.task_site].reshape(3, 3).copy()
    R_peg = cell.data.site_xmat[cell.tcp_site].reshape(3, 3).copy()  # held upright, as at the start
    start = cell.data.site_xpos[cell.tcp_site].copy()
    depth = cell.hole_depth
    env.close()

    duration = 9.0
    t = sample_times(rng, duration)
    axis, side = R_hole[:, 2], R_hole[:, 0]
    miss = (1.5 * side + 0.6 * R_hole[:, 1]) * 1e-3  # where the first reach ends, off the axis
    above = hole + axis * 3e-3  # peg tip 3 mm over the opening
    reach = min_jerk(t / 2.5)[:, None]
    p = start + (above + miss - start) * reach
    correct = min_jerk((t - 2.9) / 1.2)[:, None]  # seen off, slid over the hole
    p -= miss * correct
    # Straight down the hole, slower once in, to the bottom and a little beyond (pressing to seat it).
    descend = 3e-3 + depth + 0.8e-3
    p -= axis * descend * min_jerk((t - 4.6) / 3.0)[:, None]
    braced = 1.0 - 0.7 * min_jerk((t - 2.5) / 1.0)  # the hand rests on the fixture near the hole
    p += tremor(rng, t, 0.1) * braced[:, None] * 1e-3
    tilt = np.stack([slow_wander(rng, t, math.radians(0.4), 1.5), slow_wander(rng, t, math.radians(0.4), 1.5),
                     np.zeros_like(t)], axis=1) * braced[:, None]
    R_tcp = np.array([rotvec_matrix(v) @ R_peg for v in tilt])
    provenance = {"operator_id": "fitter-03", "site": "example", "source_device": "optical tracker, gripper rigid body",
                  "consent": True, "notes": "12 mm square peg, 0.4 mm clearance (skillcell example, modelled)"}
    return write(folder, "peg_insertion", t, p, R_tcp, 60.0, rng, "skillcell/PegInsert-v0", provenance, {},
                 extra={"tool_contact_is_collision": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="folder to write into")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for csv in (weld_seam(out, rng), peg_insertion(out, rng)):
        print(f"wrote {csv} and {csv.with_suffix('.yaml').name}")


if __name__ == "__main__":
    main()
