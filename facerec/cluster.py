"""Grouping the faces of an unlabelled photo folder by person: the engine behind `facerec cluster`.

Nobody tells us how many people there are, so the grouping is a cut in similarity, not a count: average
linkage on cosine similarity, stopped where the average similarity between two groups falls below `cut`.
Average linkage was chosen by measurement (bench_cluster.py, LFW people split in halves by
`facerec.lfw.stable_fraction`, tuned on one half and reported on the other; figures in REPORT.md):
single linkage (= connected components of the threshold graph) chains different people together through
one look-alike pair, complete linkage splits a person's varied photos, Chinese whispers depends on the
visiting order and lets more strangers into groups, and HDBSCAN leaves twice as many genuine faces out,
needs scikit-learn and is 8x slower at 10^4 faces.

For unit vectors the average cosine between groups A and B is sum(A)·sum(B) / (|A||B|), so the linkage
needs only each group's vector sum, never the N x N matrix. Which groups may merge comes from a k-NN graph
(faiss, exact inner product): two groups whose average is above the cut always have a pair above it,
and that pair is among the k nearest neighbours of one of them unless a face has more than k look-alikes
closer still, in which case it is already linked to the group through those. Memory is O(N k).

Everything a re-run needs lives in one folder (`state_dir`): `vectors.npz`, each photo's faces keyed by the
SHA-256 of its content (a re-run embeds only new or changed photos; a renamed photo is not embedded
again), and `clusters.json`, the groups of the last run with their members, so that group ids survive
re-runs on a grown folder and `facerec name GROUP_ID NAME` can find a group's photos and boxes.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .decision import CLUSTER_CUTS
from .detect import Face
from .errors import FacerecError, ImageError
from .fileio import write_atomically, write_bytes_atomically
from .images import iter_image_files
from .pipeline import load_photo
from .prefetch import prefetch
from .vectors import normalise

if TYPE_CHECKING:
    from .pipeline import FacePipeline

DEFAULT_CUT = CLUSTER_CUTS["dlib-resnet"]
DEFAULT_MIN_FACES = 3
DEFAULT_NEIGHBOURS = 32

STATE_NAME = "clusters.json"
CACHE_NAME = "vectors.npz"
SHEET_NAME = "contact-sheet.html"
GROUPS_DIR = "groups"
KNOWN_DIR = "known"
STATE_VERSION = 1

FacesOf = Callable[[np.ndarray], Sequence[tuple[Face, np.ndarray]]]
NameVectors = Callable[[np.ndarray], Sequence[str | None]]


class ClusterStateError(FacerecError):
    """The state folder is unusable (corrupt state, another model, unknown group id)."""


# --- the grouping ------------------------------------------------------------------------------------


def neighbour_graph(vectors: np.ndarray, k: int, min_similarity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (i, j, cosine) with i < j between each face and those of its k nearest at or above min_similarity.

    Exact search: at 10^4 faces a flat inner-product index answers in well under a second on one core, and an
    approximate one would lose exactly the borderline pairs the cut is about.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, np.float32)
    n = len(vectors)
    if n < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    k = min(k + 1, n)  # +1: a face is its own nearest neighbour
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    sims, nbrs = index.search(vectors, k)
    rows = np.repeat(np.arange(n), k)
    cols, sims = nbrs.ravel(), sims.ravel()
    keep = (cols >= 0) & (cols != rows) & (sims >= min_similarity)
    a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    pairs, first = np.unique(a * n + b, return_index=True)
    return pairs // n, pairs % n, sims[keep][first]


def average_linkage(vectors: np.ndarray, cut: float, *, neighbours: int = DEFAULT_NEIGHBOURS) -> np.ndarray:
    """A group label (0..G-1) for every face: agglomerative average linkage stopped at `cut`.

    Merges always take the most similar pair of groups first, so the result does not depend on the order of
    the faces. Ties are broken by the smaller face index, for reproducible output.
    """
    vectors = np.asarray(vectors, np.float64)
    n = len(vectors)
    if n == 0:
        return np.zeros(0, np.int64)
    rows, cols, sims = neighbour_graph(vectors, neighbours, cut)
    sums = vectors.copy()
    sizes = np.ones(n, np.int64)
    adjacent: list[set[int]] = [set() for _ in range(n)]
    for i, j in zip(rows.tolist(), cols.tolist()):
        adjacent[i].add(j)
        adjacent[j].add(i)
    version = np.zeros(n, np.int64)
    heap = [(-float(s), int(i), int(j), 0, 0) for i, j, s in zip(rows, cols, sims)]
    heapq.heapify(heap)
    parent = np.arange(n)
    while heap:
        negative, a, b, va, vb = heapq.heappop(heap)
        if version[a] != va or version[b] != vb:
            continue  # one of the two has merged since this pair was scored
        if -negative < cut:
            break
        if sizes[a] < sizes[b]:
            a, b = b, a  # the bigger group absorbs the smaller: fewer neighbour lists to rewrite
        sums[a] += sums[b]
        sizes[a] += sizes[b]
        parent[b] = a
        version[a] += 1
        version[b] = -1  # retired
        for other in adjacent[b]:
            adjacent[other].discard(b)
            if other != a:
                adjacent[other].add(a)
                adjacent[a].add(other)
        adjacent[a].discard(b)
        adjacent[b] = set()
        if adjacent[a]:
            others = np.fromiter(adjacent[a], np.int64, len(adjacent[a]))
            average = (sums[others] @ sums[a]) / (sizes[others] * sizes[a])
            for other, value in zip(others[average >= cut].tolist(), average[average >= cut].tolist()):
                x, y = (a, other) if a < other else (other, a)
                heapq.heappush(heap, (-value, x, y, int(version[x]), int(version[y])))
    roots = _find_roots(parent)
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int64)


def _find_roots(parent: np.ndarray) -> np.ndarray:
    roots = parent.copy()
    while True:
        hop = roots[roots]
        if np.array_equal(hop, roots):
            return roots
        roots = hop


def drop_small(labels: np.ndarray, min_faces: int) -> np.ndarray:
    """Groups of fewer than min_faces become -1 (unclustered); the rest are renumbered biggest first.

    A pair of photos is weak evidence of a person in a folder of strangers, and one wrong pair costs the
    user a wrong name later; the default of 3 asks for a little more.
    """
    labels = np.asarray(labels, np.int64)
    out = np.full(len(labels), -1, np.int64)
    if len(labels) == 0:
        return out
    counts = Counter(labels[labels >= 0].tolist())
    kept = sorted((label for label, size in counts.items() if size >= min_faces), key=lambda g: (-counts[g], g))
    for new, old in enumerate(kept):
        out[labels == old] = new
    return out


def cluster_vectors(
    vectors: np.ndarray,
    *,
    cut: float = DEFAULT_CUT,
    min_faces: int = DEFAULT_MIN_FACES,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> np.ndarray:
    """(N, d) unit vectors -> N labels: 0 is the biggest group, -1 a face left unclustered."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (N, d), not {vectors.shape}")
    return drop_small(average_linkage(vectors, cut, neighbours=neighbours), min_faces)


