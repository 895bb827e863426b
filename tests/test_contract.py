"""The public `CellEnv` contract: nothing outside ``envs/`` touches a cell's underscore names, and the
public replacements (`set_state`, `replay_step`, ``mj_spec``) give what `reset`, `step` and the model give.

The underscore names are those of `CellEnv` and of every registered cell class, with the instance
attributes a made, reset and stepped env holds; every module outside ``envs/`` (the package,
policies, benchmarks, examples, tests) is parsed and searched for an attribute access (``x._name``,
``getattr(x, "_name")``) of one of them on anything but ``self``/``cls`` (a class's own privates).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import skillcell
from skillcell.demos.episode import model_hash
from skillcell.demos.recorder import EpisodeRecorder
from skillcell.envs.base import CellEnv
from skillcell.envs.registry import cell_spec, resolve
from skillcell.policies.scripted import make_expert

ROOT = Path(__file__).resolve().parents[1]
ENV_IDS = skillcell.skillcell_env_ids()
#: one env id per cell class (the weld variants share theirs)
ONE_PER_CLASS = list({cell_spec(env_id).entry_point: env_id for env_id in ENV_IDS}.values())


def _private(names) -> set[str]:
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


@pytest.fixture(scope="module")
def cell_private_names() -> set[str]:
    names = _private(dir(CellEnv))
    for env_id in ONE_PER_CLASS:
        names |= _private(dir(resolve(cell_spec(env_id).entry_point)))
        env = gym.make(env_id)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        names |= _private(vars(env.unwrapped))
        env.close()
    return names


def _modules_outside_envs() -> list[Path]:
    skip = {"envs", "build", ".git", ".venv", "venv"}
    return [p for p in sorted(ROOT.rglob("*.py")) if not skip & set(p.relative_to(ROOT).parts)]


def private_accesses(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, expression)`` of each access of one of ``names`` on an object other than self/cls."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in names):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_scan_finds_private_accesses():
    names = {"_evaluate", "_mocap_id"}
    source = ("class A:\n    def f(self, cell):\n        self._evaluate()\n        cell._evaluate()\n"
              "        return getattr(cell.unwrapped, '_mocap_id'), cell.evaluate\n")
    assert private_accesses(source, names) == [(4, "cell._evaluate"), (5, "getattr(cell.unwrapped, '_mocap_id')")]


def test_the_scan_covers_the_code_outside_envs(cell_private_names):
    modules = {p.relative_to(ROOT).parts[0] for p in _modules_outside_envs()}
    assert {"skillcell", "policies", "benchmarks", "examples", "tests"} <= modules
    # What the cells keep private: hooks, the hot path's views, per-episode statistics.
    assert {"_evaluate", "_apply_task_action", "_update_wrench", "_build_task", "_tier_runtime",
            "_mocap_id", "_base_mocap", "_obs_raw"} <= cell_private_names


def test_nothing_outside_envs_touches_a_cells_underscore_names(cell_private_names):
    offences = [f"{path.relative_to(ROOT)}:{line}: {expr}" for path in _modules_outside_envs()
                for line, expr in private_accesses(path.read_text(encoding="utf-8"), cell_private_names)]
    assert not offences, ("code outside envs/ uses a cell's underscore names; give the capability a public, "
                          "documented name on CellEnv (see its docstring) instead:\n" + "\n".join(offences))


def _same(a, b) -> bool:
    """Bitwise equality of obs/info values (NaN equal to NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b, equal_nan=True)
    return type(a) is type(b) and a == b


def _assert_same_info(got: dict, expected: dict, where: str) -> None:
    assert got.keys() == expected.keys(), where
    differ = [k for k in expected if not _same(got[k], expected[k])]
    assert not differ, f"{where}: {differ}"


def _close(got: dict, expected: dict, where: str) -> None:
    """Flags and text equal, numbers within what one physics substep (0.5 ms) of motion changes."""
    assert got.keys() == expected.keys(), where
    for key, value in expected.items():
        if isinstance(value, (bool, np.bool_, str)):
            assert got[key] == value, f"{where}: {key}"
        elif isinstance(value, float) and math.isfinite(value):
            assert got[key] == pytest.approx(value, rel=0.02, abs=0.2), f"{where}: {key}"


@pytest.mark.parametrize("env_id", ONE_PER_CLASS)
def test_set_state_returns_what_reset_returned_and_the_steps_follow(env_id):
    """At an episode's first state `set_state` returns reset's ``(obs, info)``, and stepping on from
    it gives the original steps bit for bit."""
    env = gym.make(env_id)
    cell = env.unwrapped
    # The expert's actions, the motion a recording replays: random ones can back a torch off a
    # closed seam (a pipe's), where the aim point's projection slides along the seam faster
    # than the tool moves and one substep changes the measured travel speed by mm/s.
    expert = make_expert(env)
    obs0, info0 = env.reset(seed=3)
    expert.reset()
    obs = obs0
    states, steps, actions = [cell.get_state()], [], []
    for _ in range(6):
        actions.append(expert(obs))
        steps.append(env.step(actions[-1]))
        obs = steps[-1][0]
        states.append(cell.get_state())

    env.reset(seed=11)  # another episode; the stored state replaces its physics
    obs, info = cell.set_state(states[0])
    assert obs.dtype == np.float32 and np.array_equal(obs, obs0)
    _assert_same_info(info, info0, "set_state")
    for k, a in enumerate(actions):
        obs, reward, terminated, _, info = cell.step(a)
        assert np.array_equal(obs, steps[k][0]) and reward == steps[k][1] and terminated == steps[k][2]
        _assert_same_info(info, steps[k][4], f"step {k + 1} after set_state")

    # replay_step: the stored states, measured as the steps measured them. A step's measurement
    # reads the kinematics MuJoCo computed at the start of its last substep; a replay's are of the
    # stored state itself, one substep on, so they agree to within that substep's motion.
    env.reset(seed=11)
    cell.set_state(states[0])
    for k, a in enumerate(actions):
        obs, reward, terminated, _, info = cell.replay_step(states[k + 1], a)
        assert np.array_equal(cell.get_state(), states[k + 1])
        assert np.allclose(obs, steps[k][0], atol=0.05) and terminated == steps[k][2]
        assert reward == pytest.approx(steps[k][1], abs=0.01)
        _close(info, steps[k][4], f"replay_step {k + 1}")
    with pytest.raises(ValueError, match="shape"):
        cell.replay_step(states[1][:-1], actions[0])
    env.close()


@pytest.mark.parametrize("env_id", ONE_PER_CLASS)
def test_the_env_keeps_the_spec_its_model_compiled_from(env_id):
    env = gym.make(env_id, max_episode_steps=3)
    cell = env.unwrapped
    assert cell.spec.id == env_id  # Gymnasium's registration, untouched by the MjSpec
    built = model_hash(cell.model)  # before a reset or a step may edit the model (tiers, control modes)
    assert model_hash(cell.mj_spec.compile()) == built
    recorder = EpisodeRecorder(env)
    recorder.reset(seed=0)
    for _ in range(3):
        recorder.step(np.zeros(env.action_space.shape))
    (episode,) = recorder.completed
    assert episode.model_xml == cell.mj_spec.to_xml() and episode.model_hash == built
    env.close()
