"""The face engine: detect, enhance when dark, align, embed and assess faces.

There is one path from an image to an embedding: ``detect_frames`` (detect in
one batch; where no confident face was found, look again inside a border and on
an enhanced copy when the image is dark, that copy at half size too when still
nothing is confident; look for turned faces when asked; re-check rolled faces
upright), ``align_faces_of`` (crop, score, check the fit) and ``embed_faces``.
``analyze_many`` runs all three for photos (keeping a photo's only face even
when its landmarks fit no frontal face, with a quality of 0); the video pipeline
calls them in turn, aligning and embedding only the faces it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from facetrail.vision.align import AlignedFaces, align_faces
from facetrail.vision.border import add_border, border_geometry, remove_border
from facetrail.vision.detector import INPUT_SIZE, SCORE_THRESHOLD, VIDEO_CANVAS, ScrfdDetector, VideoCanvas
from facetrail.vision.embedder import ArcFaceEmbedder, Embedder
from facetrail.vision.image import BGRImage, rotate
from facetrail.vision.lowlight import LowLightConfig, dark_faces_region, enhance, region_to_enhance
from facetrail.vision.quality import MAX_RESIDUAL_PX, assess
from facetrail.vision.registry import RECOGNISERS, ModelSpec
from facetrail.vision.types import FaceDetections, FaceEmbeddings, FaceQuality, FloatArray
from facetrail.vision.upright import verify_upright

log = logging.getLogger(__name__)

CENTRE_SPREAD = 0.25  # how fast a face's claim to be the main one fades towards the edge (image fractions)
CONFIDENT_SCORE = 0.6  # a face found with less confidence than this asks for a second look (bordered, enhanced)
# An enhanced image with no confident face is looked at once more at this share of the size the detector saw it
# at (an octave down). Of the 92 night LFW View 1 images (240 px, 12% exposure, noise 8) the enhanced look missed,
# 34 had a face found at half size (34-41 between 0.6 and 0.4 of the size, 26 at 0.75, 2 at full size);
# on its 3,200 pairs: 89.69% -> 90.59%, 92 -> 60 images without a face.
SECOND_SCALE = 0.5

Recogniser = Literal["arcface", "dlib"]


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the face engine.

    ``try_rotations``: when an image has no upright face, look again with the
    image turned by 90, 180 and 270 degrees (costs up to three more detector
    runs on faceless images; meant for still photos, off for video).
    ``max_alignment_residual``: faces whose landmarks fit the face template
    worse than this (crop pixels) are dropped rather than embedded misaligned
    (``analyze_many`` keeps the most confident of them when a photo has no
    other face, with a quality of 0; the video pipeline never does).
    ``fit_canvas``: images smaller than ``detector_input`` are detected at
    their own size (rounded up to 32) instead of being enlarged into it.
    ``face_crops``: the images are face captures (ID photos, a camera's face
    crops) that the face may fill: look inside a border first. Without it, an
    image no larger than the detector's canvas is looked at inside a border
    only when the plain look found no confident face.
    ``video_canvas``: the canvas of video frames (``video_input``): "fit" scales
    a frame to the longer side of ``detector_input`` on a canvas rounded up to
    32 (no padding), "square" letterboxes it as photos are.
    """

    recogniser: Recogniser = "arcface"
    detector_input: tuple[int, int] | int = (INPUT_SIZE, INPUT_SIZE)
    score_threshold: float = SCORE_THRESHOLD
    low_light: LowLightConfig = field(default_factory=LowLightConfig)
    try_rotations: bool = False
    fit_canvas: bool = True
    face_crops: bool = False
    video_canvas: VideoCanvas = VIDEO_CANVAS
    max_alignment_residual: float = MAX_RESIDUAL_PX
    providers: tuple[str, ...] | str = "auto"
    threads: int = 0


