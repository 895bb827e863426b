"""One source for each limit: a cell declares a physical limit once, and every other file names it.

A cell's limits are in the file where they naturally live (PegInsert's rated insertion force in
``cell.yaml``'s ``limits:`` section, a weld's bands in its WPS) and `CellEnv.limits` gives them by
name, together with the numbers the cell derives from them by a named rule (PegInsert's F/T stop,
`skillcell.envs.fixture_task.FORCE_STOP_FACTOR` times the rated force). Files that need a
limit refer to it: a value ``"limits.<name>"`` in ``envelope.yaml`` or ``criteria.yaml`` (or in a
user's envelope or criteria file) is replaced by the cell's value when the file is loaded for that
cell (`resolve_limits`), so ``--set limits.rated_insertion_force_n=45`` moves the envelope, the
gate's KPI limit, the review's colour bands and the skill scorer together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skillcell.config import ConfigError, quote

__all__ = ["LIMIT_PREFIX", "has_limit_refs", "resolve_limits"]

#: how a YAML value refers to a cell limit: ``tool_force_max_n: limits.tool_force_stop_n``
LIMIT_PREFIX = "limits."


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(LIMIT_PREFIX)


def has_limit_refs(data: Any) -> bool:
    """Whether a loaded YAML value refers to a cell limit anywhere."""
    if isinstance(data, Mapping):
        return any(has_limit_refs(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return any(has_limit_refs(v) for v in data)
    return _is_ref(data)


def resolve_limits(data: Any, limits: Mapping[str, Any], where: str = "") -> Any:
    """``data`` with every ``"limits.<name>"`` value replaced by ``limits[name]``; an unknown name is a
    `ConfigError` naming the key and the cell's limits."""
    if isinstance(data, Mapping):
        return {k: resolve_limits(v, limits, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [resolve_limits(v, limits, f"{where}[{i}]") for i, v in enumerate(data)]
    if _is_ref(data):
        name = data[len(LIMIT_PREFIX):]
        if name not in limits:
            raise ConfigError(f"{where or 'value'}: {quote(data)} is not a limit of this cell "
                              f"(its limits: {', '.join(sorted(limits)) or 'none'})")
        return limits[name]
    return data
