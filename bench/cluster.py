"""The cluster path against one process, on the same clips, and how fast cameras resume after a node dies.

Both contenders are the real command, ``facetrail run``, on the same clips of a real enrolled face (files read
as fast as they are analysed), against the same PostgreSQL server:

* single: one process, every camera in one pipeline;
* cluster: the same configuration with a ``cluster:`` section, on a Ray cluster of three nodes started on this
  machine (a head without camera resources, two workers), one camera group per camera.

* pool (with ``--embedding-actors N``): the cluster with a pool of N embedding actors
  (``cluster.embedding.actors``) that every group sends its faces to, batched across groups.

Runs alternate (single, cluster[, pool], single, ...), ``--repeat`` times each; wall time is from launch to exit (the
cluster's includes placing the actors and loading one engine per group, as the single process loads its one;
the pool's also starting its actors, each loading the recogniser),
CPU time is every process's: the run's own and its children's, plus every process of the Ray cluster (sampled
from /proc while the run goes on: the actors end with it). ``overhead_pct`` compares the medians of wall time.

Then ``resume_s``: the cameras play in real time on the cluster, the worker running the first camera is
killed (SIGKILL, every process of that node), and the time until that camera's checkpoint moves again on the
other worker is measured (the head's health checks: 1 s period, 3 misses; Ray's defaults take about 15 s more).

    PYTHONPATH=src python bench/cluster.py [--cameras 2] [--seconds 30] [--repeat 2] [--embedding-actors 2]
        [--no-resume] [--json out.json]

Needs Ray (pip install 'facetrail[cluster]'), PostgreSQL (FACETRAIL_BENCH_PG, default the local server's
``test`` database) and the shipped models. Prints the machine, the settings and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from facetrail.cluster.local import LocalCluster, Node
from facetrail.gallery.enrol import EnrolOptions, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.store.db import Database
from facetrail.store.placements import placements
from facetrail.synth.door_clips import head_and_shoulders
from facetrail.synth.scenes import Appearance, composite_scene
from facetrail.synth.writer import write_clip
from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.samples import sample_image

PG_SERVER = os.environ.get("FACETRAIL_BENCH_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")
SRC = Path(__file__).resolve().parents[1] / "src"
FPS = 10.0


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"facetrail_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def make_clips(folder: Path, engine: FaceEngine, cameras: int, seconds: float) -> list[Path]:
    """One clip per camera: a real face walking past every 10 s."""
    person = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    clips = []
    for k in range(cameras):
        x = 0.3 + 0.4 * (k % 2)
        walks = [Appearance(person, t, t + 4.0, (x, 0.52), (x + 0.02, 0.55), 0.5, 0.55)
                 for t in range(1, int(seconds) - 4, 10)]
        path = folder / f"cam{k}.mp4"
        write_clip(path, composite_scene(walks, duration_s=seconds, fps=FPS, noise=2.0, seed=k), fps=FPS)
        clips.append(path)
    return clips


def enrol(data_dir: Path, url: str, engine: FaceEngine) -> None:
    gallery = Gallery(GallerySettings(data_dir, url), engine=engine)
    try:
        enrol_person(gallery, "Yao Ming", [sample_image("yaoming.jpg")], EnrolOptions(actor="bench", take_largest=True))
        create_watchlist(gallery, "vip", purpose="bench", actor="bench")
        add_member(gallery, "vip", "Yao Ming", actor="bench")
    finally:
        gallery.close()


def write_config(path: Path, data_dir: Path, url: str, clips: list[Path], *, address: str | None,
                 realtime: bool = False, motion_gate: bool = False, embedding_actors: int = 0) -> Path:
    lines = [f"purpose: cluster benchmark\ndata_dir: {data_dir}\ndatabase:\n  url: {url}\ncameras:\n"]
    for k, clip in enumerate(clips):
        lines.append(f"  cam{k}:\n    inputs:\n      - path: {clip}\n        realtime: {str(realtime).lower()}\n"
                     f"    detect:\n      fps: 5\n    motion:\n      enabled: {str(motion_gate).lower()}\n")
    if address is not None:
        lines.append(f"cluster:\n  ray:\n    address: {address}\n  resources: {{cameras: 1}}\n  poll_s: 0.5\n")
        if embedding_actors:
            lines.append(f"  embedding:\n    actors: {embedding_actors}\n")
    path.write_text("".join(lines))
    return path


class ClusterCpu:
    """CPU seconds used by the processes of a cluster, sampled from /proc while a run goes on.

    Actors end with the run and Ray does not reap them at once (their time never reaches the raylet's
    children's), so each process's latest reading is kept and the sum is taken at the end.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self._start = self._read()
        self._latest = dict(self._start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[int, float]:
        tick = os.sysconf("SC_CLK_TCK")
        seen = {}
        for node in self.cluster.nodes:
            for pid in self.cluster._pids(node):
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                seen[pid] = sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
        return seen

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._latest.update(self._read())

    def __enter__(self) -> ClusterCpu:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._latest.update(self._read())

    @property
    def seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._latest.items())


def timed_run(config: Path, env: dict[str, str], cluster: LocalCluster | None) -> tuple[float, float, str]:
    """Wall and CPU seconds of one ``facetrail run`` to its end, and what it printed."""
    before_children = os.times()
    with contextlib.ExitStack() as stack:
        meter = stack.enter_context(ClusterCpu(cluster)) if cluster is not None else None
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "run", str(config)], env=env,
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"facetrail run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    after_children = os.times()
    cpu = (after_children.children_user - before_children.children_user
           + after_children.children_system - before_children.children_system)
    return wall, cpu + (meter.seconds if meter is not None else 0.0), done.stdout


