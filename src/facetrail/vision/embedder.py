"""Face embedders: the Embedder protocol and the default ArcFace (w600k_mbf) backend.

The faces handed over in one call (all faces of a frame, or of many frames)
go through the network in runs of a few faces (``ArcFaceEmbedder.max_batch``):
on the CPU a few per thread cost the least per face, and a longer run only
grows the memory onnxruntime keeps for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from facetrail.cores import usable_cores
from facetrail.vision.align import ARCFACE_SIZE, AlignedFaces, align_faces
from facetrail.vision.graph_rewrite import cpu_rewrite_applies, recogniser_for_x86
from facetrail.vision.image import BGRImage
from facetrail.vision.registry import W600K_MBF, ModelSpec
from facetrail.vision.runtime import create_session, resolve_providers
from facetrail.vision.types import FaceDetections, FaceEmbeddings, FloatArray


class Embedder(Protocol):
    """Turns detected faces into L2-normalised embeddings tagged with a model id."""

    spec: ModelSpec

    @property
    def model_id(self) -> str:
        """Id stored with every embedding this embedder makes."""
        ...

    def embed_many(self, items: Sequence[tuple[BGRImage, FaceDetections]],
                   aligned: Sequence[AlignedFaces] | None = None) -> list[FaceEmbeddings]:
        """Embeddings for the faces of several images, computed in shared batches.

        ``aligned`` may pass the 112x112 crops already made for these faces;
        backends that align differently ignore it.
        """
        ...


class CropEmbedder(Protocol):
    """Embeds faces already aligned to 112x112 crops: the seam a pipeline may embed through instead of its engine.

    ``ArcFaceEmbedder`` is one; a cluster's pool of embedding actors is another. Implementations used by a
    pipeline must be safe to call from several threads.
    """

    @property
    def model_id(self) -> str:
        """Id of the model the vectors come from (it must be the pipeline's own recogniser's)."""
        ...

    def embed_crops(self, crops: npt.NDArray[np.uint8]) -> FloatArray:
        """Unit-length float32 embeddings (n, d) of aligned BGR crops (n, 112, 112, 3), row i for crop i."""
        ...


def l2_normalise(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


# Faces per network run on the CPU, per onnxruntime thread. onnxruntime's arena keeps what the largest run
# needed, about 10 MB a face for w600k_mbf, and on one thread runs of 2-4 faces already cost the least CPU per
# face. 2-core AMD EPYC, random crops, 20 interleaved repeats: 10.4 ms a face alone, 10.0 and 9.9 in runs of 2
# and 4, 10.3 of 8, 11.3 of 32 (the arena grew by 18, 43, 104 and 418 MB for runs of 2, 4, 8 and 32). Two threads:
# 13.1 ms of CPU a face in runs of 8, 12.2 in runs of 32, for 104 against 418 MB.
CPU_BATCH_PER_THREAD = 4
# The longest run: an accelerator's (longer runs keep a GPU busy, and its memory is not the host's), and a bound on
# the CPU's with many threads.
MAX_BATCH = 64


def default_run_length(threads: int, *, on_cpu: bool) -> int:
    """Faces per network run: ``CPU_BATCH_PER_THREAD`` per onnxruntime thread on the CPU (``threads`` 0: one per
    usable core), at most ``MAX_BATCH``; ``MAX_BATCH`` on an accelerator."""
    if not on_cpu:
        return MAX_BATCH
    return min(MAX_BATCH, CPU_BATCH_PER_THREAD * (threads or usable_cores()))


class ArcFaceEmbedder:
    """ArcFace-style ONNX recogniser on 112x112 aligned crops (default: w600k_mbf, 512-d).

    ``max_batch`` caps how many faces go through the network at once (None: ``default_run_length``).
    Thread-safe.
    """

    def __init__(self, spec: ModelSpec = W600K_MBF, *, providers: Sequence[str] | str = "auto",
                 threads: int = 0, max_batch: int | None = None) -> None:
        self.spec = spec
        path = spec.path()
        rewritten = recogniser_for_x86(path) if cpu_rewrite_applies(resolve_providers(providers)) else None
        self._session = create_session(path, providers, threads, model_bytes=rewritten)
        self._input_name = self._session.get_inputs()[0].name
        if max_batch is None:
            max_batch = default_run_length(threads, on_cpu=self._session.get_providers()[0] == "CPUExecutionProvider")
        self.max_batch = max(1, max_batch)

    @property
    def model_id(self) -> str:
        """Id stored with every embedding this embedder makes."""
        return self.spec.model_id

    def embed_crops(self, crops: npt.NDArray[np.uint8]) -> FloatArray:
        """Unit-length embeddings (n, d) of aligned BGR crops (n, 112, 112, 3)."""
        if crops.shape[0] == 0:
            return np.zeros((0, self.spec.embedding_size or 0), np.float32)
        parts = []
        for start in range(0, crops.shape[0], self.max_batch):
            chunk = list(crops[start:start + self.max_batch])
            blob = cv2.dnn.blobFromImages(chunk, 1.0 / 127.5, (ARCFACE_SIZE, ARCFACE_SIZE),
                                          (127.5, 127.5, 127.5), swapRB=True)
            parts.append(self._session.run(None, {self._input_name: blob})[0])
        return l2_normalise(np.concatenate(parts).astype(np.float32))

    def embed(self, image: BGRImage, faces: FaceDetections) -> FaceEmbeddings:
        """Embeddings of the faces detected in one image, in detection order."""
        return self.embed_many([(image, faces)])[0]

    def embed_many(self, items: Sequence[tuple[BGRImage, FaceDetections]],
                   aligned: Sequence[AlignedFaces] | None = None) -> list[FaceEmbeddings]:
        """Embeddings for the faces of several images in shared batches."""
        if aligned is None:
            aligned = [align_faces(image, faces.landmarks) for image, faces in items]
        crops = [a.crops for a in aligned]
        empty = np.zeros((0, ARCFACE_SIZE, ARCFACE_SIZE, 3), np.uint8)
        vectors = self.embed_crops(np.concatenate(crops) if crops else empty)
        out, start = [], 0
        for (_, faces) in items:
            out.append(FaceEmbeddings(vectors[start:start + len(faces)].copy(), self.model_id))
            start += len(faces)
        return out
