"""Face alignment: a 5-point similarity warp onto the ArcFace 112x112 template.

The transform is the least-squares similarity (Umeyama 1991), the same
estimate scikit-image's SimilarityTransform makes and InsightFace uses, so
the crops match InsightFace's ``norm_crop`` pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from facetrail.vision.image import BGRImage
from facetrail.vision.types import FloatArray

# Where the eyes, nose tip and mouth corners of a frontal face sit in a 112x112 crop.
ARCFACE_TEMPLATE: FloatArray = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
ARCFACE_SIZE = 112


@dataclass(frozen=True, eq=False)
class AlignedFaces:
    """Aligned crops (n, size, size, 3) BGR uint8 with their transforms.

    ``matrices`` (n, 2, 3) map image pixels to crop pixels; ``residuals`` (n,)
    is the RMS distance in crop pixels between the warped landmarks and the
    template: a few pixels for a real face, large when the landmarks do not
    form a face shape (a misdetection, or landmarks confused by rotation).
    """

    crops: npt.NDArray[np.uint8]
    matrices: npt.NDArray[np.float64]
    residuals: FloatArray

    def __len__(self) -> int:
        return int(self.crops.shape[0])


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) taking src to dst.

    Returns the (2, 3) affine matrix. Points are (k, 2), k >= 2.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    s_mean, d_mean = s.mean(axis=0), d.mean(axis=0)
    s_c, d_c = s - s_mean, d - d_mean
    cov = d_c.T @ s_c / len(s)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[1] = -1
    rotation = u @ np.diag(sign) @ vt
    if np.linalg.matrix_rank(cov) == 1 and np.linalg.det(u) * np.linalg.det(vt) < 0:
        rotation = u @ vt
    variance = s_c.var(axis=0).sum()
    scale = (sigma * sign).sum() / variance if variance > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = d_mean - matrix[:, :2] @ s_mean
    return matrix


def align_faces(image: BGRImage, landmarks: FloatArray, size: int = ARCFACE_SIZE) -> AlignedFaces:
    """Warp every face of ``image`` given by ``landmarks`` (n, 5, 2) to the template."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    n = landmarks.shape[0]
    crops = np.empty((n, size, size, 3), np.uint8)
    matrices = np.empty((n, 2, 3))
    residuals = np.empty((n,), np.float32)
    for i in range(n):
        matrix = similarity_transform(landmarks[i], template)
        crops[i] = cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
        warped = landmarks[i] @ matrix[:, :2].T + matrix[:, 2]
        residuals[i] = float(np.sqrt(((warped - template) ** 2).sum(axis=1).mean()))
        matrices[i] = matrix
    return AlignedFaces(crops, matrices, residuals)


def roll_degrees(landmarks: FloatArray) -> FloatArray:
    """In-plane rotation of each face's eye line (n,), degrees; 0 = upright, +-180 = upside down."""
    eye_vector = landmarks[:, 1] - landmarks[:, 0]
    rolls: FloatArray = np.degrees(np.arctan2(eye_vector[:, 1], eye_vector[:, 0])).astype(np.float32)
    return rolls
