"""skillcell cells as Gymnasium environments; importing `skillcell` registers them.

Adding a cell: ``assets/cells/<cell>/`` (scene.xml + cell.yaml), ``envs/cells/<cell>.py`` and one
`register` line below. The registry-wide tests pick it up from there.
"""

if __name__ != "skillcell.envs":
    raise ImportError("import skillcell.envs (after `pip install -e .`), not the envs/ folder directly")

from gymnasium.envs.registration import register, registry

from skillcell.envs.base import CellEnv, ObsField, RenderUnavailableError
from skillcell.envs.cell import CellConfig, ControlConfig, RobotConfig, ToolConfig, compose_cell

__all__ = [
    "CellConfig",
    "CellEnv",
    "ControlConfig",
    "ObsField",
    "RenderUnavailableError",
    "RobotConfig",
    "ToolConfig",
    "compose_cell",
    "skillcell_env_ids",
]

if "skillcell/PegInsert-v0" not in registry:
    register(id="skillcell/PegInsert-v0", entry_point="skillcell.envs.cells.peg_insert:PegInsertEnv",
             max_episode_steps=200)


def skillcell_env_ids() -> list[str]:
    """Every registered ``skillcell/*`` environment id, sorted."""
    return sorted(env_id for env_id in registry if env_id.startswith("skillcell/"))
