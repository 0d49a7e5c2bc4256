"""The gallery on the Milvus backend: real photos through the real model, a real SQLite file, Milvus Lite on disk.

The database stays the source of truth: what Milvus holds is compared with it at every open and only the
difference is fixed; forget removes a person's vectors from the collection too (checked by querying it).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from facetrail.config.errors import ConfigError
from facetrail.config.loader import parse_config
from facetrail.config.schema import FacetrailConfig
from facetrail.events.messages import Channels
from facetrail.events.rules import EventRules
from facetrail.gallery.backends import IndexBackendSettings
from facetrail.gallery.enrol import EnrolOptions, enrol_folder, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.history import search_history
from facetrail.gallery.milvus_index import MilvusIndex, MilvusSettings, collection_name
from facetrail.gallery.people import forget
from facetrail.gallery.retention import apply_retention
from facetrail.gallery.search import search_embedding
from facetrail.pipeline.recorder import Evidence, Recorder, TrackRecord
from facetrail.store.models import FaceTemplate, Identity, Sighting
from facetrail.store.retention import RetentionPolicy
from facetrail.track.unknowns import UnknownClusters
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from test_index import random_unit

PEOPLE = ("biden", "obama", "kit_harington")
OPTIONS = EnrolOptions(actor="tester")
MILVUS = IndexBackendSettings(backend="milvus", milvus=MilvusSettings(uri="milvus.db"))  # relative: in data_dir


@pytest.fixture(autouse=True)
def _milvus() -> None:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'facetrail[cluster]')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'facetrail[cluster]')")


def people(data_dir: Path, root: Path) -> dict[str, Path]:
    """All photos but the last of each of PEOPLE in root/<person>/; returns person -> the held-back probe."""
    probes = {}
    for name in PEOPLE:
        photos = sorted((data_dir / "faces" / name).iterdir())
        (root / name).mkdir(parents=True)
        for photo in photos[:-1]:
            shutil.copy(photo, root / name / photo.name)
        probes[name] = photos[-1]
    return probes


def open_gallery(tmp_path: Path, engine: FaceEngine, index: IndexBackendSettings = MILVUS) -> Gallery:
    return Gallery(GallerySettings(data_dir=tmp_path / "data", index=index), engine=engine)


def probe_vector(engine: FaceEngine, path: Path) -> np.ndarray:
    faces = engine.analyze(load_image(path))
    primary = faces.primary()
    assert primary is not None, f"no face in {path}"
    return faces.embeddings.vectors[primary]


def stored_ids(gallery: Gallery) -> list[int]:
    """Template ids in the gallery's Milvus collection, read with a query of our own."""
    index = gallery.index
    assert isinstance(index, MilvusIndex)
    return sorted(int(row["id"]) for row in index._client.query(index.name, filter="id >= 0", output_fields=["id"],
                                                                  consistency_level="Strong"))


def template_ids(gallery: Gallery, name: str | None = None) -> list[int]:
    with gallery.db.session() as session:
        query = select(FaceTemplate.id).order_by(FaceTemplate.id)
        if name is not None:
            query = query.join(Identity, Identity.id == FaceTemplate.identity_id).where(Identity.display_name == name)
        return list(session.scalars(query))


pytestmark = pytest.mark.models


