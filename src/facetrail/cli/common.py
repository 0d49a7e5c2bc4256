"""Pieces every subcommand shares: engine options, one-line errors, output consoles."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from facetrail.vision.detector import INPUT_SIZE
from facetrail.vision.engine import EngineConfig, FaceEngine, ImageFaces
from facetrail.vision.errors import ImageError
from facetrail.vision.image import load_image

if TYPE_CHECKING:
    from facetrail.gallery.gallery import Gallery

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Options that choose and tune the face engine."""
    group = parser.add_argument_group("engine")
    group.add_argument("--recogniser", choices=["arcface", "dlib"], default="arcface",
                       help="arcface: w600k_mbf, 512-d, non-commercial weights (default); "
                            "dlib: ResNet 128-d, permissive (needs facetrail[dlib])")
    group.add_argument("--det-size", type=int, default=INPUT_SIZE, metavar="PX",
                       help="detector input: the image is letterboxed into PX x PX "
                            f"(larger finds smaller faces, costs more; default {INPUT_SIZE}); a smaller image is "
                            "detected at its own size, never enlarged into it")
    group.add_argument("--crop", action="store_true",
                       help="the images are face crops (ID photos, a camera's face captures): look for the face "
                            "inside a border first (without it, that look is the fallback when none is found)")
    group.add_argument("--no-rotations", action="store_true",
                       help="do not look for faces turned by 90/180/270 degrees when none is upright")
    group.add_argument("--no-low-light", action="store_true",
                       help="never enhance dark images before detection")
    group.add_argument("--providers", default="auto",
                       help="onnxruntime providers, comma separated (default: auto = GPU if present)")


def engine_from_args(args: argparse.Namespace) -> FaceEngine:
    """Build the engine the options ask for."""
    from facetrail.vision.lowlight import LowLightConfig

    providers: tuple[str, ...] | str = (
        "auto" if args.providers == "auto" else tuple(args.providers.split(",")))
    return FaceEngine(EngineConfig(
        recogniser=args.recogniser,
        detector_input=(args.det_size, args.det_size),
        try_rotations=not args.no_rotations,
        face_crops=args.crop,
        low_light=LowLightConfig(enabled=not args.no_low_light),
        providers=providers,
    ))


def analyze_file(engine: FaceEngine, path: Path) -> ImageFaces:
    """Faces of one image file; ImageError when it cannot be read."""
    return engine.analyze(load_image(path))


def report_image_error(error: ImageError) -> None:
    """Print an image problem as one line on stderr."""
    err.print(f"error: {error}", markup=False)


def require_face(path: Path, faces: ImageFaces) -> int:
    """Index of the image's main face, or an ImageError when it has none."""
    index = faces.primary()
    if index is None:
        raise ImageError(str(path), "no face found (try a larger, sharper, frontal photo)")
    return index


def stdout_is_tty() -> bool:
    """True when a person is probably reading the output."""
    return sys.stdout.isatty()


def add_gallery_options(parser: argparse.ArgumentParser) -> None:
    """Options that say where the gallery lives and who is acting."""
    import os

    group = parser.add_argument_group("gallery")
    group.add_argument("--data", type=Path, default=Path(os.environ.get("FACETRAIL_DATA", "facetrail-data")),
                       help="data folder: SQLite file and index (default: $FACETRAIL_DATA or ./facetrail-data)")
    group.add_argument("--db", default=os.environ.get("FACETRAIL_DB"),
                       help="database URL instead of the SQLite file, e.g. "
                            "postgresql+psycopg://user@host/db (default: $FACETRAIL_DB)")
    group.add_argument("--actor", default=None,
                       help="who is acting, for the audit log (default: $FACETRAIL_ACTOR or your user name)")
    group.add_argument("--recogniser", choices=["arcface", "dlib"], default="arcface",
                       help="which recogniser's templates to use (default: arcface)")


def open_gallery(args: argparse.Namespace) -> Gallery:
    """Open the gallery the options name (creating an empty one if needed)."""
    from facetrail.gallery.gallery import Gallery, GallerySettings

    return Gallery(GallerySettings(data_dir=args.data, db_url=args.db, recogniser=args.recogniser))


@contextmanager
def opened_gallery(args: argparse.Namespace) -> Iterator[Gallery]:
    """The gallery the options name, its database connections released afterwards."""
    gallery = open_gallery(args)
    try:
        yield gallery
    finally:
        gallery.db.dispose()


def actor_of(args: argparse.Namespace) -> str:
    """The acting user for the audit log."""
    from facetrail.gallery.gallery import default_actor

    return str(args.actor or default_actor())
