"""Memory per camera: the pipeline's RSS with 2, 3, 4 and 6 live cameras, 1080p and 640x360, and MB per camera.

Each camera is ``street.mp4`` (size ``1080p``), or a cut of it re-encoded the
way IP cameras encode (``live_streams.make_cut``: no B-frames, one reference
frame, a key frame every 2 s): ``1080p-ip`` and ``640x360``. A decoder's
memory follows the stream's structure as well as its size: street.mp4 (High
profile, a B-pyramid) makes the H.264 decoder keep several more pictures
than a camera's stream does. Each is served on loopback as a live MPEG-TS
stream over TCP by ``bench/live_streams.py`` (a separate process, so the
server's memory is not counted): packets paced by their timestamps, looped
with an offset, so the pipeline sees a real live
stream and decodes every frame as it would from a camera. Size ``record``
is the Frigate-like 1080p camera: the 640x360 cut as its ``detect`` stream
and street.mp4 as its ``record`` stream (``--record-decode``: the record
input's ``decode_skip``, auto or off), both live.

Every camera count runs in a fresh child process (``--child``), so one run's
heap does not carry into the next. The child starts ``facetrail.pipeline``
with N cameras (motion gate on, the defaults otherwise), warms up past the
pipeline's second heap trim (``facetrail.heap.TRIM_EVERY_S`` after the
first), then samples its RSS for ``--seconds``; the figure is the median of
those samples and the peak. Sampling earlier catches the start-up burst
(the models' first, slow runs while every camera's queue fills), which the
trim hands back: 1080p, 2 and 4 cameras, RSS fell by 28 and 58 MB at it and
stayed there. MB per added camera is the least-squares slope of RSS over N.
Beside RSS, each count reports what glibc's heap has handed out and not
freed (``mallinfo2``: memory in use, as opposed to freed memory a heap
keeps) and, once at the end, the analysed frames in flight (converted
pictures alive: the detection and tracking stages' batches), with their
slopes, so a figure can be told apart into memory in use, frames on their
way and freed memory the heap keeps resident.
The counts start at 2: going from one camera to two also pays once for what
any second camera would (onnxruntime's arena for a detector batch of two
frames, the first thread heaps), which is not a cost per camera.

``--src DIR`` runs the children against another checkout's ``src`` (e.g.
``/work/main/src``) so the code before and after a change is measured in one
run, interleaved per camera count. Machine, settings, CPU time and wall time
are printed beside every figure.

Run: ``PYTHONPATH=src .venv/bin/python bench/camera_memory.py [--src /work/main/src --src src]``
"""

from __future__ import annotations

import argparse
import ctypes
import gc
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
from typing import Any

import av

from live_streams import LiveStreams, make_cut

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STREET = SHARED / "video" / "street.mp4"
GOAL_MB_PER_CAMERA = 30.0
WARMUP_S = 12.0  # past the pipeline's second heap trim (facetrail.heap.TRIM_EVERY_S = 10 s after the first)


# --------------------------------------------------------------------------- the child: one pipeline, N cameras


def rss_mb() -> float:
    """This process's resident set (VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _find_mallinfo2() -> Any:
    try:
        found = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    found.restype = _MallInfo2
    return found


_MALLINFO2 = _find_mallinfo2()  # None: not glibc, or glibc before 2.33


def heap_in_use_mb() -> float:
    """Bytes glibc's heap (every arena, and blocks it mapped on their own) has handed out and not freed, in MB.

    NaN where the C library has no ``mallinfo2``.
    """
    if _MALLINFO2 is None:
        return float("nan")
    info = _MALLINFO2()
    return float(info.uordblks + info.hblkhd) / 2**20


def pictures_in_flight() -> int:
    """Converted frame pictures alive now (the analysis stages' frames; a camera's waiting frames are not converted)."""
    from facetrail.video.picture import FramePicture

    return sum(1 for thing in gc.get_objects() if isinstance(thing, FramePicture) and thing.converted)


def camera_yaml(name: str, urls: list[str], fps: float, record_decode: str) -> str:
    """One camera's configuration: its detect stream, and its record stream when a second URL is given."""
    inputs = f"      - path: {urls[0]}\n"
    if len(urls) > 1:
        inputs = (f"      - path: {urls[0]}\n        roles: [detect]\n"
                  f"      - path: {urls[1]}\n        roles: [record]\n        decode_skip: {record_decode}\n")
    return f"  {name}:\n    inputs:\n{inputs}    detect:\n      fps: {fps}\n"


