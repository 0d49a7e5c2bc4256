"""`facetrail enroll`: add people from a folder tree or from photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facetrail.cli.common import CommandError, actor_of, add_gallery_options, err, open_gallery, out
from facetrail.gallery.enrol import (
    IMAGE_SUFFIXES,
    EnrolOptions,
    EnrolReport,
    Outcome,
    enrol_folder,
    enrol_person,
    person_folders,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "enroll", help="enrol people from DIR/<person>/*.jpg, or photos of one person with --name",
        description="Enrol faces. With one folder and no --name, every sub-folder is a person "
                    "(DIR/<person name>/*.jpg, as Frigate, Double Take and Viseron use). With --name, "
                    "the given photos (or the photos in the given folder) are all that person. "
                    "Re-running changes nothing: images already enrolled are recognised by their hash.")
    parser.add_argument("sources", nargs="+", type=Path, metavar="DIR_OR_IMAGE")
    parser.add_argument("--name", help="the person the photos show")
    parser.add_argument("--watchlist", help="also put the people on this existing watchlist")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--face", type=int, metavar="N",
                        help="on a photo with several faces, enrol face N (the refusal lists them with their boxes, "
                             "numbered from 0 as 'facetrail faces' numbers them; N applies to every photo given); "
                             "without a choice such a photo is refused")
    choice.add_argument("--largest", action="store_true",
                        help="on a photo with several faces, enrol the largest instead of refusing it")
    choice.add_argument("--centre", "--center", dest="centre", action="store_true",
                        help="on a photo with several faces, enrol the one nearest the centre (weighted by size)")
    parser.add_argument("--min-quality", type=float, default=0.2, metavar="Q",
                        help="refuse faces whose pose, detector and alignment quality is under Q, 0-1 (default 0.2); "
                             "small or blurred faces are refused only under measured floors, and enrolled with a "
                             "warning above them")
    parser.add_argument("--no-thumbnails", action="store_true", help="do not keep a 112x112 face thumbnail")
    parser.add_argument("--allow-duplicate-face", action="store_true",
                        help="enrol a face even when it is already enrolled under another identity (without it, "
                             "such a photo is skipped and the other identity named)")
    add_gallery_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Enrol and print a report per file; exit 1 when no file is (or already was) enrolled."""
    if args.face is not None and args.face < 0:
        raise CommandError(f"--face takes a face number from 0 up (the refusal lists them); {args.face} is not one")
    options = EnrolOptions(actor=actor_of(args), take_largest=args.largest, min_quality=args.min_quality,
                           watchlist=args.watchlist, thumbnails=not args.no_thumbnails,
                           allow_duplicate_face=args.allow_duplicate_face, face=args.face, take_centre=args.centre)
    if args.name is None:
        if len(args.sources) != 1 or not args.sources[0].is_dir():
            raise CommandError("without --name, give exactly one folder laid out as DIR/<person name>/*.jpg")
        people = person_folders(args.sources[0])
    else:
        people = [(args.name, _images_of(args.sources))]
    total = sum(len(images) for _, images in people)
    gallery = open_gallery(args)
    report = EnrolReport()
    try:
        with Progress(TextColumn("enrolling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.description}"), console=err, transient=True) as progress:
            task = progress.add_task("", total=total)

            def advance(path: Path) -> None:
                progress.update(task, advance=1, description=f"{path.parent.name}/{path.name}")

            if args.name is None:
                report = enrol_folder(gallery, args.sources[0], options, advance)
            else:
                enrol_person(gallery, args.name, people[0][1], options, report, advance)
    finally:
        gallery.close()
    _print_report(report)
    return 0 if report.count(Outcome.ENROLLED) + report.count(Outcome.DUPLICATE) else 1


def _images_of(sources: list[Path]) -> list[Path]:
    images: list[Path] = []
    for source in sources:
        if source.is_dir():
            images.extend(sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            images.append(source)
    if not images:
        raise CommandError("no images to enrol")
    return images


def _print_report(report: EnrolReport) -> None:
    for line in sorted(report.files, key=lambda f: (f.person, str(f.path))):
        detail = f" ({line.detail})" if line.detail else ""
        style = "green" if line.outcome is Outcome.ENROLLED else "yellow"
        out.print(f"[{style}]{line.outcome:<16}[/{style}] {escape(f'{line.person}: {line.path}{detail}')}")
        if line.warning:
            out.print(f"  [yellow]warning:[/yellow] {escape(line.warning)}")
    counts = ", ".join(f"{report.count(o)} {o}" for o in Outcome if report.count(o))
    out.print(f"{len(report.files)} file(s): {counts or 'nothing to do'}; "
              f"{len(report.identities)} identit{'y' if len(report.identities) == 1 else 'ies'} updated")
    if report.count(Outcome.SEVERAL_FACES):
        out.print("photos with several faces were skipped; enrol one again with --face N (N from the list), "
                  "--largest or --centre")
    if report.count(Outcome.DUPLICATE_FACE):
        out.print("faces already enrolled under another identity were skipped; if they really are different "
                  "people, enrol them again with --allow-duplicate-face")
