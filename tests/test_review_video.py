"""Review videos: written mp4s decode back to the expected frames; state replay; side by side; atomic writes."""

import imageio.v2 as imageio
import numpy as np
import pytest

from skillcell.demos import DemoDataset, generate_demos
from skillcell.review.overlays import block_pad
from skillcell.review.sources import EpisodeSource, RolloutSource, Step, load_policy, make_review_env
from skillcell.review.video import (
    LEFT_ACCENT,
    RIGHT_ACCENT,
    FrameRenderer,
    VideoWriter,
    render_video,
    side_by_side,
    video_frames,
)

ENV_ID = "skillcell/PegInsert-v0"
W, H = 320, 240


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("review") / "demos"
    generate_demos(ENV_ID, 1, out, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def episode(dataset):
    return DemoDataset(dataset)[0]


def _env(**kwargs):
    return make_review_env(ENV_ID, kwargs, width=W, height=H)


def _decode(path):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return [frame for frame in reader], reader.get_meta_data()
    finally:
        reader.close()


@pytest.mark.parametrize("every", [1, 4])
def test_rollout_video_decodes_to_the_expected_frame_count_and_size(tmp_path, every):
    env = _env()
    try:
        source = RolloutSource(env, load_policy("expert", env), seed=0, max_steps=30)
        renderer = FrameRenderer(env, label="expert")
        out = tmp_path / "video.mp4"
        result = render_video(out, source, renderer, every=every)
    finally:
        env.close()
    frames, meta = _decode(out)
    # Steps 0, every, 2*every, ... and always the last one (30).
    expected = len(set(range(0, 31, every)) | {30})
    assert result["frames"] == len(frames) == expected
    strip_height = renderer.strip.height
    assert (H + strip_height) % 16 == 0 and strip_height > 40
    assert all(f.shape == (H + strip_height, W, 3) for f in frames)
    assert result["size"] == (W, H + strip_height)
    assert meta["fps"] == pytest.approx(20.0 / every)  # real time at the 20 Hz control rate
    assert frames[0][:H].std() > 10, "the scene is rendered, not a flat image"
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


def test_episode_state_replay_shows_the_recorded_states(episode):
    """The replayed frames equal frames rendered live while the same episode runs."""
    env = _env()
    live_env = _env()
    try:
        replay = FrameRenderer(env, strip=False)
        replayed = [frame for _, frame in video_frames(EpisodeSource(env, episode), replay)]
        assert len(replayed) == episode.steps + 1
        # The same start (seed, then the stored first state) and the same actions, live.
        live = FrameRenderer(live_env, strip=False)
        actions = iter(episode.actions)
        policy = load_policy("expert", live_env)
        policy._act = lambda obs: next(actions)  # replay the stored actions through the env
        source = RolloutSource(live_env, policy, seed=episode.seed, start_state=episode.states[0])
        rendered = [frame for _, frame in video_frames(source, live)]
    finally:
        env.close()
        live_env.close()
    assert len(rendered) == len(replayed)
    for k in (0, len(replayed) // 2, len(replayed) - 1):
        # Live frames are rendered after mj_step (kinematics of the last substep's start), replayed
        # ones after mj_forward of the stored state: the same picture to within a few pixels.
        differs = np.abs(replayed[k].astype(int) - rendered[k].astype(int)).sum(axis=2) > 40
        assert differs.mean() < 0.005, f"frame {k}: {differs.mean():.2%} of pixels differ"


def test_episode_replay_strip_shows_the_stored_info(episode):
    env = _env()
    try:
        steps = list(EpisodeSource(env, episode))
    finally:
        env.close()
    assert [s.index for s in steps] == list(range(episode.steps + 1))
    assert steps[-1].last and steps[-1].success == episode.success
    assert steps[-1].episode_return == pytest.approx(episode.total_reward)
    for s in (steps[0], steps[-1]):
        assert s.info["depth_mm"] == pytest.approx(float(episode.infos["depth_mm"][s.index]))


def test_side_by_side_frames_have_both_halves_with_labels(tmp_path, episode):
    """A demonstration (left) and a policy from the same seed and start (right), time-aligned."""
    left_env, right_env = _env(), _env()
    try:
        left = FrameRenderer(left_env, label="DEMONSTRATION", accent=LEFT_ACCENT)
        right = FrameRenderer(right_env, label="POLICY", accent=RIGHT_ACCENT)
        # A policy that stops early: the left half runs on while the right holds its last frame.
        policy_steps = episode.steps // 2
        source = RolloutSource(right_env, load_policy("expert", right_env), seed=episode.seed,
                               start_state=episode.states[0], max_steps=policy_steps)
        pairs = list(side_by_side(video_frames(EpisodeSource(left_env, episode), left),
                                  video_frames(source, right)))
    finally:
        left_env.close()
        right_env.close()
    assert len(pairs) == episode.steps + 1  # as long as the longer half
    frame = pairs[len(pairs) // 4]
    assert frame.shape == (H + left.strip.height, 2 * W, 3)
    halves = frame[:, :W], frame[:, W:]
    for half, accent in zip(halves, (LEFT_ACCENT, RIGHT_ACCENT), strict=True):
        assert half[:H].std() > 10, "each half shows a rendered scene"
        header = half[H:H + left.strip.row_h]
        tag = np.all(header == np.array(accent, np.uint8), axis=2)
        assert tag.sum() > 100, "each half carries its label tag"
        assert (header.max(axis=2) > 200).sum() > 30, "with text in it"
    # Each half has its own state: the demo and the policy run the same motion here, so the
    # halves match while both run...
    assert np.abs(halves[0][:H].astype(int) - halves[1][:H].astype(int)).mean() < 2
    # ...and after the policy stopped, the right half is frozen while the left moves on.
    late = [p[:H, W:] for p in pairs[policy_steps + 1:]]
    assert all(np.array_equal(late[0], f) for f in late)
    assert not np.array_equal(pairs[policy_steps + 1][:H, :W], pairs[-1][:H, :W])


def test_side_by_side_video_decodes_at_double_width(tmp_path, episode):
    left_env, right_env = _env(), _env()
    try:
        out = tmp_path / "pair.mp4"
        source = EpisodeSource(left_env, episode)
        other = RolloutSource(right_env, load_policy("expert", right_env), seed=episode.seed,
                              start_state=episode.states[0])
        result = render_video(out, source, FrameRenderer(left_env, label="demo"), every=5,
                              vs=(other, FrameRenderer(right_env, label="policy")))
    finally:
        left_env.close()
        right_env.close()
    frames, _ = _decode(out)
    assert len(frames) == result["frames"] == len(set(range(0, episode.steps + 1, 5)) | {episode.steps})
    assert frames[0].shape[1] == 2 * W


def test_video_writer_is_atomic_and_checks_frame_sizes(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"previous")
    frame = np.zeros((64, 96, 3), np.uint8)
    with pytest.raises(RuntimeError, match="interrupted"), VideoWriter(out, 10) as writer:
        writer.add(frame)
        raise RuntimeError("interrupted")
    assert out.read_bytes() == b"previous", "a failed render leaves the old file alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"], "and no temporary file"
    with VideoWriter(out, 10) as writer:
        with pytest.raises(ValueError, match="multiple of 16"):
            writer.add(np.zeros((60, 90, 3), np.uint8))
        writer.add(frame)
        with pytest.raises(ValueError, match="differs"):
            writer.add(np.zeros((32, 96, 3), np.uint8))
        writer.add(frame + 100)
    frames, _ = _decode(out)
    assert len(frames) == 2 and frames[0].shape == (64, 96, 3)
    with pytest.raises(ValueError, match=r"\.mp4"):
        VideoWriter(tmp_path / "v.avi", 10)


def test_block_pad_and_step_spacing():
    assert block_pad(np.zeros((250, 330, 3), np.uint8)).shape == (256, 336, 3)
    frame = np.ones((32, 48, 3), np.uint8)
    assert block_pad(frame) is frame
    with pytest.raises(ValueError, match="at least 1"):
        next(video_frames([Step(0, 0.0, {}, None, 0.0)], None, every=0))
