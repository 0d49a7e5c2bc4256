"""What the API accepts and answers, over real HTTP on SQLite and PostgreSQL: bounded NUL-free strings (422, never a
500), safe upload names, reads that never write (key use is flushed in batches), a read-only database (reads answer,
writes 503), and times that always carry a zone."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select

from api_kit import make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.models import ApiKey, FaceTemplate
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image
from facetrail.web.app import install_dashboard

if TYPE_CHECKING:
    from facetrail.store.keys import KeyUse

pytestmark = pytest.mark.models
ZONED = re.compile(r"(Z|[+-]\d\d:\d\d)$")


@dataclass
class Site:
    url: str
    gallery: Gallery
    keys: dict[str, str]
    app: FastAPI

    def client(self, role: str) -> httpx.Client:
        return httpx.Client(base_url=self.url + PREFIX, headers={"Authorization": f"Bearer {self.keys[role]}"},
                            timeout=120)


@pytest.fixture
def site(db_url: str, tmp_path: Path, engine: FaceEngine) -> Iterator[Site]:
    gallery = Gallery(GallerySettings(tmp_path, db_url), engine=engine)
    keys = make_keys(gallery)
    app = create_app(ApiSettings(tmp_path, db_url), gallery=gallery)
    install_dashboard(app)
    with serving(app) as url:
        yield Site(url, gallery, keys, app)
    gallery.db.dispose()


def yao(quality: int = 90) -> bytes:
    """The sample photo of Yao Ming, encoded afresh (each quality is another file of the same face)."""
    buffer = io.BytesIO()
    Image.open(sample_image("yaoming.jpg")).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def refused(answer: httpx.Response) -> bool:
    """A 422 in the error envelope."""
    return answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request"


def test_nul_bytes_and_long_strings_are_refused_with_422(site: Site) -> None:
    long = "n" * 201
    photo = {"image": ("yao.jpg", yao(), "image/jpeg")}
    with site.client("operator") as operator:
        for name in ("a\x00b", long):
            assert refused(operator.post("/identities/enrolments", data={"name": name}, files=photo))
        for form in ({"purpose": "a\x00b"}, {"purpose": "p" * 2001}, {"purpose": "ok", "watchlist": "w\x00"},
                     {"purpose": "ok", "watchlist": long}):
            assert refused(operator.post("/search/gallery", data=form, files=photo))
        assert refused(operator.post("/events/1/review", json={"verdict": "dismiss", "note": "a\x00"}))
    with site.client("admin") as admin:
        for body in ({"name": "a\x00b", "purpose": "p"}, {"name": long, "purpose": "p"},
                     {"name": "ok", "purpose": "p\x00"}):
            assert refused(admin.post("/watchlists", json=body))
        assert refused(admin.put("/watchlists/a%00b/members/1"))
        assert refused(admin.put(f"/watchlists/{long}/members/1"))
        assert refused(admin.delete("/identities/1", params={"reason": "a\x00"}))
        assert refused(admin.post("/identities/1/consents", json={"door": "*", "method": "m\x00"}))
        assert admin.get("/watchlists").json() == []  # nothing of the refused requests was stored
    with site.client("viewer") as viewer:
        assert refused(viewer.get("/doors/decisions?door=a%00b"))
        assert refused(viewer.get("/cameras/a%00b/frame"))
        assert refused(viewer.get(f"/cameras/{long}/frame"))
        assert refused(viewer.get("/identities/1/sightings", params={"purpose": "a\x00"}))
        missing = viewer.get("/cameras/no-such-camera/frame")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert viewer.get("/doors/decisions", params={"door": "d" * 200}).status_code == 200


BAD_NAMES = {"..": "upload.jpg", ".": "upload.jpg", "/": "upload.jpg", "../../etc/passwd": "passwd",
             "é" * 200 + ".jpg": None}


def test_upload_names_are_stored_sanely(site: Site) -> None:
    with site.client("operator") as operator:
        for quality, filename in zip(range(90, 80, -1), BAD_NAMES, strict=False):
            enrolled = operator.post("/identities/enrolments", data={"name": "Yao Ming"},
                                     files={"image": (filename, yao(quality), "image/jpeg")})
            assert enrolled.status_code == 201, (filename, enrolled.text)
    with site.gallery.db.session() as session:
        stored = list(session.scalars(select(FaceTemplate.source_name).order_by(FaceTemplate.id)))
    assert stored[:4] == ["upload.jpg", "upload.jpg", "upload.jpg", "passwd"]
    long = stored[4]
    assert long is not None and long.endswith(".jpg") and len(long.encode()) <= 255 and set(long[:-4]) == {"é"}


def test_dashboard_enrolment_takes_bad_upload_names(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=120) as browser:
        assert browser.post(PREFIX + "/session", json={"key": site.keys["operator"]}).status_code == 200
        names = {88: "..", 87: "/", 86: "x" * 300}
        files = [("photos", (name, yao(quality), "image/jpeg")) for quality, name in names.items()]
        answer = browser.post("/enrol", data={"name": "Yao Ming"}, files=files)
        assert answer.status_code == 200, answer.text
        nul_name = browser.post("/enrol", data={"name": "Yao\x00"}, files=files[:1])
        assert nul_name.status_code == 422 and "NUL" in nul_name.text
    with site.gallery.db.session() as session:
        stored = list(session.scalars(select(FaceTemplate.source_name)))
    assert sorted(name or "" for name in stored) == ["photo.jpg", "photo.jpg", "x" * 255]


def last_used(gallery: Gallery, name: str) -> Any:
    with gallery.db.session() as session:
        return session.scalar(select(ApiKey.last_used_at).where(ApiKey.name == name))


def test_reads_do_not_write_key_use_until_the_flush(site: Site) -> None:
    with site.client("viewer") as viewer:
        for path in ("/identities", "/watchlists", "/session", "/events", "/cameras"):
            assert viewer.get(path).status_code == 200
    assert last_used(site.gallery, "viewer-key") is None  # five reads wrote nothing
    use: KeyUse = site.app.state.key_use
    assert set(use.pending()) == {"viewer-key"}
    assert use.flush() == 1
    first = last_used(site.gallery, "viewer-key")
    assert first is not None and use.pending() == {}
    assert use.flush() == 0  # nothing new: nothing written
    with site.client("viewer") as viewer:
        assert viewer.get("/identities").status_code == 200
    assert last_used(site.gallery, "viewer-key") == first
    use.flush()
    assert last_used(site.gallery, "viewer-key") > first


def make_read_only(db_url: str) -> str:
    """The URL of the same database, opened so that SQLite or PostgreSQL itself refuses every write."""
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///file:{url.database}?mode=ro&uri=true"
    from dbs import PG_SERVER

    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'ALTER DATABASE "{url.database}" SET default_transaction_read_only = on'))
    admin.dispose()
    return db_url


def test_a_read_only_database_still_answers_reads_and_says_503_to_writes(db_url: str, tmp_path: Path,
                                                                        engine: FaceEngine) -> None:
    writable = Gallery(GallerySettings(tmp_path, db_url), engine=engine)
    keys = make_keys(writable)
    with writable.db.session() as session:
        session.execute(sa.text("select 1"))
    writable.db.dispose()
    gallery = Gallery(GallerySettings(tmp_path, make_read_only(db_url)), engine=engine)
    app = create_app(ApiSettings(tmp_path, db_url), gallery=gallery)
    with serving(app) as url:
        site = Site(url, gallery, keys, app)
        with site.client("admin") as admin:
            for path in ("/identities", "/watchlists", "/session", "/events", "/audit", "/retention"):
                assert admin.get(path).status_code == 200, (path, admin.get(path).text)
            write = admin.post("/watchlists", json={"name": "vip", "purpose": "read-only test"})
            assert write.status_code == 503, write.text
            error = write.json()["error"]
            assert error["code"] == "database_unwritable"
            assert error["message"].startswith("the database cannot be written: ")
            assert error["message"].endswith("; reads still work")
        use: KeyUse = app.state.key_use
        assert use.flush() == 0 and set(use.pending()) == {"admin-key"}  # kept for later, not raised
    gallery.db.dispose()


def test_every_time_in_the_api_carries_a_zone(site: Site) -> None:
    with site.client("admin") as admin:
        spec = admin.get("/openapi.json").json()
        created = admin.post("/watchlists", json={"name": "vip", "purpose": "zones",
                                                  "expires_at": "2030-01-01T12:00:00"})
        assert created.status_code == 201, created.text
        enrolled = admin.post("/identities/enrolments", data={"name": "Yao Ming"},
                              files={"image": ("yao.jpg", yao(), "image/jpeg")})
        identity = enrolled.json()["identity_id"]
        answers = [created.json()] + [admin.get(path).json() for path in (
            "/identities", f"/identities/{identity}", f"/identities/{identity}/templates", "/watchlists", "/audit",
            "/retention")]
    times = date_time_fields(spec)
    seen: dict[str, list[str]] = {}
    for answer in answers:
        for key, value in walk(answer):
            if key in times and isinstance(value, str):
                seen.setdefault(key, []).append(value)
    assert {"at", "created_at", "expires_at"} <= set(seen)
    for key, values in seen.items():
        for value in values:
            assert ZONED.search(value), f"{key}={value} has no time zone"


def date_time_fields(spec: dict[str, Any]) -> set[str]:
    """Names of the properties the OpenAPI document declares as date-time (directly, nullable, or a map of)."""
    found = set()
    for schema in spec["components"]["schemas"].values():
        for name, prop in schema.get("properties", {}).items():
            if "date-time" in str(prop):
                found.add(name)
    return found


def walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, value) in a JSON document; the values of the map ``oldest`` are reported under its name."""
    if isinstance(value, dict):
        for inner, item in value.items():
            yield from walk(item, key if key == "oldest" else inner)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, key)
    else:
        yield key, value
