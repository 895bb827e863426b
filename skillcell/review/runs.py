"""What a review reads from a training run directory: its final model, its config and its cell.

`skillcell render` and `skillcell report` accept a run directory wherever they take a model; these
readers find the model and the env the run trained in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skillcell.config import ConfigError, parse_yaml

__all__ = ["find_key", "model_in_run_dir", "read_run_config", "run_env", "run_env_of_model"]


def model_in_run_dir(path: Path) -> Path:
    """The final model of a training run directory (``model.zip``, as `skillcell train` writes it, or
    ``final_model.zip``, or the only ``*.zip``)."""
    for name in ("model.zip", "final_model.zip", "final.zip"):
        if (path / name).is_file():
            return path / name
    zips = sorted(path.glob("*.zip"))
    if len(zips) == 1:
        return zips[0]
    raise ValueError(f"{path}: no final model found (model.zip, final_model.zip or a single .zip)")


def read_run_config(folder: Path) -> tuple[Path | None, Any]:
    """The config of a training run directory (``config.yaml``, ``.yml``, ``.json`` or ``run.yaml``)."""
    for name in ("config.yaml", "config.yml", "config.json", "run.yaml"):
        file = folder / name
        if file.is_file():
            text = file.read_text(errors="replace")
            try:
                return file, (json.loads(text) if file.suffix == ".json" else parse_yaml(text, str(file)))
            except ValueError:  # ConfigError too: the report then shows the text as it is
                return file, text
    return None, None


def run_env(folder: Path) -> tuple[str | None, dict[str, Any]]:
    """``(env_id, env_kwargs)`` of a training run directory, from its config (or ``summary.yaml``).

    Understands `skillcell train`'s config (``env: {id, tier, randomize, cell, overrides}``) and
    flat ones (``env_id: ...`` or ``env: <id>``).
    """
    _, config = read_run_config(folder)
    env_id, kwargs = None, {}
    if isinstance(config, dict):
        env = config.get("env")
        if isinstance(env, dict):
            env_id = env.get("id") if isinstance(env.get("id"), str) else None
            if env.get("tier"):
                kwargs["tier"] = env["tier"]
            if env.get("randomize") is False:
                kwargs["randomize"] = False
            if env.get("cell"):
                kwargs["cell"] = env["cell"]
            if env.get("overrides"):
                kwargs["overrides"] = env["overrides"]
        env_id = env_id or find_key(config, ("env_id", "env"))
    summary = folder / "summary.yaml"
    if env_id is None and summary.is_file():
        try:
            env_id = find_key(parse_yaml(summary.read_text(errors="replace"), str(summary)), ("env_id",))
        except ConfigError:
            pass
    return env_id, kwargs


def run_env_of_model(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The run config's env for a model in a run directory (or in its ``checkpoints/``)."""
    for folder in (path.parent, path.parent.parent):
        env_id, kwargs = run_env(folder)
        if env_id is not None:
            return env_id, kwargs
    return None, {}


def find_key(data: Any, keys: tuple[str, ...]) -> Any:
    """The first string value under one of ``keys`` in a nested mapping, searched breadth first per level."""
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), str):
                return data[key]
        for value in data.values():
            found = find_key(value, keys)
            if found is not None:
                return found
    return None
