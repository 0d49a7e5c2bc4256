"""A constant-velocity Kalman filter on a box's centre and size (SORT / ByteTrack style).

State: centre x, centre y, width, height and their velocities, in pixels and
pixels per second. Frames arrive at uneven intervals (a motion gate skips
some), so every prediction takes its own time step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Noise as fractions of the box height, per second (process) and per measurement.
POSITION_NOISE = 0.5
VELOCITY_NOISE = 0.6
MEASUREMENT_NOISE = 0.05


def xyxy_to_cxcywh(box: npt.ArrayLike) -> FloatArray:
    """(x1, y1, x2, y2) to (centre x, centre y, width, height)."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def cxcywh_to_xyxy(state: FloatArray) -> FloatArray:
    """(centre x, centre y, width, height) to (x1, y1, x2, y2)."""
    cx, cy, w, h = state[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """Tracks one box; ``predict(dt)`` then ``update(box)`` each frame it is seen."""

    def __init__(self, box: npt.ArrayLike) -> None:
        measured = xyxy_to_cxcywh(box)
        self.mean: FloatArray = np.concatenate([measured, np.zeros(4)])
        size = max(measured[3], 1.0)
        self.covariance: FloatArray = np.diag(np.square(
            np.r_[np.full(4, 2 * MEASUREMENT_NOISE * size), np.full(4, 10 * VELOCITY_NOISE * size)]))

    @property
    def box(self) -> FloatArray:
        """The current estimate as (x1, y1, x2, y2)."""
        return cxcywh_to_xyxy(self.mean)

    def predict(self, dt: float) -> FloatArray:
        """Move the estimate ``dt`` seconds forward; returns the predicted box."""
        if dt <= 0:
            return self.box
        transition = np.eye(8)
        transition[:4, 4:] = dt * np.eye(4)
        size = max(self.mean[3], 1.0)
        process = np.diag(np.square(np.r_[np.full(4, POSITION_NOISE * size * dt),
                                          np.full(4, VELOCITY_NOISE * size * dt)]))
        self.mean = transition @ self.mean
        self.mean[2:4] = np.maximum(self.mean[2:4], 1.0)
        self.covariance = transition @ self.covariance @ transition.T + process
        return self.box

    def warp(self, matrix: FloatArray) -> FloatArray:
        """Apply the camera's own motion (a 2x3 similarity transform) to the estimate."""
        linear = matrix[:, :2]
        scale = float(np.sqrt(abs(np.linalg.det(linear))))
        self.mean[:2] = linear @ self.mean[:2] + matrix[:, 2]
        self.mean[2:4] *= scale
        self.mean[4:6] = linear @ self.mean[4:6]
        self.mean[6:8] *= scale
        return self.box

    def update(self, box: npt.ArrayLike) -> FloatArray:
        """Correct the estimate with a measured box; returns the corrected box."""
        measured = xyxy_to_cxcywh(box)
        size = max(measured[3], 1.0)
        observe = np.eye(4, 8)
        innovation_cov = observe @ self.covariance @ observe.T + np.diag(np.full(4, (MEASUREMENT_NOISE * size) ** 2))
        gain = self.covariance @ observe.T @ np.linalg.inv(innovation_cov)
        self.mean = self.mean + gain @ (measured - observe @ self.mean)
        self.covariance = (np.eye(8) - gain @ observe) @ self.covariance
        return self.box


def buffered(boxes: npt.ArrayLike, buffer: float) -> FloatArray:
    """Boxes grown by ``buffer`` times their width and height on every side (C-BIoU's matching space)."""
    grown = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    w = grown[:, 2] - grown[:, 0]
    h = grown[:, 3] - grown[:, 1]
    grown[:, 0] -= buffer * w
    grown[:, 2] += buffer * w
    grown[:, 1] -= buffer * h
    grown[:, 3] += buffer * h
    return grown


def size_ratio(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise ratio (≥ 1) of the box heights of (n, 4) and (m, 4)."""
    first = np.asarray(a, np.float64).reshape(-1, 4)
    second = np.asarray(b, np.float64).reshape(-1, 4)
    ha = np.maximum(first[:, 3] - first[:, 1], 1e-6)[:, None]
    hb = np.maximum(second[:, 3] - second[:, 1], 1e-6)[None, :]
    return np.asarray(np.maximum(ha / hb, hb / ha), np.float64)


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise IoU of boxes (n, 4) and (m, 4), xyxy."""
    first = np.asarray(a, np.float64).reshape(-1, 4)
    second = np.asarray(b, np.float64).reshape(-1, 4)
    if not len(first) or not len(second):
        return np.zeros((len(first), len(second)))
    x1 = np.maximum(first[:, None, 0], second[None, :, 0])
    y1 = np.maximum(first[:, None, 1], second[None, :, 1])
    x2 = np.minimum(first[:, None, 2], second[None, :, 2])
    y2 = np.minimum(first[:, None, 3], second[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_b = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def greedy_match(scores: FloatArray, minimum: float) -> list[tuple[int, int]]:
    """Pairs (row, column) taken best score first, each row and column once, scores ≥ ``minimum``."""
    pairs: list[tuple[int, int]] = []
    if scores.size == 0:
        return pairs
    order = np.dstack(np.unravel_index(np.argsort(-scores, axis=None), scores.shape))[0]
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for row, col in order:
        if scores[row, col] < minimum:
            break
        if row in used_rows or col in used_cols:
            continue
        pairs.append((int(row), int(col)))
        used_rows.add(int(row))
        used_cols.add(int(col))
    return pairs
