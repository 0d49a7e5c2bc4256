"""Permissively licensed recogniser: dlib's ResNet (128-d), from ``facetrail[dlib]``.

The face box comes from facetrail's detector; dlib's own 5-point shape
predictor places the 150x150 chip as dlib's network expects. Descriptors are
L2-normalised so they compare by cosine like every other backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facetrail.vision.align import AlignedFaces
from facetrail.vision.embedder import l2_normalise
from facetrail.vision.errors import ModelNotFoundError
from facetrail.vision.image import BGRImage
from facetrail.vision.registry import DLIB_RESNET, DLIB_SHAPE_5, ModelSpec
from facetrail.vision.types import FaceDetections, FaceEmbeddings


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise ModelNotFoundError(
            "the dlib backend needs the dlib module; fix: pip install 'facetrail[dlib]'"
        ) from None
    return dlib


class DlibEmbedder:
    """dlib ResNet face descriptor. Not thread-safe: use one per thread."""

    def __init__(self, spec: ModelSpec = DLIB_RESNET) -> None:
        dlib = _import_dlib()
        self.spec = spec
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(DLIB_SHAPE_5.path()))
        self._net = dlib.face_recognition_model_v1(str(spec.path()))

    @property
    def model_id(self) -> str:
        """Id stored with every embedding this embedder makes."""
        return self.spec.model_id

    def embed(self, image: BGRImage, faces: FaceDetections) -> FaceEmbeddings:
        """Embeddings of the faces detected in one image, in detection order."""
        return self.embed_many([(image, faces)])[0]

    def embed_many(self, items: Sequence[tuple[BGRImage, FaceDetections]],
                   aligned: Sequence[AlignedFaces] | None = None) -> list[FaceEmbeddings]:
        """Embeddings per image; dlib batches the faces of one image in one call."""
        out = []
        for image, faces in items:
            if len(faces) == 0:
                out.append(FaceEmbeddings(np.zeros((0, 128), np.float32), self.model_id))
                continue
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            shapes = self._dlib.full_object_detections()
            for x1, y1, x2, y2 in faces.xyxy:
                shapes.append(self._shape(rgb, self._dlib_box(x1, y1, x2, y2)))
            vectors = np.asarray(self._net.compute_face_descriptor(rgb, shapes), np.float32)
            out.append(FaceEmbeddings(l2_normalise(vectors.reshape(len(faces), -1)), self.model_id))
        return out

    def _dlib_box(self, x1: float, y1: float, x2: float, y2: float) -> Any:
        """dlib's predictor was trained on its HOG detector's boxes: square, brow to chin.

        SCRFD boxes are taller (forehead included); a square of the box's width
        around its centre puts dlib's landmarks where they were trained to be.
        """
        half = (x2 - x1) / 2.0
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + 0.02 * (y2 - y1)
        return self._dlib.rectangle(round(cx - half), round(cy - half),
                                    round(cx + half), round(cy + half))
