"""FaissIndex configurations compared on search.py's realistic data, one build per structure, searches interleaved.

Builds the gallery of ``bench/search.py`` once (same seeds, same chunks),
one FaissIndex per structure (``--nlist``: 1 is the flat PQ scan), then
times every (structure, nprobe, shortlist) combination on the same queries,
round-robin per query so that the machine's noise falls on all alike.
Prints p50/p99 (wall, CPU beside), recall@1 against exact search and
bytes per template. Measures choices for the FaissIndex docstring.

Run: ``.venv/bin/python bench/search_options.py --size 1000000 --nlist 1 1024 --nprobe 8 16 32 64``
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cpu_meter import CpuMeter
from facetrail.gallery.faiss_index import FaissIndex, IndexSettings
from facetrail.vision.engine import EngineConfig, FaceEngine
from search import FACES, LFW, Clock, build, machine, peak_rss_bytes, percentiles
from search_data import FillerModel, Gallery, assign_roles, embed_real_faces, image_list


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=200_000)
    parser.add_argument("--nlist", type=int, nargs="+", default=[1])
    parser.add_argument("--pq-m", type=int, nargs="+", default=[0], help="PQ sub-quantizers (0: dim / 8)")
    parser.add_argument("--pca-dim", type=_pca_dim, nargs="+", default=[0],
                        help="dimensions the PQ codes are made in (0: half, none: the vectors as they are)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--shortlist", type=int, nargs="+", default=[256])
    parser.add_argument("--shards", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; faiss-cpu {info['faiss-cpu']}; size {args.size:,}, "
          f"{args.queries} queries x {args.passes} passes, nlist {args.nlist}, nprobe {args.nprobe}, "
          f"shortlist {args.shortlist}, pca_dim {args.pca_dim}, shards {args.shards or 'auto'}")
    real, _ = embed_real_faces(FaceEngine(EngineConfig()), image_list(FACES, LFW), args.augment, args.seed)
    roles = assign_roles(real, args.queries, args.seed)
    model = FillerModel.fit(real, roles.gallery_rows, 1 + args.augment)
    queries = np.ascontiguousarray(real.vectors[roles.query_rows])
    gallery = Gallery.make(args.size, real, roles, model, args.seed, args.chunk)

    indexes: dict[tuple[int, int, int | None], FaissIndex] = {}
    truth = None
    for nlist, pq_m, pca in itertools.product(args.nlist, args.pq_m, args.pca_dim):
        index = FaissIndex(queries.shape[1], IndexSettings(kind="approx", nlist=nlist, shards=args.shards,
                                                           pq_m=pq_m, pca_dim=pca))
        index.reserve(args.size)
        made = build(index, gallery, queries)
        truth = made.truth
        print(f"nlist {nlist}, pq_m {pq_m or 'auto'}, pca_dim {pca}: built in {made.add.wall:.1f} s wall / "
              f"{made.add.cpu:.1f} s CPU, {index.nbytes / len(index):.0f} B/template; "
              f"peak RSS {peak_rss_bytes() / 2**30:.2f} GiB",
              flush=True)
        indexes[nlist, pq_m, pca] = index
    assert truth is not None

    combos = [(nlist, pq_m, pca, nprobe, shortlist) for nlist, pq_m, pca in indexes
              for nprobe in (args.nprobe if nlist > 1 else [1]) for shortlist in args.shortlist]
    wall: dict[Any, list[float]] = {c: [] for c in combos}
    cpu: dict[Any, list[float]] = {c: [] for c in combos}
    top1: dict[Any, np.ndarray] = {c: np.empty(queries.shape[0], np.int64) for c in combos}
    for index in indexes.values():
        index.search(queries[:20], 10)
    meter = CpuMeter()
    meter.start()
    for _, (i, q) in itertools.product(range(args.passes), enumerate(queries)):
        for combo in combos:
            nlist, pq_m, pca, nprobe, shortlist = combo
            backend = indexes[nlist, pq_m, pca]._backend
            backend.nprobe, backend.shortlist = nprobe, shortlist  # type: ignore[union-attr]
            clock = Clock()
            with clock:
                hits = indexes[nlist, pq_m, pca].search(q, 10)
            wall[combo].append(clock.wall)
            cpu[combo].append(clock.cpu)
            top1[combo][i] = hits.ids[0, 0]
    noise = meter.background_share()
    rows = []
    print(f"\n{'nlist':>6} {'pq_m':>5} {'pca':>5} {'nprobe':>6} {'shortlist':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU p50':>8} {'CPU p99':>8} {'recall@1':>9}")
    for combo in combos:
        lat, c = percentiles(wall[combo]), percentiles(cpu[combo])
        recall = float(np.mean(top1[combo] == truth))
        rows.append({"nlist": combo[0], "pq_m": combo[1], "pca_dim": combo[2], "nprobe": combo[3],
                     "shortlist": combo[4], "latency": lat, "cpu_latency": c, "recall_at_1": recall})
        print(f"{combo[0]:>6} {combo[1]:>5} {combo[2]!s:>5} {combo[3]:>6} {combo[4]:>9} {lat['p50_ms']:>8.2f} "
              f"{lat['p99_ms']:>8.2f} {c['p50_ms']:>8.2f} {c['p99_ms']:>8.2f} {recall:>9.4f}")
    if noise is not None:
        print(f"background CPU use by other processes while timing: {noise:.1%} (busy machine: compare rows, "
              f"not absolute numbers)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "settings": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows, "background_cpu_share": noise,
                                         "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    return 0


def _pca_dim(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


if __name__ == "__main__":
    sys.exit(main())
