"""``skillcell render`` and ``skillcell report``: review videos and the HTML report of a training run.

Exit codes: 0 written, 2 bad input (nothing written), 3 no working OpenGL (the message names the
packages to install). Only these two commands touch OpenGL; every other command works without it.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from skillcell.cli.common import EXIT_NO_GL, add_env_options, env_kwargs, fail
from skillcell.config import ConfigError
from skillcell.demos.episode import DemoDataset, load_episode
from skillcell.demos.errors import DemoError
from skillcell.envs.base import RenderUnavailableError
from skillcell.paths import check_output
from skillcell.policies.loading import TRUST_MODEL_HELP
from skillcell.policies.rundir import RunDir
from skillcell.review.report import ReportOptions, build_report
from skillcell.review.sources import EpisodeSource, RolloutSource, load_policy, make_review_env
from skillcell.review.video import LEFT_ACCENT, RIGHT_ACCENT, FrameRenderer, render_video

__all__ = ["add_commands", "cmd_render", "cmd_report"]


def _is_episode(path: Path) -> bool:
    return (path.suffix == ".npz" and path.is_file()) or (path.is_dir() and (path / "dataset.yaml").is_file())


def _load_episode(path: Path, episode_id: int | None):
    if path.is_dir():
        dataset = DemoDataset(path)
        if not dataset.entries:
            raise ValueError(f"{path}: the dataset has no episodes")
        entry = dataset.entry(episode_id) if episode_id is not None else dataset.entries[0]
        return dataset.load(entry), f"{path.name} #{entry.id}"
    if episode_id is not None:
        raise ValueError("--episode selects an episode of a dataset folder; this is an episode file")
    return load_episode(path), path.stem


class _Side:
    """One side of a render: an episode (state replay) or a policy (live rollout)."""

    def __init__(self, spec: str, episode_id: int | None):
        self.spec = spec
        path = Path(spec)
        self.episode = None
        self.model: str | None = None
        if not path.exists() and spec != "expert" and not spec.startswith("expert:"):
            raise ValueError(f"{spec}: no such file or folder (expected an episode .npz, a dataset folder, an SB3 "
                             "model .zip, a training run directory, or expert[:skill])")
        if _is_episode(path):
            self.episode, self.name = _load_episode(path, episode_id)
        else:
            if episode_id is not None:
                raise ValueError(f"--episode applies to episodes; {spec!r} is a model")
            self.model = str(RunDir.open(path).final_model()) if path.is_dir() else spec
            self.name = spec

    def open(self, args: argparse.Namespace, partner: _Side | None, label: str | None, accent):
        """``(env, source, frame_renderer)`` for this side; a policy copies an episode partner's start."""
        size = {"width": args.width, "height": args.height, "quality": args.quality}
        if self.episode is not None:
            ep = self.episode
            env = make_review_env(ep.env_id, ep.env_kwargs, max_episode_steps=ep.max_episode_steps, **size)
            source = EpisodeSource(env, ep, label=label or f"demo {self.name}")
        else:
            start_state, seed = None, args.seed
            episode = partner.episode if partner is not None else None
            if episode is not None:
                # The same start as the demonstration: its env and seed (the same workpiece), then
                # its first stored state (the same robot pose, also for imported captures).
                env = make_review_env(episode.env_id, episode.env_kwargs, max_episode_steps=episode.max_episode_steps,
                                      **size)
                start_state, seed = episode.states[0], episode.seed if args.seed is None else args.seed
            else:
                env_id, kwargs = args.env, env_kwargs(args)
                if env_id is None and self.model is not None and self.model.endswith(".zip"):
                    # A model from a training run: its cell, configured as it was trained
                    # (command-line env options still apply on top).
                    run = RunDir.of_model(self.model)
                    if run.config.is_file():
                        env_id, run_kwargs = run.env()
                        kwargs = {**run_kwargs, **kwargs}
                if env_id is None:
                    raise ValueError(f"{self.spec!r} is a policy: name the cell with --env ENV_ID")
                env = make_review_env(env_id, kwargs, **size)
            seed = 0 if seed is None else seed
        try:
            if self.episode is None:
                policy = load_policy(self.model, env, seed=seed, deterministic=not args.stochastic, algo=args.algo,
                                     trusted=args.trust_model)
                source = RolloutSource(env, policy, seed=seed, start_state=start_state, max_steps=args.max_steps,
                                       label=label or policy.name)
            renderer = FrameRenderer(env, args.camera, overlays=not args.no_overlays, strip=not args.no_strip,
                                     label=source.label, accent=accent)
        except Exception:
            env.close()  # a bad model or camera: the caller never gets this env to close
            raise
        return env, source, renderer