def test_enrol_search_and_forget_through_milvus(tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    probes = people(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    try:
        assert isinstance(gallery.index, MilvusIndex)
        assert (tmp_path / "data" / "milvus.db").is_dir()  # the relative path was taken from data_dir
        assert gallery.index.name == collection_name("facetrail", "templates", gallery.model_id)  # one per model
        enrol_folder(gallery, tmp_path / "people", OPTIONS)
        assert stored_ids(gallery) == template_ids(gallery) != []
        for person, probe in probes.items():
            result = search_embedding(gallery, probe_vector(engine, probe), purpose="test", actor="tester")
            assert result.best is not None and result.best.display_name == person
        biden = template_ids(gallery, "biden")
        gone = forget(gallery, "biden", actor="dpo", reason="deletion request")
        assert sorted(gone.template_ids) == biden
        assert not set(biden) & set(stored_ids(gallery))  # gone from the collection itself
        hits = gallery.index.search(probe_vector(engine, probes["biden"]), 50)
        assert not np.isin(hits.ids, biden).any()
    finally:
        gallery.close()
    reopened = open_gallery(tmp_path, engine)
    try:
        assert stored_ids(reopened) == template_ids(reopened)
        result = search_embedding(reopened, probe_vector(engine, probes["obama"]), purpose="test", actor="tester")
        assert result.best is not None and result.best.display_name == "obama"
    finally:
        reopened.close()


def test_open_reconciles_milvus_with_the_database(tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    probes = people(data_dir, tmp_path / "people")
    gallery = open_gallery(tmp_path, engine)
    enrol_folder(gallery, tmp_path / "people", OPTIONS)
    everything = template_ids(gallery)
    deleted, lost = everything[0], everything[-1]
    with gallery.db.session() as session:  # deleted in the database behind Milvus's back
        session.execute(sa.delete(FaceTemplate).where(FaceTemplate.id == deleted))
    gallery.index.remove(np.array([lost]))  # a template Milvus missed (a run that died before indexing it)
    assert deleted in stored_ids(gallery) and lost not in stored_ids(gallery)
    gallery.close()
    reopened = open_gallery(tmp_path, engine)
    try:
        assert stored_ids(reopened) == template_ids(reopened) == [i for i in everything if i != deleted]
        hits = reopened.index.search(probe_vector(engine, probes["kit_harington"]), 1)
        assert hits.ids[0, 0] in template_ids(reopened, "kit_harington")
    finally:
        reopened.close()


def test_templates_enrolled_by_a_faiss_process_reach_milvus_at_open(tmp_path: Path, data_dir: Path,
                                                                     engine: FaceEngine) -> None:
    people(data_dir, tmp_path / "people")
    faiss = open_gallery(tmp_path, engine, IndexBackendSettings())  # a command run without the configuration
    enrol_folder(faiss, tmp_path / "people", OPTIONS)
    faiss.close()
    gallery = open_gallery(tmp_path, engine)
    try:
        assert stored_ids(gallery) == template_ids(gallery) != []
        assert gallery.refresh() == (0, 0)
    finally:
        gallery.close()


def test_a_long_running_gallery_and_another_share_one_collection(tmp_path: Path, data_dir: Path,
                                                                 engine: FaceEngine) -> None:
    probes = people(data_dir, tmp_path / "people")
    running = open_gallery(tmp_path, engine)  # two galleries of one process share the Milvus Lite engine
    elsewhere = open_gallery(tmp_path, engine)
    try:
        enrol_folder(elsewhere, tmp_path / "people", OPTIONS)
        probe = probe_vector(engine, probes["obama"])
        assert search_embedding(running, probe, purpose="t", actor="t").best.display_name == "obama"  # type: ignore[union-attr]
        assert running.refresh() == (0, 0)  # the collection already holds them: nothing to catch up
        forget(elsewhere, "obama", actor="dpo", reason="deletion request")
        assert all(m.display_name != "obama" for m in search_embedding(running, probe, purpose="t",
                                                                       actor="t").matches)
    finally:
        elsewhere.close()
        running.close()


def test_the_index_section_of_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACETRAIL_MILVUS_TOKEN", "root:Milvus")
    text = ("purpose: test\nindex:\n  backend: milvus\n  milvus:\n    uri: https://milvus.example:19530\n"
            "    token: \"{FACETRAIL_MILVUS_TOKEN}\"\n    index_type: DISKANN\n"
            "cameras:\n  door:\n    inputs:\n      - path: door.mp4\n")
    config = parse_config(text, "site.yml", base_dir=tmp_path)
    assert isinstance(config.index, IndexBackendSettings)
    assert config.index.milvus.token == "root:Milvus" and "root:Milvus" not in repr(config.index)
    assert (config.index.backend, config.index.milvus.index_type) == ("milvus", "DISKANN")
    assert not config.index.milvus.is_lite
    default = parse_config("purpose: test\ncameras:\n  door:\n    inputs:\n      - path: door.mp4\n", "site.yml")
    assert default.index.backend == "faiss"
    with pytest.raises(ConfigError, match=r"index\.milvus\.uri: .*ending in \.db"):
        parse_config(text.replace("https://milvus.example:19530", "milvus.sqlite"), "site.yml")
    schema = FacetrailConfig.model_json_schema()["$defs"]  # what `facetrail config schema` shows: the runtime's own
    assert schema["MilvusSettings"]["properties"]["uri"]["description"] == \
        MilvusSettings.__pydantic_fields__["uri"].description
    lite = MilvusSettings(uri="index/milvus.db").resolved(tmp_path)
    assert lite.uri == str(tmp_path.resolve() / "index" / "milvus.db")


# --------------------------------------------------------------------------- history search's sightings index

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BACKENDS = {"faiss": IndexBackendSettings(), "milvus": MILVUS}


def record(gallery: Gallery, engine: FaceEngine, photo: Path, uid: str, *, quality: float = 0.5,
           identity_id: int | None = None, at: datetime = T0) -> np.ndarray:
    """One sighting written by the pipeline's recorder (a second call with the same uid: a better best shot)."""
    image = load_image(photo)
    faces = engine.analyze(image)
    primary = faces.primary()
    assert primary is not None and faces.aligned is not None
    vector = faces.embeddings.vectors[primary].astype(np.float32)
    recorder = Recorder(gallery.db, channels=Channels(), rules=EventRules(),
                        clusters=UnknownClusters(0.4, timedelta(days=30)))
    with gallery.db.session() as session:
        existing = session.scalar(select(Sighting.id).where(Sighting.track_uid == uid))
    track = TrackRecord(uid=uid, camera="door", first_seen=at, last_seen=at, frames=1, sighting_id=existing)
    evidence = Evidence(frame=image, box=(0.0, 0.0, 10.0, 10.0), thumbnail=faces.aligned.crops[primary],
                        embedding=vector, quality=quality, model_id=gallery.model_id)
    recorder.decided(track, status="named" if identity_id else "unknown", identity_id=identity_id,
                     identity_name=None, score=0.9 if identity_id else None, rules=[], evidence=evidence,
                     frame_time=at)
    return vector


def indexed_sightings(gallery: Gallery) -> list[int]:
    index = gallery.sightings.index
    if isinstance(index, MilvusIndex):  # read the collection itself
        return sorted(int(row["id"]) for row in index._client.query(index.name, filter="id >= 0",
                                                                      output_fields=["id"], consistency_level="Strong"))
    return index.ids().tolist()


def sighting_ids(gallery: Gallery) -> list[int]:
    with gallery.db.session() as session:
        return list(session.scalars(select(Sighting.id).order_by(Sighting.id)))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_history_search_goes_through_the_sightings_index(tmp_path: Path, data_dir: Path, engine: FaceEngine,
                                                         backend: str) -> None:
    faces = data_dir / "faces"
    gallery = open_gallery(tmp_path, engine, BACKENDS[backend])
    try:
        obama = enrol_person(gallery, "obama", [faces / "obama" / "obama.jpg"], OPTIONS).identities["obama"]
        record(gallery, engine, faces / "obama" / "obama2.jpg", "t-obama", identity_id=obama)
        rose = record(gallery, engine, faces / "rose_leslie" / "img1.jpg", "t-rose")
        record(gallery, engine, faces / "paul_rudd" / "1.jpg", "t-paul", at=T0 - timedelta(days=20))
        hits = search_history(gallery, rose, purpose="test", actor="tester")
        assert hits[0].visitor_id is not None and hits[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert indexed_sightings(gallery) == sighting_ids(gallery)  # synced from the database
        assert type(gallery.sightings.index).__name__ == ("MilvusIndex" if backend == "milvus" else "FaissIndex")
        # A better best shot of the same track replaces the indexed embedding.
        better = record(gallery, engine, faces / "kate_siegel" / "1.jpg", "t-rose", quality=0.9)
        assert search_history(gallery, better, purpose="test", actor="tester")[0].similarity == \
            pytest.approx(1.0, abs=1e-4)
        assert all(h.similarity is None or h.similarity < 0.9 for h in search_history(
            gallery, rose, purpose="test", actor="tester", min_score=-1.0))
        # Forget: the person's sightings leave the index at once.
        with gallery.db.session() as session:
            named = list(session.scalars(select(Sighting.id).where(Sighting.identity_id == obama)))
        forget(gallery, "obama", actor="dpo", reason="deletion request")
        assert named and not set(named) & set(indexed_sightings(gallery))
        # Retention: the unknown sighting past 7 days goes, from the database and the index.
        apply_retention(gallery, RetentionPolicy(), now=T0 + timedelta(hours=1))
        assert indexed_sightings(gallery) == sighting_ids(gallery) != []
        assert len(sighting_ids(gallery)) == 1  # the t-rose track (recorded at T0), its best shot now kate's
    finally:
        gallery.close()


def test_milvus_sightings_collection_is_cleaned_by_forget_without_a_search(tmp_path: Path, data_dir: Path,
                                                                           engine: FaceEngine) -> None:
    faces = data_dir / "faces"
    gallery = open_gallery(tmp_path, engine)
    obama = enrol_person(gallery, "obama", [faces / "obama" / "obama.jpg"], OPTIONS).identities["obama"]
    probe = record(gallery, engine, faces / "obama" / "obama2.jpg", "t-obama", identity_id=obama)
    assert search_history(gallery, probe, purpose="test", actor="tester")  # the collection now holds it
    gallery.close()
    later = open_gallery(tmp_path, engine)  # another process: it never searched the history
    try:
        forget(later, "obama", actor="dpo", reason="deletion request")
        assert indexed_sightings(later) == sighting_ids(later) == []
    finally:
        later.close()


def test_a_forget_made_without_the_configuration_leaves_milvus_at_the_next_refresh(
        tmp_path: Path, data_dir: Path, engine: FaceEngine) -> None:
    faces = data_dir / "faces"
    running = open_gallery(tmp_path, engine)  # the pipeline, configured with Milvus
    try:
        obama = enrol_person(running, "obama", [faces / "obama" / "obama.jpg"], OPTIONS).identities["obama"]
        enrol_person(running, "biden", [faces / "biden" / "biden.jpg"], OPTIONS)
        probe = record(running, engine, faces / "obama" / "obama2.jpg", "t-obama", identity_id=obama)
        assert search_history(running, probe, purpose="test", actor="tester")
        templates = template_ids(running, "obama")
        elsewhere = open_gallery(tmp_path, engine, IndexBackendSettings())  # `facetrail forget`: no configuration
        forget(elsewhere, "obama", actor="dpo", reason="deletion request")
        elsewhere.close()
        assert set(templates) <= set(stored_ids(running))  # Milvus has not heard of it yet
        assert running.refresh() == (0, len(templates))
        assert not set(templates) & set(stored_ids(running))
        assert indexed_sightings(running) == sighting_ids(running) == []
    finally:
        running.close()


def test_another_models_collection_loses_the_templates_deleted_since(tmp_path: Path, data_dir: Path,
                                                                     engine: FaceEngine) -> None:
    faces = data_dir / "faces"
    gallery = open_gallery(tmp_path, engine)
    enrol_person(gallery, "obama", [faces / "obama" / "obama.jpg"], OPTIONS)
    enrol_person(gallery, "biden", [faces / "biden" / "biden.jpg"], OPTIONS)
    obama, biden = template_ids(gallery, "obama"), template_ids(gallery, "biden")
    gallery.close()
    settings = MILVUS.milvus.resolved(tmp_path / "data")
    old = MilvusIndex(128, settings, collection=collection_name("facetrail", "templates", "an-older-model"))
    kept = obama + biden + [9_999_999]  # as if enrolled under the older model; the last one deleted since
    old.add(np.asarray(kept), random_unit(len(kept), seed=3, dim=128))
    old.close()
    reopened = open_gallery(tmp_path, engine)  # the current model's gallery prunes the other collection
    forget(reopened, "obama", actor="dpo", reason="deletion request")
    reopened.close()
    again = open_gallery(tmp_path, engine)
    old = MilvusIndex(128, settings, collection=collection_name("facetrail", "templates", "an-older-model"))
    try:
        assert old.ids().tolist() == biden
    finally:
        old.close()
        again.close()
