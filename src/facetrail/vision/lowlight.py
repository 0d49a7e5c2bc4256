"""Low-light enhancement for night and infrared frames.

Contrast-limited histogram equalisation (CLAHE) on the luminance channel,
then a gamma lift towards a target brightness. Colour stays as it was;
grey infrared frames (three equal channels) stay grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

import cv2
import numpy as np
from pydantic import Field

from facetrail.vision.image import BGRImage

ENHANCE_DARK_FRAMES = True
# The on/off switch, as the configuration file shows it (``face_recognition.low_light``).
LowLightSwitch = Annotated[bool, Field(title="Low-light enhancement",
                                       description="Brighten dark frames (CLAHE and gamma) before detection; "
                                                   "infrared stays grey.")]


@dataclass(frozen=True)
class LowLightConfig:
    """When and how strongly to enhance.

    ``dark_below``: mean luminance (0-255) under which a frame counts as dark;
    ``clip_limit``: CLAHE's contrast limit (higher brightens more, and adds
    more noise); ``target_mean``: the brightness the gamma lift aims for.
    """

    enabled: LowLightSwitch = ENHANCE_DARK_FRAMES
    dark_below: float = 40.0
    clip_limit: float = 2.0
    tile_grid: int = 8
    target_mean: float = 110.0


def mean_luminance(image: BGRImage) -> float:
    """Mean brightness (0-255) of a BGR image, measured on a small copy."""
    height, width = image.shape[:2]
    step = max(1, max(height, width) // 160)
    small = image[::step, ::step]
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return float(grey.mean())


def is_grey(image: BGRImage) -> bool:
    """True for a grey (for example infrared) frame stored as three equal channels."""
    sample = image[::4, ::4]
    return bool(np.array_equal(sample[:, :, 0], sample[:, :, 1])
                and np.array_equal(sample[:, :, 1], sample[:, :, 2]))


def is_dark(image: BGRImage, config: LowLightConfig = LowLightConfig()) -> bool:
    """True when enhancement is on and the image is darker than ``dark_below``."""
    return config.enabled and mean_luminance(image) < config.dark_below


def enhance(image: BGRImage, config: LowLightConfig = LowLightConfig()) -> BGRImage:
    """A brighter, higher-contrast copy of a dark BGR image (grey images stay exactly grey)."""
    clahe = cv2.createCLAHE(clipLimit=config.clip_limit,
                            tileGridSize=(config.tile_grid, config.tile_grid))
    if is_grey(image):
        grey = clahe.apply(np.ascontiguousarray(image[:, :, 0]))
        equalised = cast(BGRImage, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    else:
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = clahe.apply(lab[:, :, 0])
        equalised = cast(BGRImage, cv2.cvtColor(lab, cv2.COLOR_LAB2BGR))
    current = max(mean_luminance(equalised), 1.0)
    if current < config.target_mean:
        gamma = np.log(config.target_mean / 255.0) / np.log(current / 255.0)
        table = (np.linspace(0.0, 1.0, 256) ** gamma * 255.0 + 0.5).astype(np.uint8)
        equalised = cast(BGRImage, cv2.LUT(equalised, table))
    return np.ascontiguousarray(equalised)