def pool_line(stdout: str) -> str:
    """The run's ``embedding pool: ...`` line (how it batched), or empty."""
    return next((line for line in stdout.splitlines() if line.startswith("embedding pool:")), "")


def measure_resume(cluster: LocalCluster, workers: list[Node], config: Path, db: Database,
                   env: dict[str, str]) -> float:
    """Seconds from killing the first camera's worker to that camera's checkpoint moving on another node."""
    run = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "run", str(config)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def rows() -> dict[str, tuple[str, float | None]]:
            with db.session() as session:
                return {name: (row.node, row.position_s) for name, row in placements(session).items()}

        deadline = time.monotonic() + 600
        while not (len(rows()) == len(workers) and all((p or 0) >= 2.0 for _, p in rows().values())):
            if time.monotonic() > deadline or run.poll() is not None:
                raise SystemExit("the cameras did not start on the cluster")
            time.sleep(0.2)
        node, _ = rows()["cam0"]
        victim = next(w for w in workers if node.endswith(cluster.node_id(w)[:8]))
        cluster.kill(victim)
        killed = time.perf_counter()
        while True:
            now_node, position = rows()["cam0"]
            if now_node != node and position is not None:
                break
            if time.monotonic() > deadline:
                raise SystemExit("cam0 did not resume")
            time.sleep(0.1)
        resumed = time.perf_counter() - killed
    finally:
        run.terminate()
        run.wait(timeout=120)
    return resumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each clip")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--motion-gate", choices=("on", "off"), default="off",
                        help="off (default): every sampled frame is analysed, so the work, not the start, is timed")
    parser.add_argument("--embedding-actors", type=int, default=0,
                        help="also run the cluster with a pool of this many embedding actors (0: no pool runs)")
    parser.add_argument("--no-resume", action="store_true", help="skip the resume-after-a-node-died measure")
    parser.add_argument("--json", type=Path, default=None, help="write overhead_pct, resume_s, the pool's figures")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", ""))
                                                         if p)}
    engine = FaceEngine(EngineConfig())
    work = Path(tempfile.mkdtemp(prefix="ft-bench-", dir="/tmp"))
    clips = make_clips(work, engine, args.cameras, args.seconds)
    cluster = LocalCluster(work / "ray", env={"PYTHONPATH": env["PYTHONPATH"]})
    contenders = ["single", "cluster"] + (["pool"] if args.embedding_actors else [])
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    batching: list[str] = []
    resume_s: float | None = None
    machine_start = machine_busy_s()
    started = time.perf_counter()
    try:
        cluster.start_head(num_cpus=1 + args.embedding_actors)  # the pool's actors ask for a CPU each
        workers = [cluster.add_worker(f"w{k}", num_cpus=max(1, args.cameras), resources={"cameras": args.cameras})
                   for k in range(2)]
        for k in range(args.repeat):
            for contender in contenders:
                with throwaway_database() as url:
                    data = work / f"data-{contender}-{k}"
                    enrol(data, url, engine)
                    address = None if contender == "single" else cluster.address
                    config = write_config(work / f"{contender}-{k}.yml", data, url, clips, address=address,
                                          motion_gate=args.motion_gate == "on",
                                          embedding_actors=args.embedding_actors if contender == "pool" else 0)
                    wall, cpu, stdout = timed_run(config, env, None if contender == "single" else cluster)
                runs[contender].append((wall, cpu))
                if contender == "pool":
                    batching.append(pool_line(stdout))
                print(f"{contender:7s} run {k + 1}: {wall:6.1f} s wall, {cpu:6.1f} s CPU", flush=True)
        if not args.no_resume:
            with throwaway_database() as url:
                data = work / "data-resume"
                enrol(data, url, engine)
                config = write_config(work / "resume.yml", data, url, clips, address=cluster.address, realtime=True)
                db = Database(url)
                try:
                    resume_s = measure_resume(cluster, workers, config, db, env)
                finally:
                    db.dispose()
            print(f"resume after a worker was killed: {resume_s:.1f} s", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    wall = {name: statistics.median(w for w, _ in done) for name, done in runs.items()}
    cpu = {name: statistics.median(c for _, c in done) for name, done in runs.items()}
    overhead_pct = 100.0 * (wall["cluster"] - wall["single"]) / wall["single"]
    measured = sum(c for done in runs.values() for _, c in done)
    others = machine_busy_s() - machine_start - measured - (os.times().user + os.times().system)
    background = max(0.0, others) / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"busy with other work: about {background:.0%} of the CPUs")
    print(f"settings: {args.cameras} cameras, {args.seconds:g} s clips sampled at 5 fps, motion gate "
          f"{args.motion_gate}, {args.repeat} runs each; "
          "cluster: head (1 CPU, no cameras) + 2 workers, one group per camera"
          + (f"; pool: {args.embedding_actors} embedding actor(s)" if args.embedding_actors else ""))
    labels = {"single": "single process", "cluster": "cluster", "pool": "cluster + pool"}
    for name in contenders:
        print(f"{labels[name] + ':':16s}median {wall[name]:.1f} s wall, {cpu[name]:.1f} s CPU")
    resumed = f"{resume_s:.1f} s (deadline 30 s)" if resume_s is not None else "not measured"
    print(f"cluster / single wall time: {wall['cluster'] / wall['single']:.2f} (overhead {overhead_pct:+.0f}%, goal "
          f"within 15%); resume after a node died: {resumed}")
    figures: dict[str, object] = {
        "overhead_pct": round(overhead_pct, 1), "resume_s": None if resume_s is None else round(resume_s, 2),
        "single_wall_s": runs["single"], "cluster_wall_s": runs["cluster"], "cameras": args.cameras,
        "clip_s": args.seconds, "motion_gate": args.motion_gate}
    if args.embedding_actors:
        pool_pct = 100.0 * (wall["pool"] - wall["cluster"]) / wall["cluster"]
        pool_cpu_pct = 100.0 * (cpu["pool"] - cpu["cluster"]) / cpu["cluster"]
        print(f"pool / cluster: wall {wall['pool'] / wall['cluster']:.2f} ({pool_pct:+.0f}%), CPU "
              f"{cpu['pool'] / cpu['cluster']:.2f} ({pool_cpu_pct:+.0f}%)")
        for line in batching:
            print(f"  {line}")
        figures.update({"embedding_actors": args.embedding_actors, "pool_wall_s": runs["pool"],
                        "pool_vs_cluster_wall_pct": round(pool_pct, 1),
                        "pool_vs_cluster_cpu_pct": round(pool_cpu_pct, 1), "pool_batching": batching})
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