@dataclass(frozen=True, eq=False)
class ImageFaces:
    """Everything the engine found in one image, row i of each field is face i."""

    detections: FaceDetections
    embeddings: FaceEmbeddings
    qualities: list[FaceQuality]
    enhanced: bool = False
    dropped_misaligned: int = 0
    aligned: AlignedFaces | None = None  # the 112x112 crops the embeddings were made from
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the analysed image

    def __len__(self) -> int:
        return len(self.detections)

    def primary(self) -> int | None:
        """Index of the main face: the largest, weighted towards the image centre.

        A large face at the edge of a portrait (a bystander) loses to the
        subject in the middle: on LFW View 1 this choice, rather than the
        largest face alone, raised 10-fold accuracy from 98.7% to 99.1%.
        None when there is no face.
        """
        if len(self) == 0:
            return None
        width, height = self.image_size
        if width <= 0 or height <= 0:
            return int(np.argmax(self.detections.areas))
        xyxy = self.detections.xyxy
        dx = ((xyxy[:, 0] + xyxy[:, 2]) / 2 - width / 2) / width
        dy = ((xyxy[:, 1] + xyxy[:, 3]) / 2 - height / 2) / height
        weight = self.detections.areas * np.exp(-(np.hypot(dx, dy) / CENTRE_SPREAD) ** 2)
        return int(np.argmax(weight))


@dataclass(frozen=True, eq=False)
class DetectedFrame:
    """The faces detected in one image, before alignment."""

    image: BGRImage  # the image as analysed (enhanced when that look found the better faces)
    faces: FaceDetections
    enhanced: bool


@dataclass(frozen=True, eq=False)
class _Look:
    """One way of looking at an image: the faces found, in the image's own coordinates."""

    image: BGRImage  # the original or its enhanced copy (never the bordered one)
    faces: FaceDetections
    enhanced: bool

    @property
    def best_score(self) -> float:
        return float(self.faces.scores.max()) if len(self.faces) else 0.0

    @property
    def confident(self) -> bool:
        return self.best_score >= CONFIDENT_SCORE


@dataclass(frozen=True, eq=False)
class AlignedFaceSet:
    """Faces aligned to 112x112 crops, each with its quality and whether its landmarks fit a face."""

    aligned: AlignedFaces
    qualities: list[FaceQuality]
    fits: npt.NDArray[np.bool_]  # False: residual above max_alignment_residual (never embedded)


def align_faces_of(image: BGRImage, faces: FaceDetections, max_residual: float) -> AlignedFaceSet:
    """The engine's alignment step: 112x112 crops of ``faces``, their qualities, and which fit a face."""
    aligned = align_faces(image, faces.landmarks)
    return AlignedFaceSet(aligned, assess(faces, aligned), aligned.residuals <= max_residual)


