"""`facetrail watchlist create|add|list`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sqlalchemy import func, select

from facetrail.cli.common import CommandError, actor_of, add_gallery_options, opened_gallery, out
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.store.models import Watchlist, WatchlistMember


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand group."""
    parser = sub.add_parser("watchlist", help="create watchlists and add people to them")
    actions = parser.add_subparsers(dest="watchlist_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a watchlist with a purpose, threshold and expiry")
    create.add_argument("name")
    create.add_argument("--purpose", required=True, help="why this list exists (stored and audited)")
    level = create.add_mutually_exclusive_group()
    level.add_argument("--false-match-rate", type=float, metavar="RATE",
                       help="how often a stranger may match, e.g. 1e-4 (one stranger pair in 10,000), turned into "
                            "the recogniser's cosine by its calibration table")
    level.add_argument("--threshold", type=float,
                       help="the cosine similarity itself, not a confidence (default: calibrated)")
    create.add_argument("--expires", help="expiry date YYYY-MM-DD; the purge removes the list after it")
    create.add_argument("--reviewers", type=int, choices=(1, 2), default=1,
                        help="people who must confirm an alert before it counts (2: four-eyes rule)")
    add_gallery_options(create)
    create.set_defaults(run=run_create)
    add = actions.add_parser("add", help="put an enrolled person on a watchlist")
    add.add_argument("name")
    add.add_argument("person", help="identity id or unambiguous name")
    add_gallery_options(add)
    add.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="list watchlists")
    add_gallery_options(listing)
    listing.set_defaults(run=run_list)


def run_create(args: argparse.Namespace) -> int:
    """Create one watchlist."""
    expires = None
    if args.expires:
        try:
            expires = datetime.strptime(args.expires, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise CommandError(f"--expires {args.expires!r}: expected a date as YYYY-MM-DD") from None
    with opened_gallery(args) as gallery:
        create_watchlist(gallery, args.name, purpose=args.purpose, actor=actor_of(args),
                         threshold=args.threshold, false_match_rate=args.false_match_rate, expires_at=expires,
                         reviewers_required=args.reviewers)
    out.print(f"watchlist {args.name!r} created")
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Add one member."""
    with opened_gallery(args) as gallery:
        add_member(gallery, args.name, args.person, actor=actor_of(args))
    out.print(f"{args.person} is on watchlist {args.name!r}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print every watchlist with its member count."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        counts = dict(session.execute(select(WatchlistMember.watchlist_id, func.count())
                                      .group_by(WatchlistMember.watchlist_id)).all())
        for row in session.scalars(select(Watchlist).order_by(Watchlist.name)):
            expiry = f", expires {row.expires_at:%Y-%m-%d}" if row.expires_at else ""
            threshold = f", threshold {row.threshold:.3f}" if row.threshold is not None else ""
            four_eyes = ", two reviewers confirm each alert" if row.reviewers_required > 1 else ""
            out.print(f"{row.name}: {counts.get(row.id, 0)} member(s){threshold}{expiry}{four_eyes}; "
                      f"purpose: {row.purpose}", markup=False)
    return 0
