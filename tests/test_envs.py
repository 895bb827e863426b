"""Checks every registered ``skillcell/*`` env: a new cell is covered by registering it, a contact cell in each
control mode (the ``cell_case`` fixture, ``tests/conftest.py``)."""

import pickle
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import skillcell
from skillcell.checks import check_determinism, state_trajectory
from skillcell.envs.control import quat_from_rotvec

ENV_IDS = skillcell.skillcell_env_ids()


def test_registry_has_cells():
    assert "skillcell/PegInsert-v0" in ENV_IDS


def test_gymnasium_env_checker(cell_case):
    env = cell_case.make()
    gym_check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_sb3_env_checker(cell_case):
    env = cell_case.make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped, warn=True)
    # SB3 warns about spaces and dtypes it cannot learn well; a cell must trigger none of them.
    assert not caught, [str(w.message) for w in caught]
    env.close()


def test_determinism_bit_exact(cell_case):
    result = check_determinism(cell_case.make, seed=3, steps=40)
    assert result.passed, result.detail


def test_different_seeds_differ(cell_case):
    env = cell_case.make()
    actions = np.zeros((5, *env.action_space.shape))
    a = state_trajectory(env, 1, actions)
    b = state_trajectory(env, 2, actions)
    assert not np.array_equal(a[0], b[0])
    env.close()


@pytest.mark.parametrize("bad", [
    "nan", "inf", "short", "long", "text",
])
def test_bad_actions_are_rejected_before_ctrl(cell_case, bad):
    env = cell_case.make()
    env.reset(seed=0)
    n = env.action_space.shape[0]
    action = {
        "nan": np.r_[np.nan, np.zeros(n - 1)],
        "inf": np.r_[np.zeros(n - 1), np.inf],
        "short": np.zeros(n - 1),
        "long": np.zeros(n + 1),
        "text": ["a"] * n,
    }[bad]
    data = env.unwrapped.data
    ctrl, state = data.ctrl.copy(), env.unwrapped.get_state()
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert np.array_equal(data.ctrl, ctrl)
    assert np.array_equal(env.unwrapped.get_state(), state)
    env.close()


def test_instability_ends_episode(cell_case):
    env = cell_case.make()
    env.reset(seed=0)
    env.unwrapped.data.qvel[0] = np.nan
    obs, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
    assert terminated
    assert "BADQVEL" in info["instability"]
    assert info["physics_invalid"] and not info["is_success"]
    assert np.isfinite(obs).all() and np.isfinite(reward)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(env.action_space.shape))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape))
    assert info["instability"] == ""
    env.close()


def test_step_contract(cell_case):
    env = cell_case.make()
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert "is_success" in info
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        assert np.isfinite(obs).all()
        # Observations are scaled to about unit size.
        assert np.abs(obs).max() < 20
        terms = {k: v for k, v in info.items() if k.startswith("reward_")}
        assert terms and reward == pytest.approx(sum(terms.values()))
        assert info["instability"] == ""
        if terminated or truncated:
            break
    env.close()


def test_dt_is_the_control_period(cell_case):
    # Gymnasium's convention (MujocoEnv.dt): tools read env.unwrapped.dt as the time of one step.
    env = cell_case.make()
    u = env.unwrapped
    assert u.dt == u.model.opt.timestep * u.n_substeps
    assert u.dt == pytest.approx(1.0 / u.config.control.control_hz)
    env.reset(seed=0)
    start = u.data.time
    env.step(np.zeros(env.action_space.shape))
    assert u.data.time - start == pytest.approx(u.dt, rel=1e-9)
    assert u.metadata["render_fps"] == round(1.0 / u.dt)
    env.close()


def test_decode_obs_round_trip(cell_case):
    env = cell_case.make()
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    decoded = u.decode_obs(obs)
    assert np.allclose(decoded["joint_pos"], u.data.qpos[u.arm_qpos_adr], atol=1e-6)
    assert sum(f.size for f in u.obs_fields) == obs.shape[0]
    env.close()


