"""kill -9 in the middle of an enrolment leaves database and index consistent after a restart."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.store.audit import verify_chain
from facetrail.store.models import AuditEntry, FaceTemplate, Identity
from facetrail.vision.engine import FaceEngine

pytestmark = pytest.mark.models


def lfw_tree(data_dir: Path, root: Path, people: int = 30) -> int:
    """root/<person>/ with up to 3 LFW photos each; returns the number of photos."""
    count = 0
    for person in sorted((data_dir / "lfw-view1" / "images").iterdir())[:people]:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:3]:
            shutil.copy(photo, root / person.name / photo.name)
            count += 1
    return count


def enrol_command(tree: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "facetrail.cli.main", "enroll", str(tree), "--data", str(data),
            "--actor", "crash-test"]


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_during_enrolment(tmp_path: Path, data_dir: Path, engine: FaceEngine, seed: int) -> None:
    tree, data = tmp_path / "people", tmp_path / "data"
    photos = lfw_tree(data_dir, tree)
    process = subprocess.Popen(enrol_command(tree, data), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    # A random point: somewhere between start-up and the end of the run.
    time.sleep(random.Random(seed).uniform(2.0, 7.0))
    process.kill()
    process.wait()

    gallery = Gallery(GallerySettings(data_dir=data), engine=engine)  # the restart
    with gallery.db.session() as session:
        orphans = session.scalar(select(func.count()).select_from(Identity).where(
            ~select(FaceTemplate.id).where(FaceTemplate.identity_id == Identity.id).exists()))
        assert orphans == 0, "an identity without templates: half a person was written"
        db_ids = np.sort(np.asarray(session.scalars(select(FaceTemplate.id)).all(), np.int64))
        enrolments = session.scalar(select(func.count()).select_from(AuditEntry)
                                    .where(AuditEntry.action == "enrol"))
        people = session.scalar(select(func.count()).select_from(Identity))
        assert enrolments == people, "every committed person has exactly its audit entry"
        assert verify_chain(session).ok
    assert np.array_equal(np.sort(gallery.index.ids()), db_ids), "index and database disagree"
    gallery.close()

    # Finishing the job afterwards enrols the rest and duplicates nothing.
    finished = subprocess.run(enrol_command(tree, data), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    final = Gallery(GallerySettings(data_dir=data), engine=engine)
    identities, templates = final.counts()
    kept = {line.split(":")[0].split()[-1] for line in finished.stdout.splitlines()
            if line.startswith(("enrolled", "duplicate image"))}
    assert identities == len(kept) >= 25, "every person with a usable photo is enrolled once"
    assert len(final.index) == templates <= photos
    with final.db.session() as session:
        assert session.scalar(select(func.count(func.distinct(FaceTemplate.image_sha256)))) == templates
