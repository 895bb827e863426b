"""Overlay pixels where the geometry says they should be; the metric strip flags out-of-spec values."""

import numpy as np
import pytest

from skillcell.review.overlays import (
    FORCE_RGBA,
    MetricStrip,
    SceneOverlays,
    cell_review,
    project_points,
)
from skillcell.review.sources import RolloutSource, Step, load_policy, make_review_env
from skillcell.review.video import FrameRenderer, video_frames

W, H = 320, 240


def _render(env, camera, overlays: SceneOverlays | None):
    cell = env.unwrapped
    renderer = cell.renderer
    renderer.update_scene(cell.data, camera=camera)
    cell.add_overlays(renderer.scene)
    if overlays is not None:
        overlays.draw(cell, renderer.scene)
    return renderer.render().astype(int), renderer.scene


def _near(pixels: np.ndarray, targets: np.ndarray, radius: float) -> np.ndarray:
    """For each (row, col) pixel, whether it lies within ``radius`` of a (col, row) target."""
    d2 = ((pixels[:, None, ::-1] - targets[None, :, :]) ** 2).sum(axis=2)
    return d2.min(axis=1) <= radius**2


def test_tool_trace_is_drawn_along_the_projected_tcp_path():
    env = make_review_env("skillcell/WeldSeam-v0", {"randomize": False}, width=W, height=H)
    try:
        cell = env.unwrapped
        ngeom = cell.model.ngeom
        renderer = FrameRenderer(env, "seam", strip=False)
        for _ in video_frames(RolloutSource(env, load_policy("expert", env), seed=0, max_steps=140), renderer,
                              every=1000):
            pass
        trace = renderer.scene_overlays
        assert len(trace.points) > 40
        without, _ = _render(env, "seam", None)
        trace_only = SceneOverlays(trace.review, force=False)
        trace_only.points = trace.points
        with_trace, scene = _render(env, "seam", trace_only)
        assert cell.model.ngeom == ngeom, "overlays never touch the model"
    finally:
        env.close()
    changed = np.abs(with_trace - without).sum(axis=2) > 60
    assert changed.sum() > 25, "the trace covers some pixels (1 px lines at 320x240)"
    rows, cols = np.nonzero(changed)
    projected = project_points(scene, np.array(trace.points), W, H)
    on_path = _near(np.column_stack([rows, cols]), projected, radius=3.0)
    assert on_path.mean() > 0.95, "changed pixels lie on the projected TCP path"
    blue = with_trace[rows, cols]
    assert np.mean(blue[:, 2] > blue[:, 0] + 60) > 0.8, "and are the trace's blue"


def _press_on_block(env, steps: int):
    """Moves the peg 12 mm off the hole and pushes it onto the block's top face."""
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.array([0.6, 0, 0, 0, 0, 0]))
    info = {}
    for _ in range(steps):
        _, _, _, _, info = env.step(np.array([0, 0, -0.5, 0, 0, 0]))
    return info


@pytest.mark.parametrize("camera", ["overview", "side"])
def test_force_arrow_points_at_the_tcp_in_the_force_limit_colour(camera):
    # Position mode: the joint servos press past the rated force (impedance caps a blocked tool at 10 N).
    servos = {"randomize": False, "overrides": {"control": {"mode": "position"}}}
    env = make_review_env("skillcell/PegInsert-v0", servos, width=W, height=H)
    try:
        cell = env.unwrapped
        info = _press_on_block(env, 21)
        limit = cell.config.limits.rated_insertion_force_n
        assert info["contact_force_n"] > limit, "the arm presses harder than the rated force"
        review = cell_review(env)
        arrow = SceneOverlays(review, trace=False, force=True)
        tail, head, rgba = arrow.force_arrow_world(cell)
        assert rgba == FORCE_RGBA[2]
        np.testing.assert_allclose(head, cell.data.site_xpos[cell.tcp_site])
        without, _ = _render(env, camera, None)
        with_arrow, scene = _render(env, camera, arrow)
    finally:
        env.close()
    changed = np.abs(with_arrow - without).sum(axis=2) > 60
    rows, cols = np.nonzero(changed)
    assert rows.size > 30
    tcp_px, tail_px = project_points(scene, np.array([head, tail]), W, H)
    pixels = np.column_stack([rows, cols])
    # The arrow ends at the TCP and starts at the tail: drawn in front of the peg and the block.
    assert _near(pixels, tcp_px[None], radius=6.0).any(), "the arrow head reaches the TCP"
    assert _near(pixels, tail_px[None], radius=6.0).any(), "the arrow starts at its tail"
    segment = tcp_px - tail_px
    u = np.clip(((pixels[:, ::-1] - tail_px) @ segment) / (segment @ segment), 0, 1)
    off_axis = np.linalg.norm(pixels[:, ::-1] - (tail_px + u[:, None] * segment), axis=1)
    assert np.mean(off_axis < 6) > 0.95, "changed pixels lie along the arrow"
    red = with_arrow[rows, cols]
    assert np.mean(red[:, 0] > red[:, 1] + 60) > 0.7, "red: beyond the force limit"


