"""Presentation attacks made from a real photo: the photo held up to a camera and moved as a flat plane."""

from __future__ import annotations

import cv2
import numpy as np

from facetrail.vision.image import BGRImage


def tilted(image: BGRImage, yaw: float, pitch: float, roll: float, scale: float,
           shift: tuple[float, float]) -> BGRImage:
    """The photo as a plane turned by yaw/pitch/roll degrees, seen by a pinhole camera."""
    h, w = image.shape[:2]
    focal = 1.2 * max(w, h)
    y, p, r = np.radians([yaw, pitch, roll])
    turn_y = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    turn_x = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    turn_z = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    plane = np.c_[corners - [w / 2, h / 2], np.zeros(4)] @ (turn_z @ turn_y @ turn_x).T
    depth = plane[:, 2] + focal / scale
    seen = np.c_[focal * plane[:, 0] / depth + w / 2 + shift[0] * w,
                 focal * plane[:, 1] / depth + h / 2 + shift[1] * h]
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), seen.astype(np.float32))
    return np.asarray(cv2.warpPerspective(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8)


def moved_photo(image: BGRImage, frames: int = 15) -> list[BGRImage]:
    """A hand tilting a photo smoothly by up to 30 degrees while shifting and bringing it closer."""
    clip = []
    for i in range(frames):
        t = i / (frames - 1)
        clip.append(tilted(image, 30 * np.sin(2 * np.pi * t), 20 * np.sin(1.4 * np.pi * t + 1),
                           5 * np.sin(2.6 * np.pi * t), 0.85 + 0.15 * np.sin(np.pi * t),
                           (0.05 * np.sin(2 * np.pi * t), 0.03 * np.cos(2 * np.pi * t))))
    return clip
