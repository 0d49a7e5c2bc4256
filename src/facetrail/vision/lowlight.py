"""Low-light enhancement for night and infrared frames.

A blur in proportion to the noise the brightening will amplify, then, for a
dark region, a gain and the display tone curve (as a camera renders a weak
sensor signal) towards a target brightness; for a flat one that is not dark
(fog, glare), contrast-limited histogram equalisation (CLAHE) on the
luminance channel and a gamma lift. Colour stays as it was; grey infrared
frames (three equal or nearly equal channels) stay grey.

Whether to enhance is decided locally, not on the whole frame's mean: a dark
face inside a grey border, or a dark doorway in a lit street, leaves the mean
bright. ``worth_enhancing`` looks at the regions of weakly detected faces, or,
when nothing was found, at the darkest third of the image and its contrast.
The engine enhances only as a second look after the plain image gave no
confident face, and keeps whichever look is better, so enhancement never
loses a face the plain image gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from facetrail.vision.image import BGRImage
from facetrail.vision.types import FloatArray

ENHANCE_DARK_FRAMES = True
# The on/off switch, as the configuration file shows it (``face_recognition.low_light``).
LowLightSwitch = Annotated[bool, Field(title="Low-light enhancement",
                                       description="Brighten dark frames (CLAHE and gamma) before detection; "
                                                   "infrared stays grey.")]


@dataclass(frozen=True)
class LowLightConfig:
    """When and how strongly to enhance.

    ``dark_below``: mean luminance (0-255) under which a region (a weakly
    found face, the darkest third of the image) counts as dark;
    ``low_contrast_below``: standard deviation of luminance under which such a
    region counts as flat (fog, glare, a washed-out infrared frame);
    ``clip_limit``: CLAHE's contrast limit (higher brightens more, and adds
    more noise); ``target_mean``: the brightness the gamma lift aims for.
    """

    enabled: LowLightSwitch = ENHANCE_DARK_FRAMES
    dark_below: float = 40.0
    low_contrast_below: float = 12.0
    clip_limit: float = 2.0
    tile_grid: int = 8
    target_mean: float = 110.0


DARK_REGION = 1.0 / 3.0  # side of the darkest region looked at, as a share of the image's: a face in a portrait
# Sensor noise times the brightening gain is what buries a dark face: without the blur, enhancing found fewer faces
# than the plain image (night LFW, 50 images: 21 against 32); blurring to leave 5-7 levels found 47-48.
NOISE_LEFT = 6.0  # noise (0-255) the enhanced image may keep: the blur's sigma is amplified noise / this
MAX_DENOISE_SIGMA = 2.5  # pixels; more would wipe out small faces
# (Blurring harder for the search, to leave 3 levels with up to 3.5 px, found fewer faces on night LFW: 311
# missed against 240; on the dark face crops 1,012 against 422.)
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
DISPLAY_GAMMA = 2.2  # sRGB's (nearly): the tone curve a camera encodes its linear sensor signal with
GREY_TOLERANCE = 2  # levels by which a colour-coded grey frame's channels may differ (rounding, compression)
# share of pixels whose channels may differ by more. A mean difference would not do: a dark colour frame's channels
# sit near black, so their mean difference is small, yet its independent sensor noise sets 8% or more of its pixels
# apart (night LFW); treating such frames as grey lost faces (night LFW: 175 images without a face against 92).
GREY_OUTLIERS = 0.01


def _small_grey(image: BGRImage, longer: int = 160) -> npt.NDArray[np.uint8]:
    height, width = image.shape[:2]
    step = max(1, max(height, width) // longer)
    return cast(npt.NDArray[np.uint8], cv2.cvtColor(image[::step, ::step], cv2.COLOR_BGR2GRAY))


def mean_luminance(image: BGRImage) -> float:
    """Mean brightness (0-255) of a BGR image, measured on a small copy."""
    return float(_small_grey(image).mean())


Region = tuple[int, int, int, int]  # (left, top, right, bottom) in image pixels


def darkest_region(image: BGRImage, share: float = DARK_REGION) -> tuple[Region, float]:
    """The darkest region whose sides are ``share`` of the image's, and its mean brightness (0-255)."""
    height, width = image.shape[:2]
    step = max(1, max(height, width) // 48)
    small = cv2.cvtColor(image[::step, ::step], cv2.COLOR_BGR2GRAY)
    rows, cols = small.shape
    kh, kw = max(1, round(rows * share)), max(1, round(cols * share))
    total = cv2.integral(small)  # window sums from the summed-area table
    sums = total[kh:, kw:] - total[:-kh, kw:] - total[kh:, :-kw] + total[:-kh, :-kw]
    top, left = np.unravel_index(int(np.argmin(sums)), sums.shape)
    region = (int(left) * step, int(top) * step, min(width, (int(left) + kw) * step),
              min(height, (int(top) + kh) * step))
    return region, float(sums[top, left]) / (kh * kw)


def darkest_region_luminance(image: BGRImage, share: float = DARK_REGION) -> float:
    """Mean brightness (0-255) of the darkest region whose sides are ``share`` of the image's."""
    return darkest_region(image, share)[1]


def _grey_of(image: BGRImage, region: Region) -> npt.NDArray[np.uint8]:
    left, top, right, bottom = region
    return cast(npt.NDArray[np.uint8], cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_BGR2GRAY))