def test_no_force_arrow_in_free_space():
    env = make_review_env("skillcell/PegInsert-v0", {"randomize": False}, width=W, height=H)
    try:
        env.reset(seed=0)
        assert SceneOverlays(cell_review(env)).force_arrow_world(env.unwrapped) is None
        weld = make_review_env("skillcell/WeldSeam-v0", {"randomize": False}, width=W, height=H)
        assert not cell_review(weld).force_arrow, "welding has no contact force to show"
        weld.close()
    finally:
        env.close()


def _cell_has_red(strip_image, box) -> float:
    r0, r1, c0, c1 = box
    cell = strip_image[r0:r1, c0:c1].astype(int)
    return float(np.mean((cell[..., 0] > 150) & (cell[..., 1] < 60)))


def test_metric_strip_highlights_out_of_spec_weld_metrics():
    env = make_review_env("skillcell/WeldSeam-v0", {}, width=640, height=480)
    try:
        review = cell_review(env)
        wps = env.unwrapped.wps
    finally:
        env.close()
    keys = [m.key for m in review.metrics]
    strip = MetricStrip(640, review.metrics, label="demo", frame_height=480)
    assert (480 + strip.height) % 16 == 0
    good = {k: float(np.mean(wps.band(k))) for k in keys[:7]} | {"arc_on": True, "bead_in_spec_fraction": 1.0,
                                                                   "in_spec_fraction": 0.5}
    ctwd = keys.index("ctwd_mm")
    image = strip.render(good, time_s=1.0, step=20, steps=100, reward=0.1, episode_return=2.0)
    assert image.shape == (strip.height, 640, 3)
    assert all(_cell_has_red(image, strip.cell_box(i)) < 0.05 for i in range(len(keys)))
    bad = good | {"ctwd_mm": wps.band("ctwd_mm")[1] + 3.0}
    image = strip.render(bad)
    assert _cell_has_red(image, strip.cell_box(ctwd)) > 0.4, "out-of-band CTWD on red"
    assert _cell_has_red(image, strip.cell_box(keys.index("work_angle_deg"))) < 0.05
    # With the arc off the WPS does not apply: nothing is flagged.
    image = strip.render(bad | {"arc_on": False})
    assert _cell_has_red(image, strip.cell_box(ctwd)) < 0.05


def test_metric_strip_force_warning_and_limit_colours():
    env = make_review_env("skillcell/PegInsert-v0", {}, width=W, height=H)
    try:
        review = cell_review(env)
        task, limit = env.unwrapped.config.task, env.unwrapped.config.limits.rated_insertion_force_n
    finally:
        env.close()
    spec = review.metric("contact_force_n")
    assert spec.status({"contact_force_n": task.jam_force_n / 2}) == "ok"
    assert spec.status({"contact_force_n": (task.jam_force_n + limit) / 2}) == "warn"
    assert spec.status({"contact_force_n": limit + 1}) == "bad"
    assert spec.status({}) == "missing" and spec.text({}) == "|F| -"
    assert review.metric("jammed").status({"jammed": True}) == "bad"
    strip = MetricStrip(W, review.metrics, frame_height=H)
    index = review.metrics.index(spec)
    image = strip.render({"contact_force_n": limit + 1})
    assert _cell_has_red(image, strip.cell_box(index)) > 0.4
    r0, r1, c0, c1 = strip.cell_box(index)
    amber = strip.render({"contact_force_n": task.jam_force_n + 1})[r0:r1, c0:c1].astype(int)
    assert np.mean((amber[..., 0] > 180) & (amber[..., 1] > 100) & (amber[..., 2] < 60)) > 0.4


def test_outcome_tag_and_narrow_header():
    env = make_review_env("skillcell/PegInsert-v0", {}, width=W, height=H)
    try:
        renderer = FrameRenderer(env, label="a rather long label")
        env.reset(seed=0)
        ok = renderer.render(Step(9, 0.45, {}, 0.1, 3.0, last=True, success=True), steps=200)
        no = renderer.render(Step(9, 0.45, {}, 0.1, 3.0, last=True, success=False), steps=200)
    finally:
        env.close()
    header = slice(H, H + renderer.strip.row_h)
    green = (ok[header, -80:, 1].astype(int) - ok[header, -80:, 0]) > 60
    red = (no[header, -80:, 0].astype(int) - no[header, -80:, 1]) > 60
    assert green.sum() > 50 and red.sum() > 50, "the outcome is tagged at the right of the header"


def test_generic_review_for_cells_without_one():
    class NewCell:
        kpi_keys = ("cycle_time_s",)
        camera = "overview"

    review = cell_review(NewCell())
    assert [m.key for m in review.metrics] == ["cycle_time_s"] and review.score_key == "cycle_time_s"


def test_fast_quality_restores_the_models_msaa_setting():
    env = make_review_env("skillcell/PegInsert-v0", {}, width=W, height=H, quality="fast")
    try:
        samples = env.unwrapped.model.vis.quality.offsamples
        env.reset(seed=0)
        assert env.unwrapped.renderer is not None
        assert env.unwrapped.model.vis.quality.offsamples == samples
    finally:
        env.close()
