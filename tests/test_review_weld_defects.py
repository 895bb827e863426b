"""Weld review: the bead drawn at the bead model's width, defect stretches marked in their colours, the strip's
heat input and defect cells, and the report's defect section (issue 16)."""

import base64
import io
import math
import re
from dataclasses import replace
from pathlib import Path

import mujoco
import numpy as np
import pytest
from PIL import Image, ImageColor

from skillcell.demos.capture import import_capture
from skillcell.demos.recorder import EpisodeRecorder, scripted_provenance
from skillcell.demos.replay import replay_episode
from skillcell.envs.cells.weld_seam import WeldSeamEnv
from skillcell.envs.registry import cell_ids, cell_spec
from skillcell.envs.weld_process import DEFECT_NAMES, heat_input_kj_mm
from skillcell.policies import make_expert
from skillcell.review.overlays import (
    DEFECT_COLORS,
    MetricStrip,
    SceneOverlays,
    cell_review,
    defect_stretches,
    project_points,
)
from skillcell.review.report import ReportOptions, build_report
from skillcell.review.sources import EpisodeSource, Step, make_review_env
from skillcell.review.video import FrameRenderer
from skillcell.rollout import FunctionPolicy, rollout

ENV_ID = "skillcell/WeldSeam-v0"
#: control steps over which the hurried welder moves twice as far as the expert commands: about 43-82 mm of seam
#: at twice the travel speed (undercut), too little heat (lack of fusion) and filler (a short leg)
FAST_STEPS = (150, 200)


def _hurried(env, fast: bool) -> FunctionPolicy:
    """The expert, moving twice as far per step over `FAST_STEPS` when ``fast``."""
    expert = make_expert(env, seed=0)
    count = [0]

    def act(obs):
        action = np.array(expert(obs), dtype=float)
        if fast and FAST_STEPS[0] <= count[0] < FAST_STEPS[1]:
            action[:3] *= 2.0
        count[0] += 1
        return action

    def reset():
        expert.reset()
        count[0] = 0

    return FunctionPolicy(act, "hurried expert" if fast else "expert", reset)


@pytest.fixture(scope="module")
def welds():
    """``{"expert": env, "fast": env}`` after a whole pass each (640x480 review envs, nominal workpiece)."""
    envs = {}
    for name in ("expert", "fast"):
        env = make_review_env(ENV_ID, {"randomize": False}, width=640, height=480)
        rollout(env, _hurried(env, name == "fast"), seed=0)
        envs[name] = env
    yield envs
    for env in envs.values():
        env.close()


def test_the_hurried_stretch_is_narrower_and_flagged(welds):
    clean, fast = (welds[k].unwrapped.metrics.bead_profile() for k in ("expert", "fast"))
    assert not clean["defects"].any(), "the expert's bead is clean"
    stretches = defect_stretches(fast["defect_undercut"])
    assert len(stretches) == 1
    first, last = stretches[0]
    assert 35 <= fast["s_mm"][first] <= 50 and 75 <= fast["s_mm"][last] <= 90
    assert fast["width_mm"][60] < 0.8 * clean["width_mm"][60]
    assert fast["width_mm"][120] == pytest.approx(clean["width_mm"][120], rel=0.02)


def test_defect_stretches_are_the_runs_of_a_mask():
    assert defect_stretches(np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], bool)) == [(1, 2), (5, 5), (7, 9)]
    assert defect_stretches(np.zeros(4, bool)) == []


def _face_camera(cell, s_mm: float) -> tuple[mujoco.MjvCamera, int]:
    """A free camera 60 mm out from the bead's face at ``s_mm``, looking straight at it; the sample index."""
    k = int(np.argmin(np.abs(cell.metrics.bead_profile()["s_mm"] - s_mm)))
    bead = cell.bead_surface()
    look = -bead.outward[k]
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = bead.centre[k]
    camera.distance = 0.06
    camera.azimuth = math.degrees(math.atan2(look[1], look[0]))
    camera.elevation = math.degrees(math.asin(look[2]))
    return camera, k


