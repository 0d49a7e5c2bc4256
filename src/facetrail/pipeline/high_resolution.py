"""Shots of small faces cut from the camera's record stream (Frigate's ``record`` role), where it has one.

A face found on the detect stream that is narrower than ``max_face_px`` is
looked for again on the record stream's frame nearest in time: its box is
mapped by the size ratio of the two streams, the face detector runs on an
enlarged region around it (the face may have moved between the two
frames, and SCRFD needs context), and the face overlapping the mapped box
most is aligned with its own landmarks and embedded. When the record
stream has no frame near enough, or no face is found there, the shot comes
from the detect stream as before.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from facetrail.pipeline.analyzer import AnalysedFrame, FrameAnalyzer
from facetrail.pipeline.health import CameraHealth
from facetrail.video.frames import Frame
from facetrail.video.record_stream import RecordStream
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.quality import FULL_SIZE_PX

log = logging.getLogger(__name__)

REGION_SCALE = 3.0  # side of the searched region, in mapped face boxes (the longer side)
MIN_OVERLAP = 0.3  # IoU with the mapped box the face found on the record frame needs to be the same face
PART = "record stream"  # how the record stream's outages show in the camera's faults
MAX_TRACKS_REMEMBERED = 1024  # tracks whose latest cut's quality ratio is remembered (the oldest are forgotten)


class RecordStreamUnavailable(RuntimeError):
    """The record stream gives no frames now; shots come from the detect stream."""


@dataclass(frozen=True, eq=False)
class RecordShot:
    """A face cut from the record stream: face ``face`` of ``frame`` (a region of the record frame)."""

    frame: AnalysedFrame
    face: int
    origin: tuple[int, int]  # the region's top-left corner in the record frame


@dataclass
class RecordShotCounts:
    """How the small faces of one camera were shot."""

    cut: int = 0  # shots cut from the record stream
    no_frame: int = 0  # the record stream had no frame near enough in time (or was down)
    no_face: int = 0  # no face overlapping the mapped box on the record frame


class HighResolutionShots:
    """Cuts a camera's small faces from its record stream."""

    def __init__(self, record: RecordStream, analyzer: FrameAnalyzer, low_light: LowLightConfig,
                 health: CameraHealth | None = None) -> None:
        self.record = record
        self.settings = record.settings
        self.analyzer = analyzer
        self.low_light = low_light
        self.health = health
        self.counts = RecordShotCounts()
        self._ratios: OrderedDict[int, float] = OrderedDict()  # track id -> actual / estimated quality, last cut
        self._down = False
        self._reported = -1  # the detect frame whose fallback was last counted as a fault

    def scale(self, analysed: AnalysedFrame) -> tuple[float, float] | None:
        """(x, y) size ratio of the record stream to the analysed detect frame; None before its first frame."""
        size = self.record.size
        if size is None:
            return None
        height, width = analysed.image.shape[:2]
        return size[0] / width, size[1] / height

    def wants(self, analysed: AnalysedFrame, i: int) -> bool:
        """True when face ``i`` is small enough, and the record stream large enough, to cut it from there.

        Before the record stream's first frame its size is unknown: small faces are tried (and fall back).
        """
        x1, _, x2, _ = analysed.faces.xyxy[i]
        if float(x2 - x1) >= self.settings.max_face_px:
            return False
        scale = self.scale(analysed)
        return scale is None or min(scale) >= self.settings.min_scale

    def expected(self, analysed: AnalysedFrame, i: int, track_id: int) -> tuple[float, float]:
        """(quality, box area) face ``i`` of track ``track_id`` would have on the record stream.

        The size part of its quality here is taken at the record stream's size (sharpness is judged relative
        to the face's own size and pose does not change with it), then corrected by what the track's latest cut
        gave against the same estimate: a downscaled sub-stream makes faces look sharper than the main stream
        shows them. A track cuts a face only when it would embed such a shot (``BestShots.may_embed``).
        """
        quality, area = self._estimate(analysed, i)
        return quality * self._ratios.get(track_id, 1.0), area

    def _estimate(self, analysed: AnalysedFrame, i: int) -> tuple[float, float]:
        quality = analysed.shot(i).quality
        sx, sy = self.scale(analysed) or (self.settings.min_scale, self.settings.min_scale)
        there = min(1.0, quality.face_px * min(sx, sy) / FULL_SIZE_PX)
        here = quality.parts.get("size", 0.0)
        return (quality.score / here * there if here > 0 else there), analysed.area(i) * sx * sy

    def advance(self, frame: Frame) -> None:
        """The detect stream reached ``frame`` (a file's record reader keeps pace with it)."""
        self.record.advance(frame)

    def cut(self, frame: Frame, analysed: AnalysedFrame, i: int, track_id: int) -> RecordShot | None:
        """Face ``i`` (of track ``track_id``) of the detect ``frame`` found again on the record stream; None: use
        the detect stream's.

        Never raises: an error here is logged and counted against the camera, and the shot falls back.
        """
        try:
            shot = self._cut(frame, analysed, i)
            if shot is not None:
                self._learn(track_id, shot.frame.shot(shot.face).quality.score, self._estimate(analysed, i)[0])
            return shot
        except Exception as error:
            log.exception("camera %s: cutting a shot from the record stream failed", self.record.name)
            if self.health is not None:
                self.health.failed(PART, error)
            return None

    def _cut(self, frame: Frame, analysed: AnalysedFrame, i: int) -> RecordShot | None:
        kept = self.record.nearest(frame)
        if kept is None:
            self.counts.no_frame += 1
            self._report_outage(frame)
            return None
        self._recovered()
        height, width = analysed.image.shape[:2]
        sx, sy = kept.size[0] / width, kept.size[1] / height
        x1, y1, x2, y2 = (float(v) for v in analysed.faces.xyxy[i])
        mapped = np.array([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
        cx, cy = (mapped[0] + mapped[2]) / 2, (mapped[1] + mapped[3]) / 2
        half = max(mapped[2] - mapped[0], mapped[3] - mapped[1]) * REGION_SCALE / 2
        try:
            region, origin = kept.region(cx - half, cy - half, cx + half, cy + half)
        except ValueError:
            self.counts.no_face += 1
            return None
        found = self.analyzer.analyse([region], [self.low_light])[0]
        if not len(found):
            self.counts.no_face += 1
            return None
        boxes = np.asarray(found.faces.xyxy, np.float64) + np.array([*origin, *origin], np.float64)
        overlaps = _iou(boxes, mapped)
        best = int(np.argmax(overlaps))
        if overlaps[best] < MIN_OVERLAP:
            self.counts.no_face += 1
            return None
        self.counts.cut += 1
        return RecordShot(found, best, origin)

    def _learn(self, track_id: int, actual: float, estimate: float) -> None:
        if estimate <= 0:
            return
        self._ratios[track_id] = actual / estimate
        self._ratios.move_to_end(track_id)
        while len(self._ratios) > MAX_TRACKS_REMEMBERED:
            self._ratios.popitem(last=False)

    def _report_outage(self, frame: Frame) -> None:
        error = self.record.error
        if error is None or frame.index == self._reported:
            return  # up, but nothing near enough in time (not a fault); or this frame was counted already
        self._reported = frame.index
        if not self._down:
            log.warning("camera %s: small faces are shot on the detect stream while the record stream is down: %s",
                        self.record.name, error)
            self._down = True
        if self.health is not None:
            self.health.failed(PART, RecordStreamUnavailable(error))

    def _recovered(self) -> None:
        if self._down:
            log.info("camera %s: the record stream is back; small faces are shot on it again", self.record.name)
            self._down = False
        if self.health is not None:
            self.health.succeeded(PART)


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of ``boxes`` (n, 4) with ``box`` (4,)."""
    left = np.maximum(boxes[:, 0], box[0])
    top = np.maximum(boxes[:, 1], box[1])
    right = np.minimum(boxes[:, 2], box[2])
    bottom = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
