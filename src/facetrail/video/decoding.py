"""What the decoder does for one source: frames it may skip, its threads, and hardware decoding.

``DecodePolicy`` decides, packet by packet, how much of the stream the
decoder may leave undecoded without changing which pictures the
``RateSampler`` takes:

- every frame is decoded when the camera is analysed at its full frame
  rate (or fps sampling is off), or the policy is switched off;
- sampled below half its frame rate, the decoder skips non-reference
  frames (FFmpeg ``skip_frame=NONREF``): nothing refers to them, so the
  other frames decode exactly as before, and a sample moves by at most the
  gap between decoded frames less one frame. On street.mp4 every second
  frame is decoded (a sample moves by at most one frame); where decoded
  frames come further apart than two frames, or a quarter of the analysis
  period if that is longer, the policy decodes everything again. Reference
  B-frames (a B-pyramid's middle frames) are decoded even where none is
  sampled: skipping them too (``BIDIR``) would decode half as many of
  street.mp4's frames (38% less decoding CPU), but later P frames may refer
  to them. Re-encoded by libx264 with its defaults, street.mp4 gave 25 of 27
  frames changed without them, and FFmpeg flagged none of them as corrupt
  (``bench/decode.py``, part 4);
- when key frames arrive at least as often as frames are analysed (learned
  from the stream's first key-frame intervals), only key frames are decoded
  (``NONKEY``). Leaving that mode is only possible on a key frame (the frames
  in between refer to frames that were never decoded), so a stream whose
  key frames become rarer loses the samples of that one interval.

``configure_decoder`` applies threads and codec options; ``open_container``
opens the input with hardware decoding where asked, falling back to the CPU
with one warning when the device is not there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal, Protocol

import av
import av.container
import av.video
from av.codec.hwaccel import HWAccel, HWDeviceType, hwdevices_available

from facetrail.cores import usable_cores

__all__ = [
    "FILE_THREADS_FACTOR",
    "HARDWARE_DECODE_THREADS",
    "HWACCEL_TYPES",
    "STREAM_DECODE_THREADS",
    "DecodeOptions",
    "DecodePolicy",
    "SkipMode",
    "check_hwaccel",
    "configure_decoder",
    "file_decode_threads",
    "open_container",
]

log = logging.getLogger(__name__)

SkipMode = Literal["DEFAULT", "NONREF", "NONKEY"]
DecodeSkip = Literal["auto", "off"]
# FFmpeg's device type names (av.codec.hwaccel.HWDeviceType); which of them work depends on the build and machine.
HWACCEL_TYPES = tuple(sorted(t.name for t in HWDeviceType if t.name != "none"))
# Codec threads per decoder by default, by measurement (bench/decode.py, bench/video.py).
# A live input (a stream, or a file read in real time): each camera already has its own reader thread, cameras in
# parallel use the cores, and more threads cost memory (frame threads: a picture context each) and latency
# without lowering the CPU per camera.
STREAM_DECODE_THREADS = 1
# A file read as fast as it is analysed: twice FFmpeg's own count of frame threads (one per usable core plus
# one), at most MAX_FILE_DECODE_THREADS. A frame thread spends much of its turn waiting for its reference frame's
# rows, and a packet skipped under skip_frame still takes a thread's turn, so FFmpeg's count left the decoder the
# pipeline's slowest stage: 1080p street.mp4 through the pipeline on 2 cores, 12 interleaved runs, 45.3 frames/s
# with 3 threads, 46.2 with 4, 47.4 with 6, 47.0 with 8, the same CPU per frame; the 640x360 cut (nothing
# skipped) the same with 3 or 6. The cost is memory: a 1080p decoder holds 52 MiB with 6 threads, 37 with 3.
FILE_THREADS_FACTOR = 2
MAX_FILE_DECODE_THREADS = 16  # FFmpeg's own cap on an automatic count
# A decoder on a hardware device (hwaccel): the device decodes, and each frame thread would only hold surfaces of
# its own (NVDEC refuses more than 32 in all, which 16 frame threads on a big machine exceed).
HARDWARE_DECODE_THREADS = 1
# Key-frame intervals looked at before decoding key frames only.
KEY_INTERVALS_TO_LEARN = 2
# A gap may exceed its limit by this share of a frame period (timestamp jitter) and still count as within it.
_JITTER_FRAMES = 0.5

_warned: set[tuple[str, str]] = set()


class DecodeOptions(Protocol):
    """The decode settings of an input (``VideoInput`` has them; defined there once)."""

    @property
    def decode_skip(self) -> DecodeSkip: ...

    @property
    def decode_threads(self) -> int | None: ...

    @property
    def skip_loop_filter(self) -> bool: ...

    @property
    def hwaccel(self) -> str | None: ...

    @property
    def live(self) -> bool:
        """True when the input is read at its own pace: a stream, or a file read in real time."""
        ...


class DecodePolicy:
    """Chooses the decoder's ``skip_frame`` from the analysis rate and what the stream shows.

    Call ``before_packet`` with each demuxed packet's key flag and time (seconds) and ``after_frame`` with
    each decoded frame's time; ``mode`` is the skip mode to decode the packet with.
    """

    def __init__(self, fps: float | None, stream_rate: float | None, *, enabled: bool = True) -> None:
        self.frame_period = 1.0 / stream_rate if stream_rate else None
        self.period = 1.0 / fps if fps else None
        # Skipping makes sense only when fewer frames are analysed than the stream has, by at least half:
        # decoded frames under NONREF are usually every second frame.
        self.active = (enabled and self.period is not None and self.frame_period is not None
                       and self.period >= 2 * self.frame_period - 1e-9)
        self.mode: SkipMode = "NONREF" if self.active else "DEFAULT"
        self._nonref_ok = self.active
        self._keys: list[float] = []
        self._last_frame: float | None = None
        self._last_packet: float | None = None

    @property
    def _slack(self) -> float:
        assert self.period is not None and self.frame_period is not None
        return self.period + _JITTER_FRAMES * self.frame_period

    @property
    def _max_nonref_gap(self) -> float:
        # A sample moves by up to the gap less one frame: one frame (B-pyramid: every second frame decoded),
        # or up to a quarter of the analysis period at low rates (e.g. IBBBP at 1 fps).
        assert self.period is not None and self.frame_period is not None
        return min(self.period, max(2 * self.frame_period, self.period / 4)) + _JITTER_FRAMES * self.frame_period

    def before_packet(self, key: bool, time_s: float | None) -> SkipMode:
        """The skip mode to decode this packet with (may change the mode)."""
        if not self.active or time_s is None:
            return self.mode
        if self._last_packet is not None and time_s < self._last_packet - 1.0:
            self._keys.clear()  # a timestamp reset (live stream, looped file): learn again
        self._last_packet = time_s if self._last_packet is None else max(self._last_packet, time_s)
        if key:
            if self._keys and time_s > self._keys[-1]:
                if time_s - self._keys[-1] > self._slack:
                    self._keys.clear()
                    if self.mode == "NONKEY":  # only on a key frame: the frames after it decode correctly
                        self._set(self._fallback(), "key frames now come less often than frames are analysed")
            elif self._keys:
                self._keys.clear()
            self._keys.append(time_s)
            if self.mode != "NONKEY" and len(self._keys) > KEY_INTERVALS_TO_LEARN:
                self._set("NONKEY", "key frames come at least as often as frames are analysed")
            del self._keys[:-KEY_INTERVALS_TO_LEARN - 1]
        return self.mode

    def after_frame(self, time_s: float | None) -> SkipMode:
        """Note a decoded frame; under NONREF a gap that would move a sample too far turns skipping off."""
        if time_s is None or not self.active:
            return self.mode
        last, self._last_frame = self._last_frame, time_s
        if (self.mode == "NONREF" and last is not None and time_s > last
                and time_s - last > self._max_nonref_gap):
            self._nonref_ok = False
            self._set("DEFAULT", f"decoded frames came {time_s - last:.3f} s apart: samples would move too far")
        return self.mode

    def _fallback(self) -> SkipMode:
        return "NONREF" if self._nonref_ok else "DEFAULT"

    def _set(self, mode: SkipMode, why: str) -> None:
        log.debug("decoding %s (was %s): %s", mode, self.mode, why)
        self.mode = mode
        self._last_frame = None


def configure_decoder(stream: av.video.stream.VideoStream, options: DecodeOptions | None, *, live: bool,
                      hardware: bool = False) -> None:
    """Threads and codec options for ``stream``'s decoder, before its first packet.

    ``live``: a stream; an input whose ``options`` say it is read in real time (a file with ``realtime``) counts
    as one here too. Threads: ``decode_threads`` (0: FFmpeg's choice, one per core plus one; None:
    ``file_decode_threads`` for files read as fast as they are analysed, one for live inputs and for a decoder on
    a hardware device, ``hardware``); more than one uses frame threads for files read as fast as they are
    analysed (throughput) and slice threads for live inputs (frame threads add a frame of latency per thread).
    """
    live = live or (options is not None and options.live)
    threads = options.decode_threads if options is not None else None
    if threads is None:
        threads = HARDWARE_DECODE_THREADS if hardware else STREAM_DECODE_THREADS if live else file_decode_threads()
    context = stream.codec_context
    context.thread_count = threads
    if threads != 1:
        context.thread_type = "SLICE" if live else "FRAME"
    if options is not None and options.skip_loop_filter:
        context.options = {**context.options, "skip_loop_filter": "all"}


def file_decode_threads() -> int:
    """A file decoder's frame threads by default: ``FILE_THREADS_FACTOR`` x (usable cores + 1), at most 16."""
    return min(MAX_FILE_DECODE_THREADS, FILE_THREADS_FACTOR * (usable_cores() + 1))


