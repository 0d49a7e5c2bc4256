"""`facetrail doors` as an administrator runs it, against a real SQLite file and a person enrolled from a photo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facetrail.vision.samples import sample_image

pytestmark = pytest.mark.models


def facetrail(data: Path, *args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail.cli.main", *map(str, args), "--data", str(data),
                           "--actor", "desk"], capture_output=True, text=True, timeout=300, input=stdin)


def test_consent_with_a_pin_then_withdrawal_deletes_the_face(tmp_path: Path) -> None:
    data = tmp_path / "data"
    photo = sample_image("yaoming.jpg")
    assert facetrail(data, "enroll", photo, "--name", "Yao Ming").returncode == 0

    empty = facetrail(data, "doors", "consent", "Yao Ming", "--door", "front", "--method", "form 7", "--factor")
    assert empty.returncode == 1 and "standard input" in empty.stderr
    given = facetrail(data, "doors", "consent", "Yao Ming", "--door", "front", "--method", "signed form 7",
                      "--factor", stdin="2468\n")
    assert given.returncode == 0, given.stderr
    assert "at door front with a second factor" in given.stdout and "2468" not in given.stdout
    listed = facetrail(data, "doors", "consents", "Yao Ming")
    assert "signed form 7" in listed.stdout and "yes" in listed.stdout

    withdrawn = facetrail(data, "doors", "withdraw", given.stdout.split()[1].rstrip(":"))
    assert withdrawn.returncode == 0, withdrawn.stderr
    assert "1 face template(s) deleted" in withdrawn.stdout
    again = facetrail(data, "doors", "withdraw", given.stdout.split()[1].rstrip(":"))
    assert again.returncode == 1 and "already withdrawn" in again.stderr and "Traceback" not in again.stderr

    found = json.loads(facetrail(data, "search", photo, "--purpose", "check the withdrawal", "--json").stdout)
    assert all(m["name"] != "Yao Ming" for m in found["matches"])
    trail = facetrail(data, "audit", "list")
    assert "door.consent_withdrawn" in trail.stdout and "2468" not in trail.stdout
    assert json.loads(facetrail(data, "doors", "log", "--json").stdout) == []
