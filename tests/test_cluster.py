"""The pipeline on a real Ray cluster of three nodes on this machine; a worker node killed mid-run.

The cluster (a head and two workers, each with its own temporary folder) runs real clips of enrolled people
against a throwaway PostgreSQL database; events go to a real Mosquitto and a real webhook receiver.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from facetrail.config.errors import ConfigError
from facetrail.config.loader import parse_config
from facetrail.store.db import Database
from facetrail.store.models import CameraPlacement, Event, OutboxMessage, as_utc
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from mqtt_kit import Listener
from pipeline_kit import enrol, head_and_shoulders, make_clip, two_cameras_of_yao, walk_in
from services import SECRET_A, Mosquitto, Receiver, facetrail_run, free_port, wait_until

SRC = Path(__file__).resolve().parents[1] / "src"
RUN_WAIT_S = 600.0  # a busy 2-core machine, three nodes and two engines: generous, never a timing assertion


def _ray_problem() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'facetrail[cluster]')"
    if not Path(sys.executable).with_name("ray").exists():
        return f"the ray command is not beside {sys.executable}"
    return None


def short_dir(under: Path, name: str) -> Path:
    """A folder for a Ray node's files: a link under /tmp to one in ``under`` (Ray's socket paths are short)."""
    target = under / name
    target.mkdir(parents=True, exist_ok=True)
    link = Path(tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp")) / "n"
    link.symlink_to(target)
    atexit.register(shutil.rmtree, link.parent, True)  # the link only; the files stay in ``under``
    return link


def facetrail(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- without a cluster ---------------------------------------------------------------------------------------


def test_a_plain_run_never_imports_ray(tmp_path: Path) -> None:
    config = tmp_path / "site.yml"
    config.write_text(f"purpose: no cluster\ndata_dir: {tmp_path / 'data'}\ncameras:\n  door:\n    inputs:\n"
                      f"      - path: {tmp_path / 'missing.mp4'}\n    reconnect:\n      max_attempts: 1\n")
    probe = ("import sys\nfrom facetrail.cli.main import main\n"
             f"code = main(['run', {str(config)!r}])\n"
             "print('RAY' if 'ray' in sys.modules else 'NO RAY', code)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "NO RAY 0"
    assert "camera door: failed" in done.stdout  # it did run (the file is missing), on one process


def test_a_cluster_needs_a_shared_postgresql_database(tmp_path: Path) -> None:
    text = ("purpose: cluster\ncameras:\n  door:\n    inputs:\n      - path: door.mp4\n"
            "cluster:\n  ray:\n    address: 127.0.0.1:6379\n")
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "site.yml")
    assert "line 6" in str(refused.value) and "PostgreSQL" in str(refused.value)
    config = tmp_path / "site.yml"
    config.write_text(text.split("cluster:")[0])
    done = facetrail("run", config, "--ray", "127.0.0.1:6379")
    assert done.returncode == 1
    assert "PostgreSQL" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "facetrail-data").exists()  # nothing was opened or written


def test_no_cluster_at_the_address_is_one_line_and_opens_nothing(tmp_path: Path, postgres: str) -> None:
    if _ray_problem():
        pytest.skip(str(_ray_problem()))
    config = tmp_path / "site.yml"
    config.write_text(f"purpose: cluster\ndata_dir: {tmp_path / 'data'}\ndatabase:\n  url: {postgres}\n"
                      f"cameras:\n  door:\n    inputs:\n      - path: door.mp4\n")
    done = facetrail("run", config, "--ray", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "no Ray cluster answers at 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr
    db = Database(postgres, migrate=False)
    with db.session() as session:  # the database was not even migrated
        assert session.scalar(sa.text("select count(*) from information_schema.tables "
                                      "where table_name = 'camera_placements'")) == 0
    db.dispose()


def test_the_cluster_section_is_read_with_its_defaults() -> None:
    config = parse_config("purpose: cluster\ndatabase:\n  url: postgresql+psycopg://u@db/facetrail\n"
                          "cameras:\n  door:\n    inputs:\n      - path: door.mp4\n"
                          "cluster:\n  ray:\n    address: head:6379\n  resources: {cameras: 1}\n", "site.yml")
    assert config.cluster is not None
    assert (config.cluster.ray.address, config.cluster.restart_deadline_s, config.cluster.resources) == \
        ("head:6379", 30.0, {"cameras": 1.0})
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_config("purpose: x\ndatabase:\n  url: postgresql+psycopg://u@db/f\ncameras:\n  d:\n    inputs:\n"
                     "      - path: d.mp4\ncluster:\n  ray:\n    adress: head:6379\n", "site.yml")


def test_placements_record_moves_and_keep_the_checkpoint_for_the_next_run(postgres: str) -> None:
    from facetrail.api.views import cameras_out
    from facetrail.store.placements import checkpoint, place

    db = Database(postgres)
    origin = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with db.session() as session:
        fresh = place(session, ["gate"], run_id="run-1", node="10.0.0.1/aaaa", origin=origin)
    assert fresh["gate"].position_s is None and fresh["gate"].clock_origin == origin
    with db.session() as session:
        checkpoint(session, "gate", 12.4)
    with db.session() as session:  # the node died: the same run places the camera elsewhere
        moved = place(session, ["gate"], run_id="run-1", node="10.0.0.2/bbbb", origin=datetime.now(UTC))
    assert moved["gate"].position_s == 12.4 and moved["gate"].clock_origin == origin
    with db.session() as session:
        (shown,) = cameras_out(session, None)
    assert (shown.name, shown.node, shown.moved_from) == ("gate", "10.0.0.2/bbbb", "10.0.0.1/aaaa")
    assert shown.moved_at is not None
    with db.session() as session:  # the next run (the head died) resumes, and has not moved yet
        resumed = place(session, ["gate"], run_id="run-2", node="10.0.0.3/cccc", origin=datetime.now(UTC))
        (shown,) = cameras_out(session, None)
    assert resumed["gate"].position_s == 12.4 and resumed["gate"].clock_origin == origin
    assert (shown.node, shown.moved_from) == ("10.0.0.3/cccc", None)
    with db.session() as session:  # read to its end: the run after starts afresh
        checkpoint(session, "gate", None)
    later = datetime.now(UTC)
    with db.session() as session:
        again = place(session, ["gate"], run_id="run-3", node="10.0.0.3/cccc", origin=later)
    assert again["gate"].position_s is None and again["gate"].clock_origin == later
    db.dispose()


def test_a_resumed_camera_ends_the_event_a_dead_run_left_open_and_reads_on_from_its_checkpoint(
        tmp_path: Path, video_engine: FaceEngine) -> None:
    """Without Ray: what a restarted group does, on one process (the resume position and the left-open event)."""
    from facetrail.pipeline.checkpoints import Checkpoints
    from facetrail.pipeline.orphans import open_watchlist_events
    from facetrail.pipeline.runner import Pipeline
    from facetrail.store.models import Sighting
    from pipeline_kit import config_for

    store = tmp_path / "data"
    enrol(store, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip")
    yao = head_and_shoulders(video_engine, sample_image("yaoming.jpg"))
    clip = make_clip(tmp_path / "gate.mp4", [walk_in(yao, 0.5, 4.0, 0.4)], 8.0)
    config = config_for(store, {"gate": clip}, "mqtt:\n  enabled: true\n  port: 1\n")
    first = Pipeline(config, engine=video_engine, deliver=False)
    first.run(until_done=True)
    db = first.gallery.db
    with db.session() as session:  # as if the run had died with Yao Ming in view: his event never ended
        (event,) = session.scalars(select(Event))
        event.ended_at = None
        uid, seen = event.uid, session.scalar(select(Sighting.last_seen).where(Sighting.id == event.sighting_id))
        ends_before = session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.payload.contains('"end"')))
    first.gallery.close()

    second = Pipeline(config, engine=video_engine, deliver=False, positions={"gate": 6.0})  # he left at 4 s
    checkpoints = Checkpoints(second.gallery.db, [r.camera for r in second.cameras], {"gate": 6.0})
    second.consumers.append(checkpoints)
    second.recorder.resume(open_watchlist_events(second.gallery.db, ["gate"]))
    checkpoints.end_orphans = second.recorder.end_orphans
    second.run(until_done=True)
    (read,) = second.status()
    assert 0 < read.frames_analysed + read.frames_skipped_motion <= 11  # only what follows 6 s (2 s at 5 fps)
    with second.gallery.db.session() as session:
        events = list(session.scalars(select(Event)))
        ends_after = session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.payload.contains('"end"')))
    assert [e.uid for e in events] == [uid]  # no new event
    assert events[0].ended_at is not None and as_utc(events[0].ended_at) == as_utc(seen)  # ended when last seen
    assert ends_after == ends_before + 1  # its end announced once more (the first one was lost with the run)
    second.gallery.close()


def test_the_embedding_batcher_answers_each_caller_its_own_rows_in_order(video_engine: FaceEngine) -> None:
    """Several callers' real face crops through one batcher: each gets exactly its rows, batches never overfill."""
    import asyncio

    from facetrail.cluster.batching import MicroBatcher
    from facetrail.vision.embedder import ArcFaceEmbedder

    faces = video_engine.analyze(cv2.imread(str(sample_image("players.jpg"))))
    assert faces.aligned is not None and len(faces) >= 6
    crops = faces.aligned.crops
    embedder = video_engine.embedder
    assert isinstance(embedder, ArcFaceEmbedder)
    alone = embedder.embed_crops(crops)
    # callers asking for 1, 3, 2, 1 ... faces (a crop may be asked for twice: by two groups)
    asks = [[0], [1, 2, 3], [4, 5], [0], [5, 4, 3, 2]]

    async def ask(batcher: MicroBatcher) -> list[np.ndarray]:
        return list(await asyncio.gather(*(batcher.run(crops[rows]) for rows in asks)))

    total = sum(map(len, asks))
    # max_batch exactly every face asked for: one batch, closed by being full (the long wait never elapses)
    one = MicroBatcher(embedder.embed_crops, max_batch=total, max_wait_s=60.0)
    answers = asyncio.run(ask(one))
    assert (one.stats.batches, one.stats.requests, one.stats.rows, one.stats.largest) == (1, len(asks), total, total)
    # at most 4 faces a batch: the callers are split over batches, none is split, none waits for a timeout
    small = MicroBatcher(embedder.embed_crops, max_batch=4, max_wait_s=60.0)
    split = asyncio.run(ask(small))
    assert small.stats.batches >= 3 and small.stats.largest <= 4 and small.stats.rows == total
    for rows, shared, batched in zip(asks, answers, split, strict=True):
        for got in (shared, batched):
            assert got.shape == (len(rows), alone.shape[1]) and got.dtype == np.float32
            assert np.all(np.sum(got * alone[rows], axis=1) > 0.9999)  # its own faces, in its order

    def broken(_: np.ndarray) -> np.ndarray:
        raise RuntimeError("the network failed")

    async def fail_then_work() -> np.ndarray:
        failing = MicroBatcher(broken, max_batch=2, max_wait_s=0.0)
        results = await asyncio.gather(failing.run(crops[:1]), failing.run(crops[1:2]), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)  # every caller of the batch hears of it
        failing.function = embedder.embed_crops
        return await failing.run(crops[2:3])  # and the batcher goes on

    assert float(np.sum(asyncio.run(fail_then_work())[0] * alone[2])) > 0.9999


