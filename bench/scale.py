"""How search scales: galleries of 10^4 to 10^6 synthetic faces at 128 and 512 dimensions.

    python bench/scale.py [--sizes 10000,100000,1000000] [--dims 128,512] [--queries 1000] [--threads 2]
                          [--no-ivf] [--gallery-size 1000000]

Synthetic faces are shaped like real embeddings: each person is a random direction, each of their 5 faces
that direction plus noise (same-person cosine about 0.7), and every query is a new photo of an enrolled
person. The directions are uniform on the sphere, which is the hardest case for cell-based indexes:
nothing clusters beyond the person.

For each size and dimension: facerec's index (`VectorIndex`, the kind it picks for that size) - build
time, size, single-query latency p50/p99 (k=64, what the nearest-face rule asks), recall@1 against exact
search - and, for comparison, exact search and an IVF index (nlist = 4 sqrt(N), several nprobe).
Then one gallery through the public `Gallery` class (SQLite + index on disk): adding the faces in batches,
opening it, and identify-style queries with both rules (centroid: one point per person, the default).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import print_json, print_table, set_threads

FACES_PER_PERSON = 5
NEIGHBOURS = 64


def synthetic(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(faces, owner of each face, queries, owner of each query) as float32 unit vectors."""
    rng = np.random.default_rng(seed)
    people = max(1, n // FACES_PER_PERSON)
    centres = rng.standard_normal((people, dim), np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = np.float32(np.sqrt(0.45 / dim))

    def photos(owner: np.ndarray) -> np.ndarray:
        out = np.empty((len(owner), dim), np.float32)
        for start in range(0, len(owner), 100_000):
            part = owner[start : start + 100_000]
            v = centres[part] + rng.standard_normal((len(part), dim), np.float32) * sigma
            out[start : start + len(part)] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    owner = np.arange(n) % people
    asked = rng.integers(0, people, queries)
    return photos(owner), owner, photos(asked), asked


def latencies(search, queries: np.ndarray) -> tuple[np.ndarray, list]:
    """Milliseconds per single query, one at a time as identify asks, and each query's answer."""
    times, answers = np.empty(len(queries)), []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        answers.append(search(q[None]))
        times[i] = (time.perf_counter() - start) * 1e3
    return times, answers


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(name: str, search, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Time single queries and check each top answer against exact search's."""
    search(queries[:10])  # warm up
    lat, answers = latencies(search, queries)
    recall = float(np.mean([ids[0, 0] == t for (_, ids), t in zip(answers, truth)]))
    return {
        "index": name,
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "recall_at_1": round(recall, 4),
    }


def index_rows(n: int, dim: int, queries_n: int, ivf: bool) -> list[dict]:
    import faiss

    from facerec.gallery.index import VectorIndex

    vectors, _, queries, _ = synthetic(n, dim, queries_n)
    ids = np.arange(n, dtype=np.int64)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    truth = exact.search(queries, 1)[1][:, 0]  # batched: BLAS, fast
    before = rss_mb()
    start = time.perf_counter()
    ours = VectorIndex.build(dim, ids, vectors)
    row = {"build_s": round(time.perf_counter() - start, 2), "memory_mb": round(rss_mb() - before)}
    rows = [{**measure(f"facerec: {ours.kind}", lambda q: ours.search(q, NEIGHBOURS), queries, truth), **row}]
    if n >= 100_000:  # exact search for comparison (below that, facerec's own index is exact)
        row = {"build_s": 0.0, "memory_mb": round(vectors.nbytes / 2**20)}
        rows.append({**measure("exact flat", lambda q: exact.search(q, NEIGHBOURS), queries[:200], truth), **row})
    if ivf and n >= 100_000:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        index.train(vectors[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)])
        index.add(vectors)
        row = {"build_s": round(time.perf_counter() - start, 2), "memory_mb": None}
        for nprobe in (16, 64, 256):
            index.nprobe = nprobe
            rows.append(
                {**measure(f"IVF{nlist} nprobe {nprobe}", lambda q: index.search(q, NEIGHBOURS), queries, truth), **row}
            )
    for row in rows:
        row.update(faces=n, dim=dim)
    return rows


def gallery_row(n: int, dim: int, queries_n: int, tmp: Path) -> dict:
    """The same data through the Gallery: SQLite rows, the index file, both search rules."""
    from facerec.gallery import FaceRecord, Gallery, GalleryMeta

    vectors, owner, queries, asked = synthetic(n, dim, queries_n, seed=1)
    meta = GalleryMeta.new("synthetic", dim, Path("-"), "0" * 64)
    path = tmp / f"g{n}x{dim}"
    start = time.perf_counter()
    with Gallery.open_for_write(path, create=meta) as gallery:
        for s in range(0, n, 10_000):
            records = [
                FaceRecord(f"person{o:07d}", f"/synthetic/{i}.jpg", f"{i:064x}", (0, 0, 1, 1), 1.0)
                for i, o in zip(range(s, s + 10_000), owner[s : s + 10_000])
            ]
            gallery.add(records, vectors[s : s + 10_000])
    enrolled = time.perf_counter() - start
    before = rss_mb()
    start = time.perf_counter()
    gallery = Gallery.open(path)
    opened = time.perf_counter() - start
    start = time.perf_counter()
    gallery.search(queries[:1])
    centroid_build = time.perf_counter() - start
    row = {
        "faces": n,
        "dim": dim,
        "people": gallery.people_count,
        "index": gallery.index_kind,
        "add_s": round(enrolled, 1),
        "open_s": round(opened, 2),
        "first_centroid_search_s": round(centroid_build, 2),
        "disk_mb": round(sum(p.stat().st_size for p in path.iterdir()) / 2**20),
    }
    for rule in ("centroid", "nearest"):
        lat, answers = latencies(lambda q, rule=rule: gallery.search(q, top_k=3, rule=rule), queries)
        row[f"{rule}_p50_ms"] = round(float(np.percentile(lat, 50)), 3)
        row[f"{rule}_p99_ms"] = round(float(np.percentile(lat, 99)), 3)
        named = [hits[0][0].name for hits in answers]
        row[f"{rule}_top1"] = round(float(np.mean([name == f"person{o:07d}" for name, o in zip(named, asked)])), 4)
    row["memory_mb"] = round(rss_mb() - before)
    gallery.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", default="128,512")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ivf", action="store_true")
    parser.add_argument("--gallery-size", type=int, default=1_000_000, help="0 skips the gallery run")
    args = parser.parse_args()
    import faiss

    machine = set_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    machine["faiss"] = faiss.__version__
    rows, galleries = [], []
    with tempfile.TemporaryDirectory(prefix="facerec-scale-") as tmp:
        for dim in map(int, args.dims.split(",")):
            for n in map(int, args.sizes.split(",")):
                rows += index_rows(n, dim, args.queries, not args.no_ivf)
                print(rows[-1], flush=True)
            if args.gallery_size:
                galleries.append(gallery_row(args.gallery_size, dim, args.queries, Path(tmp)))
                print(galleries[-1], flush=True)
    table = [
        (
            f"{r['faces']:>9,} x {r['dim']:<3}  {r['index']:<28}",
            f"build {r['build_s']:>6.1f} s  mem "
            f"{r['memory_mb'] if r['memory_mb'] is not None else '-':>5} MB  p50 {r['p50_ms']:>7.2f} ms  "
            f"p99 {r['p99_ms']:>7.2f} ms  recall@1 {r['recall_at_1']:.3f}",
        )
        for r in rows
    ]
    for g in galleries:
        table.append(
            (
                f"{g['faces']:>9,} x {g['dim']:<3}  Gallery ({g['people']:,} people)",
                f"add {g['add_s']} s, open {g['open_s']} s, first centroid search {g['first_centroid_search_s']} s, "
                f"disk {g['disk_mb']} MB, mem {g['memory_mb']} MB; centroid p50/p99 {g['centroid_p50_ms']}/"
                f"{g['centroid_p99_ms']} ms top-1 {g['centroid_top1']}; nearest p50/p99 {g['nearest_p50_ms']}/"
                f"{g['nearest_p99_ms']} ms top-1 {g['nearest_top1']}",
            )
        )
    print_table("facerec search at scale (synthetic faces, single queries, k=64)", table, machine)
    print_json("scale", {"indexes": rows, "galleries": galleries}, machine)


if __name__ == "__main__":
    main()
