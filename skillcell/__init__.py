"""skillcell: simulation-in-the-loop robot learning for manufacturing cells.

``import skillcell`` registers the cells with Gymnasium::

    import gymnasium as gym
    import skillcell

    env = gym.make("skillcell/PegInsert-v0")
"""

from importlib.metadata import PackageNotFoundError, version

from skillcell import envs
from skillcell.config import ConfigError
from skillcell.envs import CellEnv, skillcell_env_ids

try:
    __version__ = version("skillcell")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["CellEnv", "ConfigError", "__version__", "envs", "skillcell_env_ids"]
