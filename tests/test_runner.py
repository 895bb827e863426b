"""The exported-policy runner: driver interface, envelope filter in the loop, watchdog."""

import time

import gymnasium as gym
import numpy as np
import pytest

from skillcell.deploy.envelope import EnvelopeMonitor, load_envelope
from skillcell.deploy.runner import Command, PolicyRunner, RobotDriver, SimDriver, Watchdog, command_scale

PEG = "skillcell/PegInsert-v0"
FAST_X = np.array([0.005, 0.0, 0.0, 0.0, 0.0, 0.0])  # 5 mm per 50 ms period: 100 mm/s


@pytest.fixture
def env():
    env = gym.make(PEG, tier="D0")
    yield env
    env.close()


def _tcp(env):
    u = env.unwrapped
    return u.data.site_xpos[u.tcp_site].copy()


def _drive(env, runner, driver, commands):
    """Ticks once per entry of ``commands`` (None: no command arrives); returns actions and TCP positions."""
    actions, positions = [], []
    for values in commands:
        _, state = driver.read()
        command = None if values is None else Command(np.asarray(values, float), state.stamp_s)
        actions.append(runner.tick(command, state).action)
        positions.append(_tcp(env))
    return actions, np.array(positions)


def test_sim_driver_implements_the_driver_protocol(env):
    driver = SimDriver(env)
    assert isinstance(driver, RobotDriver)
    assert driver.control_dt == pytest.approx(0.05)
    assert np.allclose(command_scale(env), [0.005] * 3 + [np.radians(3.0)] * 3)


def test_watchdog_holds_position_when_commands_stop(env):
    driver = SimDriver(env)
    driver.reset(seed=0)
    runner = PolicyRunner(driver, load_envelope(env))
    actions, x = _drive(env, runner, driver, [FAST_X] * 10 + [None] * 30)
    # Two periods of grace (the commanded pose is kept), then the watchdog trips and holds.
    assert actions[:10] == ["send"] * 10 and actions[10:12] == ["keep"] * 2
    assert set(actions[12:]) == {"hold"}
    assert runner.tripped and runner.stats.watchdog_trips == 1
    held = x[13:]
    # Stopped while it was moving at 100 mm/s: within 0.03 mm on the joint servos, 1.1 mm on the compliant
    # arm (PegInsert's default), whose spring brakes the arm's momentum more gently.
    assert np.abs(held - held[0]).max() < 2e-3
    assert np.linalg.norm(driver.read()[1].tcp_lin_vel) < 1e-3

    # Without the watchdog's hold, the arm would have run on to the commanded pose it leads by.
    driver.reset(seed=0)
    free = PolicyRunner(driver, load_envelope(env))
    _, x_free = _drive(env, free, driver, [FAST_X] * 10 + [np.zeros(6)] * 30)
    assert x_free[-1, 0] - held[-1, 0] > 3e-3


def test_tripped_watchdog_latches_until_rearmed(env):
    driver = SimDriver(env)
    driver.reset(seed=0)
    runner = PolicyRunner(driver, load_envelope(env))
    actions, _ = _drive(env, runner, driver, [FAST_X] * 3 + [None] * 5 + [FAST_X] * 3)
    assert actions[-3:] == ["hold"] * 3  # commands are back, but nobody re-armed
    runner.rearm()
    actions, _ = _drive(env, runner, driver, [FAST_X] * 2)
    assert actions == ["send", "send"]


def test_stale_commands_are_not_executed(env):
    driver = SimDriver(env)
    driver.reset(seed=0)
    runner = PolicyRunner(driver, load_envelope(env))
    _, state = driver.read()
    assert runner.tick(Command(FAST_X, state.stamp_s), state).action == "send"
    for _ in range(4):
        _, state = driver.read()
        old = Command(FAST_X, state.stamp_s - 1.0)  # computed from an observation 1 s old
        result = runner.tick(old, state)
        assert result.action in ("keep", "hold") and not result.command.any()
    assert runner.tripped


def test_a_command_that_took_too_long_is_not_sent(env):
    """The age counts the policy's latency: the simulated clock does not move while the policy computes."""
    driver = SimDriver(env)
    driver.reset(seed=0)
    runner = PolicyRunner(driver, load_envelope(env), timeout_s=0.125)
    _, state = driver.read()
    assert runner.tick(Command(FAST_X, state.stamp_s, latency_s=0.1), state).action == "send"
    _, state = driver.read()
    late = runner.tick(Command(FAST_X, state.stamp_s, latency_s=0.2), state)
    assert late.action == "keep" and not late.command.any()


