"""Opening a camera's input: a video file or stream (PyAV / FFmpeg) or a folder of images.

A source yields ``(pts seconds, BGR image, small grey copy)`` for the
pictures due at the analysis rate (``RateSampler``); ``samples()`` yields
the same pictures as ``FramePicture``s, converted to BGR (and resized, by
FFmpeg's swscale) only when the analysis first asks, on its own thread
(picture.py says why); ``AVSource.frames`` yields the decoder's frames
(``av.VideoFrame``) for a reader that keeps them as YUV (the record
stream). A video source decodes what its ``DecodePolicy`` (decoding.py)
asks for: sampled below the frame rate, the decoder skips frames nothing
refers to, or decodes key frames only when they come often enough.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple, Protocol, Self, cast
from urllib.parse import urlsplit

import av
import av.video
import cv2

from facetrail.video.decoding import (
    DecodeOptions,
    DecodePolicy,
    SkipMode,
    check_hwaccel,
    configure_decoder,
    open_container,
)
from facetrail.video.errors import SourceOpenError, SourceReadError, mask_credentials
from facetrail.video.frames import RateSampler, output_size
from facetrail.video.luma import small_luma
from facetrail.video.picture import FramePicture
from facetrail.vision.errors import ImageError
from facetrail.vision.image import BGRImage, GreyImage, grey_size, load_image

__all__ = [
    "IMAGE_SUFFIXES",
    "STREAM_SCHEMES",
    "AVSource",
    "FrameSource",
    "ImageFolderSource",
    "Picture",
    "Sample",
    "SourceKind",
    "is_stream",
    "mask_credentials",
    "open_source",
    "open_video",
    "source_kind",
    "stream_options",
]

log = logging.getLogger(__name__)

SourceKind = Literal["file", "folder", "stream"]
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "udp", "tcp"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# Reading gives up after this many packets in a row that the decoder rejects.
MAX_BAD_PACKETS = 50
_FALLBACK_PERIOD_S = 0.04


class Picture(NamedTuple):
    """One sampled picture of a source, as BGR."""

    pts: float  # media time, seconds from the start of the source
    image: BGRImage
    grey: GreyImage | None = None  # its small grey copy (``small_grey``'s size) where the source made one cheaply


class Sample(NamedTuple):
    """One sampled picture of a source, converted to BGR on first use (``FramePicture.bgr``)."""

    pts: float  # media time, seconds from the start of the source
    picture: FramePicture
    grey: GreyImage | None = None  # its small grey copy (``small_grey``'s size) where the source made one cheaply


class FrameSource(Protocol):
    """An opened input: iterate for its sampled ``Picture``s, then ``close()``."""

    @property
    def kind(self) -> SourceKind:
        """What was opened: a file, an image folder or a live stream."""
        ...

    @property
    def frames_decoded(self) -> int:
        """Pictures decoded so far, kept or not."""
        ...

    @property
    def frames_skipped(self) -> int:
        """Pictures the decoder was told to skip (the decode policy); 0 where nothing is skipped."""
        ...

    def __iter__(self) -> Iterator[Picture]:
        """The sampled pictures as BGR."""
        ...

    def samples(self) -> Iterator[Sample]:
        """The sampled pictures, each converted to BGR when first asked for (on the asking thread)."""
        ...

    def close(self) -> None:
        """Release the input; safe to call twice."""
        ...


def is_stream(path: str) -> bool:
    """True for network inputs (rtsp://, http://, ...), False for files and folders."""
    return "://" in path and urlsplit(path).scheme.lower() in STREAM_SCHEMES


def source_kind(path: str) -> SourceKind:
    """``stream`` for network URLs, ``folder`` for a directory, ``file`` otherwise."""
    if is_stream(path):
        return "stream"
    return "folder" if Path(path).is_dir() else "file"


def stream_options(path: str, timeout_s: float, input_args: Mapping[str, str] | None = None) -> dict[str, str]:
    """FFmpeg input options for ``path``: TCP for RTSP, I/O timeouts for streams, then ``input_args`` on top."""
    scheme = urlsplit(path).scheme.lower() if "://" in path else ""
    micros = str(round(timeout_s * 1_000_000))
    options: dict[str, str] = {}
    if scheme in ("rtsp", "rtsps"):
        # Since FFmpeg 5 the RTSP "timeout" is the socket I/O timeout (formerly "stimeout").
        options = {"rtsp_transport": "tcp", "timeout": micros}
    elif scheme in ("http", "https"):
        options = {"timeout": micros, "rw_timeout": micros}
    elif scheme in STREAM_SCHEMES:
        # "timeout" means other things elsewhere (RTMP: listen seconds); rw_timeout is the generic one.
        options = {"rw_timeout": micros}
    options.update(input_args or {})
    return options


class _SourceBase:
    label: str

    def __enter__(self) -> Self:
        return self

    def __iter__(self) -> Iterator[Picture]:
        """The sampled pictures as BGR (raises SourceReadError where one cannot be converted)."""
        for pts, picture, grey in self.samples():
            try:
                image = picture.bgr()
            except (av.FFmpegError, OSError) as error:
                raise SourceReadError(self.label, _reason(error)) from None
            yield Picture(pts, image, grey)

    def samples(self) -> Iterator[Sample]:
        """The sampled pictures, converted to BGR on first use."""
        raise NotImplementedError

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the input."""


class AVSource(_SourceBase):
    """A video file or stream decoded by PyAV; pts count from the start of the file (streams: first frame).

    ``decode`` holds the input's decode settings (``VideoInput``); None: their defaults.
    """

    def __init__(self, path: str, *, live: bool, input_args: Mapping[str, str] | None = None,
                 timeout_s: float = 10.0, fps: float | None = None, width: int | None = None,
                 height: int | None = None, start_after: float | None = None,
                 decode: DecodeOptions | None = None) -> None:
        self.label = mask_credentials(path)
        self._live = live
        self._size = (width, height)
        self._sampler = RateSampler(fps, after=start_after)
        self._decoded = 0
        self._packets = 0
        options = stream_options(path, timeout_s, input_args)
        try:
            container, device = open_container(path, label=self.label, options=options,
                                               timeout=(timeout_s, timeout_s) if live else None,
                                               hwaccel=decode.hwaccel if decode is not None else None)
        except (av.FFmpegError, OSError) as error:
            raise SourceOpenError(self.label, _reason(error)) from None
        self._container = container
        if not self._container.streams.video:
            self._container.close()
            raise SourceOpenError(self.label, "it has no video stream")
        self._stream: av.video.stream.VideoStream = self._container.streams.video[0]
        # The device type decoding runs on; None: the CPU.
        self.hwaccel = device if check_hwaccel(self._stream, label=self.label, hwaccel=device) else None
        try:
            configure_decoder(self._stream, decode, live=live, hardware=self.hwaccel is not None)
        except (av.FFmpegError, ValueError) as error:
            self._container.close()
            raise SourceOpenError(self.label, f"bad decoder setting: {_reason(error)}") from None
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._policy = DecodePolicy(fps, float(rate) if rate else None,
                                    enabled=decode is None or decode.decode_skip == "auto")
        self._base: float | None = None
        if not live and self._stream.start_time is not None and self._stream.time_base is not None:
            self._base = float(self._stream.start_time * self._stream.time_base)
        if start_after is not None and not live:
            self._seek(start_after)

    @property
    def kind(self) -> SourceKind:
        """``stream`` or ``file``."""
        return "stream" if self._live else "file"

    @property
    def frames_decoded(self) -> int:
        """Pictures decoded so far."""
        return self._decoded

    @property
    def frames_skipped(self) -> int:
        """Pictures the decoder skipped so far: packets read but not decoded (frame threads hold a few back)."""
        return max(0, self._packets - self._decoded) if self._policy.active else 0

    @property
    def decode_mode(self) -> SkipMode:
        """The decoder's current skip mode: DEFAULT (every frame), NONREF or NONKEY."""
        return self._policy.mode

    def _seek(self, after: float) -> None:
        """Jump to the key frame before ``after``; the sampler drops what precedes it."""
        time_base = self._stream.time_base
        if time_base is None:
            return
        target = int((after + (self._base or 0.0)) / time_base)
        try:
            self._container.seek(target, stream=self._stream, backward=True)
        except (av.FFmpegError, OSError) as error:
            log.debug("%s: cannot seek (%s); decoding from the start", self.label, _reason(error))

    def samples(self) -> Iterator[Sample]:
        """The sampled pictures, to be resized to the asked size, with their small grey copies made from the luma.

        Each holds the decoder's frame until converted. ``Sample.grey`` is None where the frame has no 8-bit luma
        plane; the camera then makes it from the BGR picture.
        """
        for pts, frame in self.frames():
            picture = FramePicture.decoded(frame, output_size(frame.width, frame.height, *self._size))
            yield Sample(pts, picture, small_luma(frame, grey_size(*picture.size)))
            # Hold neither while the next frame decodes (a sampling period): once the analysis has converted
            # the picture, this generator's reference would keep its BGR image alive, one per camera.
            del frame, picture

    def frames(self) -> Iterator[tuple[float, av.VideoFrame]]:
        """The sampled frames as the decoder gives them: ``(pts seconds, av.VideoFrame)``, not converted.

        Raises SourceReadError when reading fails or a file is cut short.
        """
        last_pts = -_FALLBACK_PERIOD_S
        shift = 0.0  # live streams: keeps pts increasing across a timestamp reset
        bad_packets = 0
        cut_off = False
        policy, context, time_base = self._policy, self._stream.codec_context, self._stream.time_base
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:  # not the final flush packet
                    cut_off = packet.is_corrupt
                    self._packets += 1
                    if policy.active:
                        when = packet.pts if packet.pts is not None else packet.dts
                        mode = policy.before_packet(packet.is_keyframe, float(when * time_base)
                                                    if when is not None and time_base is not None else None)
                        if context.skip_frame != mode:
                            context.skip_frame = mode
                try:
                    frames = packet.decode()
                except av.InvalidDataError as error:
                    # The decoder conceals most damage; a packet it rejects outright is skipped.
                    bad_packets += 1
                    if bad_packets > MAX_BAD_PACKETS:
                        raise
                    log.log(logging.DEBUG if self._live else logging.WARNING,
                            "%s: skipping a packet the decoder rejected (%s)", self.label, _reason(error))
                    continue
                bad_packets = 0
                for frame in frames:
                    self._decoded += 1
                    if policy.active and policy.after_frame(frame.time) != context.skip_frame:
                        context.skip_frame = policy.mode
                    if frame.time is None:
                        pts = last_pts + self._period()
                    else:
                        if self._base is None:
                            self._base = frame.time
                        pts = frame.time - self._base + shift
                        if self._live and pts < last_pts:
                            shift += last_pts - pts + self._period()
                            pts = last_pts + self._period()
                    last_pts = pts
                    if self._sampler.take(pts):
                        yield pts, frame
        except (av.FFmpegError, OSError) as error:
            raise SourceReadError(self.label, _reason(error)) from None
        if cut_off and not self._live:
            # A file still being written, or copied only in part: the demuxer flags the short last packet.
            raise SourceReadError(self.label, "the file is cut short (its last packet is incomplete)")

    def _period(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(1 / rate) if rate else _FALLBACK_PERIOD_S

    def close(self) -> None:
        """Close the container."""
        self._container.close()


class ImageFolderSource(_SourceBase):
    """The images of a folder in natural name order (img2 before img10), one every ``1 / fps`` s of media time."""

    def __init__(self, folder: Path, *, fps: float | None = None, width: int | None = None,
                 height: int | None = None, start_after: float | None = None) -> None:
        self.folder = folder
        self.label = str(folder)
        self.period = 1.0 / fps if fps else 1.0
        self._size = (width, height)
        self._after = start_after
        self._decoded = 0
        try:
            entries = list(folder.iterdir())
        except OSError as error:
            raise SourceOpenError(str(folder), error.strerror or str(error)) from None
        self.files = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                            key=_natural_key)
        if not self.files:
            raise SourceOpenError(str(folder), f"the folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    @property
    def kind(self) -> SourceKind:
        """Always ``folder``."""
        return "folder"

    @property
    def frames_decoded(self) -> int:
        """Images read so far."""
        return self._decoded

    @property
    def frames_skipped(self) -> int:
        """Always 0: every image is read."""
        return 0

    def samples(self) -> Iterator[Sample]:
        """The images, resized to the asked size."""
        for i, path in enumerate(self.files):
            pts = i * self.period  # by position, so a skipped image leaves a gap in time
            if self._after is not None and pts <= self._after:
                continue
            try:
                image = load_image(path)
            except ImageError as error:
                log.warning("skipping unreadable image %s", error)
                continue
            self._decoded += 1
            size = output_size(image.shape[1], image.shape[0], *self._size)
            if size is not None:
                image = cast(BGRImage, cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            yield Sample(pts, FramePicture(image))


def open_source(path: str, *, input_args: Mapping[str, str] | None = None, timeout_s: float = 10.0,
                fps: float | None = None, width: int | None = None, height: int | None = None,
                start_after: float | None = None, decode: DecodeOptions | None = None) -> FrameSource:
    """Open a stream URL, an image folder or a video file, sampled at ``fps`` (None: every frame).

    ``width``/``height`` resize (one alone keeps the aspect ratio); ``start_after`` skips the
    media time already delivered (files and folders); ``decode``: the input's decode settings
    (None: their defaults). Raises SourceOpenError.
    """
    if source_kind(path) == "folder":
        return ImageFolderSource(Path(path), fps=fps, width=width, height=height, start_after=start_after)
    return open_video(path, input_args=input_args, timeout_s=timeout_s, fps=fps, width=width, height=height,
                      start_after=start_after, decode=decode)


def open_video(path: str, *, input_args: Mapping[str, str] | None = None, timeout_s: float = 10.0,
               fps: float | None = None, width: int | None = None, height: int | None = None,
               start_after: float | None = None, decode: DecodeOptions | None = None) -> AVSource:
    """Open a stream URL or a video file (not an image folder); the arguments are ``open_source``'s.

    Raises SourceOpenError.
    """
    kind = source_kind(path)
    if kind == "folder":
        raise SourceOpenError(path, "it is an image folder, not a video file or stream")
    if kind == "file" and not Path(path).exists():
        raise SourceOpenError(path, "no such file or folder")
    return AVSource(path, live=kind == "stream", input_args=input_args, timeout_s=timeout_s, fps=fps,
                    width=width, height=height, start_after=None if kind == "stream" else start_after,
                    decode=decode)


def _natural_key(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _reason(error: BaseException) -> str:
    # PyAV's str(error) repeats the URL (with its password); strerror is FFmpeg's message alone.
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return mask_credentials(str(text)).strip()