def _bead_width_px(env, s_mm: float) -> tuple[float, float]:
    """``(measured, expected)`` pixel width of the bead across the seam at ``s_mm``: the run of pixels that the
    weld overlays change along the line across the bead through its centre, and the model's width projected."""
    cell = env.unwrapped
    camera, k = _face_camera(cell, s_mm)
    renderer = cell.renderer
    renderer.update_scene(cell.data, camera=camera)
    bare = renderer.render().astype(int)
    renderer.update_scene(cell.data, camera=camera)
    cell.add_overlays(renderer.scene)
    drawn = renderer.render().astype(int)
    bead = cell.bead_surface()
    ends = bead.centre[k] + np.outer([-1.0, 1.0], bead.across[k] * bead.half_width_m[k])
    (c0, r0), (c1, r1) = project_points(renderer.scene, ends, cell.width, cell.height)
    expected = math.hypot(c1 - c0, r1 - r0)
    changed = np.abs(drawn - bare).sum(axis=2) > 40
    # Walk the projected across line from the centre out, both ways, 1.5 times the expected half width.
    centre = np.array([(c0 + c1) / 2, (r0 + r1) / 2])
    unit = np.array([c1 - c0, r1 - r0]) / expected
    run = 0
    for sign in (-1.0, 1.0):
        for step in np.arange(0.5, 0.75 * expected, 0.5):
            col, row = np.round(centre + sign * step * unit).astype(int)
            if not changed[row, col]:
                break
            run += 0.5
    return run, expected


def test_the_bead_is_drawn_as_wide_as_the_model_has_it(welds):
    widths = {}
    for name, s_mm in (("fast", 62.0), ("fast", 122.0), ("expert", 62.0)):
        measured, expected = _bead_width_px(welds[name], s_mm)
        assert measured == pytest.approx(expected, rel=0.15), (name, s_mm)
        widths[name, s_mm] = measured
    # The hurried stretch is drawn narrower than the same place of the expert's bead and than its own clean part.
    assert widths["fast", 62.0] < 0.82 * widths["expert", 62.0]
    assert widths["fast", 62.0] < 0.82 * widths["fast", 122.0]
    assert widths["fast", 122.0] == pytest.approx(widths["expert", 62.0], rel=0.08)


def _rgb(name: str) -> np.ndarray:
    return np.array(ImageColor.getrgb(DEFECT_COLORS[name]), float)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue (degrees) of RGB rows."""
    hsv = np.asarray(Image.fromarray(np.asarray(rgb, np.uint8).reshape(1, -1, 3)).convert("HSV"), float)
    return hsv.reshape(-1, 3)[:, 0] * 360.0 / 256.0


def _marks(env) -> tuple[np.ndarray, np.ndarray, mujoco.MjvScene]:
    """``(changed, frame, scene)``: the pixels the defect marks change in the review camera's frame."""
    cell = env.unwrapped
    review = cell_review(env)
    frames = []
    for defects in (False, True):
        renderer = cell.renderer
        renderer.update_scene(cell.data, camera=review.camera)
        cell.add_overlays(renderer.scene)
        SceneOverlays(review, trace=False, force=False, defects=defects).draw(cell, renderer.scene)
        frames.append(renderer.render().astype(int))
    return np.abs(frames[1] - frames[0]).sum(axis=2) > 40, frames[1], renderer.scene


