"""The FAISS backend of the gallery index: exact while small, a PQ shortlist re-scored exactly once large.

Two modes, chosen on ``add`` (``kind="auto"``):

- **exact** (up to ``auto_threshold`` vectors): ``IndexIDMap2(IndexFlatIP)``,
  float32, true top-k. Its single-query latency grows linearly: on the 2-core
  reference machine p99 was 1.5 ms at 10k vectors, 5.0 ms at 25k and 23 ms
  at 100k, hence the default threshold of 20,000.
- **approx** (above it): every vector is scanned as a 32-byte 4-bit PQ code
  of its first dim/2 principal components, randomly rotated (FAISS
  ``PCAR{dim/2},IVF1,PQ{dim/8}x4fs``: one list, SIMD "fast scan"; FAISS ids
  are storage slots), split over ``shards`` (default 2) scanned in parallel by
  one search, the best ``shortlist`` (512) candidates are re-scored against
  int8 copies of the vectors (per-vector scale; score error ~5e-4 typical,
  ~2e-3 worst), and the top k of those are returned. Only the shortlist is
  approximate. ``nlist`` > 1 (IVF cells, ``nprobe`` scanned) and ``pq_m``
  (fewer sub-quantizers) exist for measuring; the defaults are the choice.

Measured with bench/search.py and bench/search_options.py on realistic data
(real LFW/own faces and augmentations of them through FaceEngine, synthetic
filler from a Gaussian fitted to their photo and augmentation covariances;
queries are other photos of enrolled people; 2-core machine shared with
other jobs: where they took 35-80% of its CPU, wall p99 is mostly waiting
for a core; CPU time per search is given beside it):

- 1M: p50 1.61 ms, p99 2.98 ms wall (CPU 2.6 / 4.2 ms; quiet machine,
  shortlist 512; busy, shortlist 256: 2.35 / 7.1 ms), recall@1 0.994
  against exact search (3 misses), 670 bytes per template (a float32
  matrix: 2,056).
- 10M, quiet machine, shortlist 512, two runs: p50 12.1 / 11.9 ms, p99
  17.9 / 17.3 ms wall (CPU p50 22.5 / 22.4 ms), recall@1 0.986 (7 misses,
  all exact top-1s outside the shortlist), 662 bytes per template, peak
  RSS of the run 8.1 GiB; exact search 82-92 ms per query.
- 10M (one build, shortlists interleaved; search_options.py): shortlist
  256 / 512 / 768: p50 19.7 / 20.3 / 21.1 ms, p99 33 / 37 / 43 ms wall
  (CPU p50 21.6 / 22.1 / 23.3 ms), recall@1 0.980 / 0.986 / 0.986, 662
  bytes per template. The scan grows linearly, ~2.2 ms of CPU per million
  vectors per query, split over the 2 shards: 10M needs two free cores
  for ~11 ms, so p99 ≤ 20 ms needs an idle 2-core machine at least; the
  misses are exact top-1s the 4-bit codes rank below the first ~800, which
  a longer shortlist does not reach. Shortlist 512 (the default since this
  run; 256 before) bought 0.006 at 10M for ~0.5 ms of CPU.

The codes' PCA (``pca_dim``, since the 10M runs above): face embeddings
vary along fewer directions than they have (the first 50 of 512 components
hold 36% of the variance), so 4-bit codes spent on half the components,
after PCA and a random rotation that spreads the variance over the
sub-quantizers, rank the exact top-1 higher. Rank of each query's exact
top-1 among the PQ candidates at 1M (1,000 queries; the first 51 at 1M
stand for a shortlist of 512 at 10M): within 51 for 0.990 of queries
without a transform, 0.996 with PCAR256, 0.995 PCAR192, 0.992 PCAR128,
0.990 PCAR320, 0.986 PCAR512 (rotation only); OPQ64_256 0.995, but it
trains in 70 s against 0.7 s. With PCAR256, search.py at 10M (1,000
queries, other jobs on 11% of the CPU): recall@1 0.994 (6 misses, 2 of
them ties within 1e-3), CPU p50 21.4 ms per search (no dearer: the
transform is one 512x256 product per query), 662 bytes per template; 1M:
0.997. On the 500 queries of the runs above, quiet machine: p50 12.8 /
p99 18.6 ms wall, recall@1 0.992 (4 misses against 7). Re-scoring still uses the whole vector.

Options measured at 1M on that data (one build each, searches interleaved):
IVF1024 cells reach recall@1 0.46 / 0.61 / 0.73 / 0.85 at nprobe 8 / 16 /
32 / 64 (p50 0.8-1.2 ms): a query's mate (another photo, cosine ~0.64) is
usually in another k-means cell, realistic data or not, so cells cannot cut
the scan without losing the mates. Fewer PQ sub-quantizers halve or
quarter the scan but lose the truth from the shortlist: 32 reached 0.966 /
0.978 / 0.982 / 0.988 with shortlists 256 / 512 / 1024 / 2048, 16 reached
0.83-0.91; a longer shortlist for 64 sub-quantizers (0.994 / 0.994 / 0.996
/ 0.998 for 256-2048) costs more re-scoring than it gains (CPU p50 5.3 ->
13 ms at 2048). HNSW (earlier measurement, 1M): 11-16 minutes to build on 2
cores at every rebuild, no removal in FAISS. The flat PQ scan stays.

Memory at 10M: the int8 copies are 512 of the ~670 bytes per template;
``reserve(n)`` sizes the slot arrays once (growing copies the int8 store:
at 10M, 8 GB beside 10 GB for a moment). Retraining (the gallery grew past
RETRAIN_FACTOR times the size the codebooks saw) and compaction rebuild
from the int8 copies in batches of _REBUILD_BATCH: a training sample and
one batch as float32, next to the old and the new int8 stores (they used to
decode every vector at once, with up to three float32 copies in flight:
at 10M, 20 GB each). Adding past the reserved size still grows by copying.

Removal is exact in both modes, so a removed id is never returned. Exact mode
uses FAISS ``remove_ids``. Approx mode does not: in faiss-cpu 1.15.1,
``remove_ids`` on fast-scan indexes (IVF and plain) corrupts the codes of
vectors added afterwards (they are no longer found). A removed slot is
instead a tombstone, skipped during the scan by an ``IDSelectorBitmap`` of
live slots (no measurable cost), and the structure is rebuilt once
tombstones pass COMPACT_FRACTION of the slots (about 7 s at 1M; amortised
over 200k removals). Re-adding an id replaces it (tombstone + new slot).
Vectors that went through approx mode carry the int8 rounding if the index
shrinks back to exact; the database keeps the originals.

Thread-safety: searches (and ``save``) run concurrently with each other;
``add``, ``remove`` and ``rebuild`` take an exclusive lock and wait for
searches in flight; FAISS releases the GIL, so concurrent searches use all
cores. OpenMP thread counts are per calling thread and are set for the
duration of each call only: searches use ``search_threads`` (1 by default:
one query on 2 OpenMP threads was slower, p50 1.5 vs 1.1 ms at 10k exact,
and no faster in approx mode, where the shards give the parallelism); bulk
adds (≥ BULK_ROWS) use all cores, small ones 1; PQ training always uses 1
(0.5 s instead of 21 s with 2: the OpenMP teams thrash on tiny k-means).

Files (``save`` / ``load_index``): a 4096-byte header (magic, format
version, JSON with dim, count, mode, settings and the size and sha256 of
each section), then the sections: the FAISS index (one per shard in approx
mode) and, in approx mode, the slot-to-id table, the int8 vectors and their
scales. Every byte is checked
before FAISS parses any; anything that does not validate raises
``IndexCorruptError`` and the caller rebuilds from the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np
import numpy.typing as npt

from facetrail.gallery.errors import DimensionMismatchError, IndexCorruptError
from facetrail.gallery.index import FloatArray, IdArray, SearchHits, as_entries, as_ids, as_vectors

log = logging.getLogger(__name__)

Kind = Literal["auto", "exact", "approx"]
Mode = Literal["exact", "approx"]

DEFAULT_AUTO_THRESHOLD = 20_000  # exact single-query p99 reaches 5 ms at ~25k vectors (2-core reference)
DEFAULT_SHORTLIST = 512  # PQ candidates re-scored exactly per query (256 per shard; see the module doc)
MIN_TRAIN_VECTORS = 1_000  # fewer cannot train 16-centroid PQ codebooks; approx waits for this many
TRAIN_SAMPLE = 32_768  # vectors used to train PQ codebooks (more changes nothing measurable)
TRAIN_PER_CELL = 64  # and at least this many per coarse cell when cells are used (nlist > 1)
RETRAIN_FACTOR = 8  # retrain the PQ codebooks when the gallery grows past 8x the size they saw
COMPACT_FRACTION = 0.2  # rebuild when removed-but-still-scanned slots pass this share of all slots
MIN_COMPACT = 1_000  # ... and this many
BULK_ROWS = 4_096  # adds of fewer rows run FAISS on one OpenMP thread (a team costs more than it gives)

MAGIC = b"FTRLIDX\x00"
FORMAT_VERSION = 1
HEADER_BYTES = 4096
_PREFIX = struct.Struct("<8sII")  # magic, format version, JSON length
_CHUNK = 8 << 20
_REBUILD_BATCH = 65_536  # vectors decoded at a time when rebuilding (a 128 MB float32 temporary at 512-d)
_RERANK_BATCH = 32  # queries re-ranked together (bounds the (m, shortlist, dim) float32 temporary)


def _quantise(vectors: FloatArray) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """int8 codes and per-vector scales: v ~ codes * scale, error ≤ scale / 2 per component."""
    peak = np.abs(vectors).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.rint(vectors / scales[:, None]).clip(-127, 127).astype(np.int8)
    return codes, scales


def _scan(index: faiss.Index, queries: FloatArray, k: int,
          params: faiss.SearchParametersIVF | None) -> IdArray:
    """Slots of the PQ top k in one shard (-1 where fewer), on one OpenMP thread."""
    with _omp_threads(1):
        slots: IdArray = index.search(queries, k, params=params)[1].astype(np.int64, copy=False)
    return slots


def _pq_subquantizers(dim: int, wanted: int = 0) -> int:
    """Number of 4-bit PQ sub-quantizers: at most ``wanted`` (0: one per 8 dimensions), dividing ``dim``."""
    target = max(1, min(wanted, dim) if wanted else dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


@contextlib.contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads in the calling thread, restoring its setting after."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class _ReadWriteLock:
    """Many readers or one writer. A waiting writer holds back new readers, so writes are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- the two modes


