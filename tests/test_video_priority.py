"""A file read ahead of its analysis yields the cores: its reader and decoder threads run at a lower priority.

Real threads of a real camera on street.mp4, their nice values read from /proc; Linux only (elsewhere a
thread has no priority of its own and nothing is changed).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from facetrail.video import Camera, CameraSettings, DetectSettings, MotionSettings, VideoInput
from facetrail.video.priority import MAX_NICE, READ_AHEAD_NICE, lower_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="a thread's own nice value exists on Linux only")


def nice_of(thread: int) -> int:
    """The nice value of thread ``thread`` of this process, as the kernel reports it."""
    return int(Path(f"/proc/self/task/{thread}/stat").read_text().rsplit(")", 1)[1].split()[16])


def task_ids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def thread_name(thread: int) -> str:
    return Path(f"/proc/self/task/{thread}/comm").read_text().strip()


def reading_camera_threads(path: Path, **settings: object) -> tuple[int, list[int]]:
    """Start a camera on ``path`` and, once it delivered a frame, its reader thread's nice value and those of the
    threads FFmpeg started meanwhile (it names them "av:<codec>:...")."""
    before = task_ids()
    camera = Camera(CameraSettings("cam", VideoInput(str(path), **settings),  # type: ignore[arg-type]
                                   DetectSettings(fps=5), motion=MotionSettings(enabled=False)))
    camera.start()
    try:
        assert camera.get(timeout=30) is not None, camera.status().error
        python = {t.native_id for t in threading.enumerate()}
        reader = next(t.native_id for t in threading.enumerate() if t.name == "camera-cam")
        assert reader is not None
        started = sorted(t for t in task_ids() - before - python if thread_name(t).startswith("av:"))
        return nice_of(reader), [nice_of(t) for t in started]
    finally:
        camera.stop()


def test_a_file_cameras_reader_and_decoder_threads_yield_to_the_analysis(street_mp4: Path) -> None:
    here = nice_of(threading.get_native_id())
    reader, decoders = reading_camera_threads(street_mp4)
    assert reader == min(MAX_NICE, here + READ_AHEAD_NICE)
    assert decoders, "the decoder started no threads of its own"
    assert set(decoders) == {reader}
    assert nice_of(threading.get_native_id()) == here  # the rest of the process keeps its priority


def test_a_file_read_in_real_time_keeps_the_process_priority(street_mp4: Path) -> None:
    here = nice_of(threading.get_native_id())
    reader, decoders = reading_camera_threads(street_mp4, realtime=True)
    assert reader == here
    assert set(decoders) <= {here}


def test_lowering_is_relative_to_the_thread_and_stops_at_the_lowest_priority() -> None:
    seen: dict[str, int | None] = {}

    def lower() -> None:
        start = nice_of(threading.get_native_id())
        seen["start"] = start
        seen["first"] = lower_this_thread(2)
        seen["read back"] = nice_of(threading.get_native_id())
        seen["second"] = lower_this_thread(READ_AHEAD_NICE)
        seen["capped"] = lower_this_thread(100)
        seen["nothing"] = lower_this_thread(0)

    here = nice_of(threading.get_native_id())
    worker = threading.Thread(target=lower)
    worker.start()
    worker.join()
    start = seen["start"]
    assert start is not None
    assert seen["first"] == seen["read back"] == min(MAX_NICE, start + 2)
    assert seen["second"] == min(MAX_NICE, start + 2 + READ_AHEAD_NICE)
    assert seen["capped"] == MAX_NICE
    assert seen["nothing"] is None
    assert nice_of(threading.get_native_id()) == here
