"""Enrolment of real ID-style photos: small but usable faces are enrolled with a warning, faces under the measured
floors are refused saying why, and a photo with several faces is enrolled only for the face the caller picks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import select

from api_kit import Server, make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.gallery.enrol import EnrolOptions, Outcome, PhotoFace, enrol_person
from facetrail.gallery.enrol_faces import MIN_FACE_PX, MIN_SHARPNESS, WARN_FACE_PX, parse_face_choice
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.search import search_embedding
from facetrail.store.models import FaceTemplate, Identity
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from facetrail.web.app import install_dashboard

pytestmark = pytest.mark.models
LISTED = re.compile(r"#(\d+) \((\d+),(\d+),(\d+),(\d+)\) (\d+) px")


def main_face_px(engine: FaceEngine, photo: Path) -> float:
    faces = engine.analyze(load_image(photo))
    assert len(faces) == 1, f"{photo} should show one face"
    return faces.qualities[0].face_px


def shrunk(engine: FaceEngine, photo: Path, face_px: float, out: Path) -> Path:
    """``photo`` scaled down so that its face is about ``face_px`` pixels, saved losslessly."""
    image = load_image(photo)
    scale = face_px / main_face_px(engine, photo)
    cv2.imwrite(str(out), cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return out


def id_crop(engine: FaceEngine, photo: Path, out: Path) -> Path:
    """A tight 92x112 grey crop of the face (a camera face capture), inside a plain border the detector needs."""
    image = load_image(photo)
    x1, y1, x2, y2 = engine.analyze(image).detections.xyxy[0]
    width = x2 - x1
    height = width * 112 / 92
    left, top = int((x1 + x2) / 2 - width / 2), int((y1 + y2) / 2 - height / 2)
    crop = cv2.cvtColor(image[max(top, 0):int(top + height), max(left, 0):int(left + width)], cv2.COLOR_BGR2GRAY)
    crop = cv2.resize(crop, (92, 112), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out), cv2.copyMakeBorder(crop, 56, 56, 46, 46, cv2.BORDER_CONSTANT, value=128))
    return out


def best_name(gallery: Gallery, engine: FaceEngine, probe: Path) -> str | None:
    faces = engine.analyze(load_image(probe))
    index = faces.primary()
    assert index is not None
    result = search_embedding(gallery, faces.embeddings.vectors[index], purpose="test", actor="tester")
    return result.best.display_name if result.best else None


def listed_faces(text: str) -> list[PhotoFace]:
    """The faces a refusal lists, read back as a user reads them."""
    return [PhotoFace(int(n), (int(a), int(b), int(c), int(d)), int(s)) for n, a, b, c, d, s in LISTED.findall(text)]


@pytest.fixture
def gallery(tmp_path: Path, engine: FaceEngine) -> Iterator[Gallery]:
    gallery = Gallery(GallerySettings(tmp_path / "data"), engine=engine)
    yield gallery
    gallery.close()


def test_a_small_sharp_face_is_enrolled_with_a_warning_and_recognised(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, gallery: Gallery) -> None:
    small = shrunk(engine, data_dir / "faces" / "obama" / "obama.jpg", 24, tmp_path / "obama_small.png")
    report = enrol_person(gallery, "obama", [small], EnrolOptions(actor="t"))
    line = report.files[0]
    assert line.outcome is Outcome.ENROLLED, line.detail
    assert line.quality is not None and MIN_FACE_PX <= line.quality.face_px < WARN_FACE_PX
    assert "low resolution" in line.warning and f"{line.quality.face_px:.0f} px" in line.warning
    # judged at its own size, the small face is sharp: only the size part says it is small
    assert line.quality.parts["sharpness"] > 0.5 and line.quality.sharpness >= MIN_SHARPNESS
    with gallery.db.session() as session:
        stored = session.scalars(select(FaceTemplate.quality)).one()
    assert stored == pytest.approx(line.quality.score)
    assert best_name(gallery, engine, data_dir / "faces" / "obama" / "obama2.jpg") == "obama"


def test_a_tight_grey_face_capture_is_enrolled_and_recognised(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, gallery: Gallery) -> None:
    capture = id_crop(engine, data_dir / "faces" / "biden" / "biden.jpg", tmp_path / "biden_capture.png")
    report = enrol_person(gallery, "biden", [capture], EnrolOptions(actor="t"))
    assert report.files[0].outcome is Outcome.ENROLLED, report.files[0].detail
    assert best_name(gallery, engine, data_dir / "faces" / "biden" / "biden2.jpg") == "biden"
    assert best_name(gallery, engine, data_dir / "faces" / "obama" / "obama2.jpg") != "biden"


def test_a_face_under_the_size_floor_is_refused_saying_why(
        tmp_path: Path, data_dir: Path, engine: FaceEngine, gallery: Gallery) -> None:
    tiny = shrunk(engine, data_dir / "faces" / "obama" / "obama.jpg", MIN_FACE_PX - 3, tmp_path / "tiny.png")
    line = enrol_person(gallery, "obama", [tiny], EnrolOptions(actor="t")).files[0]
    assert line.outcome is Outcome.LOW_QUALITY, (line.outcome, line.detail)
    assert f"under the {MIN_FACE_PX:.0f} px" in line.detail and "larger" in line.detail
    assert gallery.counts() == (0, 0)


def test_a_face_too_blurred_is_refused_saying_why(tmp_path: Path, data_dir: Path, engine: FaceEngine,
                                                 gallery: Gallery) -> None:
    photo = data_dir / "faces" / "obama" / "obama.jpg"
    sigma = main_face_px(engine, photo) / 16  # a blur of a sixteenth of the face
    blurred = tmp_path / "blurred.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(load_image(photo), (0, 0), sigma))
    line = enrol_person(gallery, "obama", [blurred], EnrolOptions(actor="t")).files[0]
    assert line.outcome is Outcome.LOW_QUALITY, (line.outcome, line.detail)
    assert "too blurred" in line.detail and "sharper photo" in line.detail
    assert gallery.counts() == (0, 0)


def test_several_faces_are_refused_listed_and_the_chosen_one_enrolled(
        data_dir: Path, engine: FaceEngine, gallery: Gallery) -> None:
    scene = data_dir / "scenes" / "obama_and_biden.jpg"
    refused = enrol_person(gallery, "biden", [scene], EnrolOptions(actor="t")).files[0]
    assert refused.outcome is Outcome.SEVERAL_FACES and gallery.counts() == (0, 0)
    faces = listed_faces(refused.detail)
    assert faces == list(refused.faces) and len(faces) >= 2
    # Biden stands on the left, Obama on the right; both heads are at the top of the photo
    upper = sorted((f for f in faces if f.box[1] < 700), key=lambda f: f.box[0])
    biden, obama = upper[0], upper[-1]

    taken = enrol_person(gallery, "biden", [scene], EnrolOptions(actor="t", face=biden.index)).files[0]
    assert taken.outcome is Outcome.ENROLLED and taken.face == biden
    assert f"#{biden.index} ({','.join(map(str, biden.box))})" in taken.detail
    assert best_name(gallery, engine, data_dir / "faces" / "biden" / "biden2.jpg") == "biden"
    assert best_name(gallery, engine, data_dir / "faces" / "obama" / "obama2.jpg") is None

    missing = enrol_person(gallery, "x", [scene], EnrolOptions(actor="t", face=len(faces))).files[0]
    assert missing.outcome is Outcome.SEVERAL_FACES and f"no face #{len(faces)}" in missing.detail
    # the same photo gives Obama too; re-running a choice changes nothing
    other = enrol_person(gallery, "obama", [scene], EnrolOptions(actor="t", face=obama.index)).files[0]
    assert other.outcome is Outcome.ENROLLED and other.face == obama
    assert best_name(gallery, engine, data_dir / "faces" / "obama" / "obama2.jpg") == "obama"
    again = enrol_person(gallery, "biden", [scene], EnrolOptions(actor="t", face=biden.index)).files[0]
    assert again.outcome is Outcome.DUPLICATE and gallery.counts() == (2, 2)


def test_largest_and_centre_take_the_faces_they_name(data_dir: Path, engine: FaceEngine, gallery: Gallery) -> None:
    scene = data_dir / "scenes" / "obama_and_biden.jpg"
    faces = engine.analyze(load_image(scene))
    largest = enrol_person(gallery, "a", [scene], EnrolOptions(actor="t", take_largest=True)).files[0]
    assert largest.face is not None and largest.face.index == int(np.argmax(faces.detections.areas))
    assert "the largest" in largest.detail
    centre = enrol_person(gallery, "b", [scene], EnrolOptions(actor="t", take_centre=True,
                                                              allow_duplicate_face=True)).files[0]
    assert centre.face is not None and centre.face.index == faces.primary() and "centre" in centre.detail
    with pytest.raises(GalleryError, match="one way"):
        EnrolOptions(actor="t", take_largest=True, face=0)


def test_face_choices_are_read_or_refused_clearly() -> None:
    assert parse_face_choice("2") == (2, "refuse") and parse_face_choice(" Largest ")[1] == "largest"
    assert parse_face_choice("center")[1] == "centre" and parse_face_choice("") == (None, "refuse")
    with pytest.raises(ValueError, match="face number"):
        parse_face_choice("the tall one")


def test_quality_ranks_larger_and_sharper_shots_of_a_face_higher(data_dir: Path, engine: FaceEngine) -> None:
    """Best-shot ranking stays sensible: the same face scores higher when larger, lower when blurred, and its
    sharpness hardly depends on its size."""
    image = load_image(data_dir / "faces" / "obama" / "obama.jpg")
    size = main_face_px(engine, data_dir / "faces" / "obama" / "obama.jpg")
    shots = []
    for face_px in (24, 40, 64, 96):
        scale = face_px / size
        shots.append(engine.analyze(cv2.resize(image, None, fx=scale, fy=scale,
                                               interpolation=cv2.INTER_AREA)).qualities[0])
    scores = [q.score for q in shots]
    assert scores == sorted(scores) and scores[0] < scores[-1]
    sharpness = [q.sharpness for q in shots]
    assert max(sharpness) < 3 * min(sharpness), sharpness
    small = cv2.resize(image, None, fx=40 / size, fy=40 / size, interpolation=cv2.INTER_AREA)
    soft = engine.analyze(cv2.GaussianBlur(small, (0, 0), 1.5)).qualities[0]
    assert soft.sharpness < shots[1].sharpness / 2 and soft.score < shots[1].score


@pytest.fixture
def server(tmp_path: Path, engine: FaceEngine) -> Iterator[Server]:
    gallery = Gallery(GallerySettings(tmp_path / "data"), engine=engine)
    keys = make_keys(gallery)
    app = create_app(ApiSettings(tmp_path / "data", max_upload_bytes=2_000_000), gallery=gallery)
    install_dashboard(app)
    with serving(app) as url:
        yield Server(url, gallery, keys)
    gallery.close()


def test_the_api_lists_several_faces_and_enrols_the_one_named(server: Server, data_dir: Path,
                                                               engine: FaceEngine, tmp_path: Path) -> None:
    scene = ("obama_and_biden.jpg", (data_dir / "scenes" / "obama_and_biden.jpg").read_bytes(), "image/jpeg")
    small = shrunk(engine, data_dir / "faces" / "obama" / "obama.jpg", 24, tmp_path / "small.png")
    with server.client("operator") as operator:
        refused = operator.post("/identities/enrolments", data={"name": "obama"}, files={"image": scene})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "several_faces" and "face=N" in error["message"]
        faces = error["details"]["faces"]
        assert len(faces) >= 2 and all(len(f["box"]) == 4 and f["size_px"] > 0 for f in faces)
        obama = max((f for f in faces if f["box"][1] < 700), key=lambda f: f["box"][0])  # right of the two
        taken = operator.post("/identities/enrolments", data={"name": "obama", "face": str(obama["index"])},
                              files={"image": scene})
        assert taken.status_code == 201, taken.text
        assert taken.json()["face"] == obama and taken.json()["warning"] is None
        assert best_name(server.gallery, engine, data_dir / "faces" / "obama" / "obama2.jpg") == "obama"
        assert best_name(server.gallery, engine, data_dir / "faces" / "biden" / "biden2.jpg") is None

        weak = operator.post("/identities/enrolments", data={"name": "obama"},
                             files={"image": ("small.png", small.read_bytes(), "image/png")})
        assert weak.status_code == 201, weak.text
        assert "low resolution" in weak.json()["warning"] and 0 < weak.json()["quality"] < 1
        wrong = operator.post("/identities/enrolments", data={"name": "obama", "face": "the tall one"},
                              files={"image": scene})
        assert wrong.status_code == 422 and "face" in wrong.text


def test_the_dashboard_shows_the_warning_and_the_faces(server: Server, data_dir: Path, engine: FaceEngine,
                                                       tmp_path: Path) -> None:
    small = shrunk(engine, data_dir / "faces" / "obama" / "obama.jpg", 24, tmp_path / "small.png")
    scene = data_dir / "scenes" / "obama_and_biden.jpg"
    with httpx.Client(base_url=server.url, timeout=120) as browser:
        assert browser.post(PREFIX + "/session", json={"key": server.keys["operator"]}).status_code == 200
        files = [("photos", ("small.png", small.read_bytes(), "image/png")),
                 ("photos", ("pair.jpg", scene.read_bytes(), "image/jpeg"))]
        answer = browser.post("/enrol", data={"name": "Barack Obama"}, files=files)
        assert answer.status_code == 200, answer.text
        assert "Warning: low resolution" in answer.text
        listed = re.findall(r'<ul class="faces"[^>]*>(.*?)</ul>', answer.text, re.S)
        assert len(listed) == 1 and len(listed_faces(listed[0])) >= 2
        wrong = browser.post("/enrol", data={"name": "Barack Obama", "face": "tall"}, files=files[1:])
        assert wrong.status_code == 422 and "face number" in wrong.text
    with server.gallery.db.session() as session:
        assert session.scalars(select(Identity.display_name)).all() == ["Barack Obama"]
