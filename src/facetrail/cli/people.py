"""`facetrail identities`, `facetrail forget`, `facetrail correct`, `facetrail purge`."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from facetrail.cli.common import actor_of, add_gallery_options, opened_gallery, out, require_face
from facetrail.gallery.people import add_negative, forget, list_identities
from facetrail.gallery.retention import apply_retention, retention_in_effect
from facetrail.vision.image import load_image


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommands."""
    listing = sub.add_parser("identities", help="list the enrolled people")
    add_gallery_options(listing)
    listing.set_defaults(run=run_identities)

    forgetting = sub.add_parser(
        "forget", help="remove a person completely (templates, thumbnails, index, memberships)",
        description="Delete a person on request. The audit log keeps a tombstone with the identity id "
                    "and counts only: no name, no image, no embedding.")
    forgetting.add_argument("person", metavar="PERSON", help="identity id or unambiguous name")
    forgetting.add_argument("--reason", default="deletion request", help="recorded in the audit log")
    add_gallery_options(forgetting)
    forgetting.set_defaults(run=run_forget)

    correcting = sub.add_parser(
        "correct", help="record that the face in IMAGE is NOT a person, so it stops matching them",
        description="Store a negative example: the main face of IMAGE (and near copies of it) will no "
                    "longer match PERSON.")
    correcting.add_argument("image", type=Path, metavar="IMAGE")
    correcting.add_argument("--not", dest="person", required=True, metavar="PERSON")
    add_gallery_options(correcting)
    correcting.set_defaults(run=run_correct)

    purging = sub.add_parser(
        "purge", help="apply retention now: video data, expired watchlists, people past retention",
        description="Delete sightings, thumbnails, events and door decisions past their retention, watchlists past "
                    "their expiry and people past their retention date; one audit entry records the counts. The "
                    "retention is the configuration's (--config), else the last `facetrail run`'s, else the defaults.")
    purging.add_argument("--config", type=Path, default=None,
                         help="take the retention from this configuration (its data_dir and database replace "
                              "--data and --db)")
    add_gallery_options(purging)
    purging.set_defaults(run=run_purge)


def run_identities(args: argparse.Namespace) -> int:
    """Print one line per identity."""
    with opened_gallery(args) as gallery:
        people = list_identities(gallery)
    for person in people:
        lists = f"  watchlists: {', '.join(person.watchlists)}" if person.watchlists else ""
        out.print(f"{person.id:>6}  {person.display_name}  ({person.templates} face(s)){lists}", markup=False)
    out.print(f"{len(people)} identit{'y' if len(people) == 1 else 'ies'}")
    return 0


def run_forget(args: argparse.Namespace) -> int:
    """Forget one person and say what was removed."""
    with opened_gallery(args) as gallery:
        gone = forget(gallery, args.person, actor=actor_of(args), reason=args.reason)
    out.print(f"forgot identity {gone.identity_id}: {len(gone.template_ids)} template(s), "
              f"{gone.negatives} negative example(s), {gone.memberships} watchlist membership(s)")
    return 0


def run_correct(args: argparse.Namespace) -> int:
    """Store a negative example from the main face of an image."""
    with opened_gallery(args) as gallery:
        data = args.image.read_bytes() if args.image.is_file() else b""
        faces = gallery.engine.analyze(load_image(args.image))
        index = require_face(args.image, faces)
        negative = add_negative(gallery, args.person, faces.embeddings.vectors[index], actor=actor_of(args),
                                image_sha256=hashlib.sha256(data).hexdigest())
    out.print(f"noted: this face is not {args.person} (negative example {negative})")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    """Apply the retention in effect and report what it removed."""
    config = None
    if args.config is not None:
        from facetrail.config.loader import load_config

        config = load_config(args.config)
        args.data, args.db, args.recogniser = config.data_dir, config.database.url, config.recogniser
    with opened_gallery(args) as gallery:
        with gallery.db.session() as session:
            source, retention = retention_in_effect(session, config)
        outcome = apply_retention(gallery, retention, actor=actor_of(args))
    people = outcome.people
    data = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in outcome.data.counts.items())
    out.print(f"retention ({source}): removed {data or 'no video data'}", markup=False)
    out.print(f"purged {len(people.expired_watchlists)} expired watchlist(s) and "
              f"{len(people.forgotten)} identit{'y' if len(people.forgotten) == 1 else 'ies'} "
              f"past retention ({len(people.template_ids)} template(s))")
    return 0
