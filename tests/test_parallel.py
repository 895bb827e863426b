"""Episode-parallel work by seed (`skillcell.parallel`): the same episodes and files for 1 and 2 workers.

One local Ray instance of 2 CPUs serves the module (Ray takes seconds to start). 1 worker runs in
this process without Ray; 2 workers run every seed as a Ray task in worker processes, so equal
results mean that an episode depends on its seed alone, not on the process or on what ran there
before. A worker that dies is retried, and a seed that cannot be done is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from skillcell.demos.recorder import ExpertDemoTask, generate_demos  # noqa: E402
from skillcell.evaluation import run_seeds  # noqa: E402
from skillcell.parallel import SeedFailedError, map_seeds  # noqa: E402
from skillcell.policies.episodes import EpisodeTask, PolicySpec  # noqa: E402

PEG, WELD = "skillcell/PegInsert-v0", "skillcell/WeldSeam-v0"
# This module's task classes travel to the workers by value: the workers cannot import a test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {k: os.environ[k] for k in ("MENAGERIE_ROOT", "MUJOCO_GL") if k in os.environ}})
    yield
    ray.shutdown()


def same_info(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_two_workers_run_the_episodes_of_one(local_ray):
    # D2: observation noise, F/T bias and latency drawn per episode from its seed.
    task = EpisodeTask(PEG, PolicySpec("scripted"), {"tier": "D2"})
    one = run_seeds(task, 4, seed=7)
    two = run_seeds(task, 4, seed=7, workers=2)
    assert [e.seed for e in two.episodes] == [7, 8, 9, 10]
    for a, b in zip(one.episodes, two.episodes, strict=True):
        assert (a.seed, a.steps, a.episode_return, a.terminated, a.truncated) == \
               (b.seed, b.steps, b.episode_return, b.terminated, b.truncated)
        assert same_info(a.final_info, b.final_info)
    assert one.report().split(";")[0] == two.report().split(";")[0]  # the success line; wall times differ
    assert len({e.steps for e in one.episodes}) > 1  # four different episodes, not one repeated


def _dataset_files(root: Path) -> dict[str, object]:
    """Every file of a dataset by content, creation times blanked: the one thing two runs may differ in.

    So the manifest's SHA-256 of each episode file (and the zip members' times) differ too; the
    episode files are compared member by member instead.
    """
    out: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"):
        rel = str(path.relative_to(root))
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                members = {name: z.read(name) for name in sorted(z.namelist())}
            meta = np.load(path)["meta"]
            members["meta.npy"] = {**json.loads(str(meta)), "created_utc": None}
            out[rel] = members
        else:
            text = path.read_text()
            out[rel] = "\n".join(line for line in text.splitlines() if "created_utc" not in line
                                 and "sha256" not in line)
    return out


def test_two_workers_write_the_dataset_of_one(local_ray, tmp_path):
    one, two = tmp_path / "one" / "demos", tmp_path / "two" / "demos"  # the folder's name is the dataset's
    generate_demos(PEG, 4, one, env_kwargs={"tier": "D2"}, progress=False)
    entries = generate_demos(PEG, 4, two, env_kwargs={"tier": "D2"}, progress=False, workers=2)
    assert [e.seed for e in entries] == [0, 1, 2, 3] and [e.id for e in entries] == [0, 1, 2, 3]
    files_one, files_two = _dataset_files(one), _dataset_files(two)
    assert sorted(files_one) == sorted(files_two) and len([f for f in files_one if f.endswith(".npz")]) == 4
    for name in files_one:
        assert files_one[name] == files_two[name], name


def test_two_workers_give_the_gate_of_one(local_ray, tmp_path):
    from skillcell.deploy.gate import run_gate

    overrides = {"episodes": 4, "runner_episodes": 0}
    one, two = (run_gate("scripted", PEG, tmp_path / name, tiers=["D2"], criteria_overrides=overrides, workers=n)
                for name, n in (("one", 1), ("two", 2)))
    assert [r.to_mapping() for r in one.results] == [r.to_mapping() for r in two.results]
    log_one, log_two = (r.record["tiers"]["D2"]["episode_log"] for r in (one, two))
    assert [e["seed"] for e in log_two] == [0, 1, 2, 3] and log_one == log_two


def test_a_novice_episode_depends_on_its_seed_alone(tmp_path):
    """The welder's wander is drawn per episode: seed 1 alone is seed 1 after seed 0 (what makes any split work)."""
    task = ExpertDemoTask(WELD, "novice", seed=5)
    both = map_seeds(task, [0, 1])
    alone = map_seeds(task, [1])
    assert np.array_equal(both[1].actions, alone[0].actions)
    assert not np.array_equal(both[0].actions[:50], both[1].actions[:50])  # the two episodes differ


@dataclass(frozen=True)
class DyingTask:
    """Squares seeds; the worker running ``die_on`` dies (``os._exit``) while ``marker`` does not exist, or always."""

    marker: str
    die_on: int
    always: bool = False

    def setup(self):
        return None

    def run(self, state, seed: int) -> int:
        if seed == self.die_on and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).touch()
            os._exit(1)
        return seed * seed

    def close(self, state) -> None:
        pass


def test_a_killed_worker_is_retried(local_ray, tmp_path):
    marker = tmp_path / "died"
    assert map_seeds(DyingTask(str(marker), die_on=2), range(5), workers=2) == [0, 1, 4, 9, 16]
    assert marker.exists()  # the worker did die once


def test_a_worker_that_keeps_dying_is_named(local_ray, tmp_path):
    with pytest.raises(SeedFailedError, match=r"^seed 3: its worker died on all 2 attempts") as info:
        map_seeds(DyingTask(str(tmp_path / "died"), die_on=3, always=True), range(5), workers=2, max_retries=1)
    assert info.value.seed == 3


@dataclass(frozen=True)
class FailingTask:
    def setup(self):
        return None

    def run(self, state, seed: int) -> int:
        if seed == 4:
            raise ArithmeticError("no result for this one")
        return seed

    def close(self, state) -> None:
        pass


def test_an_error_in_a_worker_names_the_seed(local_ray):
    with pytest.raises(SeedFailedError, match=r"^seed 4: ArithmeticError: no result for this one$"):
        map_seeds(FailingTask(), range(6), workers=2)


def test_bad_input_fails_before_any_worker(local_ray, tmp_path):
    with pytest.raises(ValueError, match="skill levels"):
        run_seeds(EpisodeTask(PEG, PolicySpec("scripted:novice")), 2, workers=2)


def test_one_worker_does_not_import_ray(tmp_path):
    code = ("import sys; from skillcell.cli import main; "
            f"code = main(['demos', 'generate', '{PEG}', '--episodes', '1', '--out', '{tmp_path / 'd'}', "
            "'--no-progress']); print(code, 'ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "0 False", result.stderr


def test_cli_refuses_zero_workers(capsys):
    from skillcell.cli import main

    assert main(["expert", PEG, "--episodes", "1", "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "skillcell: --workers must be at least 1, got 0"
