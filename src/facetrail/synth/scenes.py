"""Deterministic camera scenes made from real photos: people walking in, a camera panning over a group.

Frames are BGR uint8 arrays, generated lazily; the same arguments (and seed)
always give the same frames. Time ``t`` of frame ``i`` is ``i / fps``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facetrail.synth.writer import write_clip
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.samples import sample_image

Darken = Callable[[float], float]
Keyframe = tuple[float, float, float, float]  # (t seconds, centre x, centre y as photo fractions, zoom)

NOISE_MARGIN = 64  # the noise field is this much larger than a frame; each frame reads a random window of it
FEATHER = 0.08  # soft edge of a pasted photo, as a fraction of its shorter side


@dataclass(frozen=True, eq=False)
class Appearance:
    """A person in a composite scene: ``image`` pasted with a soft edge from ``start_s`` to ``end_s``.

    The centre moves linearly from ``start_xy`` to ``end_xy`` (fractions of the
    frame) and the height from ``start_scale`` to ``end_scale`` (fractions of
    the frame height), like someone walking towards the camera.
    """

    image: BGRImage
    start_s: float
    end_s: float
    start_xy: tuple[float, float] = (0.5, 0.5)
    end_xy: tuple[float, float] = (0.5, 0.5)
    start_scale: float = 0.5
    end_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.end_s < self.start_s:
            raise ValueError(f"appearance ends ({self.end_s}) before it starts ({self.start_s})")
        if min(self.start_scale, self.end_scale) <= 0:
            raise ValueError("appearance scales must be positive")

    def visible_at(self, t: float) -> bool:
        """True when the person is in the scene at time ``t``."""
        return self.start_s <= t <= self.end_s

    def placement(self, t: float) -> tuple[float, float, float]:
        """(centre x, centre y, height) at time ``t``, all as frame fractions."""
        span = self.end_s - self.start_s
        a = 0.0 if span <= 0 else min(max((t - self.start_s) / span, 0.0), 1.0)
        x = self.start_xy[0] + a * (self.end_xy[0] - self.start_xy[0])
        y = self.start_xy[1] + a * (self.end_xy[1] - self.start_xy[1])
        return x, y, self.start_scale + a * (self.end_scale - self.start_scale)


@dataclass(frozen=True)
class DemoClip:
    """The demo's clip and its timeline.

    ``appearances``: the (start, end) seconds during which the watchlist player
    (the person of yaoming.jpg) is fully in view; between them the camera looks
    elsewhere. ``dark_from_s`` .. ``dark_to_s`` is the night stretch.
    """

    path: Path
    fps: float
    frames: int
    duration_s: float
    dark_from_s: float
    dark_to_s: float
    description: str
    appearances: tuple[tuple[float, float], ...] = ()
    size: tuple[int, int] = (640, 360)


def frame_times(duration_s: float, fps: float) -> npt.NDArray[np.float64]:
    """Times in seconds of the frames of a clip: ``round(duration_s * fps)`` frames, ``1 / fps`` apart."""
    if fps <= 0 or duration_s < 0:
        raise ValueError(f"need fps > 0 and duration_s >= 0, got {fps}, {duration_s}")
    return np.arange(int(round(duration_s * fps)), dtype=np.float64) / fps


def synthetic_background(size: tuple[int, int] = (960, 540), *, seed: int = 0) -> BGRImage:
    """A static, mildly textured room (wall, floor, a door and a window), the same for the same seed."""
    width, height = size
    rng = np.random.default_rng(seed)
    # Smooth texture: small random field scaled up (cubic), so no high-frequency patterns a detector might read.
    coarse = rng.normal(0.0, 1.0, (max(2, height // 40), max(2, width // 40))).astype(np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 1.5)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    wall = np.array([150, 162, 172], np.float32)  # a warm grey, BGR
    floor = np.array([96, 104, 118], np.float32)
    horizon = int(height * 0.72)
    base = np.empty((height, width, 3), np.float32)
    base[:horizon] = wall * (0.9 + 0.15 * rows[:horizon, :, None])
    base[horizon:] = floor * (1.1 - 0.2 * rows[horizon:, :, None])
    door = (int(width * 0.08), int(height * 0.22), int(width * 0.2), horizon)
    window = (int(width * 0.62), int(height * 0.12), int(width * 0.9), int(height * 0.42))
    base[door[1]:door[3], door[0]:door[2]] = np.array([70, 92, 120], np.float32)
    base[window[1]:window[3], window[0]:window[2]] = np.array([205, 195, 180], np.float32)
    base += (texture * 8.0 + fine * 3.0)[:, :, None]
    return np.ascontiguousarray(np.clip(base + 0.5, 0, 255).astype(np.uint8))


class _Camera:
    """What a camera adds to a rendered frame: a brightness change and sensor noise."""

    def __init__(self, size: tuple[int, int], noise: float, darken: Darken | None, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.darken = darken
        self.noise_field: npt.NDArray[np.int16] | None = None
        if noise > 0:
            width, height = size
            field = self.rng.normal(0.0, noise, (height + NOISE_MARGIN, width + NOISE_MARGIN, 3))
            self.noise_field = np.round(field).astype(np.int16)

    def __call__(self, frame: BGRImage, t: float) -> BGRImage:
        if self.darken is not None:
            factor = max(0.0, float(self.darken(t)))
            if factor != 1.0:
                table = np.clip(np.arange(256, dtype=np.float64) * factor + 0.5, 0, 255).astype(np.uint8)
                frame = np.asarray(cv2.LUT(frame, table), np.uint8)
        if self.noise_field is not None:
            # A random window of one precomputed noise field per frame: fresh-looking noise at a fraction of the
            # cost of drawing ~1.5 million normals per frame.
            dy, dx = (int(v) for v in self.rng.integers(0, NOISE_MARGIN, 2))
            height, width = frame.shape[:2]
            window = self.noise_field[dy:dy + height, dx:dx + width]
            frame = np.clip(frame.astype(np.int16) + window, 0, 255).astype(np.uint8)
        return frame


def _soft_mask(width: int, height: int) -> npt.NDArray[np.float32]:
    """Alpha (h, w) that is 1 inside and fades to 0 over the outer FEATHER of the shorter side."""
    edge = max(1.0, FEATHER * min(width, height))
    xs = np.minimum(np.arange(width, dtype=np.float32) + 0.5, width - np.arange(width, dtype=np.float32) - 0.5)
    ys = np.minimum(np.arange(height, dtype=np.float32) + 0.5, height - np.arange(height, dtype=np.float32) - 0.5)
    ramp_x = np.clip(xs / edge, 0.0, 1.0)
    ramp_y = np.clip(ys / edge, 0.0, 1.0)
    mask: npt.NDArray[np.float32] = ramp_y[:, None] * ramp_x[None, :]
    return mask


def _paste(canvas: BGRImage, photo: BGRImage, cx: float, cy: float, height_frac: float) -> None:
    """Blend ``photo`` into ``canvas`` in place, centred at (cx, cy) and ``height_frac`` of the frame tall."""
    frame_h, frame_w = canvas.shape[:2]
    out_h = max(2, int(round(height_frac * frame_h)))
    out_w = max(2, int(round(photo.shape[1] * out_h / photo.shape[0])))
    left = int(round(cx * frame_w - out_w / 2))
    top = int(round(cy * frame_h - out_h / 2))
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + out_w, frame_w), min(top + out_h, frame_h)
    if x1 <= x0 or y1 <= y0:
        return
    shrinking = out_h < photo.shape[0]
    resized = cv2.resize(photo, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    alpha = _soft_mask(out_w, out_h)[y0 - top:y1 - top, x0 - left:x1 - left, None]
    part = resized[y0 - top:y1 - top, x0 - left:x1 - left].astype(np.float32)
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(region + alpha * (part - region) + 0.5, 0, 255).astype(np.uint8)


def composite_scene(appearances: Sequence[Appearance], *, duration_s: float, fps: float = 10.0,
                    size: tuple[int, int] = (960, 540), background: BGRImage | None = None,
                    noise: float = 0.0, darken: Darken | None = None, seed: int = 0) -> Iterator[BGRImage]:
    """Frames of a static camera watching people come and go.

    ``background`` (resized to ``size``) defaults to ``synthetic_background``;
    each appearance is pasted only for ``start_s <= t <= end_s``, later ones
    on top. ``noise`` is the sensor noise sigma in grey levels (``seed``
    picks it); ``darken(t)`` gives the brightness factor at time t (1 normal,
    0.15 night).
    """
    width, height = size
    if background is None:
        scene = synthetic_background(size)
    else:
        scene = np.asarray(cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
    camera = _Camera(size, noise, darken, seed)
    for t in frame_times(duration_s, fps):
        frame = scene.copy()
        for person in appearances:
            if person.visible_at(float(t)):
                _paste(frame, person.image, *person.placement(float(t)))
        yield camera(frame, float(t))


def interpolate_keyframes(keyframes: Sequence[Keyframe], t: float) -> tuple[float, float, float]:
    """(cx, cy, zoom) at time ``t``, linear between keyframes and held before the first and after the last."""
    if not keyframes:
        raise ValueError("need at least one keyframe")
    times = [k[0] for k in keyframes]
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError("keyframes must be in time order")
    values = np.asarray([k[1:] for k in keyframes], np.float64)
    cx, cy, zoom = (float(np.interp(t, times, values[:, i])) for i in range(3))
    return cx, cy, zoom


def view_rect(photo_size: tuple[int, int], size: tuple[int, int], cx: float, cy: float,
              zoom: float) -> tuple[float, float, float, float]:
    """The part of the photo (x0, y0, x1, y1 in photo pixels) a frame of ``size`` shows.

    Zoom 1 is the largest view of the frame's aspect ratio that fits in the
    photo; zoom 2 shows half as wide. A view that fits is kept inside the
    photo (the centre is clamped), so the frame never shows past its edge.
    """
    if zoom <= 0:
        raise ValueError(f"zoom must be positive, got {zoom}")
    photo_w, photo_h = photo_size
    width, height = size
    fit_w = min(photo_w, photo_h * width / height)
    view_w = fit_w / zoom
    view_h = view_w * height / width
    centre_x, centre_y = cx * photo_w, cy * photo_h
    if view_w <= photo_w:
        centre_x = min(max(centre_x, view_w / 2), photo_w - view_w / 2)
    if view_h <= photo_h:
        centre_y = min(max(centre_y, view_h / 2), photo_h - view_h / 2)
    return centre_x - view_w / 2, centre_y - view_h / 2, centre_x + view_w / 2, centre_y + view_h / 2


def pan_zoom(image: BGRImage, *, duration_s: float, fps: float = 10.0, size: tuple[int, int] = (960, 540),
             keyframes: Sequence[Keyframe] = ((0.0, 0.5, 0.5, 1.0),), noise: float = 0.0,
             darken: Darken | None = None, seed: int = 0) -> Iterator[BGRImage]:
    """Frames of a camera panning and zooming across a still photo.

    ``keyframes`` are (t, cx, cy, zoom): the view centre as fractions of the
    photo and the zoom (see ``view_rect``), linearly interpolated in between.
    ``noise`` and ``darken`` as in ``composite_scene``.
    """
    width, height = size
    photo_size = (int(image.shape[1]), int(image.shape[0]))
    camera = _Camera(size, noise, darken, seed)
    for t in frame_times(duration_s, fps):
        x0, y0, x1, _ = view_rect(photo_size, size, *interpolate_keyframes(keyframes, float(t)))
        scale = width / (x1 - x0)
        matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], np.float64)
        frame = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        yield camera(np.ascontiguousarray(frame, dtype=np.uint8), float(t))


def face_crop(image: BGRImage, box: Sequence[float], *, margin: float = 1.0) -> BGRImage:
    """Head-and-shoulders region around a face box (x0, y0, x1, y1) of a group photo.

    ``margin`` is the extra space on each side as a fraction of the box size
    (more below the face, for the shoulders); the crop is clipped to the photo.
    """
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        raise ValueError(f"empty face box {tuple(box)}")
    left = int(max(0.0, x0 - margin * w))
    right = int(min(float(image.shape[1]), x1 + margin * w))
    top = int(max(0.0, y0 - margin * h * 0.8))
    bottom = int(min(float(image.shape[0]), y1 + margin * h * 1.6))
    return np.ascontiguousarray(image[top:bottom, left:right])


# --- the demo clip -------------------------------------------------------------------------------------------------

# Face box of the watchlist player (number 13, back row; the person of yaoming.jpg) in players.jpg, in pixels.
DEMO_PLAYER_BOX = (721.0, 142.0, 765.0, 192.0)
DEMO_DURATION_S = 7.0
# 640x360 is what the detector sees of a larger frame anyway, and it halves the build and decode time.
DEMO_SIZE = (640, 360)
DEMO_DARK = (4.5, 6.5)
DEMO_DARK_LEVEL = 0.2
DEMO_NOISE = 3.0
DEMO_KEYFRAMES: tuple[Keyframe, ...] = (
    (0.0, 0.62, 0.30, 2.4),   # close on the back row, the player in view
    (1.5, 0.58, 0.32, 2.2),   # a slow drift left, zooming out a little
    # Pan right and down, zooming in on number 4 in the front row: away from him, and below the crowd, whose
    # tiny, noisy faces drift towards the match threshold when magnified.
    (2.7, 0.83, 0.51, 3.7),
    (4.0, 0.83, 0.50, 3.6),   # hold there
    (5.0, 0.60, 0.30, 2.4),   # pan back: the player comes into view again (in the dark)
    (7.0, 0.62, 0.28, 2.8),   # slow zoom in on him
)


def _demo_darken(t: float) -> float:
    return DEMO_DARK_LEVEL if DEMO_DARK[0] <= t < DEMO_DARK[1] else 1.0


def demo_frames(players: BGRImage | None = None, *, fps: float = 10.0,
                size: tuple[int, int] = DEMO_SIZE) -> Iterator[BGRImage]:
    """The frames of the demo clip (see ``demo_clip``), without writing them."""
    photo = players if players is not None else load_image(sample_image("players.jpg"))
    return pan_zoom(photo, duration_s=DEMO_DURATION_S, fps=fps, size=size, keyframes=DEMO_KEYFRAMES,
                    noise=DEMO_NOISE, darken=_demo_darken, seed=13)


def demo_player_visible(t: float, *, photo_size: tuple[int, int] = (1237, 800),
                        size: tuple[int, int] = DEMO_SIZE) -> bool:
    """True when the demo player's whole face box is inside the demo camera's view at time ``t``."""
    x0, y0, x1, y1 = view_rect(photo_size, size, *interpolate_keyframes(DEMO_KEYFRAMES, t))
    bx0, by0, bx1, by1 = DEMO_PLAYER_BOX
    return x0 <= bx0 and bx1 <= x1 and y0 <= by0 and by1 <= y1


def demo_clip(path: Path, *, fps: float = 10.0, size: tuple[int, int] = DEMO_SIZE) -> DemoClip:
    """Write the demo's camera clip to ``path`` and describe its timeline.

    A camera pans and zooms across players.jpg (7 s): the player of
    yaoming.jpg is in view, the camera pans away to the other end of the team
    and back to him, so he makes two appearances; sensor noise throughout and
    a night stretch (20% brightness) over most of his second appearance. Built only from images the model package ships.
    """
    players = load_image(sample_image("players.jpg"))
    count = write_clip(path, demo_frames(players, fps=fps, size=size), fps=fps)
    photo_size = (int(players.shape[1]), int(players.shape[0]))
    times = frame_times(DEMO_DURATION_S, fps)
    visible = [demo_player_visible(float(t), photo_size=photo_size, size=size) for t in times]
    spans = _runs(times, visible, fps)
    text = (f"camera panning across players.jpg, {DEMO_DURATION_S:g} s at {fps:g} fps; watchlist player in view "
            + ", ".join(f"{a:g}-{b:g} s" for a, b in spans)
            + f"; dark ({DEMO_DARK_LEVEL:.0%} brightness) {DEMO_DARK[0]:g}-{DEMO_DARK[1]:g} s")
    return DemoClip(Path(path), fps, count, count / fps, DEMO_DARK[0], DEMO_DARK[1], text, spans, size)


def _runs(times: npt.NDArray[np.float64], flags: Sequence[bool], fps: float) -> tuple[tuple[float, float], ...]:
    """(first, last + 1/fps) seconds of each run of True flags."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, flag in zip(times, flags, strict=True):
        if flag and start is None:
            start = float(t)
        elif not flag and start is not None:
            spans.append((start, round(float(t), 6)))
            start = None
    if start is not None:
        spans.append((start, round(float(times[-1]) + 1 / fps, 6)))
    return tuple(spans)
