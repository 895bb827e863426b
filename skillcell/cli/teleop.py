"""``skillcell teleop ENV_ID --device DEVICE --out DATASET``: record teleoperated episodes (`skillcell.teleop`).

Exit codes: 0 done, 2 bad input (nothing was written), 3 no OpenGL for ``--preview``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skillcell.cli.common import EXIT_NO_GL, EXIT_OK, add_env_options, env_kwargs, fail, make_env
from skillcell.envs.base import RenderUnavailableError
from skillcell.paths import check_output
from skillcell.teleop import TeleopError, record_teleop
from skillcell.teleop.devices import DEFAULT_SPEED, SPEED_LEVELS, check_device_spec

__all__ = ["add_commands"]


def cmd_teleop(args: argparse.Namespace) -> int:
    try:
        check_device_spec(args.device)
        check_output(args.out, folder=True)
        if args.preview is not None:
            if Path(args.preview).suffix.lower() != ".png":
                return fail(f"--preview {args.preview}: the preview is a PNG file; give a name ending in .png")
            check_output(args.preview, force=True)  # a scratch image, rewritten every second
        kwargs = env_kwargs(args)
        make_env(args.env_id, **kwargs).close()  # an unknown id is refused with the list of cells
        summary = record_teleop(args.env_id, args.device, args.out, episodes=args.episodes, seed=args.seed,
                                operator=args.operator, env_kwargs=kwargs, speed=args.speed,
                                realtime_factor=args.realtime_factor, viewer=False if args.no_viewer else None,
                                preview=args.preview, preview_every_s=args.preview_every)
    except TeleopError as exc:
        return fail(str(exc))
    except RenderUnavailableError as exc:
        return fail(str(exc), EXIT_NO_GL)
    print(summary.report())
    return EXIT_OK


def add_commands(subparsers) -> None:
    """Adds ``teleop`` to the ``skillcell`` parser's subparsers."""
    p = subparsers.add_parser(
        "teleop", help="drive a cell from a keyboard, SpaceMouse or script and record the episodes",
        description=__doc__.splitlines()[0],
        epilog="keyboard: w/s a/d q/e move x y z, i/k j/l u/o rotate, space arc (task channel 1), 1-9 task "
               "channels, +/- speed, enter save, backspace discard, esc quit. SpaceMouse (pip install "
               "\"skillcell[teleop]\"): left button task channel 1, right save, both discard.")
    p.add_argument("env_id")
    p.add_argument("--device", default="keyboard", metavar="DEVICE",
                   help="keyboard (this terminal), spacemouse, or script:FILE (a YAML list of timed commands)")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to; one cell per dataset)")
    p.add_argument("--operator", help="who operates, recorded in every episode's provenance (default: login name)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to save; esc ends the session earlier")
    p.add_argument("--seed", type=int, help="first episode's seed; saved episodes count up, a discarded one runs "
                                            "again (default: after the seeds the dataset holds)")
    p.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                   help=f"starting jog speed, a fraction of the cell's command limit (levels "
                        f"{', '.join(f'{s:g}' for s in SPEED_LEVELS)}; 0.2 is 20 mm/s on the 5 mm / 50 ms cells)")
    p.add_argument("--realtime-factor", type=float, default=1.0,
                   help="1 runs at the cell's control rate, 2 twice as fast, 0 unpaced (scripts)")
    p.add_argument("--no-viewer", action="store_true", help="no MuJoCo viewer window even where there is a display")
    p.add_argument("--preview", metavar="PNG", help="rewrite this image of the cell (overlays, metric strip) "
                                                    "every --preview-every seconds: a view on headless machines")
    p.add_argument("--preview-every", type=float, default=1.0, metavar="S")
    add_env_options(p)
    p.set_defaults(func=cmd_teleop)
