"""Nearest-neighbour search over unit vectors (cosine similarity), the FAISS index type chosen by size.

Up to EXACT_LIMIT vectors the search is exact (IndexFlatIP): a query costs N*dim multiply-adds, a few
milliseconds at 2*10^4 faces on two cores. Beyond that, a 4-bit product-quantised fast scan (PQ32x4fs,
16 bytes per vector) reads every vector's code to pick candidates, and their exact inner products re-rank
them (IndexRefineFlat). Because it still visits every vector, its recall does not depend on how the
vectors cluster, unlike a cell-based IVF index: on synthetic faces at 10^6 x 512, IVF reached 0.87
recall@1 at 64 of 4,000 cells and 0.975 only at 256, with a p99 of 12 ms, against 1.000 and 2.5 ms for
this one (bench/scale.py prints both). Because the final similarities are exact, an approximate miss can
only lower a similarity, never raise one: approximation may lose a match but cannot invent one.

Measured in bench/scale.py; the README has the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

EXACT_LIMIT = 20_000  # vectors; at and above it the compressed index is used
PQ_SUBQUANTIZERS = 32  # 4 bits each: 16 bytes per vector whatever the dimension
REFINE_FACTOR = 16  # candidates per wanted neighbour, re-ranked exactly
TRAIN_SAMPLE = 65_536  # vectors the product quantiser is trained on (4-bit codebooks need few)


def kind_for(count: int, dim: int) -> str:
    """Which index a collection of `count` vectors of `dim` dimensions gets."""
    if count < EXACT_LIMIT or dim % PQ_SUBQUANTIZERS:
        return "exact"
    return "compressed"


class VectorIndex:
    """Vectors keyed by our own int64 ids. Holds every vector exactly (the re-ranking needs them), so it
    can rebuild itself as another kind when it grows or shrinks across EXACT_LIMIT."""

    def __init__(self, index: faiss.IndexIDMap2, dim: int, kind: str) -> None:
        self._index = index
        self.dim = dim
        self.kind = kind

    # -- making ----------------------------------------------------------------------------------
    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        ids = np.ascontiguousarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(ids), dim)
        kind = kind_for(len(ids), dim)
        inner: Any
        if kind == "exact":
            inner = faiss.IndexFlatIP(dim)
        else:
            coarse = faiss.IndexPQFastScan(dim, PQ_SUBQUANTIZERS, 4, faiss.METRIC_INNER_PRODUCT)
            # A fixed sample keeps builds reproducible; faiss seeds its own k-means.
            sample = np.random.default_rng(0).choice(len(ids), min(len(ids), TRAIN_SAMPLE), replace=False)
            coarse.train(vectors[np.sort(sample)])
            inner = faiss.IndexRefineFlat(coarse)
            inner.k_factor = REFINE_FACTOR
        index = faiss.IndexIDMap2(inner)
        if len(ids):
            index.add_with_ids(vectors, ids)
        return cls(index, dim, kind)

    @classmethod
    def read(cls, path: Path) -> VectorIndex | None:
        """The index saved at `path`, or None when it is missing or unreadable (the caller rebuilds)."""
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            return None
        if not isinstance(index, faiss.IndexIDMap2):
            return None
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexRefine):
            inner.k_factor = REFINE_FACTOR
            return cls(index, index.d, "compressed")
        return cls(index, index.d, "exact")

    def write(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    # -- contents --------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._index.ntotal

    def describe(self) -> str:
        if self.kind == "exact":
            return "exact (FAISS IndexFlatIP)"
        return f"compressed (FAISS PQ{PQ_SUBQUANTIZERS}x4fs, re-ranked exactly)"

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) in insertion order, the vectors exact."""
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = (
            self._index.index.reconstruct_n(0, self.ntotal) if self.ntotal else np.zeros((0, self.dim), np.float32)
        )
        return ids, vectors

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32)
        if kind_for(self.ntotal + len(ids), self.dim) != self.kind:
            old_ids, old_vectors = self.contents()
            self._rebuild(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, vectors]))
        elif len(ids):
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if self.kind == "exact":
            self._index.remove_ids(ids)  # type: ignore[arg-type]  # faiss accepts an id array
            return
        # The fast-scan codes cannot be removed in place: rebuild from the vectors that stay.
        old_ids, old_vectors = self.contents()
        keep = ~np.isin(old_ids, ids)
        self._rebuild(old_ids[keep], old_vectors[keep])

    def _rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        fresh = VectorIndex.build(self.dim, ids, vectors)
        self._index, self.kind = fresh._index, fresh.kind

    # -- searching -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), best first, k per query; missing neighbours have id -1."""
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        return self._index.search(queries, max(1, min(k, self.ntotal)))
