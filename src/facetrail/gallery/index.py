"""The vector index of the gallery: what every backend offers, and its search result.

An index maps int64 ids (the database's face ids) to L2-normalised float32
embeddings and answers top-k cosine similarity queries. It holds no other
state: the database is the source of truth, and an index can always be
rebuilt from it. The gallery holds an ``Index``; ``FaissIndex``
(``facetrail.gallery.faiss_index``) is one implementation, and the input
checks below are shared by any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from facetrail.gallery.errors import DimensionMismatchError

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

NORM_TOLERANCE = 1e-3  # how far from 1 a vector's L2 norm may be and still count as normalised


@dataclass(frozen=True, eq=False)
class SearchHits:
    """Top-k results of m queries, best first.

    ``scores`` (m, k) float32 cosine similarities in [-1, 1] (approximate
    backends may be off by up to ~2e-3); ``ids`` (m, k) int64. When fewer than k
    vectors are indexed, the missing slots hold id -1 and score -inf.
    """

    scores: FloatArray
    ids: IdArray

    def __post_init__(self) -> None:
        if self.scores.ndim != 2 or self.scores.shape != self.ids.shape:
            raise ValueError(f"scores and ids must both be (m, k), got {self.scores.shape}, {self.ids.shape}")
        if self.scores.dtype != np.float32 or self.ids.dtype != np.int64:
            raise ValueError(f"scores must be float32, ids int64; got {self.scores.dtype}, {self.ids.dtype}")
        self.scores.setflags(write=False)
        self.ids.setflags(write=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        """Results per query (including padding)."""
        return int(self.ids.shape[1])

    @classmethod
    def empty(cls, m: int, k: int) -> SearchHits:
        """m queries with no results: all ids -1, all scores -inf."""
        return cls(np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64))


@runtime_checkable
class Index(Protocol):
    """A top-k cosine index over L2-normalised vectors with int64 ids.

    Implementations document their thread-safety; ``FaissIndex`` lets searches
    run concurrently with each other while mutations run alone.
    """

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        """Add (n,) unique ids with their (n, dim) unit vectors; an id already present is replaced."""
        ...

    def remove(self, ids: IdArray) -> int:
        """Remove ids; returns how many were present (absent ids are ignored)."""
        ...

    def search(self, queries: FloatArray, k: int) -> SearchHits:
        """Top-k by cosine (inner product) for each of the (m, dim) unit queries."""
        ...

    def save(self, path: Path) -> None:
        """Write the index to ``path`` atomically (temp file, then os.replace)."""
        ...

    def ids(self) -> IdArray:
        """Every id present, sorted ascending."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, id: object) -> bool: ...


def as_vectors(vectors: npt.ArrayLike, dim: int, what: str = "vectors") -> FloatArray:
    """Validate (n, dim) unit vectors (a single (dim,) vector counts as n=1).

    Returns a C-contiguous float32 array. Raises DimensionMismatchError for the
    wrong length and ValueError for a wrong shape, non-finite values or a norm
    more than NORM_TOLERANCE away from 1.
    """
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what} must be (n, {dim}), got shape {array.shape}")
    if array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} have {array.shape[1]} dimensions but the index holds {dim}-d vectors; "
            "were they made by another recogniser?")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real numbers, got dtype {array.dtype}")
    out = np.ascontiguousarray(array, dtype=np.float32)
    if out.shape[0] == 0:
        return out
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out).all(axis=1)).sum())
        raise ValueError(f"{what}: {bad} row(s) hold NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        raise ValueError(f"{what}: {int(off.sum())} row(s) are not L2-normalised "
                         f"(norms from {norms.min():.4g} to {norms.max():.4g}); divide by the norm first")
    return out


def as_ids(ids: npt.ArrayLike, what: str = "ids") -> IdArray:
    """Validate a 1-d array of integer ids (≥ 0, so -1 can mean 'no result'); returns int64."""
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array[None]
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-d, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {array.dtype}")
    if array.size and array.dtype == np.uint64 and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{what} must fit in int64")
    out = np.ascontiguousarray(array, dtype=np.int64)
    if out.size and int(out.min()) < 0:
        raise ValueError(f"{what} must be ≥ 0 (-1 marks an empty result), got {int(out.min())}")
    return out


def as_entries(ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int) -> tuple[IdArray, FloatArray]:
    """Validate one ``add``: unique ids (``as_ids``) and as many unit vectors (``as_vectors``)."""
    id_array = as_ids(ids)
    x = as_vectors(vectors, dim)
    if id_array.shape[0] != x.shape[0]:
        raise ValueError(f"{id_array.shape[0]} ids for {x.shape[0]} vectors")
    if np.unique(id_array).size != id_array.size:
        raise ValueError("ids within one add must be unique")
    return id_array, x
