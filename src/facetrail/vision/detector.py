"""SCRFD face detector on onnxruntime: boxes, scores and 5 landmarks.

Decoding follows the SCRFD paper's anchor-free heads (strides 8/16/32, two
anchors per location, distances scaled by the stride), as InsightFace does, so
landmarks match InsightFace's own detector on the same weights.

The canvas fits the image: an image smaller than the configured canvas is
detected on a square canvas of its own longer side rounded up to 32, never
enlarged into the full 640x640. Enlarging a 250x250 LFW photo 2.56 times made
SCRFD miss faces or score them low: on LFW View 1's 4,992 images, 12 gave no
detection at all at 640x640 and every one gave a face at 256x256 (10-fold
accuracy of the 3,200 pairs 99.00% -> 99.69%; tests/test_hard_faces.py). Frames at least as
large as the canvas are letterboxed exactly as InsightFace does; a small image
is detected exactly as InsightFace does with ``det_size`` set to its canvas.
Video frames go on the canvas that fits them (``with_input_size(640)``: 640x384
for 16:9, no padding), again exactly as InsightFace with that ``det_size``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from facetrail.vision.image import BGRImage
from facetrail.vision.registry import SCRFD_500M, ModelSpec
from facetrail.vision.runtime import create_session
from facetrail.vision.types import FaceDetections, FloatArray

INPUT_SIZE = 640  # InsightFace's canvas: frames are letterboxed into 640x640
SCORE_THRESHOLD = 0.5
VideoCanvas = Literal["fit", "square"]
# Video frames are detected on the fitted canvas (longer side ``input_size``, rounded up to 32: 640x384 for a 16:9
# frame) rather than letterboxed into the square. On street.mp4 (1080p and 640x360), the demo clip and a door clip
# the pipeline names the same people with the same tracks, and the detector network costs 0.59-0.61x the CPU
# (whole frame 1.21-1.36x less; bench/frame_cost.py, tests/test_video_canvas.py). It equals InsightFace with
# det_size set to that canvas (tests/test_exactness.py).
VIDEO_CANVAS: VideoCanvas = "fit"
# The smallest canvas a small image is fitted to. Blowing a 250-px photo up into 640x640 loses faces, but so
# does detecting a tiny image at its own size: LFW View 1 (pairsDevTest, first 100 pairs, faces found of 169
# images, 10-fold accuracy) shrunk to 32 px: own size 59 faces missing, 11%; at least 128: 0, 92%; at least
# 160: 0, 95%; at least 256: 0, 88%; the 640 canvas (InsightFace): 2 missing, 94%. At 24 px: 126 / 5%, 1 / 89%,
# 1 / 85%, 2 / 81%, 27 / 61%. Images of 160 px and more are not affected.
MIN_FIT_CANVAS = 160
STRIDES = (8, 16, 32)
MEAN, SCALE = 127.5, 1.0 / 128.0  # InsightFace's SCRFD input normalisation (exact in float32)
PAD_VALUE = (0.0 - MEAN) * SCALE  # a black letterbox pixel, normalised
MAX_CACHED_SHAPES = 8
ANCHORS_PER_LOCATION = 2


@dataclass(frozen=True)
class _Letterbox:
    resized: tuple[int, int]  # (width, height) of the scaled image, placed top-left
    canvas: tuple[int, int]  # (width, height) fed to the model

    @property
    def scale(self) -> float:
        """Model pixels per image pixel (InsightFace measures it on the height)."""
        return self.resized[1] / self._source_height

    _source_height: int = 1


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DetectorSettings:
    """The detector's canvas and confidence (the configuration's ``detector:``)."""

    input_size: int = Field(default=INPUT_SIZE, ge=160, le=1920, multiple_of=32, title="Detector input size",
                            description="Frames are letterboxed into this square (pixels); larger finds smaller "
                                        "faces and costs more. Smaller images are detected at their own size "
                                        "(rounded up to 32), never enlarged into it.")
    score_threshold: float = Field(default=SCORE_THRESHOLD, gt=0, lt=1, title="Detection score threshold",
                                   description="Faces the detector is less sure of than this are ignored.")
    video_canvas: VideoCanvas = Field(default=VIDEO_CANVAS, title="Canvas of video frames",
                                      description="fit: a video frame is scaled to input_size on its longer side "
                                                  "and detected on a canvas rounded up to 32 pixels (640x384 for a "
                                                  "16:9 frame), no work spent on padding. square: letterboxed into "
                                                  "the input_size square, exactly as InsightFace. Photos "
                                                  "(enrolment, search) always use the square.")


class ScrfdDetector:
    """Finds faces in BGR images of any size.

    ``input_size`` is either a fixed (width, height) canvas the image is
    letterboxed into (InsightFace's convention; (640, 640) by default), or an
    int: the longer side the image is scaled to, with the canvas rounded up to
    a multiple of 32, which spends no compute on padding for wide frames.
    Larger inputs find smaller faces and cost more. With ``fit_canvas`` (the
    default) an image smaller than that canvas gets a square canvas of its own
    longer side rounded up to 32 (at least ``MIN_FIT_CANVAS``) instead of
    being enlarged into it.
    ``score_threshold`` drops candidates below that confidence;
    ``nms_threshold`` is the IoU above which overlapping candidates are merged.
    Thread-safe.
    """

    def __init__(self, spec: ModelSpec = SCRFD_500M, *,
                 input_size: tuple[int, int] | int = (INPUT_SIZE, INPUT_SIZE),
                 score_threshold: float = SCORE_THRESHOLD, nms_threshold: float = 0.4, fit_canvas: bool = True,
                 providers: Sequence[str] | str = "auto", threads: int = 0) -> None:
        if isinstance(input_size, int):
            if input_size < 32:
                raise ValueError("detector input_size must be at least 32 pixels")
        elif min(input_size) < 32:
            raise ValueError("detector input_size must be at least 32x32 pixels")
        self.spec = spec
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.fit_canvas = fit_canvas
        self._session = create_session(spec.path(), providers, threads)
        self._input_name = self._session.get_inputs()[0].name
        self._buffers = threading.local()  # per thread: the reused input batches (the engine is shared)
        self._centres: dict[tuple[int, int, int], FloatArray] = {}

    def with_input_size(self, input_size: tuple[int, int] | int) -> ScrfdDetector:
        """This detector on another canvas (see the class), sharing its onnxruntime session and buffers."""
        if input_size == self.input_size:
            return self
        other = copy.copy(self)
        other.input_size = input_size
        return other

    @property
    def providers(self) -> list[str]:
        """The onnxruntime providers this detector's session runs on."""
        return list(self._session.get_providers())

    def detect(self, image: BGRImage) -> FaceDetections:
        """Faces in one BGR uint8 image (h, w, 3), sorted by descending score."""
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[BGRImage]) -> list[FaceDetections]:
        """Faces in several images; images sharing a canvas run in one batch."""
        boxes = [self._letterbox_geometry(img.shape[1], img.shape[0]) for img in images]
        results: list[FaceDetections | None] = [None] * len(images)
        by_canvas: dict[tuple[int, int], list[int]] = {}
        for i, box in enumerate(boxes):
            by_canvas.setdefault(box.canvas, []).append(i)
        for canvas, members in by_canvas.items():
            batch = self._batch_buffer(len(members), canvas)
            for row, i in enumerate(members):
                self._prepare(images[i], boxes[i], out=batch[row])
            outputs = self._session.run(None, {self._input_name: batch})
            for row, i in enumerate(members):
                results[i] = self._decode([o[row] for o in outputs], canvas, boxes[i].scale)
        return [r if r is not None else FaceDetections.empty() for r in results]

    def canvas_for(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) of the canvas an image of this size is detected on."""
        return self._letterbox_geometry(width, height).canvas

    def _letterbox_geometry(self, width: int, height: int) -> _Letterbox:
        own_side = max(MIN_FIT_CANVAS, _round_up_32(max(width, height))) if self.fit_canvas else None
        if isinstance(self.input_size, int):
            longer = self.input_size if own_side is None else min(self.input_size, own_side)
            # computed as InsightFace does for det_size = this canvas, so both scale the frame identically
            if width >= height:
                new_w, new_h = longer, max(1, int(longer * (height / width)))
            else:
                new_w, new_h = max(1, int(longer / (height / width))), longer
            canvas = (_round_up_32(new_w), _round_up_32(new_h))
        else:
            canvas = self.input_size
            if own_side is not None:
                canvas = (min(canvas[0], own_side), min(canvas[1], own_side))
            if height / width > canvas[1] / canvas[0]:
                new_h = canvas[1]
                new_w = max(1, int(new_h / (height / width)))
            else:
                new_w = canvas[0]
                new_h = max(1, int(new_w * (height / width)))
        return _Letterbox((new_w, new_h), canvas, height)

    def _prepare(self, image: BGRImage, box: _Letterbox, out: FloatArray | None = None) -> FloatArray:
        """The detector's input (3, h, w): RGB, (x - 127.5) / 128, the image top-left on a black canvas.

        Written into ``out`` when given (a reused buffer, so that no 5 MB array is made per frame); the values
        are exactly OpenCV's ``blobFromImage`` of the letterboxed canvas (both steps are exact in float32).
        """
        new_w, new_h = box.resized
        blob = out if out is not None else np.empty((3, box.canvas[1], box.canvas[0]), np.float32)
        blob[:, new_h:, :].fill(PAD_VALUE)  # only the padding: the image's part is written below
        blob[:, :new_h, new_w:].fill(PAD_VALUE)
        same = (image.shape[1], image.shape[0]) == box.resized  # a 640x360 frame on its 640x384 canvas
        # The resized picture and its planes go into buffers this thread reuses: new ones per frame are fresh
        # mappings (facetrail.heap) whose page faults cost more than the work (1080p: 2.7 ms against 1.5).
        resized = image if same else cv2.resize(image, box.resized, dst=self._scratch((new_h, new_w, 3)))
        plane = self._scratch((new_h, new_w))
        # x / 128 - 127.5 / 128 equals (x - 127.5) / 128 exactly in float32; contiguous planes convert
        # about twice as fast as the strided RGB view (bench/frame_cost.py)
        for channel, index in zip(blob, (2, 1, 0), strict=True):  # BGR to RGB
            cv2.extractChannel(resized, index, dst=plane)
            region = channel[:new_h, :new_w]
            np.multiply(plane, np.float32(SCALE), out=region, casting="unsafe")
            region -= np.float32(MEAN * SCALE)
        return blob

    def _scratch(self, shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
        """A uint8 array of ``shape`` this thread reuses (its content is whatever was last written there)."""
        cache: dict[tuple[int, ...], npt.NDArray[np.uint8]] | None = getattr(self._buffers, "scratch", None)
        if cache is None:
            cache = self._buffers.scratch = {}
        if shape not in cache:
            if len(cache) >= MAX_CACHED_SHAPES:
                cache.clear()
            cache[shape] = np.empty(shape, np.uint8)
        return cache[shape]

    def _batch_buffer(self, rows: int, canvas: tuple[int, int]) -> FloatArray:
        """A (rows, 3, h, w) float32 array this thread reuses for its batches of that shape."""
        cache: dict[tuple[int, int, int], FloatArray] | None = getattr(self._buffers, "arrays", None)
        if cache is None:
            cache = self._buffers.arrays = {}
        key = (rows, canvas[0], canvas[1])
        if key not in cache:
            if len(cache) >= MAX_CACHED_SHAPES:  # camera sets change rarely; a new set of shapes starts afresh
                cache.clear()
            cache[key] = np.empty((rows, 3, canvas[1], canvas[0]), np.float32)
        return cache[key]

    def _anchor_centres(self, canvas: tuple[int, int], stride: int) -> FloatArray:
        key = (canvas[0], canvas[1], stride)
        centres = self._centres.get(key)
        if centres is None:
            rows, cols = canvas[1] // stride, canvas[0] // stride
            ys, xs = np.mgrid[:rows, :cols]
            grid = np.stack([xs, ys], axis=-1).astype(np.float32)
            centres = np.repeat((grid * stride).reshape(-1, 2), ANCHORS_PER_LOCATION, axis=0)
            if len(self._centres) < 64:
                self._centres[key] = centres
        return centres

    def _decode(self, outputs: list[FloatArray], canvas: tuple[int, int],
                scale: float) -> FaceDetections:
        n = len(STRIDES)
        all_scores, all_boxes, all_kps = [], [], []
        for level, stride in enumerate(STRIDES):
            scores = outputs[level].reshape(-1)
            keep = np.flatnonzero(scores >= self.score_threshold)
            if keep.size == 0:
                continue
            centres = self._anchor_centres(canvas, stride)[keep]
            dist = outputs[level + n].reshape(-1, 4)[keep] * stride
            boxes = np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1)
            kps = outputs[level + 2 * n].reshape(-1, 5, 2)[keep] * stride + centres[:, None, :]
            all_scores.append(scores[keep])
            all_boxes.append(boxes)
            all_kps.append(kps)
        if not all_scores:
            return FaceDetections.empty()
        scores = np.concatenate(all_scores).astype(np.float32)
        boxes = (np.concatenate(all_boxes) / scale).astype(np.float32)
        kps = (np.concatenate(all_kps) / scale).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        scores, boxes, kps = scores[order], boxes[order], kps[order]
        survivors = _nms(boxes, scores, self.nms_threshold)
        return FaceDetections(boxes[survivors], scores[survivors], kps[survivors])


def _round_up_32(pixels: int) -> int:
    return -(-pixels // 32) * 32


def _nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> list[int]:
    """Greedy NMS over boxes already sorted by descending score.

    Uses the +1 pixel area convention of InsightFace's reference decoder so
    that the same candidates survive.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(scores))
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep
