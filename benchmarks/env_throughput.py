"""Env step throughput against raw MuJoCo physics on the same compiled model, in one run.

For each workload the env is stepped through ``gym.make`` (all default wrappers) with actions
recorded beforehand, so the policy's own cost is not counted. Every control step's ``data.ctrl`` and
every episode's initial state are captured, then replayed with plain ``mj_step(m, d, nstep)`` from
the same states, with the state writes a cell makes between physics steps (a thread engaging)
applied untimed and each episode's model edits in place (the env is reset with the episode's seed,
untimed: KeyedShaft's grip angle, a tier's friction and mass factors live in the model): the raw
loop does exactly the same physics, which it checks (every episode must end in the env's final
state, bit for bit), and the ratio is the cost of everything the env adds (action checks, IK, F/T
compensation, observation, metrics, reward, info, wrappers). Both loops are timed in CPU time of
this thread, step by step, and each step counts with its best of ``--repeats`` interleaved runs: on
a shared machine another process slows a step (it takes the core, it evicts the caches), never
speeds one up, and the same rule applies to both loops (the clock's own ~0.6 us a call falls on
both alike). Gymnasium's Pusher-v5 is measured the same way as a peer.

    python benchmarks/env_throughput.py [--episodes 20] [--repeats 5] [--only Weld]

Every registered cell runs its scripted expert (``--episodes`` of a 200-step cell, fewer of longer
ones); PegInsert also runs random actions.

Not a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)

import skillcell  # noqa: E402  (registers the cells)
from skillcell.policies import make_expert  # noqa: E402

PEG = "skillcell/PegInsert-v0"


def record_episodes(env_id: str, episodes: int, policy: str, **kwargs):
    """Actions per episode, from the scripted expert or uniform random actions."""
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(0)
    expert = make_expert(env) if policy == "expert" else None
    recorded = []
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        if expert:
            expert.reset()
        actions, done = [], False
        while not done:
            action = expert(obs) if expert else rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            obs, _, terminated, truncated, _ = env.step(action)
            actions.append(action)
            done = terminated or truncated
        recorded.append(np.array(actions))
    env.close()
    return recorded


#: CPU time of this thread: on a shared machine, time spent descheduled counts against neither loop
CLOCK = time.thread_time


def capture(env, recorded, nstep: int):
    """Each episode's initial state, every step's controls, the states the env wrote between physics
    steps (NutThread's thread engaging: eq_active, its follower's joints) and its final state: the
    physics inputs of the raw replay and what it must reproduce. The writes are found by stepping a
    second MjData with plain ``mj_step`` alongside the env."""
    u = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    size = mujoco.mj_stateSize(u.model, spec)
    shadow = mujoco.MjData(u.model)
    starts, ctrls, writes, finals = [], [], [], []
    for seed, actions in enumerate(recorded):
        env.reset(seed=seed)
        state = np.empty(size)
        mujoco.mj_getState(u.model, u.data, state, spec)
        starts.append(state)
        mujoco.mj_setState(u.model, shadow, state, spec)
        episode_ctrl, episode_writes = [], {}
        for i, action in enumerate(actions):
            env.step(action)
            episode_ctrl.append(u.data.ctrl.copy())  # data.ctrl after the step holds the controls it used
            shadow.ctrl[:] = u.data.ctrl
            mujoco.mj_step(u.model, shadow, nstep)
            after, raw = np.empty(size), np.empty(size)
            mujoco.mj_getState(u.model, u.data, after, spec)
            mujoco.mj_getState(u.model, shadow, raw, spec)
            if not np.array_equal(after, raw):
                episode_writes[i] = after
                mujoco.mj_setState(u.model, shadow, after, spec)
        ctrls.append(np.array(episode_ctrl))
        writes.append(episode_writes)
        finals.append(after)
    return starts, ctrls, writes, finals


def time_env(env, recorded) -> np.ndarray:
    """Seconds of each env.step, the episodes' steps in order (resets not counted)."""
    elapsed = []
    for seed, actions in enumerate(recorded):
        env.reset(seed=seed)
        for action in actions:
            t = CLOCK()
            env.step(action)
            elapsed.append(CLOCK() - t)
    return np.array(elapsed)


