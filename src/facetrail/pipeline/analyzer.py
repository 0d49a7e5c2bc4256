"""Detection for frames of many cameras in shared batches; alignment, quality and embedding on demand.

The pipeline detects every frame it analyses, but aligns and scores only the
faces of confirmed tracks large enough to recognise (a crowd of tiny faces
costs one detector pass and nothing more), and embeds only the shots a track
asks for. Each step is the face engine's own (``FaceEngine.detect_frames``,
``align_faces_of``, ``FaceEngine.embed_faces``): one path from image to embedding. An analyzer given a
:class:`~facetrail.vision.embedder.CropEmbedder` (a cluster's pool of embedding actors) embeds the same
aligned crops through it instead of the engine's recogniser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from facetrail.vision.align import AlignedFaces
from facetrail.vision.embedder import CropEmbedder
from facetrail.vision.engine import FaceEngine, align_faces_of
from facetrail.vision.image import BGRImage
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.types import FaceDetections, FaceQuality

THUMBNAIL_PX = 128  # side of the stored best-shot thumbnail
THUMBNAIL_MARGIN = 0.35  # context around the face box, as a fraction of its size


@dataclass(frozen=True, eq=False)
class FaceShot:
    """One face of a frame, aligned and scored."""

    crop: np.ndarray  # 112x112 aligned BGR
    aligned: AlignedFaces  # the single-face alignment the embedder takes
    quality: FaceQuality
    usable: bool  # False when the landmarks do not fit a face (never embedded)


@dataclass(eq=False)
class AnalysedFrame:
    """The faces of one frame; each face is aligned and scored the first time it is asked for."""

    image: BGRImage  # the frame as analysed (enhanced when it was dark)
    faces: FaceDetections
    enhanced: bool
    max_residual: float
    _shots: dict[int, FaceShot] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.faces)

    def shot(self, i: int) -> FaceShot:
        """Face ``i`` aligned to 112x112 with its quality (computed once)."""
        if i not in self._shots:
            shaped = align_faces_of(self.image, self.one(i), self.max_residual)
            self._shots[i] = FaceShot(shaped.aligned.crops[0], shaped.aligned, shaped.qualities[0],
                                      bool(shaped.fits[0]))
        return self._shots[i]

    def one(self, i: int) -> FaceDetections:
        """Face ``i`` alone."""
        keep = np.zeros(len(self.faces), bool)
        keep[i] = True
        return self.faces.select(keep)

    def area(self, i: int) -> float:
        """Box area of face ``i`` in pixels²."""
        x1, y1, x2, y2 = self.faces.xyxy[i]
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    def thumbnail(self, i: int) -> BGRImage:
        """A square crop around face ``i`` with some context, THUMBNAIL_PX wide."""
        height, width = self.image.shape[:2]
        x1, y1, x2, y2 = self.faces.xyxy[i]
        side = max(x2 - x1, y2 - y1) * (1 + 2 * THUMBNAIL_MARGIN)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        right, bottom = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
        region = self.image[top:max(bottom, top + 1), left:max(right, left + 1)]
        return np.asarray(cv2.resize(region, (THUMBNAIL_PX, THUMBNAIL_PX), interpolation=cv2.INTER_AREA),
                          np.uint8)


class FrameAnalyzer:
    """Runs the engine's detector, aligner and embedder on batches of frames.

    ``embedder``: embeds the aligned crops instead of the engine's recogniser (same model, ValueError if not).
    """

    def __init__(self, engine: FaceEngine, *, max_alignment_residual: float | None = None,
                 embedder: CropEmbedder | None = None) -> None:
        self.engine = engine
        self.max_residual = max_alignment_residual or engine.config.max_alignment_residual
        if embedder is not None and embedder.model_id != engine.recogniser.model_id:
            raise ValueError(f"the embedder's model {embedder.model_id} is not the engine's "
                             f"({engine.recogniser.model_id}): their vectors would not compare")
        self.embedder = embedder

    def analyse(self, images: Sequence[BGRImage], low_light: Sequence[LowLightConfig]) -> list[AnalysedFrame]:
        """Detect the faces of several frames (one detector batch), each with its camera's low-light setting.

        Video is never searched for turned faces (a camera hangs as it hangs), whatever the engine's setting,
        and is detected on the engine's canvas for video (``FaceEngine.video_input``).
        """
        return [AnalysedFrame(frame.image, frame.faces, frame.enhanced, self.max_residual)
                for frame in self.engine.detect_frames(images, low_light, try_rotations=False,
                                                       detector_input=self.engine.video_input)]

    def embed(self, requests: Sequence[tuple[AnalysedFrame, int]]) -> np.ndarray:
        """Unit embeddings (n, d) of the requested faces (frame, face index), in one shared batch."""
        if not requests:
            return np.zeros((0, int(self.engine.recogniser.embedding_size or 0)), np.float32)
        if self.embedder is not None:
            # the very crops the engine's ArcFace would take (FaceShot.aligned holds this one crop)
            crops = np.stack([frame.shot(i).crop for frame, i in requests]).astype(np.uint8, copy=False)
            return np.asarray(self.embedder.embed_crops(crops), np.float32)
        embeddings = self.engine.embed_faces([(frame.image, frame.one(i), frame.shot(i).aligned)
                                              for frame, i in requests])
        return np.concatenate([e.vectors for e in embeddings]).astype(np.float32)
