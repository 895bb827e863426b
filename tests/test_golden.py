"""Golden episodes: seeded expert episodes of every cell replay bit-identically.

`tests/golden/record.py` stored, for every registered cell, the actions of a seeded scripted
expert episode at the default tier and at D2, and SHA-256 digests of everything the env returned:
observations, rewards, terminated/truncated flags and every ``info`` value. Replaying the stored
actions from the same seed must give the same digests, so refactors and speed-ups of the env
(controller, metrics, info assembly) cannot change a single bit of what a policy or a dataset sees.

A deliberate change of observations, rewards or info (a new info key, a new reward weight)
re-records the digests with ``python tests/golden/record.py`` (it replays the stored actions)
and says so in its commit message. A new cell is added with the same command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco
import numpy as np
import pytest

import skillcell

_spec = importlib.util.spec_from_file_location("golden_record", Path(__file__).parent / "golden" / "record.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

META, ARRAYS = golden.load()
EPISODES = META["episodes"]
RERECORD = "if the change is deliberate, re-record with `python tests/golden/record.py` and say so in the commit"


def first_difference(stored: dict, stored_locators: np.ndarray, steps: int, sha256: dict[str, str],
                     keys: list[str], locators: np.ndarray) -> str | None:
    """What differs between a stored and a replayed episode, earliest step first; None if nothing."""
    problems = []
    missing, new = sorted(set(stored["sha256"]) - set(sha256)), sorted(set(sha256) - set(stored["sha256"]))
    if missing:
        problems.append(f"keys no longer returned: {', '.join(missing)}")
    if new:
        problems.append(f"keys not in the recording: {', '.join(new)}")
    if steps != stored["steps"]:
        problems.append(f"the episode ended after {steps} steps, recorded {stored['steps']}")
    stored_keys = sorted(stored["sha256"])
    differing = [key for key in stored_keys if key in sha256 and sha256[key] != stored["sha256"][key]]
    if differing:
        rows = min(len(stored_locators), len(locators))
        first = []
        for key in differing:
            changed = np.flatnonzero(stored_locators[:rows, stored_keys.index(key)] != locators[:rows, keys.index(key)])
            first.append((int(changed[0]) if changed.size else rows, key))
        step, key = min(first)
        where = "the reset" if step == 0 else f"step {step}"
        problems.insert(0, f"first difference: {key} at {where}; keys that differ over the episode: "
                           f"{', '.join(differing)}")
    return "; ".join(problems) or None


def test_every_cell_has_golden_episodes():
    recorded = [(e["env_id"], e["tier"]) for e in EPISODES]
    expected = [(s["env_id"], s["tier"]) for s in golden.episode_specs(skillcell.skillcell_env_ids())]
    missing = sorted(set(expected) - set(recorded), key=str)
    assert not missing, f"no golden episode for {missing}: record them with `python tests/golden/record.py`"


@pytest.mark.skipif(mujoco.__version__ != META["mujoco"],
                    reason=f"golden digests are of mujoco {META['mujoco']}: determinism is promised within a version")
@pytest.mark.parametrize("stored", EPISODES, ids=[e["name"] for e in EPISODES])
def test_golden_episode_replays_bit_identically(stored):
    spec = {k: stored[k] for k in ("env_id", "tier", "seed", "max_steps")}
    _, records = golden.run_episode(spec, ARRAYS[f"{stored['name']}/actions"])
    sha256, keys, locators = golden.digests(records)
    problem = first_difference(stored, ARRAYS[f"{stored['name']}/locators"], len(records) - 1, sha256, keys,
                               locators)
    assert problem is None, (f"{stored['name']}: {problem} ({RERECORD}; recorded with mujoco {META['mujoco']}, "
                             f"numpy {META['numpy']})")


def test_first_difference_names_the_key_and_step():
    # The failure message is the test's main output: a value changed at step 2 is reported there.
    records = [{"obs": b"a", "info/x": b"1"}, {"obs": b"b", "reward": b"r", "info/x": b"2"},
               {"obs": b"c", "reward": b"r", "info/x": b"3"}]
    sha256, keys, locators = golden.digests(records)
    stored = {"steps": 2, "sha256": sha256}
    assert first_difference(stored, locators, 2, sha256, keys, locators) is None
    changed = [records[0], records[1], {**records[2], "info/x": b"4"}]
    message = first_difference(stored, locators, 2, *golden.digests(changed))
    assert message.startswith("first difference: info/x at step 2")
    shorter = first_difference(stored, locators, 1, *golden.digests(changed[:2]))
    assert "ended after 1 steps, recorded 2" in shorter
