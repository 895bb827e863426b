"""Randomization tiers: how far an evaluation (or training) episode departs from the nominal cell.

A cell declares its tiers in ``tiers.yaml`` in its asset folder (`CellEnv.cell_dir`); each tier is
a `TierConfig`. By convention:

- **D0**: the nominal cell: the cell's own randomization off, nothing added.
- **D1**: the default training randomization: the cell's ``randomization`` section as configured.
- **D2**: harder: the cell's ranges widened (``randomization_scale``), friction and mass variation,
  force/torque sensor noise and bias, observation noise, and one or two control periods of
  action latency.

``gym.make(env_id, tier="D2")`` picks a tier. Without ``tier``, ``randomize=True`` is D1 and
``randomize=False`` is D0, so environments made before tiers existed behave exactly as before: a
tier that declares nothing beyond the cell's randomization draws nothing extra from the env's
random generator. A cell without a ``tiers.yaml`` gets the built-in D0 and D1.

Everything a tier samples comes from ``env.np_random`` in a fixed order after the cell's own
draws (friction, masses, F/T bias, latency at reset, then the F/T tare's noise; observation
noise at every observation), and every model edit is rewritten from stored nominal values at
every reset, so ``reset(seed=s)`` plus the same actions stays bit-identical, in fresh and reused
envs alike.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from skillcell.config import ConfigError, bounds, from_mapping, load_yaml, quote, to_mapping
from skillcell.envs.cell import ROBOT_PREFIX, TOOL_PREFIX

__all__ = ["BUILTIN_TIERS", "ObsNoise", "Tier", "TierConfig", "TierRuntime", "TierSample", "load_tiers",
           "resolve_tier", "scale_randomization"]

#: observation blocks whose noise the F/T fields of a tier own
_FT_BLOCKS = ("force_tool", "torque_tool")


@dataclass(frozen=True)
class ObsNoise:
    """White Gaussian noise on one observation block, in the block's physical unit (m, rad, N...)."""

    block: str
    std: float = field(default=0.0, metadata=bounds(0.0, 1e3))


@dataclass(frozen=True)
class TierConfig:
    """One randomization tier. Ranges ``(low, high)`` are sampled uniformly once per episode.

    ``randomization_scale`` multiplies every range of the cell's ``randomization`` section (part
    pose, start offset, ...), so it composes with a user's cell YAML; the scaled values are
    checked against the section's bounds. Friction scales the sliding friction of every geom (a
    contact uses the larger of its two geoms' coefficients, so the pair's friction scales by the
    same factor). Mass scales the mass and inertia of every robot and tool body, one factor per
    body; the F/T gravity compensation keeps the nominal payload, as a misidentified payload
    would on a real arm. F/T noise is per step (standard deviation), F/T bias per episode
    (uniform +- per axis), both in the F/T frame and only in the observation: ``info`` metrics
    stay ground truth. The F/T observation is zeroed (tared) where each episode starts, with the
    tool in free space, as a robot program zeroes its sensor before a task: the observation then
    reads the wrench since the start, the bias and a misidentified payload cancel, and what is
    left of them is the tare's own noise, the per-step noise averaged over ``ft_tare_readings``
    readings (0: the sensor is never zeroed, the bias stays in the observation). Latency delays
    every action by a whole number of control periods; the periods before the first action
    arrives apply a zero action (hold the commanded pose).
    """

    description: str = ""
    randomize: bool = True
    randomization_scale: float = field(default=1.0, metadata=bounds(0.0, 10.0))
    friction_scale: tuple[float, float] = field(default=(1.0, 1.0), metadata=bounds(0.05, 10.0))
    mass_scale: tuple[float, float] = field(default=(1.0, 1.0), metadata=bounds(0.1, 10.0))
    ft_force_noise_n: float = field(default=0.0, metadata=bounds(0.0, 100.0))
    ft_torque_noise_nm: float = field(default=0.0, metadata=bounds(0.0, 10.0))
    ft_force_bias_n: float = field(default=0.0, metadata=bounds(0.0, 100.0))
    ft_torque_bias_nm: float = field(default=0.0, metadata=bounds(0.0, 10.0))
    ft_tare_readings: int = field(default=20, metadata=bounds(0, 100000))
    obs_noise: tuple[ObsNoise, ...] = ()
    action_latency_steps: tuple[int, int] = field(default=(0, 0), metadata=bounds(0, 10))

    def __post_init__(self) -> None:
        for name in ("friction_scale", "mass_scale", "action_latency_steps"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"{name}: low must not exceed high, got [{low}, {high}]")
        blocks = [n.block for n in self.obs_noise]
        for block in blocks:
            if blocks.count(block) > 1:
                raise ConfigError(f"obs_noise.{block}: declared twice")
            if block in _FT_BLOCKS:
                raise ConfigError(f"obs_noise.{block}: F/T noise is set with ft_force_noise_n and "
                                  "ft_torque_noise_nm")
        if not self.randomize and self.randomization_scale != 1.0:
            raise ConfigError("randomization_scale: has no effect with randomize: false")