class FaceEngine:
    """Detector plus recogniser, built once and reused. Thread-safe for the ArcFace backend."""

    def __init__(self, config: EngineConfig = EngineConfig()) -> None:
        self.config = config
        self.detector = ScrfdDetector(input_size=config.detector_input,
                                      score_threshold=config.score_threshold, fit_canvas=config.fit_canvas,
                                      providers=config.providers, threads=config.threads)
        self.embedder: Embedder = make_embedder(config)

    @property
    def video_input(self) -> tuple[int, int] | int:
        """The detector input of video frames (``detect_frames(detector_input=...)``), by ``video_canvas``."""
        size = self.config.detector_input
        if self.config.video_canvas == "square":
            return size
        return size if isinstance(size, int) else max(size)

    @property
    def recogniser(self) -> ModelSpec:
        """Manifest entry of the recogniser in use."""
        return self.embedder.spec

    @property
    def on_accelerator(self) -> bool:
        """True when the detector runs on a GPU (or other accelerator) provider rather than the CPU."""
        return self.detector.providers[0] != "CPUExecutionProvider"

    @property
    def threshold(self) -> float:
        """Calibrated same-person cosine threshold of the recogniser."""
        calibration = self.recogniser.calibration
        if calibration is None:
            raise RuntimeError(f"{self.recogniser.name} has no calibrated threshold")
        return calibration.threshold

    def analyze(self, image: BGRImage) -> ImageFaces:
        """Faces, embeddings and qualities of one BGR image."""
        return self.analyze_many([image])[0]

    def analyze_many(self, images: Sequence[BGRImage]) -> list[ImageFaces]:
        """Faces of several images, detected per canvas batch and embedded in one call."""
        frames = self.detect_frames(images)
        kept: list[tuple[BGRImage, FaceDetections, AlignedFaces]] = []
        qualities: list[list[FaceQuality]] = []
        dropped: list[int] = []
        for i, frame in enumerate(frames):
            shaped = align_faces_of(frame.image, frame.faces, self.config.max_alignment_residual)
            good = _fitting_or_alone(shaped, frame.faces.scores)
            faces, crops = frame.faces, shaped.aligned
            dropped.append(faces.dropped + int((~good).sum()))
            if not good.all():
                log.debug("image %d: dropped %d face(s) whose landmarks do not fit a face",
                          i, int((~good).sum()))
                faces = faces.select(good)
                crops = AlignedFaces(crops.crops[good], crops.matrices[good], crops.residuals[good])
            kept.append((frame.image, faces, crops))
            qualities.append([q for q, fit in zip(shaped.qualities, good, strict=True) if fit])
        embeddings = self.embed_faces(kept)
        return [ImageFaces(faces, emb, quality, frame.enhanced, drop, crops,
                           (int(image.shape[1]), int(image.shape[0])))
                for (image, faces, crops), emb, quality, frame, drop
                in zip(kept, embeddings, qualities, frames, dropped, strict=True)]

    def detect_frames(self, images: Sequence[BGRImage], low_light: Sequence[LowLightConfig] | None = None, *,
                      try_rotations: bool | None = None,
                      detector_input: tuple[int, int] | int | None = None) -> list[DetectedFrame]:
        """Faces of several images in one detector batch, before alignment.

        Each image is looked at plainly first. Where no confident face was found, an image that a
        face may fill (no larger than the detector's canvas, or any with ``face_crops``) is looked
        at inside a border, and an image that is dark or flat where a face may be (by ``low_light``,
        one per image, else the engine's setting) is looked at enhanced, plainly and bordered, and
        when that finds nothing confident, enhanced at half size; the look with the most confident
        face is kept, so a second look never loses a face. Dark faces
        kept from the plain look are aligned on an enhanced copy (``DetectedFrame.image``). Every
        look runs as one detector batch over the images that need it. With ``try_rotations`` (default:
        the engine's) an image without an upright face is searched turned; rolled faces are
        re-checked upright. ``detector_input``: another canvas than the engine's (``video_input`` for video).
        """
        detector = self.detector if detector_input is None else self.detector.with_input_size(detector_input)
        lights = list(low_light) if low_light is not None else [self.config.low_light] * len(images)
        if len(lights) != len(images):
            raise ValueError(f"one low-light setting per image is needed ({len(lights)} for {len(images)})")
        looks = self._look(list(images), enhanced=False, detector=detector)
        regions = [None if look.confident else region_to_enhance(images[i], _weak_boxes(look.faces), lights[i])
                   for i, look in enumerate(looks)]
        dark = [i for i, region in enumerate(regions) if region is not None]
        if dark:
            brightened = [enhance(images[i], lights[i], regions[i]) for i in dark]
            enhanced = self._look(brightened, enhanced=True, detector=detector)
            for i, look in zip(dark, enhanced, strict=True):
                if look.best_score > looks[i].best_score:
                    looks[i] = look
            halves = [(i, image) for i, image in zip(dark, brightened, strict=True) if not looks[i].confident]
            for (i, _), look in zip(halves, self._detect_shrunk([image for _, image in halves], detector), strict=True):
                if look.best_score > looks[i].best_score:
                    looks[i] = look
        if self.config.try_rotations if try_rotations is None else try_rotations:
            looks = [self._rotated_if_better(look) for look in looks]
        looks = [self._embed_dark_faces_enhanced(look, image, light)
                 for look, image, light in zip(looks, images, lights, strict=True)]
        return [DetectedFrame(look.image, verify_upright(detector, look.image, look.faces), look.enhanced)
                for look in looks]

    @staticmethod
    def _embed_dark_faces_enhanced(look: _Look, image: BGRImage, light: LowLightConfig) -> _Look:
        """The look's faces on a copy of ``image`` enhanced for the region of its dark faces, if it has some.

        Brightening the faces themselves, rather than the darkest third the search brightened, gives the
        better embeddings (night LFW, 73 faces: mean cosine with the daylight photo 0.448 against 0.419).
        """
        region = dark_faces_region(image, look.faces.xyxy, light)
        return look if region is None else _Look(enhance(image, light, region), look.faces, True)

    def _look(self, images: list[BGRImage], *, enhanced: bool, detector: ScrfdDetector) -> list[_Look]:
        """Faces of each image, plainly and, where a face may fill it, inside a border (the better look)."""
        crops = self.config.face_crops
        looks = self._detect(images, bordered=crops, enhanced=enhanced, detector=detector)
        again = [i for i, look in enumerate(looks) if not look.confident and (crops or self._fits_canvas(images[i]))]
        if again:
            second = self._detect([images[i] for i in again], bordered=not crops, enhanced=enhanced, detector=detector)
            for i, look in zip(again, second, strict=True):
                # in a plain look only a confident face inside a border counts: a weak one there is often a face
                # upside down read with wrong landmarks (conditions/rotation/r180.jpg), which would embed wrongly;
                # in an enhanced (dark) look weak faces are the rule (night LFW: 22 of 104 missed faces found)
                if (crops or enhanced or look.confident) and look.best_score > looks[i].best_score:
                    looks[i] = look
        return looks

    def _detect(self, images: list[BGRImage], *, bordered: bool, enhanced: bool,
                detector: ScrfdDetector) -> list[_Look]:
        """One detector batch over ``images`` (each inside a border when asked), in their own coordinates."""
        if not bordered:
            return [_Look(image, faces, enhanced) for image, faces in zip(images, detector.detect_many(images),
                                                                          strict=True)]
        found = detector.detect_many([add_border(image)[0] for image in images])
        looks = []
        for image, faces in zip(images, found, strict=True):
            height, width = image.shape[:2]
            _, offset = border_geometry(width, height)
            looks.append(_Look(image, remove_border(faces, offset, width, height), enhanced))
        return looks

    def _detect_shrunk(self, images: list[BGRImage], detector: ScrfdDetector) -> list[_Look]:
        """Enhanced images detected again an octave down (one batch), faces in the images' own coordinates.

        Brightening lifts the sensor noise with the signal, and SCRFD reads a noisy face better smaller:
        shrinking by area to half the size the detector saw the image at averages four pixels into one,
        halving the noise, while the face keeps enough pixels (a small image is still enlarged to the
        detector's smallest canvas). A stronger blur cannot do that without wiping out the face's edges
        (see ``lowlight``). A frame larger than the canvas is shrunk to half the canvas, not half its own
        size, which the detector would have seen at the scale of the first look.
        """
        shrunk: list[BGRImage] = []
        for image in images:
            height, width = image.shape[:2]
            canvas_w, canvas_h = detector.canvas_for(width, height)
            factor = SECOND_SCALE * min(1.0, canvas_w / width, canvas_h / height)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            shrunk.append(cast(BGRImage, cv2.resize(image, size, interpolation=cv2.INTER_AREA)))
        looks = []
        for image, small, faces in zip(images, shrunk, detector.detect_many(shrunk), strict=True):
            if len(faces):
                sx, sy = image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]
                scale = np.array([sx, sy], np.float32)
                faces = FaceDetections((faces.xyxy.reshape(-1, 2, 2) * scale).reshape(-1, 4), faces.scores.copy(),
                                       faces.landmarks * scale, faces.rotation, faces.dropped)
            looks.append(_Look(image, faces, True))
        return looks

    def _fits_canvas(self, image: BGRImage) -> bool:
        """True when the image is no larger than the detector's configured canvas (a face may fill it)."""
        size = self.config.detector_input
        side = size if isinstance(size, int) else max(size)
        return int(max(image.shape[:2])) <= side

    def embed_faces(self, items: Sequence[tuple[BGRImage, FaceDetections, AlignedFaces]]) -> list[FaceEmbeddings]:
        """Unit embeddings of aligned faces, per (image, its faces, their crops), in shared batches."""
        return self.embedder.embed_many([(image, faces) for image, faces, _ in items],
                                        [aligned for _, _, aligned in items])

    def _rotated_if_better(self, look: _Look) -> _Look:
        """Without a confident upright face, the image turned by 90/180/270 degrees, if that finds better."""
        if look.confident:
            return look
        rotated = _Look(look.image, self._detect_rotated(look.image), look.enhanced)
        return rotated if rotated.best_score > look.best_score else look

    def _detect_rotated(self, image: BGRImage) -> FaceDetections:
        """The faces of the quarter turn with the most confident face (the first confident one ends the search)."""
        height, width = image.shape[:2]
        best = FaceDetections.empty()
        for degrees in (90, 180, 270):
            faces = self.detector.detect(rotate(image, degrees))
            if len(faces) and (len(best) == 0 or faces.scores.max() > best.scores.max()):
                boxes = _unrotate(faces.xyxy.reshape(-1, 2, 2), degrees, width, height)
                xyxy = np.concatenate([boxes.min(axis=1), boxes.max(axis=1)], axis=1)
                points = _unrotate(faces.landmarks, degrees, width, height)
                best = FaceDetections(xyxy.astype(np.float32), faces.scores.copy(),
                                      points.astype(np.float32), rotation=degrees)
                if best.scores.max() >= CONFIDENT_SCORE:
                    break
        return best