def child(urls: list[list[str]], seconds: float, warmup: float, fps: float,
          record_decode: str = "auto") -> dict[str, Any]:
    """Run the pipeline on cameras of ``urls`` (each: detect URL[, record URL]); report memory and analysis."""
    from facetrail.config.loader import parse_config
    from facetrail.pipeline.runner import Pipeline

    with tempfile.TemporaryDirectory() as store:
        cameras = "".join(camera_yaml(f"cam{i}", camera, fps, record_decode) for i, camera in enumerate(urls))
        config = parse_config(f"purpose: benchmark\ndata_dir: {store}\ncameras:\n{cameras}")
        baseline = rss_mb()
        pipeline = Pipeline(config, actor="bench")
        loaded = rss_mb()
        stop = threading.Event()
        worker = threading.Thread(target=pipeline.run, kwargs={"stop": stop, "until_done": False})
        cpu0, wall0 = time.process_time(), time.perf_counter()
        worker.start()
        time.sleep(warmup)
        before = {s.name: s for s in pipeline.status()}
        samples, in_use = [], []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(rss_mb())
            in_use.append(heap_in_use_mb())
            time.sleep(0.25)
        after = {s.name: s for s in pipeline.status()}
        in_flight = pictures_in_flight()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        stop.set()
        worker.join()
    analysed = [(after[n].frames_analysed - before[n].frames_analysed) / seconds for n in after]
    dropped = [(after[n].frames_dropped - before[n].frames_dropped) / seconds for n in after]
    decoded = [(after[n].frames_decoded - before[n].frames_decoded) / seconds for n in after]
    return {"cameras": len(urls), "rss_mb": round(statistics.median(samples), 1), "peak_mb": round(max(samples), 1),
            "heap_in_use_mb": round(statistics.median(in_use), 1), "pictures_in_flight": in_flight,
            "start_mb": round(baseline, 1), "models_mb": round(loaded, 1),
            "analysed_fps": [round(a, 2) for a in analysed], "dropped_fps": [round(d, 2) for d in dropped],
            "decoded_fps": [round(d, 1) for d in decoded], "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)}


# --------------------------------------------------------------------------- the parent


def run_child(src: str, urls: list[list[str]], args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    command = [sys.executable, __file__, "--child", json.dumps(urls), "--seconds", str(args.seconds),
               "--warmup", str(args.warmup), "--fps", str(args.fps), "--record-decode", args.record_decode]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({src}, {len(urls)} cameras):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per camera."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def per_run(points: list[tuple[int, float]], counts: int) -> list[str]:
    """The slope of each repeat's own points (MB per camera), to show the spread between runs."""
    return [f"{slope(points[k:k + counts]):.1f}" for k in range(0, len(points), counts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", action="append", help="a checkout's src folder to measure (repeatable; default: "
                                                       "this one's)")
    parser.add_argument("--cameras", default="2,3,4,6", help="camera counts (from 2: see above)")
    parser.add_argument("--sizes", default="1080p,1080p-ip,640x360",
                        help="stream sizes: 1080p (street.mp4 as it is), 1080p-ip (re-encoded as IP cameras send it), "
                             "640x360, record (a 640x360 detect stream and a 1080p record stream)")
    parser.add_argument("--record-decode", choices=("auto", "off"), default="auto",
                        help="size record: the record input's decode_skip")
    parser.add_argument("--seconds", type=float, default=8.0, help="RSS sampling time per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per source and count (the slope fits them all)")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds before sampling starts")
    parser.add_argument("--fps", type=float, default=5.0, help="each camera's analysis rate")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child), args.seconds, args.warmup, args.fps, args.record_decode)))
        return
    if not STREET.exists():
        raise SystemExit(f"{STREET} is missing (set FACETRAIL_SHARED_DATA)")
    sources = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    counts = [int(c) for c in args.cameras.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")
    print(f"settings: cameras {counts}, detect fps {args.fps}, motion gate on, warm-up {args.warmup} s, "
          f"RSS sampled every 0.25 s for {args.seconds} s, median reported; {args.repeats} run(s) per count; "
          f"sources {sources}")
    results: dict[str, Any] = {"goal_mb_per_camera": GOAL_MB_PER_CAMERA, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        files: dict[str, list[Path]] = {"1080p": [STREET]}
        if "1080p-ip" in args.sizes:  # the cuts take a few seconds to encode
            files["1080p-ip"] = [make_cut(STREET, Path(folder) / "street-1080p-ip.mp4", 1920, 1080)]
        if "640x360" in args.sizes or "record" in args.sizes:
            cut = make_cut(STREET, Path(folder) / "street-640x360.mp4", 640, 360)
            files.update({"640x360": [cut], "record": [cut, STREET]})
        for size in args.sizes.split(","):
            names = " + ".join(f.name for f in files[size])
            print(f"\n{size} live streams ({names} served as MPEG-TS over TCP on loopback"
                  f"{f'; record decode_skip {args.record_decode}' if size == 'record' else ''})")
            runs: dict[str, list[dict[str, Any]]] = {src: [] for src in sources}
            for count in [c for _ in range(args.repeats) for c in counts]:
                for src in sources:  # interleaved: every checkout at this count before the next count
                    with LiveStreams(files[size], count) as streams:
                        cameras = [[streams.urls[f][k] for f in range(len(files[size]))] for k in range(count)]
                        found = run_child(src, cameras, args)
                    runs[src].append(found)
                    results["runs"].append({"size": size, "src": src, **found})
                    print(f"  {src}: {count} camera(s): RSS {found['rss_mb']} MB (peak {found['peak_mb']}, models "
                          f"loaded {found['models_mb']}; heap in use {found['heap_in_use_mb']} MB, "
                          f"{found['pictures_in_flight']} frames in flight), analysed fps {found['analysed_fps']}, "
                          f"dropped/s {found['dropped_fps']}, decoded/s {found['decoded_fps']}; CPU {found['cpu_s']} s "
                          f"in {found['wall_s']} s wall")
            for src, found_runs in runs.items():
                if len(found_runs) > 1:
                    points = [(run["cameras"], run["rss_mb"]) for run in found_runs]
                    mb = slope(points)
                    in_use = slope([(run["cameras"], run["heap_in_use_mb"]) for run in found_runs])
                    in_flight = slope([(run["cameras"], float(run["pictures_in_flight"])) for run in found_runs])
                    results[f"mb_per_camera_{size}_{src}"] = round(mb, 1)
                    results[f"heap_in_use_mb_per_camera_{size}_{src}"] = round(in_use, 1)
                    results[f"frames_in_flight_per_camera_{size}_{src}"] = round(in_flight, 2)
                    verdict = "within" if mb <= GOAL_MB_PER_CAMERA else "over"
                    each = "" if args.repeats == 1 else f"; each run alone: {', '.join(per_run(points, len(counts)))}"
                    print(f"  {src}: {mb:.1f} MB per added camera ({verdict} the {GOAL_MB_PER_CAMERA:.0f} MB "
                          f"goal{each}); heap in use {in_use:.1f} MB and {in_flight:.2f} frames in flight per "
                          f"added camera")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
