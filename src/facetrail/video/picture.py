"""A frame's picture: kept as the decoder gave it (YUV) until the analysis asks for BGR, then converted once.

A camera's reader thread decodes and samples; the frames it keeps wait for
the analysis in the camera's queue. Converted to BGR there, on the reader
thread, every camera paid for it in memory: the BGR frames waiting (6.2 MB
each at 1080p against 3.1 as YUV) and the freed ones its thread's heap kept
for the next. Measured on street.mp4 served as live 1080p streams
(``bench/reader_memory.py``: 2-core machine, RSS slope over 2, 4 and 6
readers at 5 sampled fps): decoding alone 27.2 MB per reader; converting
to BGR on the reader and dropping the frame at once 33.1; keeping the two
newest BGR frames, as a live camera's queue does, 49.4; keeping the two
newest as YUV 30.1, and converted on one thread shared by all readers 27.8.

So the reader hands over a ``FramePicture`` holding the decoded frame (the
decoder's own buffer, no copy), and the first ``bgr()`` (the detection
thread's, in the pipeline) converts it and lets the decoded frame go; a
frame dropped from a live camera's queue is never converted.
Each converting thread keeps one FFmpeg swscale converter per kind of
frame (format, size, output size), since making one costs more than a
conversion (CONVERT_THREADS: one swscale thread each).
"""

from __future__ import annotations

import collections
import threading
from typing import cast

import av
from av.video.reformatter import VideoReformatter

from facetrail.vision.image import BGRImage

__all__ = ["CONVERT_THREADS", "FramePicture", "to_bgr"]

# swscale threads per conversion: one, as the pipeline keeps the cores busy with threads of its own (PyAV's default,
# one per core, took 1.08 ms of CPU to convert a 1080p frame to BGR against 0.65 with one thread).
CONVERT_THREADS = 1
# Converters a thread keeps (one per format and size it converts); the least recently used goes beyond this.
CONVERTERS_PER_THREAD = 8

_ConverterKey = tuple[str, int, int, tuple[int, int] | None]
_converters = threading.local()


def to_bgr(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> BGRImage:
    """``frame`` as a BGR image, resized (swscale's area filter) to ``size`` (width, height) when given.

    Raises av.FFmpegError when FFmpeg cannot convert the frame.
    """
    cache: collections.OrderedDict[_ConverterKey, VideoReformatter] | None = getattr(_converters, "cache", None)
    if cache is None:
        cache = _converters.cache = collections.OrderedDict()
    key = (frame.format.name, frame.width, frame.height, size)
    converter = cache.pop(key, None) or VideoReformatter()
    cache[key] = converter
    while len(cache) > CONVERTERS_PER_THREAD:
        cache.popitem(last=False)
    width, height = size if size is not None else (None, None)
    converted = converter.reformat(frame, width, height, "bgr24", interpolation="AREA", threads=CONVERT_THREADS)
    return cast(BGRImage, converted.to_ndarray())


class FramePicture:
    """One frame's picture: a BGR image, or a decoded video frame converted to one on first use.

    ``FramePicture(image)`` holds a BGR image as it is; ``FramePicture.decoded(frame, size)`` holds the
    decoder's frame until ``bgr()`` is first called, resized then to ``size`` (width, height) when given.
    Safe to share between threads: the frame is converted once.
    """

    __slots__ = ("_frame", "_image", "_lock", "_size", "size")

    def __init__(self, image: BGRImage) -> None:
        self._image: BGRImage | None = image
        self._frame: av.VideoFrame | None = None
        self._size: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.size: tuple[int, int] = (image.shape[1], image.shape[0])  # (width, height) of the BGR picture

    @classmethod
    def decoded(cls, frame: av.VideoFrame, size: tuple[int, int] | None = None) -> FramePicture:
        """A decoded frame, converted (and resized to ``size``, when given) on the first ``bgr()``."""
        picture = cls.__new__(cls)
        picture._image, picture._frame, picture._size = None, frame, size
        picture._lock = threading.Lock()
        picture.size = size if size is not None else (frame.width, frame.height)
        return picture

    @property
    def converted(self) -> bool:
        """True once the BGR picture exists (nothing left to convert)."""
        return self._image is not None

    def bgr(self) -> BGRImage:
        """The BGR picture, converted now if this is the first call (av.FFmpegError when that fails)."""
        image = self._image
        if image is not None:
            return image
        with self._lock:
            if self._image is None:
                assert self._frame is not None
                self._image = to_bgr(self._frame, self._size)
                self._frame = None  # the decoder may reuse its buffer
            return self._image
