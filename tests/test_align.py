"""Alignment recovers known similarity transforms and lands landmarks on the template."""

from __future__ import annotations

import numpy as np

from facetrail.vision.align import ARCFACE_TEMPLATE, align_faces, roll_degrees, similarity_transform


def _similarity(scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def test_recovers_a_known_transform() -> None:
    known = _similarity(0.37, -23.0, (12.5, -40.0))
    src = np.array([[100, 120], [180, 110], [140, 170], [110, 210], [175, 205]], np.float64)
    dst = src @ known[:, :2].T + known[:, 2]
    assert np.allclose(similarity_transform(src, dst), known, atol=1e-9)


def test_aligned_landmarks_land_on_the_template() -> None:
    # A face 3x template size, turned 30 degrees and moved: its landmarks must come back home.
    forward = _similarity(3.0, 30.0, (200.0, 50.0))
    landmarks = (ARCFACE_TEMPLATE @ forward[:, :2].T + forward[:, 2]).astype(np.float32)
    image = np.zeros((600, 600, 3), np.uint8)
    for x, y in landmarks:
        image[int(round(y)) - 3:int(round(y)) + 4, int(round(x)) - 3:int(round(x)) + 4] = 255
    aligned = align_faces(image, landmarks[None])
    assert aligned.crops.shape == (1, 112, 112, 3)
    assert aligned.residuals[0] < 1e-3
    for x, y in ARCFACE_TEMPLATE:  # every bright dot of the source sits on its template point
        assert aligned.crops[0, int(round(y)), int(round(x))].max() > 200
    assert abs(roll_degrees(landmarks[None])[0] - (30.0 + roll_degrees(ARCFACE_TEMPLATE[None])[0])) < 1e-3


def test_landmarks_that_are_no_face_have_a_large_residual() -> None:
    scrambled = ARCFACE_TEMPLATE[[3, 4, 2, 0, 1]]  # mouth where the eyes should be
    image = np.zeros((200, 200, 3), np.uint8)
    assert align_faces(image, scrambled[None]).residuals[0] > 12.0
