"""Small, blurred faces in video: named when several weak shots agree, never from one, never someone else.

The clips are 640x360 with a real person's face about 25 px wide (under the shot gate's ``min_area``), made
from photos other than the one enrolled, encoded as H.264 like a camera's stream, and run through the whole
pipeline into a real SQLite file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from facetrail.gallery.enrol import EnrolOptions, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.pipeline.analyzer import FrameAnalyzer
from facetrail.pipeline.batch import FrameBatch
from facetrail.pipeline.consumers import Consumer
from facetrail.pipeline.runner import Pipeline
from facetrail.store.models import Identity, Sighting
from facetrail.synth.scenes import Appearance, composite_scene
from facetrail.synth.writer import write_clip
from facetrail.track.bestshot import Shot, ShotGate
from facetrail.track.decision import Matcher, decide_weak, weak_threshold
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.lowlight import LowLightConfig
from pipeline_kit import config_for, enrol, face_width, head_and_shoulders, run

pytestmark = pytest.mark.models

SIZE = (640, 360)
FPS = 10.0
FACE_PX = 25.0
WALKER = ("obama", "obama2.jpg")  # the person in the clip, and the photo the clip is made from
ENROLMENT = {  # one photo per person, never the walker's clip photo
    "Barack Obama": "obama/obama.jpg", "Joe Biden": "biden/biden.jpg", "Kit Harington": "kit_harington/test1.jpg",
    "Rose Leslie": "rose_leslie/img1.jpg", "Alex Lacamoire": "alex_lacamoire/img1.jpg",
    "Rob Lowe": "rob_lowe/Rob_Lowe_0001.jpg",
}


def small_face_clip(path: Path, engine: FaceEngine, cut: BGRImage, *, seconds: float = 4.0) -> Path:
    """The cut-out standing far from a 640x360 camera, its face about FACE_PX wide, swaying a little."""
    scale = FACE_PX / face_width(engine, cut) * cut.shape[0] / SIZE[1]
    person = Appearance(cut, 0.0, seconds, (0.45, 0.4), (0.5, 0.42), scale * 0.97, scale)
    write_clip(path, composite_scene([person], duration_s=seconds, fps=FPS, size=SIZE, noise=2.0, seed=3), fps=FPS)
    return path


@pytest.fixture(scope="module")
def walker_clip(tmp_path_factory: pytest.TempPathFactory, video_engine: FaceEngine, data_dir: Path) -> Path:
    cut = head_and_shoulders(video_engine, data_dir / "faces" / WALKER[0] / WALKER[1])
    return small_face_clip(tmp_path_factory.mktemp("clips") / "far.mp4", video_engine, cut)


def frames_of(path: Path) -> list[BGRImage]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def named_sightings(store: Path) -> list[tuple[int | None, int]]:
    """(identity id, frames) of every named sighting of a finished run."""
    gallery = Gallery(GallerySettings(store))
    try:
        with gallery.db.session() as session:
            rows = session.scalars(select(Sighting).where(Sighting.identity_id.is_not(None)))
            return [(row.identity_id, row.frames) for row in rows]
    finally:
        gallery.db.dispose()


def identity_id(store: Path, name: str) -> int:
    gallery = Gallery(GallerySettings(store))
    try:
        with gallery.db.session() as session:
            found = session.scalar(select(Identity.id).where(Identity.display_name == name))
            assert found is not None, name
            return int(found)
    finally:
        gallery.db.dispose()


def enrol_all(store: Path, engine: FaceEngine, data_dir: Path, *, leave_out: str | None = None) -> None:
    for name, photo in ENROLMENT.items():
        if name != leave_out:
            enrol(store, engine, name, data_dir / "faces" / photo)


def test_the_clip_holds_only_faces_under_the_gate(walker_clip: Path, video_engine: FaceEngine) -> None:
    analysed = FrameAnalyzer(video_engine).analyse(frames_of(walker_clip)[::4], [LowLightConfig()] * 10)
    widths = [float(f.faces.xyxy[i, 2] - f.faces.xyxy[i, 0]) for f in analysed for i in range(len(f))]
    areas = [f.area(i) for f in analysed for i in range(len(f))]
    assert len(widths) >= 8, "the small face should be detected in most frames"
    assert 20 <= np.median(widths) <= 30
    assert max(areas) < ShotGate().min_area  # every shot is weak: the gate alone would embed none


def test_a_small_face_that_matches_its_enrolment_is_named_with_default_settings(
        tmp_path: Path, walker_clip: Path, video_engine: FaceEngine, data_dir: Path) -> None:
    store = tmp_path / "data"
    enrol_all(store, video_engine, data_dir)
    run(config_for(store, {"far": walker_clip}), video_engine)
    named = named_sightings(store)
    assert [identity for identity, _ in named] == [identity_id(store, "Barack Obama")], named

    # The same clip and gallery with weak shots switched off: the gate alone names nobody.
    before = tmp_path / "before"
    enrol_all(before, video_engine, data_dir)
    run(config_for(before, {"far": walker_clip}, "tracking:\n  weak_embeddings: 0\n"), video_engine)
    assert named_sightings(before) == []


def test_a_small_face_of_someone_not_enrolled_is_not_named(
        tmp_path: Path, walker_clip: Path, video_engine: FaceEngine, data_dir: Path) -> None:
    store = tmp_path / "data"
    enrol_all(store, video_engine, data_dir, leave_out="Barack Obama")
    run(config_for(store, {"far": walker_clip}), video_engine)
    assert named_sightings(store) == []


def test_one_weak_shot_alone_never_names(walker_clip: Path, video_engine: FaceEngine, data_dir: Path) -> None:
    enrolled = video_engine.analyze(load_image(data_dir / "faces" / "obama" / "obama.jpg"))
    index = enrolled.primary()
    assert index is not None
    gallery = enrolled.embeddings.vectors[index][None, :]

    def match(vectors: np.ndarray) -> list[tuple[int | None, float]]:
        return [(1, float(score)) for score in vectors @ gallery[0]]

    matcher: Matcher = match
    analyzer = FrameAnalyzer(video_engine)
    frames = analyzer.analyse(frames_of(walker_clip)[4:40:6], [LowLightConfig()] * 6)
    requests = [(frame, 0) for frame in frames if len(frame)]
    shots = [Shot(k, float(k), 0.1, 900.0, np.zeros((112, 112, 3), np.uint8), embedding=vector, weak=True)
             for k, vector in enumerate(analyzer.embed(requests))]
    threshold = weak_threshold(video_engine.recogniser.model_id, None)
    assert threshold is not None, "the default recogniser has a calibrated weak-shot threshold"
    votes = ShotGate().weak_votes
    agreeing = [s for s in shots if match(s.embedding[None, :])[0][1] >= threshold]  # type: ignore[index]
    assert len(agreeing) >= votes, "the walker's small face should match his enrolment in several frames"
    assert all(decide_weak([s], matcher, threshold=threshold, votes=votes).identity_id is None for s in agreeing)
    assert decide_weak(agreeing[:votes], matcher, threshold=threshold, votes=votes).identity_id == 1


class WeakShotCounter(Consumer):
    """Counts the embeddings made of faces under the shot gate (too small or too poor: weak shots)."""

    name = "weak shot counter"

    def __init__(self) -> None:
        self.weak = 0

    def on_frame(self, batch: FrameBatch) -> None:
        gate = ShotGate()
        x1, y1, x2, y2 = batch.boxes[batch.embedded].T
        small = (x2 - x1) * (y2 - y1) < gate.min_area
        self.weak += int(np.sum(small | (batch.quality[batch.embedded] < gate.min_quality)))


def test_nobody_in_street_mp4_is_named_with_every_shared_face_enrolled(
        tmp_path: Path, video_engine: FaceEngine, data_dir: Path) -> None:
    """street.mp4: a dozen strangers, many of them far away (weak shots); nobody there is enrolled."""
    street = data_dir / "video" / "street.mp4"
    if not street.exists():
        pytest.skip(f"{street} is absent")
    store = tmp_path / "data"
    gallery = Gallery(GallerySettings(store), engine=video_engine)
    options = EnrolOptions(actor="tester", take_largest=True)
    try:
        for person in sorted((data_dir / "faces").iterdir()):
            enrol_person(gallery, person.name, sorted(person.iterdir()), options)
    finally:
        gallery.close()
    counter = WeakShotCounter()
    Pipeline(config_for(store, {"street": street}), engine=video_engine, actor="tester",
             consumers=[counter]).run(until_done=True)
    assert counter.weak >= 3  # far-away faces were embedded and matched...
    assert named_sightings(store) == []  # ...and none of them was named