def test_the_analyzer_embeds_through_the_given_embedder(video_engine: FaceEngine) -> None:
    """The pipeline's seam: the same crops through a given embedder give the engine's own vectors."""
    from facetrail.pipeline.analyzer import FrameAnalyzer
    from facetrail.vision.embedder import ArcFaceEmbedder
    from facetrail.vision.lowlight import LowLightConfig

    class Counting:
        def __init__(self, inner: ArcFaceEmbedder, model_id: str) -> None:
            self.inner, self.model_id, self.crops = inner, model_id, 0

        def embed_crops(self, crops: np.ndarray) -> np.ndarray:
            self.crops += len(crops)
            return self.inner.embed_crops(crops)

    assert isinstance(video_engine.embedder, ArcFaceEmbedder)
    image = cv2.imread(str(sample_image("players.jpg")))
    (frame,) = FrameAnalyzer(video_engine).analyse([image], [LowLightConfig()])
    requests = [(frame, i) for i in range(len(frame)) if frame.shot(i).usable]
    assert len(requests) >= 4
    counting = Counting(video_engine.embedder, video_engine.recogniser.model_id)
    through = FrameAnalyzer(video_engine, embedder=counting).embed(requests)
    assert counting.crops == len(requests)
    assert np.array_equal(through, FrameAnalyzer(video_engine).embed(requests))  # the very same input
    with pytest.raises(ValueError, match="would not compare"):
        FrameAnalyzer(video_engine, embedder=Counting(video_engine.embedder, "another-model"))


