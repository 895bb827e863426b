"""The hot path's float and incremental formulations against the array and MuJoCo code they replaced.

`tests/test_golden.py` checks whole episodes; these check the formulations on inputs that
episodes rarely reach (ties, zeros, signed zeros, NaN, far-off points). Most give the replaced
code's bits exactly; the few that are exact in math but round differently (the quaternion
product, the Cholesky solve, the in-spec reward shortcut) are held to a few ulps.
"""

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.envs import kernels
from skillcell.envs.control import CartesianController, clip_float, mul_quat, quat_from_rotvec, rotate_transposed
from skillcell.envs.weld import METRIC_KEYS, SEARCH_AHEAD, SEARCH_BEHIND


def bits(x) -> bytes:
    return np.asarray(x, dtype=np.float64).tobytes()


def test_rotate_transposed_is_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        R, v = rng.standard_normal((3, 3)) * rng.uniform(1e-6, 1e3), rng.standard_normal(3)
        assert bits(rotate_transposed(R.ravel().tolist(), v.tolist())) == bits(R.T @ v)


@pytest.mark.parametrize("x", [-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 1.0), (-1.0, -0.0), (-0.0, 0.0)])
def test_clip_float_is_np_clip(x, bounds):
    assert bits(clip_float(x, *bounds)) == bits(np.clip(np.array([x]), *bounds)[0])
    assert bits(clip_float(x, *bounds)) == bits(np.clip(np.float64(x), *bounds))


def test_joint_targets_are_np_clip(weld):
    """The controller clips its joint targets on floats as np.clip clips them, inside and past the range."""
    controller, rng = weld.controller, np.random.default_rng(6)
    for scale in (1e-3, 1.0, 1e3):
        controller._track(rng.standard_normal(6) * scale)
        target = weld.data.qpos[weld.arm_qpos_adr] + controller._dq
        expected = np.clip(target, controller.ctrl_low, controller.ctrl_high)
        assert bits(weld.data.ctrl[weld.arm_actuators]) == bits(expected)


@pytest.fixture(scope="module")
def weld():
    env = gym.make("skillcell/WeldSeam-v0", tier="D0")
    env.reset(seed=0)
    yield env.unwrapped
    env.close()


def reference_weave(window: list[float], dt: float) -> tuple[float, float]:
    """The array formulation the incremental weave replaced."""
    if len(window) < 4:
        return 0.0, 0.0
    h = np.asarray(window)
    centred = h - h.mean()
    width = float(h.max() - h.min())
    crossings = int(np.count_nonzero(np.diff(np.signbit(centred))))
    return width, crossings / (2.0 * len(h) * dt)


@pytest.mark.parametrize("kind", ["weave", "noise", "ties", "zeros", "nan", "nan first"])
def test_sliding_weave_is_the_array_formulation(weld, kind):
    rng = np.random.default_rng(1)
    n = 5 * weld.metrics._window
    t = np.arange(n) * weld.dt
    sequence = {
        "weave": 0.002 * np.sin(2 * np.pi * 1.3 * t) + 1e-4 * rng.standard_normal(n),
        "noise": rng.standard_normal(n) * 1e-3,
        "ties": rng.integers(-2, 3, n) * 1e-3,  # repeated values, means that land on samples
        "zeros": rng.choice([0.0, -0.0, 1e-3, -1e-3], n, p=[0.4, 0.3, 0.15, 0.15]),
        "nan": np.where(np.arange(n) == 50, np.nan, rng.standard_normal(n) * 1e-3),
        "nan first": np.where(np.arange(n) == 0, np.nan, rng.standard_normal(n) * 1e-3),
    }[kind]
    metrics = weld.metrics
    metrics.reset(np.zeros(3), np.eye(3))
    window = []
    for value in sequence.tolist():
        metrics._append_lateral(value)
        window = [*window, value][-metrics._window:]
        assert bits(metrics._weave_cache) == bits(reference_weave(window, weld.dt))


