"""`skillcell demos ...`, run as a user would: as subprocesses."""

import os
import subprocess
import sys

import numpy as np
import yaml

from skillcell.demos import FrameTransform
from skillcell.demos.synthetic import write_capture


def skillcell(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "skillcell", "demos", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_generate_replay_score_export(tmp_path):
    out = tmp_path / "peg"
    result = skillcell("generate", "skillcell/PegInsert-v0", "--episodes", "2", "--out", str(out), "--seed", "4",
                       "--no-progress", "--set", "workpiece.clearance_mm=0.3")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 episodes" in result.stdout and "success 2/2" in result.stdout

    result = skillcell("replay", str(out), "--mode", "state", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[PASS]") == 2 and "transitions bit-exact" in result.stdout

    video = tmp_path / "ep1.mp4"
    result = skillcell("replay", str(out), "--episode", "1", "--mode", "action", "--video", str(video),
                       "--width", "160", "--height", "128", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max TCP drift 0.000000 mm" in result.stdout and video.stat().st_size > 1000

    result = skillcell("score", str(out), "--min-score", "0.5", "--out", str(tmp_path / "best"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "scripted-expert" in result.stdout and "2/2 episodes score >= 0.5" in result.stdout
    assert (out / "scores.yaml").is_file() and (tmp_path / "best" / "dataset.yaml").is_file()

    minari_root = {"MINARI_DATASETS_PATH": str(tmp_path / "minari-root")}  # where Minari looks
    result = skillcell("export", str(out), "--format", "minari", "--no-progress", env=minari_root)
    assert result.returncode == 0, result.stderr
    assert "skillcell/peginsert/peg-v0" in result.stdout
    assert "open it with: python -c" in result.stdout  # nothing to set: it is where Minari looks
    check = subprocess.run([sys.executable, "-c", "import minari; print(minari.load_dataset("
                            "'skillcell/peginsert/peg-v0').total_episodes)"], capture_output=True, text=True,
                           env={**os.environ, **minari_root})
    assert check.stdout.strip() == "2", check.stderr


def test_import_good_and_bad_captures(tmp_path):
    def path(t):
        s = np.clip(np.asarray(t) / 2.0, 0.0, 1.0)[:, None]
        return np.array([0.45, 0.10, 0.96]) + s * [0.0, 0.02, 0.0], np.tile([0.0, 1.0, 0.0, 0.0], (len(s), 1))

    csv, _ = write_capture(tmp_path / "cap.csv", path, 2.0, cell_id="skillcell/PegInsert-v0", length_unit="mm",
                           capture_to_cell=FrameTransform())
    out = tmp_path / "imported"
    result = skillcell("import", str(csv), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("feasible: cap.csv -> skillcell/PegInsert-v0, 40/40 steps")
    assert yaml.safe_load((out / "reports" / "episode_000000_feasibility.yaml").read_text())["feasible"]

    lines = csv.read_text().splitlines(keepends=True)
    lines[20] = lines[20].replace(lines[20].split(",")[1], "oops", 1)
    csv.write_text("".join(lines))
    result = skillcell("import", str(csv), "--out", str(tmp_path / "never"), "--no-progress")
    assert result.returncode == 2
    assert "line 21, column 'x': 'oops' is not a number" in result.stderr
    assert not (tmp_path / "never").exists()
