"""The search index: exact below a size, compressed (fast-scan PQ + exact re-rank) above it, and the gallery
on top of both. EXACT_LIMIT is lowered so that the compressed index is exercised on small collections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facerec.gallery import FaceRecord, Gallery, GalleryMeta
from facerec.gallery import index as index_module
from facerec.gallery.index import VectorIndex, kind_for

DIM = 64
LIMIT = 1_000


@pytest.fixture(autouse=True)
def small_limit(monkeypatch):
    monkeypatch.setattr(index_module, "EXACT_LIMIT", LIMIT)


def faces(people: int, per_person: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Face-like unit vectors: each person a random direction, each face that direction plus noise
    (same-person cosine about 0.7, as real embeddings), and person ids. Seed 0 and seed 1 share the
    people's directions: seed 1 gives new photos of the same people."""
    centres = np.random.default_rng(0).normal(size=(people, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owner = np.repeat(np.arange(people), per_person)
    noise = np.random.default_rng(100 + seed).normal(size=(len(owner), DIM)) * np.sqrt(0.45 / DIM)
    vectors = centres[owner] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), owner


def exact_top1(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return ids[np.argmax(queries @ vectors.T, axis=1)]


def test_kind_follows_size_and_dimension():
    assert kind_for(LIMIT - 1, DIM) == "exact"
    assert kind_for(LIMIT, DIM) == "compressed"
    assert kind_for(10 * LIMIT, 100) == "exact"  # the quantiser needs a dimension it can split in 32


def test_compressed_search_matches_exact_search():
    vectors, _ = faces(600, 5)
    ids = np.arange(len(vectors), dtype=np.int64) * 7 + 3  # our ids, not positions
    index = VectorIndex.build(DIM, ids, vectors)
    assert index.kind == "compressed" and index.ntotal == len(ids)
    queries, _ = faces(600, 1, seed=1)  # new photos of the same people
    queries = queries[:300]
    sims, found = index.search(queries, 5)
    recall = np.mean(found[:, 0] == exact_top1(vectors, ids, queries))
    assert recall >= 0.99
    # Similarities are exact inner products of the vectors returned, best first.
    by_id = dict(zip(ids.tolist(), vectors))
    for row_sims, row_ids, q in zip(sims, found, queries):
        assert np.allclose(row_sims, [by_id[int(i)] @ q for i in row_ids], atol=1e-5)
        assert np.all(np.diff(row_sims) <= 1e-6)


def test_growing_and_shrinking_across_the_limit_keeps_every_vector():
    vectors, _ = faces(300, 4)
    ids = np.arange(len(vectors), dtype=np.int64) + 100
    index = VectorIndex.build(DIM, ids[:900], vectors[:900])
    assert index.kind == "exact"
    index.add(ids[900:], vectors[900:])
    assert index.kind == "compressed"
    got_ids, got_vectors = index.contents()
    assert got_ids.tolist() == ids.tolist() and np.array_equal(got_vectors, vectors)
    gone = ids[::3]
    index.remove(gone)
    assert index.kind == "exact" and index.ntotal == len(ids) - len(gone)
    _, found = index.search(vectors, 10)
    assert not np.isin(found, gone).any()


def test_remove_from_a_compressed_index():
    vectors, _ = faces(400, 5)
    ids = np.arange(len(vectors), dtype=np.int64)
    index = VectorIndex.build(DIM, ids, vectors)
    index.remove(ids[:50])
    assert index.kind == "compressed" and index.ntotal == len(ids) - 50
    _, found = index.search(vectors[:50], 20)
    assert not np.isin(found, ids[:50]).any()


def test_round_trip_through_a_file(tmp_path):
    vectors, _ = faces(300, 5)
    ids = np.arange(len(vectors), dtype=np.int64)
    index = VectorIndex.build(DIM, ids, vectors)
    index.write(tmp_path / "i.faiss")
    again = VectorIndex.read(tmp_path / "i.faiss")
    assert again.kind == "compressed" and again.ntotal == index.ntotal
    assert [np.array_equal(a, b) for a, b in zip(again.search(vectors[:20], 5), index.search(vectors[:20], 5))] == [
        True,
        True,
    ]
    (tmp_path / "bad.faiss").write_bytes(b"\x00" * 100)
    assert VectorIndex.read(tmp_path / "bad.faiss") is None


def test_a_large_gallery_uses_the_compressed_index_and_answers_like_an_exact_one(tmp_path):
    vectors, owner = faces(300, 5)
    records = [FaceRecord(f"p{o:03d}", f"/p/{i}.jpg", f"h{i}", (0, 0, 1, 1), 0.99) for i, o in enumerate(owner)]
    meta = GalleryMeta.new("vggface2", DIM, Path("/w.pt"), "0" * 64)
    with Gallery.open_for_write(tmp_path / "g", create=meta) as g:
        g.add(records[:800], vectors[:800])
        assert g.index_kind.startswith("exact")
        g.add(records[800:], vectors[800:])
        assert g.index_kind.startswith("compressed")
    queries, _ = faces(300, 1, seed=1)
    centres = np.stack([vectors[owner == p].sum(0) for p in range(300)])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with Gallery.open(tmp_path / "g") as g:
        assert g.index_kind.startswith("compressed") and g.count == len(vectors)
        nearest = [h[0].name for h in g.search(queries, top_k=1, rule="nearest")]
        by_centroid = g.search(queries, top_k=2)
    assert np.mean([n == f"p{owner[i]:03d}" for n, i in zip(nearest, np.argmax(queries @ vectors.T, axis=1))]) >= 0.99
    exact = np.argmax(queries @ centres.T, axis=1)
    assert np.mean([h[0].name == f"p{e:03d}" for h, e in zip(by_centroid, exact)]) >= 0.99
    assert all(
        h[0].similarity == pytest.approx(float(queries[i] @ centres[exact[i]]), abs=1e-4)
        for i, h in enumerate(by_centroid)
        if h[0].name == f"p{exact[i]:03d}"
    )
    with Gallery.open_for_write(tmp_path / "g") as g:
        assert g.remove_person("p000") == 5
    with Gallery.open(tmp_path / "g") as g:
        assert g.count == len(vectors) - 5 and "p000" not in {
            c.name for c in g.search(queries[:1], top_k=3, rule="nearest")[0]
        }


def test_an_exact_index_saved_for_a_large_gallery_is_upgraded_on_open(tmp_path, monkeypatch):
    vectors, owner = faces(240, 5)
    records = [FaceRecord(f"p{o}", f"/p/{i}.jpg", f"h{i}", (0, 0, 1, 1), 0.99) for i, o in enumerate(owner)]
    meta = GalleryMeta.new("vggface2", DIM, Path("/w.pt"), "0" * 64)
    monkeypatch.setattr(index_module, "EXACT_LIMIT", 10 * LIMIT)  # an older release: exact at this size
    with Gallery.open_for_write(tmp_path / "g", create=meta) as g:
        g.add(records, vectors)
    monkeypatch.setattr(index_module, "EXACT_LIMIT", LIMIT)
    with Gallery.open(tmp_path / "g") as g:  # a reader converts in memory only
        assert g.index_kind.startswith("compressed")
    assert VectorIndex.read(next((tmp_path / "g").glob("index-*.faiss"))).kind == "exact"
    with Gallery.open_for_write(tmp_path / "g") as g:  # a writer saves the conversion
        assert g.index_kind.startswith("compressed")
    assert VectorIndex.read(next((tmp_path / "g").glob("index-*.faiss"))).kind == "compressed"
