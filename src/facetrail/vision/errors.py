"""Typed errors of the vision layer. Each message says what was wrong and what to do."""

from __future__ import annotations


class VisionError(Exception):
    """Base class of every error the vision layer raises on purpose."""


class ModelError(VisionError):
    """A model's weights are missing, altered or cannot be loaded."""


class ModelNotFoundError(ModelError):
    """The package that ships a model's weights is not installed."""


class ModelIntegrityError(ModelError):
    """A weights file exists but its sha256 is not the pinned one."""


class ImageError(VisionError):
    """An input image cannot be used; ``source`` names the file or stream."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class EmbeddingMismatchError(VisionError):
    """Two embeddings made by different models (or preprocessing) were compared."""
