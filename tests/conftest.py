"""Test setup: headless rendering and offline Menagerie models, before anything imports mujoco."""

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED_MENAGERIE = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED_MENAGERIE.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED_MENAGERIE)


import typing  # noqa: E402  (after the environment above, as everything below imports mujoco)
from dataclasses import dataclass  # noqa: E402

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402

import skillcell  # noqa: E402, F401  (registers the cells)
from skillcell.config import merge  # noqa: E402
from skillcell.envs.cell import ControlConfig  # noqa: E402
from skillcell.envs.registry import cell_ids, cell_spec  # noqa: E402

#: every control mode a cell config can select (``control.mode``)
CONTROL_MODES = typing.get_args(typing.get_type_hints(ControlConfig)["mode"])


@dataclass(frozen=True)
class CellCase:
    """A registered cell as the registry-wide tests make it: a contact cell once per control mode
    (its config's ``control.mode`` set), any other cell as declared (``mode`` None)."""

    env_id: str
    mode: str | None = None

    def kwargs(self, **kwargs) -> dict:
        """``kwargs`` for `gym.make` with this case's control mode laid over ``overrides``."""
        if self.mode is not None:
            kwargs["overrides"] = merge({"control": {"mode": self.mode}}, kwargs.get("overrides") or {})
        return kwargs

    def make(self, **kwargs):
        """``gym.make(env_id, ...)`` in this case's control mode."""
        return gym.make(self.env_id, **self.kwargs(**kwargs))

    def __str__(self) -> str:
        return self.env_id if self.mode is None else f"{self.env_id}-{self.mode}"


CELL_CASES = [CellCase(env_id, mode) for env_id in cell_ids()
              for mode in (CONTROL_MODES if cell_spec(env_id).contact_task else (None,))]


@pytest.fixture(scope="module", params=CELL_CASES, ids=str)
def cell_case(request) -> CellCase:
    """Each registered cell, a contact cell in each control mode (`CellCase`)."""
    return request.param
