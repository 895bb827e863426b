"""LeRobot v3.0 export: read back with pyarrow (and pandas, as LeRobot reads its tables), videos decoded
with imageio, every frame compared with the episodes it came from."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import imageio.v2 as imageio
import mujoco
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import skillcell
from skillcell.demos import DemoDataset, DemoError, generate_demos
from skillcell.demos.lerobot_io import QUANTILES, export_lerobot, observation_names
from skillcell.demos.scores import score_episode

ENV_ID = "skillcell/PegInsert-v0"
CAMERAS = ("overview", "tool/closeup")
W, H = 96, 64


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("lerobot") / "peg-demos"
    generate_demos(ENV_ID, 2, out, seed=7, progress=False)
    return out


@pytest.fixture(scope="module")
def export(demos, tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot-root")
    result = export_lerobot(demos, out=root, repo_id="acme/peg", cameras=CAMERAS, width=W, height=H)
    return result


def _read(folder, pattern):
    """All parquet files of a v3 folder in chunk/file order, as one table (as LeRobot concatenates them)."""
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob(pattern))])


def _column(table, name):
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return column.to_numpy(zero_copy_only=False)


@pytest.fixture(scope="module")
def rendered(demos):
    """The frames the export should have encoded, per camera and episode: each stored state through the
    cell's renderer."""
    ours = list(DemoDataset(demos))
    env = gym.make(ENV_ID, render_mode="rgb_array", width=W, height=H, render_quality="fast")
    cell = env.unwrapped
    frames = {camera: [] for camera in CAMERAS}
    try:
        for episode in ours:
            env.reset(seed=episode.seed)
            per_camera = {camera: [] for camera in CAMERAS}
            for state in episode.states[:-1]:
                mujoco.mj_setState(cell.model, cell.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
                mujoco.mj_forward(cell.model, cell.data)
                for camera in CAMERAS:
                    cell.renderer.update_scene(cell.data, camera=camera)
                    per_camera[camera].append(cell.renderer.render())
            for camera in CAMERAS:
                frames[camera].append(np.stack(per_camera[camera]))
    finally:
        env.close()
    return frames


def test_every_frame_reads_back_as_ours(demos, export):
    assert export.path.name == "peg" and export.path.parent.name == "acme"
    ours = DemoDataset(demos)
    data = _read(export.path / "data", "*/*.parquet")
    episodes = _read(export.path / "meta" / "episodes", "*/*.parquet")
    tasks = pd.read_parquet(export.path / "meta" / "tasks.parquet")  # how LeRobot reads its task table
    assert data.num_rows == export.frames == sum(e.steps for e in ours.entries)
    assert _column(episodes, "episode_index").tolist() == [0, 1]
    np.testing.assert_array_equal(_column(data, "index"), np.arange(data.num_rows))
    expected_task = type(gym.make(ENV_ID).unwrapped).__doc__.strip().splitlines()[0]
    assert tasks.index.tolist() == [expected_task] and int(tasks.loc[expected_task].task_index) == 0
    start = 0
    for i, (entry, episode) in enumerate(zip(ours.entries, ours, strict=True)):
        n = episode.steps
        row = {k: v[i] for k, v in episodes.to_pydict().items()}
        assert (row["length"], row["dataset_from_index"], row["dataset_to_index"]) == (n, start, start + n)
        assert row["tasks"] == [expected_task]
        frames = data.slice(start, n)
        assert _column(frames, "observation.state").dtype == np.float32
        np.testing.assert_array_equal(_column(frames, "observation.state"), episode.observations[:n])
        np.testing.assert_array_equal(_column(frames, "action"), episode.actions)
        np.testing.assert_array_equal(_column(frames, "next.reward"), episode.rewards)
        np.testing.assert_array_equal(_column(frames, "next.done"), episode.terminations | episode.truncations)
        np.testing.assert_array_equal(_column(frames, "next.success"), episode.infos["is_success"][1:])
        np.testing.assert_array_equal(_column(frames, "frame_index"), np.arange(n))
        np.testing.assert_array_equal(_column(frames, "episode_index"), np.full(n, i))
        np.testing.assert_array_equal(_column(frames, "task_index"), np.zeros(n))
        np.testing.assert_array_equal(_column(frames, "timestamp"), (np.arange(n) / 20).astype(np.float32))
        assert bool(_column(frames, "next.done")[-1]), "the expert's episodes end terminated"
        for camera in CAMERAS:
            key = "observation.images." + camera.replace("/", "_")
            assert row[f"videos/{key}/from_timestamp"] == pytest.approx(start / 20)
            assert row[f"videos/{key}/to_timestamp"] == pytest.approx((start + n) / 20)
        # provenance and skill score travel with the episode
        assert row["skillcell/source_episode"] == entry.id and row["skillcell/seed"] == 7 + i
        assert row["provenance/operator_id"] == "scripted-expert" and row["provenance/consent"] is True
        assert row["provenance/site"] == "simulation" and row["skillcell/env_id"] == ENV_ID
        score = score_episode(episode)
        assert row["skill_score"] == score.score
        assert {k: row[f"skill_score/{k}"] for k in score.components} == score.components
        start += n


def test_info_json_describes_every_feature(demos, export):
    info = json.loads((export.path / "meta" / "info.json").read_text())
    ours = DemoDataset(demos)
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["robot_type"] == "ur5e"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, export.frames, 1)
    assert info["splits"] == {"train": "0:2"}
    assert info["chunks_size"] == 1000 and info["data_files_size_in_mb"] > 0 and info["video_files_size_in_mb"] > 0
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index", "observation.state", "action",
            "next.reward", "next.done", "next.success"} <= set(features)
    for key, feature in features.items():
        assert isinstance(feature["names"], list) and all(isinstance(n, str) for n in feature["names"]), key
        assert "/" not in key
        if feature["dtype"] == "video":
            assert feature["names"] == ["height", "width", "channels"] and feature["shape"] == [H, W, 3]
            video = feature["info"]
            assert (video["video.codec"], video["video.pix_fmt"], video["video.fps"]) == ("h264", "yuv420p", 20)
            assert (video["video.height"], video["video.width"], video["video.channels"]) == (H, W, 3)
        else:
            assert len(feature["names"]) == feature["shape"][0], key
    episode = ours[0]
    assert features["observation.state"]["names"] == observation_names(episode.obs_fields)
    assert features["observation.state"]["names"][:2] == ["joint_pos.0", "joint_pos.1"]
    assert "force_tool.z" in features["observation.state"]["names"]
    assert features["action"]["names"] == ["tcp_dx", "tcp_dy", "tcp_dz", "tcp_drx", "tcp_dry", "tcp_drz"]
    assert sorted(k for k, f in features.items() if f["dtype"] == "video") == [
        "observation.images.overview", "observation.images.tool_closeup"]
    # every file the episodes point at exists
    episodes = _read(export.path / "meta" / "episodes", "*/*.parquet").to_pylist()
    for row in episodes:
        assert (export.path / info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                       file_index=row["data/file_index"])).is_file()
        for key in export.video_keys:
            assert (export.path / info["video_path"].format(
                video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"])).is_file()


def _numpy_stats(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": [len(x)]}
    stats.update({k: np.quantile(x, q, axis=0) for k, q in QUANTILES.items()})
    return stats


def test_stats_are_numpys_over_every_frame_and_pixel(export, rendered):
    stats = json.loads((export.path / "meta" / "stats.json").read_text())
    info = json.loads((export.path / "meta" / "info.json").read_text())
    assert set(stats) == set(info["features"]), "every feature has stats, images included"
    assert set(QUANTILES) == {"q01", "q10", "q50", "q90", "q99"}
    data = _read(export.path / "data", "*/*.parquet")
    episodes = _read(export.path / "meta" / "episodes", "*/*.parquet").to_pylist()
    for key, feature in info["features"].items():
        if feature["dtype"] == "video":
            continue
        values = _column(data, key)
        for stat, expected in _numpy_stats(values).items():
            np.testing.assert_allclose(stats[key][stat], expected, rtol=1e-12, atol=0, err_msg=f"{key} {stat}")
        for row in episodes:  # per-episode stats in the episode table
            part = values[row["dataset_from_index"]:row["dataset_to_index"]]
            for stat, expected in _numpy_stats(part).items():
                np.testing.assert_allclose(row[f"stats/{key}/{stat}"], expected, rtol=1e-12, atol=0)

    for camera in CAMERAS:
        key = "observation.images." + camera.replace("/", "_")
        frames = np.concatenate(rendered[camera])
        pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
        image = stats[key]
        assert image["count"] == [len(frames)] == [export.frames]
        for stat, expected in _numpy_stats(pixels).items():
            if stat == "count":
                continue
            got = np.asarray(image[stat])
            assert got.shape == (3, 1, 1), (key, stat)
            np.testing.assert_allclose(got.ravel(), expected, rtol=1e-9, atol=1e-12, err_msg=f"{key} {stat}")
        assert 0 <= np.min(image["min"]) < np.max(image["max"]) <= 1


def test_videos_decode_to_the_stored_states(export, rendered):
    episodes = _read(export.path / "meta" / "episodes", "*/*.parquet").to_pylist()
    for camera in CAMERAS:
        key = "observation.images." + camera.replace("/", "_")
        with imageio.get_reader(export.path / "videos" / key / "chunk-000" / "file-000.mp4", "ffmpeg") as reader:
            decoded = np.stack(list(reader.iter_data()))
        assert decoded.shape == (export.frames, H, W, 3)
        for row, frames in zip(episodes, rendered[camera], strict=True):
            first = round(row[f"videos/{key}/from_timestamp"] * 20)
            last = round(row[f"videos/{key}/to_timestamp"] * 20)
            expected = frames.astype(np.int16)
            error = np.abs(decoded[first:last].astype(np.int16) - expected).mean(axis=(1, 2, 3))
            assert last - first == len(frames) and error.max() < 4.0, (key, error.max())
            # H.264 is lossy but not that lossy: the frame half an episode away is much further off
            shifted = np.abs(decoded[first:last].astype(np.int16) - np.roll(expected, len(frames) // 2, 0))
            assert shifted.mean() > 2 * error.mean(), (key, shifted.mean(), error.mean())


def test_existing_dataset_is_kept_unless_forced(demos, tmp_path):
    first = export_lerobot(demos, out=tmp_path, repo_id="acme/peg")
    info = (first.path / "meta" / "info.json").read_bytes()
    assert json.loads(info)["video_path"] is None and not (first.path / "videos").exists()
    with pytest.raises(DemoError, match="holds files already; pass --force"):
        export_lerobot(demos, out=tmp_path, repo_id="acme/peg", cameras=["overview"], width=W, height=H)
    assert (first.path / "meta" / "info.json").read_bytes() == info
    with pytest.raises(DemoError, match=r"has no camera nope; its cameras: overview, side, tool/closeup"):
        export_lerobot(demos, out=tmp_path, repo_id="acme/other", cameras=["nope"], width=W, height=H)
    with pytest.raises(DemoError, match="multiples of 16"):
        export_lerobot(demos, out=tmp_path, repo_id="acme/other", cameras=["overview"], width=100, height=H)
    with pytest.raises(DemoError, match="repo id"):
        export_lerobot(demos, out=tmp_path, repo_id="../escape")
    assert sorted(p.name for p in (tmp_path / "acme").iterdir()) == ["peg"], "nothing half-written is left"

    forced = export_lerobot(demos, out=tmp_path, repo_id="acme/peg", cameras=["overview"], width=W, height=H,
                            overwrite=True, min_score=0.0)
    assert forced.video_keys == ("observation.images.overview",)
    assert json.loads((forced.path / "meta" / "info.json").read_text())["total_episodes"] == 2
    assert sorted(p.name for p in (tmp_path / "acme").iterdir()) == ["peg"]


def test_files_roll_over_at_the_size_limits(demos, tmp_path, monkeypatch):
    from skillcell.demos import lerobot_io

    # every episode past the first starts a new data file and a new video file
    monkeypatch.setattr(lerobot_io, "DATA_FILES_SIZE_IN_MB", 1e-6)
    monkeypatch.setattr(lerobot_io, "VIDEO_FILES_SIZE_IN_MB", 1e-6)
    result = export_lerobot(demos, out=tmp_path, repo_id="acme/small", cameras=["side"], width=W, height=H)
    info = json.loads((result.path / "meta" / "info.json").read_text())
    episodes = _read(result.path / "meta" / "episodes", "*/*.parquet").to_pylist()
    key = "observation.images.side"
    assert [(r["data/chunk_index"], r["data/file_index"]) for r in episodes] == [(0, 0), (0, 1)]
    assert [(r[f"videos/{key}/file_index"], r[f"videos/{key}/from_timestamp"]) for r in episodes] == [(0, 0.0),
                                                                                                      (1, 0.0)]
    for row, episode in zip(episodes, DemoDataset(demos), strict=True):
        frames = pq.read_table(result.path / info["data_path"].format(chunk_index=0, file_index=row["data/file_index"]))
        np.testing.assert_array_equal(_column(frames, "observation.state"), episode.observations[:-1])
        np.testing.assert_array_equal(_column(frames, "index"),
                                      np.arange(row["dataset_from_index"], row["dataset_to_index"]))
        video = result.path / info["video_path"].format(video_key=key, chunk_index=0,
                                                        file_index=row[f"videos/{key}/file_index"])
        with imageio.get_reader(video, "ffmpeg") as reader:
            assert sum(1 for _ in reader.iter_data()) == episode.steps


def test_episodes_of_another_layout_are_refused(demos, tmp_path):
    from dataclasses import replace

    from skillcell.demos import DatasetWriter

    first = DemoDataset(demos)[0]
    mixed = tmp_path / "mixed"
    writer = DatasetWriter(mixed)
    writer.add(first)
    size = first.obs_fields[-1]["size"]  # as if recorded with a cell that observes one block less
    writer.add(replace(first, observations=first.observations[:, :-size], obs_fields=first.obs_fields[:-1]))
    with pytest.raises(DemoError, match="another observation layout"):
        export_lerobot(mixed, out=tmp_path / "root", repo_id="acme/mixed")
    assert not (tmp_path / "root" / "acme" / "mixed").exists() and not list((tmp_path / "root" / "acme").iterdir())


def test_every_cell_names_each_action_channel():
    for env_id in skillcell.skillcell_env_ids():
        env = gym.make(env_id)
        names = env.unwrapped.action_names
        assert len(names) == len(set(names)) == env.action_space.shape[0], env_id
        env.close()
    assert gym.make("skillcell/WeldSeam-v0").unwrapped.action_names[-1] == "arc"


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "skillcell", "demos", "export", *map(str, args), "--format", "lerobot",
                           "--no-progress"], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_cli_export_lerobot(demos, tmp_path):
    result = _cli(demos, "--out", tmp_path / "root", "--cameras", "side", "--width", "64", "--height", "48")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "root" / "skillcell" / "peg-demos"
    assert "LeRobot dataset skillcell/peg-demos: 2 episodes" in result.stdout and f"root='{folder}'" in result.stdout
    info = json.loads((folder / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.side"]["shape"] == [48, 64, 3]

    home = {"HF_LEROBOT_HOME": str(tmp_path / "home")}  # unset --out: where LeRobotDataset(repo_id) looks
    result = _cli(demos, "--repo-id", "acme/peg", **home)
    assert result.returncode == 0, result.stderr
    assert "LeRobotDataset('acme/peg'))" in result.stdout
    assert (tmp_path / "home" / "acme" / "peg" / "meta" / "info.json").is_file()
    again = _cli(demos, "--repo-id", "acme/peg", **home)
    assert again.returncode == 2 and "pass --force" in again.stderr and "Traceback" not in again.stderr
