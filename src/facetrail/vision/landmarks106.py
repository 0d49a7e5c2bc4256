"""InsightFace's 106-point 2D landmark model (``2d106det``) on onnxruntime.

Preprocessing follows InsightFace's ``model_zoo.Landmark``: a 192x192 crop
centred on the detection box, scaled so the box's longer side fills two
thirds of it, RGB pixels fed raw (the graph subtracts and scales itself).
The network answers 106 (x, y) pairs in [-1, 1] of the crop, mapped back to
image pixels through the inverse crop transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from facetrail.vision.image import BGRImage
from facetrail.vision.registry import LANDMARK_2D106, ModelSpec
from facetrail.vision.runtime import create_session
from facetrail.vision.types import FloatArray

POINTS = 106
CROP_MARGIN = 1.5  # crop side = this times the box's longer side (InsightFace's choice)


def crop_matrix(box: npt.ArrayLike, size: int) -> npt.NDArray[np.float64]:
    """The (2, 3) affine taking image pixels to the model's square crop for one xyxy box."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64)[:4])
    side = max(x2 - x1, y2 - y1)
    if not side > 0:
        raise ValueError(f"face box {x1, y1, x2, y2} has no extent")
    scale = size / (side * CROP_MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[scale, 0.0, size / 2 - cx * scale],
                     [0.0, scale, size / 2 - cy * scale]])


class Landmarks106:
    """Dense 106-point landmarks for faces given by detector boxes. Thread-safe.

    Point order is InsightFace's 2d106 markup (left and right as seen in the
    image): face outline 0-32 (0 is the chin), left eye 33-42, left brow
    43-51, mouth 52-71, nose 72-86, right eye 87-96, right brow 97-105.
    """

    def __init__(self, spec: ModelSpec = LANDMARK_2D106, *,
                 providers: Sequence[str] | str = "auto", threads: int = 0) -> None:
        self.spec = spec
        self._session = create_session(spec.path(), providers, threads)
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self.size = int(model_input.shape[2])

    def predict(self, image_bgr: BGRImage, box: npt.ArrayLike) -> FloatArray:
        """106 (x, y) points (106, 2) float32 in image pixels for one xyxy box."""
        points: FloatArray = self.predict_many(image_bgr, np.asarray(box, np.float32).reshape(1, 4))[0]
        return points

    def predict_many(self, image_bgr: BGRImage, boxes: npt.ArrayLike) -> FloatArray:
        """Points (n, 106, 2) float32 in image pixels for n xyxy boxes (n, 4) of one image."""
        xyxy = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(xyxy) == 0:
            return np.zeros((0, POINTS, 2), np.float32)
        matrices = [crop_matrix(b, self.size) for b in xyxy]
        crops = [cv2.warpAffine(image_bgr, m, (self.size, self.size), borderValue=0.0)
                 for m in matrices]
        blob = cv2.dnn.blobFromImages(crops, 1.0, (self.size, self.size), (0.0, 0.0, 0.0),
                                      swapRB=True)
        # The graph declares an output batch of 1 but computes any batch correctly.
        raw = np.asarray(self._session.run(None, {self._input_name: blob})[0], dtype=np.float32)
        crop_points = (raw.reshape(len(xyxy), -1, 2)[:, -POINTS:] + 1.0) * (self.size // 2)
        out = np.empty((len(xyxy), POINTS, 2), np.float32)
        for i, matrix in enumerate(matrices):
            inverse = cv2.invertAffineTransform(matrix)
            out[i] = crop_points[i] @ inverse[:, :2].T + inverse[:, 2]
        return out
