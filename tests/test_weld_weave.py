"""Weave: a WPS prescribes a pattern, width, frequency and dwell; the metrics measure each cycle against it,
the expert welder weaves as prescribed and the novice's weave is flagged (issue 16, point 3)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import yaml

from skillcell import assets
from skillcell.config import ConfigError
from skillcell.envs.cells.weld_seam import WeldSeamEnv, load_wps
from skillcell.envs.weld import WEAVE_PATTERNS, WeaveConfig, torch_rotation, weave_offsets
from skillcell.policies import make_expert

WEAVE_CELL = assets.path("cells", "weld_seam", "butt_weave.yaml")


def weave_wps(pattern):
    suffix = "" if pattern == "zigzag" else f"_{pattern}"
    return f"cells/weld_seam/wps_butt_weave{suffix}.yaml"


def make_weave_env(pattern, **kwargs):
    return gym.make("skillcell/WeldSeamButt-v0", cell=WEAVE_CELL, overrides={"wps": weave_wps(pattern)}, **kwargs)


def weld(env, skill="expert", seed=0):
    """One episode of the scripted welder: the infos of its steps."""
    expert = make_expert(env, skill=skill, seed=seed)
    obs, _ = env.reset(seed=seed)
    infos = []
    for _ in range(1000):
        obs, _, terminated, truncated, info = env.step(expert(obs))
        infos.append(info)
        if terminated or truncated:
            break
    return infos


def test_the_weave_wps_derives_its_bands_from_the_prescription():
    wps = load_wps(weave_wps("triangle"))
    assert wps.weave == WeaveConfig("triangle", 5.0, 1.25, 0.1, 0.1)  # the base's weave, its pattern changed
    assert wps.band("travel_speed_mm_s") == load_wps("cells/weld_seam/wps_butt.yaml").band("travel_speed_mm_s")
    assert wps.band("weave_width_mm") == pytest.approx((4.5, 5.5))
    assert wps.weave.band("frequency_hz") == pytest.approx((1.125, 1.375))
    assert wps.weave.dwell_band(0.05) == pytest.approx((0.05, 0.15))  # a tenth of 0.1 s is under a control period
    assert load_wps("cells/weld_seam/wps_butt.yaml").weave is None


@pytest.mark.parametrize("content,message", [
    ({"weave_width_mm": [0.0, 6.0]}, r"weave_width_mm: a prescribed weave derives this band"),
    ({"weave": {"pattern": "spiral"}}, r"weave\.pattern: must be one of \['zigzag', 'triangle', 'crescent'\]"),
    ({"weave": {"dwell_s": 0.35}}, r"weave\.dwell_s: two dwells of 0.35 s leave a 1.25 Hz cycle"),
    ({"weave": {"frequency_hz": 4.0}}, r"weave\.frequency_hz: 4.0 Hz leaves 5.0 control steps per cycle"),
    ({"base": "no_such_wps.yaml"}, r"base: file not found"),
    ({"base": "my_wps.yaml"}, r"base: my_wps.yaml is already in the chain of bases"),
])
def test_invalid_weave_wps_names_the_key(tmp_path, content, message):
    data = {"base": str(assets.path("cells", "weld_seam", "wps_butt_weave.yaml"))}
    for key, value in content.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    (tmp_path / "my_wps.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump({"wps": "my_wps.yaml"}))
    with pytest.raises(ConfigError, match=r"wps \(.*my_wps\.yaml\)(: |.*)" + message):
        WeldSeamEnv(variant="butt", cell=str(tmp_path / "cell.yaml"))


def weave_pass(env, motion: WeaveConfig, steps=300, phase0=0.37):
    """The metrics of a torch that moves kinematically along ``motion``'s path at the nominal angles and speed."""
    metrics, wps, dt = env.metrics, env.wps, env.control_dt
    speed = wps.nominal("travel_speed_mm_s") * 1e-3
    R_seam_tcp = torch_rotation(wps.nominal("work_angle_deg"), wps.nominal("travel_angle_deg"))
    rows = []
    for k in range(steps):
        lateral, along = weave_offsets(motion, phase0 + motion.frequency_hz * dt * k, speed / motion.frequency_hz)
        p_seam, R_world_seam = metrics.frame(0.01 + speed * dt * k + float(along))
        R_world_tcp = R_world_seam @ R_seam_tcp
        p_tcp = p_seam + R_world_seam[:, 1] * float(lateral) - R_world_tcp[:, 2] * metrics.ctwd_nominal
        rows.append(metrics.measure(p_tcp, R_world_tcp, arc_on=True))
    return rows


@pytest.mark.parametrize("pattern", WEAVE_PATTERNS)
def test_each_pattern_of_a_known_motion_is_measured_and_told_apart(pattern):
    env = WeldSeamEnv(variant="butt", randomize=False, cell=WEAVE_CELL, overrides={"wps": weave_wps(pattern)})
    env.reset(seed=0)
    # A slightly wider, faster weave with a longer dwell than prescribed, in the prescribed pattern.
    motion = WeaveConfig(pattern, width_mm=5.3, frequency_hz=1.3, dwell_s=0.12)
    last = weave_pass(env, motion)[-1]
    assert last["weave_pattern"] == pattern
    assert last["weave_cycle_width_mm"] == pytest.approx(5.3, rel=0.01)
    assert last["weave_cycle_frequency_hz"] == pytest.approx(1.3, rel=0.01)
    assert last["weave_dwell_s"] == pytest.approx(0.12, abs=0.01)
    assert last["weave_cycle_travel_speed_mm_s"] == pytest.approx(env.wps.nominal("travel_speed_mm_s"), rel=0.01)
    assert last["weave_shape_error"] < 0.04  # the dwell differs from the prescribed one
    assert last["weave_cycle_in_spec"] and last["in_spec"]
    for other in WEAVE_PATTERNS:  # the same motion against another pattern's WPS
        if other != pattern:
            env = WeldSeamEnv(variant="butt", randomize=False, cell=WEAVE_CELL, overrides={"wps": weave_wps(other)})
            env.reset(seed=0)
            last = weave_pass(env, motion)[-1]
            assert last["weave_pattern"] == pattern and not last["in_spec"]
            assert last["weave_shape_error"] > 0.1


