"""The FAISS index's own behaviour: exact and approx modes, tombstones, files that validate.

Seeded random unit vectors stand in for a gallery; real ArcFace embeddings of
the players in the sample photo check that real faces find themselves. What
every backend must do (padding, removal, replacement, input checks) is in
test_index_backends.py, run over FAISS and Milvus alike.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from facetrail.gallery.errors import GalleryError, IndexCorruptError, SearchIndexError
from facetrail.gallery.faiss_index import HEADER_BYTES, FaissIndex, _Shortlist, load_index
from facetrail.gallery.index import Index, SearchHits
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from facetrail.vision.samples import sample_image

DIM = 512
F32 = npt.NDArray[np.float32]


def unit(rows: npt.NDArray[np.floating]) -> F32:
    rows = np.asarray(rows, np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, seed: int, dim: int = DIM) -> F32:
    return unit(np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32))


def near(vectors: F32, cosine: float, seed: int) -> F32:
    """Unit vectors at about ``cosine`` to each row (Gaussian noise, then renormalised)."""
    sigma = np.tan(np.arccos(cosine)) / np.sqrt(vectors.shape[1])
    noise = np.random.default_rng(seed).normal(0, sigma, vectors.shape).astype(np.float32)
    return unit(vectors + noise)


def numpy_top(gallery: F32, ids: npt.NDArray[np.int64], queries: F32, k: int) -> npt.NDArray[np.int64]:
    scores = queries @ gallery.T
    return ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


@pytest.fixture(scope="module")
def gallery() -> tuple[npt.NDArray[np.int64], F32]:
    """3,000 unit vectors with sparse, shuffled ids."""
    rng = np.random.default_rng(7)
    ids = rng.choice(10_000_000, 3000, replace=False).astype(np.int64)
    return ids, random_unit(3000, seed=1)


@pytest.fixture(scope="module")
def approx() -> tuple[FaissIndex, npt.NDArray[np.int64], F32]:
    """5,000 vectors with the threshold forced down to 2,000: approx mode, built once."""
    vectors = random_unit(5000, seed=3)
    ids = np.arange(5000, dtype=np.int64) * 10
    index = FaissIndex(DIM, auto_threshold=2000)
    index.add(ids, vectors)
    return index, ids, vectors


# --------------------------------------------------------------------------- exact mode


def test_exact_mode_returns_the_true_neighbours(gallery: tuple[npt.NDArray[np.int64], F32]) -> None:
    ids, vectors = gallery
    index = FaissIndex(DIM)
    index.add(ids, vectors)
    assert index.mode == "exact" and len(index) == 3000 and isinstance(index, Index)
    queries = np.concatenate([near(vectors[:100], 0.5, seed=4), random_unit(100, seed=5)])
    hits = index.search(queries, 10)
    assert isinstance(hits, SearchHits) and hits.ids.shape == (200, 10) and hits.scores.dtype == np.float32
    assert np.array_equal(hits.ids, numpy_top(vectors, ids, queries, 10))
    expected = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(hits.scores, expected, atol=1e-5)
    assert np.array_equal(np.sort(ids), index.ids())


@pytest.mark.models
def test_real_players_find_themselves(engine: FaceEngine, gallery: tuple[npt.NDArray[np.int64], F32]) -> None:
    faces = engine.analyze(load_image(sample_image("players.jpg")))
    players = np.asarray(faces.embeddings.vectors, np.float32)
    assert len(players) >= 5
    ids, vectors = gallery
    player_ids = np.arange(len(players), dtype=np.int64) + 20_000_000
    for threshold in (20_000, 2000):  # exact, then approx (3,000 distractors + players > 2,000)
        index = FaissIndex(DIM, auto_threshold=threshold)
        index.add(ids, vectors)
        index.add(player_ids, players)
        hits = index.search(players, 3)
        assert np.array_equal(hits.ids[:, 0], player_ids), index.mode
        np.testing.assert_allclose(hits.scores[:, 0], 1.0, atol=3e-3)
        assert (hits.scores[:, 1] < 0.5).all()  # different players are far apart
    assert index.mode == "approx"


# --------------------------------------------------------------------------- approx mode


def test_approx_mode_recall_against_exact(approx: tuple[FaissIndex, npt.NDArray[np.int64], F32]) -> None:
    index, ids, vectors = approx
    assert index.mode == "approx"
    queries = np.concatenate([near(vectors[:300], 0.6, seed=11), near(vectors[300:600], 0.35, seed=12),
                              near(vectors[600:900], 0.25, seed=13)])  # the last is near the noise floor
    truth = numpy_top(vectors, ids, queries, 1)[:, 0]
    hits = index.search(queries, 10)
    recall = float(np.mean(hits.ids[:, 0] == truth))
    assert recall >= 0.95, recall
    exact_scores = np.einsum("ij,ij->i", queries, vectors[np.searchsorted(ids, hits.ids[:, 0])])
    np.testing.assert_allclose(hits.scores[:, 0], exact_scores, atol=3e-3)  # re-scored, int8 store
    assert (np.diff(hits.scores, axis=1) <= 0).all()


def test_approx_mode_respects_removal_and_replacement() -> None:
    vectors = random_unit(5000, seed=21)
    ids = np.arange(5000, dtype=np.int64)
    index = FaissIndex(DIM, auto_threshold=2000)
    index.add(ids, vectors)
    assert index.mode == "approx"
    gone = ids[::7]
    assert index.remove(gone) == gone.size and len(index) == 5000 - gone.size
    hits = index.search(vectors[gone[:200]], 10)
    assert not np.isin(hits.ids, gone).any()
    kept = ids[1:200:7]
    assert np.array_equal(index.search(vectors[kept], 1).ids[:, 0], kept)
    new = random_unit(1, seed=22)
    index.add(np.array([3]), new)  # replace a live id, reusing a freed slot
    assert index.search(new, 1).ids[0, 0] == 3 and len(index) == 5000 - gone.size
    index.add(gone, vectors[gone])  # back again
    assert np.array_equal(index.search(vectors[gone[:50]], 1).ids[:, 0], gone[:50])


def test_tombstones_are_skipped_then_compacted() -> None:
    vectors = random_unit(6000, seed=25)
    ids = np.arange(6000, dtype=np.int64)
    index = FaissIndex(DIM, auto_threshold=2000)
    index.add(ids, vectors)
    backend = index._backend
    gone = ids[:900]  # under the compaction bar: tombstones, skipped by the scan
    index.remove(gone)
    assert index._backend is backend and backend.dead == 900
    hits = index.search(vectors[:900], 10)  # the removed vectors themselves
    assert not np.isin(hits.ids, gone).any() and (hits.ids >= 0).all()
    index.remove(ids[900:1500])  # 1,500 of 6,000 slots dead: over 20%, rebuilt
    assert index._backend is not backend and getattr(index._backend, "dead", None) == 0
    assert len(index) == 4500
    assert np.array_equal(index.search(vectors[1500:1600], 1).ids[:, 0], ids[1500:1600])


@pytest.mark.parametrize("threshold,shards", [(20_000, 1), (1000, 1), (1000, 2)],
                         ids=["exact", "approx", "approx-2-shards"])
def test_random_operations_agree_with_a_dict(tmp_path: Path, threshold: int, shards: int) -> None:
    """Adds, replacements, removals and a save/load in random order, checked against a plain dict."""
    rng = np.random.default_rng(threshold + shards)
    pool = random_unit(4000, seed=81)
    index = FaissIndex(DIM, auto_threshold=threshold, shards=shards)
    index.add(np.arange(1200), pool[:1200])
    model = dict(enumerate(range(1200)))  # id -> row of pool
    modes = {index.mode}
    for step in range(120):
        ids = rng.choice(2500, int(rng.integers(1, 60)), replace=False)
        if rng.random() < 0.55:
            rows = rng.choice(4000, ids.size, replace=False)
            index.add(ids, pool[rows])
            model.update(zip(ids.tolist(), rows.tolist(), strict=True))
        else:
            assert index.remove(ids) == sum(i in model for i in ids.tolist())
            for i in ids.tolist():
                model.pop(i, None)
        if step == 60:
            index.save(tmp_path / "mid.ftidx")
            index = load_index(tmp_path / "mid.ftidx", DIM, shards=shards)
        if step % 20 == 19:
            modes.add(index.mode)
            live = np.array(sorted(model), np.int64)
            assert np.array_equal(index.ids(), live) and len(index) == live.size
            rows = [model[i] for i in live.tolist()]
            hits = index.search(pool[rows], 5)
            assert [model.get(int(i)) for i in hits.ids[:, 0]] == rows, index.mode  # itself, or a twin
            assert np.isin(hits.ids[hits.ids >= 0], live).all()  # nothing removed comes back
    assert ("approx" in modes) == (threshold < 1200)


def test_shrinking_goes_back_to_exact_and_rebuild_keeps_results() -> None:
    vectors = random_unit(2500, seed=31)
    ids = np.arange(2500, dtype=np.int64)
    index = FaissIndex(DIM, auto_threshold=2000)
    index.add(ids, vectors)
    assert index.mode == "approx"
    index.rebuild()
    assert index.mode == "approx" and np.array_equal(index.search(vectors[:20], 1).ids[:, 0], ids[:20])
    index.remove(ids[:1600])  # 900 left, under half the threshold
    assert index.mode == "exact" and len(index) == 900
    assert np.array_equal(index.search(vectors[1600:1700], 1).ids[:, 0], ids[1600:1700])


def test_reserve_sizes_the_store_once_and_changes_no_result() -> None:
    vectors = random_unit(3000, seed=35)
    ids = np.arange(3000, dtype=np.int64)
    plain, reserved = FaissIndex(DIM, auto_threshold=1000), FaissIndex(DIM, auto_threshold=1000)
    reserved.reserve(10_000)
    for index in (plain, reserved):
        index.add(ids[:1500], vectors[:1500])
        index.add(ids[1500:], vectors[1500:])
    assert reserved._backend.store.shape[0] == 10_000  # sized once, never copied
    queries = near(vectors[:100], 0.5, seed=36)
    a, b = plain.search(queries, 10), reserved.search(queries, 10)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)


def test_retraining_streams_from_the_int8_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Growing past RETRAIN_FACTOR x the trained size retrains without decoding every vector at once."""
    from facetrail.gallery import faiss_index

    def no_full_export(self: object) -> None:
        raise AssertionError("an approx-to-approx rebuild must not export every vector")

    monkeypatch.setattr(faiss_index._Shortlist, "export", no_full_export)
    vectors = random_unit(11_000, seed=37)
    ids = np.arange(11_000, dtype=np.int64)
    index = FaissIndex(DIM, auto_threshold=1000)
    index.add(ids[:1200], vectors[:1200])
    first = index._backend
    assert first.trained_size == 1200
    index.remove(ids[:100])  # a tombstone that the rebuild drops
    index.add(ids[1200:], vectors[1200:])  # 10,900 > 8 x 1,200: retrained
    assert index._backend is not first and index._backend.trained_size == 10_900
    assert index._backend.dead == 0 and len(index) == 10_900
    assert np.array_equal(index.search(vectors[100:400], 1).ids[:, 0], ids[100:400])
    assert not np.isin(index.search(vectors[:100], 10).ids, ids[:100]).any()