# --- faces, cache and photo walk ---------------------------------------------------------------------


@dataclass(frozen=True)
class FaceRef:
    """One face of one photo. `key` (photo SHA-256 and the face's rank in it) survives renames and moves."""

    image: str
    box: tuple[float, float, float, float]
    score: float
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
        }


@dataclass(frozen=True)
class Problem:
    """A photo that contributed no face, and why; reported, never raised, so one bad file spoils nothing."""

    image: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"image": self.image, "reason": self.reason}


@dataclass(frozen=True)
class CachedFace:
    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]
    vector: np.ndarray


class VectorCache:
    """Each photo's faces (box, score, landmarks, vector) by content SHA-256, in one npz file.

    Photos without faces are remembered too (with no rows), so they are not detected again. The file names
    the model it was made with; vectors of another model are useless and such a file is ignored.
    """

    def __init__(self, path: Path, model: str) -> None:
        self.path = Path(path)
        self.model = model
        self._photos: dict[str, list[CachedFace]] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["model"]) != self.model:
                    return
                counts = data["photo_count"].tolist()
                starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
                boxes, scores, marks, vectors = data["box"], data["score"], data["landmarks"], data["vector"]
                for sha, start, count in zip(data["photo_sha"].tolist(), starts, counts):
                    self._photos[sha] = [
                        CachedFace(
                            _box(boxes[r]),
                            float(scores[r]),
                            tuple((float(x), float(y)) for x, y in marks[r]),
                            vectors[r].copy(),
                        )
                        for r in range(start, start + count)
                    ]
        except (OSError, KeyError, ValueError, EOFError):
            self._photos = {}  # missing or unreadable: rebuilt from the photos, which are the truth

    def get(self, sha: str) -> list[CachedFace] | None:
        return self._photos.get(sha)

    def __contains__(self, sha: object) -> bool:
        return sha in self._photos

    def put(self, sha: str, faces: list[CachedFace]) -> None:
        self._photos[sha] = faces
        self._dirty = True

    def save(self) -> None:
        """Atomically, so an interrupted run leaves the previous cache, never a torn one."""
        if not self._dirty:
            return
        shas = sorted(self._photos)
        rows = [face for sha in shas for face in self._photos[sha]]
        dim = next((len(f.vector) for f in rows), 0)
        arrays = {
            "model": np.array(self.model),
            "photo_sha": np.array(shas, dtype="U64"),
            "photo_count": np.array([len(self._photos[s]) for s in shas], np.int64),
            "box": np.array([f.box for f in rows], np.float32).reshape(-1, 4),
            "score": np.array([f.score for f in rows], np.float32),
            "landmarks": np.array([f.landmarks for f in rows], np.float32).reshape(-1, 5, 2),
            "vector": np.array([f.vector for f in rows], np.float32).reshape(-1, dim),
        }
        write_atomically(self.path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
        self._dirty = False


def _box(values: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def pipeline_faces_of(pipeline: FacePipeline) -> FacesOf:
    """faces_of for a FacePipeline: every detected face with its unit vector."""
    return lambda image: [(found.face, found.vector) for found in pipeline.faces(image)]


@dataclass
class _Photo:
    path: Path
    sha: str = ""
    faces: list[CachedFace] | None = None
    fresh: bool = False
    problem: str | None = None


def collect_faces(
    paths: Iterable[Path],
    faces_of: FacesOf,
    cache: VectorCache,
    *,
    progress: bool = True,
    workers: int = 2,
    save_every: int = 256,
    max_pixels: int = 120_000_000,
) -> tuple[list[FaceRef], np.ndarray, list[Problem]]:
    """Every face of every photo, with its vector; photos seen before (same content) come from the cache.

    Photos are read, hashed and embedded in background threads. The cache is saved every `save_every`
    new photos, so an interrupted run keeps most of its work. A second copy of a photo is reported and
    not counted twice: its faces are the same faces.
    """

    def load(path: Path) -> _Photo:
        try:
            photo = load_photo(path, max_pixels=max_pixels, skip=cache)
        except ImageError as exc:
            return _Photo(path, problem=str(exc))
        sha, image = photo.sha256, photo.image
        if image is None:
            cached = cache.get(sha)
            assert cached is not None
            return _Photo(path, sha, cached)
        found = [
            CachedFace(face.box, face.score, face.landmarks, np.asarray(vector, np.float32))
            for face, vector in faces_of(image)
        ]
        return _Photo(path, sha, found, fresh=True)

    paths = list(paths)
    refs: list[FaceRef] = []
    vectors: list[np.ndarray] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    fresh = 0
    bar = tqdm(total=len(paths), desc="cluster: faces", unit="photo", disable=not progress, leave=False)
    try:
        for photo in prefetch(paths, load, workers=workers):
            bar.update()
            if photo.problem is not None:
                problems.append(Problem(str(photo.path), photo.problem))
                continue
            assert photo.faces is not None
            if photo.fresh:
                cache.put(photo.sha, photo.faces)
                fresh += 1
                if fresh % save_every == 0:
                    cache.save()
            if photo.sha in seen:
                problems.append(
                    Problem(str(photo.path), f"same content as {seen[photo.sha]}; its faces are counted once")
                )
                continue
            seen[photo.sha] = str(photo.path)
            if not photo.faces:
                problems.append(Problem(str(photo.path), "no face found"))
            for rank, face in enumerate(photo.faces):
                refs.append(FaceRef(str(photo.path), face.box, face.score, f"{photo.sha}#{rank}"))
                vectors.append(face.vector)
    finally:
        bar.close()
        cache.save()
    dim = len(vectors[0]) if vectors else 0
    return refs, np.array(vectors, np.float32).reshape(len(vectors), dim), problems


# --- stable ids --------------------------------------------------------------------------------------


@dataclass
class PreviousGroup:
    id: str
    keys: set[str]
    centroid: np.ndarray


def format_id(number: int) -> str:
    return f"g{number:04d}"


def assign_ids(
    groups: Sequence[Sequence[str]],
    centroids: np.ndarray,
    previous: Sequence[PreviousGroup],
    next_number: int,
    *,
    cut: float = DEFAULT_CUT,
) -> tuple[list[str], int]:
    """An id per new group (given as member keys): the id of the old group it shares most faces with.

    Pairs are taken by decreasing overlap, so when an old group splits its id stays with the biggest part
    and when two merge the new group keeps the id it overlaps most. A group sharing no face with any old
    one may still take an unclaimed old id when their centroids are above the cut (the same person, photos
    replaced). Everything else gets a fresh id; ids are never reused, so a name given to a retired id
    cannot land on another person.
    """
    owner = {key: index for index, group in enumerate(previous) for key in group.keys}
    overlaps: Counter[tuple[int, int]] = Counter()
    for new, keys in enumerate(groups):
        for key in keys:
            if key in owner:
                overlaps[(new, owner[key])] += 1
    ids: list[str | None] = [None] * len(groups)
    taken: set[int] = set()
    for (new, old), _count in sorted(overlaps.items(), key=lambda item: (-item[1], item[0])):
        if ids[new] is None and old not in taken:
            ids[new] = previous[old].id
            taken.add(old)
    free = [i for i in range(len(previous)) if i not in taken]
    if free:
        old_centroids = np.array([previous[i].centroid for i in free], np.float32)
        for new in range(len(groups)):
            if ids[new] is None and free:
                sims = old_centroids @ centroids[new]
                best = int(np.argmax(sims))
                if sims[best] >= cut:
                    ids[new] = previous[free[best]].id
                    free.pop(best)
                    old_centroids = np.delete(old_centroids, best, axis=0)
    out = []
    for given in ids:
        if given is None:
            given = format_id(next_number)
            next_number += 1
        out.append(given)
    return out, next_number


def read_state(state_dir: Path) -> dict[str, Any]:
    """The last run's state; an empty one when the folder has none."""
    path = Path(state_dir) / STATE_NAME
    if not path.is_file():
        return {"version": STATE_VERSION, "model": None, "next_id": 1, "groups": {}}
    try:
        state = json.loads(path.read_text("utf-8"))
        if state.get("version") != STATE_VERSION or not isinstance(state.get("groups"), dict):
            raise ValueError("unknown layout")
        return state
    except (OSError, ValueError) as exc:
        raise ClusterStateError(
            f"{path} is not a readable cluster state ({exc}); delete it to start group ids afresh"
        ) from None


def _previous_groups(state: dict[str, Any]) -> list[PreviousGroup]:
    return [
        PreviousGroup(gid, {face["key"] for face in group["faces"]}, np.array(group["centroid"], np.float32))
        for gid, group in state["groups"].items()
    ]


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    data = json.dumps(state, indent=1, ensure_ascii=False).encode("utf-8")
    write_bytes_atomically(Path(state_dir) / STATE_NAME, data, 0o644)


@dataclass(frozen=True)
class GroupFace:
    """What enrolling one face of a group needs: the photo, the box and the vector already computed."""

    image: str
    box: tuple[float, float, float, float]
    score: float
    key: str
    photo_sha256: str
    vector: np.ndarray | None


def group_faces(state_dir: str | Path, group_id: str) -> list[GroupFace]:
    """The faces of one group of the last run, for `facerec name GROUP_ID NAME`.

    The vector comes from the cache when it is there (None otherwise: re-embed the box). Enroll each face
    under its own record key (`key`, photo SHA-256 + face rank): one group photo may hold several people.
    """
    state_dir = Path(state_dir)
    state = read_state(state_dir)
    group = state["groups"].get(group_id)
    if group is None:
        known = ", ".join(sorted(state["groups"])[:10]) or "none"
        raise ClusterStateError(
            f"no group {group_id!r} in {state_dir / STATE_NAME} (groups: {known}); run facerec cluster first"
        )
    cache = VectorCache(state_dir / CACHE_NAME, state.get("model") or "")
    out = []
    for face in group["faces"]:
        sha, _, rank = face["key"].partition("#")
        cached = cache.get(sha)
        vector = cached[int(rank)].vector if cached is not None and int(rank) < len(cached) else None
        out.append(GroupFace(face["image"], _box(face["box"]), face["score"], face["key"], sha, vector))
    return out


# --- the result --------------------------------------------------------------------------------------


@dataclass
class Cluster:
    id: str
    faces: list[FaceRef]

    @property
    def size(self) -> int:
        return len(self.faces)


@dataclass
class KnownPerson:
    name: str
    faces: list[FaceRef]


@dataclass
class ClusterResult:
    """One run: groups biggest first, faces left unclustered, faces the gallery already names, and problems."""

    clusters: list[Cluster] = field(default_factory=list)
    unclustered: list[FaceRef] = field(default_factory=list)
    known: list[KnownPerson] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    photos: int = 0
    state_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": [{"id": c.id, "size": c.size, "faces": [f.to_dict() for f in c.faces]} for c in self.clusters],
            "unclustered": [f.to_dict() for f in self.unclustered],
            "known": [{"name": k.name, "faces": [f.to_dict() for f in k.faces]} for k in self.known],
        }


def cluster_folder(
    photo_dir: str | Path,
    faces_of: FacesOf,
    state_dir: str | Path,
    *,
    model: str,
    cut: float = DEFAULT_CUT,
    min_faces: int = DEFAULT_MIN_FACES,
    neighbours: int = DEFAULT_NEIGHBOURS,
    name_vectors: NameVectors | None = None,
    progress: bool = True,
    workers: int = 2,
) -> ClusterResult:
    """Group every face of every photo under photo_dir; remember the groups in state_dir for the next run.

    `model` names the embedder and its weights (e.g. "dlib-resnet:<sha256>"): the cache and the state are
    only reused for the same one. `name_vectors`, when given, names faces an existing gallery already
    knows; those are reported under `known` and kept out of the groups.
    """
    photo_dir, state_dir = Path(photo_dir), Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(state_dir)
    if state.get("model") not in (None, model):
        # Another model's groups are not comparable; ids restart after the old ones (never reused).
        state = {"version": STATE_VERSION, "model": model, "next_id": state.get("next_id", 1), "groups": {}}
    # The crops of a previous run must not be clustered as photos when the state folder is inside photo_dir.
    inside = state_dir.resolve()
    paths = [p for p in iter_image_files(photo_dir) if not p.resolve().is_relative_to(inside)]
    cache = VectorCache(state_dir / CACHE_NAME, model)
    refs, vectors, problems = collect_faces(paths, faces_of, cache, progress=progress, workers=workers)
    result = ClusterResult(problems=problems, photos=len(paths), state_dir=str(state_dir))
    if not paths:
        result.problems.append(Problem(str(photo_dir), "no images in this folder"))

    named: list[str | None] = (
        list(name_vectors(vectors)) if name_vectors is not None and len(refs) else [None] * len(refs)
    )
    by_name: dict[str, list[FaceRef]] = defaultdict(list)
    for ref, name in zip(refs, named):
        if name is not None:
            by_name[name].append(ref)
    result.known = [KnownPerson(n, f) for n, f in sorted(by_name.items(), key=lambda item: (-len(item[1]), item[0]))]
    rest = np.array([i for i, name in enumerate(named) if name is None], np.int64)

    labels = cluster_vectors(vectors[rest], cut=cut, min_faces=min_faces, neighbours=neighbours) if len(rest) else rest
    members = [rest[labels == g] for g in range(int(labels.max()) + 1 if len(labels) else 0)]
    centroids = np.array([normalise(vectors[m].sum(axis=0)) for m in members], np.float32).reshape(
        len(members), vectors.shape[1]
    )
    ids, state["next_id"] = assign_ids(
        [[refs[i].key for i in m] for m in members], centroids, _previous_groups(state), int(state["next_id"]), cut=cut
    )
    result.clusters = [Cluster(gid, [refs[i] for i in m]) for gid, m in zip(ids, members)]
    result.unclustered = [refs[i] for i in rest[labels < 0]]
    state["model"] = model
    state["groups"] = {
        gid: {
            "centroid": [round(float(v), 6) for v in centroid],
            "faces": [{**refs[i].to_dict(), "key": refs[i].key} for i in m],
        }
        for gid, m, centroid in zip(ids, members, centroids)
    }
    _write_state(state_dir, state)
    return result


def default_out_dir(photo_dir: str | Path) -> Path:
    """Where `facerec cluster PHOTO_DIR` keeps its state, sheet and groups unless told: beside the photos,
    hidden, so that a later run over the same folder neither walks into it nor loses it."""
    return Path(photo_dir) / ".facerec-cluster"