def test_the_commanded_pose_is_observed(cell_case):
    """tcp_lead and tcp_lead_rot put the commanded TCP pose together from the measured one."""
    env = cell_case.make()
    env.reset(seed=0)
    u = env.unwrapped
    action = np.zeros(env.action_space.shape)
    action[:6] = [0.5, -0.3, 0.2, 0.4, -0.6, 0.3]
    obs, *_ = env.step(action)  # the servos lag: the command leads in position and orientation
    decoded = u.decode_obs(obs)
    assert np.allclose(u.data.site_xpos[u.tcp_site] + decoded["tcp_lead"], u.controller.p_world_cmd, atol=1e-6)
    tcp_quat, commanded = np.empty(4), np.empty(4)
    mujoco.mju_mat2Quat(tcp_quat, u.data.site_xmat[u.tcp_site])
    mujoco.mju_mulQuat(commanded, quat_from_rotvec(decoded["tcp_lead_rot"]), tcp_quat)
    assert np.linalg.norm(decoded["tcp_lead_rot"]) > np.radians(0.5)
    assert abs(float(commanded @ u.controller.quat_world_cmd)) == pytest.approx(1.0, abs=1e-9)
    env.close()


def test_pickle_round_trip(cell_case):
    env = cell_case.make()
    clone = pickle.loads(pickle.dumps(env))
    actions = np.random.default_rng(0).uniform(-1, 1, (10, *env.action_space.shape))
    a = state_trajectory(env, 5, actions)
    b = state_trajectory(clone, 5, actions)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    env.close()
    clone.close()


def _make(cell_case):
    # "skillcell:" makes Gymnasium import skillcell first, which a fresh subprocess needs.
    env_id, kwargs = f"skillcell:{cell_case.env_id}", cell_case.kwargs()
    return lambda: gym.make(env_id, **kwargs)


def test_subproc_vec_env(cell_case):
    venv = SubprocVecEnv([_make(cell_case), _make(cell_case)])
    try:
        venv.seed(0)
        obs = venv.reset()
        assert obs.shape == (2, *venv.observation_space.shape)
        obs, _, _, infos = venv.step(np.zeros((2, *venv.action_space.shape)))
        assert np.isfinite(obs).all() and len(infos) == 2
    finally:
        venv.close()


def test_headless_render(cell_case):
    env = cell_case.make(render_mode="rgb_array", width=320, height=240)
    env.reset(seed=0)
    frames = {}
    for camera in env.unwrapped.camera_names:
        env.unwrapped.camera = camera
        frame = env.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        assert frame.std() > 5, f"camera {camera} rendered a flat image"
        frames[camera] = frame
    assert not np.array_equal(*list(frames.values())[:2])
    env.close()


def test_render_without_mode_returns_none(cell_case):
    env = cell_case.make()
    env.reset(seed=0)
    with pytest.warns(UserWarning):
        assert env.unwrapped.render() is None
    env.close()


def test_models_stay_dense(cell_case):
    """mujoco 4.0.0's sparse Cholesky can diverge (#3767): every cell uses dense Jacobians, on every version."""
    env = cell_case.make()
    assert int(env.unwrapped.model.opt.jacobian) == int(mujoco.mjtJacobian.mjJAC_DENSE)
    env.close()


def test_set_state_replays_an_episode_bit_exactly(cell_case):
    env = cell_case.make()
    actions = np.random.default_rng(4).uniform(-1, 1, (15, *env.action_space.shape))
    states = state_trajectory(env, 9, actions)
    env.reset(seed=123)  # somewhere else entirely
    env.unwrapped.set_state(states[0])
    replayed = [env.unwrapped.get_state()]
    for action in actions[: len(states) - 1]:
        env.step(action)
        replayed.append(env.unwrapped.get_state())
    assert all(np.array_equal(a, b) for a, b in zip(states, replayed, strict=True))
    with pytest.raises(ValueError, match="shape"):
        env.unwrapped.set_state(states[0][:-1])
    env.close()
