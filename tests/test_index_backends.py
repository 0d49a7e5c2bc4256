"""Every index backend keeps the ``Index`` protocol: FAISS in memory, and Milvus (Milvus Lite on a real folder).

The same tests run over FAISS, a Milvus FLAT collection (exact) and a Milvus HNSW one (approximate, flushed so
that the HNSW graph is what is searched). FAISS-only behaviour (approx mode, files) is in test_index.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facetrail.gallery.errors import DimensionMismatchError, GalleryError
from facetrail.gallery.faiss_index import FaissIndex
from facetrail.gallery.index import Index, SearchHits
from facetrail.gallery.milvus_index import MilvusIndex, MilvusSettings, collection_name
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import load_image
from facetrail.vision.samples import sample_image
from test_index import DIM, F32, near, numpy_top, random_unit

BACKENDS = ["faiss", "milvus-flat", "milvus-hnsw"]
Make = Callable[..., Index]


def need_milvus() -> None:
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'facetrail[cluster]')")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'facetrail[cluster]')")


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Makes empty indexes of one backend (Milvus: collections in one Milvus Lite folder under tmp_path)."""
    made: list[MilvusIndex] = []

    def new(dim: int = DIM) -> Index:
        if request.param == "faiss":
            return FaissIndex(dim)
        need_milvus()
        kind = "FLAT" if request.param == "milvus-flat" else "HNSW"
        index = MilvusIndex(dim, MilvusSettings(uri=str(tmp_path / "milvus.db"), index_type=kind),
                            collection=f"test{len(made)}")
        made.append(index)
        return index

    new.exact = request.param != "milvus-hnsw"  # type: ignore[attr-defined]
    yield new
    for index in made:
        index.close()


def settle(index: Index) -> None:
    """Milvus: flush, so searches go through the built index (HNSW) rather than the unflushed buffer."""
    if isinstance(index, MilvusIndex):
        index.flush()


@pytest.fixture(scope="module")
def gallery() -> tuple[npt.NDArray[np.int64], F32]:
    """2,000 unit vectors with sparse, shuffled ids."""
    rng = np.random.default_rng(7)
    return rng.choice(10_000_000, 2000, replace=False).astype(np.int64), random_unit(2000, seed=1)


def test_true_neighbours(make: Make, gallery: tuple[npt.NDArray[np.int64], F32]) -> None:
    ids, vectors = gallery
    index = make()
    index.add(ids, vectors)
    settle(index)
    assert len(index) == 2000 and isinstance(index, Index) and np.array_equal(index.ids(), np.sort(ids))
    queries = np.concatenate([near(vectors[:100], 0.5, seed=4), random_unit(50, seed=5)])
    hits = index.search(queries, 10)
    assert isinstance(hits, SearchHits) and hits.ids.shape == (150, 10) and hits.scores.dtype == np.float32
    truth = numpy_top(vectors, ids, queries, 10)
    expected = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10]
    if make.exact:  # type: ignore[attr-defined]
        assert np.array_equal(hits.ids, truth)
        np.testing.assert_allclose(hits.scores, expected, atol=1e-5)
    else:  # HNSW: the planted neighbours are found, the random queries' top 10 mostly
        assert np.array_equal(hits.ids[:100, 0], truth[:100, 0])
        recall = np.mean([len(set(h) & set(t)) / 10 for h, t in zip(hits.ids, truth, strict=True)])
        assert recall >= 0.9, recall
        found = hits.ids[:100, 0] == truth[:100, 0]
        np.testing.assert_allclose(hits.scores[:100, 0][found], expected[:100, 0][found], atol=1e-5)


def test_fewer_than_k_are_padded(make: Make) -> None:
    index = make()
    empty = index.search(random_unit(2, seed=0), 3)
    assert (empty.ids == -1).all() and np.isneginf(empty.scores).all()
    index.add(np.array([5, 9]), random_unit(2, seed=1))
    hits = index.search(random_unit(1, seed=2)[0], 4)  # one (dim,) query is m = 1
    assert hits.ids.shape == (1, 4)
    assert sorted(hits.ids[0, :2].tolist()) == [5, 9] and (hits.ids[0, 2:] == -1).all()
    assert np.isfinite(hits.scores[0, :2]).all() and np.isneginf(hits.scores[0, 2:]).all()


def test_removed_ids_are_never_returned(make: Make, gallery: tuple[npt.NDArray[np.int64], F32]) -> None:
    ids, vectors = gallery
    index = make()
    index.add(ids, vectors)
    settle(index)
    gone = ids[:50]
    assert index.remove(np.concatenate([gone, [123_456_789_000]])) == 50  # an absent id is ignored
    assert len(index) == 1950 and int(gone[0]) not in index and int(ids[60]) in index
    hits = index.search(vectors[:50], 5)  # the removed vectors themselves
    assert not np.isin(hits.ids, gone).any()
    assert index.remove(gone) == 0
    assert not np.isin(index.ids(), gone).any()


