"""`facetrail events list|review|snapshot`: what the cameras raised, filtered, and people's verdicts on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.cli.common import CommandError, actor_of, add_gallery_options, opened_gallery, out, stdout_is_tty
from facetrail.events.outlet import EventOutlet
from facetrail.events.queries import (
    EVENT_KINDS,
    STATES,
    EventFilter,
    EventFilterError,
    count_events,
    group_repeats,
    list_events,
    parse_moment,
)
from facetrail.events.review import ReviewError, Verdict, pending_ids, review_event, review_many
from facetrail.store.models import Event, EventReview, Identity, Watchlist, as_utc

VERDICTS = ("confirm", "dismiss")
PIPE_WIDTH = 10_000  # piped tables are never wrapped: one event, one line


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand group."""
    parser = sub.add_parser("events", help="list events, confirm or dismiss them, save their snapshots")
    actions = parser.add_subparsers(dest="events_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="events, newest first, narrowed by the filter options")
    add_filter_options(listing, state=True)
    listing.add_argument("--group", action="store_true",
                         help="fold a person's or visitor's repeats (same kind, camera, watchlist and state, each "
                              "within 10 minutes of the next) into one line with their count")
    listing.add_argument("--limit", type=int, default=50, help="at most this many events (default 50)")
    listing.add_argument("--json", action="store_true",
                         help="print one JSON array of event objects, newest first, for machines")
    add_gallery_options(listing)
    listing.set_defaults(run=run_list)
    review = actions.add_parser(
        "review", help="confirm or dismiss events (each audited): by id, or every pending event the filter "
                       "options match (dismiss only)",
        description="Examples: `facetrail events review 12 confirm --note ...`; `facetrail events review 12 13 14 "
                    "--dismiss --note ...`; `facetrail events review --dismiss --kind unknown_visitor --camera door "
                    "--note ...`.")
    review.add_argument("targets", nargs="*", metavar="EVENT", help="event ids, optionally followed by the verdict "
                                                                    "(confirm or dismiss)")
    verdicts = review.add_mutually_exclusive_group()
    verdicts.add_argument("--confirm", dest="verdict_flag", action="store_const", const="confirm")
    verdicts.add_argument("--dismiss", dest="verdict_flag", action="store_const", const="dismiss")
    review.add_argument("--note", help="why: what you checked, what you saw (the same note on every event)")
    add_filter_options(review, state=False)
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


def add_filter_options(parser: argparse.ArgumentParser, *, state: bool) -> None:
    """The filter options that list and review share."""
    group = parser.add_argument_group("filter")
    group.add_argument("--kind", choices=EVENT_KINDS, help="only events of this kind")
    group.add_argument("--camera", help="only events of this camera")
    group.add_argument("--person", help="only events of this person: id, name as enrolled, or visitor:ID")
    group.add_argument("--watchlist", help="only hits on this watchlist (name or id)")
    if state:
        group.add_argument("--state", choices=STATES, help="only events in this review state")
    group.add_argument("--since", help="only events that started at or after this time (ISO 8601 with zone, "
                                       "e.g. 2026-03-01T08:00:00Z)")
    group.add_argument("--until", help="only events that started before this time (ISO 8601 with zone)")


def filter_from(args: argparse.Namespace) -> EventFilter:
    """The filter the options ask for; CommandError naming what is wrong."""
    try:
        return EventFilter(kind=args.kind, camera=args.camera, person=args.person, watchlist=args.watchlist,
                           state=getattr(args, "state", None),
                           since=parse_moment(args.since, "--since") if args.since else None,
                           until=parse_moment(args.until, "--until") if args.until else None)
    except EventFilterError as error:
        raise CommandError(str(error)) from None


def run_list(args: argparse.Namespace) -> int:
    """Print the matching events with their review state: "N of TOTAL", then a table or JSON."""
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    wanted = filter_from(args)
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        try:
            rows = list_events(session, wanted, limit=args.limit)
            total = count_events(session, wanted)
        except EventFilterError as error:
            raise CommandError(str(error)) from None
        groups = group_repeats(rows) if args.group else [group for row in rows for group in group_repeats([row])]
        names, watchlists = _names(session, rows)
        reviews = _reviews(session, [row.id for row in rows])
    if args.json:
        out.print(json.dumps([_as_json(g.head, names, watchlists, reviews, [r.id for r in g.repeats])
                              for g in groups]), markup=False)
        return 0
    shown = f"{len(rows)} of {total} event(s)" + (f" in {len(groups)} group(s)" if args.group else "")
    table = Table(title=shown, title_justify="left")
    if not stdout_is_tty():  # a pipe or a file: plain aligned columns, no box drawing, no colour
        table = Table(box=None, show_edge=False, pad_edge=False, header_style="", title=None)
    for column in ("id", "started (UTC)", "kind", "camera", "who", "watchlist", "score", "state", "reviews"):
        table.add_column(column, no_wrap=not stdout_is_tty())
    if args.group:
        table.add_column("repeats", no_wrap=not stdout_is_tty())
    for group in groups:
        event = group.head
        who = names.get(event.identity_id or 0) or (f"visitor:{event.visitor_id}" if event.visitor_id else "-")
        state = event.state + (f" ({event.reviewers_required} reviewers)" if event.reviewers_required > 1 else "")
        cells = [str(event.id), f"{as_utc(event.started_at):%Y-%m-%d %H:%M:%S}", event.kind, event.camera, who,
                 watchlists.get(event.watchlist_id or 0) or "-",
                 f"{event.score:.3f}" if event.score is not None else "-", state,
                 "; ".join(reviews.get(event.id, [])) or "-"]
        if args.group:
            cells.append(f"+{len(group.repeats)}" if group.repeats else "-")
        table.add_row(*cells)
    if stdout_is_tty():
        out.print(table)
    else:
        plain = Console(width=PIPE_WIDTH, highlight=False, force_terminal=False, no_color=True)
        out.print(shown, markup=False)
        with plain.capture() as captured:
            plain.print(table)
        out.print("\n".join(line.rstrip() for line in captured.get().splitlines()), markup=False)
    return 0


def run_review(args: argparse.Namespace) -> int:
    """Record one verdict on one event, on several, or on every pending event the filter matches."""
    verdict, ids = _verdict_and_ids(args)
    wanted = filter_from(args)
    if ids and not wanted.is_empty():
        raise CommandError("give event ids or filter options, not both")
    if not ids and wanted.is_empty():
        raise CommandError("name the events: their ids, or filter options (--kind, --camera, --person, "
                           "--watchlist, --since, --until) for every pending event they match")
    outlet = EventOutlet()
    if args.config is not None:
        from facetrail.config.loader import load_config

        outlet = EventOutlet.for_config(load_config(args.config))
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        try:
            if len(ids) == 1:
                one = review_event(session, ids[0], reviewer=actor_of(args), verdict=verdict, note=args.note,
                                   outlet=outlet)
                waiting = (f"; waiting for {one.waiting} more confirmation(s) from someone else"
                           if one.waiting else "")
                out.print(f"event {one.event_id}: {one.state}{waiting}", markup=False)
                return 0
            chosen = ids or pending_ids(session, wanted)
            outcome = review_many(session, chosen, reviewer=actor_of(args), verdict=verdict, note=args.note,
                                  outlet=outlet, by_filter=not ids)
        except (ReviewError, EventFilterError) as error:
            raise CommandError(str(error)) from None
    for done in outcome.reviewed:
        out.print(f"event {done.event_id}: {done.state}", markup=False)
    for skipped in outcome.skipped:
        out.print(f"event {skipped.event_id}: skipped: {skipped.reason}", markup=False)
    out.print(f"{len(outcome.reviewed)} event(s) reviewed, {len(outcome.skipped)} skipped (batch {outcome.batch})",
              markup=False)
    return 1 if outcome.skipped and not outcome.reviewed else 0


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


def _verdict_and_ids(args: argparse.Namespace) -> tuple[Verdict, list[int]]:
    """The verdict (a trailing word or --confirm/--dismiss, exactly one) and the event ids."""
    targets = list(args.targets)
    word = targets.pop() if targets and targets[-1] in VERDICTS else None
    if (word is None) == (args.verdict_flag is None):
        raise CommandError("give the verdict once: `confirm` or `dismiss` after the ids, or --confirm / --dismiss")
    bad = [t for t in targets if not t.isdigit() or int(t) < 1]
    if bad:
        raise CommandError(f"not an event id: {bad[0]!r} (ids are whole numbers; see `facetrail events list`)")
    return cast(Verdict, word or args.verdict_flag), [int(t) for t in dict.fromkeys(targets)]


def _names(session: Session, rows: list[Event]) -> tuple[dict[int, str], dict[int, str]]:
    people = {r.identity_id for r in rows if r.identity_id is not None}
    lists = {r.watchlist_id for r in rows if r.watchlist_id is not None}
    names = {i: n for i, n in session.execute(select(Identity.id, Identity.display_name)
                                              .where(Identity.id.in_(people)))}
    watchlists = {i: n for i, n in session.execute(select(Watchlist.id, Watchlist.name).where(Watchlist.id.in_(lists)))}
    return names, watchlists


def _reviews(session: Session, ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for event_id, reviewer, decision in session.execute(
            select(EventReview.event_id, EventReview.reviewer, EventReview.decision)
            .where(EventReview.event_id.in_(ids)).order_by(EventReview.at)):
        found.setdefault(event_id, []).append(f"{reviewer}: {decision}")
    return found


def _as_json(e: Event, names: dict[int, str], watchlists: dict[int, str], reviews: dict[int, list[str]],
             repeats: list[int]) -> dict[str, Any]:
    return {"id": e.id, "uid": e.uid, "kind": e.kind, "camera": e.camera, "identity": names.get(e.identity_id or 0),
            "identity_id": e.identity_id, "watchlist": watchlists.get(e.watchlist_id or 0),
            "visitor_id": e.visitor_id, "score": e.score, "started_at": as_utc(e.started_at).isoformat(),
            "ended_at": as_utc(e.ended_at).isoformat() if e.ended_at else None, "state": e.state,
            "reviewers_required": e.reviewers_required, "reviews": reviews.get(e.id, []), "repeats": repeats}
