"""Loopback live streams for benchmarks: a video file served as endless MPEG-TS over TCP, like a camera.

Each stream is a TCP port on 127.0.0.1. A client that connects gets the file
from its first packet (a key frame), looped forever, paced in real time by the
packets' decoding timestamps; the packets are copied, never re-encoded, with a
timestamp offset per loop. When the client goes away the port takes the next
one, so a camera that reconnects finds its stream again. facetrail reads it as
``tcp://127.0.0.1:PORT`` (a stream: live, frames dropped when behind).

The server runs in a child process (``LiveStreams``), so its CPU time and
memory never count against the process being measured. The module also makes
the clips the video benchmark uses: a file looped N times (packets copied) and
a re-encoded cut at another size.

Run alone: ``python bench/live_streams.py FILE [FILE...] [--copies N]`` serves
each file on N ports and prints the URLs until interrupted.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av


@dataclass(frozen=True)
class Packets:
    """A video file's packets in decoding order, kept as bytes so they can be muxed again and again."""

    template: Path  # the file itself, to copy its stream parameters from
    time_base: Fraction
    period: int  # one loop's length in time_base units (last dts - first dts + one frame)
    items: tuple[tuple[bytes, int, int, bool], ...]  # (data, pts, dts, key frame), dts from 0


def read_packets(path: Path) -> Packets:
    """Every packet of the first video stream of ``path``, timestamps shifted so the first dts is 0."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # read while the container is open: PyAV's stream fields are not valid after it closes (the time base
        # then came back None or from freed memory, pacing a stream at a crawl)
        time_base = stream.time_base
        assert time_base is not None
        raw = [(bytes(p), p.pts, p.dts, p.is_keyframe, p.duration) for p in container.demux(stream)
               if p.size and p.dts is not None and p.pts is not None]
    if not raw:
        raise ValueError(f"{path} has no video packets")
    first = raw[0][2]
    step = raw[-1][4] or (raw[-1][2] - raw[-2][2] if len(raw) > 1 else 1)
    period = raw[-1][2] - first + step
    items = tuple((data, pts - first, dts - first, key) for data, pts, dts, key, _ in raw)
    return Packets(path, time_base, period, items)


def _mux_loops(packets: Packets, output: av.container.OutputContainer, loops: int | None,
               pace: bool) -> None:
    """Write ``loops`` passes (None: forever) of ``packets`` into ``output``; with ``pace`` in real time."""
    with av.open(str(packets.template)) as template:
        stream = output.add_stream_from_template(template.streams.video[0])
    started = time.monotonic()
    passes = 0
    while loops is None or passes < loops:
        offset = passes * packets.period
        for data, pts, dts, key in packets.items:
            if pace:
                due = started + float((dts + offset) * packets.time_base)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            packet = av.Packet(data)
            packet.pts, packet.dts = pts + offset, dts + offset
            packet.time_base = packets.time_base
            packet.is_keyframe = key
            packet.stream = stream
            output.mux(packet)
        passes += 1


def loop_file(source: Path, target: Path, loops: int) -> Path:
    """``source`` played ``loops`` times in a row, packets copied (no re-encoding), written to ``target``."""
    packets = read_packets(source)
    with av.open(str(target), "w") as output:
        _mux_loops(packets, output, loops, pace=False)
    return target


def make_cut(source: Path, target: Path, width: int, height: int, *, fps: int = 25, gop: int = 50) -> Path:
    """``source`` scaled to ``width`` x ``height`` and re-encoded the way IP cameras encode.

    H.264 (libx264 veryfast, CRF 23), yuv420p, constant ``fps``, a key frame every ``gop`` frames and no
    scene-cut key frames, no B-frames.
    """
    with av.open(str(source)) as container, av.open(str(target), "w") as output:
        stream = output.add_stream("libx264", rate=fps, options={
            "preset": "veryfast", "crf": "23", "bf": "0", "g": str(gop), "keyint_min": str(gop),
            "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, frame in enumerate(container.decode(video=0)):
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
            scaled.pts, scaled.time_base = index, Fraction(1, fps)
            output.mux(stream.encode(scaled))
        output.mux(stream.encode(None))
    return target


# --------------------------------------------------------------------------- the server (child process)


class _SocketWriter:
    """The file-like object PyAV writes the MPEG-TS bytes to."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection

    def write(self, data: bytes) -> int:
        self.connection.sendall(data)
        return len(data)


def serve_port(listener: socket.socket, packets: Packets, stop: threading.Event) -> None:
    """Serve ``packets`` looped and paced to one client at a time on ``listener`` until ``stop``."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with av.open(_SocketWriter(connection), "w", format="mpegts") as output:
                _mux_loops(packets, output, None, pace=True)
        except Exception as error:
            if not _client_went_away(error):  # the server's own fault: say so (the client sees a closed stream)
                traceback.print_exc(file=sys.stderr)
        finally:
            connection.close()


def _client_went_away(error: BaseException | None) -> bool:
    """True when ``error`` is, or was raised while handling, a broken pipe or a reset (PyAV wraps what its
    write callback raised in its own error)."""
    while error is not None:
        if isinstance(error, (BrokenPipeError, ConnectionResetError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _serve_forever(files: list[Path], copies: int) -> None:
    """Child process: bind the ports, print them on one line, serve until stdin closes."""
    stop = threading.Event()
    threads = []
    ports = []
    for path in files:
        packets = read_packets(path)
        for _ in range(copies):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            ports.append(listener.getsockname()[1])
            thread = threading.Thread(target=serve_port, args=(listener, packets, stop), daemon=True)
            thread.start()
            threads.append(thread)
    print(" ".join(str(p) for p in ports), flush=True)
    sys.stdin.read()  # the parent closes our stdin to stop us
    stop.set()


class LiveStreams:
    """``copies`` live streams of each file, served by a child process; ``urls[file_index][copy]``.

    Use as a context manager: the streams accept clients once ``__enter__`` returns, and the child is
    stopped (stdin closed, then terminated if it lingers) on exit.
    """

    def __init__(self, files: list[Path], copies: int) -> None:
        self.files = files
        self.copies = copies
        self.urls: list[list[str]] = []
        self._child: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "--copies", str(self.copies),
                   *map(str, self.files)]
        self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line.strip():
            self.__exit__(None, None, None)
            raise RuntimeError("the live-stream server did not start")
        ports = [int(p) for p in line.split()]
        self.urls = [[f"tcp://127.0.0.1:{p}" for p in ports[k * self.copies:(k + 1) * self.copies]]
                     for k in range(len(self.files))]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait(timeout=5)
        if child.stdout is not None:
            child.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="video files to serve")
    parser.add_argument("--copies", type=int, default=1, help="streams per file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _serve_forever(args.files, args.copies)
        return
    with LiveStreams(args.files, args.copies) as streams:
        for path, urls in zip(args.files, streams.urls, strict=True):
            for url in urls:
                print(f"{url}  <- {path} (looped, real time)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