# --------------------------------------------------------------------------- coarse cells (nlist > 1)


def clustered_unit(n: int, centres: int, seed: int) -> F32:
    """Unit vectors around ``centres`` random directions (cosine ~0.5 to their centre): a gallery with structure."""
    rng = np.random.default_rng(seed)
    middle = random_unit(centres, seed=seed + 1)
    return near(middle[rng.integers(0, centres, n)], 0.5, seed=seed + 2)


def test_cells_scan_the_nearest_cells_and_keep_exact_deletes(tmp_path: Path) -> None:
    vectors = clustered_unit(6000, 40, seed=61)
    ids = np.arange(6000, dtype=np.int64) * 2
    index = FaissIndex(DIM, auto_threshold=2000, nlist=16, nprobe=4, shards=2)
    index.add(ids, vectors)
    backend = index._backend
    assert index.mode == "approx" and backend.nlist == 16
    queries = near(vectors[:300], 0.6, seed=62)
    truth = numpy_top(vectors, ids, queries, 1)[:, 0]
    hits = index.search(queries, 10)
    assert float(np.mean(hits.ids[:, 0] == truth)) >= 0.95
    assert (np.diff(hits.scores, axis=1) <= 0).all()
    # every cell probed: the same candidates as the flat scan gets, so recall cannot be lower
    everything = FaissIndex(DIM, auto_threshold=2000, nlist=16, nprobe=16)
    everything.add(ids, vectors)
    assert float(np.mean(everything.search(queries, 1).ids[:, 0] == truth)) >= 0.95
    gone = truth[:50]
    assert index.remove(gone) == np.unique(gone).size
    assert not np.isin(index.search(queries[:50], 10).ids, gone).any()
    path = tmp_path / "cells.ftidx"
    index.save(path)
    loaded = load_index(path, DIM)
    assert loaded.settings.nlist == 16 and loaded.settings.nprobe == 4
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    assert np.array_equal(before.ids, after.ids) and np.array_equal(before.scores, after.scores)
    with pytest.raises(IndexCorruptError, match="IVF1 PQ fast scan"):
        load_index(path, DIM, nlist=1)  # a file whose cells do not match the settings is refused


