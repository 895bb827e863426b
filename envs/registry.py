"""The cell registry: one `register_cell` call says everything the rest of skillcell needs of a cell.

``register_cell(id, entry_point, expert=..., scorer=..., review=..., capture_signals=...,
contact_task=..., run_to_end=..., max_episode_steps=..., kwargs=...)``
registers the id with Gymnasium (so ``gym.make(id)`` works) and records, as lazy ``"module:Name"``
strings resolved on first use:

- ``entry_point``: the `CellEnv` subclass (its ``kpi_keys`` are the process KPIs that the CLI, the
  training metrics, reports and the gate list);
- ``expert``: the scripted expert class, ``Expert(env, skill=..., seed=...)``
  (`skillcell.policies.make_expert`);
- ``scorer``: the skill scorer class, whose instances map an `Episode` to a `SkillScore`
  (`skillcell.demos.score_episode`);
- ``review``: ``review(cell) -> CellReview``, what review videos and reports show
  (`skillcell.review.overlays.cell_review`).

What a human capture of the cell needs (`skillcell.demos.import_capture`):

- ``capture_signals`` names, per task action channel (``action[6:]``), the capture signal column
  that drives it (welding: ``("arc_on",)``);
- ``contact_task``: the tool works in contact with the part (an insertion, not a weld): tool
  contact is then no collision, and the import runs the cell in its compliant control mode
  where the cell offers one;
- ``run_to_end``: the config overrides under which an episode runs on past the task's outcome
  (the peg seated, the seam end reached) to its time limit, still judging success where the
  cell does, so that an import keeps the whole capture (crater fill, arc off, hold).

The registry is in the lowest layer (``skillcell.envs``) and names higher layers' objects only by
those strings, so no import points upward and ``import skillcell`` imports no cell, expert,
scorer or review module. Every lookup (`cell_spec` by id, `spec_of` by env) goes through here;
nothing else keeps a table of cells.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gymnasium.envs.registration import register, registry

__all__ = ["CellSpec", "UnknownCellError", "cell_config", "cell_ids", "cell_spec", "register_cell", "resolve",
           "spec_of"]

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CELLS: dict[str, CellSpec] = {}
_RESOLVED: dict[str, Any] = {}


class UnknownCellError(ValueError):
    """An env id (or env) that no `register_cell` call declared."""


def resolve(ref: str) -> Any:
    """The object named by ``"package.module:Name"``, imported on first use and cached."""
    if ref not in _RESOLVED:
        module, _, name = ref.partition(":")
        try:
            _RESOLVED[ref] = getattr(importlib.import_module(module), name)
        except AttributeError:
            raise ImportError(f"{ref}: module {module} has no attribute {name!r}") from None
    return _RESOLVED[ref]


@dataclass(frozen=True)
class CellSpec:
    """One registered cell; the ``*_ref`` fields are ``"module:Name"`` strings (None: not declared)."""

    id: str
    entry_point: str
    expert_ref: str | None = None
    scorer_ref: str | None = None
    review_ref: str | None = None
    capture_signals: tuple[str, ...] = ()
    contact_task: bool = False
    run_to_end: Mapping[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def env_class(self) -> type:
        return resolve(self.entry_point)

    @property
    def expert(self) -> type | None:
        return resolve(self.expert_ref) if self.expert_ref else None

    @property
    def scorer(self) -> type | None:
        return resolve(self.scorer_ref) if self.scorer_ref else None

    @property
    def review(self) -> Any:
        return resolve(self.review_ref) if self.review_ref else None

    @property
    def kpi_keys(self) -> tuple[str, ...]:
        """The cell's process KPIs: final-step ``info`` keys, declared on its env class."""
        return tuple(self.env_class.kpi_keys)

    def config(self, **env_kwargs: Any):
        """The cell's config for these `gym.make` keywords (over the registered ones), without building
        the model; keywords that do not configure the cell (``render_mode``, ``tier``...) are ignored."""
        return self.env_class.load_config(**{**self.kwargs, **env_kwargs})


def register_cell(id: str, entry_point: str, *, expert: str | None = None, scorer: str | None = None,
                  review: str | None = None, capture_signals: tuple[str, ...] = (),
                  contact_task: bool = False, run_to_end: Mapping[str, Any] | None = None,
                  max_episode_steps: int | None = None,
                  kwargs: Mapping[str, Any] | None = None) -> CellSpec:
    """Declares a cell (see the module docstring) and registers ``id`` with Gymnasium.

    Registering the same declaration again is a no-op (a module imported twice); a different one
    under a taken id is an error.
    """
    for role, ref in (("entry_point", entry_point), ("expert", expert), ("scorer", scorer), ("review", review)):
        if ref is not None and not (isinstance(ref, str) and _REF.match(ref)):
            raise ValueError(f"register_cell({id!r}): {role} must be a 'package.module:Name' string, got {ref!r}")
    spec = CellSpec(id=id, entry_point=entry_point, expert_ref=expert, scorer_ref=scorer, review_ref=review,
                    capture_signals=tuple(capture_signals), contact_task=bool(contact_task),
                    run_to_end=dict(run_to_end or {}),
                    max_episode_steps=max_episode_steps, kwargs=dict(kwargs or {}))
    known = _CELLS.get(id)
    if known is not None:
        if known != spec:
            raise ValueError(f"register_cell: {id!r} is already registered as {known}")
        return known
    if id in registry:
        raise ValueError(f"register_cell: {id!r} is already a Gymnasium id not declared here")
    register(id=id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=dict(spec.kwargs))
    _CELLS[id] = spec
    return spec


def cell_ids() -> list[str]:
    """Every registered cell id, sorted."""
    return sorted(_CELLS)


def cell_spec(env_id: str) -> CellSpec:
    """The registration of ``env_id``; an unknown id is an `UnknownCellError` listing the known ones."""
    try:
        return _CELLS[env_id]
    except (KeyError, TypeError):
        raise UnknownCellError(f"unknown cell {env_id!r}; registered: {', '.join(cell_ids())}") from None


def spec_of(env: Any) -> CellSpec:
    """The registration of a cell env (wrapped or not): by the id `gym.make` gave it, else by its class
    or the nearest registered base class (an env built directly, or a user's subclass)."""
    cell = getattr(env, "unwrapped", env)
    env_id = getattr(getattr(cell, "spec", None), "id", None)
    if env_id in _CELLS:
        return _CELLS[env_id]
    for klass in type(cell).__mro__:
        for spec in _CELLS.values():
            if spec.env_class is klass:
                return spec
    raise UnknownCellError(f"{type(cell).__name__} is not a registered cell; registered: {', '.join(cell_ids())}")


def cell_config(env_id: str, **env_kwargs: Any):
    """`CellSpec.config` of ``env_id``: the config an env made with these keywords would have."""
    return cell_spec(env_id).config(**env_kwargs)