def test_a_pipeline_s_cameras_and_doors_embed_through_its_embedder(tmp_path: Path, video_engine: FaceEngine) -> None:
    from facetrail.pipeline.runner import Pipeline
    from facetrail.vision.embedder import ArcFaceEmbedder
    from pipeline_kit import config_for

    assert isinstance(video_engine.embedder, ArcFaceEmbedder)
    config = config_for(tmp_path / "data", {"gate": tmp_path / "gate.mp4"},
                        "mqtt:\n  enabled: false\ndoors:\n  front:\n    camera: gate\n    allow: [residents]\n")
    pipeline = Pipeline(config, engine=video_engine, deliver=False, embedder=video_engine.embedder)
    try:
        assert pipeline.analyzer.embedder is video_engine.embedder  # the tracks' shots
        assert pipeline.doors.analyzer is pipeline.analyzer  # the doors' faces
    finally:
        pipeline.gallery.close()


def test_an_embedding_pool_needs_the_arcface_recogniser() -> None:
    text = ("purpose: cluster\ndatabase:\n  url: postgresql+psycopg://u@db/facetrail\n"
            "cameras:\n  door:\n    inputs:\n      - path: door.mp4\n"
            "cluster:\n  ray:\n    address: head:6379\n  embedding:\n    actors: 2\n")
    config = parse_config(text, "site.yml")
    assert config.cluster is not None
    pool = config.cluster.embedding
    assert (pool.actors, pool.max_batch, pool.max_wait_ms, pool.gpus_per_actor) == (2, 32, 5.0, None)
    assert parse_config(text.replace("actors: 2", "actors: 0") + "recogniser: dlib\n", "site.yml").cluster
    with pytest.raises(ConfigError, match="arcface"):
        parse_config(text + "recogniser: dlib\n", "site.yml")