def test_a_weave_out_of_band_is_out_of_spec():
    env = WeldSeamEnv(variant="butt", randomize=False, cell=WEAVE_CELL)
    for motion in (WeaveConfig("zigzag", 5.8, 1.25, 0.1), WeaveConfig("zigzag", 5.0, 1.45, 0.1),
                   WeaveConfig("zigzag", 5.0, 1.25, 0.0)):
        env.reset(seed=0)
        last = weave_pass(env, motion)[-1]
        assert last["weave_pattern"] == "zigzag" and not last["weave_cycle_in_spec"] and not last["in_spec"]
    env.reset(seed=0)
    rows = weave_pass(env, WeaveConfig("zigzag", 5.0, 1.25, 0.1))
    assert all(row["in_spec"] for row in rows[40:])


@pytest.mark.parametrize("pattern", WEAVE_PATTERNS)
def test_the_expert_weaves_as_prescribed(pattern):
    env = make_weave_env(pattern)
    infos = weld(env)
    weave, last = env.unwrapped.wps.weave, infos[-1]
    cycles = [info for info in infos if info["weave_pattern"]]
    widths = np.array([info["weave_cycle_width_mm"] for info in cycles])
    frequencies = np.array([info["weave_cycle_frequency_hz"] for info in cycles])
    print(f"\n{pattern}: {last['bead_weave_cycles']} cycles, width {last['bead_weave_width_mm_mean']:.3f} mm "
          f"(prescribed {weave.width_mm}), frequency {last['bead_weave_frequency_hz_mean']:.4f} Hz "
          f"(prescribed {weave.frequency_hz}), dwell {last['bead_weave_dwell_s_mean']:.3f} s (prescribed "
          f"{weave.dwell_s}), shape error {last['bead_weave_shape_error_mean']:.4f}, "
          f"in spec {last['in_spec_fraction']:.3f}")
    assert last["bead_weave_cycles"] >= 20
    assert np.all(np.abs(widths / weave.width_mm - 1) < 0.1)  # every cycle, not only on average
    assert np.all(np.abs(frequencies / weave.frequency_hz - 1) < 0.1)
    assert last["bead_weave_pattern_fraction"] == 1.0 and last["bead_weave_in_spec_fraction"] == 1.0
    assert last["in_spec_fraction"] > 0.95 and last["is_success"]
    # The bead model sees the weave's travel, not its swings: the steady pass's heat input, and no defects.
    arc, speed = env.unwrapped.wps.arc, env.unwrapped.wps.nominal("travel_speed_mm_s")
    steady = arc.arc_efficiency * arc.voltage_v * arc.current_a / speed * 1e-3
    assert last["bead_heat_input_kj_mm_mean"] == pytest.approx(steady, rel=0.02)
    assert last["defect_length_mm"] == 0.0


def test_a_novice_weave_is_irregular_and_flagged():
    env = make_weave_env("zigzag")
    expert, novice = weld(env)[-1], weld(env, skill="novice", seed=1)[-1]
    assert novice["bead_weave_width_mm_std"] > 10 * expert["bead_weave_width_mm_std"]
    assert novice["bead_weave_frequency_hz_std"] > 10 * expert["bead_weave_frequency_hz_std"]
    assert novice["bead_weave_in_spec_fraction"] < 0.3
    assert novice["in_spec_fraction"] < 0.3 and not novice["is_success"]


def test_the_weave_expert_is_a_function_of_the_observation():
    env = make_weave_env("crescent", tier="D2")
    expert = make_expert(env, seed=3)
    obs, _ = env.reset(seed=3)
    observations, actions = [], []
    for _ in range(200):  # past the arc strike (about 60 steps) into the weave
        action = expert(obs)
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)
    assert info["arc_on"] and info["weave_pattern"]
    fresh = make_expert(env, seed=3)
    order = np.random.default_rng(0).permutation(len(observations))
    replayed = {int(i): fresh(observations[i]) for i in order}
    assert all(np.array_equal(replayed[i], actions[i]) for i in range(len(actions)))


def test_a_wps_without_a_weave_measures_as_before():
    env = WeldSeamEnv(variant="butt", randomize=False)
    env.reset(seed=0)
    assert env.wps.weave is None and env.metrics.weave is None
    last = weave_pass(env, WeaveConfig("zigzag", 1.0, 1.25, 0.1), steps=100)[-1]
    assert not any(key.startswith(("weave_cycle", "weave_pattern", "bead_weave")) for key in last)
    assert last["weave_width_mm"] == pytest.approx(1.0, rel=0.02)
    assert last["in_spec"]  # a 1 mm wobble is inside the butt WPS's 0-4 mm band and its +-0.8 mm lateral band
    assert math.isfinite(last["weave_frequency_hz"])
