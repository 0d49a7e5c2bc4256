"""Milvus backend benchmark: facetrail's MilvusIndex (Milvus Lite) against its FaissIndex, same data, one run.

Data: bench/search.py's (real face embeddings of ../shared/data/faces and LFW
among seeded random unit vectors up to ``--size``; real other-photo queries
topped up with noisy enrolled vectors), exact ground truth by a NumPy scan.

Contenders, each built from the same vectors:

- ``FaissIndex`` in auto mode (at 100k: the PQ shortlist, re-scored exactly);
- ``MilvusIndex`` on Milvus Lite, index_type FLAT (exact) and HNSW (M 16,
  efConstruction 200, ef 128): the two types ``index_type: auto`` picks
  below ``hnsw_max`` (Milvus Lite has no DISKANN or IVF_PQ).

Reported: build wall and CPU seconds (Milvus: upserts, flush and waiting
for the index), single-query latency p50/p99 (k=10) and CPU per query,
recall@1 against exact search, rank-1 identification. Searches are
interleaved: each query runs on every contender, the order rotating. CPU
is this process's (Milvus Lite runs in it, as threads), so it includes the
gRPC round trip. ``--repeat`` passes over the queries.

Run: ``.venv/bin/python bench/milvus_index.py [--size N] [--queries N] [--repeat R] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from cpu_meter import CpuMeter
from facetrail.gallery.faiss_index import FaissIndex
from facetrail.gallery.index import Index
from facetrail.gallery.milvus_index import MilvusIndex, MilvusSettings
from facetrail.vision.engine import EngineConfig, FaceEngine
from search import build_data, embed_real_faces, exact_top1, identification, machine, percentiles

K = 10


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def wait_for_lite_index(index: MilvusIndex) -> None:
    """Block until Milvus Lite has built its segments' indexes: it builds them in a background thread after a
    flush and reports them built at once (describe_index), so the bench asks the engine itself."""
    from milvus_lite.server_manager import server_manager_instance

    _, lite, _ = server_manager_instance._servers[os.path.abspath(index.settings.uri)]
    lite.get_collection(index.name)._wait_for_bg()


def build(name: str, make: Any, ids: np.ndarray, vectors: np.ndarray) -> tuple[Index, dict[str, float]]:
    """Make an index, add every vector (Milvus: flush, then one search so its index is loaded)."""
    wall0, cpu0 = time.perf_counter(), cpu()
    index = make()
    for start in range(0, ids.size, 20_000):
        index.add(ids[start:start + 20_000], vectors[start:start + 20_000])
    if isinstance(index, MilvusIndex):
        index.flush()
        wait_for_lite_index(index)
    index.search(vectors[:1], K)
    out = {"build_wall_s": round(time.perf_counter() - wall0, 2), "build_cpu_s": round(cpu() - cpu0, 2)}
    print(f"  {name}: built in {out['build_wall_s']} s wall, {out['build_cpu_s']} s CPU", flush=True)
    return index, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=100_000, help="gallery size (identities)")
    parser.add_argument("--queries", type=int, default=500, help="single-search queries timed per pass")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lfw-limit", type=int, default=2000, help="LFW images embedded (sorted by name)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--tmp", default=None, help="folder for the Milvus Lite data (default: system temp)")
    args = parser.parse_args(argv)

    info = machine()
    print("facetrail Milvus backend benchmark")
    print(f"machine : {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM")
    print(f"software: python {info['python']}, faiss {info['faiss']}, pymilvus {version('pymilvus')}, "
          f"milvus-lite {version('milvus-lite')}")
    print(f"settings: size {args.size:,}, queries {args.queries} x {args.repeat} passes, k {K}, seed {args.seed}")

    real, _ = embed_real_faces(FaceEngine(EngineConfig()), args.lfw_limit)
    data = build_data(real, args.size, args.queries, args.seed)
    truth, _ = exact_top1(data.gallery, data.queries)
    ids = np.arange(data.gallery.shape[0], dtype=np.int64)
    dim = data.gallery.shape[1]

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        uri = str(Path(folder) / "bench.db")
        makers = {
            "FaissIndex (auto)": lambda: FaissIndex(dim),
            "MilvusIndex Lite FLAT": lambda: MilvusIndex(dim, MilvusSettings(uri=uri, index_type="FLAT"),
                                                         collection="bench_flat"),
            "MilvusIndex Lite HNSW": lambda: MilvusIndex(dim, MilvusSettings(uri=uri, index_type="HNSW"),
                                                         collection="bench_hnsw"),
        }
        print("\nbuilding ...", flush=True)
        indexes: dict[str, Index] = {}
        for name, make in makers.items():
            indexes[name], results[name] = build(name, make, ids, data.gallery)
        names = list(indexes)
        wall: dict[str, list[float]] = {n: [] for n in names}
        spent: dict[str, float] = dict.fromkeys(names, 0.0)
        top1: dict[str, np.ndarray] = {n: np.empty(data.queries.shape[0], np.int64) for n in names}
        print("searching (interleaved) ...", flush=True)
        background = CpuMeter()
        background.start()
        for _ in range(args.repeat):
            for i, q in enumerate(data.queries):
                for name in names[i % len(names):] + names[:i % len(names)]:
                    w0, c0 = time.perf_counter(), cpu()
                    hits = indexes[name].search(q, K)
                    wall[name].append(time.perf_counter() - w0)
                    spent[name] += cpu() - c0
                    top1[name][i] = hits.ids[0, 0]
        noise = background.background_share()
        for name in names:
            results[name].update(latency=percentiles(wall[name]),
                                 cpu_ms_per_query=round(1000 * spent[name] / len(wall[name]), 3),
                                 recall_at_1=float(np.mean(top1[name] == truth)),
                                 identification_rank1=identification(top1[name], data))
            index = indexes[name]
            if isinstance(index, MilvusIndex):
                index.drop()
                index.close()

    rows = [("", "build s (CPU)", "p50 ms", "p99 ms", "CPU ms/query", "recall@1", "rank-1 id")]
    for name, r in results.items():
        rows.append((name, f"{r['build_wall_s']:.1f} ({r['build_cpu_s']:.1f})", f"{r['latency']['p50_ms']:.2f}",
                     f"{r['latency']['p99_ms']:.2f}", f"{r['cpu_ms_per_query']:.2f}", f"{r['recall_at_1']:.4f}",
                     f"{r['identification_rank1']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                          strict=True))))
    faiss_p50 = results["FaissIndex (auto)"]["latency"]["p50_ms"]
    for name in names[1:]:
        print(f"{name}: p50 {results[name]['latency']['p50_ms'] / faiss_p50:.1f}x FaissIndex's")
    if noise is not None:
        print(f"other processes used {noise:.0%} of the CPUs while searching"
              + (" (busy machine: timings are noisy)" if noise > 0.05 else ""))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "settings": vars(args) | {"json": str(args.json)},
                                         "results": results, "background_share": noise}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
