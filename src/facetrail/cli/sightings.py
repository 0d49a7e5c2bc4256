"""`facetrail sightings PERSON --purpose TEXT`: where and when was this person seen (audited)."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from facetrail.cli.common import actor_of, add_gallery_options, opened_gallery, out
from facetrail.gallery.history import SightingView, timeline


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "sightings", help="where and when a person was seen, across cameras, in time order",
        description="The timeline of an enrolled person (id or name) or of an anonymous visitor "
                    "(visitor:N). A purpose is required; every lookup is written to the audit log.")
    parser.add_argument("person", help="identity id, unambiguous name, or visitor:N")
    parser.add_argument("--purpose", required=True, help="why you are looking (stored in the audit log)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many sightings (default 1000)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    add_gallery_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the timeline."""
    with opened_gallery(args) as gallery:
        rows = timeline(gallery, args.person, purpose=args.purpose, actor=actor_of(args), limit=args.limit)
    if args.json:
        out.print(json.dumps([sighting_json(row) for row in rows]), markup=False)
        return 0
    if not rows:
        out.print(f"{args.person}: no sightings stored")
        return 0
    out.print(sightings_table(rows, title=f"{args.person}: {len(rows)} sighting(s)"))
    return 0


def sightings_table(rows: list[SightingView], *, title: str) -> Table:
    """A table of sightings: camera, times, who, score."""
    table = Table(title=title, title_justify="left")
    for column in ("first seen (UTC)", "last seen", "camera", "who", "score", "frames", "sighting"):
        table.add_column(column)
    for row in rows:
        who = row.identity_name or (f"visitor:{row.visitor_id}" if row.visitor_id else "unknown")
        score = row.similarity if row.similarity is not None else row.score
        table.add_row(f"{row.first_seen:%Y-%m-%d %H:%M:%S}", f"{row.last_seen:%H:%M:%S}", row.camera, who,
                      f"{score:.3f}" if score is not None else "-", str(row.frames),
                      str(row.id) + (" (watchlist)" if row.watchlist_hit else ""))
    return table


def sighting_json(row: SightingView) -> dict[str, object]:
    """One sighting as JSON."""
    return {"id": row.id, "camera": row.camera, "first_seen": row.first_seen.isoformat(),
            "last_seen": row.last_seen.isoformat(), "identity_id": row.identity_id, "name": row.identity_name,
            "visitor_id": row.visitor_id, "score": row.score, "similarity": row.similarity,
            "frames": row.frames, "watchlist_hit": row.watchlist_hit}
