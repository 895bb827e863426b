"""ONNX export of a stable-baselines3 policy that maps a raw observation to a physical command.

SB3's export recipe (docs "Exporting models") wraps the policy in a module and exports it, but
its graph "returns normalized actions and doesn't include the post-processing step" and leaves
observation normalization (`VecNormalize`) out. The graph exported here has it all, so nothing
but onnxruntime is needed on the robot PC:

``obs`` (float32, ``(batch, obs_size)``, raw env observation)
  -> ``VecNormalize`` normalization (``clip((obs - mean) / sqrt(var + eps), -clip_obs, clip_obs)``,
  in float64 like SB3, then float32), when a stats file is given
  -> the policy's deterministic action (``policy._predict(obs, deterministic=True)``: the
  Gaussian mean for PPO/A2C, ``tanh`` of the mean for SAC, the actor for TD3)
  -> clipping to the action space (policies without a squashing output) or unscaling from
  ``[-1, 1]`` (squashing policies), exactly as ``BasePolicy.predict`` does
  -> outputs ``action`` (the env's normalized action) and ``command`` (``action`` times the
  cell's action scale: the TCP pose delta per control period in metres and radians, cell frame,
  then the task channels; `skillcell.deploy.runner`).

A residual run (`skillcell.policies.residual`) exports as base + residual in one graph
(`export_residual_onnx`); `export_run` and `run_parity` take either kind.

The exporter is PyTorch's ``torch.export``-based one (``torch.onnx.export(..., dynamo=True)``,
the default since PyTorch 2.9; it needs ``onnxscript``). The TorchScript-based exporter still
works in PyTorch 2.13 but is deprecated, as TorchScript itself is.

Models come in through `skillcell.policies.loading`, which reads an SB3 ``.zip`` and its
``VecNormalize`` file as data unless they are declared trusted (their pickles would run code).
The robot gets the ONNX file, whose SHA-256 ``gate.yaml`` records.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from skillcell.atomic import atomic_write_bytes
from skillcell.deploy.runner import OnnxPolicy, command_scale
from skillcell.paths import sha256_file
from skillcell.policies.frozen import SB3Policy
from skillcell.policies.loading import LoadedModel, ObsNormalization
from skillcell.policies.residual import ResidualRun, compose, learned_base
from skillcell.rollout import Policy

__all__ = [
    "ExportResult",
    "export_onnx",
    "export_residual_onnx",
    "export_run",
    "onnx_parity",
    "policy_module",
    "residual_parity",
    "run_parity",
    "save_onnx",
    "sb3_actions",
]

OPSET = 18


def _check_spaces(model: Any, env: Any, obs_norm: ObsNormalization | None) -> None:
    obs_space, act_space = model.observation_space, model.action_space
    if not isinstance(obs_space, spaces.Box) or not isinstance(act_space, spaces.Box):
        raise ValueError("only Box observation and action spaces can be exported")
    u = env.unwrapped
    if obs_space.shape != u.observation_space.shape:
        (n,), (a,) = u.observation_space.shape, u.action_space.shape
        k, rest = divmod(obs_space.shape[0] - a, n) if len(obs_space.shape) == 1 else (0, 1)
        if k >= 1 and rest == 0:
            # skillcell.policies.history: the graph is stateless and the runner feeds one observation.
            residual = (" or it is a residual policy (observation + base action), which exports with its base "
                        "through its run's residual.yaml (skillcell gate RUN/model.zip)") if k == 1 else ""
            raise ValueError(f"the model observes {obs_space.shape[0]} = {k} x {n} observations + an action: it "
                             f"was trained with an observation history (env.history: {k}), which the ONNX runner "
                             f"does not keep, so train without env.history to export{residual}")
        raise ValueError(f"the model observes {obs_space.shape}, the env {u.observation_space.shape}")
    if act_space.shape != u.action_space.shape:
        raise ValueError(f"the model acts in {act_space.shape}, the env in {u.action_space.shape}")
    if obs_norm is not None and obs_norm.mean.shape != obs_space.shape:
        raise ValueError(f"VecNormalize statistics have shape {obs_norm.mean.shape}, observations {obs_space.shape}")


def policy_module(policy: Any, obs_norm: ObsNormalization | None, scale: np.ndarray):
    """A torch module: raw observation -> ``(action, command)``, SB3's deterministic predict (see the
    module docstring); the building block of `export_onnx` and of composite policies."""
    import torch

    class OnnxablePolicy(torch.nn.Module):
        """SB3's ``OnnxableSB3Policy`` plus normalization, clipping/unscaling and physical units."""

        def __init__(self):
            super().__init__()
            self.policy = policy
            low = torch.as_tensor(policy.action_space.low, dtype=torch.float32)
            high = torch.as_tensor(policy.action_space.high, dtype=torch.float32)
            self.register_buffer("low", low)
            self.register_buffer("high", high)
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
            self.squash = bool(policy.squash_output)
            self.normalize = obs_norm is not None
            if obs_norm is not None:
                self.register_buffer("obs_mean", torch.as_tensor(obs_norm.mean, dtype=torch.float64))
                self.register_buffer("obs_den", torch.sqrt(torch.as_tensor(obs_norm.var + obs_norm.epsilon,
                                                                           dtype=torch.float64)))
                self.clip_obs = float(obs_norm.clip_obs)

        def forward(self, obs):
            x = obs
            if self.normalize:
                x = torch.clamp((obs.double() - self.obs_mean) / self.obs_den, -self.clip_obs, self.clip_obs).float()
            action = self.policy._predict(x, deterministic=True).reshape(obs.shape[0], -1)
            if self.squash:
                action = self.low + 0.5 * (action + 1.0) * (self.high - self.low)
            else:
                action = torch.clamp(action, self.low, self.high)
            return action, action * self.scale

    return OnnxablePolicy().eval()


