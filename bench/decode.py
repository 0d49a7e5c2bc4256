"""Decoding benchmark: each decode option against plain decoding, per camera, on real video.

Four measurements, printed in one run with the machine and the settings:

1. CPU per second of video per camera (process CPU time, all threads), wall
   time and frames decoded, for each option against plain decoding (one
   codec thread, every frame decoded), interleaved and repeated, on
   ``street.mp4`` (1920x1080 25 fps H.264 High with B-frames, one key frame)
   and on a 640x360 cut of it made here with PyAV (libx264, 25 fps, GOP 50, no
   B-frames: camera-like settings; played forwards and backwards, 16.8 s). Every option converts to BGR only the
   pictures sampled at ``--fps``, as a camera does; the ``facetrail`` row is
   ``open_source`` with the input's default decode settings. The two 0.5 fps rows
   compare at that rate, where the cut's key frames (every 2 s) suffice.
2. Memory (RSS) per opened decoder, by codec threads: a fresh process opens
   ``--decoders`` decoders on the 1080p clip, decodes 25 frames in each and
   keeps them open.
3. What skipping the loop filter does to faces: FaceEngine on the sampled
   frames of street.mp4 decoded plainly and with ``skip_loop_filter=all``:
   faces found, and the cosine of each matched face's embedding to the plain one.
4. Which skip modes leave the pictures as they are: every frame each
   ``skip_frame`` mode decodes, compared with the same frame decoded plainly,
   on street.mp4 and on a 640x360 copy re-encoded by libx264 with its defaults
   (B-frames that later P frames may refer to): frames that differ, and how
   many FFmpeg flagged as corrupt.

Run: ``.venv/bin/python bench/decode.py`` (``--quick`` for fewer repeats, ``--no-faces`` to skip part 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facetrail.video import VideoInput, open_source
from facetrail.video.decoding import file_decode_threads
from facetrail.video.frames import RateSampler

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
STREET = SHARED / "video" / "street.mp4"


@dataclass(frozen=True)
class Option:
    """One way of decoding: PyAV codec settings, or facetrail's own source (``facetrail``)."""

    name: str
    threads: int = 1
    thread_type: str = "SLICE"
    skip_frame: str = "DEFAULT"
    codec_options: dict[str, str] = field(default_factory=dict)
    facetrail: bool = False
    fps: float | None = None  # None: the run's --fps


OPTIONS = (
    Option("plain (1 thread)"),
    Option("threads 2, frame", threads=2, thread_type="FRAME"),
    Option("threads 2, slice", threads=2, thread_type="SLICE"),
    Option("threads auto, frame", threads=0, thread_type="FRAME"),
    Option("skip_frame NONREF", skip_frame="NONREF"),
    Option("skip_frame BIDIR", skip_frame="BIDIR"),
    Option("skip_frame NONKEY", skip_frame="NONKEY"),
    Option("skip_loop_filter all", codec_options={"skip_loop_filter": "all"}),
    Option("facetrail default", facetrail=True),
    Option("plain at 0.5 fps", fps=0.5),
    Option("facetrail at 0.5 fps", facetrail=True, fps=0.5),
)


def decode_pass(path: Path, option: Option, fps: float) -> tuple[float, float, int, int]:
    """(CPU s, wall s, frames decoded, frames sampled) for one pass over ``path``."""
    fps = option.fps or fps
    cpu, wall = time.process_time(), time.perf_counter()
    if option.facetrail:
        source = open_source(str(path), fps=fps, decode=VideoInput(str(path)))
        sampled = sum(1 for _ in source)
        decoded = source.frames_decoded
        source.close()
        return time.process_time() - cpu, time.perf_counter() - wall, decoded, sampled
    decoded = sampled = 0
    sampler = RateSampler(fps)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count, context.thread_type = option.threads, option.thread_type
        context.skip_frame = option.skip_frame
        if option.codec_options:
            context.options = dict(option.codec_options)
        base: float | None = None
        for frame in container.decode(stream):
            decoded += 1
            t = frame.time or 0.0
            base = t if base is None else base
            if sampler.take(t - base):
                frame.to_ndarray(format="bgr24")
                sampled += 1
    return time.process_time() - cpu, time.perf_counter() - wall, decoded, sampled


def seconds_of(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.demux(stream) if _.size)
        return frames / float(stream.average_rate or 25)


