"""The weld cells' plates at the seam's bends: no collision geom reaches past the seam line.

The torch works from the right of the travel (``-y`` of the seam frame) with the mate on the left; a plate
piece that stands out past the seam there (a box run on past a bend with the web inside the turn) is what
the torch's nozzle and the CTWD ray meet first.
"""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.deploy.envelope import load_envelope
from skillcell.envs.cells.weld_seam import PLATE_GROUP
from skillcell.policies import make_expert

#: what a piece may stand past the seam line (mm): the chords of an arc's 5-degree pieces with the web
#: outside the arc lie inside it by up to R (1 - cos 2.5 deg), 0.06 mm for the Curved cell's 60 mm radius
TOLERANCE_MM = 0.1
#: plate within this distance of the seam (mm) is what the torch meets
NEAR_MM = 30.0
#: the sampling lattice's spacing (mm) at most
SPACING_MM = 2.0



def bent_seam(turn_deg: float) -> dict:
    """A 60 mm seam, then a bend of ``turn_deg`` (towards the mate positive: the web inside it) and 60 mm more."""
    a = math.radians(turn_deg)
    return {"start_mm": [0.0, 60.0], "segments": [{"type": "polyline", "points_mm": [
        [0.0, 0.0], [60.0 * math.sin(a), -60.0 * math.cos(a)]]}]}


WELD_CELLS = [("skillcell/WeldSeam-v0", {}), ("skillcell/WeldSeamLap-v0", {}), ("skillcell/WeldSeamButt-v0", {}),
              ("skillcell/WeldSeamCurved-v0", {}), ("skillcell/WeldPipe-v0", {}), ("skillcell/WeldSeamCorner-v0", {}),
              ("skillcell/WeldSeamCorner-v0", {"variant": "sharp"})]
# and sharp bends either way on each joint type, up to the 90 degrees `plate_boxes` holds to
WELD_CELLS += [(env_id, {"overrides": {"seam": bent_seam(turn)}}) for turn in (45.0, -45.0, 90.0, -90.0)
               for env_id in ("skillcell/WeldSeam-v0", "skillcell/WeldSeamLap-v0", "skillcell/WeldSeamButt-v0")]


def _grid(half: float, spacing: float = SPACING_MM * 1e-3) -> np.ndarray:
    return np.linspace(-1.0, 1.0, max(2, int(np.ceil(2.0 * half / spacing)) + 1))


def _geom_samples(model: mujoco.MjModel, data: mujoco.MjData, geom: int) -> np.ndarray:
    """Points (world, m) on a lattice through a box's volume, its corners among them, or on a cylinder's
    surface, `SPACING_MM` apart at most."""
    size, kind = model.geom_size[geom], model.geom_type[geom]
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        axes = np.meshgrid(*(_grid(h) for h in size), indexing="ij")
        local = np.stack(axes, axis=-1).reshape(-1, 3) * size
    elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
        angle = np.linspace(0.0, 2.0 * np.pi, int(np.ceil(2 * np.pi * size[0] / (SPACING_MM * 1e-3))), endpoint=False)
        ring = np.column_stack([np.cos(angle), np.sin(angle)]) * size[0]
        local = np.concatenate([np.column_stack([ring, np.full(len(ring), z * size[1])]) for z in _grid(size[1])])
    else:
        raise AssertionError(f"plate geom {model.geom(geom).name}: type {kind} is not sampled here")
    return data.geom_xpos[geom] + local @ data.geom_xmat[geom].reshape(3, 3).T


