"""Faces at rest: templates, sighting embeddings, visitor centroids and thumbnails are sealed with per-owner keys.

Real faces through the real model, a real SQLite file and a real PostgreSQL database; the raw rows are read
with plain SQL, past the ORM.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from facetrail.events.messages import Channels
from facetrail.events.rules import EventRules
from facetrail.gallery.enrol import EnrolOptions, enrol_person
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.history import search_history, thumbnail
from facetrail.gallery.people import forget
from facetrail.gallery.search import search_embedding
from facetrail.pipeline.recorder import Evidence, Recorder, TrackRecord
from facetrail.store import crypto
from facetrail.store.crypto import CryptoError, KeyDestroyedError
from facetrail.store.models import DataKey, FaceTemplate, Sighting
from facetrail.track.unknowns import UnknownClusters
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image

pytestmark = pytest.mark.models
OPTIONS = EnrolOptions(actor="tester")
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_master_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crypto.ENV_VAR, raising=False)


def open_gallery(data: Path, engine: FaceEngine, db_url: str) -> Gallery:
    return Gallery(GallerySettings(data_dir=data, db_url=db_url), engine=engine)


def face_of(engine: FaceEngine, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, embedding, aligned crop) of the photo's primary face."""
    image = load_image(path)
    faces = engine.analyze(image)
    index = faces.primary()
    assert index is not None and faces.aligned is not None
    return image, faces.embeddings.vectors[index].astype(np.float32), faces.aligned.crops[index]


def record_sighting(gallery: Gallery, engine: FaceEngine, photo: Path, uid: str, *, identity_id: int | None,
                    name: str | None) -> tuple[np.ndarray, bytes]:
    """Write one sighting (and, when unknown, a visitor) through the pipeline's recorder; returns its embedding
    and the JPEG thumbnail the recorder made of the crop."""
    image, vector, crop = face_of(engine, photo)
    recorder = Recorder(gallery.db, channels=Channels(), rules=EventRules(),
                        clusters=UnknownClusters(0.4, timedelta(days=30)))
    record = TrackRecord(uid=uid, camera="door", first_seen=T0, last_seen=T0, frames=1)
    evidence = Evidence(frame=image, box=(0.0, 0.0, 10.0, 10.0), thumbnail=crop, embedding=vector, quality=0.9,
                        model_id=gallery.model_id)
    recorder.decided(record, status="named" if identity_id else "unknown", identity_id=identity_id,
                     identity_name=name, score=0.9 if identity_id else None, rules=[], evidence=evidence,
                     frame_time=T0)
    with gallery.db.session() as session:
        stored = session.scalar(sa.select(Sighting).where(Sighting.track_uid == uid))
        assert stored is not None and stored.thumbnail_jpeg is not None
    plain_thumb = thumbnail(gallery, stored.id)
    assert plain_thumb is not None and plain_thumb[:2] == b"\xff\xd8"
    return vector, plain_thumb


def raw_blobs(gallery: Gallery) -> list[bytes]:
    """Every binary value of the face tables, read with plain SQL."""
    queries = ["SELECT embedding, thumbnail_jpeg FROM face_templates", "SELECT embedding FROM negative_examples",
               "SELECT embedding, thumbnail_jpeg FROM sightings", "SELECT centroid FROM visitors"]
    with gallery.db.engine.connect() as connection:
        return [bytes(value) for query in queries for row in connection.execute(sa.text(query))
                for value in row if value is not None]