def test_seam_search_is_the_window_argmin(weld):
    """The compiled search finds np.argmin's sample over the window (first on ties, the first NaN), near and
    far from the seam, and refines it on the pieces either side: never farther than the sample."""
    metrics = weld.metrics
    rng = np.random.default_rng(2)
    points = metrics.points_world
    for trial in range(3000):
        k0 = int(rng.integers(len(points)))
        p = points[int(rng.integers(len(points)))] + rng.standard_normal(3) * rng.choice([1e-4, 1e-3, 1e-2, 5e-2])
        if rng.uniform() < 0.1:  # on a sample or halfway between two: ties
            k = int(rng.integers(len(points) - 1))
            p = points[k] if rng.uniform() < 0.5 else 0.5 * (points[k] + points[k + 1])
        if trial == 0:
            p = np.array([0.0, np.nan, 0.0])
        lo, hi = (max(0, k0 - SEARCH_BEHIND), min(len(points), k0 + SEARCH_AHEAD)) if trial % 10 else (0, len(points))
        metrics.s, metrics.index = (0.0, k0) if trial % 10 else (None, 0)
        d2 = np.add.reduce(np.square(points[lo:hi] - p), axis=1)
        s = metrics.locate(tuple(p.tolist()))
        assert metrics.index == lo + int(np.argmin(d2))
        if trial:
            assert np.linalg.norm(metrics.point(s) - p) <= math.sqrt(d2.min()) * (1 + 1e-12)