def test_re_adding_an_id_replaces_its_vector(make: Make, gallery: tuple[npt.NDArray[np.int64], F32]) -> None:
    ids, vectors = gallery
    index = make()
    index.add(ids[:100], vectors[:100])
    settle(index)
    replacement = random_unit(1, seed=99)
    index.add(ids[:1], replacement)
    assert len(index) == 100
    hit = index.search(replacement, 1)
    assert hit.ids[0, 0] == ids[0] and hit.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    old = index.search(vectors[:1], 2)
    assert ids[0] not in old.ids[0] or old.scores[0, list(old.ids[0]).index(ids[0])] < 0.5


def test_random_operations_agree_with_a_dict(make: Make) -> None:
    """Adds, replacements and removals in random order, checked against a plain dict after each step."""
    rng = np.random.default_rng(11)
    pool = random_unit(720, seed=12)  # each add takes fresh rows: no two ids ever share a vector
    taken = 0
    index = make()
    model: dict[int, int] = {}  # id -> row of pool
    for step in range(12):
        chosen = rng.choice(400, size=int(rng.integers(1, 60)), replace=False)
        if step % 3 == 2:
            expected = sum(int(i) in model for i in chosen)
            assert index.remove(chosen.astype(np.int64)) == expected
            for i in chosen:
                model.pop(int(i), None)
        else:
            rows = np.arange(taken, taken + chosen.size)
            taken += chosen.size
            index.add(chosen.astype(np.int64), pool[rows])
            model.update(zip(chosen.tolist(), rows.tolist(), strict=True))
        if step % 4 == 3:
            settle(index)
        assert len(index) == len(model)
        assert index.ids().tolist() == sorted(model)
        present = np.asarray(sorted(model), np.int64)
        hits = index.search(pool[[model[int(i)] for i in present]], 1)
        assert np.array_equal(hits.ids[:, 0], present)  # every vector finds its own id, removed ones never
        np.testing.assert_allclose(hits.scores[:, 0], 1.0, atol=1e-5)


def test_dimension_mismatch_is_clear(make: Make) -> None:
    index = make()
    with pytest.raises(DimensionMismatchError, match="128 dimensions but the index holds 512-d"):
        index.add(np.array([1]), random_unit(1, seed=0, dim=128))
    index.add(np.array([1]), random_unit(1, seed=0))
    with pytest.raises(DimensionMismatchError):
        index.search(random_unit(2, seed=1, dim=128), 1)
    assert issubclass(DimensionMismatchError, ValueError)


def test_inputs_are_validated_and_coerced(make: Make) -> None:
    index = make()
    vectors = random_unit(4, seed=61)
    bad = vectors.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(np.arange(4), bad)
    with pytest.raises(ValueError, match="not L2-normalised"):
        index.add(np.arange(4), vectors * 2)
    with pytest.raises(ValueError, match="unique"):
        index.add(np.array([1, 1, 2, 3]), vectors)
    with pytest.raises(ValueError, match="≥ 0"):
        index.add(np.array([-1, 1, 2, 3]), vectors)
    with pytest.raises(ValueError, match="4 vectors"):
        index.add(np.arange(3), vectors)
    with pytest.raises(ValueError, match="k must be"):
        index.search(vectors, 0)
    assert len(index) == 0
    index.add(np.arange(4).astype(np.int32), np.asfortranarray(vectors.astype(np.float64)))  # coerced
    assert np.array_equal(index.search(vectors, 1).ids[:, 0], np.arange(4))
    assert "3" not in index and -1 not in index and 3 in index  # type: ignore[operator]


