"""The examples run as written."""

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio

ROOT = Path(__file__).resolve().parents[1]


def test_expert_example_writes_a_video(tmp_path):
    video = tmp_path / "peg.mp4"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "peg_insert_expert.py"), "--episodes", "1",
                             "--video", str(video)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "success=True" in result.stdout
    frames = iio.imread(video)
    assert frames.shape[1:] == (480, 640, 3) and len(frames) > 20


def test_example_cell_yaml_loads():
    from skillcell.envs.cells.peg_insert import PegInsertEnv

    env = PegInsertEnv(cell=str(ROOT / "examples" / "cells" / "tight_peg.yaml"))
    assert env.config.workpiece.clearance_mm == 0.1
    assert env.config.workpiece.hole_depth_mm == 25.0


def test_example_weld_cell_with_its_own_wps():
    from skillcell.envs.cells.weld_seam import WeldSeamEnv

    env = WeldSeamEnv(variant="lap", cell=str(ROOT / "examples" / "cells" / "pipe_flange_lap.yaml"))
    assert env.wps.name == "GMAW-SC lap 6 mm flange"  # found next to the cell file
    assert env.config.joint.type == "lap" and env.config.joint.plate_thickness_mm == 6.0
    assert env.path.length > 0.06 + 0.07
