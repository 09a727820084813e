"""Unit vectors: the one definition of normalising embeddings, and of a group's mean direction.

Every similarity in facerec is the inner product of unit vectors (cosine similarity), so the way a vector
is made unit — and an all-zero one kept zero instead of NaN — must be the same for embeddings, person
centroids and track means alike.
"""

from __future__ import annotations

import numpy as np


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (float32); an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def group_means(vectors: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    """(count, dim) unit mean direction of the vectors of each group 0..count-1 (zero for an empty group).

    The mean of unit vectors, renormalised, is a person's centroid: one odd photo cannot pull it far.
    """
    sums = np.zeros((count, vectors.shape[1]), np.float64)
    np.add.at(sums, np.asarray(groups, np.int64), vectors)
    return normalise(sums)
