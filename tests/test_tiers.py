"""Randomization tiers: D0/D1/D2 sample what they declare, stay deterministic, and fail loudly."""

import pickle
import textwrap
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import skillcell
from skillcell.checks import check_determinism, state_trajectory
from skillcell.cli import main as cli_main
from skillcell.config import ConfigError
from skillcell.envs.cells.peg_insert import PegInsertEnv
from skillcell.envs.tiers import load_tiers

PEG = "skillcell/PegInsert-v0"


def _declared_tiers():
    """(env_id, tier) for every registered env whose cell declares a tiers.yaml."""
    out = []
    for env_id in skillcell.skillcell_env_ids():
        spec = gym.spec(env_id)
        module, _, name = spec.entry_point.partition(":")
        cls = getattr(__import__(module, fromlist=[name]), name)
        if cls.cell_dir is not None and (cls.cell_dir / "tiers.yaml").is_file():
            out += [(env_id, tier) for tier in load_tiers(cls.cell_dir / "tiers.yaml")]
    return out


DECLARED = _declared_tiers()


def test_peg_insert_declares_d0_d1_d2():
    assert {(PEG, t) for t in ("D0", "D1", "D2")} <= set(DECLARED)


def test_default_is_d1_and_no_randomize_is_d0():
    env = gym.make(PEG)
    assert env.unwrapped.tier.name == "D1" and env.unwrapped.randomize
    env.close()
    env = gym.make(PEG, randomize=False)
    assert env.unwrapped.tier.name == "D0"
    env.close()
    env = gym.make(PEG, tier="D0")
    assert not env.unwrapped.randomize
    env.close()


def test_d1_is_the_unchanged_default():
    """An explicit D1 draws exactly what an env made before tiers existed draws: same states."""
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 6))
    a, b = gym.make(PEG), gym.make(PEG, tier="D1")
    assert all(np.array_equal(x, y) for x, y in zip(state_trajectory(a, 4, actions),
                                                     state_trajectory(b, 4, actions), strict=True))
    a.close()
    b.close()


def test_d0_is_nominal_whatever_the_seed():
    env = gym.make(PEG, tier="D0")
    obs = [env.reset(seed=s)[0] for s in (0, 1, 2)]
    assert all(np.array_equal(obs[0], o) for o in obs[1:])
    fixture = env.unwrapped.model.body("fixture")
    assert np.array_equal(env.unwrapped.data.mocap_pos[fixture.mocapid[0]], fixture.pos)
    env.close()


def _hole_offsets(env, seeds):
    u = env.unwrapped
    fixture = u.model.body("fixture")
    out = []
    for s in seeds:
        env.reset(seed=s)
        out.append((u.data.mocap_pos[fixture.mocapid[0]] - fixture.pos) * 1e3)
    return np.array(out)


def test_d2_widens_the_part_pose_as_declared():
    d1, d2 = gym.make(PEG, tier="D1"), gym.make(PEG, tier="D2")
    assert d2.unwrapped.config.randomization.hole_pos_mm == (10.0, 10.0, 0.0)
    assert d2.unwrapped.config.randomization.hole_rot_deg == (4.0, 4.0, 4.0)
    off1, off2 = _hole_offsets(d1, range(30)), _hole_offsets(d2, range(30))
    assert np.abs(off1[:, :2]).max() <= 5.0 and np.abs(off2[:, :2]).max() <= 10.0
    assert np.abs(off2[:, :2]).max() > 5.0  # beyond D1's range
    d1.close()
    d2.close()


