"""Records the golden episodes that `tests/test_golden.py` replays: ``python tests/golden/record.py``.

For every registered cell, one seeded scripted-expert episode at the default tier (D1, to its end)
and one at D2 (its first `D2_STEPS` steps). What is stored:

- ``episodes.npz``: each episode's actions (the open-loop input of the replay, so later changes
  to the experts leave the golden episodes valid) and, per step and per key, a 16-bit digest that
  only locates the first difference for the failure message;
- ``digests.yaml``: per episode the env id, tier, seed and one SHA-256 per key over the whole
  episode (``obs``, ``reward``, ``terminated``, ``truncated`` and ``info/<key>``).

By default the stored actions are replayed and only the digests are rewritten, which is what a
deliberate change of observations, rewards or info needs (say so in the commit message).
``--new-actions`` draws new actions from the current experts, for a new cell or a new episode.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import yaml

import skillcell
from skillcell.atomic import atomic_write_bytes
from skillcell.policies.scripted import make_expert

HERE = Path(__file__).resolve().parent
EPISODES, DIGESTS = HERE / "episodes.npz", HERE / "digests.yaml"
SEED = 0
D2_STEPS = 150  # D2 episodes run to 1000 steps; their first part is enough to cover the tier's code


def episode_specs(env_ids: list[str]) -> list[dict]:
    """The golden episodes: every cell at its default tier (to the end) and at D2 (truncated)."""
    specs = []
    for env_id in env_ids:
        specs.append({"env_id": env_id, "tier": None, "seed": SEED, "max_steps": None})
        specs.append({"env_id": env_id, "tier": "D2", "seed": SEED, "max_steps": D2_STEPS})
    return specs


def episode_name(spec: dict) -> str:
    return f"{spec['env_id'].split('/')[-1]}-{spec['tier'] or 'default'}-seed{spec['seed']}"


def value_bytes(key: str, value) -> bytes:
    """Canonical bytes of one value: numbers (bools, scalars, arrays) as float64 plus shape, text as utf-8."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if value is None:
        return b"none"
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{key}: the golden digest has no encoding for {type(value).__name__} values") from None
    return b"n" + str(array.shape).encode() + array.tobytes()


def step_record(obs, info, reward=None, terminated=None, truncated=None) -> dict[str, bytes]:
    """One reset (no reward or flags) or step as canonical bytes per key, info keys sorted."""
    record = {"obs": value_bytes("obs", obs)}
    if reward is not None:
        record["reward"] = value_bytes("reward", reward)
        record["terminated"] = value_bytes("terminated", terminated)
        record["truncated"] = value_bytes("truncated", truncated)
    for key in sorted(info):
        record[f"info/{key}"] = value_bytes(f"info/{key}", info[key])
    return record


def make_env(spec: dict):
    kwargs = {"tier": spec["tier"]} if spec["tier"] else {}
    return gym.make(spec["env_id"], **kwargs)


def run_episode(spec: dict, actions: np.ndarray | None = None) -> tuple[np.ndarray, list[dict[str, bytes]]]:
    """Plays an episode, from ``actions`` or (None) from the cell's scripted expert; returns actions and records.

    A replay ends where the stored actions end or where the episode terminates, whichever is first.
    """
    env = make_env(spec)
    try:
        obs, info = env.reset(seed=spec["seed"])
        records = [step_record(obs, info)]
        if actions is None:
            expert = make_expert(env, seed=spec["seed"])
            expert.reset()
            played, limit = [], spec["max_steps"] or sys.maxsize
            while len(played) < limit:
                action = expert(obs)
                played.append(action)
                obs, reward, terminated, truncated, info = env.step(action)
                records.append(step_record(obs, info, reward, terminated, truncated))
                if terminated or truncated:
                    break
            return np.array(played), records
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            records.append(step_record(obs, info, reward, terminated, truncated))
            if terminated or truncated:
                break
        return actions, records
    finally:
        env.close()


def digests(records: list[dict[str, bytes]]) -> tuple[dict[str, str], list[str], np.ndarray]:
    """Per-key SHA-256 over the episode (each entry prefixed by its step), the sorted keys and a
    ``(steps, keys)`` locator table (0 where a step has no such key)."""
    keys = sorted({key for record in records for key in record})
    hashes = {key: hashlib.sha256() for key in keys}
    locators = np.zeros((len(records), len(keys)), np.uint16)
    for step, record in enumerate(records):
        for column, key in enumerate(keys):
            if key in record:
                entry = np.int64(step).tobytes() + record[key]
                hashes[key].update(entry)
                locators[step, column] = int.from_bytes(hashlib.sha256(entry).digest()[:2], "little")
    return {key: h.hexdigest() for key, h in hashes.items()}, keys, locators


def load() -> tuple[dict, dict[str, np.ndarray]]:
    """The recording: versions and per-episode specs and digests (``digests.yaml``), arrays (``episodes.npz``)."""
    with DIGESTS.open() as f:
        meta = yaml.safe_load(f)
    with np.load(EPISODES, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return meta, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-actions", action="store_true",
                        help="draw new actions from the current scripted experts instead of replaying the stored ones")
    args = parser.parse_args()
    stored = {}
    if not args.new_actions and EPISODES.is_file():
        _, arrays = load()
        stored = {name[:-len("/actions")]: arrays[name] for name in arrays if name.endswith("/actions")}
    arrays, entries = {}, []
    for spec in episode_specs(skillcell.skillcell_env_ids()):
        name = episode_name(spec)
        actions, records = run_episode(spec, stored.get(name))
        per_key, keys, locators = digests(records)
        arrays[f"{name}/actions"] = actions
        arrays[f"{name}/locators"] = locators
        entries.append({**spec, "name": name, "steps": len(records) - 1, "sha256": per_key})
        print(f"{name}: {len(records) - 1} steps, {len(keys)} keys"
              + ("" if name in stored else " (new actions from the expert)"))
    meta = {"mujoco": mujoco.__version__, "numpy": np.__version__, "episodes": entries}
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    atomic_write_bytes(EPISODES, npz.getvalue())
    atomic_write_bytes(DIGESTS, yaml.safe_dump(meta, sort_keys=False, width=200).encode())


if __name__ == "__main__":
    main()