@dataclass(frozen=True)
class ExportResult:
    """An exported ONNX file: where it is, its SHA-256 and the metadata written into it."""

    path: Path
    sha256: str
    metadata: dict[str, str]


def export_onnx(loaded: LoadedModel | Any, env: Any, path: str | Path,
                obs_norm: ObsNormalization | None = None, env_id: str | None = None) -> ExportResult:
    """Exports ``loaded`` (a `LoadedModel` or an SB3 model) for ``env``'s cell to ``path``, atomically.

    The file carries metadata (``metadata_props``): units, control period, scales, source hash.
    """
    if isinstance(loaded, LoadedModel):
        model, obs_norm, source_sha = loaded.model, loaded.obs_norm, loaded.sha256
    else:
        model, source_sha = loaded, ""
    _check_spaces(model, env, obs_norm)
    policy = model.policy
    policy.set_training_mode(False)
    module = policy_module(policy, obs_norm, command_scale(env))
    return save_onnx(module, env, path, {
        "obs_normalization": "vecnormalize" if obs_norm is not None else "none",
        "action_postprocess": "unscale" if policy.squash_output else "clip",
        "source_sha256": source_sha,
    }, env_id=env_id)


def save_onnx(module: Any, env: Any, path: str | Path, metadata: dict[str, str],
              env_id: str | None = None) -> ExportResult:
    """Exports a torch ``module`` (raw observation batch -> ``(action, command)``) for ``env``'s cell to
    ``path``, atomically, with the cell's units, scales and control period and ``metadata`` in its
    ``metadata_props``."""
    import onnx
    import torch
    from torch.distributions import Distribution

    u = env.unwrapped
    example = torch.zeros((2, u.observation_space.shape[0]), dtype=torch.float32)
    # Distribution argument validation is data-dependent Python control flow that torch.export
    # cannot trace; the exported graph never samples, so it is switched off for the export only.
    validate = Distribution._validate_args
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    Distribution.set_default_validate_args(False)
    logger.setLevel(logging.ERROR)  # "torchvision is not installed" and similar notes
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
            # PyTorch's own deprecation notes from inside the exporter; nothing the caller can act on.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["obs"],
                                        output_names=["action", "command"], opset_version=OPSET,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    finally:
        Distribution.set_default_validate_args(validate)
        logger.setLevel(level)
    proto = program.model_proto

    control = u.config.control
    metadata = {
        "skillcell_format": "1",
        "env_id": env_id or (u.spec.id if u.spec is not None else type(u).__name__),
        "obs_size": str(u.observation_space.shape[0]),
        "action_size": str(u.action_space.shape[0]),
        "command_units": "TCP pose delta per control period, cell frame: dx dy dz [m], rotation vector "
                         "rx ry rz [rad], then task channels (unitless)",
        "command_scale": json.dumps([float(s) for s in command_scale(env)]),
        "control_dt_s": repr(float(u.control_dt)),
        "max_translation_m": repr(control.max_translation_mm * 1e-3),
        "max_rotation_rad": repr(math.radians(control.max_rotation_deg)),
        **metadata,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)

    path = atomic_write_bytes(path, proto.SerializeToString())
    return ExportResult(path, sha256_file(path), metadata)


def sb3_actions(loaded: LoadedModel | Any, obs: np.ndarray, obs_norm: ObsNormalization | None = None) -> np.ndarray:
    """SB3's own deterministic actions for a batch of raw observations (the parity reference)."""
    if isinstance(loaded, LoadedModel):
        model, obs_norm = loaded.model, loaded.obs_norm
    else:
        model = loaded
    from torch.distributions import Distribution

    obs = np.asarray(obs, dtype=np.float32)
    if obs_norm is not None:
        obs = obs_norm.apply(obs)
    # As in the export: no distribution argument checks, so a broken (NaN) policy gives NaN
    # actions to compare instead of an exception.
    validate = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        actions, _ = model.predict(obs, deterministic=True)
    finally:
        Distribution.set_default_validate_args(validate)
    return np.asarray(actions, dtype=np.float64)