def test_d2_samples_friction_mass_bias_latency_within_declared_ranges():
    env = gym.make(PEG, tier="D2")
    u = env.unwrapped
    m = u.model
    # Nominal until the first reset; the tier varies the masses of the robot's and the tool's bodies.
    friction_nominal = m.geom_friction[:, 0].copy()
    mass_nominal = m.body_mass.copy()
    varied = [b for b in range(m.nbody) if mass_nominal[b] > 0 and m.body(b).name.startswith(("robot/", "tool/"))]
    assert "tool/tool" in [m.body(b).name for b in varied]
    frictions, masses, biases, latencies = [], [], [], []
    for seed in range(20):
        env.reset(seed=seed)
        s = u.tier_sample
        frictions.append(s.friction_scale)
        masses.append(s.mass_scale.copy())
        biases.append(s.ft_bias.copy())
        latencies.append(s.latency_steps)
        # The model holds nominal times this episode's factors, never a drifted value.
        assert np.array_equal(m.geom_friction[:, 0], friction_nominal * s.friction_scale)
        assert np.array_equal(m.body_mass[varied], mass_nominal[varied] * s.mass_scale)
        assert np.array_equal(np.delete(m.body_mass, varied), np.delete(mass_nominal, varied))
    frictions, masses, biases = np.array(frictions), np.array(masses), np.array(biases)
    assert 0.7 <= frictions.min() and frictions.max() <= 1.3 and frictions.std() > 0.05
    assert 0.9 <= masses.min() and masses.max() <= 1.1 and masses.std() > 0.02
    assert np.abs(biases[:, :3]).max() <= 2.0 and np.abs(biases[:, 3:]).max() <= 0.1
    assert biases[:, :3].std() > 0.5
    assert set(latencies) == {1, 2}
    # The same seed again gives the same draw (restored from nominal, not compounded).
    env.reset(seed=3)
    assert u.tier_sample.friction_scale == frictions[3]
    env.close()


def test_d1_leaves_the_model_and_observations_alone():
    env = gym.make(PEG, tier="D1")
    u = env.unwrapped
    friction, mass = u.model.geom_friction.copy(), u.model.body_mass.copy()
    for seed in range(3):
        env.reset(seed=seed)
    assert np.array_equal(u.model.geom_friction, friction) and np.array_equal(u.model.body_mass, mass)
    obs, _, _, _, _ = env.step(np.zeros(6))
    assert np.allclose(u.decode_obs(obs)["force_tool"], u.wrench_tool[:3], atol=1e-4)
    env.close()


def ft_and_joint_errors(env, seed, steps=60):
    """Observed minus true F/T force and joint positions over ``steps`` zero-action steps."""
    u = env.unwrapped
    env.reset(seed=seed)
    ft_error, joint_error = [], []
    for _ in range(steps):
        obs, _, _, _, info = env.step(np.zeros(6))
        decoded = u.decode_obs(obs)
        ft_error.append(decoded["force_tool"] - u.wrench_tool[:3])
        joint_error.append(decoded["joint_pos"] - u.data.qpos[u.arm_qpos_adr])
        # info metrics stay ground truth: no noise, no bias
        assert info["contact_force_n"] == pytest.approx(np.linalg.norm(u.wrench_tool[:3]))
    return np.array(ft_error), np.array(joint_error)


def test_d2_observation_noise_is_as_declared_and_the_ft_bias_is_tared_at_reset():
    env = gym.make(PEG, tier="D2")
    ft_error, joint_error = ft_and_joint_errors(env, seed=11)
    bias = env.unwrapped.tier_sample.ft_bias[:3]
    assert np.abs(bias).max() > 0.5  # this seed draws a bias worth taring
    # What is left: the tare's noise (0.5 N over 20 readings) and the mean of 60 noisy steps.
    assert np.abs(ft_error.mean(axis=0)).max() < 4 * 0.5 / np.sqrt(20) + 4 * 0.5 / np.sqrt(60)
    assert 0.35 < ft_error.std(axis=0).mean() < 0.65  # declared 0.5 N
    assert 1.4e-4 < joint_error.std() < 2.6e-4  # declared 0.0002 rad
    env.close()


def test_a_sensor_that_is_never_zeroed_keeps_its_bias(tmp_path):
    _tiers_file(tmp_path, "ft_force_noise_n: 0.5\nft_force_bias_n: 2.0\nft_tare_readings: 0\n")

    class Cell(PegInsertEnv):
        cell_dir = tmp_path

    env = gym.wrappers.TimeLimit(Cell(tier="D2"), 200)
    ft_error, _ = ft_and_joint_errors(env, seed=11)
    bias = env.unwrapped.tier_sample.ft_bias[:3]
    assert np.abs(bias).max() > 0.5
    assert np.allclose(ft_error.mean(axis=0), bias, atol=4 * 0.5 / np.sqrt(60))
    env.close()