# -- on a cluster --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A head (no camera resources) and two workers that run up to two camera groups each."""
    problem = _ray_problem()
    if problem:
        pytest.skip(problem)
    from facetrail.cluster.local import LocalCluster

    root = short_dir(tmp_path_factory.mktemp("ray"), "cluster")
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    made = LocalCluster(root, env={"PYTHONPATH": path})
    try:
        made.start_head(num_cpus=1)
        made.add_worker("worker-a", num_cpus=2, resources={"cameras": 2})
        made.add_worker("worker-b", num_cpus=2, resources={"cameras": 2})
        yield made
    finally:
        made.stop()


@pytest.fixture
def clips(tmp_path: Path, video_engine: FaceEngine) -> dict[str, Path]:
    """Two cameras; Yao Ming walks past each twice (two watchlist hits per camera)."""
    return two_cameras_of_yao(tmp_path, video_engine)


def site(tmp_path: Path, url: str, address: str, clips: dict[str, Path], broker: int, webhook: int) -> Path:
    lines = [f"purpose: cluster test\ndata_dir: {tmp_path / 'data'}\ndatabase:\n  url: {url}\n",
             f"mqtt:\n  enabled: true\n  port: {broker}\n",
             f"webhooks:\n  - name: desk\n    url: http://127.0.0.1:{webhook}/hook\n    secret: {SECRET_A}\n",
             f"cluster:\n  ray:\n    address: {address}\n  resources: {{cameras: 1}}\n  poll_s: 0.5\n", "cameras:\n"]
    for name, clip in clips.items():
        lines.append(f"  {name}:\n    inputs:\n      - path: {clip}\n        realtime: true\n    detect:\n"
                     "      fps: 5\n")
    path = tmp_path / "site.yml"
    path.write_text("".join(lines))
    return path


def placements(db: Database) -> dict[str, CameraPlacement]:
    with db.session() as session:
        rows = {row.camera: row for row in session.scalars(select(CameraPlacement))}
        for row in rows.values():
            session.expunge(row)
        return rows


def pool_site(tmp_path: Path, name: str, url: str, address: str, clips: dict[str, Path], *, actors: int,
              realtime: bool) -> Path:
    """A cluster site with ``actors`` embedding actors (0: each group embeds its own faces); no delivery."""
    lines = [f"purpose: embedding pool test\ndata_dir: {tmp_path / name}\ndatabase:\n  url: {url}\n",
             f"cluster:\n  ray:\n    address: {address}\n  resources: {{cameras: 1}}\n  poll_s: 0.5\n",
             f"  embedding:\n    actors: {actors}\n    cpus_per_actor: 0.5\n", "cameras:\n"]
    for camera, clip in clips.items():
        lines.append(f"  {camera}:\n    inputs:\n      - path: {clip}\n        realtime: {str(realtime).lower()}\n"
                     "    detect:\n      fps: 5\n")
    path = tmp_path / f"{name}.yml"
    path.write_text("".join(lines))
    return path


