"""What encrypting faces at rest costs: enrolment, start-up (index build) and search, sealed vs plaintext.

    .venv/bin/python bench/crypto.py [--people 100] [--scale 20000] [--rounds 5]

Real faces: the first image of the first ``--people`` people of LFW View 1
(../shared/data/lfw-view1). "plaintext" runs the same code with the sealing
and opening functions swapped for identity functions (what the code did
before), interleaved with the sealed runs, CPU time of this process. For
start-up and history search at scale, the real embeddings are repeated into
``--scale`` templates and sightings (each row sealed with its own associated
data, under 100 identities' keys / one key per unknown sighting). "file" is
the old start-up: loading a saved index file.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import facetrail.gallery.enrol as enrol_module
import facetrail.gallery.history as history_module
import facetrail.gallery.sync as sync_module
from facetrail.gallery.enrol import EnrolOptions, enrol_person
from facetrail.gallery.faiss_index import load_index
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.history import search_history
from facetrail.gallery.sync import build_index
from facetrail.store.models import FaceTemplate, Identity, Sighting
from facetrail.store.sealed import seal_into

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-view1" / "images"


def _plain_seal(_keys: Any, _session: Any, row: Any, column: str, plaintext: bytes | None) -> None:
    setattr(row, column, plaintext)


def _plain_open(_keys: Any, _session: Any, _table: str, _column: str, rows: list[tuple[int, bytes]]) -> list[bytes]:
    return [blob for _, blob in rows]


@contextlib.contextmanager
def plaintext() -> Iterator[None]:
    """The code path without encryption (identity seal/open), as before."""
    swaps = [(enrol_module, "seal_into", _plain_seal), (sync_module, "open_column", _plain_open),
             (history_module, "open_column", _plain_open)]
    saved = [getattr(module, name) for module, name, _ in swaps]
    for module, name, replacement in swaps:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for (module, name, _), original in zip(swaps, saved, strict=True):
            setattr(module, name, original)


def cpu(call: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    start = time.process_time()
    call(*args, **kwargs)
    return time.process_time() - start


def fill(gallery: Gallery, vectors: np.ndarray, scale: int, *, sealed: bool) -> None:
    """``scale`` templates and unknown sightings made of the real vectors, 100 identities."""
    with gallery.db.session() as session:
        people = [Identity(display_name=f"p{n}", created_by="bench") for n in range(100)]
        session.add_all(people)
        session.flush()
        rows: list[Any] = []
        for n in range(scale):
            vector = vectors[n % len(vectors)].tobytes()
            template = FaceTemplate(identity_id=people[n % 100].id, embedding=vector, dim=vectors.shape[1],
                                    model_id=gallery.model_id, quality=0.9, image_sha256=f"{n:064d}")
            sighting = Sighting(track_uid=f"t{n}", camera="c", first_seen=datetime.now(UTC),
                                last_seen=datetime.now(UTC), quality=0.9, embedding=vector, dim=vectors.shape[1],
                                model_id=gallery.model_id)
            rows += [template, sighting]
        session.add_all(rows)
        session.flush()
        if sealed:
            for row in rows:
                seal_into(gallery.keys, session, row, "embedding", bytes(row.embedding))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--scale", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    photos = [sorted(folder.iterdir())[0] for folder in sorted(LFW.iterdir())[:args.people]]
    with tempfile.TemporaryDirectory() as root:
        base = Path(root)
        galleries = {"sealed": Gallery(GallerySettings(base / "sealed")),
                     "plaintext": Gallery(GallerySettings(base / "plain"))}
        galleries["plaintext"]._engine = galleries["sealed"].engine  # one model in memory
        enrol = {"sealed": [], "plaintext": []}  # type: dict[str, list[float]]
        for n, photo in enumerate(photos):  # interleaved, one photo each
            for mode in (("sealed", "plaintext") if n % 2 else ("plaintext", "sealed")):
                gallery = galleries[mode]
                context = plaintext() if mode == "plaintext" else contextlib.nullcontext()
                with context:
                    enrol[mode].append(cpu(enrol_person, gallery, f"{photo.parent.name}-{mode}", [photo],
                                           EnrolOptions(actor="bench")))
        g = galleries["sealed"]
        vectors = sync_module.load_vectors(g.db, g.model_id, sync_module.template_ids(g.db, g.model_id), g.dim)
        print(f"enrolment, CPU ms per photo (median of {len(photos)}): "
              + ", ".join(f"{m} {1000 * statistics.median(v):.1f}" for m, v in enrol.items()))
        for mode, gallery in galleries.items():
            fill(gallery, vectors, args.scale, sealed=mode == "sealed")
        index_file = base / "index.faiss"
        with plaintext():
            build_index(galleries["plaintext"].db, galleries["plaintext"].model_id,
                        galleries["plaintext"].dim).save(index_file)
        start: dict[str, list[float]] = {"sealed": [], "plaintext": [], "file": []}
        history: dict[str, list[float]] = {"sealed": [], "plaintext": []}
        probe = vectors[0]
        for _ in range(args.rounds):
            start["sealed"].append(cpu(build_index, g.db, g.model_id, g.dim))
            history["sealed"].append(cpu(search_history, g, probe, purpose="bench", actor="bench"))
            p = galleries["plaintext"]
            with plaintext():
                start["plaintext"].append(cpu(build_index, p.db, p.model_id, p.dim))
                history["plaintext"].append(cpu(search_history, p, probe, purpose="bench", actor="bench"))
            start["file"].append(cpu(load_index, index_file, p.dim))
        templates = len(photos) + args.scale
        print(f"start-up index build, {templates} templates, CPU ms (median of {args.rounds}): "
              + ", ".join(f"{m} {1000 * statistics.median(v):.0f}" for m, v in start.items()))
        print(f"history search over {args.scale} sightings, CPU ms (median of {args.rounds}): "
              + ", ".join(f"{m} {1000 * statistics.median(v):.0f}" for m, v in history.items()))


if __name__ == "__main__":
    main()
