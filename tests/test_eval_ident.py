"""`facetrail eval ident` (1:N): set splits, metrics against brute force, and real runs through the CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facetrail.eval.ident_groups import GroupsError, read_groups
from facetrail.eval.ident_metrics import NO_MATE, cmc, det_curve, fnir_at_fpir, rank_probes, rates_at
from facetrail.eval.ident_sets import IdentSetError, folder_ident, read_ident, read_ident_csv
from facetrail.vision.engine import FaceEngine
from test_eval import image_tree


def main(argv: list[str]) -> int:
    """``facetrail`` itself, in-process, imported late so the pure tests need no CLI."""
    from facetrail.cli.main import main as facetrail_main

    return facetrail_main(argv)


# --- sets -----------------------------------------------------------------------------------------


def test_folder_split_enrols_first_images_and_holds_people_out(tmp_path: Path) -> None:
    root = image_tree(tmp_path / "people", {f"p{i}": 1 + i % 4 for i in range(10)})
    ident = folder_ident(root, enrol=2, non_mated_fraction=0.3, seed=5)
    assert len(ident.held_out) == 3
    assert not set(ident.held_out) & set(ident.gallery)
    for person, images in ident.gallery.items():
        all_images = sorted((root / person).iterdir())
        assert images == tuple(all_images[:2])
        assert [p.path for p in ident.probes if p.person == person] == all_images[2:]
    held_images = [p for p in ident.probes if p.person in ident.held_out]
    assert held_images and not any(p.mated for p in held_images)
    assert sum(len(list((root / p).iterdir())) for p in ident.held_out) == ident.non_mated
    gallery_paths = {path for images in ident.gallery.values() for path in images}
    assert not gallery_paths & {p.path for p in ident.probes}
    # Deterministic by seed; another seed holds other people out.
    assert folder_ident(root, enrol=2, non_mated_fraction=0.3, seed=5) == ident
    assert {folder_ident(root, non_mated_fraction=0.3, seed=s).held_out for s in range(6)} != {ident.held_out}
    assert folder_ident(root, non_mated_fraction=0.0).held_out == ()


def test_folder_split_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(IdentSetError, match="no person folders"):
        folder_ident(tmp_path / "empty")
    singles = image_tree(tmp_path / "singles", {"a": 1, "b": 1, "c": 1})
    with pytest.raises(IdentSetError, match="nothing to search for"):
        folder_ident(singles)
    with pytest.raises(IdentSetError, match="below 1"):
        folder_ident(singles, non_mated_fraction=1.0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_set(tmp_path: Path) -> None:
    text = ("path,person,role\na/1.jpg,ann,enrol\na/2.jpg,ann,probe\nb/1.jpg,bob,gallery\n"
            "c/1.jpg,cy,probe\n/abs/a3.jpg,ann,probe\n")
    ident = read_ident(_write(tmp_path / "set.csv", text))
    assert ident.gallery == {"ann": (tmp_path / "a/1.jpg",), "bob": (tmp_path / "b/1.jpg",)}
    assert [(p.path.name, p.mated) for p in ident.probes] == [("2.jpg", True), ("1.jpg", False), ("a3.jpg", True)]
    assert ident.probes[2].path == Path("/abs/a3.jpg")
    assert read_ident_csv(tmp_path / "set.csv", images_root=tmp_path / "x").gallery["bob"] == (
        tmp_path / "x" / "b/1.jpg",)


@pytest.mark.parametrize(("text", "message"), [
    ("path,person\na,b\n", "missing role"),
    ("path,person,role\na.jpg,ann,enrol\nb.jpg,ann,maybe\n", "line 3: role"),
    ("path,person,role\na.jpg,ann,enrol\na.jpg,ann,probe\n", "also an enrolment image"),
    ("path,person,role\na.jpg,ann,probe\n", "gallery is empty"),
    ("path,person,role\na.jpg,ann,enrol\nb.jpg,bob,probe\n", "nothing to find"),
])
def test_csv_set_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(IdentSetError, match=message):
        read_ident_csv(_write(tmp_path / "set.csv", text))


def test_groups_file(tmp_path: Path) -> None:
    groups = read_groups(_write(tmp_path / "g.csv", "person,group\nann,site-b\nbob,site-a\ncy,site-b\n"))
    assert groups.labels == ["site-a", "site-b"]
    with pytest.raises(GroupsError, match="already in group"):
        read_groups(_write(tmp_path / "twice.csv", "person,group\nann,x\nann,y\n"))
    with pytest.raises(GroupsError, match="missing group"):
        read_groups(_write(tmp_path / "bad.csv", "person,label\nann,x\n"))
    with pytest.raises(GroupsError, match="no such file"):
        read_groups(tmp_path / "absent.csv")


# --- metrics against brute force ------------------------------------------------------------------


def _brute_rank(row: np.ndarray, mate: int) -> int:
    """1-based place of ``mate`` when the people are sorted by score, the mate last among equal scores."""
    order = sorted(range(row.size), key=lambda j: (-row[j], j == mate))
    return order.index(mate) + 1


def test_ranks_cmc_and_rates_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    probes, people = 300, 40
    scores = rng.normal(0.1, 0.15, (probes, people))
    mated = rng.random(probes) < 0.6
    mate = np.where(mated, rng.integers(0, people, probes), NO_MATE)
    scores[np.flatnonzero(mated), mate[mated]] += rng.normal(0.35, 0.2, int(mated.sum()))  # mates score higher
    mate[np.flatnonzero(mated)[0]] = NO_MATE  # a mated probe whose person has no template
    scores[7, :3] = scores[7, 3] = 0.5  # ties
    failed = rng.random(probes) < 0.05
    ranked = rank_probes(scores, mate, mated, failed)
    expected = [(_brute_rank(scores[i], int(mate[i])) if mated[i] and not failed[i] and mate[i] != NO_MATE else 0)
                for i in range(probes)]
    assert ranked.mate_rank.tolist() == expected
    for r, value in enumerate(cmc(ranked, 5), start=1):
        assert value == pytest.approx(np.mean([0 < e <= r for e, m in zip(expected, mated, strict=True) if m]))
    threshold = 0.3
    rates = rates_at(ranked, threshold)
    hits = [e == 1 and scores[i, mate[i]] >= threshold for i, e in enumerate(expected) if mated[i]]
    false_positives = [not failed[i] and scores[i].max() >= threshold for i in range(probes) if not mated[i]]
    assert rates.fnir == pytest.approx(1 - np.mean(hits))
    assert rates.fpir == pytest.approx(np.mean(false_positives))


def test_fnir_at_fpir_is_the_best_threshold_allowed() -> None:
    rng = np.random.default_rng(4)
    probes, people = 400, 30
    scores = rng.normal(0.1, 0.1, (probes, people))
    mated = np.arange(probes) < 250
    mate = np.where(mated, np.arange(probes) % people, NO_MATE)
    scores[np.flatnonzero(mated), mate[mated]] += 0.3
    ranked = rank_probes(scores, mate, mated, np.zeros(probes, bool))
    result = fnir_at_fpir(ranked, 0.1)  # 150 non-mated probes >= 100 needed
    assert result.fnir is not None and result.threshold is not None
    # Brute force: over every candidate threshold with FPIR <= 0.1, the lowest FNIR.
    candidates = np.unique(scores)
    allowed = [t for t in candidates if rates_at(ranked, t).fpir <= 0.1]  # type: ignore[operator]
    best = min(rates_at(ranked, t).fnir for t in allowed)  # type: ignore[type-var]
    assert result.fnir == pytest.approx(best)
    assert rates_at(ranked, result.threshold).fpir <= 0.1  # type: ignore[operator]
    not_enough = fnir_at_fpir(ranked, 0.01)
    assert not_enough.fnir is None and "not enough non-mated probes" in (not_enough.reason or "")
    det = det_curve(ranked)
    assert np.all(np.diff(det.fpir) >= 0) and np.all(np.diff(det.fnir) <= 0)
    assert det.fnir[0] == 1.0 and det.fpir[0] == 0.0


def test_failed_probes_are_misses_and_never_false_positives() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.6], [0.95, 0.1]])
    mated = np.array([True, True, False, False])
    mate = np.array([0, 0, NO_MATE, NO_MATE])
    failed = np.array([False, True, False, True])
    ranked = rank_probes(scores, mate, mated, failed)
    assert ranked.mate_rank.tolist() == [1, 0, 0, 0]
    rates = rates_at(ranked, 0.5)
    assert (rates.fnir, rates.fpir) == (0.5, 0.5)  # the faceless mated probe misses; the faceless one is no FP


# --- real runs through the CLI --------------------------------------------------------------------


def _shared_data() -> Path:
    override = os.environ.get("FACETRAIL_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


DATA = _shared_data()
needs_data = pytest.mark.skipif(not (DATA / "faces").is_dir(),
                                reason=f"shared test data not found at {DATA} (set FACETRAIL_SHARED_DATA)")
GROUPS = {"obama": "site-a", "biden": "site-a", "kit_harington": "site-b", "rose_leslie": "site-b",
          "rob_lowe": "site-c", "nobody_here": "site-d"}


@dataclass
class Run:
    tree: Path
    out: Path
    summary: dict[str, Any]
    probes: list[dict[str, str]]


@pytest.fixture(scope="module")
def ident_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`facetrail eval ident` on a copy of faces/ with a faceless image among obama's probes."""
    if not (DATA / "faces").is_dir():
        pytest.skip(f"shared test data not found at {DATA} (set FACETRAIL_SHARED_DATA)")
    base = tmp_path_factory.mktemp("ident")
    tree = base / "faces"
    shutil.copytree(DATA / "faces", tree)
    shutil.copy(DATA / "scenes" / "no_face.png", tree / "obama" / "zz_no_face.png")  # sorts after obama.jpg
    groups = base / "groups.csv"
    groups.write_text("person,group\n" + "".join(f"{p},{g}\n" for p, g in GROUPS.items()), encoding="utf-8")
    out, json_path = base / "report", base / "figures.json"
    code = main(["eval", "ident", str(tree), "--out", str(out), "--json", str(json_path), "--groups", str(groups),
                 "--non-mated-fraction", "0.2", "--seed", "0"])
    assert code == 0
    summary = json.loads(json_path.read_text())
    assert summary == json.loads((out / "summary.json").read_text())
    with (out / "probes.csv").open(newline="") as stream:
        probes = list(csv.DictReader(stream))
    return Run(tree, out, summary, probes)