def stored_sightings(data_dir: Path, url: str, engine: FaceEngine) -> list[tuple[str, str | None, np.ndarray]]:
    """(camera, identity's name, best shot's embedding) of every sighting, per camera in the order first seen."""
    from facetrail.gallery.gallery import Gallery, GallerySettings
    from facetrail.store.models import Identity, Sighting
    from facetrail.store.sealed import open_from

    gallery = Gallery(GallerySettings(data_dir, url), engine=engine)  # its keys open the sealed embeddings
    try:
        with gallery.db.session() as session:
            rows = session.execute(select(Sighting.id, Sighting.camera, Identity.display_name, Sighting.embedding)
                                   .join(Identity, Identity.id == Sighting.identity_id, isouter=True)
                                   .order_by(Sighting.camera, Sighting.first_seen)).all()
            plain = [open_from(gallery.keys, session, "sightings", "embedding", id_, blob)
                     for id_, _, _, blob in rows]
    finally:
        gallery.close()
    assert rows and all(blob is not None for blob in plain)
    return [(camera, name, np.frombuffer(blob or b"", np.float32)) for (_, camera, name, _), blob in zip(
        rows, plain, strict=True)]


def watchlist_events(url: str) -> Counter[tuple[str, str | None]]:
    from facetrail.store.models import Identity

    db = Database(url, migrate=False)
    with db.session() as session:
        rows = session.execute(select(Event.camera, Identity.display_name)
                               .join(Identity, Identity.id == Event.identity_id, isouter=True)
                               .where(Event.kind == "watchlist_hit", Event.ended_at.is_not(None))).all()
    db.dispose()
    return Counter((camera, name) for camera, name in rows)


def test_a_pool_of_embedding_actors_names_the_same_people_with_the_same_embeddings(
        tmp_path: Path, cluster: object, postgres: str, clips: dict[str, Path], video_engine: FaceEngine) -> None:
    """The same two clips (read as fast as analysed: the same frames) with groups embedding themselves, then with
    two embedding actors: the same events, the same sightings, their embeddings equal to float rounding."""
    from dbs import throwaway_postgres
    from facetrail.cluster.local import LocalCluster

    assert isinstance(cluster, LocalCluster)
    with throwaway_postgres() as pooled_url:
        outputs = {}
        for name, url, actors in (("local", postgres, 0), ("pool", pooled_url, 2)):
            enrol(tmp_path / name, video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip",
                  db_url=url)
            done = facetrail("run", pool_site(tmp_path, name, url, cluster.address, clips, actors=actors,
                                              realtime=False), timeout=RUN_WAIT_S)
            assert done.returncode == 0, done.stderr[-3000:]
            outputs[name] = done.stdout
        assert "embedding pool" not in outputs["local"]
        assert "embedding pool: 2 actor(s) embedded" in outputs["pool"]
        summary = {name: next(line for line in out.splitlines() if line.startswith("analysed "))
                   for name, out in outputs.items()}
        assert summary["pool"] == summary["local"]  # the same frames, faces, embeddings, tracks, events

        events = watchlist_events(pooled_url)
        assert events == watchlist_events(postgres) == {("gate", "Yao Ming"): 2, ("hall", "Yao Ming"): 2}
        local = stored_sightings(tmp_path / "local", postgres, video_engine)
        pooled = stored_sightings(tmp_path / "pool", pooled_url, video_engine)
    assert [(camera, name) for camera, name, _ in pooled] == [(camera, name) for camera, name, _ in local]
    for (_, _, mine), (_, _, theirs) in zip(pooled, local, strict=True):
        assert float(mine @ theirs) > 0.9999  # the same crops; only the batch around them differs


def test_killed_embedding_actors_lose_no_face(tmp_path: Path, cluster: object, postgres: str,
                                            clips: dict[str, Path], video_engine: FaceEngine) -> None:
    """Every embedding actor SIGKILLed while the cameras play: Ray restarts them, the groups resend what they lost,
    and both walks past both cameras are still named."""
    from facetrail.cluster.local import LocalCluster

    assert isinstance(cluster, LocalCluster)
    enrol(tmp_path / "data", video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip", db_url=postgres)
    config = pool_site(tmp_path, "data", postgres, cluster.address, clips, actors=2, realtime=True)
    db = Database(postgres)

    def embedding_actors() -> set[int]:
        return {pid for node in cluster.nodes for pid in cluster._pids(node)
                if _cmdline_of(pid).startswith("ray::EmbeddingActor")}

    with facetrail_run(config, log=tmp_path / "run.log") as run:
        def first_event_open() -> bool:
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            with db.session() as session:
                return session.scalar(select(func.count()).select_from(Event).where(Event.ended_at.is_(None))) > 0

        wait_until(first_event_open, "a first event, Yao Ming in view", timeout=RUN_WAIT_S)
        killed = embedding_actors()
        assert len(killed) == 2
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(embedding_actors() - killed) == 2, "the embedding actors to restart",
                   timeout=RUN_WAIT_S)
        assert run.wait(timeout=RUN_WAIT_S) == 0, (tmp_path / "run.log").read_text()[-3000:]
    db.dispose()
    assert watchlist_events(postgres) == {("gate", "Yao Ming"): 2, ("hall", "Yao Ming"): 2}  # no walk lost
    assert "embedding pool: 2 actor(s)" in (tmp_path / "run.log").read_text()


