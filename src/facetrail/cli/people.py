"""`facetrail identities`, `facetrail forget`, `facetrail correct`, `facetrail purge`."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from facetrail.cli.common import actor_of, add_gallery_options, opened_gallery, out, require_face
from facetrail.gallery.people import add_negative, forget, list_identities, purge
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

    purging = sub.add_parser("purge", help="apply retention now: expired watchlists, people past retention")
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
    """Run the retention purge and report it."""
    with opened_gallery(args) as gallery:
        report = purge(gallery, actor=actor_of(args))
    out.print(f"purged {len(report.expired_watchlists)} expired watchlist(s) and "
              f"{len(report.forgotten)} identit{'y' if len(report.forgotten) == 1 else 'ies'} "
              f"past retention ({len(report.template_ids)} template(s))")
    return 0
