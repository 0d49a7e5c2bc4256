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


def labelled_jpeg(frame: np.ndarray, boxes: Sequence[Sequence[float]], labels: Sequence[str],
                  colours: Sequence[tuple[int, int, int]], *, quality: int, width: int) -> bytes:
    """The frame scaled down to at most ``width`` pixels wide, each box drawn with its label above it, as JPEG.

    Scaled first and drawn after, so the labels stay legible and the drawing touches the small picture only.
    """
    scale = min(1.0, width / frame.shape[1])
    picture = frame.copy() if scale == 1.0 else cv2.resize(
        frame, (width, max(1, int(frame.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    thickness = max(2, picture.shape[1] // 400)
    font_scale = max(0.45, picture.shape[1] / 1600)
    for box, label, colour in zip(boxes, labels, colours, strict=True):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(picture, (x1, y1), (x2, y2), colour, thickness)
        if not label:
            continue
        (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = max(0, y1 - text_h - base - 4)
        cv2.rectangle(picture, (x1, top), (x1 + text_w + 6, top + text_h + base + 4), colour, cv2.FILLED)
        cv2.putText(picture, label, (x1 + 3, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return jpeg(picture, quality)