def _fitting_or_alone(shaped: AlignedFaceSet, scores: FloatArray) -> npt.NDArray[np.bool_]:
    """Which faces of a photo to embed: those whose landmarks fit a face or, when none does, the most confident.

    A photo is analysed to give its face: a full profile (LFW's George_Clooney_0002, residual 12.5) fits the
    frontal template badly yet is the only face there, and giving none loses the photo. Such a face keeps its
    quality's alignment part of 0 (quality score 0), so enrolment refuses it as too low quality and says why.
    Video keeps the strict rule (``align_faces_of``'s ``fits``): a track has other shots to give.
    """
    keep = shaped.fits.copy()
    if len(keep) and not keep.any():
        keep[int(np.argmax(scores))] = True
    return keep


def _weak_boxes(faces: FaceDetections) -> FloatArray:
    """Boxes of the faces found with less than CONFIDENT_SCORE."""
    return faces.xyxy[faces.scores < CONFIDENT_SCORE]


def _unrotate(points: FloatArray, degrees: int, width: int, height: int) -> FloatArray:
    """Map (..., 2) points found in an image turned clockwise by ``degrees`` back to the original."""
    x, y = points[..., 0], points[..., 1]
    if degrees == 90:
        return np.stack([y, height - 1 - x], axis=-1)
    if degrees == 180:
        return np.stack([width - 1 - x, height - 1 - y], axis=-1)
    return np.stack([width - 1 - y, x], axis=-1)


def make_embedder(config: EngineConfig) -> Embedder:
    """The recogniser ``config`` names, loaded alone (no detector): what ``FaceEngine.embedder`` is."""
    if config.recogniser == "dlib":
        from facetrail.vision.dlib_backend import DlibEmbedder

        return DlibEmbedder()
    if config.recogniser not in RECOGNISERS:
        raise ValueError(f"unknown recogniser {config.recogniser!r}; choose from {list(RECOGNISERS)}")
    return ArcFaceEmbedder(providers=config.providers, threads=config.threads)
