"""WeldSeam: process metrics against analytic torch motions, seam/WPS validation, bead overlay."""

import math
import re

import gymnasium as gym
import numpy as np
import pytest
import yaml

from skillcell import assets
from skillcell.config import ConfigError
from skillcell.envs.cells.weld_seam import WeldSeamEnv
from skillcell.envs.weld import SeamConfig, SeamPath, SegmentConfig, torch_rotation


def analytic_pass(env, speed_mm_s, work_deg, travel_deg, ctwd_mm, start_mm=10.0, steps=120,
                  lateral_mm=0.0, weave=None):
    """Moves a torch along the seam kinematically and returns the metrics of every step."""
    metrics, dt = env.metrics, env.control_dt
    R_seam_tcp = torch_rotation(work_deg, travel_deg)
    rows = []
    for k in range(steps):
        s = (start_mm + speed_mm_s * dt * k) * 1e-3
        p_seam, R_world_seam = metrics.frame(s)
        R_world_tcp = R_world_seam @ R_seam_tcp
        offset = lateral_mm + (weave(k * dt) if weave else 0.0)
        root = p_seam + R_world_seam[:, 1] * offset * 1e-3
        p_tcp = root - R_world_tcp[:, 2] * ctwd_mm * 1e-3
        rows.append(metrics.measure(p_tcp, R_world_tcp, arc_on=True))
    return rows


@pytest.mark.parametrize("variant", ["fillet", "curved", "butt", "lap"])
def test_metrics_of_a_known_torch_motion(variant):
    env = WeldSeamEnv(variant=variant, randomize=False)
    env.reset(seed=0)
    speed, work, travel, ctwd = 7.3, 41.0, 8.0, 11.0
    nominal_work = env.wps.nominal("work_angle_deg")
    work = nominal_work - 4.0
    # Along the curved variant's 60 mm arc (s = 55..117 mm) as well as its straight start.
    rows = analytic_pass(env, speed, work, travel, ctwd, start_mm=20.0, steps=200)[1:]
    for row in rows:
        assert row["travel_speed_mm_s"] == pytest.approx(speed, rel=0.02)
        assert row["work_angle_deg"] == pytest.approx(work, abs=0.5)
        assert row["travel_angle_deg"] == pytest.approx(travel, abs=0.5)
        assert row["ctwd_mm"] == pytest.approx(ctwd, abs=0.2)
    # The wire tip at the nominal distance lies (nominal - actual) further along the torch axis.
    axis = torch_rotation(work, travel)[:, 2]
    shift = (env.metrics.ctwd_nominal * 1e3 - ctwd) * axis
    assert rows[50]["lateral_deviation_mm"] == pytest.approx(shift[1], abs=0.05)
    assert rows[50]["vertical_deviation_mm"] == pytest.approx(shift[2], abs=0.05)
    assert rows[-1]["seam_position_mm"] == pytest.approx(20.0 + speed * env.control_dt * 199 + shift[0], abs=0.05)


def test_curved_seam_has_an_arc_where_the_pass_is_measured():
    env = WeldSeamEnv(variant="curved", randomize=False)
    tangents = env.path.tangents
    turn = math.degrees(math.acos(np.clip(tangents[20] @ tangents[117], -1, 1)))
    assert turn > 50


def test_lateral_offset_and_weave_are_measured():
    env = WeldSeamEnv(randomize=False)
    env.reset(seed=0)
    nominal = {k: env.wps.nominal(k) for k in ("travel_speed_mm_s", "work_angle_deg", "travel_angle_deg", "ctwd_mm")}
    rows = analytic_pass(env, *nominal.values(), lateral_mm=0.6, steps=20)
    assert rows[-1]["lateral_deviation_mm"] == pytest.approx(0.6, abs=0.05)
    assert rows[-1]["vertical_deviation_mm"] == pytest.approx(0.0, abs=0.05)
    env.reset(seed=0)
    amplitude, hz = 1.5, 1.25
    rows = analytic_pass(env, *nominal.values(), steps=160,
                         weave=lambda t: amplitude * math.sin(2 * math.pi * hz * t))
    assert rows[-1]["weave_width_mm"] == pytest.approx(2 * amplitude, rel=0.05)
    assert rows[-1]["weave_frequency_hz"] == pytest.approx(hz, rel=0.15)
    assert not all(row["in_spec"] for row in rows)  # 1.5 mm off the root is outside +-1 mm


def test_in_spec_fraction_counts_only_good_bead():
    env = WeldSeamEnv(randomize=False)
    env.reset(seed=0)
    nominal = [env.wps.nominal(k) for k in ("travel_speed_mm_s", "work_angle_deg", "travel_angle_deg", "ctwd_mm")]
    analytic_pass(env, *nominal, start_mm=0.0, steps=200)  # 80 mm at 8 mm/s, in spec
    bead = env.metrics.bead_summary()
    welded = env.metrics.welded.sum()
    assert bead["arc_coverage"] == pytest.approx(welded / len(env.path.s))
    assert bead["bead_in_spec_fraction"] > 0.98
    assert bead["in_spec_fraction"] == pytest.approx(80.0 / 150.0, abs=0.02)
    nominal[2] = 25.0  # travel angle far out of spec for the rest
    analytic_pass(env, *nominal, start_mm=80.0, steps=180)  # on to the seam end
    bead = env.metrics.bead_summary()
    assert bead["in_spec_fraction"] == pytest.approx(80.0 / 150.0, abs=0.02)
    assert bead["arc_coverage"] > 0.99


