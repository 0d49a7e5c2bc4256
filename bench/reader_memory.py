"""Memory of camera readers alone: what decoding costs, and what converting frames to BGR on each reader adds.

No analysis runs: N threads each read one live 1080p stream (``street.mp4``
served on loopback as MPEG-TS, ``bench/live_streams.py``) through
``AVSource`` at 5 sampled fps, as a camera's reader does, and handle each
sampled frame one of five ways:

- ``decode``: drop the decoded frame;
- ``yuv-kept``: keep the two newest decoded frames (YUV), as a live camera's queue now does;
- ``bgr-dropped``: convert to BGR on the reader, drop it at once;
- ``bgr-kept``: convert to BGR on the reader, keep the two newest (a camera's queue before frames stayed YUV);
- ``yuv-shared``: keep the two newest as YUV, converted to BGR by one thread shared by every reader (the
  pipeline's detection thread), which keeps its four newest BGR frames.

Each (way, N) runs in a fresh child process with the pipeline's heap policy
(``facetrail.heap.reuse_large_buffers``), warms up 10 s, hands freed heap back
(``give_memory_back``, as the pipeline does every 10 s), and samples its RSS
for 6 s (median). MB per reader is the least-squares slope over N. The
ways are interleaved per N. Machine and settings are printed.

``--ip`` reads street.mp4 re-encoded the way IP cameras encode (no B-frames,
one reference frame; ``live_streams.make_cut``) instead of as it is.

Run: ``PYTHONPATH=src .venv/bin/python bench/reader_memory.py [--ip] [--readers 2,4,6] [--ways decode,bgr-kept]``
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av

from camera_memory import STREET, rss_mb, slope
from facetrail.video.camera import LIVE_QUEUE as KEPT  # the frames a live camera's queue keeps
from live_streams import LiveStreams, make_cut

WAYS = ("decode", "yuv-kept", "bgr-dropped", "bgr-kept", "yuv-shared")
FPS = 5.0
SHARED_KEPT = 4  # BGR frames the shared converter keeps, as frames in flight in the pipeline would be
WARMUP_S, SAMPLE_S = 10.0, 6.0


def child(urls: list[str], way: str) -> float:
    """Run one reader per URL the given way; the median RSS (MB) once warm."""
    from facetrail.heap import give_memory_back, reuse_large_buffers
    from facetrail.video.picture import FramePicture
    from facetrail.video.sources import AVSource

    reuse_large_buffers()
    stop = threading.Event()
    queues = {url: collections.deque[FramePicture](maxlen=KEPT) for url in urls}

    def read(url: str) -> None:
        kept: collections.deque[object] = collections.deque(maxlen=KEPT if way.endswith("kept") else 0)
        while not stop.is_set():
            with AVSource(url, live=True, fps=FPS) as source:
                for sample in source.samples():
                    if way.startswith("bgr"):
                        kept.append(sample.picture.bgr())
                    elif way == "yuv-kept":
                        kept.append(sample.picture)
                    elif way == "yuv-shared":
                        queues[url].append(sample.picture)
                    if stop.is_set():
                        return

    def convert() -> None:
        converted: collections.deque[object] = collections.deque(maxlen=SHARED_KEPT)
        while not stop.is_set():
            taken = [q.popleft() for q in queues.values() if q]
            for picture in taken:
                converted.append(picture.bgr())
            if not taken:
                stop.wait(0.01)

    threads = [threading.Thread(target=read, args=(url,), daemon=True) for url in urls]
    if way == "yuv-shared":
        threads.append(threading.Thread(target=convert, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(WARMUP_S)
    give_memory_back()
    samples = []
    end = time.monotonic() + SAMPLE_S
    while time.monotonic() < end:
        samples.append(rss_mb())
        time.sleep(0.25)
    stop.set()
    for thread in threads:  # a reader still decoding as the interpreter exits takes the process down
        thread.join(timeout=10)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", default="2,4,6", help="reader counts")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"ways to handle frames: {', '.join(WAYS)}")
    parser.add_argument("--ip", action="store_true", help="street.mp4 re-encoded as IP cameras send it (no "
                                                          "B-frames, one reference frame) instead of as it is")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child[0]), args.child[1])))
        return
    ways = args.ways.split(",")
    if unknown := sorted(set(ways) - set(WAYS)):
        parser.error(f"unknown way(s) {', '.join(unknown)}: choose from {', '.join(WAYS)}")
    if not STREET.exists():
        raise SystemExit(f"{STREET} is missing (set FACETRAIL_SHARED_DATA)")
    with tempfile.TemporaryDirectory() as folder:
        stream = make_cut(STREET, Path(folder) / "street-1080p-ip.mp4", 1920, 1080) if args.ip else STREET
        measure(stream, [int(c) for c in args.readers.split(",")], ways)


def measure(stream: Path, counts: list[int], ways: list[str]) -> None:
    """Every way at every reader count, interleaved; RSS per run and MB per reader."""
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")
    print(f"settings: {stream.name} as live 1080p streams, {FPS:g} sampled fps, readers {counts}, warm-up "
          f"{WARMUP_S:g} s, RSS median over {SAMPLE_S:g} s; a fresh process per way and count, ways interleaved")
    points: dict[str, list[tuple[int, float]]] = {way: [] for way in ways}
    for count in counts:
        for way in ways:
            with LiveStreams([stream], count) as streams:
                command = [sys.executable, __file__, "--child", json.dumps(streams.urls[0]), way]
                done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ)
            if done.returncode != 0:
                raise SystemExit(f"child failed ({way}, {count} readers):\n{done.stderr[-3000:]}")
            rss = float(done.stdout.strip().splitlines()[-1])
            points[way].append((count, rss))
            print(f"  {way}: {count} readers: RSS {rss:.1f} MB", flush=True)
    for way, found in points.items():
        if len(found) > 1:
            print(f"{way}: {slope(found):.1f} MB per reader")


if __name__ == "__main__":
    main()
