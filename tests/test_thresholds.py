"""Thresholds people can reason about: a false match rate through the calibration table, the cosine under an
unambiguous name, the old Frigate-like name refused where it reads as a confidence, and scores shown with what they
mean."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from api_kit import Server, make_keys, serving
from facetrail.api.app import ApiSettings, create_app
from facetrail.config.errors import ConfigError
from facetrail.config.loader import parse_config
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from facetrail.vision.registry import DLIB_RESNET, W600K_MBF

CAMERA = "cameras:\n  door:\n    inputs:\n      - path: door.mp4\n"
TABLE = W600K_MBF.calibration.fmr_table if W600K_MBF.calibration else None


def config(text: str, *, camera_extra: str = "") -> str:
    return f"purpose: tests\n{text}{CAMERA}{camera_extra}"


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yml")
    return "\n".join(caught.value.lines)


def test_the_arcface_table_is_ordered_and_interpolates_between_its_rows() -> None:
    assert TABLE is not None and TABLE.impostor_pairs > 10_000_000
    rates = [p.false_match_rate for p in TABLE.points]
    cosines = [p.min_cosine for p in TABLE.points]
    misses = [p.false_non_match_rate for p in TABLE.points]
    assert rates == sorted(rates, reverse=True) and cosines == sorted(cosines) and misses == sorted(misses)
    for point in TABLE.points:
        assert TABLE.cosine_at(point.false_match_rate) == point.min_cosine
        assert TABLE.rate_at(point.min_cosine) == pytest.approx(point.false_match_rate)
    between = TABLE.cosine_at(3e-4)
    assert TABLE.points[2].min_cosine < between < TABLE.points[3].min_cosine
    assert TABLE.rate_at(between) == pytest.approx(3e-4, rel=2.5e-3)  # cosine_at rounds to 4 decimals: <= 0.22%
    with pytest.raises(ValueError, match="outside the calibration"):
        TABLE.cosine_at(1e-9)
    # The calibrated same-person threshold sits where the table says it should: between 1e-3 and 1e-4.
    assert W600K_MBF.calibration is not None
    assert 1e-4 < TABLE.rate_at(W600K_MBF.calibration.threshold) < 1e-3


def test_a_false_match_rate_in_the_file_resolves_to_the_tables_cosine() -> None:
    assert TABLE is not None
    parsed = parse_config(config("face_recognition:\n  false_match_rate: 1e-4\n"), "site.yml")
    named, unknown = parsed.camera_recognition("door").resolve(0.2323)
    assert named == TABLE.cosine_at(1e-4) == TABLE.points[3].min_cosine
    assert unknown < named
    cosine = parse_config(config("face_recognition:\n  min_cosine_similarity: 0.3\n"), "site.yml")
    assert cosine.camera_recognition("door").resolve(0.2323)[0] == 0.3
    legacy = parse_config(config("face_recognition:\n  recognition_threshold: 0.3\n"), "site.yml")
    assert legacy.camera_recognition("door").resolve(0.2323)[0] == 0.3
    default = parse_config(config(""), "site.yml")
    assert default.camera_recognition("door").resolve(0.2323)[0] == 0.2323


def test_a_camera_can_replace_the_global_threshold_in_another_form() -> None:
    assert TABLE is not None
    text = config("face_recognition:\n  min_cosine_similarity: 0.3\n",
                  camera_extra="    face_recognition:\n      false_match_rate: 1e-5\n")
    parsed = parse_config(text, "site.yml")
    assert parsed.camera_recognition("door").resolve(0.2323)[0] == TABLE.cosine_at(1e-5)


def test_frigates_confidence_scale_is_refused_with_the_explanation() -> None:
    message = refusal(config("face_recognition:\n  recognition_threshold: 0.9\n"))
    assert "recognition_threshold 0.9 is read as a cosine similarity, not a confidence" in message
    assert "false_match_rate: 1e-4" in message and "nobody would ever be recognised" in message
    ceiling = refusal(config("face_recognition:\n  min_cosine_similarity: 0.85\n"))
    assert "min_cosine_similarity 0.85 is above 0.8" in ceiling and "false_match_rate" in ceiling
    both = refusal(config("face_recognition:\n  false_match_rate: 1e-4\n  min_cosine_similarity: 0.3\n"))
    assert "set one naming threshold" in both
    outside = refusal(config("face_recognition:\n  false_match_rate: 1e-9\n"))
    assert "outside the calibration" in outside
    camera = refusal(config("", camera_extra="    face_recognition:\n      recognition_threshold: 0.95\n"))
    assert "not a confidence" in camera


def test_dlib_has_no_table_so_a_false_match_rate_is_refused_for_it() -> None:
    assert DLIB_RESNET.calibration is not None and DLIB_RESNET.calibration.fmr_table is None
    message = refusal("recogniser: dlib\n" + config("face_recognition:\n  false_match_rate: 1e-4\n"))
    assert "the dlib recogniser has none; set min_cosine_similarity instead" in message
    parsed = parse_config("recogniser: dlib\n" + config("face_recognition:\n  min_cosine_similarity: 0.93\n"),
                          "site.yml")
    assert parsed.camera_recognition("door").resolve(0.9081)[0] == 0.93


def test_scores_are_described_by_how_many_strangers_reach_them() -> None:
    calibration = W600K_MBF.calibration
    assert calibration is not None and TABLE is not None
    assert calibration.meaning(TABLE.cosine_at(1e-5)) == "about 1 in 100,000 strangers score this high"
    assert calibration.meaning(0.0) == "more than 1 in 10 strangers score this high"
    assert calibration.meaning(0.7) == "fewer than 1 in 1,000,000 strangers score this high"


def test_real_faces_fall_where_the_table_puts_them(data_dir: Path, engine: FaceEngine) -> None:
    """Same-person pairs of the shared photos clear the strict end of the table; strangers mostly score low."""
    assert TABLE is not None
    people, vectors = [], []
    for photo in sorted((data_dir / "faces").glob("*/*")):
        faces = engine.analyze(load_image(photo))
        index = faces.primary()
        if index is not None:
            people.append(photo.parent.name)
            vectors.append(faces.embeddings.vectors[index])
    scores = np.stack(vectors) @ np.stack(vectors).T
    pairs = list(itertools.combinations(range(len(people)), 2))
    same = [scores[i, j] for i, j in pairs if people[i] == people[j]]
    strangers = np.array([scores[i, j] for i, j in pairs if people[i] != people[j]])
    assert len(same) >= 10 and len(strangers) >= 100
    assert min(same) >= TABLE.cosine_at(1e-4)
    assert (strangers >= TABLE.cosine_at(1e-1)).mean() < 0.25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: FaceEngine) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("thresholds")
    gallery = Gallery(GallerySettings(data), engine=engine)
    keys = make_keys(gallery)
    with serving(create_app(ApiSettings(data), gallery=gallery)) as url:
        yield Server(url, gallery, keys)
    gallery.db.dispose()


def test_a_watchlist_takes_a_false_match_rate(server: Server) -> None:
    assert TABLE is not None
    with server.client("admin") as admin:
        made = admin.post("/watchlists", json={"name": "strict", "purpose": "tests", "false_match_rate": 1e-5})
        assert made.status_code == 201, made.text
        assert made.json()["threshold"] == TABLE.cosine_at(1e-5)
        listed = {w["name"]: w["threshold"] for w in admin.get("/watchlists").json()}
        assert listed["strict"] == TABLE.cosine_at(1e-5)
        high = admin.post("/watchlists", json={"name": "never", "purpose": "tests", "threshold": 0.9})
        assert high.status_code == 400 and "would match nobody" in high.json()["error"]["message"]
        both = admin.post("/watchlists", json={"name": "both", "purpose": "t", "threshold": 0.3,
                                               "false_match_rate": 1e-4})
        assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
