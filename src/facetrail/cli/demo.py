"""`facetrail demo`: the whole pipeline, offline, on a clip made from the sample photos.

Builds a short camera clip that pans and zooms across players.jpg (with
sensor noise and a dark stretch), enrols the player of yaoming.jpg on a
demo watchlist, runs the video pipeline on the clip and prints the alerts,
the player's timeline and where everything was written.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from facetrail.cli.common import CommandError, out
from facetrail.config.loader import load_config
from facetrail.gallery.enrol import EnrolOptions, Outcome, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.history import timeline
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.pipeline.runner import Pipeline
from facetrail.store.models import Event, Identity, Sighting
from facetrail.synth.scenes import demo_clip
from facetrail.vision.samples import sample_image

MARKER = ".facetrail-demo"
PERSON = "Yao Ming"
ACTOR = "demo"
ANALYSIS_FPS = 5.0

CONFIG = """\
# Written by `facetrail demo`. Run it again with: facetrail run {config}
purpose: "facetrail demo: alert on the demo watchlist"
data_dir: .
cameras:
  court:
    inputs:
      - path: {clip}
        roles: [detect]
    detect:
      fps: {fps}
events:
  unknown_visitor: true
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser("demo", help="run the video pipeline on a clip made from the sample photos",
                            description="Build a camera clip from the photos the model package ships, enrol one "
                                        "player on a watchlist, watch the clip and print the alert and the "
                                        "player's timeline. Offline; a few seconds on a laptop CPU.")
    parser.add_argument("--dir", type=Path, default=Path("facetrail-demo"),
                        help="where the demo writes its clip, config and database (default: ./facetrail-demo; "
                             "replaced on every run)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build, enrol, watch, report."""
    folder: Path = args.dir.resolve()
    _fresh_folder(folder)
    out.print(f"building a camera clip from players.jpg in {folder} ...")
    clip = demo_clip(folder / "court.mp4")
    out.print(f"  {clip.description}")
    config_path = folder / "config.yml"
    config_path.write_text(CONFIG.format(config=config_path, clip=clip.path.name, fps=ANALYSIS_FPS))
    config = load_config(config_path)

    pipeline = Pipeline(config, actor=ACTOR)
    gallery: Gallery = pipeline.gallery
    report = enrol_person(gallery, PERSON, [sample_image("yaoming.jpg")], EnrolOptions(actor=ACTOR))
    if report.count(Outcome.ENROLLED) != 1:
        raise CommandError(f"could not enrol yaoming.jpg: {report.files[0].outcome} {report.files[0].detail}")
    create_watchlist(gallery, "demo", purpose="facetrail demo", actor=ACTOR)
    add_member(gallery, "demo", PERSON, actor=ACTOR)
    out.print(f"enrolled {PERSON} from yaoming.jpg and put him on watchlist 'demo'")

    expected = int(clip.duration_s * ANALYSIS_FPS)
    with Progress(TextColumn("watching camera 'court'"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as progress:
        task = progress.add_task("frames", total=expected)
        pipeline.start()
        try:
            while not pipeline.done:
                pipeline.step()
                progress.update(task, completed=min(pipeline.stats.frames, expected))
        finally:
            pipeline.stop()
    stats = pipeline.stats
    out.print(f"analysed {stats.frames} frames: {stats.faces} faces, {stats.embedded} embedded, "
              f"{stats.tracks} tracks, {stats.named_tracks} named")
    return _report(folder, config.data_dir, clip.path, config_path)


def _report(folder: Path, data_dir: Path, clip: Path, config_path: Path) -> int:
    gallery = Gallery(GallerySettings(data_dir))
    try:
        with gallery.db.session() as session:
            alerts = list(session.scalars(select(Event).where(Event.kind == "watchlist_hit")
                                          .order_by(Event.started_at)))
            unknown = session.scalar(select(Sighting.id).where(Sighting.identity_id.is_(None)).limit(1)) is not None
            visitors = len(set(session.scalars(select(Sighting.visitor_id).where(Sighting.visitor_id.is_not(None)))))
            person_id = session.scalar(select(Identity.id).where(Identity.display_name == PERSON))
        if not alerts:
            raise CommandError("the demo raised no alert; the pipeline did not recognise the player "
                               "(run with -v to see why)")
        for n, alert in enumerate(alerts, 1):
            snapshot = folder / f"alert-{n}.jpg"
            if alert.snapshot_jpeg:
                snapshot.write_bytes(alert.snapshot_jpeg)
            out.print(f"[bold red]ALERT[/bold red] {_clock(alert.started_at)} UTC: {PERSON} on watchlist 'demo', "
                      f"camera {alert.camera}, similarity {alert.score:.3f}, review pending (event {alert.id}); "
                      f"snapshot {snapshot.name}")
        rows = timeline(gallery, str(person_id), purpose="facetrail demo: show the timeline", actor=ACTOR)
        out.print(f"\ntimeline of {PERSON} (UTC):")
        for row in rows:
            out.print(f"  {_clock(row.first_seen)} - {_clock(row.last_seen)}  camera {row.camera}  "
                      f"similarity {row.score or 0:.3f}  ({row.frames} frames)")
        if unknown:
            out.print(f"other faces were stored as unknown sightings ({visitors} anonymous visitor id(s)); "
                      "nobody else was named")
    finally:
        gallery.db.dispose()
    out.print(f"\nfiles in {folder}:\n  clip {clip.name}, config {config_path.name}, database facetrail.db, "
              f"snapshots alert-*.jpg\n  try: facetrail sightings '{PERSON}' --purpose 'demo' --data {folder}"
              f"\n       facetrail events list --data {folder}")
    return 0


def _clock(moment: datetime) -> str:
    """Time of day to the millisecond."""
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def _fresh_folder(folder: Path) -> None:
    if folder.exists():
        if not (folder / MARKER).exists():
            raise CommandError(f"{folder} exists and was not made by `facetrail demo`; choose another --dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by facetrail demo; replaced on every run\n")
