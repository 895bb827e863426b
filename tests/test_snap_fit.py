"""SnapFit physics: the push rises, peaks and drops at the click; the click's free travel stops on the floor
under the rating; a latched connector holds the stated pull; nothing passes through the housing; a fitter's
captured push imports and latches; bad latch geometry is named."""

import math
from contextlib import contextmanager

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.config import ConfigError
from skillcell.demos import FrameTransform, import_capture, score_dataset
from skillcell.demos.synthetic import write_capture
from skillcell.envs.cells.snap_fit import SnapFitEnv
from skillcell.policies import make_expert

ENV_ID = "skillcell/SnapFit-v0"
RATED_FORCE_N = SnapFitEnv.load_config().limits.rated_insertion_force_n


def make(mode="position", **overrides):
    overrides = {"control": {"mode": mode}, **overrides}
    return gym.make(ENV_ID, randomize=False, overrides=overrides).unwrapped


@contextmanager
def every_substep(record):
    """Calls ``record(model, data)`` after every physics substep (not just control steps)."""
    mujoco.set_mjcb_control(record)
    try:
        yield
    finally:
        mujoco.set_mjcb_control(None)


def down(env, mm):
    """The action that moves the commanded tip ``mm`` down the socket axis (nominal socket: the cell's -z)."""
    action = np.zeros(6)
    action[2] = -mm / env.config.control.max_translation_mm
    return action


def stop_pushing(env):
    """The action that puts the commanded pose back onto the measured one."""
    action = np.zeros(6)
    action[:3] = -env.controller.pose_error()[:3] / (env.config.control.max_translation_mm * 1e-3)
    return action


def insert_slowly(env, speed_mm_s=2.0):
    """A slow straight insertion on the socket axis that stops pushing at the click; returns the infos of
    every step and, per physics substep, the F/T's axial reading (from the tool's weight) and the latch angle."""
    adr = env.model.sensor("tool/ft_force").adr[0] + 2  # the F/T's z: along the tool axis
    free = float(env.data.sensordata[adr])
    substeps = []
    infos = []
    with every_substep(lambda m, d: substeps.append((float(d.sensordata[adr]) - free, env.latch_angle()))):
        for _ in range(1000):
            _, _, terminated, _, info = env.step(down(env, speed_mm_s * env.dt))
            infos.append(info)
            if info["click_detected"] or terminated:
                break
        for _ in range(5):
            _, _, _, _, info = env.step(stop_pushing(env))
            infos.append(info)
    return infos, np.array(substeps)


def test_a_slow_straight_insertion_rises_to_one_peak_and_drops_at_the_click():
    env = make()
    env.reset(seed=0)
    infos, substeps = insert_slowly(env)
    click = next(i for i, info in enumerate(infos) if info["click_detected"])
    assert infos[click]["click_step"] == click + 1  # counted from the reset's observation
    assert infos[-1]["latched"] and infos[-1]["seated"] and infos[-1]["is_success"]
    n = env.n_substeps
    force, angle = substeps[:, 0], substeps[:, 1]
    # The profile a 20 Hz reading of a filtered F/T gives: the mean over each control period.
    profile = force[:(click + 1) * n].reshape(-1, n).mean(axis=1)
    touching = np.flatnonzero(profile > 0.5)
    start, peak = touching[0], int(np.argmax(profile))
    assert peak >= click - 1, f"the peak ({profile[peak]:.1f} N at step {peak}) comes before the click ({click})"
    rising = profile[start:peak + 1]
    assert np.all(np.diff(rising) > -0.3), f"the push does not rise steadily to one peak: {np.round(rising, 2)}"
    assert 3.0 < profile[peak] < env.config.limits.rated_insertion_force_n
    # The latch took the push: the force rose with its deflection, from where the hook meets the catch.
    assert infos[start]["seated_depth_mm"] == pytest.approx(env.engage_depth * 1e3, abs=0.3)
    # The click: the arm springs back past its detent, and within 2 ms of that the push is gone.
    snap = int(np.argmax(angle))
    # (less than the engagement angle by the plug's shift in its clearance, away from the latch)
    assert math.degrees(angle[snap]) > 0.75 * math.degrees(env.engagement_angle)
    assert snap // n == click or snap // n == click - 1, (snap // n, click)
    before = force[snap - 20:snap].max()
    after = force[snap + 4:snap + 24]
    assert before > 0.8 * profile[peak]
    assert np.all(after < 0.1 * before), f"no drop at the click: {before:.1f} N, then {np.round(after, 1)}"
    assert infos[-1]["click_force_n"] == pytest.approx(infos[-1]["peak_insertion_force_n"])