def time_raw(env, starts, ctrls, writes, finals, nstep: int) -> np.ndarray:
    """Seconds of each plain ``mj_step`` on the env's model, in the order of `time_env`; each episode's
    model edits are made by resetting the env with its seed, and the env's state writes are applied
    between steps, both untimed. Raises where an episode does not end in the env's final state: the
    raw loop would time other physics."""
    model = env.unwrapped.model
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    final = np.empty(mujoco.mj_stateSize(model, spec))
    times = []
    for seed, (state, episode_ctrl, episode_writes, expected) in enumerate(
            zip(starts, ctrls, writes, finals, strict=True)):
        env.reset(seed=seed)
        mujoco.mj_setState(model, data, state, spec)
        for i, ctrl in enumerate(episode_ctrl):
            t = CLOCK()
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep)
            times.append(CLOCK() - t)
            if i in episode_writes:
                mujoco.mj_setState(model, data, episode_writes[i], spec)
        mujoco.mj_getState(model, data, final, spec)
        if not np.array_equal(final, expected):
            raise RuntimeError(f"{env.spec.id}: the raw replay of episode {seed} does not end in the env's state")
    return np.array(times)


def measure(env_id: str, recorded, nstep_of, repeats: int, **kwargs):
    env = gym.make(env_id, **kwargs)
    starts, ctrls, writes, finals = capture(env, recorded, nstep_of(env.unwrapped))
    steps = sum(len(actions) for actions in recorded)
    best_env, best_raw = np.full(steps, np.inf), np.full(steps, np.inf)
    for _ in range(repeats):  # interleaved, each step's best: both loops see the same machine load
        best_env = np.minimum(best_env, time_env(env, recorded))
        best_raw = np.minimum(best_raw, time_raw(env, starts, ctrls, writes, finals, nstep_of(env.unwrapped)))
    env.close()
    return steps / best_env.sum(), steps / best_raw.sum(), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="only the workloads whose id contains this (Pusher-v5 too)")
    args = parser.parse_args()

    print(f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cpus")
    print(f"{'workload':60s} {'env steps/s':>12s} {'raw steps/s':>12s} {'env/raw':>8s} {'steps':>7s}")
    rows = []
    # Every registered cell with its expert, about as many steps each: --episodes of a 200-step cell.
    workloads = [(env_id, "expert", max(1, args.episodes * 200 // gym.spec(env_id).max_episode_steps))
                 for env_id in skillcell.skillcell_env_ids()]
    workloads.insert(workloads.index((PEG, "expert", args.episodes)) + 1, (PEG, "random", args.episodes))
    for env_id, policy, episodes in [w for w in workloads if args.only in w[0]]:
        recorded = record_episodes(env_id, episodes, policy)
        env_rate, raw_rate, steps = measure(env_id, recorded, lambda u: u.n_substeps, args.repeats)
        substeps = gym.make(env_id).unwrapped.n_substeps
        rows.append((f"{env_id} ({policy} actions, {substeps} substeps)", env_rate, raw_rate, steps))

    if args.only in "Pusher-v5":
        pusher_actions = [np.random.default_rng(s).uniform(-2, 2, (100, 7)).astype(np.float32)
                          for s in range(args.episodes)]
        env_rate, raw_rate, steps = measure("Pusher-v5", pusher_actions, lambda u: u.frame_skip, args.repeats)
        rows.append(("Gymnasium Pusher-v5 (peer, random, 5 substeps)", env_rate, raw_rate, steps))

    for name, env_rate, raw_rate, steps in rows:
        print(f"{name:60s} {env_rate:12.0f} {raw_rate:12.0f} {env_rate / raw_rate:8.3f} {steps:7d}")
    slowdowns = []
    ours = [row[2] / row[1] for row in rows if not row[0].startswith("Gymnasium")]
    if ours:
        slowdowns.append(f"skillcell at most {max(ours):.2f}x")
    slowdowns += [f"Gymnasium Pusher-v5 {row[2] / row[1]:.2f}x" for row in rows if row[0].startswith("Gymnasium")]
    print("slowdown over raw physics:", ", ".join(slowdowns))


if __name__ == "__main__":
    main()
