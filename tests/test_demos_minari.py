"""Minari export: `minari.load_dataset` opens it, and its episodes are ours."""

import os

import minari
import numpy as np
import pytest

from skillcell.demos import DemoDataset, DemoError, export_minari, generate_demos

ENV_ID = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("minari") / "expert-demos"
    generate_demos(ENV_ID, 3, out, seed=20, progress=False)
    return out


@pytest.fixture
def datasets_path(monkeypatch):
    def point(root):
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))

    return point


def test_minari_loads_the_export_and_its_episodes_match_ours(dataset, tmp_path, datasets_path):
    before = os.environ.get("MINARI_DATASETS_PATH")
    dataset_id, root = export_minari(dataset, out=tmp_path / "minari")
    assert dataset_id == "skillcell/peginsert/expert-demos-v0" and root == tmp_path / "minari"
    assert os.environ.get("MINARI_DATASETS_PATH") == before  # the export does not leak its setting
    assert not list(root.glob(".staging*"))

    datasets_path(root)
    loaded = minari.load_dataset(dataset_id)
    ours = DemoDataset(dataset)
    assert loaded.total_episodes == len(ours) == 3
    assert loaded.total_steps == sum(e.steps for e in ours.entries)
    for theirs, mine in zip(loaded.iterate_episodes(), ours, strict=True):
        np.testing.assert_array_equal(theirs.observations, mine.observations)
        np.testing.assert_array_equal(theirs.actions, mine.actions)
        np.testing.assert_array_equal(theirs.rewards, mine.rewards)
        np.testing.assert_array_equal(theirs.terminations, mine.terminations)
        np.testing.assert_array_equal(theirs.truncations, mine.truncations)
        np.testing.assert_array_equal(theirs.infos["peak_insertion_force_n"], mine.infos["peak_insertion_force_n"])
    assert [m["seed"] for m in loaded.storage.get_episode_metadata(loaded.episode_indices)] == [20, 21, 22]
    env = loaded.recover_environment()
    assert env.spec.id == ENV_ID and env.observation_space == loaded.observation_space
    env.close()


@pytest.mark.parametrize("where", ["MINARI_DATASETS_PATH", "HOME"])
def test_export_goes_where_minari_looks(dataset, tmp_path, monkeypatch, where):
    if where == "HOME":  # unset: Minari's default root under the home folder
        monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        expected = tmp_path / ".minari" / "datasets"
    else:
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
        expected = tmp_path / "datasets"
    dataset_id, root = export_minari(dataset)
    assert root == expected and (root / dataset_id).is_dir()
    assert not (dataset / "minari").exists()
    assert minari.load_dataset(dataset_id).total_episodes == 3  # with nothing else set


def test_export_never_overwrites_and_can_filter_by_score(dataset, tmp_path, datasets_path):
    dataset_id, root = export_minari(dataset, out=tmp_path / "m", dataset_id="skillcell/peginsert/best-v0",
                                     min_score=0.5)
    with pytest.raises(DemoError, match="exists already"):
        export_minari(dataset, out=tmp_path / "m", dataset_id="skillcell/peginsert/best-v0")
    with pytest.raises(DemoError, match="no episodes"):
        export_minari(dataset, out=tmp_path / "m", dataset_id="skillcell/peginsert/none-v0", min_score=1.01)
    datasets_path(root)
    assert minari.load_dataset(dataset_id).total_episodes == 3  # every expert episode scores above 0.5
