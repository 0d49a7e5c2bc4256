"""Schemathesis over the whole published OpenAPI: generated requests never get a 5xx.

Bounded (a fixed number of examples per operation, derandomised so a run is
repeatable) and against the app served on loopback with an admin key, so every
route is reached past its role check. The live event stream and a camera's
live view never end while their client reads, so they are left to
tests/test_api_live.py and tests/test_live_view.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api_kit import Server, make_keys, serving
from facetrail.api.app import PREFIX, ApiSettings, create_app
from facetrail.gallery.enrol import EnrolOptions, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.vision.engine import FaceEngine
from facetrail.vision.samples import sample_image

pytestmark = pytest.mark.models
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("fuzz")
    gallery = Gallery(GallerySettings(data), engine=engine)
    enrol_person(gallery, "Yao Ming", [sample_image("yaoming.jpg")], EnrolOptions(actor="setup"))
    keys = make_keys(gallery)
    with serving(create_app(ApiSettings(data, max_upload_bytes=1_000_000), gallery=gallery)) as url:
        yield Server(url, gallery, keys)
    gallery.db.dispose()


def test_no_generated_request_gets_a_server_error(fuzz_server: Server) -> None:
    schema = schemathesis.openapi.from_url(fuzz_server.url + PREFIX + "/openapi.json")
    headers = {"Authorization": f"Bearer {fuzz_server.keys['admin']}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in (f"{PREFIX}/events/stream", f"{PREFIX}/cameras/{{name}}/live.mjpeg"):
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=fuzz_server.url, headers=headers)
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {response.text}\n{case.as_curl_command()}")

        call()
    assert operations >= 20, "the schema lost operations"
    assert not failures, "\n\n".join(failures[:5])