def _brute_force(engine: FaceEngine, run: Run) -> dict[str, Any]:
    """Rank-1 computed here, from embeddings of the same images, by comparing every probe with every photo."""
    from facetrail.eval.runner import embed_images

    held = set(run.summary["dataset"]["held_out_people"])
    people = sorted(p.name for p in run.tree.iterdir())
    photos = {p: sorted(f for f in (run.tree / p).iterdir()) for p in people}
    gallery = {p: files[:1] for p, files in photos.items() if p not in held}
    probes = [(f, p) for p, files in photos.items() for f in (files if p in held else files[1:])]
    vectors = embed_images(engine, [f for files in photos.values() for f in files]).vectors
    ranks: dict[str, int] = {}
    for path, person in probes:
        if person in held or path not in vectors or not all(f in vectors for f in gallery[person]):
            continue
        best = {p: max(float(vectors[path] @ vectors[f]) for f in files if f in vectors)
                for p, files in gallery.items() if any(f in vectors for f in files)}
        ranks[str(path)] = 1 + sum(score >= best[person] for p, score in best.items() if p != person)
    mated = [str(path) for path, person in probes if person not in held]
    return {"ranks": ranks, "mated": mated, "gallery": gallery,
            "rank1": sum(ranks.get(m) == 1 for m in mated) / len(mated)}