class _Exact:
    """True top-k over float32 vectors: IndexIDMap2(IndexFlatIP). Not locked; FaissIndex locks."""

    mode: Mode = "exact"

    def __init__(self, dim: int, index: faiss.IndexIDMap2 | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.ids: set[int] = set(self._id_array().tolist())

    def __len__(self) -> int:
        return len(self.ids)

    def _id_array(self) -> IdArray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        self.index.add_with_ids(vectors, ids)
        self.ids.update(ids.tolist())

    def remove(self, ids: IdArray) -> int:
        present = np.array([i for i in ids.tolist() if i in self.ids], np.int64)
        if present.size == 0:
            return 0
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(present)))
        self.ids.difference_update(present.tolist())
        return removed

    def search(self, queries: FloatArray, k: int) -> tuple[FloatArray, IdArray]:
        scores, ids = self.index.search(queries, k)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def export(self) -> tuple[IdArray, FloatArray]:
        """All ids and their float32 vectors, in storage order."""
        flat = faiss.downcast_index(self.index.index)
        vectors = np.asarray(flat.reconstruct_n(0, flat.ntotal), np.float32).reshape(-1, self.dim)
        return self._id_array(), vectors

    def nbytes(self) -> int:
        # float32 rows + id_map, IDMap2's reverse hash map (~48 B/entry) and the Python id set
        return len(self) * (4 * self.dim + 8 + 48) + sys.getsizeof(self.ids) + 32 * len(self)


