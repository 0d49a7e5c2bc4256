"""JPEG pictures people look at: evidence snapshots and cameras' latest frames, faces boxed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

SNAPSHOT_WIDTH = 640
BOX_COLOUR = (0, 200, 255)  # BGR amber


def jpeg(image: np.ndarray, quality: int) -> bytes:
    """``image`` (BGR) encoded as JPEG."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("could not encode a JPEG")
    return bytes(data.tobytes())


def boxed_jpeg(frame: np.ndarray, boxes: Iterable[Sequence[float]], *, quality: int,
               width: int = SNAPSHOT_WIDTH) -> bytes:
    """The frame with each box drawn, scaled down to at most ``width`` pixels wide, as JPEG."""
    picture = frame.copy()
    thickness = max(2, picture.shape[1] // 400)
    for box in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(picture, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
    if picture.shape[1] > width:
        scale = width / picture.shape[1]
        picture = cv2.resize(picture, (width, int(picture.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return jpeg(picture, quality)