def make_cut(source: Path, target: Path, size: tuple[int, int] = (640, 360), passes: int = 4) -> Path:
    """The clip scaled to ``size`` and re-encoded like a camera's sub-stream: H.264, 25 fps, GOP 50, no B-frames.

    Played forwards and backwards ``passes`` times (street.mp4: 16.8 s), so that key-frame-only decoding,
    which starts after two key-frame intervals (4 s here), shows in the figures.
    """
    with av.open(str(source)) as src:
        pictures = [f.reformat(width=size[0], height=size[1], format="yuv420p").to_ndarray()
                    for f in src.decode(video=0)]
    with av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = 50
        stream.codec_context.max_b_frames = 0
        stream.options = {"preset": "veryfast", "bf": "0", "g": "50", "keyint_min": "50", "sc_threshold": "0"}
        played = [p for n in range(passes) for p in (pictures if n % 2 == 0 else pictures[::-1])]
        for i, picture in enumerate(played):
            small = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            small.pts, small.time_base = i, Fraction(1, 25)
            for packet in stream.encode(small):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


def cost_table(clips: dict[str, Path], fps: float, repeats: int) -> list[dict[str, object]]:
    """Every option on every clip, interleaved (one pass of each option per round)."""
    rows: list[dict[str, object]] = []
    for label, path in clips.items():
        seconds = seconds_of(path)
        results: dict[str, list[tuple[float, float, int, int]]] = {o.name: [] for o in OPTIONS}
        for o in OPTIONS:  # warm up: files in the page cache, libraries loaded
            decode_pass(path, o, fps)
        for _ in range(repeats):
            for o in OPTIONS:
                results[o.name].append(decode_pass(path, o, fps))
        for o in OPTIONS:
            plain = "plain at 0.5 fps" if o.fps == 0.5 else OPTIONS[0].name
            plain_cpu = statistics.median(r[0] for r in results[plain])
            plain_wall = statistics.median(r[1] for r in results[plain])
            runs = results[o.name]
            cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            rows.append({"clip": label, "option": o.name, "cpu_ms_per_video_s": 1000 * cpu / seconds,
                         "wall_ms_per_video_s": 1000 * wall / seconds, "cpu_ratio_to_plain": cpu / plain_cpu,
                         "wall_ratio_to_plain": wall / plain_wall, "decoded": runs[0][2], "sampled": runs[0][3]})
    return rows


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_child(threads: int, thread_type: str, count: int) -> None:
    """In a fresh process: RSS growth per decoder with ``count`` decoders open, 25 frames decoded in each."""
    containers, iterators = [], []
    for _ in range(2):  # load libraries and first-use allocations before measuring
        warm = av.open(str(STREET))
        for _frame in zip(range(5), warm.decode(video=0), strict=False):
            pass
        warm.close()
    before = rss_kib()
    for _ in range(count):
        container = av.open(str(STREET))
        context = container.streams.video[0].codec_context
        context.thread_count, context.thread_type = threads, thread_type
        containers.append(container)
        iterators.append(container.decode(video=0))
    frames: Iterator[object]
    for frames in iterators:
        for _frame in zip(range(25), frames, strict=False):
            pass
    print(json.dumps({"per_decoder_mib": (rss_kib() - before) / 1024 / count}))


def rss_table(count: int) -> list[dict[str, object]]:
    rows = []
    for threads, kind in ((1, "SLICE"), (2, "FRAME"), (2, "SLICE"), (0, "FRAME"), (0, "SLICE"),
                          (file_decode_threads(), "FRAME")):  # the last: a file camera's default
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(threads), kind, str(count)],
                             check=True, capture_output=True, text=True).stdout
        rows.append({"threads": threads or "auto", "thread_type": kind, **json.loads(out.splitlines()[-1])})
    return rows


def face_table(fps: float) -> dict[str, object]:
    """FaceEngine on the sampled frames of street.mp4, plain decoding against skip_loop_filter=all."""
    from facetrail.vision.engine import FaceEngine  # only this part needs the models

    def frames(codec_options: dict[str, str]) -> list[np.ndarray]:
        out, sampler = [], RateSampler(fps)
        with av.open(str(STREET)) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = dict(codec_options)
            for frame in container.decode(stream):
                if sampler.take(frame.time or 0.0):
                    out.append(frame.to_ndarray(format="bgr24"))
        return out

    engine = FaceEngine()
    plain, lossy = frames({}), frames({"skip_loop_filter": "all"})
    found_plain = found_lossy = matched = 0
    cosines: list[float] = []
    pixel_diff: list[float] = []
    for a, b in zip(plain, lossy, strict=True):
        pixel_diff.append(float(np.abs(a.astype(np.int16) - b).mean()))
        fa, fb = engine.analyze(a), engine.analyze(b)
        found_plain, found_lossy = found_plain + len(fa), found_lossy + len(fb)
        for i in range(len(fa)):
            if not len(fb):
                break
            ious = _iou(fa.detections.xyxy[i], fb.detections.xyxy)
            j = int(np.argmax(ious))
            if ious[j] >= 0.5:
                matched += 1
                cosines.append(float(fa.embeddings.vectors[i] @ fb.embeddings.vectors[j]))
    return {"frames": len(plain), "faces_plain": found_plain, "faces_skip_loop_filter": found_lossy,
            "matched": matched, "cosine_mean": statistics.fmean(cosines) if cosines else None,
            "cosine_min": min(cosines) if cosines else None,
            "cosine_below_0_95": sum(c < 0.95 for c in cosines),
            "mean_abs_pixel_diff_first_last": (pixel_diff[0], pixel_diff[-1])}


