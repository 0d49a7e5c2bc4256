"""Where the pipeline's frames get their memory: a freed frame's memory serves the next, and trims hand it back.

Each policy is measured in a fresh interpreter (glibc's settings are the whole process's): real 1080p frames
converted to BGR by PyAV as the analysis does, asking glibc whether frames held at once sit in the heap or in
mappings of their own, counting the page faults of the converting thread (in its quietest round: the kernel's own
work adds faults now and then, 380 per frame in one CI run) and the process's resident memory. glibc on Linux only;
elsewhere the functions do nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facetrail.clock import ManualClock
from facetrail.heap import TRIM_EVERY_S
from facetrail.pipeline import runner
from facetrail.vision.engine import FaceEngine
from pipeline_kit import config_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap is Linux's")

CHILD = """
import ctypes, json, resource, sys
import av, numpy as np
from av.video.reformatter import VideoReformatter
from facetrail import heap
from facetrail.video.picture import CONVERT_THREADS

for policy in sys.argv[1].split(","):  # in order, as a process would set them
    getattr(heap, policy)()
picture = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), np.uint8)
frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
converter = VideoReformatter()  # as a camera's source converts its samples

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2

def own_mappings_mb():
    return mallinfo2().hblkhd / 2**20  # bytes in blocks glibc mapped on their own, outside the heap

def convert():
    return converter.reformat(frame, format="bgr24", threads=CONVERT_THREADS).to_ndarray()

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def faults():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt

convert()  # the first conversion maps its memory under either policy
rounds = []
for _ in range(5):  # the quietest round: the kernel's own work (page balancing, reclaim) faults pages now and then
    before = faults()
    for _ in range(10):
        image = convert()
        del image
    rounds.append((faults() - before) / 10)
outside = own_mappings_mb()
held = [convert() for _ in range(10)]  # ten frames alive at once (62 MB), then freed
held_outside = own_mappings_mb() - outside
del held
freed = rss_mb()
heap.give_memory_back()
print(json.dumps({"faults_per_frame": min(rounds), "held_outside_heap_mb": held_outside, "rss_freed": freed,
                  "rss_trimmed": rss_mb()}))
"""

FRAME_PAGES = 1920 * 1080 * 3 // 4096  # 1518 pages of 4 kB in a 1080p BGR frame
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def measure(policy: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, policy], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def test_the_pipelines_policy_converts_frames_into_reused_memory_and_trimming_hands_it_back() -> None:
    # Set over the API's policy, as `serve --config` does: glibc's own dynamic threshold alone would also reuse
    # frames of one size, so only this tells a working policy from one that does nothing.
    reused = measure("keep_large_buffers_out_of_the_heap,reuse_large_buffers")
    assert reused["held_outside_heap_mb"] < 1  # ten frames held, every one in the heap
    # hardly a fresh page: the last frame's memory (a fresh mapping faults in every one of its 1,518 pages)
    assert reused["faults_per_frame"] < FRAME_PAGES / 2, reused
    assert reused["rss_freed"] - reused["rss_trimmed"] > 40  # the ten freed frames stayed until the trim


def test_the_apis_policy_maps_every_frame_afresh_and_returns_it_at_once() -> None:
    mapped = measure("keep_large_buffers_out_of_the_heap")
    assert mapped["held_outside_heap_mb"] > 10 * FRAME_PAGES * 4096 / 2**20  # each held frame in its own mapping
    assert mapped["rss_freed"] - mapped["rss_trimmed"] < 20  # nothing large was kept to trim
    huge_pages_always = THP.exists() and "[always]" in THP.read_text()
    if not huge_pages_always:  # with them the kernel would map a fresh frame in a few faults
        assert mapped["faults_per_frame"] > FRAME_PAGES / 5  # a fresh mapping per conversion: its pages fault in


def test_the_pipeline_trims_the_heap_every_interval(tmp_path: Path, video_engine: FaceEngine,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[float] = []
    clock = ManualClock()
    monkeypatch.setattr(runner, "give_memory_back", lambda: trims.append(clock.monotonic()))
    config = config_for(tmp_path, {"gate": tmp_path / "not-there.mp4"})  # a camera that never delivers a frame
    pipeline = runner.Pipeline(config, engine=video_engine, clock=clock, deliver=False)
    pipeline.start()
    try:
        pipeline.step()
        assert trims == [0.0]  # what loading the models freed goes back at once
        clock.advance(TRIM_EVERY_S)
        pipeline.step()
        pipeline.step()
        clock.advance(TRIM_EVERY_S / 2)
        pipeline.step()
        clock.advance(TRIM_EVERY_S / 2)
        pipeline.step()
    finally:
        pipeline.stop()
    assert trims == [0.0, TRIM_EVERY_S, 2 * TRIM_EVERY_S]
