"""Low-light enhancement and execution-provider fallback."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from facetrail.vision.image import BGRImage
from facetrail.vision.lowlight import (
    LowLightConfig,
    darkest_region_luminance,
    enhance,
    is_dark,
    is_grey,
    mean_luminance,
    worth_enhancing,
)
from facetrail.vision.runtime import resolve_providers


def test_dark_frames_are_detected_and_brightened(yaoming: BGRImage) -> None:
    dark = (yaoming.astype(np.float32) * 0.15).astype(np.uint8)
    assert is_dark(dark) and not is_dark(yaoming)
    assert not is_dark(dark, LowLightConfig(enabled=False))
    brighter = enhance(dark)
    assert mean_luminance(brighter) > mean_luminance(dark) + 40
    assert brighter.shape == dark.shape and brighter.dtype == np.uint8


def test_infrared_grey_frames_stay_grey(yaoming: BGRImage) -> None:
    grey = cv2.cvtColor((cv2.cvtColor(yaoming, cv2.COLOR_BGR2GRAY) * 0.2).astype(np.uint8),
                        cv2.COLOR_GRAY2BGR)
    out = enhance(grey)
    assert np.abs(out[:, :, 0].astype(int) - out[:, :, 2].astype(int)).max() <= 1


def test_nearly_grey_infrared_frames_count_as_grey_and_come_out_exactly_grey(yaoming: BGRImage) -> None:
    """An infrared camera's colour-coded frame: channels differ by a level here and there."""
    grey = (cv2.cvtColor(yaoming, cv2.COLOR_BGR2GRAY) * 0.2).astype(np.uint8)
    frame = np.repeat(grey[:, :, None], 3, axis=2)
    rng = np.random.default_rng(3)
    frame[:, :, 2] = np.clip(frame[:, :, 2] + rng.integers(-1, 2, grey.shape), 0, 255).astype(np.uint8)
    assert not np.array_equal(frame[:, :, 0], frame[:, :, 2])
    assert is_grey(frame) and not is_grey(yaoming)
    out = enhance(frame)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])


def test_a_dark_region_asks_for_enhancement_where_the_frame_mean_does_not(yaoming: BGRImage) -> None:
    """A dark face inside a bright grey border: the mean is bright, the face's region is not."""
    height, width = yaoming.shape[:2]
    frame = np.full((height * 2, width * 2, 3), 128, np.uint8)
    frame[height // 2:height // 2 + height, width // 2:width // 2 + width] = (yaoming * 0.1).astype(np.uint8)
    none = np.zeros((0, 4), np.float32)
    assert not is_dark(frame)
    assert worth_enhancing(frame, none)
    assert not worth_enhancing(frame, none, LowLightConfig(enabled=False))
    dark_box = np.array([[width * 0.75, height * 0.75, width * 1.25, height * 1.25]], np.float32)
    bright_box = np.array([[0, 0, width * 0.4, height * 0.4]], np.float32) + np.array([5, 5, 5, 5], np.float32)
    textured = frame.copy()
    textured[: height // 2, : width // 2] = yaoming[: height // 2, : width // 2]  # a bright, textured corner
    assert worth_enhancing(textured, dark_box)
    assert not worth_enhancing(textured, bright_box)
    assert darkest_region_luminance(frame) < LowLightConfig().dark_below < mean_luminance(frame)


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        chosen = resolve_providers(["NoSuchExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider is not available" in caplog.text


def test_auto_always_ends_with_the_cpu() -> None:
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"


@pytest.mark.gpu
def test_engine_runs_on_cuda_when_present() -> None:
    import onnxruntime as ort

    from facetrail.vision.engine import FaceEngine

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA provider in this onnxruntime build (install facetrail[gpu] on a GPU machine)")
    engine = FaceEngine()
    assert engine.detector.providers[0] == "CUDAExecutionProvider"