@pytest.mark.models
@needs_data
def test_rank1_matches_brute_force(ident_run: Run, engine: FaceEngine) -> None:
    expected = _brute_force(engine, ident_run)
    assert ident_run.summary["rank1"] == pytest.approx(expected["rank1"], abs=1e-6)
    csv_ranks = {row["path"]: int(row["mate_rank"]) for row in ident_run.probes if row["mate_rank"]}
    assert csv_ranks == expected["ranks"]
    assert ident_run.summary["dataset"]["mated_probes"] == len(expected["mated"])
    assert ident_run.summary["cmc"][0]["rate"] == ident_run.summary["rank1"]


@pytest.mark.models
@needs_data
def test_probe_without_a_face_is_listed_and_a_miss(ident_run: Run) -> None:
    no_face = str(ident_run.tree / "obama" / "zz_no_face.png")
    failures = ident_run.summary["failures"]
    assert [(f["path"], f["role"]) for f in failures["list"]] == [(no_face, "probe")]
    assert failures["list"][0]["reason"].startswith("no face found")
    assert failures["mated_probes_without_face"] == 1
    row = next(r for r in ident_run.probes if r["path"] == no_face)
    assert (row["mated"], row["face"], row["mate_rank"], row["top_person"]) == ("1", "0", "", "")
    mated = ident_run.summary["dataset"]["mated_probes"]
    found = sum(r["mate_rank"] == "1" for r in ident_run.probes)
    assert ident_run.summary["rank1"] == pytest.approx(found / mated)  # the faceless probe is in the denominator
    assert ident_run.summary["rank1"] < 1.0


