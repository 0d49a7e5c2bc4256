"""What a camera's record stream costs: decoding it, keeping its frames, and cutting small faces from it.

Two measurements, printed in one run with the machine and the settings:

1. Reading ``street.mp4`` (1920x1080 H.264 High, B-frames, 25 fps) as a record stream, each way in its own
   process (so its peak memory is its own), the ways interleaved and repeated: plain PyAV decoding of every
   frame (the floor), the file read as a second camera (``AVSource`` with its default decode policy, the
   sampled frames converted to BGR), and ``RecordStream`` with the record input's ``decode_skip: off`` (every
   frame decoded) and ``auto`` (sampled at 5 of 25 fps: frames nothing refers to are left undecoded), driven
   like the pipeline drives it (one detect frame every 1/fps s of media time). CPU seconds per second of video
   (the share of one core a live camera would take), wall time, frames decoded, the ring's bytes, and the peak
   resident memory over a process that only imported the same modules.
2. The pipeline on a real scene: ``street.mp4`` shrunk to 640x360 with PyAV as the detect stream, with and
   without the 1080p original as its record stream, interleaved and repeated: CPU per analysed frame, faces
   cut from the record stream, shots embedded (strong and weak), tracks named (nobody is enrolled but a
   stranger's photo, so any name is a false one).

Run: ``.venv/bin/python bench/record_stream.py [--repeat 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STREET = SHARED / "video" / "street.mp4"
FPS = 5.0
WAYS = ("idle", "plain decode", "second camera", "record off", "record auto")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def one_way(way: str, path: str, ring: int) -> dict[str, Any]:
    """Read ``path`` one way (in this process); CPU (all threads), wall, frames decoded, ring bytes, peak RSS."""
    import av

    from facetrail.video.camera import VideoInput
    from facetrail.video.frames import Frame
    from facetrail.video.picture import FramePicture
    from facetrail.video.record_stream import RecordStream, RecordStreamSettings
    from facetrail.video.sources import AVSource

    with av.open(path) as container:
        duration = float(container.duration or 0) / 1e6
    cpu, wall = time.process_time(), time.perf_counter()
    decoded, ring_bytes = 0, 0
    if way == "plain decode":
        with av.open(path) as container:
            for _ in container.decode(video=0):
                decoded += 1
    elif way == "second camera":
        with AVSource(path, live=False, fps=FPS) as source:
            for _ in source:
                pass
            decoded = source.frames_decoded
    elif way.startswith("record"):
        source = VideoInput(path=path, decode_skip=way.split()[1])  # type: ignore[arg-type]
        record = RecordStream("bench", source, RecordStreamSettings(ring_frames=ring), fps=FPS)
        record.start()
        picture = FramePicture(np.zeros((2, 2, 3), np.uint8))
        for k in range(int(duration * FPS) + 1):
            record.nearest(Frame("bench", picture, k, k / FPS, datetime.now(UTC), 0.0))
        status = record.status()
        record.stop()
        decoded, ring_bytes = status.frames_decoded, status.ring_bytes
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall, "video_s": duration,
            "decoded": decoded, "ring_bytes": ring_bytes,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def run_way(way: str, path: Path, ring: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--one", way, "--path", str(path), "--ring", str(ring)],
                         check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def decoding(repeat: int, ring: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for _ in range(repeat):
        for way in WAYS:  # interleaved
            runs[way].append(run_way(way, STREET, ring))
    idle_rss = statistics.median(r["peak_rss_kb"] for r in runs["idle"])
    table = {}
    print(f"\n1. street.mp4 as a record stream (median of {repeat}, each way in its own process)")
    print(f"{'way':<18} {'CPU s/video s':>13} {'wall s':>7} {'decoded':>8} {'ring MB':>8} {'peak RSS +MB':>13}")
    for way in WAYS[1:]:
        rows = runs[way]
        cpu = statistics.median(r["cpu_s"] / r["video_s"] for r in rows)
        row = {"cpu_per_video_s": cpu, "wall_s": statistics.median(r["wall_s"] for r in rows),
               "decoded": rows[0]["decoded"], "ring_mb": rows[0]["ring_bytes"] / 1e6,
               "peak_rss_over_idle_mb": (statistics.median(r["peak_rss_kb"] for r in rows) - idle_rss) / 1024}
        table[way] = row
        print(f"{way:<18} {cpu:>13.3f} {row['wall_s']:>7.2f} {row['decoded']:>8} {row['ring_mb']:>8.1f} "
              f"{row['peak_rss_over_idle_mb']:>13.1f}")
    base = table["second camera"]["cpu_per_video_s"]
    for way in ("record off", "record auto"):
        print(f"  {way}: {table[way]['cpu_per_video_s'] / base:.2f}x the CPU of reading it as a second camera")
    auto, off = table["record auto"]["cpu_per_video_s"], table["record off"]["cpu_per_video_s"]
    print(f"  record auto: {auto / off:.2f}x the CPU of record off")
    return table


def shrunk(path: Path, folder: Path) -> Path:
    """``path`` at 640x360, same frames and timing, encoded with PyAV."""
    import av

    from facetrail.synth.writer import write_clip

    out = folder / "street_640x360.mp4"
    with av.open(str(path)) as container:
        rate = float(container.streams.video[0].average_rate or 25)
        frames = [f.to_ndarray(format="bgr24", width=640, height=360, interpolation="AREA")
                  for f in container.decode(video=0)]
    write_clip(out, frames, fps=rate, crf=20)
    return out


class EmbeddedQuality(Consumer):
    """A pipeline consumer noting the quality of every embedded shot."""

    name = "embedded quality"

    def __init__(self) -> None:
        self.qualities: list[float] = []

    def on_frame(self, batch: FrameBatch) -> None:
        self.qualities += [float(q) for q in batch.quality[batch.embedded]]


def pipeline_run(store: Path, detect: Path, record: Path | None) -> dict[str, Any]:
    from facetrail.config.loader import parse_config
    from facetrail.pipeline.runner import Pipeline

    lines = ["purpose: bench", f"data_dir: {store}", "cameras:", "  street:", "    inputs:", f"      - path: {detect}"]
    if record is not None:
        lines += [f"      - path: {record}", "        roles: [record]"]
    lines += ["    detect:", "      fps: 5"]
    shots = EmbeddedQuality()
    pipeline = Pipeline(parse_config("\n".join(lines) + "\n", "bench.yml"), actor="bench", consumers=[shots])
    cpu, wall = time.process_time(), time.perf_counter()
    stats = pipeline.run(until_done=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tracking = pipeline.cameras[0].tracking
    high = tracking.high_resolution
    return {"cpu_s": cpu, "wall_s": wall, "frames": stats.frames, "faces": stats.faces, "embedded": stats.embedded,
            "record_shots": tracking.counts.record_shots,
            "mean_quality": float(np.mean(shots.qualities or [0])), "tracks": stats.tracks, "named": stats.named_tracks,
            "cut": high.counts.cut if high else 0, "no_face": high.counts.no_face if high else 0,
            "no_frame": high.counts.no_frame if high else 0}


def pipeline_part(repeat: int) -> dict[str, Any]:
    from facetrail.gallery.enrol import EnrolOptions, enrol_person
    from facetrail.gallery.gallery import Gallery, GallerySettings

    results: dict[str, list[dict[str, Any]]] = {"detect only": [], "detect + record": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        detect = shrunk(STREET, folder)
        for k in range(repeat):
            for name, record in (("detect only", None), ("detect + record", STREET)):
                store = folder / f"store-{k}-{len(results[name])}-{name[:6].strip()}"
                gallery = Gallery(GallerySettings(store))
                try:  # one stranger enrolled, so every name would be a false one
                    enrol_person(gallery, "Stranger", [SHARED / "faces" / "obama" / "obama.jpg"],
                                 EnrolOptions(actor="bench", take_largest=True))
                finally:
                    gallery.close()
                results[name].append(pipeline_run(store, detect, record))
    print(f"\n2. the pipeline on street.mp4 at 640x360, 5 fps analysed (median of {repeat})")
    print(f"{'run':<16} {'CPU ms/frame':>12} {'wall s':>7} {'frames':>6} {'faces':>6} {'embedded':>8} "
          f"{'from record':>11} {'quality':>7} {'cut':>5} {'no face':>7} {'tracks':>6} {'named':>5}")
    table = {}
    for name, rows in results.items():
        row = {"cpu_ms_per_frame": statistics.median(r["cpu_s"] / max(1, r["frames"]) * 1e3 for r in rows),
               "wall_s": statistics.median(r["wall_s"] for r in rows), **{k: rows[0][k] for k in (
                   "frames", "faces", "embedded", "record_shots", "mean_quality", "cut", "no_face", "tracks",
                   "named")}}
        table[name] = row
        print(f"{name:<16} {row['cpu_ms_per_frame']:>12.1f} {row['wall_s']:>7.2f} {row['frames']:>6} "
              f"{row['faces']:>6} {row['embedded']:>8} {row['record_shots']:>11} {row['mean_quality']:>7.3f} "
              f"{row['cut']:>5} "
              f"{row['no_face']:>7} {row['tracks']:>6} {row['named']:>5}")
    ratio = table["detect + record"]["cpu_ms_per_frame"] / table["detect only"]["cpu_ms_per_frame"]
    print(f"  detect + record: {ratio:.2f}x the CPU per analysed frame of detect only (record decoding included)")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ring", type=int, default=3, help="record_stream.ring_frames")
    parser.add_argument("--part", choices=("all", "decode", "pipeline"), default="all")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_way(args.one, args.path, args.ring)))
        return
    if not STREET.exists():
        raise SystemExit(f"{STREET} is absent (set FACETRAIL_SHARED_DATA)")
    import av

    print("facetrail record-stream benchmark", datetime.now(UTC).isoformat(timespec="seconds"))
    print(f"machine : {cpu_model()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
          f"PyAV {av.__version__}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"settings: analysed {FPS} fps, ring {args.ring} frames, repeat {args.repeat}; CPU = process time of "
          "all threads")
    report: dict[str, Any] = {"machine": cpu_model(), "cpus": os.cpu_count(), "fps": FPS, "ring": args.ring}
    if args.part in ("all", "decode"):
        report["decoding"] = decoding(args.repeat, args.ring)
    if args.part in ("all", "pipeline"):
        report["pipeline"] = pipeline_part(args.repeat)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