class _Spy:
    """A driver wrapper that records every command sent."""

    def __init__(self, driver):
        self.driver, self.sent = driver, []
        self.control_dt = driver.control_dt

    def read(self):
        return self.driver.read()

    def send(self, command):
        self.sent.append(np.array(command))
        self.driver.send(command)

    def hold(self):
        self.driver.hold()


FAST_Y = np.array([0.0, 0.005, 0.0, 0.0, 0.0, 0.0])


def _slow_on_call(n, seconds, answered):
    """FAST_X at once, except call ``n``, which answers FAST_Y after ``seconds``."""
    calls = []

    def source(obs):
        calls.append(1)
        if len(calls) == n:
            time.sleep(seconds)
            answered.append(time.monotonic())
            return FAST_Y
        return FAST_X

    return source


def test_a_stalled_policy_trips_the_watchdog_and_holds(env):
    spy = _Spy(SimDriver(env))
    spy.driver.reset(seed=0)
    runner = PolicyRunner(spy, load_envelope(env), timeout_s=0.125)
    answered = []
    stats = runner.run(_slow_on_call(4, 1.0, answered), steps=12)
    # 3 periods sent; the stall: 2 periods keep the commanded pose, then the watchdog trips and
    # holds (latched: the policy answers again after the stall, still held).
    assert (stats.sent, stats.kept, stats.held, stats.watchdog_trips, stats.late) == (3, 2, 7, 1, 1)
    assert runner.tripped and spy.driver._holding
    assert answered, "the stalled call returned during the run"
    assert len(spy.sent) == 5 and not any(np.array_equal(c, FAST_Y) for c in spy.sent)  # its answer never sent
    for _ in range(10):  # held on: the compliant arm (PegInsert's default) brakes over about half a second
        spy.driver.hold()
    assert np.linalg.norm(spy.driver.read()[1].tcp_lin_vel) < 1e-3


def test_a_late_answer_is_dropped_and_the_runner_carries_on(env):
    spy = _Spy(SimDriver(env))
    spy.driver.reset(seed=0)
    runner = PolicyRunner(spy, load_envelope(env), timeout_s=0.125)
    answered = []
    stats = runner.run(_slow_on_call(4, 0.16, answered), steps=10)
    # The late call's period keeps; its answer (FAST_Y) comes during the next period and is dropped.
    assert (stats.sent, stats.kept, stats.late, stats.watchdog_trips) == (9, 1, 1, 0), stats
    assert answered and not any(np.array_equal(c, FAST_Y) for c in spy.sent)
    assert not runner.tripped


def test_watchdog_timeout_is_on_the_driver_clock():
    dog = Watchdog(0.125)
    assert dog.expired(0.0)  # never fed
    dog.feed(1.0)
    assert not dog.expired(1.1) and dog.expired(1.126)
    with pytest.raises(ValueError, match="positive"):
        Watchdog(0.0)


def test_runner_filters_commands_through_the_envelope(env):
    envelope = load_envelope(env, {"tool_speed_max_mm_s": 20.0})
    monitored = EnvelopeMonitor(env, envelope)
    driver = SimDriver(monitored)
    driver.reset(seed=0)
    runner = PolicyRunner(driver, envelope)
    _, state = driver.read()
    result = runner.tick(Command(FAST_X, state.stamp_s), state)
    assert result.action == "send" and result.interventions == ("tool_speed",)
    assert result.command[0] == pytest.approx(0.020 * 0.05)
    stats = runner.run(lambda obs: FAST_X, steps=20)
    assert stats.interventions["tool_speed"] == 21
    assert stats.sent == 21 and stats.late == 0 and not runner.tripped  # a prompt policy: every period sent
    # Filtered, the tool never exceeds the tighter limit.
    assert "tool_speed" not in driver.info["envelope_violations"]


def test_runner_leaves_the_robot_holding_when_the_policy_crashes(env):
    driver = SimDriver(env)
    driver.reset(seed=0)
    runner = PolicyRunner(driver, load_envelope(env))
    calls = []

    def source(obs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("inference process died")
        return FAST_X

    with pytest.raises(RuntimeError, match="inference"):
        runner.run(source, steps=10)
    assert driver._holding  # the last thing the driver was told: stop and hold


def test_sim_driver_refuses_bad_commands(env):
    driver = SimDriver(env)
    driver.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        driver.send(np.r_[np.nan, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="finite"):
        driver.send(np.zeros(5))
