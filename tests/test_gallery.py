"""The gallery on its own: persistence, agreement of index and database, locking, refusals."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from facerec.errors import GalleryBusyError, GalleryError, GalleryMismatchError, GalleryNotFoundError, InvalidNameError
from facerec.gallery import FaceRecord, Gallery, GalleryMeta, validate_name

DIM = 8
META = GalleryMeta.new("vggface2", DIM, Path("/w.pt"), "0" * 64)


def unit(rows: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def records(person: str, n: int, tag: str = "") -> list[FaceRecord]:
    return [FaceRecord(person, f"/p/{person}{tag}{i}.jpg", f"{person}{tag}{i}", (0, 0, 10, 10), 0.99) for i in range(n)]


def new_gallery(path, **kw) -> Gallery:
    return Gallery.open_for_write(path, create=META, **kw)


def index_agrees(path) -> None:
    with Gallery.open(path) as g:
        db_ids = [r[0] for r in g._db.execute("SELECT id FROM faces ORDER BY id")]
        assert g._faces.index.ntotal == len(db_ids) == g.count
        assert sorted(g._faces.person_of) == db_ids


def test_add_search_persist_remove(tmp_path):
    vectors = unit(6, 0)
    with new_gallery(tmp_path / "g") as g:
        g.add(records("ann", 3), vectors[:3])
        g.add(records("bob", 3), vectors[3:])
    with Gallery.open(tmp_path / "g") as g:
        assert g.people() == {"ann": 3, "bob": 3}
        hits = g.search(vectors[[1, 4]], top_k=2, rule="nearest")
        assert [c.name for c in hits[0]] == ["ann", "bob"] and hits[0][0].similarity == pytest.approx(1.0, abs=1e-5)
        assert hits[1][0].name == "bob"
        centroids = np.stack([vectors[:3].sum(0), vectors[3:].sum(0)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        hits = g.search(centroids, top_k=2)  # the default rule compares with each person's mean vector
        assert [[c.name for c in h] for h in hits] == [["ann", "bob"], ["bob", "ann"]]
        assert hits[0][0].similarity == pytest.approx(1.0, abs=1e-5)
        assert hits[0][1].similarity == pytest.approx(float(centroids[0] @ centroids[1]), abs=1e-5)
        assert g.owners_by_hash() == {**{f"ann{i}": "ann" for i in range(3)}, **{f"bob{i}": "bob" for i in range(3)}}
    with Gallery.open_for_write(tmp_path / "g") as g:
        assert g.remove_person("ann") == 3 and g.remove_person("ann") == 0
    index_agrees(tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        assert g.people() == {"bob": 3}
        assert {c.name for c in g.search(vectors[:1], top_k=5)[0]} == {"bob"}
        assert {c.name for c in g.search(vectors[:1], top_k=5, rule="nearest")[0]} == {"bob"}


def test_one_index_file_per_generation_and_private_files(tmp_path):
    with new_gallery(tmp_path / "g") as g:
        g.add(records("ann", 2), unit(2, 1))
        g.add(records("bob", 2), unit(2, 2))
    files = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert files == ["gallery.sqlite", "index-2.faiss", "lock", "people-2.faiss"]
    for p in (tmp_path / "g").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == 0o700
    # No pickles anywhere: plain SQL tables of text, numbers and raw float32 vectors, and a FAISS file.
    db = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "meta",
        "faces",
        "sqlite_sequence",
    }
    assert {r[0] for r in db.execute("SELECT typeof(value) FROM meta")} == {"text"}
    assert {r[0] for r in db.execute("SELECT length(vector) FROM faces")} == {g.dim * 4}
    db.close()


def test_missing_or_stale_index_is_rebuilt_from_database(tmp_path):
    """What a writer killed between its commit and its index save leaves behind."""
    vectors = unit(4, 3)
    with new_gallery(tmp_path / "g") as g:
        g.add(records("ann", 2), vectors[:2])
    g = new_gallery(tmp_path / "g")
    g.add(records("bob", 2), vectors[2:])
    g._dirty = False  # simulate a crash: committed rows, index never saved
    g.close()
    assert sorted(p.name for p in (tmp_path / "g").glob("*.faiss")) == ["index-1.faiss", "people-1.faiss"]
    index_agrees(tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        assert g.search(vectors[3:], top_k=1, rule="nearest")[0][0].name == "bob"
        assert [c.name for c in g.search(vectors[3:], top_k=2)[0]] == ["bob", "ann"]  # person means too
    (tmp_path / "g" / "index-1.faiss").write_bytes(b"garbage")
    index_agrees(tmp_path / "g")
    with Gallery.open_for_write(tmp_path / "g") as g:
        g._dirty = True  # a writer saves both indexes for the current generation
    (tmp_path / "g" / "people-2.faiss").write_bytes(b"garbage")
    with Gallery.open(tmp_path / "g") as g:
        assert [c.name for c in g.search(vectors[3:], top_k=2)[0]] == ["bob", "ann"]


def test_duplicate_hash_is_refused_whole_batch(tmp_path):
    with new_gallery(tmp_path / "g") as g:
        g.add(records("ann", 2), unit(2, 4))
        with pytest.raises(sqlite3.IntegrityError):
            g.add(records("ann", 1) + records("bob", 1), unit(2, 5))
        assert g.people() == {"ann": 2}
    index_agrees(tmp_path / "g")


def test_writer_lock_makes_second_writer_wait_then_give_up(tmp_path):
    with new_gallery(tmp_path / "g"):
        with pytest.raises(GalleryBusyError, match="busy"):
            Gallery.open_for_write(tmp_path / "g", lock_timeout=0.3)
        with Gallery.open(tmp_path / "g") as reader:  # readers are never blocked
            assert reader.count == 0
    with Gallery.open_for_write(tmp_path / "g", lock_timeout=0.3):
        pass


def kill_mid_commit(db_path: Path) -> None:
    """A child process dies while its changed pages are already in the file: the journal it leaves is hot."""
    pid = os.fork()
    if pid == 0:
        db = sqlite3.connect(db_path, isolation_level=None)
        db.execute("PRAGMA cache_size = 1")  # spill every change to the database file before the commit
        db.execute("BEGIN")
        db.execute("DELETE FROM faces")
        db.execute("UPDATE meta SET value = 'half-written' WHERE key = 'generation'")
        os._exit(0)
    os.waitpid(pid, 0)


def test_reader_recovers_a_gallery_whose_writer_was_killed_mid_commit(tmp_path):
    with new_gallery(tmp_path / "g") as g:
        g.add(records("ann", 40), unit(40, 0))
    kill_mid_commit(tmp_path / "g" / "gallery.sqlite")
    assert (tmp_path / "g" / "gallery.sqlite-journal").stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what a plain read-only reader meets
        sqlite3.connect(f"file:{tmp_path / 'g' / 'gallery.sqlite'}?mode=ro", uri=True).execute("SELECT * FROM meta")
    with Gallery.open(tmp_path / "g") as g:  # rolled back to the last commit, nothing lost
        assert g.people() == {"ann": 40}
    assert not (tmp_path / "g" / "gallery.sqlite-journal").exists()
    index_agrees(tmp_path / "g")


def test_reader_that_cannot_roll_back_says_how_to_recover(tmp_path, monkeypatch):
    with new_gallery(tmp_path / "g") as g:
        g.add(records("ann", 40), unit(40, 0))
    kill_mid_commit(tmp_path / "g" / "gallery.sqlite")
    connect_once = Gallery._connect_once

    def no_write_access(db_path, *, read_only):  # root writes anywhere, so a chmod would not show it
        if not read_only:
            raise sqlite3.OperationalError("unable to open database file")
        return connect_once(db_path, read_only=read_only)

    monkeypatch.setattr(Gallery, "_connect_once", staticmethod(no_write_access))
    with pytest.raises(GalleryError, match="unfinished.*with write access"):
        Gallery.open(tmp_path / "g")
    monkeypatch.undo()
    with Gallery.open(tmp_path / "g") as g:
        assert g.people() == {"ann": 40}


def test_refusals(tmp_path):
    with pytest.raises(GalleryNotFoundError, match="enroll"):
        Gallery.open(tmp_path / "none")
    with pytest.raises(GalleryNotFoundError):
        Gallery.open_for_write(tmp_path / "none")
    with new_gallery(tmp_path / "g"):
        pass
    db = sqlite3.connect(tmp_path / "g" / "gallery.sqlite")
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    db.close()
    with pytest.raises(GalleryMismatchError, match="format version 99"):
        Gallery.open(tmp_path / "g")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gallery.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a readable gallery database"):
        Gallery.open(tmp_path / "bad")


def test_names():
    assert validate_name("  José  ") == "José"
    assert validate_name("Ko\u0301") == "Kó"  # NFC
    for bad in ["", "  ", "a/b", "a\\b", "..", "bad\x00name", "tab\tname", "x" * 201, "bad\udcffname"]:
        with pytest.raises(InvalidNameError):
            validate_name(bad)


def test_identify_threshold_grows_with_gallery_size():
    from facerec.embedders import get_spec

    thresholds = get_spec("dlib-resnet").thresholds
    table = dict(thresholds.identify_by_gallery_size)
    assert thresholds.identify_for(10) == pytest.approx(table[10])
    assert table[1] < thresholds.identify_for(3) < table[5]  # interpolated in log(size)
    assert thresholds.identify_for(10**6) == pytest.approx(table[max(table)])  # clamped beyond the data
    sizes = sorted(table)
    assert [table[s] for s in sizes] == sorted(table[s] for s in sizes)
    assert get_spec("vggface2").thresholds.identify_for(10) == get_spec("vggface2").thresholds.identify