def onnx_parity(loaded: LoadedModel | Any, onnx_path: str | Path, obs: np.ndarray, env: Any,
                obs_norm: ObsNormalization | None = None) -> dict[str, float]:
    """Largest differences between the ONNX outputs and SB3 on a batch of raw observations.

    ``action``: against ``model.predict(..., deterministic=True)``; ``command``: against that
    action times the cell's scale.
    """
    return _differences(sb3_actions(loaded, obs, obs_norm), onnx_path, obs, env)


def _differences(reference: np.ndarray, onnx_path: str | Path, obs: np.ndarray, env: Any) -> dict[str, float]:
    action, command = OnnxPolicy(onnx_path).run(obs)
    return {
        "action_max_abs_diff": float(np.max(np.abs(action - reference))),
        "command_max_abs_diff": float(np.max(np.abs(command - reference * command_scale(env)))),
        "observations": len(obs),
    }


def _composite_module(residual_model: Any, base: SB3Policy, scale: float, action_space: Any, scale_out: np.ndarray):
    """obs -> base network -> residual network on ``[obs, base]`` -> clipped sum -> command, as a
    torch module (`skillcell.policies.residual`'s composition, in one graph)."""
    import torch

    ones = np.ones_like(scale_out)
    base_module = policy_module(base.loaded.model.policy, base.loaded.obs_norm, ones)
    residual_module = policy_module(residual_model.policy, None, ones)

    class ResidualPolicy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.residual, self.scale = base_module, residual_module, float(scale)
            self.register_buffer("command_scale", torch.as_tensor(scale_out, dtype=torch.float32))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))

        def forward(self, obs):
            base_action = self.base(obs)[0]
            residual = torch.clamp(self.residual(torch.cat([obs, base_action], dim=1))[0], -1.0, 1.0)
            action = torch.clamp(base_action + self.scale * residual, self.low, self.high)
            return action, action * self.command_scale

    return ResidualPolicy().eval()


def export_residual_onnx(residual_model: Any, base: Policy, scale: float, env: Any, path: str | Path,
                         env_id: str | None = None, source_sha256: str = "") -> ExportResult:
    """Exports base + residual (`skillcell.policies.residual`) for ``env``'s cell as ONE ONNX policy, with
    the inputs, outputs and metadata of `export_onnx`; a scripted base is refused (`learned_base`)."""
    base = learned_base(base)
    u = env.unwrapped
    (n,), (a,) = u.observation_space.shape, u.action_space.shape
    if base.observation_shape != (n,):
        raise ValueError(f"residual export: the base observes {base.observation_shape}, the env {(n,)}")
    if tuple(residual_model.observation_space.shape) != (n + a,):
        raise ValueError(f"residual export: the residual observes {residual_model.observation_space.shape}, "
                         f"expected {(n + a,)} (observation + base action)")
    residual_model.policy.set_training_mode(False)
    base.loaded.model.policy.set_training_mode(False)
    module = _composite_module(residual_model, base, scale, u.action_space, command_scale(env))
    return save_onnx(module, env, path, {
        "policy": "residual",
        "residual_scale": repr(float(scale)),
        "base_sha256": base.loaded.sha256,
        "obs_normalization": "base: vecnormalize" if base.loaded.obs_norm is not None else "none",
        "action_postprocess": "clip",
        "source_sha256": source_sha256,
    }, env_id=env_id)


def residual_parity(residual_model: Any, base: Policy, scale: float, onnx_path: str | Path,
                    obs: np.ndarray, env: Any) -> dict[str, float]:
    """Largest differences between the ONNX outputs and the Python composition (`compose`)."""
    base = learned_base(base)
    obs = np.asarray(obs, np.float32)
    base_actions = np.stack([base(o) for o in obs])
    residual, _ = residual_model.predict(np.concatenate([obs, base_actions], axis=1), deterministic=True)
    space = env.unwrapped.action_space
    reference = compose(base_actions, residual, scale, space.low, space.high).astype(np.float64)
    return _differences(reference, onnx_path, obs, env)


def export_run(loaded: LoadedModel | ResidualRun, env: Any, path: str | Path,
               env_id: str | None = None) -> ExportResult:
    """`export_onnx` for a model, `export_residual_onnx` for a residual run (its base from its record)."""
    if isinstance(loaded, ResidualRun):
        return export_residual_onnx(loaded.loaded.model, loaded.base(env), loaded.scale, env, path, env_id=env_id,
                                    source_sha256=loaded.loaded.sha256)
    return export_onnx(loaded, env, path, env_id=env_id)


def run_parity(loaded: LoadedModel | ResidualRun, onnx_path: str | Path, obs: np.ndarray,
               env: Any) -> dict[str, float]:
    """`onnx_parity` or `residual_parity`, for what `export_run` exported."""
    if isinstance(loaded, ResidualRun):
        return residual_parity(loaded.loaded.model, loaded.base(env), loaded.scale, onnx_path, obs, env)
    return onnx_parity(loaded, onnx_path, obs, env)