def test_no_plaintext_face_is_stored_and_search_finds_people_after_a_restart(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    faces = data_dir / "faces"
    data = tmp_path / "data"
    gallery = open_gallery(data, engine, db_url)
    report = enrol_person(gallery, "obama", [faces / "obama" / "obama.jpg"], OPTIONS)
    obama = report.identities["obama"]
    enrol_person(gallery, "biden", [faces / "biden" / "biden.jpg"], OPTIONS)
    _, template_vector, template_crop = face_of(engine, faces / "obama" / "obama.jpg")
    named_vector, named_thumb = record_sighting(gallery, engine, faces / "obama" / "obama2.jpg", "t-named",
                                                identity_id=obama, name="obama")
    unknown_vector, unknown_thumb = record_sighting(gallery, engine, faces / "rose_leslie" / "img1.jpg",
                                                    "t-unknown", identity_id=None, name=None)
    secrets = [template_vector.tobytes(), named_vector.tobytes(), unknown_vector.tobytes(), named_thumb,
               unknown_thumb, cv2.imencode(".jpg", template_crop, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()]
    blobs = raw_blobs(gallery)
    assert len(blobs) == 2 * 2 + 2 * 2 + 1  # two templates, two sightings (embedding + thumbnail), one visitor
    for blob in blobs:
        assert crypto.is_sealed(blob)
        assert blob[crypto.HEADER_BYTES:crypto.HEADER_BYTES + 2] != b"\xff\xd8"
        for secret in secrets:
            assert secret not in blob and secret[:64] not in blob and secret[-64:] not in blob
    gallery.close()
    assert not list(data.glob("*.faiss")), "the index is never written to disk"

    reopened = open_gallery(data, engine, db_url)  # the index is rebuilt from the decrypted templates
    _, probe, _ = face_of(engine, faces / "obama" / "obama2.jpg")
    found = search_embedding(reopened, probe, purpose="test", actor="tester")
    assert found.known and found.matches[0].display_name == "obama"
    history = search_history(reopened, probe, purpose="test", actor="tester")
    assert history and history[0].identity_id == obama
    _, rose, _ = face_of(engine, faces / "rose_leslie" / "img1.jpg")
    visitors = search_history(reopened, rose, purpose="test", actor="tester")
    assert visitors and visitors[0].identity_id is None and visitors[0].visitor_id is not None
    recorder = Recorder(reopened.db, channels=Channels(), rules=EventRules(),
                        clusters=UnknownClusters(0.4, timedelta(days=30)))
    assert recorder.load_visitors(T0 - timedelta(days=1)) == 1  # the centroid decrypts


def test_forget_destroys_the_key_so_a_copy_of_the_rows_cannot_be_opened(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    faces = data_dir / "faces"
    gallery = open_gallery(tmp_path / "data", engine, db_url)
    obama = enrol_person(gallery, "obama", [faces / "obama" / "obama.jpg"], OPTIONS).identities["obama"]
    with gallery.db.engine.connect() as connection:  # "a backup": the rows as they were
        backup = [(int(i), bytes(e)) for i, e in connection.execute(sa.text(
            "SELECT id, embedding FROM face_templates WHERE identity_id = :i"), {"i": obama})]
    assert backup
    forget(gallery, "obama", actor="dpo", reason="deletion request")
    with gallery.db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DataKey).where(
            DataKey.owner_kind == "identity", DataKey.owner_id == obama)) == 0
        for template_id, blob in backup:
            with pytest.raises(KeyDestroyedError, match="destroyed"):
                gallery.keys.open(session, blob, crypto.aad("face_templates", "embedding", template_id))


def test_a_ciphertext_moved_to_another_row_fails_authentication(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    faces = data_dir / "faces"
    gallery = open_gallery(tmp_path / "data", engine, db_url)
    enrol_person(gallery, "kit", [faces / "kit_harington" / "john1.jpeg", faces / "kit_harington" / "john2.jpeg"],
                 OPTIONS)
    with gallery.db.session() as session:
        first, second = session.scalars(sa.select(FaceTemplate).order_by(FaceTemplate.id)).all()
        # the same identity's key: only the associated data (row id) tells the rows apart
        assert crypto.key_id_of(first.embedding) == crypto.key_id_of(second.embedding)
        gallery.keys.open(session, first.embedding, crypto.aad("face_templates", "embedding", first.id))
        with pytest.raises(CryptoError, match="copied from another row"):
            gallery.keys.open(session, first.embedding, crypto.aad("face_templates", "embedding", second.id))
        with pytest.raises(CryptoError, match="copied from another row"):
            gallery.keys.open(session, first.embedding, crypto.aad("face_templates", "thumbnail_jpeg", first.id))
        first.embedding, second.embedding = second.embedding, first.embedding  # swapped in the database
    with pytest.raises(GalleryError, match="does not open"):
        open_gallery(tmp_path / "data", engine, gallery.db.url)


def test_without_the_master_key_the_gallery_refuses_to_start(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    gallery = open_gallery(data, engine, db_url)
    enrol_person(gallery, "obama", [data_dir / "faces" / "obama" / "obama.jpg"], OPTIONS)
    gallery.close()
    key_file = data / crypto.KEY_FILENAME
    assert key_file.stat().st_mode & 0o777 == 0o600
    shutil.move(key_file, tmp_path / "master.key.backup")
    with pytest.raises(GalleryError) as refused:
        open_gallery(data, engine, db_url)
    assert "no master key" in str(refused.value) and "\n" not in str(refused.value)
    assert not key_file.exists(), "no new key is made for a database that has keys"
    monkeypatch.setenv(crypto.ENV_VAR, "A" * 43 + "=")  # a well-formed but wrong key
    with pytest.raises(GalleryError, match="does not open this database's data keys"):
        open_gallery(data, engine, db_url)
    monkeypatch.setenv(crypto.ENV_VAR, (tmp_path / "master.key.backup").read_text())  # the backup, by variable
    assert open_gallery(data, engine, db_url).counts() == (1, 1)


def test_plaintext_faces_of_an_earlier_version_are_sealed_on_start(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    data = tmp_path / "data"
    gallery = open_gallery(data, engine, db_url)
    enrol_person(gallery, "obama", [data_dir / "faces" / "obama" / "obama.jpg"], OPTIONS)
    _, vector, _ = face_of(engine, data_dir / "faces" / "obama" / "obama.jpg")
    with gallery.db.session() as session:  # as an earlier version stored it
        session.execute(sa.update(FaceTemplate).values(embedding=vector.tobytes(), thumbnail_jpeg=None))
    gallery.close()
    reopened = open_gallery(data, engine, db_url)
    blobs = raw_blobs(reopened)
    assert blobs and all(crypto.is_sealed(b) and vector.tobytes() not in b for b in blobs)
    found = search_embedding(reopened, vector, purpose="test", actor="tester")
    assert found.known and found.matches[0].display_name == "obama"