class _Shortlist:
    """PQ fast-scan shortlist over storage slots, re-scored with int8 copies. Not locked."""

    mode: Mode = "approx"

    def __init__(self, dim: int, shortlist: int, shards: int = 1,
                 pool: ThreadPoolExecutor | None = None, nlist: int = 1, nprobe: int = 1, pq_m: int = 0,
                 pca_dim: int = 0) -> None:
        self.dim = dim
        self.shortlist = shortlist
        self.nlist = max(1, nlist)
        self.nprobe = min(max(1, nprobe), self.nlist)
        self.pca_dim = pca_dim  # dimensions the codes are made in (PCA + random rotation); 0: no transform
        # as many codes as the vectors would get untransformed (dim / 8 by default: the same bytes per template),
        # a number that divides the dimensions the codes are made in
        self.pq_m = _pq_subquantizers(pca_dim or dim, _pq_subquantizers(dim, pq_m))
        # slot s lives in shard s % len(shards); shards are scanned in parallel, one thread each
        self.shards: list[faiss.Index] = [self._empty() for _ in range(shards)]
        self.pool = pool if shards > 1 else None
        self.trained_size = 0
        self.slot_ids = np.full(0, -1, np.int64)  # slot -> id; -1: removed (a tombstone) or never used
        self.store = np.zeros((0, dim), np.int8)  # slot -> vector / scale, rounded
        self.scales = np.zeros(0, np.float32)  # slot -> max |component| / 127
        self.used = 0  # slots below this have been handed out; every one has a PQ code
        self.slot_of: dict[int, int] = {}
        self.live_bits: npt.NDArray[np.uint8] | None = None  # bitmap of live slots, while tombstones exist

    @property
    def dead(self) -> int:
        """Removed slots whose PQ codes are still scanned (skipped by a selector) until a rebuild."""
        return self.used - len(self.slot_of)

    def needs_compaction(self) -> bool:
        """True when tombstones exceed COMPACT_FRACTION of the slots (they cost scan time)."""
        return self.dead > max(MIN_COMPACT, COMPACT_FRACTION * self.used)

    def _refresh_selector(self) -> None:
        live = self.slot_ids[: self.used] >= 0
        self.live_bits = None if live.all() else np.packbits(live, bitorder="little")

    def __len__(self) -> int:
        return len(self.slot_of)

    def _empty(self) -> faiss.Index:
        pca = f"PCAR{self.pca_dim}," if self.pca_dim else ""
        return faiss.index_factory(self.dim, f"{pca}IVF{self.nlist},PQ{self.pq_m}x4fs", faiss.METRIC_INNER_PRODUCT)

    def train(self, vectors: FloatArray, seed: int = 0, size: int = 0) -> None:
        """Train the coarse cells and PQ codebooks on a sample of ``vectors`` (one OpenMP thread for PQ:
        see module doc; the cells' k-means uses the caller's threads). ``size``: the gallery size the
        vectors stand for, when they are already a sample of it."""
        self.trained_size = int(size or vectors.shape[0])
        sample = max(TRAIN_SAMPLE, TRAIN_PER_CELL * self.nlist) if self.nlist > 1 else TRAIN_SAMPLE
        if vectors.shape[0] > sample:
            pick = np.sort(np.random.default_rng(seed).choice(vectors.shape[0], sample, replace=False))
            vectors = vectors[pick]
        vectors = np.ascontiguousarray(vectors)
        space = vectors  # the sample in the codes' space
        if self.pca_dim:  # FAISS's own train would skip a trained transform; the cells need its output
            pca = faiss.downcast_VectorTransform(cast(Any, faiss.downcast_index(self.shards[0])).chain.at(0))
            pca.train(vectors)
            space = pca.apply(vectors)
        if self.nlist > 1:  # the cells on the caller's threads (big k-means); FAISS then skips them
            ivf = faiss.extract_index_ivf(self.shards[0])
            kmeans = faiss.Clustering(ivf.d, self.nlist, ivf.cp)  # spherical for inner product
            kmeans.seed = seed
            kmeans.train(space, ivf.quantizer)
        with _omp_threads(1):
            self.shards[0].train(vectors)
        trained = faiss.serialize_index(self.shards[0])  # same codebooks in every shard
        self.shards[1:] = [faiss.deserialize_index(trained) for _ in self.shards[1:]]

    def reserve(self, n: int) -> None:
        """Size the slot arrays for ``n`` slots at once (untouched pages cost no memory until used)."""
        if n > self.slot_ids.shape[0]:
            self._grow(n)

    def _grow(self, capacity: int) -> None:
        slot_ids = np.full(capacity, -1, np.int64)
        slot_ids[: self.slot_ids.shape[0]] = self.slot_ids
        store = np.zeros((capacity, self.dim), np.int8)
        store[: self.store.shape[0]] = self.store
        scales = np.ones(capacity, np.float32)
        scales[: self.scales.shape[0]] = self.scales
        self.slot_ids, self.store, self.scales = slot_ids, store, scales

    def _take_slots(self, n: int) -> npt.NDArray[np.int64]:
        """Fresh slots; removed ones are not reused before a rebuild (see the module doc)."""
        fresh = np.arange(self.used, self.used + n, dtype=np.int64)
        self.used += n
        if self.used > self.slot_ids.shape[0]:
            self._grow(max(self.used, int(self.slot_ids.shape[0] * 1.25), 1024))
        return fresh

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        slots = self._take_slots(ids.shape[0])
        n = len(self.shards)
        for start in range(0, slots.size, 65_536):  # bounded temporaries
            part, chunk = slots[start:start + 65_536], vectors[start:start + 65_536]
            for shard, index in enumerate(self.shards):
                mine = part % n == shard
                index.add_with_ids(np.ascontiguousarray(chunk[mine]), part[mine])
            self.store[part], self.scales[part] = _quantise(chunk)
        self.slot_ids[slots] = ids
        self.slot_of.update(zip(ids.tolist(), slots.tolist(), strict=True))
        if self.live_bits is not None:
            self._refresh_selector()

    def remove(self, ids: IdArray) -> int:
        """Tombstone the ids' slots: searches skip them from now on (a FAISS selector)."""
        slots = [s for s in (self.slot_of.pop(i, None) for i in ids.tolist()) if s is not None]
        if slots:
            self.slot_ids[np.array(slots, np.int64)] = -1
            self._refresh_selector()
        return len(slots)

    def search(self, queries: FloatArray, k: int) -> tuple[FloatArray, IdArray]:
        per_shard = max(k, -(-self.shortlist // len(self.shards)))
        params = None
        if self.live_bits is not None or self.nlist > 1:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.nprobe
            if self.live_bits is not None:
                params.sel = faiss.IDSelectorBitmap(self.used, faiss.swig_ptr(self.live_bits))
        if self.pool is None:
            slots = _scan(self.shards[0], queries, per_shard, params)
        else:  # the other shards on the pool's threads, the first on this one
            others = [self.pool.submit(_scan, index, queries, per_shard, params) for index in self.shards[1:]]
            slots = np.concatenate([_scan(self.shards[0], queries, per_shard, params)]
                                   + [future.result() for future in others], axis=1)
        wanted = slots.shape[1]
        scores = np.empty(slots.shape, np.float32)
        for start in range(0, slots.shape[0], _RERANK_BATCH):
            stop = start + _RERANK_BATCH
            safe = np.maximum(slots[start:stop], 0)
            rows = self.store[safe].astype(np.float32)  # (b, wanted, dim), decoded below by the scales
            scores[start:stop] = np.matmul(rows, queries[start:stop, :, None])[..., 0] * self.scales[safe]
        scores[slots < 0] = -np.inf
        if wanted > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, slots = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(slots, keep, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores, slots = np.take_along_axis(scores, order, axis=1), np.take_along_axis(slots, order, axis=1)
        return scores, np.where(slots >= 0, self.slot_ids[np.maximum(slots, 0)], -1)

    def export(self) -> tuple[IdArray, FloatArray]:
        """All ids and their vectors (decoded from int8, renormalised), in slot order."""
        live = self.live_slots()
        return self.slot_ids[live].copy(), self.decode(live)

    def live_slots(self) -> IdArray:
        """Slots holding a vector, ascending."""
        return np.flatnonzero(self.slot_ids[: self.used] >= 0).astype(np.int64)

    def decode(self, slots: IdArray) -> FloatArray:
        """The vectors of ``slots`` from their int8 copies, renormalised."""
        vectors = self.store[slots].astype(np.float32) * self.scales[slots, None]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def nbytes(self) -> int:
        code_bytes = (self.pq_m + 1) // 2 + 8  # 4-bit codes + the id FAISS keeps per vector
        # dict of Python ints: ~100 B per entry (two int objects, entry, hash slots)
        return (len(self) * code_bytes + self.slot_ids.nbytes + self.store.nbytes + self.scales.nbytes
                + sys.getsizeof(self.slot_of) + 64 * len(self) + 4 * self.dim * self.pca_dim * len(self.shards))


_Backend = _Exact | _Shortlist


@dataclass(frozen=True)
class IndexSettings:
    """How a FaissIndex picks and tunes its mode (stored in its file).

    ``kind``: "auto" (exact up to ``auto_threshold`` vectors, approx above),
    "exact" or "approx" (approx once MIN_TRAIN_VECTORS are present).
    ``shortlist``: PQ candidates re-scored per query (recall against cost;
    512 gave recall@1 0.997 at 1M and 0.994 at 10M on realistic data with the codes' PCA, 0.994 and 0.986
    without). ``shards``: approx mode splits the PQ
    codes into this many parts scanned in parallel by one search, one thread
    each (0 = min(2, CPU count); 2 halved p50 at 1M on 2 cores; takes effect
    when the approx structure is built). ``search_threads``: OpenMP threads
    of the calling thread per search. ``build_threads``: OpenMP threads for
    bulk encoding (0 = all CPUs). ``nlist``: coarse cells of the approx
    structure (1: every PQ code is scanned; more: IVF k-means cells, of which
    ``nprobe`` nearest are scanned per query). ``pq_m``: 4-bit PQ
    sub-quantizers per vector (0: dim / 8; half a byte each, scan cost
    grows with them). ``pca_dim``: the PQ codes are made of the vectors'
    first ``pca_dim`` principal components, randomly rotated (FAISS
    ``PCAR``; 0: half the dimensions, None: of the vectors as they are);
    re-scoring always uses the whole vector.
    """

    kind: Kind = "auto"
    auto_threshold: int = DEFAULT_AUTO_THRESHOLD
    shortlist: int = DEFAULT_SHORTLIST
    shards: int = 0
    search_threads: int = 1
    build_threads: int = 0
    nlist: int = 1
    nprobe: int = 1
    pq_m: int = 0
    pca_dim: int | None = 0

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "exact", "approx"):
            raise ValueError(f"kind must be auto, exact or approx, got {self.kind!r}")
        if self.auto_threshold < MIN_TRAIN_VECTORS:
            raise ValueError(f"auto_threshold must be ≥ {MIN_TRAIN_VECTORS}, got {self.auto_threshold}")
        if self.shortlist < 1 or self.search_threads < 1 or self.build_threads < 0 or self.shards < 0:
            raise ValueError("shortlist and search_threads must be ≥ 1, shards and build_threads ≥ 0")
        if self.nlist < 1 or self.nprobe < 1 or self.pq_m < 0:
            raise ValueError(f"nlist and nprobe must be ≥ 1 and pq_m ≥ 0, got {self.nlist}, {self.nprobe}, "
                             f"{self.pq_m}")
        if self.pca_dim is not None and self.pca_dim < 0:
            raise ValueError(f"pca_dim must be ≥ 0 or None, got {self.pca_dim}")

    def resolved_pca_dim(self, dim: int) -> int:
        """The dimensions the PQ codes of ``dim``-d vectors are made in; 0: no transform."""
        if self.pca_dim is None:
            return 0
        wanted = self.pca_dim or max(1, dim // 2)
        if wanted > dim:
            raise ValueError(f"pca_dim {wanted} is more than the vectors' {dim} dimensions")
        return wanted

    @property
    def resolved_shards(self) -> int:
        """``shards`` with 0 resolved to min(2, CPU count)."""
        return self.shards or min(2, os.cpu_count() or 1)


class FaissIndex:
    """Top-k cosine index over L2-normalised float32 vectors with int64 ids (see module doc).

    Searches run concurrently with each other; mutations are exclusive.
    """

    def __init__(self, dim: int, settings: IndexSettings | None = None, **overrides: Any) -> None:
        if dim < 1:
            raise ValueError(f"dim must be ≥ 1, got {dim}")
        base = settings or IndexSettings()
        self.settings = IndexSettings(**{**base.__dict__, **overrides}) if overrides else base
        self.settings.resolved_pca_dim(dim)  # a pca_dim past the vectors' dimensions fails here, not at a later add
        self._dim = dim
        self._lock = _ReadWriteLock()
        self._pool: ThreadPoolExecutor | None = None  # scans shards 2..n; made on first need
        self._pool_size = 0
        self._backend: _Backend = _Exact(dim)
        self._reserved = 0

    def reserve(self, n: int) -> None:
        """Expect up to ``n`` vectors: approx mode sizes its arrays once instead of growing them by copies.

        Growing copies the int8 store (at 10M, 8 GB next to 10 GB for a moment);
        reserved pages that are never written cost no memory on Linux.
        """
        with self._lock.write():
            self._reserved = max(0, int(n))
            if isinstance(self._backend, _Shortlist):
                self._backend.reserve(self._reserved)

    # ------------------------------------------------------------------ queries

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self._dim

    @property
    def mode(self) -> Mode:
        """"exact" or "approx": the structure in use now."""
        return self._backend.mode

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the index, in bytes."""
        with self._lock.read():
            return self._backend.nbytes()

    def __len__(self) -> int:
        return len(self._backend)

    def ids(self) -> IdArray:
        """Every id present, sorted ascending (int64)."""
        with self._lock.read():
            backend = self._backend
            present = backend.ids if isinstance(backend, _Exact) else backend.slot_of
            return np.sort(np.fromiter(present, np.int64, len(present)))

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, int | np.integer):
            return False
        backend = self._backend
        return int(id) in (backend.ids if isinstance(backend, _Exact) else backend.slot_of)

    def search(self, queries: npt.ArrayLike, k: int) -> SearchHits:
        """Top-k ids and cosine scores for each of the (m, dim) unit ``queries`` (a (dim,) vector is m=1).

        Missing results (fewer than k vectors) are id -1, score -inf.
        """
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = as_vectors(queries, self._dim, "queries")
        if q.shape[0] == 0:
            return SearchHits.empty(0, k)
        with self._lock.read(), _omp_threads(self.settings.search_threads):
            if len(self._backend) == 0:
                return SearchHits.empty(q.shape[0], k)
            scores, ids = self._backend.search(q, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return SearchHits(scores, ids)

    # ------------------------------------------------------------------ mutations

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add (n,) unique ids ≥ 0 with (n, dim) unit vectors; ids already present are replaced.

        May switch to approx mode or retrain its codebooks (seconds at 1M; searches wait).
        """
        id_array, x = as_entries(ids, vectors, self._dim)
        if id_array.size == 0:
            return
        threads = self._build_threads if id_array.size >= BULK_ROWS else 1
        with self._lock.write(), _omp_threads(threads):
            replaced = self._backend.remove(id_array)
            if replaced:
                log.debug("replacing %d existing vector(s)", replaced)
            backend = self._backend
            if isinstance(backend, _Exact) and self._wants_approx(len(backend) + id_array.size):
                old_ids, old_vectors = backend.export()
                if old_ids.size:
                    id_array, x = np.concatenate([old_ids, id_array]), np.concatenate([old_vectors, x])
                self._backend = _Exact(self._dim)  # release the old vectors before building
                self._backend = self._build(id_array, x)
                return
            backend.add(id_array, x)
            if isinstance(backend, _Shortlist) and (len(backend) > RETRAIN_FACTOR * backend.trained_size
                                                    or backend.needs_compaction()):
                self._rebuild_locked()

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present. Absent ids are ignored."""
        id_array = as_ids(ids)
        if id_array.size == 0:
            return 0
        with self._lock.write(), _omp_threads(1):
            removed = self._backend.remove(np.unique(id_array))
            backend = self._backend
            if isinstance(backend, _Shortlist) and (backend.needs_compaction() or (
                    self.settings.kind == "auto" and len(backend) < self.settings.auto_threshold // 2)):
                self._rebuild_locked()
            return removed

    def rebuild(self) -> None:
        """Re-decide the mode for the current size, retrain the PQ codebooks and drop tombstones.

        Exclusive; at 1M vectors this takes seconds. Vectors that went through
        approx mode keep their int8 rounding (~1e-3) when going back to exact.
        """
        with self._lock.write(), _omp_threads(self._build_threads):
            self._rebuild_locked()

    compact = rebuild

    @property
    def _build_threads(self) -> int:
        return self.settings.build_threads or os.cpu_count() or 1

    def _wants_approx(self, n: int) -> bool:
        if self.settings.kind == "exact" or n < MIN_TRAIN_VECTORS:
            return False
        return self.settings.kind == "approx" or n > self.settings.auto_threshold

    def _build(self, ids: IdArray, vectors: FloatArray) -> _Backend:
        """A fresh backend of the mode wanted for ``ids.size`` vectors, holding them."""
        started = time.perf_counter()
        backend: _Backend
        with _omp_threads(self._build_threads):
            backend = self._build_with(ids, vectors)
        log.info("gallery index built: %d vectors, %s mode, %.1f s", ids.size, backend.mode,
                 time.perf_counter() - started)
        return backend

    def _build_with(self, ids: IdArray, vectors: FloatArray) -> _Backend:
        backend: _Backend
        if self._wants_approx(ids.size):
            backend = self._new_shortlist()
            backend.train(vectors)
            backend.reserve(max(self._reserved, ids.size))
        else:
            backend = _Exact(self._dim)
        if ids.size:
            backend.add(ids, vectors)
        return backend

    def _new_shortlist(self) -> _Shortlist:
        shards, settings = self.settings.resolved_shards, self.settings
        return _Shortlist(self._dim, settings.shortlist, shards, self._shard_pool(shards), settings.nlist,
                          settings.nprobe, settings.pq_m, settings.resolved_pca_dim(self._dim))

    def _shard_pool(self, shards: int) -> ThreadPoolExecutor | None:
        if shards < 2:
            return None
        if self._pool is None or self._pool_size < shards - 1:
            self._pool = ThreadPoolExecutor(max_workers=shards - 1, thread_name_prefix="faiss-shard")
            self._pool_size = shards - 1
        return self._pool

    def _rebuild_locked(self) -> None:
        old = self._backend
        if isinstance(old, _Shortlist) and self._wants_approx(len(old)):
            self._backend = self._rebuild_shortlist(old)
            return
        ids, vectors = old.export()
        self._backend = _Exact(self._dim)  # let the old structure go before building the new one
        self._backend = self._build(ids, vectors)

    def _rebuild_shortlist(self, old: _Shortlist) -> _Shortlist:
        """Approx to approx (retrain, drop tombstones) streamed from the int8 copies: never every vector
        as float32 at once (20 GB at 10M), only a training sample and one add batch."""
        started = time.perf_counter()
        live = old.live_slots()
        new = self._new_shortlist()
        with _omp_threads(self._build_threads):
            sample_size = max(TRAIN_SAMPLE, TRAIN_PER_CELL * new.nlist)
            sample = live if live.size <= sample_size else np.sort(
                np.random.default_rng(0).choice(live, sample_size, replace=False))
            new.train(old.decode(sample), size=live.size)
            new.reserve(max(self._reserved, live.size))
            for start in range(0, live.size, _REBUILD_BATCH):
                part = live[start:start + _REBUILD_BATCH]
                new.add(old.slot_ids[part], old.decode(part))
        log.info("gallery index rebuilt from its int8 copies: %d vectors, %.1f s", live.size,
                 time.perf_counter() - started)
        return new

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temp file in the same folder, fsync, os.replace).

        Searches may run meanwhile; mutations wait.
        """
        path = Path(path)
        with self._lock.read():
            backend = self._backend
            sections: list[tuple[str, Callable[[_HashingWriter], object]]] = []
            header: dict[str, Any] = {
                "dim": self._dim, "count": len(backend), "mode": backend.mode,
                "kind": self.settings.kind, "auto_threshold": self.settings.auto_threshold,
                "shortlist": self.settings.shortlist, "faiss_version": faiss.__version__,
                "nlist": self.settings.nlist, "nprobe": self.settings.nprobe, "pca_dim": self.settings.pca_dim,
            }
            if isinstance(backend, _Exact):
                sections.append(("faiss", lambda out: _write_faiss(backend.index, out)))
            else:
                used = backend.used
                header.update(trained_size=backend.trained_size, pq_m=backend.pq_m, used=used,
                              shards=len(backend.shards), pca_out=backend.pca_dim)
                for number, shard in enumerate(backend.shards):
                    sections.append((f"faiss{number}", _faiss_section(shard)))
                sections.append(("slot_ids", lambda out: out.write(backend.slot_ids[:used].data)))
                sections.append(("store", lambda out: out.write(backend.store[:used].data)))
                sections.append(("scales", lambda out: out.write(backend.scales[:used].data)))
            _write_file(path, header, sections)


# --------------------------------------------------------------------------- file format


class _HashingWriter:
    """Writes to a file while counting bytes and hashing them."""

    def __init__(self, file: io.BufferedWriter) -> None:
        self.file = file
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        self.file.write(view)
        self.digest.update(view)
        self.size += view.nbytes
        return view.nbytes


def _faiss_section(index: faiss.Index) -> Callable[[_HashingWriter], None]:
    return lambda out: _write_faiss(index, out)


def _write_faiss(index: faiss.Index, out: _HashingWriter) -> None:
    writer = faiss.PyCallbackIOWriter(out.write)  # type: ignore[attr-defined]
    faiss.write_index(index, writer)


def _write_file(path: Path, header: dict[str, Any],
                sections: list[tuple[str, Callable[[_HashingWriter], object]]]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(b"\x00" * HEADER_BYTES)
            table = []
            for name, write in sections:
                out = _HashingWriter(file)
                write(out)
                table.append({"name": name, "nbytes": out.size, "sha256": out.digest.hexdigest()})
            blob = json.dumps({**header, "sections": table}, sort_keys=True).encode()
            if _PREFIX.size + len(blob) > HEADER_BYTES:
                raise ValueError(f"index header of {len(blob)} bytes does not fit in {HEADER_BYTES}")
            file.seek(0)
            file.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows it
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _read_header(path: Path, file: io.BufferedReader, dim: int) -> dict[str, Any]:
    raw = file.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise IndexCorruptError(path, f"file is {len(raw)} bytes, under the {HEADER_BYTES}-byte header")
    magic, version, length = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise IndexCorruptError(path, "not a facetrail index file (bad magic)")
    if version != FORMAT_VERSION:
        raise IndexCorruptError(path, f"format version {version}; this facetrail reads {FORMAT_VERSION}")
    if length > HEADER_BYTES - _PREFIX.size:
        raise IndexCorruptError(path, "header length out of range")
    try:
        header = json.loads(raw[_PREFIX.size:_PREFIX.size + length])
        sections = header["sections"]
        file_dim, count, mode = int(header["dim"]), int(header["count"]), header["mode"]
        sizes = [int(s["nbytes"]) for s in sections]
        if not all(isinstance(s["name"], str) and isinstance(s["sha256"], str) for s in sections):
            raise TypeError("section names and checksums must be strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(path, f"unreadable header ({exc})") from None
    if file_dim != dim:
        raise IndexCorruptError(path, f"index holds {file_dim}-d vectors, {dim}-d expected")
    if mode not in ("exact", "approx") or count < 0:
        raise IndexCorruptError(path, f"bad mode {mode!r} or count {count}")
    actual = os.fstat(file.fileno()).st_size
    expected = HEADER_BYTES + sum(sizes)
    if actual != expected:
        raise IndexCorruptError(path, f"file is {actual} bytes, header says {expected} (truncated?)")
    for section in sections:  # check every byte before FAISS parses any
        digest = hashlib.sha256()
        remaining = int(section["nbytes"])
        while remaining:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise IndexCorruptError(path, f"section {section['name']} ends early")
            digest.update(chunk)
            remaining -= len(chunk)
        if digest.hexdigest() != section["sha256"]:
            raise IndexCorruptError(path, f"checksum mismatch in section {section['name']}")
    return cast(dict[str, Any], header)


def _read_faiss(path: Path, file: io.BufferedReader, nbytes: int) -> faiss.Index:
    remaining = nbytes

    def read(n: int) -> bytes:
        nonlocal remaining
        data = file.read(min(n, remaining))
        remaining -= len(data)
        return data

    reader = faiss.PyCallbackIOReader(read)  # type: ignore[attr-defined]
    try:
        index = faiss.read_index(reader)
    except RuntimeError as exc:
        raise IndexCorruptError(path, f"FAISS cannot read the index ({str(exc).splitlines()[0]})") from None
    if remaining:
        raise IndexCorruptError(path, f"{remaining} bytes of the FAISS section were not consumed")
    return index


def _read_array(path: Path, file: io.BufferedReader, nbytes: int, dtype: type[np.generic],
                shape: tuple[int, ...]) -> npt.NDArray[Any]:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes != expected:
        raise IndexCorruptError(path, f"array section of {nbytes} bytes, {expected} expected for {shape}")
    array = np.empty(shape, dtype)
    if file.readinto(array.data.cast("B")) != nbytes:
        raise IndexCorruptError(path, "array section ends early")
    return array


def load_index(path: str | Path, dim: int, **overrides: Any) -> FaissIndex:
    """Read an index written by ``FaissIndex.save``, checking every byte first.

    ``overrides`` replace stored IndexSettings fields (say ``search_threads``).
    Raises IndexCorruptError for a missing, truncated, altered, foreign or
    wrong-dimension file; the caller then rebuilds from the database.
    """
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, after all sections are read
    except FileNotFoundError:
        raise IndexCorruptError(path, "no index file") from None
    except OSError as exc:
        raise IndexCorruptError(path, f"cannot open ({exc.strerror})") from None
    with file:
        header = _read_header(path, file, dim)
        try:
            settings = IndexSettings(kind=header["kind"], auto_threshold=int(header["auto_threshold"]),
                                     shortlist=int(header["shortlist"]), nlist=int(header.get("nlist", 1)),
                                     nprobe=int(header.get("nprobe", 1)), pq_m=int(header.get("pq_m", 0)),
                                     pca_dim=_optional_int(header.get("pca_dim", 0)))
            settings = IndexSettings(**{**settings.__dict__, **overrides})
            count = int(header["count"])
            used = int(header.get("used", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(path, f"bad settings in header ({exc})") from None
        arrays: dict[str, tuple[type[np.generic], tuple[int, ...]]] = {
            "slot_ids": (np.int64, (used,)), "store": (np.int8, (used, dim)), "scales": (np.float32, (used,))}
        parts: dict[str, Any] = {}
        file.seek(HEADER_BYTES)
        for section in header["sections"]:  # in file order
            name, nbytes = section["name"], int(section["nbytes"])
            if name.startswith("faiss"):
                parts[name] = _read_faiss(path, file, nbytes)
            elif name in arrays:
                parts[name] = _read_array(path, file, nbytes, *arrays[name])
            else:
                raise IndexCorruptError(path, f"unknown section {name!r}")
    try:
        index = FaissIndex(dim, settings)
    except ValueError as exc:  # settings that do not fit these vectors (a pca_dim past their dimensions)
        raise IndexCorruptError(path, f"bad settings in header ({exc})") from None
    if header["mode"] == "exact":
        if "faiss" not in parts:
            raise IndexCorruptError(path, "no FAISS section")
        index._backend = _exact_from(path, parts["faiss"], dim, count)
    else:
        index._backend = _shortlist_from(path, parts, header, index, dim, count)
    return index


def _exact_from(path: Path, raw: faiss.Index, dim: int, count: int) -> _Exact:
    if not isinstance(raw, faiss.IndexIDMap2) or not isinstance(faiss.downcast_index(raw.index),
                                                                faiss.IndexFlatIP):
        raise IndexCorruptError(path, f"exact mode needs IndexIDMap2(IndexFlatIP), got {type(raw).__name__}")
    _check_shape(path, raw, dim, count)
    backend = _Exact(dim, raw)
    if len(backend) != count:
        raise IndexCorruptError(path, "duplicate ids in the index")
    return backend


def _shortlist_from(path: Path, parts: dict[str, Any], header: dict[str, Any], index: FaissIndex,
                    dim: int, count: int) -> _Shortlist:
    try:
        n_shards, trained_size, pq_m = int(header["shards"]), int(header["trained_size"]), int(header["pq_m"])
        pca_out = int(header.get("pca_out", 0))  # files before the transform have none
        shards = [parts[f"faiss{number}"] for number in range(n_shards)]
        slot_ids, store, scales = parts["slot_ids"], parts["store"], parts["scales"]
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexCorruptError(path, f"missing or bad {exc} in an approx-mode file") from None
    if n_shards < 1:
        raise IndexCorruptError(path, f"bad shard count {n_shards}")
    for shard in shards:
        ivf = faiss.try_extract_index_ivf(shard)
        if (ivf is None or ivf.nlist != index.settings.nlist or shard.metric_type != faiss.METRIC_INNER_PRODUCT
                or not isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQFastScan)):
            raise IndexCorruptError(path, f"approx mode needs IVF{index.settings.nlist} PQ fast scan, "
                                          f"got {type(shard).__name__}")
        if shard.d != dim:
            raise IndexCorruptError(path, f"FAISS index is {shard.d}-d, {dim}-d expected")
        if (ivf.d if pca_out else 0) != pca_out or isinstance(faiss.downcast_index(shard),
                                                               faiss.IndexPreTransform) != bool(pca_out):
            raise IndexCorruptError(path, f"PQ codes in {ivf.d} dimensions, the header says {pca_out or dim}")
        stored_m = int(cast(Any, faiss.downcast_index(ivf)).pq.M)
        if stored_m != pq_m:
            raise IndexCorruptError(path, f"PQ of {stored_m} sub-quantizers, the header says {pq_m}")
    if sum(shard.ntotal for shard in shards) != slot_ids.size:
        raise IndexCorruptError(path, f"the FAISS shards hold {sum(s.ntotal for s in shards)} codes, "
                                      f"the slot table {slot_ids.size}")
    backend = _Shortlist(dim, index.settings.shortlist, n_shards, index._shard_pool(n_shards),
                         index.settings.nlist, index.settings.nprobe, pq_m, pca_out)
    if backend.pq_m != pq_m:
        raise IndexCorruptError(path, "PQ layout differs from this facetrail's")
    live = np.flatnonzero(slot_ids >= 0)
    if live.size != count or np.unique(slot_ids[live]).size != count:
        raise IndexCorruptError(path, "slot table does not match the count (or repeats ids)")
    if not np.isfinite(scales).all() or (scales <= 0).any():
        raise IndexCorruptError(path, "bad scales in the vector store")
    backend.shards = shards
    backend.slot_ids, backend.store, backend.scales, backend.used = slot_ids, store, scales, slot_ids.size
    backend.trained_size = trained_size
    backend.slot_of = dict(zip(slot_ids[live].tolist(), live.tolist(), strict=True))
    backend._refresh_selector()
    return backend


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _check_shape(path: Path, raw: faiss.Index, dim: int, count: int) -> None:
    if raw.d != dim:
        raise IndexCorruptError(path, f"FAISS index is {raw.d}-d, {dim}-d expected")
    if raw.ntotal != count:
        raise IndexCorruptError(path, f"FAISS index holds {raw.ntotal} vectors, header says {count}")


__all__ = ["DEFAULT_AUTO_THRESHOLD", "DEFAULT_SHORTLIST", "DimensionMismatchError", "FaissIndex",
           "IndexCorruptError", "IndexSettings", "Kind", "Mode", "load_index"]