def pictures(path: Path, skip_frame: str) -> dict[int, tuple[np.ndarray, bool]]:
    """Every frame decoded under ``skip_frame``: its grey picture and whether FFmpeg flagged it corrupt, by pts."""
    out: dict[int, tuple[np.ndarray, bool]] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = skip_frame
        for frame in container.decode(stream):
            out[int(frame.pts or 0)] = (frame.to_ndarray(format="gray"), bool(frame.is_corrupt))
    return out


def make_default_x264(source: Path, target: Path, size: tuple[int, int] = (640, 360)) -> Path:
    """The clip scaled to ``size`` and re-encoded by libx264 with its defaults (preset medium, B-pyramid)."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for frame in src.decode(video=0):
            for packet in stream.encode(frame.reformat(width=size[0], height=size[1], format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


def fidelity_table(clips: dict[str, Path]) -> list[dict[str, object]]:
    """Per clip and skip mode: frames decoded, how many differ from plain decoding, how many are flagged."""
    rows: list[dict[str, object]] = []
    for label, path in clips.items():
        plain = pictures(path, "DEFAULT")
        for mode in ("NONREF", "BIDIR"):
            decoded = pictures(path, mode)
            differing = sum(not np.array_equal(picture, plain[pts][0]) for pts, (picture, _) in decoded.items())
            rows.append({"clip": label, "skip_frame": mode, "decoded": len(decoded), "of": len(plain),
                         "differing": differing, "flagged_corrupt": sum(corrupt for _, corrupt in decoded.values())})
    return rows


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / (area + areas - inter))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {model}; Python " \
           f"{platform.python_version()}, PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate (frames converted to BGR per second)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decoders", type=int, default=6, help="decoders opened at once for the RSS figure")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--no-faces", action="store_true", help="skip the loop filter's face comparison")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(int(args.rss_child[0]), args.rss_child[1], int(args.rss_child[2]))
        return
    if not STREET.is_file():
        sys.exit(f"{STREET} is not there (set FACETRAIL_SHARED_DATA)")
    repeats = 3 if args.quick else args.repeats
    print(f"machine: {machine()}")
    print(f"settings: sampled at {args.fps} fps (BGR conversion of those only), {repeats} interleaved repeats, "
          f"medians; CPU = process time (all threads); load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        cut = make_cut(STREET, Path(tmp) / "street_640x360.mp4")
        clips = {"1080p street.mp4": STREET, "640x360 (GOP 50, no B, 16.8s)": cut}
        rows = cost_table(clips, args.fps, repeats)
        fidelity = fidelity_table({"1080p street.mp4": STREET, "640x360 libx264 defaults (B-pyramid)":
                                   make_default_x264(STREET, Path(tmp) / "street_x264_defaults.mp4")})
    print("\nCPU and wall time per second of video, per camera (ratio to plain decoding):")
    print(f"{'clip':30} {'option':22} {'CPU ms/s':>9} {'ratio':>6} {'wall ms/s':>10} {'ratio':>6} "
          f"{'decoded':>8} {'sampled':>8}")
    for r in rows:
        print(f"{r['clip']:30} {r['option']:22} {r['cpu_ms_per_video_s']:9.0f} {r['cpu_ratio_to_plain']:6.2f} "
              f"{r['wall_ms_per_video_s']:10.0f} {r['wall_ratio_to_plain']:6.2f} {r['decoded']:8} {r['sampled']:8}")
    memory = rss_table(args.decoders)
    print(f"\nRSS per opened 1080p decoder ({args.decoders} open, 25 frames decoded in each):")
    for m in memory:
        print(f"  threads {m['threads']!s:4} {m['thread_type']:5}: {m['per_decoder_mib']:.1f} MiB")
    print("\nFrames each skip mode decodes that differ from the same frames decoded plainly:")
    for f in fidelity:
        print(f"  {f['clip']:38} {f['skip_frame']:7}: {f['decoded']} of {f['of']} decoded, {f['differing']} "
              f"differ, {f['flagged_corrupt']} flagged corrupt")
    report: dict[str, object] = {"machine": machine(), "fps": args.fps, "repeats": repeats, "decode": rows,
                                 "rss": memory, "fidelity": fidelity}
    if not args.no_faces:
        faces = face_table(args.fps)
        report["skip_loop_filter_faces"] = faces
        print("\nskip_loop_filter=all against plain decoding, FaceEngine on street.mp4's sampled frames:")
        print("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in faces.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
