"""skillcell: simulation-in-the-loop robot learning for manufacturing cells.

``import skillcell`` registers the cells with Gymnasium::

    import gymnasium as gym
    import skillcell

    env = gym.make("skillcell/PegInsert-v0")
"""

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pkgutil import extend_path

# The source folder skillcell/ holds only part of the package (pyproject's package-dir maps envs/,
# policies/ and assets/ into it): imported from a clone's root, it takes the rest from the install.
__path__ = extend_path(__path__, __name__)

# MuJoCo picks its OpenGL backend when it is first imported (skillcell.envs imports it): without a
# display its default, GLFW, warns and cannot render, while EGL renders offscreen without one.
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

from skillcell import envs
from skillcell.config import ConfigError
from skillcell.envs import CellEnv, skillcell_env_ids

try:
    __version__ = version("skillcell")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["CellEnv", "ConfigError", "__version__", "envs", "skillcell_env_ids"]