def test_the_latched_connector_holds_the_stated_pull_and_an_unlatched_one_comes_out():
    env = make()
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    for _ in range(300):
        obs, _, terminated, _, info = env.step(expert(obs))
        if terminated:
            break
    assert info["is_success"] and info["latched"]
    result = env.pull_test()
    assert result.target_n == env.config.limits.retention_force_n == 50.0
    assert result.held and result.latched_throughout, result
    # On average the stated pull (single 20 Hz readings chatter with the hook-catch contact under load).
    assert result.pull_n >= 0.95 * result.target_n, result
    # It gives no more than the float between the click and the floor (plus contact softness).
    assert result.withdrawal_mm < env.config.latch.float_mm + 0.1, result

    # The same pull on a plug pushed onto the catch but short of the click: nothing holds it.
    env.reset(seed=0)
    short = env.engage_depth + 0.5e-3
    while (info := env.step(down(env, 1.0))[4])["seated_depth_mm"] * 1e-3 < env.engage_depth - 2e-3:
        pass
    while (info := env.step(down(env, 0.1))[4])["seated_depth_mm"] * 1e-3 < short:
        pass
    for _ in range(5):
        info = env.step(stop_pushing(env))[4]
    assert not info["latched"] and info["latch_deflection_deg"] > 0.5
    result = env.pull_test()
    assert not result.held and result.withdrawal_mm > 3.0, result


def floor_arrival_peak(floor_solref=None):
    """The largest F/T force over every physics substep of an expert's D1 episode run on 10 steps past the click."""
    env = gym.make(ENV_ID, tier="D1", overrides={"task": {"terminate_on_success": False}}).unwrapped
    if floor_solref is not None:
        env.model.geom_solref[env.model.geom("socket_floor").id] = floor_solref
    adr = env.model.sensor("tool/ft_force").adr[0]
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    free = env.data.sensordata[adr:adr + 3].copy()
    forces = []
    with every_substep(lambda m, d: forces.append(float(np.linalg.norm(d.sensordata[adr:adr + 3] - free)))):
        for _ in range(300):
            obs, _, _, _, info = env.step(expert(obs))
            if info["click_detected"] and env.data.time > (info["click_step"] + 10) * env.dt:
                break
    assert info["latched"] and info["seated"]
    return max(forces)


def test_the_clicks_free_travel_ends_on_the_floor_under_the_rated_force():
    # The click frees the push the latch held (about 8 N), and the rigid arm crosses the 0.5 mm float at
    # about 7 mm/s; the floor's time constant (the scene's `stop` class: the compliance of a real arm's
    # joints and grip) stops it well under the rating, where the walls' 2 ms would spike past it.
    assert floor_arrival_peak() < 0.75 * RATED_FORCE_N
    assert floor_arrival_peak(floor_solref=(0.002, 1.0)) > RATED_FORCE_N


@pytest.mark.parametrize("clearance", [0.1, 0.3, 1.0])
def test_pushing_beside_the_socket_never_penetrates_half_the_clearance(clearance):
    env = make(workpiece={"clearance_mm": clearance})
    env.reset(seed=0)
    side_mm = 13.6  # the whole plug on the housing's top, beside the opening (its latch too)
    # At 0.4 of full speed per step, so that the lead limit never shortens the move; then settle.
    for _ in range(20):
        env.step(np.r_[side_mm / 20 / env.config.control.max_translation_mm, 0, 0, 0, 0, 0])
    for _ in range(10):
        env.step(np.zeros(6))

    def push():
        # Full push down, the plug held over its spot beside the opening (a 100 N push walks it sideways).
        action = down(env, 5.0)
        p, _ = env.tcp_pose_task()
        action[:2] = 0.5 * (np.array([side_mm * 1e-3, 0.0]) - p[:2]) / (env.config.control.max_translation_mm * 1e-3)
        return env.step(action)[4]

    for _ in range(20):
        push()
    penetration = []
    with every_substep(lambda m, d: penetration.append(env.part_penetration())):
        infos = [push() for _ in range(30)]
    assert all(i["instability"] == "" for i in infos)
    assert max(i["contact_force_n"] for i in infos) > 100.0, "the robot did not push with 100 N"
    assert max(i["seated_depth_mm"] for i in infos) < 0.1  # on the top face, not in the socket
    assert len(penetration) >= 30 * env.n_substeps
    assert max(penetration) < 0.5 * clearance * 1e-3
    assert not infos[-1]["physics_invalid"]


