"""The command line, run as a user runs it: a real process, real files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from facetrail.vision.samples import sample_image

pytestmark = pytest.mark.models


def facetrail(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_faces_json_describes_every_face() -> None:
    result = facetrail("faces", "--json", sample_image("gdp.jpg"))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    faces = document["images"][0]["faces"]
    assert document["model"].startswith("w600k_mbf@")
    assert len(faces) >= 3
    for face in faces:
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
        assert 0 <= face["quality"]["score"] <= 1 and 0 < face["score"] <= 1


def test_faces_prints_a_line_per_face() -> None:
    result = facetrail("faces", sample_image("yaoming.jpg"))
    assert result.returncode == 0
    assert "1 face(s)" in result.stdout and "#0" in result.stdout and "quality" in result.stdout


def test_faces_with_crop_finds_the_face_of_a_tight_grey_capture(engine: FaceEngine, data_dir: Path,
                                                                tmp_path: Path) -> None:
    """A 92x112 grey crop that is nearly all face, as cameras capture them, is found in --crop mode."""
    photo = load_image(data_dir / "lfw-view1" / "images" / "Morgan_Freeman" / "Morgan_Freeman_0001.jpg")
    found = engine.analyze(photo)
    index = found.primary()
    assert index is not None
    x1, y1, x2, y2 = (int(v) for v in found.detections.xyxy[index])
    grey = cv2.cvtColor(photo[max(y1, 0):y2, max(x1, 0):x2], cv2.COLOR_BGR2GRAY)
    crop = tmp_path / "capture.png"
    cv2.imwrite(str(crop), cv2.resize(grey, (92, 112), interpolation=cv2.INTER_AREA))
    result = facetrail("faces", "--crop", "--json", crop)
    assert result.returncode == 0, result.stderr
    faces = json.loads(result.stdout)["images"][0]["faces"]
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0]["box"]
    assert 0 <= x1 < x2 <= 92 and 0 <= y1 < y2 <= 112  # mapped back into the crop, not the border


def test_compare_same_and_different_people(data_dir: Path) -> None:
    faces = data_dir / "faces"
    same = facetrail("compare", faces / "obama" / "obama.jpg", faces / "obama" / "obama2.jpg")
    other = facetrail("compare", faces / "obama" / "obama.jpg", faces / "biden" / "biden.jpg")
    assert same.returncode == other.returncode == 0
    assert "same person" in same.stdout
    assert "different people" in other.stdout
    decision = json.loads(facetrail("compare", "--json", faces / "obama" / "obama.jpg",
                                    faces / "biden" / "biden.jpg").stdout)
    assert decision["same_person"] is False and decision["similarity"] < decision["threshold"]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("name", "data", "message"), [
    ("missing.jpg", None, "no such file"),
    ("empty.jpg", b"", "empty"),
    ("text.jpg", b"hello, not a photo", "not an image"),
    ("cut.jpg", sample_image("yaoming.jpg").read_bytes()[:4000], "truncated"),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path: Path, name: str, data: bytes | None,
                                            message: str) -> None:
    path = tmp_path / name if data is None else _write(tmp_path / name, data)
    for command in (("faces", path), ("compare", path, sample_image("yaoming.jpg"))):
        result = facetrail(*command)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and message in lines[0]


def test_image_without_a_face(data_dir: Path) -> None:
    no_face = data_dir / "scenes" / "no_face.png"
    for command in (("faces", no_face), ("compare", no_face, sample_image("yaoming.jpg"))):
        result = facetrail(*command)
        assert result.returncode == 1 and "no face found" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_data_folder_that_is_a_file_or_a_corrupt_database_is_one_line(tmp_path: Path) -> None:
    a_file = _write(tmp_path / "not-a-folder", b"hello")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    _write(corrupt / "facetrail.db", b"this is not a database, " * 100)
    for command, message in ((("serve", "--data", a_file), "a file is where a folder is needed"),
                             (("identities", "--data", a_file / "sub"), "a file is where a folder is needed"),
                             (("serve", "--data", corrupt), "file is not a database"),
                             (("identities", "--data", corrupt), "file is not a database")):
        result = facetrail(*command)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