def test_concurrent_searches_and_mutations(make: Make) -> None:
    vectors = random_unit(800, seed=71)
    ids = np.arange(800, dtype=np.int64)
    index = make()
    index.add(ids[:600], vectors[:600])
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for i in range(20):
                hits = index.search(vectors[i * 10:(i + 1) * 10], 5)
                assert hits.ids.shape == (10, 5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for start in range(600, 800, 50):
        index.add(ids[start:start + 50], vectors[start:start + 50])
        index.remove(ids[start - 600:start - 550])
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(index) == 600
    assert not np.isin(index.search(vectors[:200], 10).ids, ids[:200]).any()


@pytest.mark.models
def test_real_players_find_themselves(make: Make, engine: FaceEngine,
                                      gallery: tuple[npt.NDArray[np.int64], F32]) -> None:
    faces = engine.analyze(load_image(sample_image("players.jpg")))
    players = np.asarray(faces.embeddings.vectors, np.float32)
    assert len(players) >= 5
    ids, vectors = gallery
    player_ids = np.arange(len(players), dtype=np.int64) + 20_000_000
    index = make()
    index.add(ids, vectors)
    index.add(player_ids, players)
    settle(index)
    hits = index.search(players, 3)
    assert np.array_equal(hits.ids[:, 0], player_ids)
    np.testing.assert_allclose(hits.scores[:, 0], 1.0, atol=1e-5)
    assert (hits.scores[:, 1] < 0.5).all()  # different players are far apart


# --------------------------------------------------------------------------- Milvus only


def lite(tmp_path: Path, **settings: object) -> MilvusSettings:
    need_milvus()
    return MilvusSettings(uri=str(tmp_path / "milvus.db"), **settings)  # type: ignore[arg-type]


def test_milvus_collection_persists_and_reopens(tmp_path: Path) -> None:
    vectors = random_unit(300, seed=81)
    index = MilvusIndex(DIM, lite(tmp_path), collection="keep")
    index.add(np.arange(300) * 3, vectors)
    index.remove(np.array([0, 3]))
    index.close()
    again = MilvusIndex(DIM, lite(tmp_path), collection="keep")
    try:
        assert len(again) == 298 and 0 not in again and 6 in again
        assert again.search(vectors[5], 1).ids[0, 0] == 15
    finally:
        again.close()


def test_milvus_auto_index_type_follows_the_size_on_open(tmp_path: Path) -> None:
    vectors = random_unit(400, seed=91)
    settings = lite(tmp_path, exact_max=300)
    index = MilvusIndex(DIM, settings, collection="grow")
    assert index.index_type == "FLAT"
    index.add(np.arange(400), vectors)
    index.close()
    grown = MilvusIndex(DIM, settings, collection="grow")  # 400 > exact_max: re-indexed as HNSW
    try:
        assert grown.index_type == "HNSW"
        assert grown._client.describe_index(grown.name, "vector")["index_type"] == "HNSW"
        assert np.array_equal(grown.search(vectors[:20], 1).ids[:, 0], np.arange(20))
    finally:
        grown.close()


def test_milvus_lite_refuses_types_it_cannot_build(tmp_path: Path) -> None:
    for kind in ("IVF_PQ", "DISKANN"):
        with pytest.raises(GalleryError, match=f"Milvus Lite cannot build {kind}"):
            MilvusIndex(DIM, lite(tmp_path, index_type=kind), collection="nope")


def test_milvus_collection_of_another_dimension_is_refused(tmp_path: Path) -> None:
    MilvusIndex(DIM, lite(tmp_path), collection="mixed").close()
    with pytest.raises(DimensionMismatchError, match="holds 512-d vectors, 128-d expected"):
        MilvusIndex(128, lite(tmp_path), collection="mixed")
    assert collection_name("facetrail", "templates", "buffalo_l/w600k_r50.onnx") == \
        "facetrail_templates_buffalo_l_w600k_r50_onnx"


def test_milvus_search_brings_back_no_vectors(tmp_path: Path) -> None:
    index = MilvusIndex(DIM, lite(tmp_path), collection="quiet")
    answers: list[object] = []
    real_search = index._client.search

    def search(*args: object, **kwargs: object) -> object:  # the real call, its answer kept for a look
        answers.append(real_search(*args, **kwargs))
        return answers[-1]

    try:
        index.add(np.arange(3), random_unit(3, seed=5))
        index._client.search = search
        assert index.search(random_unit(1, seed=6), 3).ids.shape == (1, 3)
        hits = answers[0][0]  # type: ignore[index]
        assert len(hits) == 3 and all(set(hit["entity"]) <= {"id"} for hit in hits)  # no vector came back
    finally:
        index.close()


def test_milvus_lite_in_use_by_another_process_is_one_clear_error(tmp_path: Path) -> None:
    MilvusIndex(DIM, lite(tmp_path), collection="busy").close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from facetrail.gallery.milvus_index import MilvusIndex, MilvusSettings\n"
        f"MilvusIndex({DIM}, MilvusSettings(uri=sys.argv[1]), collection='busy')\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"), str(tmp_path / "milvus.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(GalleryError, match="another facetrail process"):
            MilvusIndex(DIM, lite(tmp_path), collection="busy")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_milvus_ids_past_one_query_are_read_in_batches(tmp_path: Path) -> None:
    count = 17_000  # more than Milvus returns from one query (16,384)
    index = MilvusIndex(8, lite(tmp_path), collection="many")
    try:
        ids = np.random.default_rng(5).choice(10**9, count, replace=False).astype(np.int64)
        index.add(ids, random_unit(count, seed=6, dim=8))
        assert len(index) == count and np.array_equal(index.ids(), np.sort(ids))
    finally:
        index.close()


def test_an_unreachable_milvus_server_is_one_clear_error() -> None:
    need_milvus()
    with pytest.raises(GalleryError, match=r"cannot open Milvus at http://127\.0\.0\.1:9: "):
        MilvusIndex(DIM, MilvusSettings(uri="http://127.0.0.1:9", timeout_s=2), collection="away")
