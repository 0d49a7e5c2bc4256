"""Typed, frozen values passed between the stages of the face engine.

Every value holds column arrays for a batch of faces (like supervision's
``Detections``), validated on construction, so each stage can be tested alone
with small NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from facetrail.vision.errors import EmbeddingMismatchError

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def _readonly(array: npt.NDArray[np.generic]) -> None:
    array.setflags(write=False)


@dataclass(frozen=True, eq=False)
class FaceDetections:
    """Faces found in one image.

    ``xyxy`` (n, 4) pixel boxes in the input image; ``scores`` (n,) detector
    confidence in [0, 1]; ``landmarks`` (n, 5, 2) pixel points in the order
    left eye, right eye, nose tip, left mouth corner, right mouth corner (left
    and right as seen in the image). ``rotation`` is the clockwise rotation in
    degrees (0, 90, 180, 270) the image needed for the faces to be found;
    boxes and landmarks are always in the original image's coordinates.
    """

    xyxy: FloatArray
    scores: FloatArray
    landmarks: FloatArray
    rotation: int = 0
    dropped: int = 0  # faces found but discarded as unreliable (see FaceEngine)

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0]
        if self.xyxy.shape != (n, 4) or self.scores.shape != (n,):
            raise ValueError(f"bad detection shapes {self.xyxy.shape}, {self.scores.shape}")
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"landmarks must be (n, 5, 2), got {self.landmarks.shape}")
        for array in (self.xyxy, self.scores, self.landmarks):
            _readonly(array)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls) -> FaceDetections:
        """No faces."""
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def select(self, index: npt.ArrayLike) -> FaceDetections:
        """A new batch holding only the faces at ``index`` (array of ints or bools)."""
        idx = np.asarray(index)
        return FaceDetections(
            self.xyxy[idx].copy(), self.scores[idx].copy(), self.landmarks[idx].copy(),
            self.rotation, self.dropped)

    @property
    def areas(self) -> FloatArray:
        """Box areas in square pixels."""
        w = np.clip(self.xyxy[:, 2] - self.xyxy[:, 0], 0, None)
        h = np.clip(self.xyxy[:, 3] - self.xyxy[:, 1], 0, None)
        areas: FloatArray = (w * h).astype(np.float32)
        return areas


@dataclass(frozen=True, eq=False)
class FaceEmbeddings:
    """L2-normalised embeddings (n, d) and the id of the model that made them."""

    vectors: FloatArray
    model_id: str

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"embeddings must be (n, d), got {self.vectors.shape}")
        _readonly(self.vectors)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.vectors.shape[1])

    def similarity(self, other: FaceEmbeddings) -> FloatArray:
        """Cosine similarity matrix (len(self), len(other)), in [-1, 1].

        Raises EmbeddingMismatchError when the two come from different models
        or preprocessing: such numbers would look valid and mean nothing.
        """
        if self.model_id != other.model_id:
            raise EmbeddingMismatchError(
                f"cannot compare embeddings of {self.model_id!r} with {other.model_id!r}; "
                "re-embed both faces with the same model"
            )
        return (self.vectors @ other.vectors.T).astype(np.float32)


@dataclass(frozen=True)
class FaceQuality:
    """How usable one face is for recognition, with its parts kept visible.

    ``score`` in [0, 1] is the product of the part scores; the raw measures
    are kept so a caller can apply its own bar (say, ``min_face_px``).
    """

    score: float
    face_px: float  # inter-ocular distance times 2.5, a box-independent face size in pixels
    sharpness: float  # Laplacian variance of the aligned grey crop at the face's own size (see vision/quality.py)
    yaw: float  # degrees, 0 = frontal, estimated from landmarks
    pitch: float  # degrees, positive = looking down, estimated from landmarks
    roll: float  # degrees, in-plane rotation of the eye line
    detector_score: float
    parts: dict[str, float] = field(default_factory=dict)