def _box_region(image: BGRImage, box: FloatArray) -> Region:
    height, width = image.shape[:2]
    left, top = int(np.clip(box[0], 0, width - 1)), int(np.clip(box[1], 0, height - 1))
    return (left, top, int(np.clip(np.ceil(box[2]), left + 1, width)),
            int(np.clip(np.ceil(box[3]), top + 1, height)))


def _dark_or_flat(grey: npt.NDArray[np.uint8], config: LowLightConfig) -> bool:
    return float(grey.mean()) < config.dark_below or float(grey.std()) < config.low_contrast_below


def region_to_enhance(image: BGRImage, weak_faces: FloatArray,
                      config: LowLightConfig = LowLightConfig()) -> Region | None:
    """The region an enhanced second look should brighten, or None when enhancing is not worth a look.

    ``weak_faces`` (n, 4): boxes of the faces found with low confidence. With
    some, the darkest of their regions that is dark or flat; with none, the
    darkest third of the image when it is dark, or the whole image when it is flat.
    """
    if not config.enabled:
        return None
    if len(weak_faces):
        candidates = [_box_region(image, box) for box in np.asarray(weak_faces, np.float32)]
        dark = [region for region in candidates if _dark_or_flat(_grey_of(image, region), config)]
        return min(dark, key=lambda region: float(_grey_of(image, region).mean())) if dark else None
    region, luminance = darkest_region(image)
    if luminance < config.dark_below:
        return region
    if float(_small_grey(image).std()) < config.low_contrast_below:
        return (0, 0, int(image.shape[1]), int(image.shape[0]))
    return None


def dark_faces_region(image: BGRImage, faces: FloatArray, config: LowLightConfig = LowLightConfig()) -> Region | None:
    """The region spanning the faces (boxes (n, 4)) that are darker than ``dark_below``, or None.

    Faces found confidently in the plain image are still embedded from an enhanced copy when they are
    dark: on night LFW (45 faces) that raised the mean cosine with the daylight photo from 0.47 to 0.49
    and the share above the calibrated threshold from 97.8% to 100%.
    """
    if not config.enabled or len(faces) == 0:
        return None
    regions = [_box_region(image, box) for box in np.asarray(faces, np.float32)]
    dark = [r for r in regions if float(_grey_of(image, r).mean()) < config.dark_below]
    if not dark:
        return None
    return (min(r[0] for r in dark), min(r[1] for r in dark), max(r[2] for r in dark), max(r[3] for r in dark))


def worth_enhancing(image: BGRImage, weak_faces: FloatArray, config: LowLightConfig = LowLightConfig()) -> bool:
    """Whether an enhanced second look may find what the plain look missed or found only weakly."""
    return region_to_enhance(image, weak_faces, config) is not None