def random_quats(rng, n):
    q = rng.standard_normal((n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_kernel_quaternions_are_mujoco_bit_for_bit():
    """The compiled mat2Quat and quat2Vel (the controller's, the observation's, the seam frame's) give MuJoCo's bits."""
    rng = np.random.default_rng(3)
    R, q, v = np.empty(9), np.empty(4), np.empty(3)
    quats = random_quats(rng, 3000)
    quats[:20] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [-1, 0, 0, 0]] * 4  # every branch
    for quat in quats:
        mujoco.mju_quat2Mat(R, quat)
        mujoco.mju_mat2Quat(q, R)
        assert bits(kernels.quat_of(R)) == bits(q)
        assert bits(kernels.relative_rotvec(1.0, 0.0, 0.0, 0.0, R)) == bits(kernels.rotvec(*q))
        for small in (1.0, 1e-6, 1e-12):  # angles near zero, where the axis is ill-conditioned
            near = np.array([quat[0], *(quat[1:] * small)])
            mujoco.mju_quat2Vel(v, near, 1.0)
            assert bits(kernels.rotvec(*near.tolist())) == bits(v)


def test_mul_quat_is_mujoco_within_ulps():
    rng = np.random.default_rng(4)
    out = np.empty(4)
    for a, b in zip(random_quats(rng, 2000), random_quats(rng, 2000) * rng.uniform(0.5, 2.0, (2000, 1)), strict=True):
        mujoco.mju_mulQuat(out, a, b)
        np.testing.assert_allclose(mul_quat(a.tolist(), b.tolist()), out, rtol=0, atol=4 * np.finfo(float).eps)


@pytest.mark.skipif(not mujoco.__version__.startswith("4."), reason="the lane and loop order of MuJoCo 4's routines")
def test_controller_kernel_solve_is_mujocos_bit_for_bit(weld):
    """The compiled solve is mju_mulMatMatT, mju_addTo, mju_cholFactor, mju_cholSolve and mju_mulMatTVec, bit
    for bit (the calls it replaced), on random and on the arm's Jacobians."""
    controller, rng = weld.controller, np.random.default_rng(7)
    jjt, solved, expected = np.empty((6, 6)), np.empty(6), np.empty(6)
    damping = (controller._damping_eye).ravel()
    for trial in range(2000):
        if trial % 2:
            j = rng.standard_normal((6, 6)) * rng.choice([1e-3, 1.0, 1e3])
        else:  # the arm somewhere in its range
            weld.data.qpos[weld.arm_qpos_adr] = rng.uniform(-np.pi, np.pi, 6)
            mujoco.mj_kinematics(weld.model, weld.data)
            mujoco.mj_comPos(weld.model, weld.data)
            mujoco.mj_jacSite(weld.model, weld.data, controller._jacp, controller._jacr, weld.tcp_site)
            j = controller._jac.copy()
        error = rng.standard_normal(6) * rng.choice([1e-6, 1e-3, 1.0])
        mujoco.mju_mulMatMatT(jjt, j, j)
        mujoco.mju_addTo(jjt.ravel(), damping)
        mujoco.mju_cholFactor(jjt, 0.0)
        mujoco.mju_cholSolve(solved, jjt, error)
        mujoco.mju_mulMatTVec(expected, j, solved)
        controller._jac[:], controller._error[:] = j, error
        controller.kernel.track()
        assert bits(controller._dq) == bits(expected)


def normalize_quat(q):
    """mju_normalize4 as the controller states it: left as is within 1e-15 of unit length, identity if ~0."""
    w, x, y, z = q
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    if norm < 1e-15:
        return 1.0, 0.0, 0.0, 0.0
    if abs(norm - 1.0) > 1e-15:
        f = 1.0 / norm
        return w * f, x * f, y * f, z * f
    return w, x, y, z


def reference_command(c, action, q_tcp):
    """The float formulation the controller kernel replaced (the position and rotation leads, the
    workspace clip, the feed-forward); returns the command and the error it writes."""
    a0, a1, a2, a3, a4, a5 = action.tolist()[:6]
    bx, by, bz = c.p_world_cmd.tolist()
    q_cmd = c.quat_world_cmd.tolist()
    (lx, ly, lz), (hx, hy, hz) = c.workspace_min.tolist(), c.workspace_max.tolist()
    t = c.max_translation
    px, py, pz = (float(np.clip(v, lo, hi)) for v, lo, hi in ((bx + t * a0, lx, hx), (by + t * a1, ly, hy),
                                                            (bz + t * a2, lz, hz)))
    r0, r1, r2 = a3 * c.max_rotation, a4 * c.max_rotation, a5 * c.max_rotation
    rotated = bool(r0 or r1 or r2)
    if rotated:
        q_cmd = normalize_quat(mul_quat(quat_from_rotvec(np.array([r0, r1, r2])).tolist(), q_cmd))
    tx, ty, tz = c._xpos.tolist()
    ex, ey, ez = px - tx, py - ty, pz - tz
    w, x, y, z = q_tcp
    e3, e4, e5 = kernels.rotvec(*mul_quat(q_cmd, (w, -x, -y, -z)))
    lead = math.sqrt(ex * ex + ey * ey + ez * ez)
    if lead > c.max_lead_translation:
        f = c.max_lead_translation / lead
        ex, ey, ez = ex * f, ey * f, ez * f
        px, py, pz = tx + ex, ty + ey, tz + ez
    lead = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
    if lead > c.max_lead_rotation:
        f = c.max_lead_rotation / lead
        e3, e4, e5 = e3 * f, e4 * f, e5 * f
        q_cmd = mul_quat(quat_from_rotvec(np.array([e3, e4, e5])).tolist(), q_tcp)
    gain = c.feedforward_time / c.control_dt
    ex, ey, ez = ex + gain * (px - bx), ey + gain * (py - by), ez + gain * (pz - bz)
    e3, e4, e5 = e3 + gain * r0, e4 + gain * r1, e5 + gain * r2
    norm = math.sqrt(ex * ex + ey * ey + ez * ez)
    if norm > c.max_lead_translation:
        f = c.max_lead_translation / norm
        ex, ey, ez = ex * f, ey * f, ez * f
    norm = math.sqrt(e3 * e3 + e4 * e4 + e5 * e5)
    if norm > c.max_lead_rotation:
        f = c.max_lead_rotation / norm
        e3, e4, e5 = e3 * f, e4 * f, e5 * f
    return (px, py, pz), tuple(q_cmd), (ex, ey, ez, e3, e4, e5)


@pytest.mark.parametrize("feedforward", [0.0, 1.0])
def test_controller_kernel_command_is_the_float_formulation(weld, feedforward):
    """The compiled command moves the commanded pose and writes the error as the float formulation did:
    small and saturating actions, leads past both limits, commands past the workspace box, no rotation."""
    w, rng = weld.controller, np.random.default_rng(8)
    c = CartesianController(weld.model, weld.data, weld.tcp_site, weld.arm_qpos_adr, weld.arm_dof_adr,
                            weld.arm_actuators, max_translation=w.max_translation, max_rotation=w.max_rotation,
                            max_lead_translation=w.max_lead_translation, max_lead_rotation=w.max_lead_rotation,
                            workspace_min=w.workspace_min, workspace_max=w.workspace_max, control_dt=w.control_dt,
                            velocity_feedforward=feedforward)
    assert (c.feedforward_time > 0) == (feedforward > 0)
    for trial in range(3000):
        action = rng.uniform(-1, 1, 7) * rng.choice([0.0, 0.1, 1.0, 3.0])
        if trial % 5 == 0:
            action[3:6] = 0.0
        c.reset()
        c.p_world_cmd[:] += rng.standard_normal(3) * rng.choice([0.0, 1e-3, 0.05])
        if trial % 7 == 0:  # the command beyond the workspace box
            c.p_world_cmd[:] = c.workspace_max + 0.01
        c.quat_world_cmd[:] = normalize_quat(mul_quat(quat_from_rotvec(rng.standard_normal(3) * 0.2).tolist(),
                                                      c.quat_world_cmd.tolist()))
        expected = reference_command(c, action, kernels.quat_of(c._xmat))
        c.kernel.command(action, False)
        assert (bits(c.p_world_cmd), bits(c.quat_world_cmd), bits(c._error)) == tuple(map(bits, expected))


def observer(weld, warnings, qpos=None, qvel=None, **buffers):
    """A kernels.Observer on buffers of the test's own (the weld env's controller kernel for the lead)."""
    rng = np.random.default_rng(10)
    arrays = {"raw": np.zeros(30), "scale": np.ones(30), "qpos": np.zeros(8) if qpos is None else qpos,
              "qvel": np.zeros(8) if qvel is None else qvel, "wrench": np.zeros(6), "ft_offset": np.zeros(6),
              "ft_xmat": np.eye(3).ravel(), "payload_force": rng.standard_normal(3),
              "payload_com": rng.standard_normal(3) * 0.05, "force": np.zeros(3), "torque": np.zeros(3), **buffers}
    kernel = kernels.Observer(**arrays, qpos_index=list(range(6)), qvel_index=list(range(6)),
                              controller=weld.controller.kernel, joint_pos=0, joint_vel=6, lead=12, ft=18,
                              empty=np.empty, dtype=np.float32, warnings=warnings)
    return kernel, arrays


def test_wrench_kernel_is_the_float_formulation(weld):
    """F/T compensation: the reading plus the tool's weight in the F/T frame, and its moment about the sensor."""
    rng = np.random.default_rng(9)
    kernel, a = observer(weld, np.zeros(8, np.int32))
    for _ in range(200):
        a["force"][:], a["torque"][:] = rng.standard_normal(3) * 10, rng.standard_normal(3)
        a["ft_xmat"][:] = np.linalg.qr(rng.standard_normal((3, 3)))[0].ravel()
        gx, gy, gz = rotate_transposed(a["ft_xmat"].tolist(), a["payload_force"].tolist())
        (cx, cy, cz), (fx, fy, fz), (tx, ty, tz) = a["payload_com"].tolist(), a["force"].tolist(), a["torque"].tolist()
        expected = [fx + gx, fy + gy, fz + gz, tx + (cy * gz - cz * gy), ty + (cz * gx - cx * gz),
                    tz + (cx * gy - cy * gx)]
        kernel.wrench()
        assert bits(a["wrench"]) == bits(expected)


def test_soundness_kernel_sees_warnings_and_non_finite_state(weld):
    """A warning counted (mjData's counts are a strided field of its records), or one non-finite qpos or qvel
    entry, and the state is unsound."""
    records = np.zeros(8, dtype=[("lastinfo", np.int32), ("number", np.int32)])
    qpos, qvel = np.zeros(8), np.zeros(8)
    kernel, _ = observer(weld, records["number"], qpos=qpos, qvel=qvel)
    assert kernel.sound()
    for array in (qpos, qvel):
        for value in (np.nan, np.inf, -np.inf):
            array[-1] = value
            assert not kernel.sound()
            array[-1] = 0.0
    records["number"][3] = 1
    assert not kernel.sound()
    records["number"][3] = 0
    assert kernel.sound()


def test_in_spec_reward_has_no_quality_penalty(weld):
    """In spec, every band's excess is zero: the shortcut that skips the band loop changes nothing."""
    metrics = {key: 0.5 * (low + high) for key, (low, high) in ((k, weld.wps.band(k)) for k in METRIC_KEYS)}
    for key in METRIC_KEYS:  # each metric at a band edge, the others in the middle
        for edge in weld.wps.band(key):
            values = {**metrics, key: edge}
            excess = sum(min(1.0, max(0.0, abs(values[k] - (low + high) / 2) - (high - low) / 2) / ((high - low) / 2))
                         for k, (low, high) in ((k, weld.wps.band(k)) for k in METRIC_KEYS))
            assert excess <= 1e-13

