"""Looking for a face that fills the whole image: detect it again inside a border.

SCRFD needs some context around a face: on a tight crop (an ID photo, a
camera's face capture of 92x112 pixels that is nearly all face) it finds
almost nothing, while the same crop placed inside a border is found. The
border is a uniform mid grey rather than replicated edge pixels, which smear
hair and chin into streaks. Boxes and landmarks found in the bordered image are
moved back into the original image's coordinates; boxes are clipped to it,
landmarks are kept as found (the aligner samples outside the image as it
would for any face at an edge).
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np

from facetrail.vision.image import BGRImage
from facetrail.vision.types import FaceDetections

BORDER_FRACTION = 0.5  # border on each side, in units of the image's longer side: the image fills half the width
BORDER_GREY = 128


def border_geometry(width: int, height: int, fraction: float = BORDER_FRACTION) -> tuple[int, tuple[int, int]]:
    """The side of the bordered square and the (x, y) offset of a ``width`` x ``height`` image in it."""
    side = int(round(max(height, width) * (1.0 + 2.0 * fraction)))
    return side, ((side - width) // 2, (side - height) // 2)


def add_border(image: BGRImage, fraction: float = BORDER_FRACTION) -> tuple[BGRImage, tuple[int, int]]:
    """``image`` centred in a square grey border: the bordered copy and the (x, y) offset of the image in it."""
    height, width = image.shape[:2]
    side, (left, top) = border_geometry(width, height, fraction)
    bordered = cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left,
                                  cv2.BORDER_CONSTANT, value=(BORDER_GREY,) * 3)
    return cast(BGRImage, bordered), (left, top)


def remove_border(faces: FaceDetections, offset: tuple[int, int], width: int, height: int) -> FaceDetections:
    """Faces found in ``add_border``'s image, in the coordinates of the original ``width`` x ``height`` image."""
    if len(faces) == 0:
        return faces
    shift = np.array(offset, np.float32)
    xyxy = faces.xyxy - np.tile(shift, 2)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, width)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, height)
    landmarks = faces.landmarks - shift
    return FaceDetections(xyxy.astype(np.float32), faces.scores.copy(), landmarks.astype(np.float32),
                          faces.rotation, faces.dropped)
