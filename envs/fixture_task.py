"""What the assembly cells share: a workpiece on a mocap fixture, approached along its axis.

PegInsert, KeyedShaft, SnapFit and NutThread put the part the robot works on (a hole, a hub, a
socket, a bolt) on one mocap body, ``fixture``, whose pose is part of the simulation state (state
replay restores it). `FixtureTaskEnv` is that half of such a cell:

- the fixture placed at ``config.fixture`` (`FixtureConfig`) when the model is built, moved per
  reset by up to ``randomization.<fixture_name>_pos_mm`` and ``_rot_deg`` (`CellEnv._draw_pose`);
- the task frame: the fixture's site `task_site_name`, its z out of the part along the axis the
  tool works on; aligned, the tool axis points down it (`R_task_tcp_nominal`) and the episode
  starts ``task.start_height_mm`` above the nominal fixture on that axis;
- the first task observations ``<fixture_name>_pos`` (the fixture's offset from nominal, cell
  frame), ``<fixture_name>_rot`` (its orientation) and ``depth`` (the TCP below the task site,
  along the axis), then whatever the cell adds;
- the TCP's offset and tilt from the axis, and the deepest penetration between two sets of geoms.

`InsertionTaskEnv` adds what an insertion rated for a push has (PegInsert, KeyedShaft, SnapFit):
the F/T stop and the penetration KPI derived from ``limits.rated_insertion_force_n`` and the
penetration budget by the named rules below, and the reward's shaping terms.

A cell keeps only what is its own: its geometry, its evaluation, its extra observations and reward
terms. Its ``__init__`` names its ``gym.make`` keywords (`workpiece_shortcuts` among them) for EzPickle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mujoco
import numpy as np

from skillcell.config import ConfigError, bounds, merge
from skillcell.envs.base import CellEnv, ObsField
from skillcell.envs.cell import CellConfig, load_cell_config

__all__ = ["FORCE_PENALTY_SATURATION", "FORCE_STOP_FACTOR", "PENETRATION_KPI_FRACTION", "FixtureConfig",
           "FixtureTaskEnv", "InsertionRewardConfig", "InsertionTaskEnv"]

# Named rules: the numbers derived from ``limits.rated_insertion_force_n`` (the one declaration).
#: the safety envelope's F/T stop (``limits.tool_force_stop_n``) over the rated force: the stop sits a
#: quarter above the rating, so a push over the rating fails the gate's KPI (and shows red in a
#: review video) before the runner's safety filter holds the arm
FORCE_STOP_FACTOR = 1.25
#: where the reward's force penalty saturates, over the rated force: it ramps from the free force (a
#: jam's, a press's) up to half again the rating, so a push past the rating still has a gradient back
FORCE_PENALTY_SATURATION = 1.5
#: the gate's limit on the deepest part-fixture penetration (``limits.max_penetration_kpi_mm``) over the
#: physics-validity budget (``task.penetration_budget`` times the clearance): contact softness must
#: stay well inside what ends an episode as physically invalid
PENETRATION_KPI_FRACTION = 0.5
#: the reward's insertion term counts the depth from this far above the opening (mm)
APPROACH_MM = 10.0


@dataclass(frozen=True)
class FixtureConfig:
    """Nominal pose of the fixture's task frame (the cell's task site): z along the task axis, out of the part."""

    pos_m: tuple[float, float, float] = (0.45, 0.10, 0.92)
    euler_deg: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), metadata=bounds(-180.0, 180.0))


@dataclass(frozen=True)
class InsertionRewardConfig:
    """Weights of an insertion's reward terms (`InsertionTaskEnv._insertion_shaping`, and success)."""

    align: float = 0.3
    orient: float = 0.1
    insert: float = 0.5
    force: float = 0.2
    success: float = 5.0