@pytest.mark.models
@needs_data
def test_groups_report_exactly_the_listed_groups(ident_run: Run) -> None:
    groups = ident_run.summary["groups"]
    assert [g["group"] for g in groups["per_group"]] == sorted(set(GROUPS.values()))
    assert "infers no group" in groups["note"]
    by_label = {g["group"]: g for g in groups["per_group"]}
    threshold = ident_run.summary["operating_threshold"]["threshold"]
    for label, row in by_label.items():
        members = {p for p, g in GROUPS.items() if g == label}
        mine = [r for r in ident_run.probes if r["person"] in members]
        mated = [r for r in mine if r["mated"] == "1"]
        assert row["mated_probes"] == len(mated)
        assert row["non_mated_probes"] == len(mine) - len(mated)
        if mated:  # FNMR from the mate scores of probes.csv (a faceless probe has none: a non-match)
            misses = sum(not r["mate_score"] or float(r["mate_score"]) < threshold for r in mated)
            assert row["fnmr"] == pytest.approx(misses / len(mated), abs=1e-6)
        else:
            assert row["fnmr"] is None and row["fnir"] is None
    assert by_label["site-a"]["fnmr"] > 0  # obama's faceless probe
    assert by_label["site-d"]["people"] == 0 and by_label["site-d"]["fmr"] is None
    assert groups["people_in_file_not_evaluated"] == ["nobody_here"]
    assert set(groups["highest_to_lowest"]) == {"fmr", "fnmr", "fpir", "fnir"}


@pytest.mark.models
@needs_data
def test_det_png_is_a_valid_image(ident_run: Run) -> None:
    png = ident_run.out / "det.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] > 500 and image.size[1] > 300