def test_fewer_sub_quantizers_still_find_the_neighbours_and_round_trip(tmp_path: Path) -> None:
    vectors = random_unit(4000, seed=65)
    ids = np.arange(4000, dtype=np.int64)
    index = FaissIndex(DIM, auto_threshold=2000, pq_m=16, shortlist=512)
    index.add(ids, vectors)
    assert index.mode == "approx" and index._backend.pq_m == 16
    queries = near(vectors[:300], 0.5, seed=66)
    truth = numpy_top(vectors, ids, queries, 1)[:, 0]
    hits = index.search(queries, 10)
    assert float(np.mean(hits.ids[:, 0] == truth)) >= 0.95
    index.save(tmp_path / "pq16.ftidx")
    loaded = load_index(tmp_path / "pq16.ftidx", DIM)
    assert loaded.settings.pq_m == 16 and np.array_equal(loaded.search(queries, 10).ids, hits.ids)
    _rewrite_header(tmp_path / "pq16.ftidx", {"pq_m": 32})  # a header that does not describe its codes
    with pytest.raises(IndexCorruptError, match="sub-quantizers"):
        load_index(tmp_path / "pq16.ftidx", DIM)


def test_codes_are_made_of_half_the_principal_components_and_older_files_still_load(tmp_path: Path) -> None:
    # Faces vary along fewer directions than they have dimensions: most of the variance in the first 64 here.
    spread = np.where(np.arange(DIM) < 64, 1.0, 0.15).astype(np.float32)
    vectors = unit(np.random.default_rng(81).standard_normal((4000, DIM), dtype=np.float32) * spread)
    ids = np.arange(4000, dtype=np.int64)
    queries = near(vectors[:300], 0.5, seed=82)
    truth = numpy_top(vectors, ids, queries, 1)[:, 0]

    index = FaissIndex(DIM, auto_threshold=2000)
    index.add(ids, vectors)
    backend = index._backend
    assert isinstance(backend, _Shortlist) and backend.pca_dim == DIM // 2
    assert faiss.extract_index_ivf(backend.shards[0]).d == DIM // 2  # the codes' space, not the vectors'
    hits = index.search(queries, 10)
    assert float(np.mean(hits.ids[:, 0] == truth)) >= 0.95
    np.testing.assert_allclose(hits.scores[:, 0], np.einsum("ij,ij->i", queries, vectors[hits.ids[:, 0]]),
                               atol=3e-3)  # re-scored on the whole vector
    path = tmp_path / "pca.ftidx"
    index.save(path)
    loaded = load_index(path, DIM)
    assert loaded.settings.pca_dim == 0 and np.array_equal(loaded.search(queries, 10).ids, hits.ids)

    # A file written before the transform existed: codes of the plain vectors, no pca keys in its header.
    plain = FaissIndex(DIM, auto_threshold=2000, pca_dim=None)
    plain.add(ids, vectors)
    plain.save(path)
    _rewrite_header(path, {}, drop=("pca_dim", "pca_out"))
    older = load_index(path, DIM)
    assert isinstance(older._backend, _Shortlist) and older._backend.pca_dim == 0
    assert np.array_equal(older.search(queries, 10).ids, plain.search(queries, 10).ids)
    older.rebuild()  # the next rebuild makes the codes the way this version does
    assert isinstance(older._backend, _Shortlist) and older._backend.pca_dim == DIM // 2
    assert float(np.mean(older.search(queries, 10).ids[:, 0] == truth)) >= 0.95

    index.save(path)
    _rewrite_header(path, {"pca_dim": DIM * 2})  # settings that cannot fit these vectors
    with pytest.raises(IndexCorruptError, match="pca_dim"):
        load_index(path, DIM)
    index.save(path)
    _rewrite_header(path, {"pca_out": 0})  # a header that does not describe its codes
    with pytest.raises(IndexCorruptError, match="dimensions"):
        load_index(path, DIM)
    with pytest.raises(ValueError, match="pca_dim"):
        FaissIndex(DIM, pca_dim=-1)
    with pytest.raises(ValueError, match="pca_dim"):
        FaissIndex(DIM, pca_dim=DIM + 1)  # refused when made, not when the gallery first grows past exact mode


