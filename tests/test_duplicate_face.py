"""The same face under another name is caught by embedding similarity, not file bytes: the gallery, the CLI and
the API refuse it naming the other identity, and accept it when the operator confirms."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.gallery.enrol import EnrolOptions, Outcome, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.people import list_identities
from facetrail.store import crypto
from facetrail.vision.engine import FaceEngine

pytestmark = pytest.mark.models


@pytest.fixture(autouse=True)
def no_master_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crypto.ENV_VAR, raising=False)


def reencoded(photo: Path, out: Path, *, quality: int = 40, scale: float = 0.7) -> Path:
    """The same photo, resized and saved again at another JPEG quality: other bytes, the same face."""
    with Image.open(photo) as image:
        smaller = image.convert("RGB").resize((int(image.width * scale), int(image.height * scale)))
        buffer = io.BytesIO()
        smaller.save(buffer, "JPEG", quality=quality)
    out.write_bytes(buffer.getvalue())
    assert out.read_bytes() != photo.read_bytes()
    return out


@pytest.fixture
def obama_photo(data_dir: Path) -> Path:
    return data_dir / "faces" / "obama" / "obama.jpg"


def test_the_gallery_refuses_the_same_face_under_another_name_unless_confirmed(
        tmp_path: Path, obama_photo: Path, data_dir: Path, engine: FaceEngine, db_url: str) -> None:
    gallery = Gallery(GallerySettings(tmp_path / "data", db_url), engine=engine)
    obama = enrol_person(gallery, "obama", [obama_photo], EnrolOptions(actor="t")).identities["obama"]
    copy = reencoded(obama_photo, tmp_path / "copy.jpg")
    refused = enrol_person(gallery, "barry", [copy], EnrolOptions(actor="t"))
    line = refused.files[0]
    assert line.outcome is Outcome.DUPLICATE_FACE and line.other is not None
    assert (line.other.identity_id, line.other.display_name) == (obama, "obama")
    assert "'obama'" in line.detail and f"identity {obama}" in line.detail
    assert "barry" not in {i.display_name for i in list_identities(gallery)}
    # more photos of the same person under their own name are no duplicate; another person is none either
    more = enrol_person(gallery, "obama", [data_dir / "faces" / "obama" / "obama2.jpg", copy], EnrolOptions(actor="t"))
    assert more.count(Outcome.ENROLLED) == 2
    other = enrol_person(gallery, "biden", [data_dir / "faces" / "biden" / "biden.jpg"], EnrolOptions(actor="t"))
    assert other.count(Outcome.ENROLLED) == 1
    copy2 = reencoded(obama_photo, tmp_path / "copy2.png", quality=90, scale=0.5)
    confirmed = enrol_person(gallery, "barry", [copy2], EnrolOptions(actor="t", allow_duplicate_face=True))
    assert confirmed.count(Outcome.ENROLLED) == 1 and "confirmed" in confirmed.files[0].detail
    assert "barry" in {i.display_name for i in list_identities(gallery)}


def facetrail(data: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args), "--data", str(data),
                           "--actor", "cli-test"], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_the_cli_skips_a_face_enrolled_under_another_name_and_says_who(tmp_path: Path, obama_photo: Path) -> None:
    data = tmp_path / "data"
    first = facetrail(data, "enroll", obama_photo, "--name", "obama")
    assert first.returncode == 0, first.stderr
    copy = reencoded(obama_photo, tmp_path / "copy.jpg")
    refused = facetrail(data, "enroll", copy, "--name", "barry")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "duplicate face" in refused.stdout and "'obama'" in refused.stdout
    assert "--allow-duplicate-face" in refused.stdout
    assert "barry" not in facetrail(data, "identities").stdout
    allowed = facetrail(data, "enroll", copy, "--name", "barry", "--allow-duplicate-face")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "barry" in facetrail(data, "identities").stdout


@pytest.fixture
def server(tmp_path: Path, engine: FaceEngine, db_url: str) -> Iterator[Server]:
    gallery = Gallery(GallerySettings(tmp_path / "data", db_url), engine=engine)
    keys = make_keys(gallery)
    with serving(create_app(ApiSettings(tmp_path / "data", max_upload_bytes=2_000_000), gallery=gallery)) as url:
        yield Server(url, gallery, keys)


def test_the_api_answers_409_naming_the_other_identity_unless_confirmed(
        server: Server, tmp_path: Path, obama_photo: Path) -> None:
    copy = reencoded(obama_photo, tmp_path / "copy.jpg")
    with server.client("operator") as operator:
        first = operator.post("/identities/enrolments", data={"name": "obama"},
                              files={"image": ("obama.jpg", obama_photo.read_bytes(), "image/jpeg")})
        assert first.status_code == 201, first.text
        obama = first.json()["identity_id"]
        refused = operator.post("/identities/enrolments", data={"name": "barry"},
                                files={"image": ("copy.jpg", copy.read_bytes(), "image/jpeg")})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "duplicate_face" and "confirm_duplicate" in error["message"]
        assert error["details"]["identity_id"] == obama and error["details"]["display_name"] == "obama"
        confirmed = operator.post("/identities/enrolments", data={"name": "barry", "confirm_duplicate": "true"},
                                  files={"image": ("copy.jpg", copy.read_bytes(), "image/jpeg")})
        assert confirmed.status_code == 201, confirmed.text
        assert confirmed.json()["identity_id"] != obama
