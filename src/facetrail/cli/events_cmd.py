"""`facetrail events list|review|snapshot`: what the cameras raised, and people's verdicts on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table
from sqlalchemy import select

from facetrail.cli.common import CommandError, actor_of, add_gallery_options, opened_gallery, out
from facetrail.events.outlet import EventOutlet
from facetrail.events.review import ReviewError, review_event
from facetrail.store.models import Event, EventReview, Identity, Watchlist


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand group."""
    parser = sub.add_parser("events", help="list events, confirm or dismiss them, save their snapshots")
    actions = parser.add_subparsers(dest="events_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="events, newest first")
    listing.add_argument("--state", choices=["pending", "confirmed", "dismissed"], help="only events in this state")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON for machines")
    add_gallery_options(listing)
    listing.set_defaults(run=run_list)
    review = actions.add_parser("review", help="confirm or dismiss an event (audited)")
    review.add_argument("event", type=int, help="event id (see `facetrail events list`)")
    review.add_argument("verdict", choices=["confirm", "dismiss"])
    review.add_argument("--note", help="why: what you checked, what you saw")
    review.add_argument("--config", type=Path, default=None,
                        help="announce the review on this configuration's MQTT and webhooks (sent by the "
                             "`facetrail run` on the same database); without it, the review is only stored")
    add_gallery_options(review)
    review.set_defaults(run=run_review)
    snapshot = actions.add_parser("snapshot", help="save an event's evidence snapshot as a JPEG")
    snapshot.add_argument("event", type=int)
    snapshot.add_argument("output", type=Path)
    add_gallery_options(snapshot)
    snapshot.set_defaults(run=run_snapshot)


def run_list(args: argparse.Namespace) -> int:
    """Print events with their review state."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        query = (select(Event, Identity.display_name, Watchlist.name)
                 .outerjoin(Identity, Identity.id == Event.identity_id)
                 .outerjoin(Watchlist, Watchlist.id == Event.watchlist_id)
                 .order_by(Event.started_at.desc(), Event.id.desc()).limit(args.limit))
        if args.state:
            query = query.where(Event.state == args.state)
        rows = session.execute(query).all()
        reviews: dict[int, list[str]] = {}
        for event_id, reviewer, decision in session.execute(
                select(EventReview.event_id, EventReview.reviewer, EventReview.decision)
                .where(EventReview.event_id.in_([event.id for event, _, _ in rows]))):
            reviews.setdefault(event_id, []).append(f"{reviewer}: {decision}")
    if args.json:
        out.print(json.dumps([{
            "id": e.id, "uid": e.uid, "kind": e.kind, "camera": e.camera, "identity": name, "watchlist": wl,
            "visitor_id": e.visitor_id, "score": e.score, "started_at": e.started_at.isoformat(),
            "ended_at": e.ended_at.isoformat() if e.ended_at else None, "state": e.state,
            "reviewers_required": e.reviewers_required, "reviews": reviews.get(e.id, [])}
            for e, name, wl in rows]), markup=False)
        return 0
    table = Table(title=f"{len(rows)} event(s)", title_justify="left")
    for column in ("id", "started (UTC)", "kind", "camera", "who", "watchlist", "score", "state", "reviews"):
        table.add_column(column)
    for event, name, watchlist in rows:
        who = name or (f"visitor:{event.visitor_id}" if event.visitor_id else "-")
        state = event.state + (f" ({event.reviewers_required} reviewers)" if event.reviewers_required > 1 else "")
        table.add_row(str(event.id), f"{event.started_at:%Y-%m-%d %H:%M:%S}", event.kind, event.camera, who,
                      watchlist or "-", f"{event.score:.3f}" if event.score is not None else "-", state,
                      "; ".join(reviews.get(event.id, [])) or "-")
    out.print(table)
    return 0


def run_review(args: argparse.Namespace) -> int:
    """Record one verdict (announced on the channels of ``--config``, if given)."""
    outlet = EventOutlet()
    if args.config is not None:
        from facetrail.config.loader import load_config

        outlet = EventOutlet.for_config(load_config(args.config))
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        try:
            outcome = review_event(session, args.event, reviewer=actor_of(args), verdict=args.verdict,
                                   note=args.note, outlet=outlet)
        except ReviewError as error:
            raise CommandError(str(error)) from None
    waiting = f"; waiting for {outcome.waiting} more confirmation(s) from someone else" if outcome.waiting else ""
    out.print(f"event {outcome.event_id}: {outcome.state}{waiting}")
    return 0


def run_snapshot(args: argparse.Namespace) -> int:
    """Write the snapshot JPEG."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        event = session.get(Event, args.event)
        if event is None:
            raise CommandError(f"no event with id {args.event}")
        if event.snapshot_jpeg is None:
            raise CommandError(f"event {args.event} has no snapshot (retention removed it, or none was taken)")
        data = event.snapshot_jpeg
    args.output.write_bytes(data)
    out.print(f"wrote {args.output}")
    return 0
