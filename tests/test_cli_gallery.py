"""The gallery commands as a user runs them, against a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from facetrail.vision.engine import FaceEngine
from test_gallery import enrolment_tree

pytestmark = pytest.mark.models


def facetrail(data: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args), "--data", str(data),
                           "--actor", "cli-test"], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_enrol_search_forget_and_audit(tmp_path: Path, data_dir: Path) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    data = tmp_path / "data"
    enrolled = facetrail(data, "enroll", tmp_path / "people")
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled" in enrolled.stdout and "identities updated" in enrolled.stdout
    again = facetrail(data, "enroll", tmp_path / "people")
    assert again.returncode == 0 and "duplicate image" in again.stdout

    listing = facetrail(data, "identities")
    assert all(name in listing.stdout for name in probes)

    found = facetrail(data, "search", probes["kit_harington"], "--purpose", "test", "--json")
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["known"] and answer["matches"][0]["name"] == "kit_harington"

    no_purpose = facetrail(data, "search", probes["kit_harington"])
    assert no_purpose.returncode == 2 and "--purpose" in no_purpose.stderr

    forgot = facetrail(data, "forget", "kit_harington", "--reason", "deletion request")
    assert forgot.returncode == 0 and "forgot identity" in forgot.stdout
    gone = json.loads(facetrail(data, "search", probes["kit_harington"], "--purpose", "t", "--json").stdout)
    assert all(m["name"] != "kit_harington" for m in gone["matches"])

    verified = facetrail(data, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout
    with sqlite3.connect(data / "facetrail.db") as connection:
        connection.execute("UPDATE audit_log SET purpose = 'covering tracks' WHERE action = 'search'")
    tampered = facetrail(data, "audit", "verify")
    assert tampered.returncode == 1 and "TAMPERED" in tampered.stdout


def test_watchlist_and_correction_commands(tmp_path: Path, data_dir: Path) -> None:
    probes = enrolment_tree(data_dir, tmp_path / "people")
    data = tmp_path / "data"
    created = facetrail(data, "watchlist", "create", "vip", "--purpose", "greet guests", "--expires", "2030-01-01")
    assert created.returncode == 0, created.stderr
    enrolled = facetrail(data, "enroll", tmp_path / "people", "--watchlist", "vip")
    assert enrolled.returncode == 0
    listed = facetrail(data, "watchlist", "list")
    assert "vip: 6 member(s)" in listed.stdout
    corrected = facetrail(data, "correct", probes["obama"], "--not", "obama")
    assert corrected.returncode == 0, corrected.stderr
    after = json.loads(facetrail(data, "search", probes["obama"], "--purpose", "t", "--json").stdout)
    assert not after["matches"] or after["matches"][0]["name"] != "obama"
    purged = facetrail(data, "purge")
    assert purged.returncode == 0 and "purged 0 expired watchlist(s)" in purged.stdout
    strict = facetrail(data, "watchlist", "create", "banned", "--purpose", "t", "--false-match-rate", "1e-4")
    assert strict.returncode == 0, strict.stderr
    assert "banned: 0 member(s), threshold 0.282" in facetrail(data, "watchlist", "list").stdout
    confidence = facetrail(data, "watchlist", "create", "frigate", "--purpose", "t", "--threshold", "0.9")
    assert confidence.returncode == 1 and "would match nobody" in confidence.stderr


def test_gallery_errors_are_one_line(tmp_path: Path, data_dir: Path) -> None:
    data = tmp_path / "data"
    for args in (("enroll", tmp_path / "missing"), ("forget", "nobody"),
                 ("enroll", tmp_path, "--watchlist", "none", "--name", "x"),
                 ("search", data_dir / "scenes" / "no_face.png", "--purpose", "t")):
        result = facetrail(data, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_enrol_picks_a_face_by_number_and_warns_about_a_small_one(tmp_path: Path, data_dir: Path,
                                                                 engine: FaceEngine) -> None:
    from test_enrol_photos import listed_faces, shrunk

    data = tmp_path / "data"
    scene = data_dir / "scenes" / "obama_and_biden.jpg"
    refused = facetrail(data, "enroll", scene, "--name", "Joe Biden")
    assert refused.returncode == 1 and "several faces" in refused.stdout, refused.stdout + refused.stderr
    assert "--face N" in refused.stdout
    faces = listed_faces(refused.stdout)
    biden = min((f for f in faces if f.box[1] < 700), key=lambda f: f.box[0])  # the left of the two men
    taken = facetrail(data, "enroll", scene, "--name", "Joe Biden", "--face", str(biden.index))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert f"face #{biden.index} ({','.join(map(str, biden.box))})" in taken.stdout
    found = json.loads(facetrail(data, "search", data_dir / "faces" / "biden" / "biden2.jpg", "--purpose", "t",
                                 "--json").stdout)
    assert found["known"] and found["matches"][0]["name"] == "Joe Biden"

    small = shrunk(engine, data_dir / "faces" / "obama" / "obama.jpg", 24, tmp_path / "obama_small.png")
    warned = facetrail(data, "enroll", small, "--name", "Barack Obama")
    assert warned.returncode == 0 and "warning: low resolution" in warned.stdout, warned.stdout + warned.stderr
    both = facetrail(data, "enroll", scene, "--name", "x", "--face", "0", "--largest")
    assert both.returncode == 2 and "not allowed with" in both.stderr
