"""Entry point of the `facetrail` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from facetrail import __version__
from facetrail.cli import (
    audit_cmd,
    compare,
    config_cmd,
    demo,
    doors_cmd,
    enroll,
    evaluate,
    events_cmd,
    faces,
    people,
    run_cmd,
    search,
    serve,
    sightings,
    watchlist,
)
from facetrail.cli.common import CommandError, err
from facetrail.config.errors import ConfigError
from facetrail.events.errors import EventsError
from facetrail.gallery.errors import GalleryError
from facetrail.store.errors import StoreError
from facetrail.vision.errors import VisionError

SUBCOMMANDS = (demo, run_cmd, config_cmd, serve, faces, compare, evaluate, enroll, search, sightings, events_cmd,
               doors_cmd, people, watchlist, audit_cmd)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="facetrail", description="Self-hosted face recognition, accountable by design.")
    parser.add_argument("--version", action="version", version=f"facetrail {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input is a one-line error and a non-zero exit, never a traceback."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except ConfigError as error:
        lines = error.lines
        err.print("error: " + lines[0] if len(lines) == 1 else "error: the configuration has problems:\n  "
                  + "\n  ".join(lines), markup=False)
        return 1
    except (VisionError, GalleryError, StoreError, CommandError, EventsError) as error:
        err.print(f"error: {error}", markup=False)
        return 1
    except (FileExistsError, NotADirectoryError) as error:  # the data folder (or a folder above it) is a file
        err.print(f"error: {error.filename}: a file is where a folder is needed; point --data (or the "
                  "configuration's data_dir) at a folder, or a path where one can be made", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
