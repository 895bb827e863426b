"""Human weld captures on randomized parts (issue 13.5).

A person welds whatever part is in the fixture: a capture made for seed s (`make_captures.weld_seam`,
as a tracker records a person: mm, 120 Hz, a rotated capture frame, tremor, speed drift) is imported
on the part the env's D1 tier draws for s. Imported episodes start where the welder's torch was,
evaluation at the env's reset pose; DAgger's rollouts from resets close that gap.
"""

import importlib.util
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import yaml

from skillcell.demos import DemoDataset, import_capture

ROOT = Path(__file__).resolve().parents[1]
WELD = "skillcell/WeldSeam-v0"


def _make_captures():
    spec = importlib.util.spec_from_file_location("make_captures", ROOT / "examples" / "captures" / "make_captures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _capture(folder: Path, seed: int) -> Path:
    return _make_captures().weld_seam(folder, np.random.default_rng(1000 + seed), env_id=WELD, seed=seed,
                                      stem=f"weld_{seed:02d}", operator_id=f"welder-{seed:02d}")


def test_a_capture_is_imported_on_the_part_it_was_welded_on(tmp_path):
    csv = _capture(tmp_path, 3)
    sidecar = yaml.safe_load(csv.with_suffix(".yaml").read_text())
    assert sidecar["length_unit"] == "mm" and sidecar["seed"] == 3 and sidecar["env_kwargs"] == {"tier": "D1"}
    assert sidecar["capture_to_cell"]["quat_wxyz"] != [1.0, 0.0, 0.0, 0.0]  # the tracker stands turned to the cell
    t = np.loadtxt(csv, delimiter=",", skiprows=1)[:, 0]
    assert np.median(np.diff(t)) == pytest.approx(1 / 120, abs=1e-4)
    result = import_capture(csv, tmp_path / "dataset", progress=False)
    assert result.report["feasible"], result.report["problems"]
    dataset = DemoDataset(tmp_path / "dataset")
    episode = dataset.load(dataset.entries[0])
    assert bool(episode.infos["is_success"][-1]) and episode.infos["in_spec_fraction"][-1] >= 0.9

    env = gym.make(WELD, tier="D1")
    nominal = gym.make(WELD, randomize=False)
    try:
        env.reset(seed=3)
        nominal.reset(seed=3)
        u = env.unwrapped
        imported = mujoco.MjData(u.model)
        mujoco.mj_setState(u.model, imported, episode.states[0], mujoco.mjtState.mjSTATE_INTEGRATION)
        # The part of the imported episode is the D1 draw for the capture's seed, not the nominal part.
        np.testing.assert_array_equal(imported.mocap_pos, u.data.mocap_pos)
        np.testing.assert_array_equal(imported.mocap_quat, u.data.mocap_quat)
        assert np.abs(u.data.mocap_pos - nominal.unwrapped.data.mocap_pos).max() > 1e-3
        # ... and the episode starts where the welder's torch was (backed off the seam start), not at the
        # env's reset pose, where every evaluation starts.
        start = episode.extras["target_pos"][0]
        assert np.linalg.norm(start - u.data.site_xpos[u.tcp_site]) > 0.003
    finally:
        env.close()
        nominal.close()


@pytest.mark.slow
def test_ten_human_captures_and_dagger_weld_unseen_d1_parts(tmp_path):
    from skillcell.policies.train import train
    from skillcell.policies.train_config import load_train_config

    (tmp_path / "raw").mkdir()
    for seed in range(10):
        import_capture(_capture(tmp_path / "raw", seed), tmp_path / "dataset", progress=False)
    config = load_train_config(ROOT / "examples" / "train_weld_seam.yaml", {
        "env": {"tier": "D1"}, "demos": {"source": "dataset", "path": str(tmp_path / "dataset"), "episodes": 10},
        "bc": {"steps": 1500}, "rl": {"steps": 0}, "eval": {"episodes": 10},
        "dagger": {"rounds": 2, "episodes_per_round": 4, "bc_steps": 1000, "expert": "scripted"},
        "progress": False, "checkpoints": False})
    result = train(config, out=tmp_path / "run", log=lambda _message: None)
    assert result.demos.demos.n_episodes == 10
    assert result.metrics[-1]["phase"] == "dagger" and result.metrics[-1]["success_rate"] >= 0.9, result.metrics
