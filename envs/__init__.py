"""skillcell cells as Gymnasium environments; importing `skillcell` registers them.

Adding a cell: ``assets/cells/<cell>/`` (scene.xml, cell.yaml, tiers.yaml, envelope.yaml,
criteria.yaml), its env module(s) under ``envs/cells/`` (its expert, scorer and review preset may
live wherever their layer allows) and one `register_cell` line below (`skillcell.envs.registry`).
``tests/test_cells.py`` and ``tests/test_envs.py`` loop over the registry and cover it from there.
"""

if __name__ != "skillcell.envs":
    raise ImportError("import skillcell.envs (after `pip install -e .`), not the envs/ folder directly")

from skillcell.envs.base import CellEnv, ObsField, RenderUnavailableError
from skillcell.envs.cell import (
    CellConfig,
    ControlConfig,
    MenagerieUnavailableError,
    RobotConfig,
    ToolConfig,
    compose_cell,
)
from skillcell.envs.registry import cell_ids, register_cell

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

#: every registered cell id, sorted (`skillcell.envs.registry.cell_ids`)
skillcell_env_ids = cell_ids

register_cell("skillcell/PegInsert-v0", "skillcell.envs.cells.peg_insert:PegInsertEnv",
              expert="skillcell.policies.peg_insert:PegInsertExpert", scorer="skillcell.demos.scores:PegInsertScorer",
              review="skillcell.review.overlays:peg_review", contact_task=True,
              run_to_end={"task": {"terminate_on_success": False}}, max_episode_steps=200)
register_cell("skillcell/SnapFit-v0", "skillcell.envs.cells.snap_fit:SnapFitEnv",
              expert="skillcell.policies.snap_fit:SnapFitExpert", scorer="skillcell.demos.snap_fit:SnapFitScorer",
              review="skillcell.review.snap_fit:snap_fit_review", contact_task=True,
              run_to_end={"task": {"terminate_on_success": False}}, max_episode_steps=300)
register_cell("skillcell/KeyedShaft-v0", "skillcell.envs.cells.keyed_shaft:KeyedShaftEnv",
              expert="skillcell.policies.keyed_shaft:KeyedShaftExpert",
              scorer="skillcell.demos.keyed_shaft:KeyedShaftScorer",
              review="skillcell.review.keyed_shaft:keyed_shaft_review", contact_task=True,
              run_to_end={"task": {"terminate_on_success": False}}, max_episode_steps=1000)
_WELD = {"entry_point": "skillcell.envs.cells.weld_seam:WeldSeamEnv",  # what the weld variants share
         "expert": "skillcell.policies.scripted:WeldSeamExpert", "scorer": "skillcell.demos.scores:WeldSeamScorer",
         "review": "skillcell.review.overlays:weld_review", "capture_signals": ("arc_on",),
         "run_to_end": {"task": {"terminate_at_seam_end": False}},
         "max_episode_steps": 1000}
register_cell("skillcell/WeldSeam-v0", **_WELD, kwargs={"variant": "fillet"})
register_cell("skillcell/WeldSeamLap-v0", **_WELD, kwargs={"variant": "lap"})
register_cell("skillcell/WeldSeamButt-v0", **_WELD, kwargs={"variant": "butt"})
register_cell("skillcell/WeldSeamCurved-v0", **_WELD, kwargs={"variant": "curved"})
register_cell("skillcell/WeldPipe-v0", **{**_WELD, "entry_point": "skillcell.envs.cells.weld_pipe:WeldPipeEnv",
                                          "review": "skillcell.review.weld_pipe:pipe_review"},
              kwargs={"variant": "pipe"})
register_cell("skillcell/WeldSeamCorner-v0",
              **{**_WELD, "entry_point": "skillcell.envs.cells.weld_corner:WeldCornerEnv",
                 "review": "skillcell.review.weld_corner:weld_corner_review"})
register_cell("skillcell/NutThread-v0", "skillcell.envs.cells.nut_thread:NutThreadEnv",
              expert="skillcell.policies.nut_thread:NutThreadExpert",
              scorer="skillcell.demos.nut_thread:NutThreadScorer", review="skillcell.review.nut_thread:nut_review",
              capture_signals=("spindle_on",), contact_task=True,
              run_to_end={"task": {"terminate_on_success": False}}, max_episode_steps=400)