def test_clearance_sets_the_cavity_and_the_latch_clicks_at_its_depth():
    env = make(workpiece={"clearance_mm": 0.5})
    m = env.model
    wall = m.geom("socket_wall_x_pos")
    inner = m.geom_pos[wall.id][0] - m.geom_size[wall.id][0]
    assert inner == pytest.approx((12.0 + 0.5) / 2 * 1e-3)
    latch = env.config.latch
    assert env.click_depth == pytest.approx((14.0 - latch.float_mm) * 1e-3)
    assert env.engage_depth == pytest.approx(env.click_depth - latch.engagement_mm * 1e-3
                                             / math.tan(math.radians(latch.hook_lead_angle_deg)))


def test_a_fitters_captured_push_through_the_seat_imports_and_latches(tmp_path):
    """A fitter lowers the plug over the socket, pushes it in and on past the seat (the hand presses through
    until it feels the click), then relaxes back onto the seat; a tracker records it at 120 Hz in mm, with
    hand tremor. A tracked path carries no force: imported in the compliant mode, the path's 2.5 mm past
    the floor is what pushes the latch over the catch (the impedance's spring, not the hand's).

    Not asserted: the report's lag check (0.1 s), which flags 0.57 s in the descent. The import leads the
    command by the median axis' D/K (0.125 s) while SnapFit's socket axis, overdamped for the click,
    lags by 0.3 s; the path itself is tracked within 0.2 mm."""
    socket = np.array([0.45, 0.10, 0.92])
    seat, through = 0.014, 0.0025
    rng = np.random.default_rng(7)
    tremor = [(rng.uniform(8.0, 11.0), rng.uniform(0.0, 2 * math.pi, 3)) for _ in range(4)]  # incoherent, 8-11 Hz

    def smooth(u):
        u = np.clip(u, 0.0, 1.0)
        return u * u * u * (10 - 15 * u + 6 * u * u)

    def path(t):
        depth = (-0.040 + 0.038 * smooth(t / 2.0) + (seat + through + 0.002) * smooth((t - 2.0) / 3.5)
                 - (through + 1e-4) * smooth((t - 5.5) / 1.0))
        shake = 0.05e-3 * sum(np.sin(2 * math.pi * f * t[:, None] + phase) for f, phase in tremor)  # ~0.07 mm rms
        pos = socket + np.column_stack([np.zeros_like(t), np.zeros_like(t), -depth]) + shake
        return pos, np.tile([0.0, 1.0, 0.0, 0.0], (len(t), 1))  # the tool axis down the socket, latch to the catch

    csv, _ = write_capture(tmp_path / "fit.csv", path, 8.0, cell_id=ENV_ID, capture_to_cell=FrameTransform(),
                           length_unit="mm", position_noise_mm=0.02)
    result = import_capture(csv, tmp_path / "out", progress=False)
    episode, report = result.episode, result.report
    assert report["execution"]["control_mode"] == "impedance"
    assert episode.success and report["ended_by"] == "end of capture" and episode.truncations[-1]
    final = {key: values[-1] for key, values in episode.infos.items()}
    assert final["click_detected"] and final["latched"] and final["seated"] and not final["physics_invalid"]
    # The click comes while the path is still pushing on (it passes the seat at 4.5 s, its deepest at 5.5 s).
    assert 4.5 < final["click_time_s"] < 5.5 and report["task"]["first_success_s"] == pytest.approx(
        final["click_time_s"])
    assert final["peak_insertion_force_n"] < 0.5 * RATED_FORCE_N
    assert final["press_after_click_s"] > 0.3  # the hand pressed on after the click: a double push, scored down
    assert report["tracking"]["within_tolerance"] and report["tracking"]["path_mm"]["max"] < 0.5
    score = score_dataset(tmp_path / "out").episodes[0].skill
    assert score.metrics["success"] == 1.0 and score.components["force_margin"] == 1.0
    assert score.components["single_push"] < 0.5 and 0.5 < score.score < 0.9


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("latch", "catch_clearance_mm", 1.5, "latch.hook_height_mm: must exceed catch_clearance_mm"),
    ("latch", "arm_gap_mm", 0.5, "latch.arm_gap_mm: must exceed the engagement"),
    ("latch", "catch_lead_angle_deg", 20.0, "latch.catch_lead_angle_deg: must exceed hook_lead_angle_deg"),
    ("workpiece", "clearance_mm", 2.0, r"workpiece.clearance_mm: must be in \[0.1, 1.0\]"),
])
def test_bad_latch_geometry_is_named(section, key, value, message):
    with pytest.raises(ConfigError, match=message):
        SnapFitEnv.load_config(overrides={section: {key: value}})
