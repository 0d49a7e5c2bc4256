"""`facetrail search IMAGE --purpose TEXT`: who is this? (1:N, audited)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facetrail.cli.common import actor_of, add_gallery_options, opened_gallery, out, require_face
from facetrail.cli.sightings import sighting_json, sightings_table
from facetrail.gallery.history import SightingView, search_history
from facetrail.gallery.search import search_embedding
from facetrail.vision.image import load_image


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "search", help="find who the main face of an image is, among the enrolled people",
        description="1:N search of the main (largest) face of IMAGE. A purpose is required and every "
                    "search is written to the audit log.")
    parser.add_argument("image", type=Path, metavar="IMAGE")
    parser.add_argument("--purpose", required=True, help="why you are searching (stored in the audit log)")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="candidates to show (default 5)")
    parser.add_argument("--watchlist", help="search only this watchlist, with its threshold")
    parser.add_argument("--history", action="store_true",
                        help="search all stored sightings (enrolled or not) instead of the enrolled people")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    add_gallery_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the decision (known / unknown) and the candidates; exit 0 either way."""
    with opened_gallery(args) as gallery:
        faces = gallery.engine.analyze(load_image(args.image))
        index = require_face(args.image, faces)
        if args.history:
            return _print_history(args, search_history(
                gallery, faces.embeddings.vectors[index], purpose=args.purpose, actor=actor_of(args), top=args.top,
                model_id=faces.embeddings.model_id))
        result = search_embedding(gallery, faces.embeddings.vectors[index], purpose=args.purpose,
                                  actor=actor_of(args), top=args.top, watchlist=args.watchlist,
                                  model_id=faces.embeddings.model_id)
    if args.json:
        out.print(json.dumps({
            "known": result.known, "threshold": result.threshold, "watchlist": result.watchlist,
            "matches": [{"identity_id": m.identity_id, "name": m.display_name, "score": round(m.score, 4)}
                        for m in result.matches]}), markup=False)
        return 0
    scope = f"watchlist {result.watchlist!r}" if result.watchlist else "the gallery"
    if result.best is not None:
        out.print(f"[green]known[/green]: {result.best.display_name} (id {result.best.identity_id}), "
                  f"similarity {result.best.score:.3f} >= {result.threshold:.3f} in {scope}")
    else:
        out.print(f"[yellow]unknown[/yellow]: nobody in {scope} reaches the threshold {result.threshold:.3f}")
    for rank, match in enumerate(result.matches, 1):
        out.print(f"  {rank}. {match.display_name} (id {match.identity_id})  {match.score:.3f}")
    if len(faces) > 1:
        out.print(f"note: {args.image} has {len(faces)} faces; searched the largest", style="dim")
    return 0


def _print_history(args: argparse.Namespace, hits: list[SightingView]) -> int:
    if args.json:
        out.print(json.dumps([sighting_json(hit) for hit in hits]), markup=False)
    elif not hits:
        out.print("no stored sighting looks like this face")
    else:
        out.print(sightings_table(hits, title=f"{len(hits)} sighting(s) like {args.image}, most similar first"))
    return 0
