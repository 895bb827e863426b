"""Cell, tool and workpiece descriptions (MJCF + YAML), shipped as package data.

One folder per asset: ``cells/<cell>/`` holds ``scene.xml`` (the world) and ``cell.yaml`` (robot,
tool, workpiece, fixture pose, randomization); ``tools/<tool>/tool.xml`` holds a tool. Robots are
not copied here: they come from MuJoCo Menagerie through the ``mujoco-menagerie`` package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["path"]


def path(*parts: str) -> Path:
    """Absolute path of a file shipped in ``skillcell.assets`` (e.g. ``path("cells", "peg_insert")``)."""
    return Path(str(files(__name__).joinpath(*parts)))
