"""Review-video throughput (render + overlays + metric strip + H.264 encode) against raw MuJoCo rendering.

For each cell one scripted-expert episode is recorded (every ``mjSTATE_INTEGRATION`` state), then
its states are rendered at 640x480 by:

- **raw mujoco.Renderer, default visual settings**: ``mujoco.Renderer(model, 480, 640)`` as it
  comes (the model's shadows, reflections and 4x MSAA), ``update_scene`` + ``render`` per state;
  no overlays, no text, no encoding. This is what a plain offscreen loop costs;
- **raw mujoco.Renderer, fast settings**: the same loop without shadows, reflections and MSAA;
- **skillcell render --quality fast / high**: the whole review pipeline end to end: state replay
  (restore, forward, re-measure the cell's metrics), the cell's overlays (seam, bead), tool trace,
  force arrow, the metric strip, and libx264 encoding into an mp4 (what ``skillcell render
  EPISODE`` does);
- **skillcell render, live expert rollout**: the pipeline driven by the scripted expert, physics
  included (what ``skillcell render expert --env ...`` does).

    python benchmarks/render_throughput.py [--width 640] [--height 480] [--max-frames 300]

Not a test: it prints figures, it asserts nothing. Headless: MUJOCO_GL defaults to egl.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "menagerie"
if "MENAGERIE_ROOT" not in os.environ and _SHARED.is_dir():
    os.environ["MENAGERIE_ROOT"] = str(_SHARED)

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402

import skillcell  # noqa: E402,F401  (registers the cells)
from skillcell.demos.recorder import EpisodeRecorder  # noqa: E402
from skillcell.policies import make_expert  # noqa: E402
from skillcell.review.sources import EpisodeSource, RolloutSource, load_policy, make_review_env  # noqa: E402
from skillcell.review.video import FrameRenderer, render_video  # noqa: E402
from skillcell.rollout import rollout  # noqa: E402


def record_episode(env_id: str, seed: int, max_frames: int):
    env = gym.make(env_id, max_episode_steps=max_frames - 1)
    recorder = EpisodeRecorder(env)
    rollout(recorder, make_expert(env), seed=seed)
    env.close()
    return recorder.completed[0]


def raw_render(episode, width: int, height: int, camera: str, lean: bool) -> float:
    """Frames/s of a plain update_scene + render loop over the episode's states."""
    env = gym.make(episode.env_id, **{k: v for k, v in episode.env_kwargs.items() if k != "render_mode"})
    m, d = env.unwrapped.model, env.unwrapped.data
    samples = m.vis.quality.offsamples
    if lean:
        m.vis.quality.offsamples = 0
    renderer = mujoco.Renderer(m, height, width)
    m.vis.quality.offsamples = samples
    if lean:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    frames = 0
    start = time.perf_counter()
    for state in episode.states:
        mujoco.mj_setState(m, d, state, spec)
        mujoco.mj_forward(m, d)
        renderer.update_scene(d, camera=camera)
        renderer.render()
        frames += 1
    elapsed = time.perf_counter() - start
    renderer.close()
    env.close()
    return frames / elapsed


def pipeline(episode, width: int, height: int, camera: str, quality: str, out: Path, live: bool) -> tuple[float, int]:
    """Frames/s of the review pipeline writing an mp4, and the frame count."""
    env = make_review_env(episode.env_id, episode.env_kwargs, width=width, height=height, quality=quality,
                          max_episode_steps=episode.steps)
    try:
        renderer = FrameRenderer(env, camera, label="benchmark")
        if live:
            source = RolloutSource(env, load_policy("expert", env), seed=episode.seed)
        else:
            source = EpisodeSource(env, episode)
        # The renderer (GL context) is made on first use: warm it up outside the timing, as the
        # raw loop's constructor is outside its timing too.
        env.unwrapped.renderer  # noqa: B018
        result = render_video(out, source, renderer)
    finally:
        env.close()
    return result["frames"] / result["seconds"], result["frames"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--max-frames", type=int, default=300, help="frames per episode (steps + 1)")
    args = parser.parse_args()
    w, h = args.width, args.height
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, MUJOCO_GL={os.environ['MUJOCO_GL']}, "
          f"mujoco {mujoco.__version__}, {w}x{h}")
    cells = (("skillcell/PegInsert-v0", "overview"), ("skillcell/WeldSeam-v0", "seam"))
    print(f"{'workload (one scripted-expert episode, state replay unless live)':62s} {'frames/s':>9s} {'frames':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for env_id, camera in cells:
            episode = record_episode(env_id, seed=0, max_frames=args.max_frames)
            n = episode.steps + 1
            raw = raw_render(episode, w, h, camera, lean=False)
            lean = raw_render(episode, w, h, camera, lean=True)
            fast, frames = pipeline(episode, w, h, camera, "fast", Path(tmp) / "fast.mp4", live=False)
            high, _ = pipeline(episode, w, h, camera, "high", Path(tmp) / "high.mp4", live=False)
            live, live_frames = pipeline(episode, w, h, camera, "fast", Path(tmp) / "live.mp4", live=True)
            print(f"{env_id}, camera {camera}")
            rows = (("raw mujoco.Renderer, default visual settings (render only)", raw, n),
                    ("raw mujoco.Renderer, fast settings (render only)", lean, n),
                    ("skillcell render --quality fast: overlays+strip+H.264 mp4", fast, frames),
                    ("skillcell render --quality high: overlays+strip+H.264 mp4", high, frames),
                    ("skillcell render --quality fast, live expert rollout", live, live_frames))
            for label, fps, count in rows:
                print(f"  {label:60s} {fps:9.1f} {count:7d}")
            print(f"  {'end to end (fast) over raw default renderer':60s} {fast / raw:8.1f}x")


if __name__ == "__main__":
    main()
