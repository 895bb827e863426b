"""Strict YAML configuration: mappings become frozen dataclasses, and every mistake names its key.

A config section is a frozen dataclass. Fields may declare bounds and units in their metadata::

    clearance_mm: float = field(default=0.4, metadata=bounds(0.1, 1.0))

`from_mapping` walks a mapping into such a dataclass and raises `ConfigError` with the dotted key
path (``workpiece.clearance_mm: must be in [0.1, 1.0], got 3.0``) for unknown keys, wrong types and
out-of-range values. A dataclass's own ``__post_init__`` checks raise `ConfigError` naming the
field (``"chamfer_mm: must be smaller than hole_depth_mm"``); the path in front is added here.
`merge` overlays partial mappings, which is how `gym.make` keyword overrides and `--set key=value`
reach a config.

Every YAML a user hands over (cell files, ``--set`` values, train configs, gate criteria, safety
envelopes, capture sidecars, dataset manifests) is parsed by `parse_yaml`, PyYAML's safe loader
with three additions: a duplicate key is an error naming it (PyYAML would keep the last one
silently); aliases may add at most `MAX_ALIAS_NODES` nodes in all (a few hundred bytes of nested
aliases otherwise expand to a billion: the "billion laughs"; anchors and ``<<`` merges stay
usable for sharing settings, which is why aliases are bounded rather than refused) and may not
refer to themselves; and the error is one line with line and column. Messages show a value
through `quote`, at most `MAX_QUOTED_CHARS` characters of it.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_QUOTED_CHARS",
    "ConfigError",
    "bounds",
    "from_mapping",
    "load_yaml",
    "merge",
    "parse_yaml",
    "quote",
    "to_mapping",
]

T = TypeVar("T")

#: nodes that all aliases of one YAML document may add when expanded (a config needs a few hundred)
MAX_ALIAS_NODES = 10_000
#: characters of a value that an error message shows
MAX_QUOTED_CHARS = 200

_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = MAX_QUOTED_CHARS
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = 20


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def bounds(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    """Field metadata for an inclusive numeric range; applies element-wise to sequences."""
    return {"bounds": (low, high)}


def quote(value: Any) -> str:
    """``repr(value)`` cut to about `MAX_QUOTED_CHARS` characters, for error messages."""
    text = _QUOTE.repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."


class _RefusedYamlError(yaml.MarkedYAMLError):
    """Valid YAML that a user file may still not contain (a duplicate key, an alias bomb)."""


class _UserYamlLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate keys and bounds alias expansion (see the module docstring)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._open_anchors: set[str] = set()
        self._sizes: dict[int, tuple[int, yaml.Node]] = {}
        self._alias_nodes = 0

    def _expanded_size(self, node: yaml.Node) -> int:
        # Memoized per node: the composed graph shares aliased nodes, so this stays linear in the file.
        known = self._sizes.get(id(node))
        if known is None:
            if isinstance(node, yaml.ScalarNode):
                children: list[yaml.Node] = []
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = [n for pair in node.value for n in pair]
            known = (1 + sum(self._expanded_size(child) for child in children), node)  # the node keeps its id
            self._sizes[id(node)] = known
        return known[0]

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                raise _RefusedYamlError(None, None, f"alias *{event.anchor} refers to a node that contains it",
                                        event.start_mark)
            if event.anchor in self.anchors:
                self._alias_nodes += self._expanded_size(self.anchors[event.anchor])
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise _RefusedYamlError(
                        None, None, f"aliases expand to more than {MAX_ALIAS_NODES} nodes (refused: an alias bomb?)",
                        event.start_mark)
            return super().compose_node(parent, index)
        anchor = self.peek_event().anchor
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors.discard(anchor)

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        # Before `flatten_mapping` mixes in ``<<`` merges, whose keys an explicit key may override.
        node.explicit_keys = [k for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node in getattr(node, "explicit_keys", ()):
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # unhashable: the base constructor says so
                    continue
                if first is not key_node:
                    raise _RefusedYamlError(
                        None, None, f"duplicate key {quote(key)} (first on line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str = "") -> Any:
    """Parses one YAML document from a user (see the module docstring); a `ConfigError` names ``where``."""
    prefix = f"{where}: " if where else ""
    try:
        return yaml.load(text, Loader=_UserYamlLoader)  # a SafeLoader: builds plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "not valid YAML"
        kind = "" if isinstance(exc, _RefusedYamlError) else "not valid YAML: "
        raise ConfigError(f"{prefix}{kind}{at}{problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{prefix}not valid YAML: {str(exc).splitlines()[0]}") from None  # a reader error
    except RecursionError:
        raise ConfigError(f"{prefix}not valid YAML: nested too deeply") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping with `parse_yaml`; a missing file or a non-mapping is a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    data = parse_yaml(text, str(path))
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
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        name = str(unknown[0])
        name = name if len(name) <= MAX_QUOTED_CHARS else name[:MAX_QUOTED_CHARS] + "..."
        raise ConfigError(f"{_key(where, name)}: unknown key (expected one of: {', '.join(sorted(fields))})")
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
            raise ConfigError(f"{key}: expected a list, got {quote(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {quote(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {quote(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {quote(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {quote(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {quote(value)}")
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {list(allowed)}, got {quote(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")