def test_a_request_whose_embedding_actor_dies_is_answered_by_another(cluster: object,
                                                                      video_engine: FaceEngine) -> None:
    """A request held in an actor's batch (it waits for company) when the actor is killed: the pool client sends
    it again, and its caller gets its own rows."""
    import ray

    from facetrail.cluster.embedding import EmbeddingActor, EmbeddingPool, pool_engine
    from facetrail.cluster.local import LocalCluster
    from facetrail.config.cluster import EmbeddingPool as PoolSettings
    from facetrail.vision.embedder import ArcFaceEmbedder
    from facetrail.vision.engine import EngineConfig

    assert isinstance(cluster, LocalCluster) and isinstance(video_engine.embedder, ArcFaceEmbedder)
    crops = video_engine.analyze(cv2.imread(str(sample_image("players.jpg")))).aligned
    assert crops is not None
    alone = video_engine.embedder.embed_crops(crops.crops[:3])
    ray.init(address=cluster.address, namespace="pool-test", logging_level="WARNING", log_to_driver=False)
    try:
        # as start_actors makes them, but a batch waits 8 s for more faces (more than the settings allow): long
        # enough to find the request held and kill its actor
        engine = pool_engine(EngineConfig(), PoolSettings(actors=2, cpus_per_actor=0.5))
        remote = ray.remote(EmbeddingActor).options(max_restarts=-1, max_task_retries=0, num_cpus=0.5)
        handles = [remote.remote(engine, 64, 8.0) for _ in range(2)]
        model_ids = ray.get([handle.ready.remote() for handle in handles], timeout=RUN_WAIT_S)
        pool = EmbeddingPool(handles, video_engine.recogniser.model_id)
        assert model_ids == [pool.model_id] * 2
        answer: list[np.ndarray] = []
        caller = threading.Thread(target=lambda: answer.append(pool.embed_crops(crops.crops[:3])))
        caller.start()
        holding: list[int] = []

        def held() -> bool:
            holding[:] = [i for i, stats in enumerate(ray.get([h.stats.remote() for h in handles])) if stats.waiting]
            return bool(holding)

        wait_until(held, "the request to reach an embedding actor", timeout=RUN_WAIT_S)
        ray.kill(handles[holding[0]], no_restart=False)
        caller.join(RUN_WAIT_S)
        assert not caller.is_alive() and pool.resent >= 1
        (vectors,) = answer
        assert vectors.shape == alone.shape and np.all(np.sum(vectors * alone, axis=1) > 0.9999)
        for handle in handles:
            ray.kill(handle, no_restart=True)
    finally:
        ray.shutdown()


def _cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").strip()
    except OSError:
        return ""


