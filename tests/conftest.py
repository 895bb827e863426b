"""Test setup: headless rendering and offline Menagerie models, before anything imports mujoco."""

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED_MENAGERIE = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED_MENAGERIE.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED_MENAGERIE)
