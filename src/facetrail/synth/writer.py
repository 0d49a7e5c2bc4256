"""Writing BGR frames to an H.264 mp4 with PyAV, atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt

PREFERRED_CODECS = ("libx264", "mpeg4")


def video_codec() -> str:
    """The encoder write_clip uses: libx264 when the PyAV wheel has it, else mpeg4."""
    for name in PREFERRED_CODECS:
        try:
            av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        return name
    raise RuntimeError(f"this PyAV build has none of the encoders {PREFERRED_CODECS}")


def write_clip(path: Path, frames: Iterable[npt.NDArray[np.uint8]], *, fps: float = 10.0, crf: int = 23,
               preset: str = "veryfast") -> int:
    """Encode BGR uint8 frames into an mp4 at ``path``; returns the number of frames written.

    yuv420p needs even sizes, so an odd width or height is padded by repeating
    the last column or row. Every frame must have the first frame's size. The
    clip is written under a temporary name in the same folder and renamed when
    complete, so ``path`` never holds a half-written file; on any error (also
    one raised by the ``frames`` iterator) nothing is left behind.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        count = _encode(tmp, frames, fps=fps, crf=crf, preset=preset)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return count


def _encode(tmp: Path, frames: Iterable[npt.NDArray[np.uint8]], *, fps: float, crf: int, preset: str) -> int:
    codec = video_codec()
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate)
        assert isinstance(stream, av.VideoStream)
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": preset}
        else:
            # mpeg4 has no CRF; qscale 2 (best) .. 31 (worst), mapped roughly from crf.
            stream.codec_context.qscale = max(2, min(31, crf // 5))  # type: ignore[assignment]
        stream.codec_context.time_base = 1 / rate
        size: tuple[int, int] | None = None
        for frame in frames:
            image = _even(_check_frame(frame, count))
            if size is None:
                size = (image.shape[1], image.shape[0])
                stream.width, stream.height = size
            elif (image.shape[1], image.shape[0]) != size:
                raise ValueError(f"frame {count} is {image.shape[1]}x{image.shape[0]}, "
                                 f"the clip is {size[0]}x{size[1]}")
            # OpenCV's BT.601 conversion: swscale's default bgr24 -> yuv420p path darkens by ~2-3 grey levels.
            yuv = cast(npt.NDArray[np.uint8], cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420))
            video_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            video_frame.pts = count
            video_frame.time_base = 1 / rate
            container.mux(stream.encode(video_frame))
            count += 1
        if count == 0:
            raise ValueError("no frames to write")
        container.mux(stream.encode(None))
    return count


def _check_frame(frame: npt.NDArray[np.generic], index: int) -> npt.NDArray[np.uint8]:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index} must be BGR uint8 (h, w, 3), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def _even(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    height, width = frame.shape[:2]
    bottom, right = height % 2, width % 2
    if not bottom and not right:
        return frame
    return np.asarray(cv2.copyMakeBorder(frame, 0, bottom, 0, right, cv2.BORDER_REPLICATE), np.uint8)
