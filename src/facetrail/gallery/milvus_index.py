"""The Milvus backend of the gallery index: a collection per model, kept in step with the database.

``MilvusIndex`` implements the ``Index`` protocol on one Milvus collection
(int64 primary key ``id``, float vector ``vector``, metric IP on unit
vectors, so the distance is the cosine). Two deployments, one client
(pymilvus ``MilvusClient``):

- **Milvus Lite** (``uri`` a path ending in ``.db``, a folder): an embedded
  engine in this process (pymilvus starts it on a 127.0.0.1 port). One
  process at a time holds the folder's lock; a second one gets a
  ``GalleryError``. For tests and small sites: every Lite search walks all
  rows in Python (deduplication and tombstones) before the index is asked,
  so its cost grows with the collection whatever the index type; at 100k x
  512 (bench/milvus_index.py, 2 busy cores) p50 was 108 ms with HNSW and
  266 ms with FLAT, where FaissIndex took 1.2 ms. HNSW took 262 s to build
  there (FLAT 57 s).
- **A Milvus server** (``uri`` ``http(s)://host:19530``, ``token`` from a
  ``{FACETRAIL_*}`` secret): shared by every facetrail process.

Index type (``index_type: auto``, decided when the collection is opened,
from its size): FLAT (exact) up to ``exact_max`` vectors, as FaissIndex's
exact mode; HNSW up to ``hnsw_max``; DISKANN above (vectors on SSD: a few
million 512-d HNSW vectors already need tens of GB of RAM). Milvus Lite
3.2 builds only FLAT, HNSW, HNSW_SQ, IVF_FLAT and IVF_SQ8: it accepts an
IVF_PQ or DISKANN spec but fails to build it in the background and searches
by brute force, so both are refused on Lite and ``auto`` stops at HNSW there.
A size that calls for another type than the collection has re-indexes it on
open (release, drop, create, load; searches wait).

Consistency: collections are created with ``Strong`` consistency and every
search and query asks for it, so a vector removed (or replaced) is never
returned afterwards, in this process or another.

Deletion on disk: a Milvus delete is logical (a tombstone) until compaction
rewrites the segment. ``remove`` deletes, then flushes (the tombstone is
durable) and asks for a compaction. On a server the compaction runs in the
background and drops the rows; the old segment files go at the server's
garbage collection (``gc.dropTolerance``, a day by default). Milvus Lite
3.2 ignores the request (its compaction is size-tiered, after flushes), so
a removed vector can stay in a Lite data file until that file is merged.
Unlike the FAISS backend (memory only), Milvus keeps every vector at rest,
unencrypted by facetrail.

Thread-safety: searches run concurrently (gRPC); ``add`` and ``remove`` are
serialised by a lock so ``remove``'s count is exact within the process. The
client is imported lazily: the FAISS default needs no pymilvus.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.gallery.errors import DimensionMismatchError, GalleryError, SearchIndexError
from facetrail.gallery.index import IdArray, SearchHits, as_entries, as_ids, as_vectors

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger(__name__)

IndexType = Literal["auto", "FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "DISKANN"]
LITE_TYPES = frozenset({"FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8"})  # what Milvus Lite 3.2 builds
MAX_TOPK = 16_384  # Milvus refuses a larger limit (and offset + limit in a query)
_ROWS = 2_000  # rows per upsert (a 512-d batch is 4 MB, well under gRPC's 64 MB)
_QUERIES = 1_024  # queries per search call
_IDS = 1_000  # ids per "id in [...]" expression
_NAME = re.compile(r"[^A-Za-z0-9_]")

_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}  # Milvus Lite folder -> open MilvusIndex count (its engine stops at zero)


P = ParamSpec("P")
R = TypeVar("R")


def _one_line_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Milvus's own failures (server down, timeout, refused request) become a SearchIndexError in one line."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Exception as error:
            if not type(error).__module__.startswith(("pymilvus", "grpc")):
                raise
            where = getattr(args[0], "name", "Milvus") if args else "Milvus"
            raise SearchIndexError(f"Milvus collection {where}: {_reason(error)}") from error

    return wrapper


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MilvusSettings:
    """Where the Milvus collections live and how they are indexed."""

    uri: str = Field(default="milvus.db", min_length=1, title="URI",
                     description="A path ending in .db: Milvus Lite, embedded in this process (relative to data_dir; "
                                 "one process at a time). http(s)://host:19530: a Milvus server.")
    token: str = Field(default="", repr=False, title="Token",
                       description="The server's token (user:password or an API key); give it as a secret, e.g. "
                                   "\"{FACETRAIL_MILVUS_TOKEN}\".")
    collection_prefix: str = Field(default="facetrail", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64,
                                   title="Collection prefix",
                                   description="Start of every collection's name (several sites can share a server).")
    index_type: IndexType = Field(default="auto", title="Index type",
                                  description="auto: FLAT (exact) up to exact_max vectors, HNSW up to hnsw_max, "
                                              "DISKANN above (HNSW on Milvus Lite, which has no DISKANN or IVF_PQ); "
                                              "decided when the collection is opened.")
    exact_max: int = Field(default=20_000, ge=0, title="Exact up to",
                           description="auto: the largest collection searched exactly (FLAT).")
    hnsw_max: int = Field(default=2_000_000, ge=0, title="HNSW up to",
                          description="auto: the largest collection in HNSW (its graph lives in RAM).")
    hnsw_m: int = Field(default=16, ge=4, le=64, title="HNSW M", description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(default=200, ge=8, le=1024, title="HNSW efConstruction",
                                      description="HNSW build breadth.")
    hnsw_ef: int = Field(default=128, ge=1, le=MAX_TOPK, title="HNSW ef",
                         description="HNSW search breadth (at least k).")
    ivf_nlist: int = Field(default=1024, ge=1, le=65_536, title="IVF lists", description="IVF_* cluster count.")
    ivf_nprobe: int = Field(default=32, ge=1, le=65_536, title="IVF probes", description="IVF_* clusters searched.")
    diskann_search_list: int = Field(default=100, ge=1, le=MAX_TOPK, title="DiskANN search list",
                                     description="DISKANN candidate list (at least k).")
    timeout_s: float = Field(default=30, gt=0, le=3600, title="Timeout", description="Seconds per Milvus call.")

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if value.startswith(("http://", "https://")):
            return value
        if "://" in value or not value.endswith(".db"):
            raise ValueError("give a Milvus Lite path ending in .db, or a server's http(s)://host:port URL")
        return value

    @property
    def is_lite(self) -> bool:
        """Whether ``uri`` names a Milvus Lite folder rather than a server."""
        return not self.uri.startswith(("http://", "https://"))

    def resolved(self, data_dir: Path) -> MilvusSettings:
        """These settings with a relative Milvus Lite path taken from ``data_dir``."""
        if not self.is_lite or Path(self.uri).is_absolute():
            return self
        return replace(self, uri=str((data_dir / self.uri).resolve()))


def collection_name(prefix: str, what: str, model_id: str) -> str:
    """A valid collection name for ``what`` (templates, sightings) of ``model_id``: one per model."""
    return f"{prefix}_{what}_{_NAME.sub('_', model_id)}"[:255]


class MilvusIndex:
    """Top-k cosine index on a Milvus collection (see module doc)."""

    def __init__(self, dim: int, settings: MilvusSettings, collection: str = "gallery") -> None:
        if dim < 1:
            raise ValueError(f"dim must be ≥ 1, got {dim}")
        if settings.is_lite and settings.index_type not in LITE_TYPES | {"auto"}:
            raise GalleryError(f"Milvus Lite cannot build {settings.index_type} indexes (it builds "
                               f"{', '.join(sorted(LITE_TYPES))}); use a Milvus server or index_type: auto")
        self._dim = dim
        self.settings = settings
        self.name = collection if collection.startswith(f"{settings.collection_prefix}_") else \
            f"{settings.collection_prefix}_{collection}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", self.name):
            raise ValueError(f"invalid collection name {self.name!r}: letters, digits and _ only")
        self._write = threading.Lock()
        self._lite_path: str | None = None
        self._client = self._connect()
        try:
            self._open_collection()
            self.index_type: str = self._ensure_index()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connection

    def _connect(self) -> MilvusClient:
        try:
            from pymilvus import MilvusClient
        except ImportError:  # pragma: no cover - the dev and cluster extras install it
            raise GalleryError("the Milvus index backend needs pymilvus (pip install 'facetrail[cluster]')") from None
        if self.settings.is_lite:
            path = Path(self.settings.uri).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lite_path = str(path)
            with _lite_lock:
                _lite_users[self._lite_path] = _lite_users.get(self._lite_path, 0) + 1
        try:
            return MilvusClient(uri=self.settings.uri, token=self.settings.token, timeout=self.settings.timeout_s)
        except Exception as error:  # pymilvus raises MilvusException subclasses, grpc its own
            self._release_lite()
            where = self.settings.uri
            hint = (" (is another facetrail process using this Milvus Lite folder? Lite allows one; "
                    "use a Milvus server for several)") if self.settings.is_lite else ""
            raise GalleryError(f"cannot open Milvus at {where}: {_reason(error)}{hint}") from None

    def close(self) -> None:
        """Release the client (and, with the last user in this process, the Milvus Lite engine)."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
            self._client = None
        self._release_lite()

    def _release_lite(self) -> None:
        if self._lite_path is None:
            return
        path, self._lite_path = self._lite_path, None
        with _lite_lock:
            left = _lite_users.get(path, 1) - 1
            if left > 0:
                _lite_users[path] = left
                return
            _lite_users.pop(path, None)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)

    @_one_line_errors
    def _open_collection(self) -> None:
        from pymilvus import DataType

        client = self._client
        if client.has_collection(self.name):
            fields = {f["name"]: f for f in client.describe_collection(self.name)["fields"]}
            if "id" not in fields or "vector" not in fields:
                raise SearchIndexError(f"Milvus collection {self.name} is not a facetrail index (no id/vector fields)")
            held = int(fields["vector"]["params"]["dim"])
            if held != self._dim:
                raise DimensionMismatchError(f"Milvus collection {self.name} holds {held}-d vectors, {self._dim}-d "
                                             "expected; another recogniser's collection has another name")
            client.load_collection(self.name)
            return
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        params = client.prepare_index_params()
        kind = self.wanted_type(0)
        params.add_index(field_name="vector", index_type=kind, metric_type="IP", params=self._build_params(kind))
        client.create_collection(self.name, schema=schema, index_params=params, consistency_level="Strong")
        log.info("Milvus collection %s created (%d-d, %s)", self.name, self._dim, kind)

    def wanted_type(self, count: int) -> str:
        """The index type for a collection of ``count`` vectors under these settings."""
        chosen = self.settings.index_type
        if chosen != "auto":
            return chosen
        if count <= self.settings.exact_max:
            return "FLAT"
        if count <= self.settings.hnsw_max or self.settings.is_lite:
            return "HNSW"
        return "DISKANN"

    def _build_params(self, kind: str) -> dict[str, Any]:
        s = self.settings
        if kind.startswith("HNSW"):
            return {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
        if kind == "IVF_PQ":
            return {"nlist": s.ivf_nlist, "m": _pq_m(self._dim), "nbits": 8}
        if kind.startswith("IVF"):
            return {"nlist": s.ivf_nlist}
        return {}

    def _search_params(self, k: int) -> dict[str, Any]:
        kind, s = self.index_type, self.settings
        if kind.startswith("HNSW"):
            return {"ef": max(s.hnsw_ef, k)}
        if kind.startswith("IVF"):
            return {"nprobe": min(s.ivf_nprobe, s.ivf_nlist)}
        if kind == "DISKANN":
            return {"search_list": max(s.diskann_search_list, k)}
        return {}

    @_one_line_errors
    def _ensure_index(self) -> str:
        """Re-index when the collection's size calls for another type than it has; returns the type in use."""
        described = self._client.describe_index(self.name, "vector") or {}
        current = str(described.get("index_type", ""))
        wanted = self.wanted_type(len(self))
        if current == wanted:
            return current
        log.info("Milvus collection %s: re-indexing %s -> %s for %d vectors", self.name, current or "none",
                 wanted, len(self))
        params = self._client.prepare_index_params()
        params.add_index(field_name="vector", index_type=wanted, metric_type="IP", params=self._build_params(wanted))
        self._client.release_collection(self.name)
        if current:
            self._client.drop_index(self.name, "vector")
        self._client.create_index(self.name, params)
        self._client.load_collection(self.name)
        return wanted

    # ------------------------------------------------------------------ queries

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self._dim

    @_one_line_errors
    def __len__(self) -> int:
        return self._count(self.name)

    def _count(self, name: str) -> int:
        rows = self._client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    @_one_line_errors
    def ids(self) -> IdArray:
        """Every id present, sorted ascending (int64): one query up to 16,384, else read in batches."""
        return self._ids_of(self.name)

    def _ids_of(self, name: str) -> IdArray:
        if self._count(name) < MAX_TOPK:
            rows = self._client.query(name, filter="id >= 0", output_fields=["id"], limit=MAX_TOPK,
                                      consistency_level="Strong")
            return np.sort(np.fromiter((int(row["id"]) for row in rows), np.int64))
        return np.sort(np.fromiter(self._iterate_ids(name), np.int64))

    def _iterate_ids(self, name: str) -> Iterator[int]:
        # Milvus Lite lacks the timestamp call the iterator starts with: it logs a warning and uses the client's.
        iterator = self._client.query_iterator(name, batch_size=10_000, filter="", output_fields=["id"],
                                               consistency_level="Strong")
        try:
            while batch := iterator.next():
                yield from (int(row["id"]) for row in batch)
        finally:
            iterator.close()

    @_one_line_errors
    def __contains__(self, id: object) -> bool:
        if not isinstance(id, int | np.integer) or int(id) < 0:
            return False
        return bool(self._present(np.asarray([int(id)], np.int64)).size)

    def _present(self, ids: IdArray) -> IdArray:
        """Which of ``ids`` the collection holds."""
        found: list[int] = []
        for start in range(0, ids.size, _IDS):
            chunk = [int(i) for i in ids[start:start + _IDS]]
            rows = self._client.query(self.name, filter=f"id in {chunk}", output_fields=["id"],
                                      consistency_level="Strong")
            found.extend(int(row["id"]) for row in rows)
        return np.asarray(found, np.int64)

    @_one_line_errors
    def search(self, queries: npt.ArrayLike, k: int) -> SearchHits:
        """Top-k ids and cosine scores for each of the (m, dim) unit ``queries``; -1 / -inf where fewer.

        Only ids and scores come back (never the stored vectors); k above 16,384 (Milvus's limit) is padded.
        """
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = as_vectors(queries, self._dim, "queries")
        out = SearchHits.empty(q.shape[0], k)
        scores, ids = out.scores.copy(), out.ids.copy()
        limit = min(k, MAX_TOPK)
        params = {"metric_type": "IP", "params": self._search_params(limit)}
        for start in range(0, q.shape[0], _QUERIES):
            batch = q[start:start + _QUERIES]
            # output_fields=["id"]: with an empty list Milvus Lite returns every stored vector with each hit.
            results = self._client.search(self.name, data=list(batch), limit=limit, output_fields=["id"],
                                          search_params=params, anns_field="vector", consistency_level="Strong")
            for row, hits in enumerate(results, start):
                for column, hit in enumerate(hits):
                    ids[row, column] = int(hit["id"])
                    scores[row, column] = float(hit["distance"])
        return SearchHits(scores, ids)

    # ------------------------------------------------------------------ mutations

    @_one_line_errors
    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add (n,) unique ids ≥ 0 with (n, dim) unit vectors; ids already present are replaced (upsert)."""
        id_array, x = as_entries(ids, vectors, self._dim)
        with self._write:
            for start in range(0, id_array.size, _ROWS):
                rows = [{"id": int(i), "vector": v} for i, v in
                        zip(id_array[start:start + _ROWS], x[start:start + _ROWS], strict=True)]
                self._client.upsert(self.name, rows)

    @_one_line_errors
    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids``; returns how many were present. Absent ids are ignored.

        Deletes, flushes and asks for a compaction (see the module doc for what stays on disk until then).
        """
        id_array = np.unique(as_ids(ids))
        if id_array.size == 0:
            return 0
        with self._write:
            present = self._present(id_array)
            self._delete(self.name, present)
        return int(present.size)

    def _delete(self, name: str, ids: IdArray) -> None:
        """Delete ids known to be present, flush (the tombstones are durable) and ask for a compaction."""
        for start in range(0, ids.size, _IDS):
            self._client.delete(name, ids=[int(i) for i in ids[start:start + _IDS]])
        if ids.size:
            self._client.flush(name)
            self._client.compact(name)

    @_one_line_errors
    def prune_siblings(self, what: str, keep: IdArray) -> int:
        """From the other models' collections of ``what`` (templates, sightings), remove every id not in ``keep``.

        A collection of a model no longer in use is never opened, so without this a person forgotten since the
        model changed would stay in it. Returns how many were removed.
        """
        prefix = f"{self.settings.collection_prefix}_{what}_"
        removed = 0
        with self._write:
            for name in self._client.list_collections():
                if not name.startswith(prefix) or name == self.name:
                    continue
                self._client.load_collection(name)
                gone = np.setdiff1d(self._ids_of(name), keep)
                self._delete(name, gone)
                removed += int(gone.size)
                if gone.size:
                    log.info("removed %d deleted vector(s) from %s (another model's collection)", gone.size, name)
        return removed

    @_one_line_errors
    def save(self, path: Path | None = None) -> None:
        """Flush to Milvus's storage; ``path`` is ignored (Milvus persists the collection itself)."""
        self._client.flush(self.name)

    flush = save

    @_one_line_errors
    def drop(self) -> None:
        """Delete the whole collection (its files go at the server's garbage collection)."""
        with self._write:
            self._client.drop_collection(self.name)


def _pq_m(dim: int) -> int:
    """PQ sub-quantizers: about one per 8 dimensions, dividing ``dim``."""
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(message).splitlines()[0]