@pytest.mark.models
@needs_data
def test_non_mated_probes_are_not_in_the_gallery(ident_run: Run) -> None:
    held = ident_run.summary["dataset"]["held_out_people"]
    assert len(held) == 2  # 0.2 of 10 people
    non_mated = [r for r in ident_run.probes if r["mated"] == "0"]
    assert {r["person"] for r in non_mated} == set(held)
    assert ident_run.summary["dataset"]["non_mated_probes"] == len(non_mated)
    assert sum(len(list((ident_run.tree / p).iterdir())) for p in held) == len(non_mated)
    assert all(r["top_person"] not in held for r in ident_run.probes)  # never a candidate: not enrolled
    assert ident_run.summary["dataset"]["enrolled_people"] == 10 - len(held)
    reasons = [f["reason"] for f in ident_run.summary["fnir_at_fpir"]]
    assert all(r and "not enough non-mated probes" in r for r in reasons)


@needs_data
def test_cli_bad_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_set = _write(tmp_path / "set.csv", "path,person,role\na.jpg,ann,enrol\na.jpg,ann,probe\n")
    good = _write(tmp_path / "ok.csv", "path,person,role\na.jpg,ann,enrol\nb.jpg,ann,probe\n")
    cases = [([str(csv_set)], "also an enrolment image"),
             ([str(good), "--enrol", "2"], "folder tree only"),
             ([str(good)], "none of the 2 images"),
             ([str(DATA / "faces"), "--groups", str(tmp_path / "absent.csv")], "no such file"),
             ([str(tmp_path / "missing")], "no such file or folder")]
    for extra, message in cases:
        assert main(["eval", "ident", *extra, "--out", str(tmp_path / "out")]) == 1
        captured = capsys.readouterr().err
        assert message in captured and "Traceback" not in captured, captured
        assert captured.strip().count("\n") == 0, captured
    assert not (tmp_path / "out").exists()


@pytest.mark.models
@needs_data
def test_enrolled_person_without_a_face_has_no_template(tmp_path: Path) -> None:
    faces = DATA / "faces"
    layout = {"obama": [faces / "obama" / "obama.jpg", faces / "obama" / "obama2.jpg"],
              "biden": [faces / "biden" / "biden.jpg", faces / "biden" / "biden2.jpg"],
              "ghost": [DATA / "scenes" / "no_face.png", faces / "obama" / "obama3.jpg"]}
    for person, files in layout.items():
        (tmp_path / "tree" / person).mkdir(parents=True)
        for i, source in enumerate(files):  # the numbered names keep the no-face image first: enrolled
            shutil.copy(source, tmp_path / "tree" / person / f"{i}{source.suffix}")
    json_path = tmp_path / "figures.json"
    assert main(["eval", "ident", str(tmp_path / "tree"), "--non-mated-fraction", "0", "--out",
                 str(tmp_path / "out"), "--json", str(json_path)]) == 0
    summary = json.loads(json_path.read_text())
    assert summary["gallery"]["people_without_template"] == ["ghost"]
    assert summary["gallery"]["people_with_template"] == 2
    assert summary["failures"]["mated_probes_whose_person_has_no_template"] == 1
    assert [(Path(f["path"]).parent.name, f["role"]) for f in summary["failures"]["list"]] == [("ghost", "enrolment")]
    assert summary["rank1"] == pytest.approx(2 / 3)  # ghost's probe cannot be found; the other two are
    assert summary["det"] is None and summary["operating_threshold"]["fpir"] is None


@pytest.mark.models
@needs_data
def test_gallery_without_any_face_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for person in ("a", "b"):
        (tmp_path / "tree" / person).mkdir(parents=True)
        shutil.copy(DATA / "scenes" / "no_face.png", tmp_path / "tree" / person / "0.png")
        shutil.copy(DATA / "faces" / "biden" / "biden.jpg", tmp_path / "tree" / person / "1.jpg")
    assert main(["eval", "ident", str(tmp_path / "tree"), "--non-mated-fraction", "0",
                 "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr().err
    assert "gallery is empty" in captured and "Traceback" not in captured