SEAM = re.escape("seam.segments[0]")


def one_segment(**segment):
    return {"seam": {"segments": [segment]}}


@pytest.mark.parametrize("overrides,message", [
    (one_segment(type="line"), SEAM + r"\.to_mm: a line segment needs it"),
    (one_segment(type="arc", center_mm=[0, 0], angle_deg=0), SEAM + r"\.angle_deg: must be non-zero"),
    (one_segment(type="spline", to_mm=[0, 1]), SEAM + r"\.type: must be one of"),
    (one_segment(type="line", to_mm=[0, 1], angle_deg=3), SEAM + r"\.angle_deg: not used by a line"),
    (one_segment(type="line", to_mm=[0.0, 75.0]), SEAM + r": a straight piece of zero length"),
    ({"seam": {"segments": []}}, r"seam\.segments: a seam needs at least one segment"),
    ({"joint": {"type": "corner"}}, r"joint\.type: must be one of \['fillet', 'lap', 'butt'\]"),
    ({"joint": {"gap_mm": 9}}, r"joint\.gap_mm: must be in"),
    ({"wps": "cells/weld_seam/no_such_wps.yaml"}, r"wps: file not found"),
])
def test_invalid_seam_and_joint_yaml_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        WeldSeamEnv(overrides=overrides)


@pytest.mark.parametrize("content,message", [
    ("work_angle_deg: [50, 40]\n", r"work_angle_deg: the band \[low, high\] needs low < high"),
    ("ctwd: [10, 12]\n", r"ctwd: unknown key"),
    ("travel_speed_mm_s: fast\n", r"travel_speed_mm_s: expected a list"),
    ("min_in_spec_fraction: 1.5\n", r"min_in_spec_fraction: must be in \[0.0, 1.0\]"),
    ("weave_width_mm: null\n", r"weave_width_mm: required key is missing"),  # a WPS declares every band
])
def test_invalid_wps_yaml_names_the_key(tmp_path, content, message):
    data = {**yaml.safe_load(assets.path("cells", "weld_seam", "wps_fillet.yaml").read_text()),
            **yaml.safe_load(content)}
    wps = tmp_path / "my_wps.yaml"
    wps.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    cell = tmp_path / "cell.yaml"
    cell.write_text("wps: my_wps.yaml\n")
    with pytest.raises(ConfigError, match=r"wps \(.*my_wps\.yaml\): " + message):
        WeldSeamEnv(cell=str(cell))


def test_seam_path_samples_exact_arcs():
    path = SeamPath(SeamConfig(start_mm=(0.0, 0.0), segments=(
        SegmentConfig("arc", center_mm=(50.0, 0.0), angle_deg=90.0),
        SegmentConfig("polyline", points_mm=((50.0, -80.0), (20.0, -80.0))))))
    radius = np.linalg.norm(path.points[: 79, :2] - [0.05, 0.0], axis=1)
    assert np.allclose(radius, 0.05)
    assert path.length == pytest.approx(math.pi / 2 * 0.05 + 0.03 + 0.03, rel=1e-4)
    # Tangents are unit and perpendicular to the radius on the arc.
    assert np.allclose(np.linalg.norm(path.tangents, axis=1), 1.0)
    assert np.allclose(((path.points[:79, :2] - [0.05, 0]) * path.tangents[:79, :2]).sum(axis=1), 0, atol=1e-9)


def test_gap_randomization_moves_the_mate_away_from_the_root():
    env = WeldSeamEnv(overrides={"randomization": {"gap_mm": 2.0}})
    base, mate = (env.model.body(name).mocapid[0] for name in ("workpiece", "workpiece_mate"))
    gaps = []
    for seed in range(8):
        env.reset(seed=seed)
        d = env.data
        gaps.append(np.linalg.norm(d.mocap_pos[mate] - d.mocap_pos[base]))
    assert 0 <= min(gaps) and max(gaps) <= 2e-3 + 1e-12 and max(gaps) > 1e-3


def test_leaving_the_seam_ends_the_episode():
    env = gym.make("skillcell/WeldSeam-v0", randomize=False)
    env.reset(seed=0)
    info = {}
    for _ in range(100):
        # Arc on, then straight up and away.
        _, _, terminated, _, info = env.step(np.r_[0, 0, 1.0, 0, 0, 0, 1.0])
        if terminated:
            break
    assert terminated and info["left_seam"] and not info["is_success"]


def test_bead_is_drawn_as_overlay_geoms():
    from skillcell.policies import make_expert

    env = gym.make("skillcell/WeldSeam-v0", randomize=False, render_mode="rgb_array", camera="seam",
                   width=320, height=240)
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    for _ in range(160):
        obs, *_ = env.step(expert(obs))
    u = env.unwrapped
    assert u.metrics.welded.sum() > 40
    with_bead = env.render().astype(int)
    welded, in_spec = u.metrics.welded.copy(), u.metrics.in_spec.copy()
    u.metrics.welded[:] = False
    without = env.render().astype(int)
    u.metrics.welded[:], u.metrics.in_spec[:] = welded, in_spec
    changed = np.abs(with_bead - without).sum(axis=2) > 60
    assert changed.sum() > 100, "the bead should cover some pixels"
    green = (with_bead[..., 1] > with_bead[..., 0] + 60) & changed
    assert green.sum() > 0.5 * changed.sum(), "an in-spec bead is drawn green"
    assert u.model.ngeom == env.unwrapped.model.ngeom  # overlays never touch the model
    env.close()