def test_defect_stretches_are_marked_in_their_colours_where_they_are(welds):
    changed, _, _ = _marks(welds["expert"])
    assert not changed.any(), "a clean bead has no marks"
    env = welds["fast"]
    cell = env.unwrapped
    changed, frame, scene = _marks(env)
    rows, cols = np.nonzero(changed)
    assert rows.size > 100
    # Each marked pixel is nearest in hue to one defect's colour: the three the hurried stretch has show up.
    names = list(DEFECT_COLORS)
    hues = _hue(frame[rows, cols])
    palette = _hue(np.array([_rgb(n) for n in names]))
    nearest = np.argmin(np.abs((hues[:, None] - palette[None] + 180.0) % 360.0 - 180.0), axis=1)
    counts = {n: int((nearest == i).sum()) for i, n in enumerate(names)}
    profile = cell.metrics.bead_profile()
    for name in names:
        if profile[f"defect_{name}"].any():
            assert counts[name] > 40, (name, counts)
        else:
            assert counts[name] < 5, (name, counts)
    # Where they are: over the flagged stretch of seam, not elsewhere along it.
    flagged = profile["defects"]
    top = cell.bead_surface(profile).top()
    inside = project_points(scene, top[flagged], cell.width, cell.height)
    outside = project_points(scene, top[~flagged & profile["welded"]], cell.width, cell.height)
    px = np.column_stack([cols, rows]).astype(float)
    d_in = np.min(np.linalg.norm(px[:, None] - inside[None], axis=2), axis=1)
    d_out = np.min(np.linalg.norm(px[:, None] - outside[None], axis=2), axis=1)
    assert np.mean(d_in <= d_out + 3.0) > 0.95, "the marks lie over the flagged millimetres"


def test_strip_shows_heat_input_in_its_wps_range_and_the_defects_with_their_legend(welds):
    env = welds["fast"]
    review, wps = cell_review(env), env.unwrapped.wps
    arc = wps.arc
    low, high = wps.heat_input_band
    slow, fast = wps.band("travel_speed_mm_s")
    assert low == pytest.approx(heat_input_kj_mm(arc.current_a, arc.voltage_v, arc.arc_efficiency, fast))
    assert high == pytest.approx(arc.arc_efficiency * arc.voltage_v * arc.current_a / slow * 1e-3)
    heat = review.metric("heat_input_kj_mm")
    assert heat.band == (low, high) and heat.unit == "kJ/mm"
    assert heat.status({"heat_input_kj_mm": (low + high) / 2, "arc_on": True}) == "ok"
    assert heat.status({"heat_input_kj_mm": 0.5 * low, "arc_on": True}) == "bad"
    assert review.defects == ("porosity", "undercut", "lack_of_fusion", "burn_through", "insufficient_leg")
    butt = make_review_env("skillcell/WeldSeamButt-v0", {"randomize": False}, width=160, height=128)
    try:
        assert "insufficient_leg" not in cell_review(butt).defects, "a butt WPS has no leg to fall short of"
    finally:
        butt.close()

    strip = MetricStrip(640, review.metrics, frame_height=480)
    index = next(i for i, m in enumerate(review.metrics) if m.key == "defect_undercut_mm")
    r0, r1, c0, c1 = strip.cell_box(index)

    def cell_pixels(info):
        return strip.render(info)[r0:r1, c0:c1].astype(int)

    info = {"arc_on": True, "defect_undercut_mm": 0.0, "defect_undercut": False}
    quiet = cell_pixels(info)
    swatch = (np.abs(quiet - _rgb("undercut")).sum(axis=2) < 30).sum()
    assert swatch > 40, "the undercut cell carries the marks' colour as its legend"
    red = lambda image: np.mean((image[..., 0] > 150) & (image[..., 1] < 60) & (image[..., 2] < 60))  # noqa: E731
    assert red(quiet) < 0.05
    assert red(cell_pixels(info | {"defect_undercut_mm": 12.0, "defect_undercut": True})) > 0.4, "red while welding one"
    amber = cell_pixels(info | {"defect_undercut_mm": 12.0})
    assert np.mean((amber[..., 0] > 180) & (amber[..., 1] > 100) & (amber[..., 2] < 60)) > 0.4, "amber after"
    assert review.metric("defect_undercut_mm").text({"defect_undercut_mm": 12.0}) == "undercut 12 mm"