def cmd_render(args: argparse.Namespace) -> int:
    envs = []
    try:
        check_output(args.out, force=args.force)
        left = _Side(args.source, args.episode)
        right = _Side(args.vs, args.vs_episode) if args.vs else None
        # Either side may be the demonstration; a policy on either side starts where it started.
        env, source, renderer = left.open(args, right, args.label, LEFT_ACCENT)
        envs.append(env)
        vs = None
        if right is not None:
            env2, source2, renderer2 = right.open(args, left, args.vs_label, RIGHT_ACCENT)
            envs.append(env2)
            vs = (source2, renderer2)
            if left.episode is not None and right.episode is not None and left.episode.seed != right.episode.seed:
                warnings.warn(f"the two episodes have different seeds ({left.episode.seed}, {right.episode.seed}): "
                              "they start from different workpiece poses", stacklevel=1)
        result = render_video(args.out, source, renderer, every=args.every, speed=args.speed, vs=vs,
                              progress=not args.no_progress)
    except RenderUnavailableError as exc:
        return fail(str(exc), EXIT_NO_GL)
    except (ValueError, DemoError, ConfigError, OSError) as exc:
        return fail(str(exc))
    finally:
        for env in envs:
            env.close()
    w, h = result["size"]
    print(f"wrote {result['path']}: {result['frames']} frames, {w}x{h}, {result['fps']:g} fps "
          f"({result['frames'] / result['fps']:.1f} s of video) in {result['seconds']:.1f} s "
          f"= {result['frames'] / max(result['seconds'], 1e-9):.1f} frames/s")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    options = ReportOptions(episodes=args.eval_dir, dataset=args.dataset, rollouts=args.rollouts, env_id=args.env,
                            trust_model=args.trust_model,
                            videos=not args.no_video, embed_videos=args.embed_videos, camera=args.camera,
                            width=args.width, height=args.height, quality=args.quality,
                            progress=not args.no_progress)
    try:
        check_output(args.out, force=args.force)
        result = build_report(args.run_dir, args.out, options)
    except RenderUnavailableError as exc:
        return fail(f"{exc}\n(skillcell report --no-video writes the report without videos)", EXIT_NO_GL)
    except (ValueError, DemoError, ConfigError, OSError) as exc:
        return fail(str(exc))
    print(f"wrote {result.path} ({len(result.sections)} sections: {', '.join(result.sections)})")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def _add_render_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", help="a camera of the cell (overview, closeup, ...; default: the cell's review camera)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--quality", choices=("fast", "high"), default="fast",
                   help="fast: no shadows, reflections or MSAA (software OpenGL); high: the model's full settings")
    p.add_argument("--no-progress", action="store_true")


def add_commands(subparsers) -> None:
    """Adds ``render`` and ``report`` to the ``skillcell`` command line."""
    p = subparsers.add_parser(
        "render", help="review video of an episode (state replay) or a policy rollout, with overlays",
        description="Renders SOURCE to an mp4: an episode file or dataset folder (state replay), or a policy "
                    "(a stable-baselines3 .zip, a `skillcell train` run directory, or 'expert' / 'expert:novice' "
                    "for the scripted expert). With --vs, a second source side by side, time-aligned; a policy "
                    "paired with an episode starts from the episode's seed and first state. SB3 models and "
                    "their VecNormalize files are read as data unless --trust-model.")
    p.add_argument("source", metavar="(EPISODE|MODEL)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--env", help="the cell a policy runs in (episodes name their own)")
    p.add_argument("--episode", type=int, help="episode id when SOURCE is a dataset folder (default: the first)")
    p.add_argument("--vs", metavar="(EPISODE|MODEL)", help="a second source, shown on the right")
    p.add_argument("--vs-episode", type=int, help="episode id when --vs is a dataset folder")
    p.add_argument("--label", help="label of the left (or only) half")
    p.add_argument("--vs-label", help="label of the right half")
    p.add_argument("--seed", type=int, default=None, help="reset seed of a live rollout (default: the episode's, or 0)")
    p.add_argument("--max-steps", type=int, help="stop a live rollout after this many steps")
    p.add_argument("--every", type=int, default=1, help="render every k-th control step (the video stays real time)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (2 = twice real time)")
    p.add_argument("--no-overlays", action="store_true", help="no trace, force arrow or cell overlays")
    p.add_argument("--no-strip", action="store_true", help="no metric strip under the frame")
    p.add_argument("--algo", help="the SB3 algorithm when the model file does not say (PPO, SAC, TD3, A2C, DDPG)")
    p.add_argument("--stochastic", action="store_true", help="sample the policy's actions instead of the mean")
    p.add_argument("--trust-model", action="store_true", help=TRUST_MODEL_HELP)
    _add_render_size(p)
    add_env_options(p)
    p.set_defaults(func=cmd_render)

    p = subparsers.add_parser(
        "report", help="self-contained HTML report of a training run (curves, KPIs, best/worst episode videos)",
        description="Reads RUN_DIR/metrics.csv (any numeric columns), the run's config, evaluation episodes "
                    "(a dataset folder in RUN_DIR or --eval) and a demonstration dataset (--dataset) and "
                    "writes one HTML page; plots are embedded, videos written next to it.")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output .html (videos go to a folder next to it)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    # Not --episodes: `skillcell` reads args.episodes as a count for every command.
    p.add_argument("--eval", dest="eval_dir", metavar="DIR",
                   help="dataset folder of evaluation episodes (default: one found in RUN_DIR)")
    p.add_argument("--dataset", help="demonstration dataset folder for the skill-score distribution")
    p.add_argument("--rollouts", type=int, default=0,
                   help="roll out the run's final model for N episodes when no evaluation episodes exist")
    p.add_argument("--env", help="the cell, when the run's config does not name it")
    p.add_argument("--no-video", action="store_true", help="no best/worst episode videos")
    p.add_argument("--embed-videos", action="store_true", help="embed videos in the page (one file, larger)")
    p.add_argument("--trust-model", action="store_true", help=TRUST_MODEL_HELP)
    _add_render_size(p)
    p.set_defaults(func=cmd_report)
