"""Strict YAML configuration: mappings become frozen dataclasses, and every mistake names its key.

A config section is a frozen dataclass. Fields may declare bounds and units in their metadata::

    clearance_mm: float = field(default=0.4, metadata=bounds(0.1, 1.0))

`from_mapping` walks a mapping into such a dataclass and raises `ConfigError` with the dotted key
path (``workpiece.clearance_mm: must be in [0.1, 1.0], got 3.0``) for unknown keys, wrong types and
out-of-range values. A dataclass's own ``__post_init__`` checks raise `ConfigError` naming the
field (``"chamfer_mm: must be smaller than hole_depth_mm"``); the path in front is added here.
`merge` overlays partial mappings, which is how `gym.make` keyword overrides and `--set key=value`
reach a config.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["ConfigError", "bounds", "from_mapping", "load_yaml", "merge", "to_mapping"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def bounds(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    """Field metadata for an inclusive numeric range; applies element-wise to sequences."""
    return {"bounds": (low, high)}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping with `yaml.safe_load`; a missing file or a non-mapping is a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively overlays `override` on `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def to_mapping(obj: Any) -> Any:
    """The inverse of `from_mapping`: plain dicts, lists and scalars, ready for `yaml.safe_dump`."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_mapping(v) for v in obj]
    return obj


def from_mapping(cls: type[T], data: Any, where: str = "") -> T:
    """Builds the dataclass `cls` from `data`, checking keys, types and bounds recursively."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_key(where, unknown[0])}: unknown key (expected one of: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = _key(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
            continue
        value = _convert(hints[name], data[name], key)
        low, high = f.metadata.get("bounds", (None, None))
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if (low is not None and v < low) or (high is not None and v > high):
                    raise ConfigError(f"{key}: must be in [{low}, {high}], got {v}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # Checks in __post_init__ name the field; the caller's path goes in front.
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {list(allowed)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")
