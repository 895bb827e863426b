"""``skillcell demos ...``: generate, import, replay, score and export demonstrations.

Exit codes: 0 done (and, for import and replay, passed), 1 done but failed a check (an import
that is not feasible, a replay that diverged), 2 bad input (nothing was written), 3 no OpenGL
to render with (``export --cameras``; nothing was written).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from skillcell.cli.common import (
    EXIT_NO_GL,
    add_env_options,
    add_parallel_options,
    env_kwargs,
    fail,
    make_env,
    parallel_kwargs,
)
from skillcell.demos.capture import format_report, import_capture
from skillcell.demos.episode import DemoDataset, load_episode
from skillcell.demos.lerobot_io import export_lerobot
from skillcell.demos.minari_io import export_minari
from skillcell.demos.recorder import generate_demos
from skillcell.demos.replay import replay_episode
from skillcell.demos.scores import check_filter_out, filter_dataset, score_dataset
from skillcell.envs.base import RenderUnavailableError
from skillcell.paths import check_output

__all__ = ["add_commands"]


def cmd_generate(args: argparse.Namespace) -> int:
    check_output(args.out, folder=True)
    make_env(args.env_id).close()  # an unknown id is refused with the list of cells
    try:
        entries = generate_demos(args.env_id, args.episodes, args.out, skill=args.skill, seed=args.seed,
                                 env_kwargs=env_kwargs(args), progress=not args.no_progress, **parallel_kwargs(args))
    except ValueError as exc:  # a skill level the cell's expert does not have, a dataset of another cell
        return fail(str(exc))
    successes = sum(e.success for e in entries)
    print(f"wrote {len(entries)} episodes of {args.env_id} (scripted {args.skill}, seeds {entries[0].seed}.."
          f"{entries[-1].seed}) to {args.out}: success {successes}/{len(entries)}, "
          f"{sum(e.steps for e in entries)} steps; episode ids {entries[0].id}..{entries[-1].id}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    check_output(args.out, folder=True)
    result = import_capture(args.capture, args.out, sidecar=args.sidecar, run_to_end=not args.stop_at_outcome,
                            progress=not args.no_progress)
    print(format_report(result.report))
    out = Path(args.out)
    print(f"episode {result.entry.id} -> {out / result.entry.file}; report {out / result.entry.report}")
    return 0 if result.feasible else 1


def cmd_replay(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        dataset = DemoDataset(path)
        entries = [dataset.entry(args.episode)] if args.episode is not None else list(dataset.entries)
        if not entries:
            return fail(f"{path}: the dataset has no episodes")
        targets = [(path / e.file, e.sha256) for e in entries]
    else:
        if args.episode is not None:
            return fail("--episode selects an episode of a dataset folder; PATH is an episode file")
        targets = [(path, None)]
    if args.video and len(targets) != 1:
        return fail(f"--video renders one episode; {path} has {len(targets)}: pick one with --episode")
    failed = 0
    for file, sha256 in targets:
        episode = load_episode(file, sha256=sha256)
        with warnings.catch_warnings():
            # The report lists version and model warnings; printing them twice helps nobody.
            warnings.simplefilter("ignore")
            report = replay_episode(episode, args.mode, video=args.video, threshold_mm=args.threshold_mm,
                                    width=args.width, height=args.height, camera=args.camera,
                                    progress=not args.no_progress)
        report.source = str(file)
        print(report.summary())
        failed += not report.passed
    if len(targets) > 1:
        print(f"{len(targets) - failed}/{len(targets)} episodes passed")
    return 1 if failed else 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.out is not None:
        if args.min_score is None:
            return fail("--out writes the episodes above --min-score; give --min-score too")
        check_filter_out(args.dir, check_output(args.out, folder=True), force=args.force)
    scores = score_dataset(args.dir, progress=not args.no_progress)
    print(scores.report())
    if not args.no_save:
        print(f"scores written to {scores.save()}")
    if args.min_score is not None:
        selected = scores.select(args.min_score)
        print(f"{len(selected)}/{len(scores.episodes)} episodes score >= {args.min_score}: {selected}")
        if args.out is not None:
            entries = filter_dataset(args.dir, args.out, min_score=args.min_score, force=args.force)
            print(f"wrote {len(entries)} episodes to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output(args.out, folder=True)
    if args.format == "lerobot":
        return _export_lerobot(args)
    if args.repo_id or args.cameras:
        return fail("--repo-id and --cameras belong to --format lerobot")
    dataset_id, root = export_minari(args.dir, out=args.out, dataset_id=args.dataset_id, min_score=args.min_score,
                                     progress=not args.no_progress, overwrite=args.force)
    print(f"Minari dataset {dataset_id} written under {root}")
    setting = "" if args.out is None else f"MINARI_DATASETS_PATH={root} "  # a root Minari does not look in
    print(f"open it with: {setting}python -c \"import minari; print(minari.load_dataset('{dataset_id}'))\"")
    return 0


def _export_lerobot(args: argparse.Namespace) -> int:
    if args.dataset_id:
        return fail("--dataset-id names a Minari dataset; a LeRobot one is named by --repo-id")
    cameras = [c.strip() for c in (args.cameras or "").split(",") if c.strip()]
    try:
        result = export_lerobot(args.dir, out=args.out, repo_id=args.repo_id, cameras=cameras, width=args.width,
                                height=args.height, task=args.task, min_score=args.min_score, overwrite=args.force,
                                progress=not args.no_progress)
    except RenderUnavailableError as exc:
        return fail(str(exc), EXIT_NO_GL)
    videos = f", videos {', '.join(result.video_keys)}" if result.video_keys else ""
    print(f"LeRobot dataset {result.repo_id}: {result.episodes} episodes, {result.frames} frames{videos}; "
          f"written to {result.path}")
    root = "" if args.out is None else f", root='{result.path}'"  # a root LeRobot does not look in
    print(f"open it with: python -c \"from lerobot.datasets.lerobot_dataset import LeRobotDataset; "
          f"print(LeRobotDataset('{result.repo_id}'{root}))\"")
    return 0


def add_commands(subparsers) -> None:
    """Adds the ``demos`` command group to the ``skillcell`` parser's subparsers."""
    demos = subparsers.add_parser("demos", help="demonstrations: generate, import, replay, score, export",
                                  description=__doc__.splitlines()[0])
    sub = demos.add_subparsers(dest="demos_command", required=True)

    p = sub.add_parser("generate", help="run the cell's scripted expert into a dataset")
    p.add_argument("env_id")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--skill", default="expert", help="skill level of the scripted expert (welding: expert, novice)")
    p.add_argument("--seed", type=int, help="first episode's seed; the next ones count up (default: after the "
                                            "seeds the dataset holds, 0 for a new one)")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--no-progress", action="store_true")
    add_env_options(p)
    add_parallel_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("import", help="retarget a human tool capture (CSV + sidecar YAML) onto the robot")
    p.add_argument("capture", help="capture CSV; its sidecar is the same path with .yaml (docs/capture_format.md)")
    p.add_argument("--sidecar", help="sidecar YAML, if not next to the CSV")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--stop-at-outcome", action="store_true", help="end the episode at the task's outcome (the peg "
                                                                   "seated, the seam end) instead of the capture's end")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("replay", help="replay episodes: state (bit-exact check) or action (drift)")
    p.add_argument("path", help="an episode .npz, or a dataset folder (every episode, or --episode)")
    p.add_argument("--mode", choices=("state", "action"), default="state")
    p.add_argument("--episode", type=int, help="episode id within a dataset folder")
    p.add_argument("--video", help="write an mp4 of the replay")
    p.add_argument("--threshold-mm", type=float, default=0.5, help="action mode: max TCP drift that passes")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--camera", help="camera for the video (default: the cell's overview)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("score", help="skill scores per demonstration and per operator")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--min-score", type=float, help="list (and with --out, copy) the episodes scoring at least this")
    p.add_argument("--out", help="write the episodes scoring >= --min-score into this new dataset")
    p.add_argument("--force", action="store_true", help="--out may be a folder that holds files already (the "
                                                        "episodes are added to the dataset there)")
    p.add_argument("--no-save", action="store_true", help="do not write <dir>/scores.yaml")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("export", help="export a dataset (Minari, LeRobot v3.0)")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--format", choices=("minari", "lerobot"), required=True)
    p.add_argument("--out", help="root to write under instead of the format's own: Minari's (MINARI_DATASETS_PATH, "
                                 "else ~/.minari/datasets), LeRobot's (HF_LEROBOT_HOME, else "
                                 "~/.cache/huggingface/lerobot); a LeRobot dataset lands in OUT/<repo-id>")
    p.add_argument("--dataset-id", help="Minari id, namespace/env_name/name-vN; default skillcell/<cell>/<dir>-v0")
    p.add_argument("--repo-id", help="LeRobot repo id, owner/name; default skillcell/<dir>")
    p.add_argument("--cameras", help="LeRobot: cameras of the cell to render into videos, comma-separated "
                                     "(e.g. overview,tool/closeup)")
    p.add_argument("--width", type=int, default=320, help="LeRobot video width in pixels, a multiple of 16")
    p.add_argument("--height", type=int, default=240, help="LeRobot video height in pixels, a multiple of 16")
    p.add_argument("--task", help="LeRobot task text of every episode (default: the cell's one-line description)")
    p.add_argument("--min-score", type=float, help="export only episodes scoring at least this")
    p.add_argument("--force", action="store_true", help="replace a dataset of the same id")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_export)
