"""Typed errors of the gallery. Each message says what was wrong and what to do."""

from __future__ import annotations

from pathlib import Path


class GalleryError(Exception):
    """Base class of every error the gallery raises on purpose."""


class SearchIndexError(GalleryError):
    """The vector index cannot do what was asked."""


class IndexCorruptError(SearchIndexError):
    """An index file is missing, truncated, altered or for another dimension.

    The database is the source of truth: rebuild the index from it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; rebuild the index from the database")
        self.path = str(path)
        self.problem = problem


class DimensionMismatchError(SearchIndexError, ValueError):
    """Vectors of one size were given to an index of another."""