def open_container(path: str, *, label: str, options: Mapping[str, str], timeout: tuple[float, float] | None,
                   hwaccel: str | None) -> tuple[av.container.InputContainer, str | None]:
    """Open ``path`` for reading, asking for decoding on the ``hwaccel`` device when one is named.

    Returns the container and the device type FFmpeg was given (None: the CPU).

    A device this FFmpeg build lacks, or one it cannot open (no GPU, no driver, no permission), is warned
    about once per input and the CPU decodes instead; ``check_hwaccel`` covers a codec the device cannot
    decode. Errors opening the input itself propagate (av.FFmpegError, OSError).
    """
    if hwaccel is None:
        return av.open(path, options=dict(options), timeout=timeout), None
    if hwaccel not in hwdevices_available():
        warn_cpu_fallback(label, hwaccel, f"this FFmpeg build has no {hwaccel} support "
                                          f"(it has: {', '.join(hwdevices_available()) or 'none'})")
        return av.open(path, options=dict(options), timeout=timeout), None
    try:
        return av.open(path, options=dict(options), timeout=timeout, hwaccel=HWAccel(hwaccel)), hwaccel
    except (av.FFmpegError, OSError) as error:
        # Opening once more on the CPU tells a missing device from an input that cannot be opened at all.
        container = av.open(path, options=dict(options), timeout=timeout)
        warn_cpu_fallback(label, hwaccel, f"the device cannot be opened: {_reason(error)}")
        return container, None


def check_hwaccel(stream: av.video.stream.VideoStream, *, label: str, hwaccel: str | None) -> bool:
    """Whether ``stream`` decodes on the ``hwaccel`` device; warns (once) when it was asked for and is not."""
    if hwaccel is None:
        return False
    if stream.codec_context.is_hwaccel:
        return True
    codec = stream.codec_context.name
    warn_cpu_fallback(label, hwaccel, f"the device does not decode {codec}")
    return False


def warn_cpu_fallback(label: str, hwaccel: str, reason: str) -> None:
    """Warn, once per input and device type, that the CPU decodes instead of ``hwaccel``."""
    key = (label, hwaccel)
    if key in _warned:
        log.debug("%s: %s decoding unavailable (%s); decoding on the CPU", label, hwaccel, reason)
        return
    _warned.add(key)
    log.warning("%s: hardware decoding with %s is not available (%s); decoding on the CPU instead",
                label, hwaccel, reason)


def _reason(error: BaseException) -> str:
    return str(getattr(error, "strerror", None) or error or type(error).__name__)
