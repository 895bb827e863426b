"""The hot path's float and incremental formulations give numpy's bits exactly.

`tests/test_golden.py` checks whole episodes; these check the formulations on inputs that
episodes rarely reach (ties, zeros, signed zeros, NaN, far-off points), against the array code
they replaced.
"""

import math

import gymnasium as gym
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.envs.control import clip_float, rotate_transposed


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


def test_maximum_then_minimum_is_np_clip():
    values = np.array([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, math.inf, -math.inf, math.nan])
    for low, high in [(-1.0, 1.0), (0.0, 1.0), (-1.0, -0.0), (-0.0, 0.0)]:
        low_array, high_array = np.full(len(values), low), np.full(len(values), high)
        ours = np.minimum(np.maximum(values, low_array), high_array)
        assert ours.tobytes() == np.clip(values, low_array, high_array).tobytes()


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


def test_nearest_sample_is_the_window_argmin(weld):
    """The pruned search finds np.argmin's sample over the same window, near and far from the seam."""
    metrics = weld.metrics
    rng = np.random.default_rng(2)
    points = metrics.points_world
    for _ in range(3000):
        k0 = int(rng.integers(len(points)))
        p = points[int(rng.integers(len(points)))] + rng.standard_normal(3) * rng.choice([1e-4, 1e-3, 1e-2, 5e-2])
        if rng.uniform() < 0.1:  # on a sample or halfway between two: ties
            k = int(rng.integers(len(points) - 1))
            p = points[k] if rng.uniform() < 0.5 else 0.5 * (points[k] + points[k + 1])
        metrics.s, metrics.index = 0.0, k0
        lo, hi = max(0, k0 - 30), min(len(points), k0 + 60)
        d2 = ((points[lo:hi] - p) ** 2).sum(axis=1)
        k, best = metrics._nearest_sample(tuple(p.tolist()))
        assert (k, bits(best)) == (lo + int(np.argmin(d2)), bits(d2.min()))