def test_cell_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="nlist and nprobe"):
        FaissIndex(DIM, nlist=0)
    with pytest.raises(ValueError, match="nlist and nprobe"):
        FaissIndex(DIM, nprobe=0)
    with pytest.raises(ValueError, match="pq_m"):
        FaissIndex(DIM, pq_m=-1)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("threshold", [20_000, 2000], ids=["exact", "approx"])
def test_save_load_round_trip(tmp_path: Path, threshold: int) -> None:
    vectors = random_unit(3000, seed=41)
    ids = np.arange(3000, dtype=np.int64) * 3
    index = FaissIndex(DIM, auto_threshold=threshold)
    index.add(ids, vectors)
    index.remove(ids[:10])  # leaves free slots in approx mode
    queries = near(vectors[:200], 0.5, seed=42)
    before = index.search(queries, 10)
    path = tmp_path / "gallery.ftidx"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.ftidx"]  # no temp file left behind
    loaded = load_index(path, DIM)
    after = loaded.search(queries, 10)
    assert loaded.mode == index.mode and len(loaded) == len(index)
    assert np.array_equal(before.ids, after.ids) and np.array_equal(before.scores, after.scores)
    assert np.array_equal(loaded.ids(), index.ids())
    loaded.add(np.array([1]), vectors[:1])  # still usable: mutations after a load
    assert loaded.search(vectors[:1], 1).ids[0, 0] in (0, 1)
    index.add(np.array([2]), vectors[1:2])
    index.save(path)  # overwriting is atomic too
    assert len(load_index(path, DIM)) == len(index)