@dataclass(frozen=True)
class Tier:
    """A named tier as resolved for one env."""

    name: str
    config: TierConfig
    source: str = "built-in"

    def apply(self, cell_config: Any) -> Any:
        """The cell config with this tier's ``randomization_scale`` applied."""
        try:
            return scale_randomization(cell_config, self.config.randomization_scale)
        except ConfigError as exc:
            raise ConfigError(f"tier {self.name} (randomization_scale {self.config.randomization_scale}): "
                              f"{exc}") from None


#: tiers of a cell that has no ``tiers.yaml``: nominal and the cell's own randomization
BUILTIN_TIERS: dict[str, TierConfig] = {
    "D0": TierConfig(description="nominal: the cell's randomization off", randomize=False),
    "D1": TierConfig(description="the cell's default training randomization"),
}


def _obs_noise_entries(value: Any, where: str) -> list[dict[str, Any]]:
    """``{block: std}`` in YAML -> ``[{"block": ..., "std": ...}]`` for `from_mapping`, naming bad keys."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of observation block to standard deviation, "
                          f"got {quote(value)}")
    entries = []
    for block, std in value.items():
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not np.isfinite(std) or std < 0:
            raise ConfigError(f"{where}.{block}: expected a standard deviation >= 0, got {quote(std)}")
        entries.append({"block": str(block), "std": float(std)})
    return entries


def load_tiers(path: str | Path) -> dict[str, TierConfig]:
    """Reads a ``tiers.yaml``: a mapping of tier name to `TierConfig`; D0 and D1 must be declared."""
    path = Path(path)
    data = load_yaml(path)
    tiers: dict[str, TierConfig] = {}
    try:
        for name, section in data.items():
            name = str(name)
            if not name.isidentifier():
                raise ConfigError(f"{name}: a tier name must be an identifier such as D2")
            if section is None:
                section = {}
            if isinstance(section, dict) and "obs_noise" in section:
                section = {**section, "obs_noise": _obs_noise_entries(section["obs_noise"], f"{name}.obs_noise")}
            tiers[name] = from_mapping(TierConfig, section, name)
        for required in ("D0", "D1"):
            if required not in tiers:
                raise ConfigError(f"{required}: required tier is missing (D0 nominal, D1 default randomization)")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return tiers


def resolve_tier(tiers_yaml: Path | None, name: str | None, randomize: bool, cell: str = "this cell") -> Tier:
    """The tier ``name`` of a cell (None: D1, or D0 when ``randomize`` is False)."""
    tiers = load_tiers(tiers_yaml) if tiers_yaml is not None else BUILTIN_TIERS
    source = str(tiers_yaml) if tiers_yaml is not None else "built-in"
    if name is None:
        name = "D1" if randomize else "D0"
    if not isinstance(name, str) or name not in tiers:
        raise ConfigError(f"tier: {cell} has no tier {quote(name)}; declared: {', '.join(tiers)} ({source})")
    config = tiers[name]
    if not randomize and config.randomize:
        raise ConfigError(f"tier: randomize=False contradicts tier {name!r}, which randomizes; "
                          "use tier='D0' for the nominal cell")
    return Tier(name, config, source)


def scale_randomization(cell_config: Any, scale: float) -> Any:
    """``cell_config`` with every numeric range of its ``randomization`` section times ``scale``."""
    if scale == 1.0:
        return cell_config
    section = getattr(cell_config, "randomization", None)
    if section is None or not dataclasses.is_dataclass(section):
        raise ConfigError("randomization_scale: the cell has no randomization section to scale")

    def scaled(value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return value * scale
        if isinstance(value, list):
            return [scaled(v) for v in value]
        return value

    data = {key: scaled(value) for key, value in to_mapping(section).items()}
    # Rebuilding through from_mapping re-checks the section's bounds and names the key.
    return dataclasses.replace(cell_config, randomization=from_mapping(type(section), data, "randomization"))


@dataclass
class TierSample:
    """What a tier drew for the current episode (nominal values where it varies nothing)."""

    friction_scale: float = 1.0
    mass_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    ft_bias: np.ndarray = field(default_factory=lambda: np.zeros(6))
    latency_steps: int = 0


class TierRuntime:
    """Applies a tier to one env: model edits and F/T bias at reset, latency per step, obs noise.

    Built by `CellEnv` after the model compiles and the observation layout is known.
    """

    def __init__(self, tier: Tier, model: mujoco.MjModel, obs_slices: dict[str, slice], action_size: int):
        self.tier = tier
        cfg = tier.config
        self.model = model
        self.sample = TierSample()
        self._varies_friction = cfg.friction_scale != (1.0, 1.0)
        self._varies_mass = cfg.mass_scale != (1.0, 1.0)
        self.mass_bodies = np.zeros(0, dtype=int)
        if self._varies_friction:
            self._friction_nominal = model.geom_friction[:, 0].copy()
        if self._varies_mass:
            self.mass_bodies = np.array([b for b in range(model.nbody) if model.body_mass[b] > 0 and
                                         model.body(b).name.startswith((ROBOT_PREFIX, TOOL_PREFIX))])
            self._mass_nominal = model.body_mass[self.mass_bodies].copy()
            self._inertia_nominal = model.body_inertia[self.mass_bodies].copy()
            # mj_setConst needs an mjData to work in; a private one leaves the episode's untouched.
            self._scratch = mujoco.MjData(model)
            self.sample.mass_scale = np.ones(len(self.mass_bodies))
        self._ft_bias_range = np.array([cfg.ft_force_bias_n] * 3 + [cfg.ft_torque_bias_nm] * 3)
        self._ft_noise_std = np.array([cfg.ft_force_noise_n] * 3 + [cfg.ft_torque_noise_nm] * 3)
        #: added to the F/T observation (the env's kernel reads it in place): bias minus tare
        self.ft_offset = np.zeros(6)
        obs_size = max(s.stop for s in obs_slices.values())
        std = np.zeros(obs_size)
        for noise in cfg.obs_noise:
            if noise.block not in obs_slices:
                raise ConfigError(f"{tier.source}: {tier.name}.obs_noise.{noise.block}: unknown observation "
                                  f"block (expected one of: {', '.join(obs_slices)})")
            std[obs_slices[noise.block]] = noise.std
        std[obs_slices["force_tool"]] = cfg.ft_force_noise_n
        std[obs_slices["torque_tool"]] = cfg.ft_torque_noise_nm
        #: the observation entries with noise (`obs_noise` draws one value for each)
        self.noise_index = np.flatnonzero(std > 0)
        self._noise_std = std[self.noise_index]
        self._zero_action = np.zeros(action_size)
        self._queue: collections.deque[np.ndarray] = collections.deque()

    def reset(self, rng: np.random.Generator) -> None:
        """Draws the episode's tier parameters (fixed order) and rewrites the model from nominal."""
        cfg, m, sample = self.tier.config, self.model, self.sample
        if self._varies_friction:
            sample.friction_scale = float(rng.uniform(*cfg.friction_scale))
            m.geom_friction[:, 0] = self._friction_nominal * sample.friction_scale
        if self._varies_mass:
            sample.mass_scale = rng.uniform(*cfg.mass_scale, len(self.mass_bodies))
            m.body_mass[self.mass_bodies] = self._mass_nominal * sample.mass_scale
            m.body_inertia[self.mass_bodies] = self._inertia_nominal * sample.mass_scale[:, None]
            # Derived constants (subtree masses, inverse weights used by the constraint solver).
            mujoco.mj_setConst(m, self._scratch)
        if self._ft_bias_range.any():
            sample.ft_bias = rng.uniform(-1.0, 1.0, 6) * self._ft_bias_range
        low, high = cfg.action_latency_steps
        sample.latency_steps = int(rng.integers(low, high + 1)) if high > low else low
        self.restart()

    def restart(self) -> None:
        """Empties the latency pipeline (zero actions in flight), as at the start of an episode."""
        self._queue.clear()
        self._queue.extend(self._zero_action.copy() for _ in range(self.sample.latency_steps))

    def tare(self, wrench: np.ndarray, rng: np.random.Generator) -> None:
        """Zeroes the F/T observation on the true ``wrench`` now (the tool free, at an episode's start).

        The sensor reads ``wrench + bias`` plus noise; the tare is that reading averaged over
        ``ft_tare_readings`` readings, so its noise is the per-step noise over their square root.
        """
        readings = self.tier.config.ft_tare_readings
        self.ft_offset[:] = self.sample.ft_bias
        if readings:
            self.ft_offset -= wrench + self.sample.ft_bias
            if self._ft_noise_std.any():
                self.ft_offset -= self._ft_noise_std / np.sqrt(readings) * rng.standard_normal(6)

    def delay(self, action: np.ndarray) -> np.ndarray:
        """The action to apply now: ``action`` itself, or the one ``latency_steps`` periods ago."""
        if not self._queue:
            return action
        self._queue.append(action.copy())
        return self._queue.popleft()

    def obs_noise(self, rng: np.random.Generator) -> np.ndarray | None:
        """This step's observation noise, added to the unscaled observation at `noise_index` (with the F/T
        bias less the tare, `ft_offset`, by the env); None where the tier adds none."""
        if not self.noise_index.size:
            return None
        return self._noise_std * rng.standard_normal(self.noise_index.size)