def _lateral_mm(points: np.ndarray, seam: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(signed lateral offset, distance)`` (mm) of each point from the seam polyline in its plane: left of the
    travel (the mate's side) positive. A point nearest a vertex takes the sign of the side it lies on there
    (the mean of the two pieces' left directions), one beyond an end the end piece's line's."""
    pieces = np.diff(seam, axis=0)
    lengths = np.linalg.norm(pieces, axis=1)
    directions = pieces / lengths[:, None]
    lefts = np.cross(normal, directions)
    out_lateral, out_distance = [], []
    for chunk in np.array_split(points, max(1, len(points) // 2000)):
        rel = chunk[:, None, :] - seam[None, :-1, :]
        rel -= (rel @ normal)[..., None] * normal  # into the seam's plane
        along = np.einsum("mkj,kj->mk", rel, directions)
        u = np.clip(along, 0.0, lengths)
        offset = rel - u[..., None] * directions
        distance = np.linalg.norm(offset, axis=2)
        k = np.argmin(distance, axis=1)
        rows = np.arange(len(chunk))
        left = lefts[k].copy()
        at_start, at_end = u[rows, k] <= 0.0, u[rows, k] >= lengths[k]
        inner_start, inner_end = at_start & (k > 0), at_end & (k < len(pieces) - 1)
        left[inner_start] = lefts[k[inner_start] - 1] + lefts[k[inner_start]]
        left[inner_end] = lefts[k[inner_end]] + lefts[k[inner_end] + 1]
        ends = (at_start & (k == 0)) | (at_end & (k == len(pieces) - 1))
        # beyond the seam's ends: across the end piece's line, as far as the torch is concerned
        lateral = np.einsum("mj,mj->m", offset[rows, k], left) / np.linalg.norm(left, axis=1)
        lateral[ends] = np.einsum("mj,mj->m", rel[rows, k][ends], lefts[k[ends]])
        out_lateral.append(lateral)
        out_distance.append(distance[rows, k])
    return np.concatenate(out_lateral) * 1e3, np.concatenate(out_distance) * 1e3


@pytest.mark.parametrize("env_id, kwargs", WELD_CELLS, ids=lambda v: v if isinstance(v, str) else "")
def test_no_plate_reaches_past_the_seam_line(env_id, kwargs):
    """Sampled through every plate geom: the mate (web, lapped plate, tube, pipe, the butt's other half) stays
    on its side of the seam, a butt's base half on the other, within `TOLERANCE_MM`, bends and all."""
    env = gym.make(env_id, tier="D0", **kwargs)
    try:
        env.reset(seed=0)
        cell = env.unwrapped
        m, d = cell.model, cell.data
        seam, normal = cell.metrics.points_world, cell.metrics.normal_world
        mate_body = m.body("workpiece_mate").id
        butt = cell.config.joint.type == "butt"
        checked = 0
        for g in range(m.ngeom):
            if int(m.geom_group[g]) != PLATE_GROUP:
                continue
            mate = int(m.geom_bodyid[g]) == mate_body
            if not mate and not butt:
                continue  # the base plate under the seam: the torch's side of it is where the bead lies
            points = _geom_samples(m, d, g)
            lateral, distance = _lateral_mm(points, seam, normal)
            near = distance < NEAR_MM
            side = lateral[near] if mate else -lateral[near]
            if side.size:
                checked += side.size
                worst = int(np.argmin(side))
                assert side[worst] >= -TOLERANCE_MM, (
                    f"{env_id} {kwargs}: {m.geom(g).name} reaches {-side[worst]:.3f} mm past the seam line at "
                    f"{points[near][worst]}")
        assert checked > 1000
    finally:
        env.close()


@pytest.mark.parametrize("turn_deg", [30.0, 45.0])
def test_the_expert_welds_a_bend_with_the_web_inside(turn_deg):
    """A fillet bent towards the web: the torch goes round the web's outside corner. With the web's boxes run on
    past the vertex it met the one that stood out there (clearance below zero, 0.4-0.7 of the seam in spec);
    with the pieces ending on the vertex the shared expert welds it in spec, the nozzle clear of the plates."""
    env = gym.make("skillcell/WeldSeam-v0", tier="D1", overrides={"seam": bent_seam(turn_deg)})
    try:
        cell = env.unwrapped
        envelope = load_envelope(env)
        expert = make_expert(env)
        obs, _ = env.reset(seed=0)
        clearance, done = math.inf, False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            clearance = min(clearance, cell.tool_clearance())
            done = terminated or truncated
        assert info["is_success"] and info["in_spec_fraction"] > 0.93, info["in_spec_fraction"]
        assert clearance * 1e3 > envelope.min_tool_clearance_mm, clearance
    finally:
        env.close()