class FixtureTaskEnv(CellEnv):
    """A `CellEnv` whose workpiece sits on the mocap body ``fixture`` (module docstring).

    A subclass sets `fixture_name` (the word in its randomization keys and observation names) and
    `task_site_name`, and calls ``super()._setup_task()`` before its own setup; its config has
    ``fixture``, ``task.start_height_mm``, ``task.terminate_on_success`` and the two randomization
    ranges.
    """

    #: ``randomization.<name>_pos_mm`` and ``_rot_deg``, observations ``<name>_pos`` and ``<name>_rot``
    fixture_name: ClassVar[str]
    #: the fixture's site that is the task frame
    task_site_name: ClassVar[str]
    #: the ``depth`` observation's scale (1/m)
    depth_obs_scale: ClassVar[float] = 1 / 0.02
    #: ``gym.make`` keywords that set the ``workpiece`` key of the same name (None: the config's)
    workpiece_shortcuts: ClassVar[tuple[str, ...]] = ()
    # Aligned: the tool axis (TCP z) points down the task axis (task -z); a rotation of pi about x.
    R_task_tcp_nominal = np.diag([1.0, -1.0, -1.0])

    def __init__(self, config: CellConfig, render_mode: str | None, width: int, height: int, camera: str,
                 render_quality: str, *, tier: str | None, randomize: bool):
        self._terminate_on_success = config.task.terminate_on_success
        super().__init__(config, render_mode, width, height, camera, render_quality, tier=tier, randomize=randomize)

    @classmethod
    def load_config(cls, cell: str | Path | None = None, overrides: dict[str, Any] | None = None,
                    **env_kwargs: Any) -> CellConfig:
        overrides = merge({}, overrides or {})
        for key in cls.workpiece_shortcuts:
            if env_kwargs.get(key) is not None:
                overrides.setdefault("workpiece", {})[key] = env_kwargs[key]
        return load_cell_config(cls.config_class, cls.default_cell_yaml, cell, overrides)

    # ------------------------------------------------------------------ world

    def _place_fixture(self, spec: mujoco.MjSpec) -> tuple[mujoco.MjsBody, mujoco.MjsDefault]:
        """The scene's fixture body, placed at ``config.fixture``, and its contact class ``precision``."""
        fixture, precision = spec.body("fixture"), spec.find_default("precision")
        if fixture is None or precision is None:
            raise ConfigError(f"scene: {type(self).__name__.removesuffix('Env')} needs a body 'fixture' and a "
                              "default class 'precision'")
        pose = self.config.fixture
        fixture.pos = pose.pos_m
        quat = np.empty(4)
        mujoco.mju_euler2Quat(quat, np.radians(pose.euler_deg), "xyz")
        fixture.quat = quat
        return fixture, precision

    def _setup_task(self) -> None:
        m = self.model
        self.task_site = m.site(self.task_site_name).id
        fixture = m.body("fixture").id
        self._mocap_id = m.body_mocapid[fixture]
        self._fixture_pos_nominal = m.body_pos[fixture].copy()
        self._fixture_quat_nominal = m.body_quat[fixture].copy()
        self._fixture_geoms = frozenset(np.flatnonzero(m.geom_bodyid == fixture).tolist())
        # What every step reads: views into mjData (its arrays never move).
        d = self.data
        self._task_xmat, self._task_xpos = d.site_xmat[self.task_site], d.site_xpos[self.task_site]
        self._tcp_xpos = d.site_xpos[self.tcp_site]
        rnd = self.config.randomization
        self._fixture_pos_range = np.array(getattr(rnd, f"{self.fixture_name}_pos_mm")) * 1e-3
        self._fixture_rot_range = np.radians(getattr(rnd, f"{self.fixture_name}_rot_deg"))

    def _reset_task_nominal(self) -> None:
        self.data.mocap_pos[self._mocap_id] = self._fixture_pos_nominal
        self.data.mocap_quat[self._mocap_id] = self._fixture_quat_nominal

    def _reset_task(self, rng: np.random.Generator) -> None:
        self._reset_task_nominal()
        if not self.randomize:
            return
        pos, quat = self._draw_pose(rng, self._fixture_pos_nominal, self._fixture_quat_nominal,
                                    self._fixture_pos_range, self._fixture_rot_range)
        self.data.mocap_pos[self._mocap_id] = pos
        self.data.mocap_quat[self._mocap_id] = quat

    def _nominal_start_pose(self) -> tuple[np.ndarray, np.ndarray]:
        R_world_task = np.empty(9)
        mujoco.mju_quat2Mat(R_world_task, self._fixture_quat_nominal)
        R_world_task = R_world_task.reshape(3, 3)
        p = self._fixture_pos_nominal + R_world_task[:, 2] * self.config.task.start_height_mm * 1e-3
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, (R_world_task @ self.R_task_tcp_nominal).ravel())
        return p, quat

    # ------------------------------------------------------------------ task

    def _task_obs_fields(self) -> list[ObsField]:
        name = self.fixture_name
        return [ObsField(f"{name}_pos", 3, 1 / 0.01, "m"), ObsField(f"{name}_rot", 3, 1 / 0.05, "rad"),
                ObsField("depth", 1, self.depth_obs_scale, "m")]

    def _task_obs(self, out: np.ndarray) -> None:
        d = self.data
        np.subtract(d.mocap_pos[self._mocap_id], self._fixture_pos_nominal, out=out[0:3])
        mujoco.mju_quat2Vel(out[3:6], d.mocap_quat[self._mocap_id], 1.0)
        out[6] = self._depth

    def _measure_depth(self) -> float:
        """The TCP's depth below the task site along the task axis (m)."""
        _, _, ax, _, _, ay, _, _, az = self._task_xmat.tolist()
        (hx, hy, hz), (tx, ty, tz) = self._task_xpos.tolist(), self._tcp_xpos.tolist()
        return ax * (hx - tx) + ay * (hy - ty) + az * (hz - tz)

    def _alignment(self) -> tuple[float, float, float, float]:
        """``(px, py, lateral, tilt)``: the TCP's offset from the task axis in the task frame and its
        distance from it (m), and the tool axis's tilt from it (deg)."""
        p_task_tcp, R_task_tcp = self.tcp_pose_task()
        px, py, _ = p_task_tcp.tolist()
        tilt = math.degrees(math.acos(max(-1.0, min(1.0, -float(R_task_tcp[2, 2])))))
        return px, py, math.hypot(px, py), tilt

    def _deepest_penetration(self, parts: frozenset[int], others: frozenset[int]) -> float:
        """Deepest penetration (m) between a geom of ``parts`` and one of ``others``, over current contacts."""
        d = self.data
        if d.ncon == 0:
            return 0.0
        # A handful of contacts: a loop over floats costs less than masks over them.
        dists = [dist for (a, b), dist in zip(d.contact.geom.tolist(), d.contact.dist.tolist(), strict=True)
                 if (a in parts and b in others) or (b in parts and a in others)]
        return max(0.0, -min(dists)) if dists else 0.0