def test_a_killed_worker_s_cameras_resume_elsewhere_and_every_event_arrives_once(
        tmp_path: Path, cluster: object, postgres: str, clips: dict[str, Path], video_engine: FaceEngine,
        broker: Mosquitto) -> None:
    from facetrail.cluster.local import LocalCluster

    assert isinstance(cluster, LocalCluster)
    enrol(tmp_path / "data", video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip", db_url=postgres)
    webhook = free_port()
    receiver = Receiver(webhook, {"/hook": SECRET_A}).start()
    config = site(tmp_path, postgres, cluster.address, clips, broker.port, webhook)
    db = Database(postgres)
    with Listener(broker.port, "facetrail/events") as heard:
        with facetrail_run(config, log=tmp_path / "run.log") as run:
            workers = {cluster.node_id(node)[:8]: node for node in cluster.nodes if node.name != "head"}

            def running_on_both() -> bool:
                assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                rows = placements(db)
                return len(rows) == 2 and all((row.position_s or 0) >= 1.0 for row in rows.values())

            wait_until(running_on_both, "both cameras to be reading", timeout=RUN_WAIT_S)
            before = placements(db)
            nodes = {name: row.node.rsplit("/", 1)[1] for name, row in before.items()}
            assert set(nodes.values()) == set(workers), nodes  # one camera on each worker, none on the head

            # Kill the node running "gate" while Yao Ming is in view and his first event there is open: the
            # resumed camera must continue that event, not raise a second one.
            def gate_event_open() -> bool:
                with db.session() as session:
                    return session.scalar(select(func.count()).select_from(Event).where(
                        Event.camera == "gate", Event.ended_at.is_(None))) == 1

            wait_until(gate_event_open, "gate's first event", timeout=RUN_WAIT_S)
            with db.session() as session:
                open_uid = session.scalar(select(Event.uid).where(Event.camera == "gate"))
            victim = nodes["gate"]
            killed_at = datetime.now(UTC)
            assert cluster.kill(workers[victim])

            def moved() -> bool:
                row = placements(db)["gate"]
                return row.moved_from is not None and not row.node.endswith(victim)

            wait_until(moved, "gate to resume on the other worker", timeout=RUN_WAIT_S)
            assert run.wait(timeout=RUN_WAIT_S) == 0, (tmp_path / "run.log").read_text()[-3000:]
        after = placements(db)
        assert after["gate"].moved_from is not None and after["gate"].moved_from.endswith(victim)
        assert after["gate"].node.rsplit("/", 1)[1] == nodes["hall"]  # the survivor runs both now
        assert after["hall"].moved_from is None
        assert all(row.position_s is None for row in after.values())  # both files read to their end
        output = (tmp_path / "run.log").read_text()
        assert f"camera gate: on node {after['gate'].node}, moved from {after['gate'].moved_from}" in output
        assert "camera gate: finished" in output and "camera hall: finished" in output

        with db.session() as session:
            events = {e.uid: e for e in session.scalars(select(Event).where(Event.kind == "watchlist_hit"))}
            waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.delivered_at.is_(None)))
            hooks = list(session.scalars(select(OutboxMessage.message_id).where(OutboxMessage.channel == "webhook")
                                         .order_by(OutboxMessage.id)))
        assert waiting == 0
        per_camera = Counter(e.camera for e in events.values())
        assert per_camera == {"gate": 2, "hall": 2}  # two walks past each camera: no event lost, none twice
        assert all(e.ended_at is not None for e in events.values())
        # The event open at the kill went on on the new node (the files play in real time, stamped on the
        # clock): it ended after the kill, when Yao Ming left, not when the dead node last saw him.
        assert as_utc(events[open_uid].ended_at) > killed_at

        def all_heard() -> bool:
            ends = [m.json() for m in heard.on("facetrail/events") if m.json()["type"] == "end"]
            return {p["after"]["id"] for p in ends} >= set(events)

        wait_until(all_heard, "every event's end over MQTT")
        payloads = [m.json() for m in heard.on("facetrail/events")]
        ids = [p["message_id"] for p in payloads]
        assert len(ids) == len(set(ids))  # no MQTT message twice
        news = Counter(p["after"]["id"] for p in payloads if p["type"] == "new")
        ends = Counter(p["after"]["id"] for p in payloads if p["type"] == "end")
        assert news == Counter(set(events)) and ends == Counter(set(events))  # each event new once, ended once
        assert receiver.delivered("/hook") == hooks  # every webhook once, in order
        assert not receiver.problems
    receiver.stop()
    db.dispose()


def test_cameras_no_node_can_run_fail_the_run_with_the_reason(tmp_path: Path, cluster: object, postgres: str,
                                                              clips: dict[str, Path]) -> None:
    from facetrail.cluster.local import LocalCluster

    assert isinstance(cluster, LocalCluster)
    config = tmp_path / "site.yml"
    config.write_text(f"purpose: cluster test\ndata_dir: {tmp_path / 'data'}\ndatabase:\n  url: {postgres}\n"
                      f"cluster:\n  ray:\n    address: {cluster.address}\n  resources: {{gpu_room: 1}}\n"
                      f"  start_timeout_s: 5\ncameras:\n  gate:\n    inputs:\n      - path: {clips['gate']}\n")
    done = facetrail("run", config, timeout=RUN_WAIT_S)
    assert done.returncode == 1
    assert "gate: not started after 5 s" in done.stderr and "gpu_room" in done.stderr
    assert "Traceback" not in done.stderr


