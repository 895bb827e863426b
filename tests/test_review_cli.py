"""``skillcell render``: sources (episode, dataset, expert, SB3 model, run dir), GL backends, clear errors."""

import ctypes.util
import os
import subprocess
import sys

import gymnasium as gym
import imageio.v2 as imageio
import pytest

from skillcell.cli import main
from skillcell.demos import generate_demos

ENV_ID = "skillcell/PegInsert-v0"
SMALL = ["--width", "160", "--height", "128", "--no-progress"]


def _frames(path):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return [frame for frame in reader]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "demos"
    generate_demos(ENV_ID, 2, out, seed=5, progress=False)
    return out


def test_render_the_scripted_expert(tmp_path, capsys):
    out = tmp_path / "expert.mp4"
    assert main(["render", "expert", "--env", ENV_ID, "--out", str(out), "--max-steps", "12",
                 "--camera", "closeup", *SMALL]) == 0
    assert "13 frames" in capsys.readouterr().out
    frames = _frames(out)
    assert len(frames) == 13 and frames[0].shape[1] == 160


def test_render_a_dataset_episode_side_by_side_with_a_policy(tmp_path, dataset):
    out = tmp_path / "pair.mp4"
    assert main(["render", str(dataset), "--episode", "1", "--vs", "expert", "--out", str(out), "--every", "3",
                 *SMALL]) == 0
    frames = _frames(out)
    assert frames[0].shape[1] == 320
    episode_file = next((dataset / "episodes").glob("*.npz"))
    assert main(["render", str(episode_file), "--out", str(tmp_path / "one.mp4"), "--no-strip", *SMALL]) == 0
    assert _frames(tmp_path / "one.mp4")[0].shape == (128, 160, 3)


def test_render_an_sb3_model_and_a_run_directory(tmp_path):
    """A run directory as `skillcell train` writes it: model.zip, checkpoints/, config.yaml with env.id."""
    from stable_baselines3 import PPO

    env = gym.make(ENV_ID)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu")
    model.save(run / "model.zip")
    model.save(run / "checkpoints" / "model_000000064.zip")
    env.close()
    assert main(["render", str(run / "model.zip"), "--env", ENV_ID, "--out", str(tmp_path / "m.mp4"),
                 "--max-steps", "5", *SMALL]) == 0
    assert len(_frames(tmp_path / "m.mp4")) == 6
    assert main(["render", str(run), "--out", str(tmp_path / "r.mp4"), "--max-steps", "3", *SMALL]) == 2
    (run / "config.yaml").write_text(f"env:\n  id: {ENV_ID}\n  randomize: false\n")
    # The run directory: its final model, and the cell from its config; a checkpoint: the same cell.
    assert main(["render", str(run), "--out", str(tmp_path / "r.mp4"), "--max-steps", "3", *SMALL]) == 0
    assert len(_frames(tmp_path / "r.mp4")) == 4
    assert main(["render", str(run / "checkpoints" / "model_000000064.zip"), "--out", str(tmp_path / "c.mp4"),
                 "--max-steps", "2", *SMALL]) == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["expert"], "--env"),
    (["expert", "--env", ENV_ID, "--camera", "ceiling"], "overview, side, tool/closeup"),
    (["expert:wizard", "--env", ENV_ID], "skill levels"),
    (["no_such_model.zip", "--env", ENV_ID], "no_such_model.zip: no such file or folder"),
    (["expert", "--env", "skillcell/Nope-v0"], "unknown env"),
])
def test_render_input_errors_say_what_is_wrong(tmp_path, capsys, argv, message):
    out = tmp_path / "x.mp4"
    assert main(["render", *argv, "--out", str(out), *SMALL]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def _run(args, **env):
    return subprocess.run([sys.executable, "-m", "skillcell", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_without_opengl_render_names_the_packages_and_other_commands_work(tmp_path):
    out = tmp_path / "x.mp4"
    proc = _run(["render", "expert", "--env", ENV_ID, "--out", str(out), "--max-steps", "2", *SMALL],
                MUJOCO_GL="disable")
    assert proc.returncode == 3, proc.stderr
    for package in ("libegl1", "libgl1-mesa-dri", "libosmesa6", "MUJOCO_GL=egl"):
        assert package in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert not list(tmp_path.iterdir()), "nothing half-written, not even a folder"
    assert _run(["list"], MUJOCO_GL="disable").returncode == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("env_steps,success_rate\n0,0.0\n1000,0.5\n")
    proc = _run(["report", str(run), "--out", str(tmp_path / "r.html"), "--no-video"], MUJOCO_GL="disable")
    assert proc.returncode == 0 and (tmp_path / "r.html").is_file(), proc.stderr
    proc = _run(["expert", ENV_ID, "--episodes", "1", "--no-progress"], MUJOCO_GL="disable")
    assert proc.returncode == 0 and "success 1/1" in proc.stdout


@pytest.mark.parametrize("backend", ["egl", "osmesa"])
def test_render_works_with_each_headless_backend(tmp_path, backend):
    if backend == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("libosmesa6 is not installed")
    out = tmp_path / f"{backend}.mp4"
    # PyOpenGL must be told the same platform (this process has set it to egl by importing mujoco's EGL).
    proc = _run(["render", "expert", "--env", ENV_ID, "--out", str(out), "--max-steps", "4", *SMALL],
                MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    assert proc.returncode == 0, proc.stderr
    frames = _frames(out)
    assert len(frames) == 5 and frames[0][:128].std() > 10
