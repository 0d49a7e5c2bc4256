"""Which vector index backend the gallery uses, and the one place that builds it.

FAISS (the default) keeps the index in memory and rebuilds it from the
database at every open; Milvus keeps it in a collection that persists, so
opening compares the collection's ids with the database's and fixes only
the difference (``facetrail.gallery.sync``). One collection per model id and
purpose (templates, sightings), so 128-d and 512-d vectors never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.gallery.index import Index
from facetrail.gallery.milvus_index import MilvusIndex, MilvusSettings, collection_name

Backend = Literal["faiss", "milvus"]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class IndexBackendSettings:
    """Where the gallery's vectors are searched: FAISS in memory, or Milvus."""

    backend: Backend = Field(default="faiss", title="Backend",
                             description="faiss: in memory, rebuilt from the database at start (one machine, the "
                                         "default); milvus: Milvus Lite or a Milvus server, kept in step with the "
                                         "database (the vectors stay at rest in Milvus, unencrypted by facetrail).")
    milvus: MilvusSettings = Field(default_factory=MilvusSettings, title="Milvus",
                                   description="The Milvus connection and index, when backend is milvus.")


FAISS = IndexBackendSettings()


def open_index(settings: IndexBackendSettings, data_dir: Path, what: str, model_id: str, dim: int) -> Index:
    """An empty FAISS index, or the Milvus collection of ``what`` (templates, sightings) for ``model_id``."""
    if settings.backend == "milvus":
        milvus = settings.milvus.resolved(data_dir)
        return MilvusIndex(dim, milvus, collection=collection_name(milvus.collection_prefix, what, model_id))
    from facetrail.gallery.faiss_index import FaissIndex

    return FaissIndex(dim)


def close_index(index: Index) -> None:
    """Release what an index holds outside this process's memory (a Milvus client); FAISS holds nothing."""
    if isinstance(index, MilvusIndex):
        index.close()


def flush_index(index: Index) -> None:
    """Make removals durable where the index persists (Milvus: flush); FAISS lives in memory only."""
    if isinstance(index, MilvusIndex):
        index.flush()