def test_embedding_actors_no_node_can_run_fail_the_run_with_the_reason(tmp_path: Path, cluster: object,
                                                                       postgres: str, clips: dict[str, Path]) -> None:
    from facetrail.cluster.local import LocalCluster

    assert isinstance(cluster, LocalCluster)
    config = tmp_path / "site.yml"
    config.write_text(f"purpose: cluster test\ndata_dir: {tmp_path / 'data'}\ndatabase:\n  url: {postgres}\n"
                      f"cluster:\n  ray:\n    address: {cluster.address}\n  start_timeout_s: 5\n"
                      f"  embedding:\n    actors: 1\n    resources: {{gpu_room: 1}}\n"
                      f"cameras:\n  gate:\n    inputs:\n      - path: {clips['gate']}\n")
    done = facetrail("run", config, timeout=RUN_WAIT_S)
    assert done.returncode == 1
    assert "1 embedding actor(s) not started after 5 s" in done.stderr and "gpu_room" in done.stderr
    assert "Traceback" not in done.stderr


def test_when_the_head_dies_the_run_stops_cleanly_and_the_next_run_resumes(
        tmp_path: Path, postgres: str, video_engine: FaceEngine, broker: Mosquitto) -> None:
    problem = _ray_problem()
    if problem:
        pytest.skip(problem)
    from facetrail.cluster.local import LocalCluster

    enrol(tmp_path / "data", video_engine, "Yao Ming", sample_image("yaoming.jpg"), watchlist="vip", db_url=postgres)
    webhook = free_port()
    receiver = Receiver(webhook, {"/hook": SECRET_A}).start()
    db = Database(postgres)
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    yao = head_and_shoulders(video_engine, sample_image("yaoming.jpg"))  # 45 s: the head dies long before its end
    gate = {"gate": make_clip(tmp_path / "long.mp4", [walk_in(yao, 0.5, 4.5, 0.3), walk_in(yao, 38.0, 42.0, 0.3)],
                              45.0)}
    with Listener(broker.port, "facetrail/events") as heard:
        first = LocalCluster(short_dir(tmp_path, "ray-1"), env={"PYTHONPATH": path})
        try:
            first.start_head()
            first.add_worker("worker", num_cpus=2, resources={"cameras": 2})
            config = site(tmp_path, postgres, first.address, gate, broker.port, webhook)
            run = subprocess.Popen([sys.executable, "-m", "facetrail.cli.main", "run", str(config)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL)

            def gate_event_open() -> bool:
                assert run.poll() is None
                with db.session() as session:
                    return session.scalar(select(func.count()).select_from(Event).where(
                        Event.camera == "gate", Event.ended_at.is_(None))) == 1

            wait_until(gate_event_open, "gate's first event", timeout=RUN_WAIT_S)
            first.kill(first.nodes[0])  # the head
            _, stderr = run.communicate(timeout=RUN_WAIT_S)
            (tmp_path / "run.log").write_text(stderr)
        finally:
            first.stop()
        assert run.returncode == 1, stderr[-3000:]
        assert "the cluster run stopped" in stderr and "resumes" in stderr and "Traceback" not in stderr
        with db.session() as session:
            stored = set(session.scalars(select(Event.uid)))
            announced = {json.loads(m.payload)["after"]["id"] for m in session.scalars(
                select(OutboxMessage).where(OutboxMessage.destination == "facetrail/events"))}
        assert stored and stored <= announced  # nothing half-written
        stopped_at = placements(db)["gate"].position_s
        assert stopped_at is not None and stopped_at > 0  # a checkpoint to resume from

        second = LocalCluster(short_dir(tmp_path, "ray-2"), env={"PYTHONPATH": path})
        try:
            second.start_head()
            second.add_worker("worker", num_cpus=2, resources={"cameras": 2})
            config = site(tmp_path, postgres, second.address, gate, broker.port, webhook)
            done = facetrail("run", config, timeout=RUN_WAIT_S)
        finally:
            second.stop()
        assert done.returncode == 0, done.stderr[-3000:]
        assert placements(db)["gate"].position_s is None  # read to the end this time
        with db.session() as session:
            events = set(session.scalars(select(Event.uid).where(Event.kind == "watchlist_hit",
                                                                  Event.ended_at.is_not(None))))
            total = session.scalar(select(func.count()).select_from(Event))
        assert len(events) == total == 2  # resumed from the checkpoint: the first walk past is not raised again

        def all_heard() -> bool:
            return {m.json()["after"]["id"] for m in heard.on("facetrail/events") if m.json()["type"] == "end"} \
                >= events

        wait_until(all_heard, "every event's end over MQTT")
        news = Counter(m.json()["after"]["id"] for m in heard.on("facetrail/events") if m.json()["type"] == "new")
        assert news == Counter(events)
    receiver.stop()
    db.dispose()