@pytest.mark.parametrize("latency", [1, 2])
def test_d2_latency_delays_the_action_by_whole_periods(latency):
    env = gym.make(PEG, tier="D2")
    u = env.unwrapped
    seed = next(s for s in range(50) if (env.reset(seed=s), u.tier_sample.latency_steps)[1] == latency)
    env.reset(seed=seed)
    start = u.controller.p_world_cmd.copy()
    env.step(np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))  # +5 mm in y, then nothing
    moved = []
    for _ in range(latency + 1):
        moved.append(u.controller.p_world_cmd[1] - start[1])
        env.step(np.zeros(6))
    # The command stays put while the action is in flight, then moves by the full 5 mm.
    assert all(abs(d) < 1e-9 for d in moved[:latency])
    assert moved[latency] == pytest.approx(0.005, abs=1e-9)
    env.close()


@pytest.mark.parametrize("env_id,tier", DECLARED)
def test_every_declared_tier_is_deterministic(env_id, tier):
    result = check_determinism(lambda: gym.make(env_id, tier=tier), seed=3, steps=40)
    assert result.passed, result.detail


@pytest.mark.parametrize("env_id,tier", DECLARED)
def test_every_declared_tier_passes_the_env_checkers_and_pickles(env_id, tier):
    env = gym.make(env_id, tier=tier)
    gym_check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped, warn=True)
    assert not caught, [str(w.message) for w in caught]
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.tier == env.unwrapped.tier
    actions = np.random.default_rng(1).uniform(-1, 1, (10, *env.action_space.shape))
    a, b = state_trajectory(env, 5, actions), state_trajectory(clone, 5, actions)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    env.close()
    clone.close()


# ---------------------------------------------------------------------- errors


def test_unknown_tier_names_the_declared_ones():
    with pytest.raises(ConfigError, match=r"no tier 'D9'; declared: D0, D1, D2"):
        gym.make(PEG, tier="D9")


def test_randomize_false_contradicts_a_randomizing_tier():
    with pytest.raises(ConfigError, match=r"randomize=False contradicts tier 'D2'"):
        gym.make(PEG, tier="D2", randomize=False)


def _tiers_file(tmp_path, d2: str) -> None:
    (tmp_path / "tiers.yaml").write_text("D0: {randomize: false}\nD1: {}\nD2:\n" + textwrap.indent(d2, "  "))


@pytest.mark.parametrize("d2,message", [
    ("friction_scal: [0.5, 1.5]\n", r"D2\.friction_scal: unknown key"),
    ("friction_scale: [1.5, 0.5]\n", r"D2\.friction_scale: low must not exceed high"),
    ("mass_scale: [0.0, 1.0]\n", r"D2\.mass_scale: must be in"),
    ("action_latency_steps: [1.5, 2]\n", r"D2\.action_latency_steps\[0\]: expected an integer"),
    ("obs_noise: {joint_pos: -1}\n", r"D2\.obs_noise\.joint_pos: expected a standard deviation >= 0"),
    ("obs_noise: {force_tool: 0.1}\n", r"D2\.obs_noise\.force_tool: F/T noise is set with ft_force_noise_n"),
    ("randomization_scale: 8.0\n", r"randomization\.hole_rot_deg: must be in \[0\.0, 15\.0\], got 16\.0"),
    ("obs_noise: {hole_pose: 0.001}\n", r"D2\.obs_noise\.hole_pose: unknown observation block \(expected one of"),
])
def test_bad_tier_yaml_names_the_key(tmp_path, d2, message):
    _tiers_file(tmp_path, d2)

    class Cell(PegInsertEnv):
        cell_dir = tmp_path

    with pytest.raises(ConfigError, match=message):
        Cell(tier="D2")


def test_tiers_file_must_declare_d0_and_d1(tmp_path):
    (tmp_path / "tiers.yaml").write_text("D0: {randomize: false}\nD2: {}\n")
    with pytest.raises(ConfigError, match=r"D1: required tier is missing"):
        load_tiers(tmp_path / "tiers.yaml")


def test_cli_tier_option(capsys):
    assert cli_main(["expert", PEG, "--tier", "D0", "--episodes", "2", "--no-progress"]) == 0
    assert "success 2/2" in capsys.readouterr().out
    assert cli_main(["expert", PEG, "--tier", "D7", "--episodes", "1", "--no-progress"]) == 2
    assert "no tier 'D7'" in capsys.readouterr().err