def noise_sigma(grey: npt.NDArray[np.uint8]) -> float:
    """Standard deviation (0-255) of the white noise in a grey image (Immerkaer's fast estimate)."""
    if min(grey.shape[:2]) < 3:
        return 0.0
    response = cv2.filter2D(grey.astype(np.float32), -1, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(np.abs(response).mean()) * float(np.sqrt(np.pi / 2.0)) / 6.0


def is_grey(image: BGRImage) -> bool:
    """True for a grey (for example infrared) frame: three equal channels, or nearly so after compression."""
    sample = image[::4, ::4].astype(np.int16)
    if np.array_equal(sample[:, :, 0], sample[:, :, 1]) and np.array_equal(sample[:, :, 1], sample[:, :, 2]):
        return True
    apart = np.maximum(np.abs(sample[:, :, 0] - sample[:, :, 1]), np.abs(sample[:, :, 1] - sample[:, :, 2]))
    return bool((apart > GREY_TOLERANCE).mean() < GREY_OUTLIERS)


def is_dark(image: BGRImage, config: LowLightConfig = LowLightConfig()) -> bool:
    """True when enhancement is on and the whole image is darker than ``dark_below`` on average."""
    return config.enabled and mean_luminance(image) < config.dark_below


def _exposure_lifted(image: BGRImage, focus: Region, target_mean: float, *, grey: bool) -> BGRImage:
    """``image`` brightened as a camera renders a weak sensor signal: a gain, then the display tone curve.

    A frame this dark carries little more than the sensor's linear signal in its lowest levels, so its
    levels are multiplied (the gain chosen so that ``focus`` averages about ``target_mean``) and encoded
    with the power curve 1 / ``DISPLAY_GAMMA``. One table for all three channels: hues stay, grey stays grey.
    """
    levels = np.linspace(0.0, 1.0, 256)
    encoded = _grey_of(image, focus)
    # the focus's mean grows as gain ** (1 / gamma) until levels clip: solve for the gain, then refine it
    gain = 1.0
    for _ in range(3):
        current = max(float((np.minimum(levels * gain, 1.0) ** (1.0 / DISPLAY_GAMMA) * 255.0)[encoded].mean()), 1.0)
        gain *= (target_mean / current) ** DISPLAY_GAMMA
    table = (np.minimum(levels * gain, 1.0) ** (1.0 / DISPLAY_GAMMA) * 255.0 + 0.5).astype(np.uint8)
    if grey:  # a near-grey (colour-coded infrared) frame comes out exactly grey
        return cast(BGRImage, cv2.cvtColor(cv2.LUT(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), table), cv2.COLOR_GRAY2BGR))
    return np.ascontiguousarray(cv2.LUT(image, table))


def enhance(image: BGRImage, config: LowLightConfig = LowLightConfig(), region: Region | None = None, *,
            noise_left: float = NOISE_LEFT, max_blur: float = MAX_DENOISE_SIGMA) -> BGRImage:
    """A brighter copy of a dark BGR image, or a higher-contrast copy of a flat one (grey images stay exactly grey).

    ``region`` (default: the whole image) is the part to bring to ``target_mean``: a dark face
    inside a bright border is lifted by its own darkness, not the border's brightness. The image is
    first blurred (sigma at most ``max_blur`` pixels) so that about ``noise_left`` levels of noise
    survive the brightening. A dark region (under ``dark_below``) gets a gain and the display tone
    curve; a flat one that is not dark gets CLAHE on its luminance and a gamma lift.
    """
    whole = (0, 0, int(image.shape[1]), int(image.shape[0]))
    focus = region or whole
    luma = _grey_of(image, focus)
    grey = is_grey(image)  # judged before the blur, which would smooth a colour frame's noise into grey
    gain = config.target_mean / max(float(luma.mean()), 1.0)
    blur = min(max_blur, noise_sigma(luma) * gain / noise_left)
    if blur > 0.5:
        image = cast(BGRImage, cv2.GaussianBlur(image, (0, 0), blur))
    if float(luma.mean()) < config.dark_below:
        # CLAHE's local equalisation amplifies a dark frame's noise most where there is least signal:
        # on night LFW, of 60 images the detector missed after it, a gain and tone curve found 38.
        return _exposure_lifted(image, focus, config.target_mean, grey=grey)
    clahe = cv2.createCLAHE(clipLimit=config.clip_limit,
                            tileGridSize=(config.tile_grid, config.tile_grid))
    if grey:
        equalised = cast(BGRImage, cv2.cvtColor(clahe.apply(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)),
                                                cv2.COLOR_GRAY2BGR))
    else:
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = clahe.apply(lab[:, :, 0])
        equalised = cast(BGRImage, cv2.cvtColor(lab, cv2.COLOR_LAB2BGR))
    current = max(mean_luminance(equalised) if region is None else float(_grey_of(equalised, focus).mean()), 1.0)
    if current < config.target_mean:
        gamma = np.log(config.target_mean / 255.0) / np.log(current / 255.0)
        table = (np.linspace(0.0, 1.0, 256) ** gamma * 255.0 + 0.5).astype(np.uint8)
        equalised = cast(BGRImage, cv2.LUT(equalised, table))
    return np.ascontiguousarray(equalised)