def _saved(tmp_path: Path, n: int = 1500) -> Path:
    index = FaissIndex(DIM, auto_threshold=1000)
    index.add(np.arange(n), random_unit(n, seed=51))
    path = tmp_path / "good.ftidx"
    index.save(path)
    return path


def _rewrite_header(path: Path, change: dict[str, object], drop: tuple[str, ...] = ()) -> None:
    raw = bytearray(path.read_bytes())
    length = struct.unpack_from("<I", raw, 12)[0]
    header = {k: v for k, v in json.loads(raw[16:16 + length]).items() if k not in drop} | change
    blob = json.dumps(header).encode()
    raw[12:16] = struct.pack("<I", len(blob))
    raw[16:HEADER_BYTES] = blob.ljust(HEADER_BYTES - 16, b"\x00")
    path.write_bytes(bytes(raw))


CORRUPTIONS = {
    "missing": lambda p: p.unlink(),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "truncated-header": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "appended": lambda p: p.write_bytes(p.read_bytes() + b"x"),
    "garbage": lambda p: p.write_bytes(os.urandom(20_000)),
    "flipped-byte": lambda p: p.write_bytes(_flip(p.read_bytes(), HEADER_BYTES + 5000)),
    "bad-json": lambda p: p.write_bytes(_flip(p.read_bytes(), 20)),
    "bad-version": lambda p: p.write_bytes(p.read_bytes()[:8] + struct.pack("<I", 99) + p.read_bytes()[12:]),
    "wrong-count": lambda p: _rewrite_header(p, {"count": 7}),
    "wrong-mode": lambda p: _rewrite_header(p, {"mode": "exact"}),
    "a-folder": lambda p: (p.unlink(), p.mkdir()),
}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_damaged_files_raise_index_corrupt(tmp_path: Path, damage: str) -> None:
    path = _saved(tmp_path)
    CORRUPTIONS[damage](path)
    with pytest.raises(IndexCorruptError) as caught:
        load_index(path, DIM)
    assert str(path) in str(caught.value) and "rebuild" in str(caught.value)
    assert isinstance(caught.value, SearchIndexError) and isinstance(caught.value, GalleryError)


def test_wrong_dimension_file_is_corrupt(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with pytest.raises(IndexCorruptError, match="512-d vectors, 128-d expected"):
        load_index(path, 128)


# --------------------------------------------------------------------------- threads


def test_concurrent_searches_and_mutations() -> None:
    vectors = random_unit(3000, seed=71)
    ids = np.arange(3000, dtype=np.int64)
    index = FaissIndex(DIM, auto_threshold=2000)
    index.add(ids[:2500], vectors[:2500])
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for i in range(60):
                hits = index.search(vectors[i * 10:(i + 1) * 10], 5)
                assert hits.ids.shape == (10, 5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for start in range(2500, 3000, 50):
        index.add(ids[start:start + 50], vectors[start:start + 50])
        index.remove(ids[start - 2500:start - 2450])
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(index) == 2500
    assert not np.isin(index.search(vectors[:500], 10).ids, ids[:500]).any()