class InsertionTaskEnv(FixtureTaskEnv):
    """A `FixtureTaskEnv` that inserts a part rated for a push: its config has
    ``limits.rated_insertion_force_n``, and it sets ``penetration_budget`` (m) in its setup."""

    penetration_budget: float

    @property
    def limits(self) -> dict[str, Any]:
        rated = self.config.limits.rated_insertion_force_n
        return {**super().limits, "tool_force_stop_n": FORCE_STOP_FACTOR * rated,
                "max_penetration_kpi_mm": PENETRATION_KPI_FRACTION * self.penetration_budget * 1e3}

    def _insertion_shaping(self, metrics: dict[str, Any], depth_mm: float, free_force_n: float
                           ) -> tuple[float, float, float, float]:
        """The unweighted shaping terms of an insertion's reward, ``(align, orient, insert, force)``:
        ``1 - tanh(lateral / 5 mm)``, ``1 - tanh(tilt / 2 deg)``, ``align`` times the depth from
        `APPROACH_MM` above the opening over the task's length (clipped to [0, 1]), and the push
        over ``free_force_n`` up to `FORCE_PENALTY_SATURATION` times the rating (clipped to [0, 1])."""
        align = 1.0 - math.tanh(metrics["lateral_error_mm"] / 5.0)
        orient = 1.0 - math.tanh(metrics["tilt_deg"] / 2.0)
        insert = align * min(1.0, max(0.0, (depth_mm + APPROACH_MM) / (self.task_length_m * 1e3 + APPROACH_MM)))
        saturation = FORCE_PENALTY_SATURATION * self.config.limits.rated_insertion_force_n
        excess = (metrics["contact_force_n"] - free_force_n) / max(saturation - free_force_n, 1e-9)
        return align, orient, insert, min(1.0, max(0.0, excess))
