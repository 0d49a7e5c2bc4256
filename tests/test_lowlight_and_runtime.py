"""Low-light enhancement and execution-provider fallback."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from facetrail.vision.image import BGRImage
from facetrail.vision.lowlight import LowLightConfig, enhance, is_dark, mean_luminance
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