@pytest.fixture(scope="module")
def weld_run(tmp_path_factory):
    """A weld run directory with two evaluation episodes: the expert's pass and the hurried one."""
    run = tmp_path_factory.mktemp("weld_report") / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"env:\n  id: {ENV_ID}\n  randomize: false\n")
    for fast in (False, True):
        env = make_review_env(ENV_ID, {"randomize": False}, width=160, height=128)
        try:
            policy = _hurried(env, fast)
            recorder = EpisodeRecorder(env, run / "eval", source="policy", provenance=scripted_provenance(policy.name))
            rollout(recorder, policy, seed=0)
        finally:
            env.close()
    return run


def test_report_has_the_defect_section_with_its_plot_and_table(weld_run, tmp_path):
    out = tmp_path / "report.html"
    result = build_report(weld_run, out, ReportOptions(videos=False))
    assert result.sections == ["configuration", "evaluation episodes", "best and worst episode", "weld defects"]
    text = out.read_text()
    section = text[text.index("<h2>Weld defects</h2>"):]
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', section)
    assert len(images) == 1
    plot = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0]))).convert("RGB")).astype(int)
    # The worst (hurried) bead's stretches are drawn in their colours; porosity and burn-through never fired.
    for name, present in (("undercut", True), ("lack_of_fusion", True), ("insufficient_leg", True),
                          ("porosity", False), ("burn_through", False)):
        pixels = (np.abs(plot - _rgb(name)).sum(axis=2) < 12).sum()
        assert (pixels > 200) if present else (pixels == 0), (name, pixels)
    env = make_review_env(ENV_ID, {"randomize": False}, width=160, height=128)
    try:
        wps = env.unwrapped.wps
    finally:
        env.close()
    table = section[section.index("<table>"):section.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == 1 + 5 + 1, "header, one row per defect, any defect"
    undercut = re.findall(r"<td[^>]*>(.*?)</td>", next(r for r in rows if "undercut" in r))
    assert wps.defects.cause("undercut") in undercut[1], "the WPS's cause"
    best_mm, worst_mm = float(undercut[2]), float(undercut[3])
    assert best_mm == 0 and 30 <= worst_mm <= 50, "mm of seam the indicator flagged in the best and worst bead"
    assert undercut[-1] == "1/2"



WELD_CELLS = [i for i in cell_ids() if issubclass(cell_spec(i).env_class, WeldSeamEnv)]


@pytest.mark.parametrize("env_id", WELD_CELLS)
def test_every_weld_cell_draws_its_bead_and_shows_heat_input(env_id):
    """Through the registry: each weld cell's preset has the heat input and defect cells, and its frame the
    bead (one ellipsoid per 4 mm welded)."""
    env = make_review_env(env_id, {"randomize": False}, width=160, height=128)
    try:
        review = cell_review(env)
        assert review.metric("heat_input_kj_mm") is not None and review.defects
        assert all(review.metric(f"defect_{name}_mm").swatch == DEFECT_COLORS[name] for name in review.defects)
        rollout(env, make_expert(env, seed=0), seed=0, max_steps=120)
        cell = env.unwrapped
        welded = int(cell.metrics.bead_profile()["welded"].sum())
        assert welded >= 8, "the arc has been on for a while"
        FrameRenderer(env, strip=False).render(Step(0, 0.0, {}, None, 0.0))
        scene = cell.renderer.scene
        ellipsoids = sum(scene.geoms[g].type == mujoco.mjtGeom.mjGEOM_ELLIPSOID for g in range(scene.ngeom))
        assert ellipsoids >= welded // 4 - 1
    finally:
        env.close()


def test_skillcell_render_shows_the_defect_marks_by_default(weld_run, tmp_path):
    """``skillcell render`` of the stored passes, no flags: the hurried bead's last frame carries the marks'
    orange (undercut) and violet (short leg) above the strip, the expert's none. (Not the cyan of lack of
    fusion: H.264's half-resolution chroma mixes the blue trace over the green bead into cyan.)"""
    import imageio.v2 as imageio

    from skillcell.cli import main

    marked = {}
    for episode in (0, 1):
        out = tmp_path / f"episode{episode}.mp4"
        assert main(["render", str(weld_run / "eval"), "--episode", str(episode), "--out", str(out), "--every", "100",
                     "--no-progress"]) == 0
        reader = imageio.get_reader(out, format="FFMPEG")
        last = [frame for frame in reader][-1][:480]
        reader.close()
        hsv = np.asarray(Image.fromarray(last).convert("HSV"), float)
        hue, saturated = hsv[..., 0] * 360.0 / 256.0, (hsv[..., 1] > 140) & (hsv[..., 2] > 80)
        marked[episode] = {name: int((saturated & (np.abs(hue - _hue(_rgb(name)[None])[0]) < 6)).sum())
                           for name in ("undercut", "insufficient_leg")}
    assert all(n == 0 for n in marked[0].values()), marked
    assert all(n > 20 for n in marked[1].values()), marked


# ------------------------------------------------------------------------------- a capture's own electrics

@pytest.fixture(scope="module")
def captured_weld(tmp_path_factory):
    """The shipped weld capture (optical torch track plus the power source's current and voltage), imported."""
    captures = Path(__file__).resolve().parents[1] / "examples" / "captures"
    return import_capture(captures / "weld_fillet_pass.csv", tmp_path_factory.mktemp("capture") / "ds",
                          progress=False).episode


def test_a_captured_welds_state_replay_measures_with_its_current_and_voltage(captured_weld):
    """The review's replay (video, the report's defect plot): each step's heat input is the capture's 0.8 U I / v,
    v the replay's own travel speed, and the bead model's defects are the capture's (with the WPS's nominal
    180 A and 20 V it flags 2 mm, the capture 1 mm)."""
    episode = captured_weld
    current, voltage = episode.extras["signal/current_a"], episode.extras["signal/voltage_v"]
    # Without the stored heat input and speed, the step's info shows what the replay measured itself.
    measured = ("heat_input_kj_mm", "travel_speed_mm_s")
    bare = replace(episode, infos={k: v for k, v in episode.infos.items() if k not in measured})
    env = make_review_env(episode.env_id, episode.env_kwargs, width=160, height=128,
                          max_episode_steps=episode.max_episode_steps)
    try:
        steps = list(EpisodeSource(env, bare))
        bead = env.unwrapped.metrics.bead_summary()
    finally:
        env.close()
    welding = [st for st in steps[1:] if st.info["arc_on"] and st.info["travel_speed_mm_s"] > 1.0]
    assert len(welding) > 300
    ran_with = np.array([st.index - 1 for st in welding])  # step k ran with the signals at control instant k
    heat_times_speed = np.array([st.info["heat_input_kj_mm"] * st.info["travel_speed_mm_s"] for st in welding])
    assert np.allclose(heat_times_speed, 0.8 * current[ran_with] * voltage[ran_with] * 1e-3, rtol=1e-12)
    final = {key: values[-1] for key, values in episode.infos.items()}
    assert bead["defect_length_mm"] == final["defect_length_mm"] == 1.0
    # within the state replay's one physics substep of motion (the nominal electrics: 2 % more)
    assert bead["bead_heat_input_kj_mm_mean"] == pytest.approx(final["bead_heat_input_kj_mm_mean"], rel=3e-3)


def test_a_captured_welds_action_replay_reproduces_its_bead(captured_weld):
    report = replay_episode(captured_weld, "action")
    assert report.passed and report.bit_exact
    final = {key: values[-1] for key, values in captured_weld.infos.items()}
    for key in ("heat_input_kj_mm", "bead_heat_input_kj_mm_mean", "bead_width_mm", "bead_leg_mm_min",
                "defect_length_mm", *(f"defect_{name}_mm" for name in DEFECT_NAMES)):
        assert report.final_info[key] == final[key], key
