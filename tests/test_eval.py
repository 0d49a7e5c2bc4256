"""`facetrail eval pairs`: metrics on hand-made scores, pair-list readers, and end-to-end runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facetrail.eval import metrics
from facetrail.eval.metrics import FAILED_SCORE
from facetrail.eval.pairs import PairsError, folder_pairs, read_csv_pairs, read_lfw_pairs, read_pairs
from facetrail.eval.runner import Embeddings, measure, score_pairs


def main(argv: list[str]) -> int:
    """``facetrail`` itself, imported late so the metric and parser tests need no CLI."""
    from facetrail.cli.main import main as facetrail_main

    return facetrail_main(argv)


def _shared_data() -> Path:
    override = os.environ.get("FACETRAIL_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


DATA = _shared_data()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test data not found at {DATA} "
                                                          "(set FACETRAIL_SHARED_DATA)")


# --- metrics -----------------------------------------------------------------------------------

SEPARABLE = ([0.9, 0.8, 0.2, 0.1], [True, True, False, False])
INTERLEAVED = ([0.9, 0.7, 0.5, 0.1], [True, False, True, False])


def test_perfectly_separable_scores() -> None:
    scores, same = SEPARABLE
    assert metrics.auc(scores, same) == 1.0
    threshold, accuracy = metrics.best_threshold(scores, same)
    assert accuracy == 1.0
    assert threshold == pytest.approx(0.5)  # midway between the lowest genuine and highest impostor
    decisions = metrics.at_threshold(scores, same, threshold)
    assert (decisions.accuracy, decisions.tar, decisions.far) == (1.0, 1.0, 0.0)


def test_interleaved_scores() -> None:
    scores, same = INTERLEAVED
    # 3 of the 4 genuine/impostor orderings are right.
    assert metrics.auc(scores, same) == pytest.approx(0.75)
    threshold, accuracy = metrics.best_threshold(scores, same)
    assert accuracy == pytest.approx(0.75)
    # Two cuts reach 0.75 (0.8 and 0.3); the middle of the tied set is the first of the two.
    assert threshold == pytest.approx(0.8)
    assert metrics.at_threshold(scores, same, 0.3).accuracy == pytest.approx(0.75)


def test_inverted_and_tied_scores() -> None:
    assert metrics.auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert metrics.best_threshold([0.1, 0.2, 0.8, 0.9], [True, True, False, False])[1] == 0.5
    assert metrics.auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)


def test_failed_pairs_are_wrong_in_accuracy_and_score_minus_one_in_rates() -> None:
    scores = [0.9, 0.8, 0.5, 0.2, 0.1, 0.5]  # the failed pairs' own scores are ignored
    same = [True, True, True, False, False, False]
    failed = [False, False, True, False, False, True]
    threshold, accuracy = metrics.best_threshold(scores, same, failed)
    assert threshold == pytest.approx(0.5)
    assert accuracy == pytest.approx(4 / 6)  # both failed pairs are wrong, whatever their label
    decisions = metrics.at_threshold(scores, same, threshold, failed)
    assert decisions.accuracy == pytest.approx(4 / 6)
    assert decisions.tar == pytest.approx(2 / 3)  # the failed genuine pair is a false reject
    assert decisions.far == 0.0  # the failed impostor pair is rejected
    # ROC (FAR, TAR): (0,0) (0,1/3) (0,2/3) (1/3,2/3) (2/3,2/3) (1,1) -> 2/9 + 2/9 + 5/18.
    assert metrics.auc(scores, same, failed) == pytest.approx(13 / 18)
    assert metrics.tar_at_far(scores, same, 0.1, failed) == (pytest.approx(2 / 3), pytest.approx(0.8))


def test_tar_at_far() -> None:
    impostors = np.arange(100) / 100  # 0.00 .. 0.99
    genuine = np.array([0.985, 0.5, 1.5, 1.2])
    scores = np.concatenate([genuine, impostors])
    same = np.arange(scores.size) < genuine.size
    tar, threshold = metrics.tar_at_far(scores, same, 0.01)
    assert (tar, threshold) == (pytest.approx(0.75), pytest.approx(0.985))  # one impostor (0.99) let in
    assert metrics.tar_at_far(scores, same, 0.001) == (pytest.approx(0.5), pytest.approx(1.2))


def test_stratified_folds_and_kfold() -> None:
    same = np.array([True] * 20 + [False] * 20)
    folds = metrics.stratified_folds(same, 10)
    assert folds[:20].tolist() == [k for k in range(10) for _ in range(2)]
    assert folds[20:].tolist() == folds[:20].tolist()
    scores = np.where(same, 0.8, 0.2) + np.linspace(0, 0.01, same.size)
    result = metrics.kfold_accuracy(scores, same, folds)
    assert result.accuracies.shape == (10,)
    assert (result.mean, result.std) == (1.0, 0.0)
    assert 0.21 < result.mean_threshold < 0.8


def test_kfold_on_noisy_scores_is_below_the_optimistic_global_accuracy() -> None:
    rng = np.random.default_rng(0)
    same = np.array([True] * 200 + [False] * 200)
    scores = np.where(same, 0.6, 0.3) + rng.normal(0, 0.15, same.size)
    _, best = metrics.best_threshold(scores, same)
    kfold = metrics.kfold_accuracy(scores, same, metrics.stratified_folds(same))
    assert 0.7 < kfold.mean <= best < 1.0
    assert kfold.std > 0


def test_metrics_refuse_a_single_class() -> None:
    with pytest.raises(ValueError, match="both"):
        metrics.best_threshold([0.1, 0.2], [True, True])


def test_measure_reports_tar_only_with_enough_impostors() -> None:
    scores, same = (np.array(a) for a in SEPARABLE)
    result = measure(scores, same, np.zeros(4, bool), far_levels=(1e-3, 1e-2), thresholds={"given": 0.85})
    assert [t.tar for t in result.tar] == [None, None]
    assert "1000" in (result.tar[1].reason or "")
    assert result.folds == 2 and result.kfold is not None
    assert result.fixed["given"].accuracy == pytest.approx(0.75)


def test_measure_also_reports_the_usable_pairs_alone() -> None:
    scores = np.array([0.9, 0.8, FAILED_SCORE, 0.2, 0.1, FAILED_SCORE])
    same = np.array([True, True, True, False, False, False])
    result = measure(scores, same, np.array([False, False, True, False, False, True]))
    assert (result.failed_pairs, result.failed_genuine, result.failed_impostors) == (2, 1, 1)
    assert result.best.accuracy == pytest.approx(4 / 6)
    assert result.usable is not None and result.usable.pairs == 4
    assert (result.usable.best.accuracy, result.usable.auc) == (1.0, 1.0)
    assert measure(scores, same, np.zeros(6, bool)).usable is None


def test_score_pairs_marks_pairs_with_unusable_images(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    pairs = read_pairs(_write(tmp_path / "p.csv", f"file_x,file_y,same\n{a},{b},1\n{a},{c},0\n"))
    unit = np.array([1.0, 0.0], np.float32)
    scores, failed = score_pairs(pairs, Embeddings({a: unit, b: unit}, [], "m", 0.0))
    assert scores.tolist() == [1.0, FAILED_SCORE]
    assert failed.tolist() == [False, True]


# --- pair lists ---------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_lfw_pairs_with_count_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.txt", "2\nAnn 1 2\nBob_B\t1\t13\n\nAnn 1 Bob_B 2\nCy 4 Di 10\n")
    pairs = read_lfw_pairs(path)
    assert (len(pairs), pairs.genuine, pairs.impostors, pairs.kind) == (4, 2, 2, "lfw")
    first = pairs.pairs[0]
    assert first.first == tmp_path / "images" / "Ann" / "Ann_0001.jpg"
    assert first.second == tmp_path / "images" / "Ann" / "Ann_0002.jpg"
    assert pairs.pairs[1].second.name == "Bob_B_0013.jpg"
    assert pairs.pairs[3].second == tmp_path / "images" / "Di" / "Di_0010.jpg"
    assert not pairs.pairs[2].same
    moved = read_pairs(path, images_root=tmp_path / "x")
    assert moved.pairs[0].first == tmp_path / "x" / "Ann" / "Ann_0001.jpg"


def test_lfw_pairs_with_folds_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.txt", "2 1\nA 1 2\nA 1 B 1\nC 1 2\nC 2 D 1\n")
    pairs = read_pairs(path)
    assert [p.same for p in pairs.pairs] == [True, False, True, False]
    assert len(pairs.images()) == 6


@pytest.mark.parametrize(("text", "message"), [
    ("2\nA 1 2\nA one B 2\n", "line 3"),
    ("1\nA 1 2\nA 1 B 2 extra\n", "line 3"),
    ("x\nA 1 2\n", "line 1"),
    ("2\nA 1 2\nA 1 B 2\n", "promises 4 pairs"),
])
def test_lfw_pairs_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PairsError, match=message):
        read_lfw_pairs(_write(tmp_path / "pairs.txt", text))


def test_csv_pairs(tmp_path: Path) -> None:
    text = "file_x,file_y,same\nx/a.jpg,x/b.jpg,1\n/abs/c.png,x/d.jpg,false\nx/a.jpg,x/d.jpg,TRUE\n"
    pairs = read_csv_pairs(_write(tmp_path / "list.csv", text))
    assert [p.same for p in pairs.pairs] == [True, False, True]
    assert pairs.pairs[0].first == tmp_path / "x" / "a.jpg"
    assert pairs.pairs[1].first == Path("/abs/c.png")
    # detected by its header even without the .csv suffix
    assert read_pairs(_write(tmp_path / "list.txt", text)).kind == "csv"


def test_csv_pairs_errors(tmp_path: Path) -> None:
    with pytest.raises(PairsError, match="line 3: 'same'"):
        read_csv_pairs(_write(tmp_path / "a.csv", "file_x,file_y,same\na,b,1\na,c,maybe\n"))
    with pytest.raises(PairsError, match="missing same"):
        read_csv_pairs(_write(tmp_path / "b.csv", "file_x,file_y\na,b\n"))


def image_tree(root: Path, sizes: dict[str, int]) -> Path:
    """A folder per person holding ``sizes[person]`` empty .jpg files (for the set builders, which only list)."""
    for person, count in sizes.items():
        (root / person).mkdir(parents=True)
        for i in range(count):
            (root / person / f"{i}.jpg").write_bytes(b"")
    return root


def test_folder_pairs(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "people", {"a": 4, "b": 3, "c": 1, "d": 2, "empty": 0})
    (root / "a" / "notes.txt").write_text("not an image")
    pairs = folder_pairs(root)
    assert pairs.genuine == 6 + 3 + 0 + 1  # sum of C(n, 2)
    assert pairs.impostors == pairs.genuine  # balanced by default
    assert all((p.first.parent == p.second.parent) == p.same for p in pairs.pairs)
    assert len({frozenset((p.first, p.second)) for p in pairs.pairs}) == len(pairs)
    assert folder_pairs(root).pairs == pairs.pairs  # seeded: the same sample each time
    assert folder_pairs(root, seed=1).pairs != pairs.pairs
    per_person = folder_pairs(root, impostors_per_person=2)
    assert per_person.genuine == 10 and 5 <= per_person.impostors <= 8


def test_folder_pairs_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PairsError, match="no person folders"):
        folder_pairs(tmp_path / "empty")
    with pytest.raises(PairsError, match="single image"):
        folder_pairs(image_tree(tmp_path / "singles", {"a": 1, "b": 1}))


# --- command line --------------------------------------------------------------------------------


def test_cli_bad_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path / "pairs.txt", "1\nA 1 2\nA 1 B\n")
    (tmp_path / "empty").mkdir()
    for source, message in ((bad, "line 3"), (tmp_path / "missing.txt", "no such file"),
                            (tmp_path / "empty", "no person folders"),
                            (_write(tmp_path / "ok.txt", "1\nA 1 2\nA 1 B 2\n"), "none of the 3 images")):
        assert main(["eval", "pairs", str(source), "--out", str(tmp_path / "out")]) == 1
        captured = capsys.readouterr().err
        assert message in captured and "Traceback" not in captured
        assert captured.strip().count("\n") == 0, captured
    assert not (tmp_path / "out").exists()


def _check_report(out: Path) -> dict[str, Any]:
    png = (out / "roc.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(out / "roc.png") as image:
        image.verify()
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    for key in ("facetrail_version", "timestamp", "dataset", "model_id", "recogniser", "accuracy",
                "best_threshold", "auc", "tar_at_far", "fixed_thresholds", "failures"):
        assert key in summary, key
    assert summary["model_id"].startswith("w600k_mbf@")
    assert (out / "scores.csv").is_file()
    return summary


@pytest.mark.models
@needs_data
def test_end_to_end_faces_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["eval", "pairs", str(DATA / "faces"), "--out", str(out)]) == 0
    summary = _check_report(out)
    assert summary["accuracy"]["kfold_mean"] >= 0.9
    dataset = summary["dataset"]
    assert (dataset["kind"], dataset["genuine_pairs"], dataset["impostor_pairs"]) == ("folder", 13, 13)
    assert summary["failures"]["images"] == 0
    assert "fold accuracy" in capsys.readouterr().out


@pytest.mark.models
@needs_data
def test_end_to_end_lfw_subset(tmp_path: Path) -> None:
    lfw = DATA / "lfw-view1"
    lines = (lfw / "pairsDevTest.txt").read_text().splitlines()
    subset = _write(tmp_path / "pairs.txt", "\n".join(["20", *lines[1:21], *lines[501:521]]) + "\n")
    out = tmp_path / "report"
    assert main(["eval", "pairs", str(subset), "--images-root", str(lfw / "images"), "--out", str(out),
                 "--threshold", "0.3"]) == 0
    summary = _check_report(out)
    assert summary["dataset"]["kind"] == "lfw" and summary["dataset"]["pairs"] == 40
    assert summary["accuracy"]["kfold_mean"] >= 0.9
    assert summary["fixed_thresholds"]["given"]["threshold"] == 0.3
    assert summary["tar_at_far"][1]["tar"] is None  # 20 impostors cannot measure FAR 1e-2


@pytest.mark.models
@needs_data
def test_unusable_images_are_reported(tmp_path: Path) -> None:
    from facetrail.eval.runner import embed_images
    from facetrail.vision.engine import FaceEngine

    photos = sorted((DATA / "faces" / "obama").glob("*.jpg"))[:1]
    paths = [DATA / "scenes" / "no_face.png", tmp_path / "missing.jpg", *photos]
    embedded = embed_images(FaceEngine(), paths)
    assert set(embedded.vectors) == set(photos)
    reasons = {f.path.name: f.reason for f in embedded.failures}
    assert reasons["no_face.png"].startswith("no face found")
    assert reasons["missing.jpg"] == "no such file"
