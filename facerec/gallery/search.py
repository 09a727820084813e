"""Searching the gallery's faces by person: the face index, who each face belongs to, and the two rules.

The centroid rule (the default, what LFW measurements favour) compares a query with each person's mean
enrolled vector, held in a second index with one point per person keyed by the person's first face id;
the nearest rule compares it with each person's closest enrolled face.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..vectors import group_means
from .index import VectorIndex, kind_for


@dataclass(frozen=True)
class Candidate:
    """A person a face may be: cosine similarity to them and, under a calibrated policy, the normalised
    score the decision compares with its threshold (the similarity itself otherwise)."""

    name: str
    similarity: float
    score: float | None = None


class PeopleSearch:
    """Every stored face's vector (by face id) and person, kept together so they can never disagree."""

    def __init__(self, dim: int, index: VectorIndex, person_of: dict[int, str], centroids: VectorIndex | None) -> None:
        self.dim = dim
        self.index = index
        self.person_of = person_of
        self.faces_of = Counter(person_of.values())
        fits = (
            centroids is not None
            and centroids.ntotal == len(self.faces_of)
            and centroids.kind == kind_for(centroids.ntotal, dim)
        )
        self._centroids = centroids if fits else None  # built on the first centroid search otherwise

    @property
    def count(self) -> int:
        return len(self.person_of)

    def add(self, ids: list[int], vectors: np.ndarray, names: list[str]) -> None:
        self.index.add(np.array(ids, np.int64), vectors)
        self.person_of.update(zip(ids, names))
        self.faces_of.update(names)
        self._centroids = None

    def remove(self, ids: list[int]) -> None:
        self.index.remove(np.array(ids, np.int64))
        for face_id in ids:
            person = self.person_of.pop(face_id)
            self.faces_of[person] -= 1
            if not self.faces_of[person]:
                del self.faces_of[person]
        self._centroids = None

    def rename(self, old: str, new: str) -> None:
        for face_id, person in self.person_of.items():
            if person == old:
                self.person_of[face_id] = new
        self.faces_of = Counter(self.person_of.values())
        self._centroids = None

    def replace(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index = VectorIndex.build(self.dim, ids, vectors)
        self._centroids = None

    def centroids(self) -> VectorIndex:
        """Each person's mean enrolled vector, renormalised, keyed by the person's first face id."""
        if self._centroids is None:
            ids, vectors = self.index.contents()
            row = {name: i for i, name in enumerate(sorted(self.faces_of))}
            owner = np.fromiter((row[self.person_of[i]] for i in ids.tolist()), np.int64, len(ids))
            first = np.full(len(row), np.iinfo(np.int64).max, np.int64)
            np.minimum.at(first, owner, ids)
            self._centroids = VectorIndex.build(self.dim, first, group_means(vectors, owner, len(row)))
        return self._centroids

    def people_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every person's name and centroid (the centroid rule's points), in one order."""
        ids, vectors = self.centroids().contents()
        return [self.person_of[int(i)] for i in ids], vectors

    def face_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every stored face's person and vector."""
        ids, vectors = self.index.contents()
        return [self.person_of[int(i)] for i in ids], vectors

    def search(self, vectors: np.ndarray, top_k: int = 3, rule: str = "centroid") -> list[list[Candidate]]:
        """For each query vector, the best `top_k` people and their cosine similarity under `rule`."""
        if self.count == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        vectors = np.ascontiguousarray(vectors, np.float32)
        if rule == "centroid":
            sims, ids = self.centroids().search(vectors, top_k)
            return [
                [Candidate(self.person_of[int(i)], float(min(sim, 1.0))) for sim, i in zip(row_sims, row_ids) if i >= 0]
                for row_sims, row_ids in zip(sims, ids)
            ]
        if rule != "nearest":
            raise ValueError(f"unknown search rule {rule!r}")
        # Enough neighbours that top_k distinct people are almost always among them.
        sims, ids = self.index.search(vectors, min(self.count, max(top_k * 16, 64)))
        results = []
        for row_sims, row_ids in zip(sims, ids):
            best: dict[str, float] = {}
            for sim, face_id in zip(row_sims, row_ids):
                if face_id >= 0:
                    best.setdefault(self.person_of[int(face_id)], float(sim))
            ranked = sorted(best.items(), key=lambda item: -item[1])[:top_k]
            results.append([Candidate(name, min(sim, 1.0)) for name, sim in ranked])
        return results
