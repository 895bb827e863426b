"""skillcell cells as Gymnasium environments; importing `skillcell` registers them.

Adding a cell: ``assets/cells/<cell>/`` (scene.xml + cell.yaml), ``envs/cells/<cell>.py`` and one
`register` line below. The registry-wide tests pick it up from there.
"""

if __name__ != "skillcell.envs":
    raise ImportError("import skillcell.envs (after `pip install -e .`), not the envs/ folder directly")

from gymnasium.envs.registration import register, registry

from skillcell.envs.base import CellEnv, ObsField, RenderUnavailableError
from skillcell.envs.cell import (
    CellConfig,
    ControlConfig,
    MenagerieUnavailableError,
    RobotConfig,
    ToolConfig,
    compose_cell,
)

__all__ = [
    "CellConfig",
    "CellEnv",
    "ControlConfig",
    "MenagerieUnavailableError",
    "ObsField",
    "RenderUnavailableError",
    "RobotConfig",
    "ToolConfig",
    "compose_cell",
    "skillcell_env_ids",
]

_CELLS = [
    ("skillcell/PegInsert-v0", "skillcell.envs.cells.peg_insert:PegInsertEnv", 200, {}),
    ("skillcell/WeldSeam-v0", "skillcell.envs.cells.weld_seam:WeldSeamEnv", 1000, {"variant": "fillet"}),
    ("skillcell/WeldSeamLap-v0", "skillcell.envs.cells.weld_seam:WeldSeamEnv", 1000, {"variant": "lap"}),
    ("skillcell/WeldSeamButt-v0", "skillcell.envs.cells.weld_seam:WeldSeamEnv", 1000, {"variant": "butt"}),
    ("skillcell/WeldSeamCurved-v0", "skillcell.envs.cells.weld_seam:WeldSeamEnv", 1000, {"variant": "curved"}),
]
for _id, _entry_point, _max_steps, _kwargs in _CELLS:
    if _id not in registry:
        register(id=_id, entry_point=_entry_point, max_episode_steps=_max_steps, kwargs=_kwargs)


def skillcell_env_ids() -> list[str]:
    """Every registered ``skillcell/*`` environment id, sorted."""
    return sorted(env_id for env_id in registry if env_id.startswith("skillcell/"))
