"""PPO training throughput: env steps per second with ``env.n_envs`` 1 (DummyVecEnv) and 2 (SubprocVecEnv).

PPO as ``skillcell train`` builds it for ``examples/train_peg_insert.yaml`` (the cell, its reward
overrides, the config's PPO settings, one torch thread), learning ``--steps`` env steps from
scratch. With N envs PPO collects ``n_steps`` per env, so the per-env ``n_steps`` is the config's
divided by N: every run collects and learns from rollouts of the same size, and the time per env
step compares like with like (collection and the gradient epochs both counted). Best of
``--repeats`` runs, interleaved, so that other work on a shared machine skews both alike.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --steps 8192 --envs 1 2 4
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MENAGERIE_ROOT", str(ROOT.parent / "shared" / "menagerie"))

import mujoco  # noqa: E402
import torch as th  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv  # noqa: E402

from skillcell.policies.train_config import load_train_config  # noqa: E402
from skillcell.policies.train_env import TrainEnvSpec  # noqa: E402

CONFIG = ROOT / "examples" / "train_peg_insert.yaml"


def steps_per_second(config, n_envs: int, steps: int) -> float:
    spec = TrainEnvSpec(config.env.id, {"overrides": config.env.overrides} if config.env.overrides else {},
                        seed=config.seed)
    venv = make_vec_env(spec.make, n_envs=n_envs, seed=config.seed,
                        vec_env_cls=SubprocVecEnv if n_envs > 1 else DummyVecEnv)
    try:
        p = config.rl.ppo
        model = PPO("MlpPolicy", venv, n_steps=p.n_steps // n_envs, batch_size=p.batch_size, n_epochs=p.n_epochs,
                    learning_rate=config.rl.learning_rate, seed=config.seed, device="cpu")
        start = time.perf_counter()
        model.learn(steps)
        return model.num_timesteps / (time.perf_counter() - start)
    finally:
        venv.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--steps", type=int, default=4096, help="PPO env steps per run")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    th.set_num_threads(1)  # what train's torch_threads: 1 does; the env workers take the other cores
    config = load_train_config(args.config)
    p = config.rl.ppo
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{config.env.id}, PPO from {Path(args.config).name} (rollout {p.n_steps} env steps, batch "
          f"{p.batch_size}, {p.n_epochs} epochs), {args.steps} env steps per run, best of {args.repeats}")
    print(f"{os.cpu_count()} cpus (load average {load} before), mujoco {mujoco.__version__}, torch {th.__version__}, "
          f"python {platform.python_version()}")
    best = {n: 0.0 for n in args.envs}
    for _ in range(args.repeats):
        for n in args.envs:
            best[n] = max(best[n], steps_per_second(config, n, args.steps))
    print(f"{'env.n_envs':>10s} {'vec env':>14s} {'env steps/s':>12s} {'vs 1 env':>9s}")
    for n in args.envs:
        kind = "SubprocVecEnv" if n > 1 else "DummyVecEnv"
        print(f"{n:10d} {kind:>14s} {best[n]:12.0f} {best[n] / best[args.envs[0]]:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
