"""The on-disk gallery: SQLite holds every face (metadata and vector), a FAISS index makes search fast.

Crash safety comes from one rule: SQLite is the source of truth and each batch is one transaction, while
the FAISS file is a cache named after the database generation it reflects (`index-<generation>.faiss`,
written to a temporary file, fsynced and renamed). A crash at any moment leaves either a matching index
or none for the current generation, and a missing one is rebuilt from the stored vectors. The index and
the database therefore can never disagree when a gallery is opened.

Writers hold an exclusive lock on `lock` for the whole command; readers need no lock, because they read
one SQLite snapshot and index files are immutable once renamed into place.

Search goes through `PeopleSearch` (search.py) over `VectorIndex` (index.py), which picks exact or
compressed search by gallery size. A second index holds one point per person (the mean of their faces,
what identification compares with), cached the same way as `people-<generation>.faiss`, so that opening a
gallery of 10^6 faces does not recompute 10^5 means. What the rows mean is meta.py's business.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import GalleryBusyError, GalleryError, GalleryNotFoundError, InputError
from ..fileio import atomic_path, stale_temporaries
from .index import VectorIndex, kind_for
from .meta import GalleryMeta
from .names import validate_name
from .search import Candidate, PeopleSearch

DB_NAME = "gallery.sqlite"
LOCK_NAME = "lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score REAL NOT NULL,
    enrolled_at TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person);
"""


@dataclass(frozen=True)
class FaceRecord:
    """What is stored about one enrolled face besides its vector."""

    person: str
    source: str
    sha256: str
    box: tuple[float, float, float, float]
    score: float


# "This face is not X": one row per vetoed face and per weights that embedded it, so adapting adds the
# adapted model's vectors beside the base model's and a rollback finds the base ones untouched.
_VETO_SCHEMA = """
CREATE TABLE IF NOT EXISTS vetoes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    weights_sha256 TEXT NOT NULL,
    vector BLOB NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (person, sha256, x1, y1, weights_sha256)
)
"""


def no_gallery(path: Path) -> GalleryNotFoundError:
    return GalleryNotFoundError(f"no gallery at {path}; enroll people first: facerec enroll PHOTO_DIR --gallery {path}")


def _unreadable(db_path: Path, exc: Exception) -> GalleryError:
    return GalleryError(
        f"{db_path} is not a readable gallery database ({exc}); restore it from a backup or enroll into a new gallery"
    )


class Gallery:
    """A gallery folder opened for reading (`Gallery.open`) or writing (`Gallery.open_for_write`).

    Use it as a context manager: leaving it saves the index of a writer and releases the lock.
    """

    def __init__(self, path: Path, db: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self._dirty = False
        try:
            db.execute("BEGIN")  # one snapshot for the metadata, the rows and the index generation
            try:
                rows = dict(db.execute("SELECT key, value FROM meta"))
                self.meta = GalleryMeta.from_rows(rows, path)
                self.generation = int(rows["generation"])
                self._faces = self._load()
            finally:
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _unreadable(path / DB_NAME, exc) from None
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> Gallery:
        """Read-only use (identify, people, info). No lock: a consistent SQLite snapshot is read once."""
        path = Path(path)
        if not (path / DB_NAME).is_file():
            raise no_gallery(path)
        db = cls._connect(path / DB_NAME, read_only=True)
        return cls(path, db, None)

    @classmethod
    def read_meta(cls, path: str | Path) -> GalleryMeta | None:
        """The gallery's metadata (model, weights, ...) without loading its faces; None when there is none."""
        path = Path(path)
        db_path = path / DB_NAME
        if not db_path.is_file():
            return None
        db = cls._connect(db_path, read_only=True)
        try:
            return GalleryMeta.from_rows(dict(db.execute("SELECT key, value FROM meta")), path)
        except sqlite3.DatabaseError as exc:
            raise _unreadable(db_path, exc) from None
        finally:
            db.close()

    @classmethod
    def open_for_write(
        cls, path: str | Path, *, create: GalleryMeta | None = None, lock_timeout: float = 30.0
    ) -> Gallery:
        """Exclusive use. `create` is the metadata (model, dim, weights) for a gallery that does not exist yet."""
        path = Path(path)
        if not (path / DB_NAME).is_file():
            if create is None:
                raise no_gallery(path)
            if path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir()):
                raise GalleryError(
                    f"{path} is not empty and holds no {DB_NAME}; choose a new or empty folder for the gallery"
                )
            try:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise GalleryError(
                    f"cannot create gallery folder {path} ({exc.strerror}); choose a writable location"
                ) from None
        lock_fd = cls._lock(path, lock_timeout)
        try:
            # Asked again under the lock: a writer that held it may have created the gallery meanwhile.
            exists = (path / DB_NAME).is_file()
            if not exists and create is None:
                raise no_gallery(path)
            db = cls._connect(path / DB_NAME, read_only=False)
            if not exists:
                assert create is not None
                cls._initialise(db, create)
                os.chmod(path / DB_NAME, 0o600)
            return cls(path, db, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _connect(cls, db_path: Path, *, read_only: bool) -> sqlite3.Connection:
        try:
            return cls._connect_once(db_path, read_only=read_only)
        except sqlite3.DatabaseError as exc:
            if not (read_only and getattr(exc, "sqlite_errorname", None) == "SQLITE_READONLY_ROLLBACK"):
                raise _unreadable(db_path, exc) from None
        # A writer was killed mid-commit and left a hot journal, which a read-only connection may not roll
        # back. A read-write connection rolls it back under SQLite's own locks (safe beside a live writer),
        # restoring the last committed state; then the reader goes on as if nothing had happened.
        try:
            cls._connect_once(db_path, read_only=False).close()
            return cls._connect_once(db_path, read_only=True)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(
                f"{db_path} holds a write left unfinished by a process that was stopped, and this user cannot "
                f"roll it back ({exc}); run any facerec command on the gallery once with write access to it "
                "(nothing committed is lost)"
            ) from None

    @staticmethod
    def _connect_once(db_path: Path, *, read_only: bool) -> sqlite3.Connection:
        if read_only:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None, timeout=30)
        else:
            db = sqlite3.connect(db_path, isolation_level=None, timeout=30)
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _initialise(db: sqlite3.Connection, meta: GalleryMeta) -> None:
        try:
            with db:
                # Rows of 2 KB (512 float32) fill 4 KB pages half; 16 KB pages waste about 6%.
                db.execute("PRAGMA page_size = 16384")
                db.execute("BEGIN")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                rows = {"generation": "0", **meta.to_rows()}
                db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)", [(k, v) for k, v in rows.items() if v is not None]
                )
        except sqlite3.OperationalError as exc:
            raise GalleryError(
                f"cannot write the gallery database ({exc}); check that the folder is writable"
            ) from None

    @staticmethod
    def _lock(path: Path, timeout: float) -> int:
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise GalleryError(f"cannot write to gallery {path} ({exc.strerror}); check its permissions") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise GalleryBusyError(
                        f"gallery {path} is busy: another facerec process is writing to it; try again "
                        f"when it has finished"
                    ) from None
                time.sleep(0.2)

    # -- state -----------------------------------------------------------------------------------
    def _load(self) -> PeopleSearch:
        rows = self._db.execute("SELECT id, person FROM faces ORDER BY id").fetchall()
        index = self._read_cache("index")
        if index is not None and index.ntotal != len(rows):
            index = None
        if index is None:  # crashed writer, or first open after a version change: rebuild from the truth
            index = VectorIndex.build(self.dim, *self.vectors())
            self._dirty = self._lock_fd is not None
        elif index.kind != kind_for(index.ntotal, self.dim):  # written by a release that chose differently
            index = VectorIndex.build(self.dim, *index.contents())
            self._dirty = self._lock_fd is not None
        return PeopleSearch(self.dim, index, dict(rows), self._read_cache("people"))

    def vectors(self, table: str = "faces") -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every stored face, by id; table "base_vectors" gives those kept by `adapt`."""
        if table == "base_vectors" and not self._has_base_vectors():
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        key = {"faces": "id", "base_vectors": "face_id"}[table]
        rows = self._db.execute(f"SELECT {key}, vector FROM {table} ORDER BY {key}").fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.dim)
        return ids, vectors

    def _has_base_vectors(self) -> bool:
        return self._has_table("base_vectors")

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None

    # -- vetoes: "this face is not X" ------------------------------------------------------------
    def vetoes(self, weights_sha256: str) -> dict[str, np.ndarray]:
        """Each vetoed person's vetoed face vectors made by these weights (see facerec.decision)."""
        if not self._has_table("vetoes"):
            return {}
        rows = self._db.execute("SELECT person, vector FROM vetoes WHERE weights_sha256 = ?", (weights_sha256,))
        out: dict[str, list[np.ndarray]] = {}
        for person, blob in rows:
            out.setdefault(person, []).append(np.frombuffer(blob, np.float32))
        return {person: np.stack(vectors) for person, vectors in out.items()}

    def veto_records(self, missing_for: str | None = None) -> list[FaceRecord]:
        """Every vetoed face (person = whom it is not), once; with `missing_for`, those that have no vector
        made by those weights yet (what adapt and rollback embed)."""
        if not self._has_table("vetoes"):
            return []
        rows = self._db.execute(
            "SELECT person, source, sha256, x1, y1, x2, y2 FROM vetoes GROUP BY person, sha256, x1, y1 "
            "HAVING ? IS NULL OR SUM(weights_sha256 = ?) = 0 ORDER BY min(id)",
            (missing_for, missing_for),
        ).fetchall()
        return [FaceRecord(r[0], r[1], r[2], (r[3], r[4], r[5], r[6]), 0.0) for r in rows]

    def add_veto(self, record: FaceRecord, vector: np.ndarray) -> None:
        """Say that the face of `record` is not `record.person` (for the gallery's current weights)."""
        validate_name(record.person)
        self._write(lambda db: self._insert_vetoes(db, [(record, vector)], self.meta.weights_sha256))

    @staticmethod
    def _insert_vetoes(db: sqlite3.Connection, vetoes: list[tuple[FaceRecord, np.ndarray]], weights: str) -> None:
        db.execute(_VETO_SCHEMA)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        db.executemany(
            "INSERT OR REPLACE INTO vetoes(person, source, sha256, x1, y1, x2, y2, weights_sha256, vector, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.person, r.source, r.sha256, *r.box, weights, np.asarray(v, np.float32).tobytes(), now)
                for r, v in vetoes
            ],
        )

    def records(self) -> list[tuple[int, FaceRecord]]:
        """Every stored face's id and record, by id: what re-embedding a gallery starts from."""
        rows = self._db.execute("SELECT id, person, source, sha256, x1, y1, x2, y2, score FROM faces ORDER BY id")
        return [(r[0], FaceRecord(r[1], r[2], r[3], (r[4], r[5], r[6], r[7]), r[8])) for r in rows]

    def _cache_path(self, kind: str, generation: int) -> Path:
        return self.path / f"{kind}-{generation}.faiss"

    def _read_cache(self, kind: str) -> VectorIndex | None:
        """The saved index of this generation when it is readable and fits this gallery; None: rebuild it."""
        path = self._cache_path(kind, self.generation)
        index = VectorIndex.read(path) if path.is_file() else None
        return index if index is not None and index.dim == self.dim else None

    @property
    def model(self) -> str:
        return self.meta.model

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def index_kind(self) -> str:
        return self._faces.index.describe()

    @property
    def count(self) -> int:
        return self._faces.count

    @property
    def people_count(self) -> int:
        return len(self._faces.faces_of)

    def people(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT person, count(*) FROM faces GROUP BY person ORDER BY person").fetchall())

    def owners_by_hash(self) -> dict[str, str]:
        """Every stored photo's content hash and the person it was enrolled as."""
        return dict(self._db.execute("SELECT sha256, person FROM faces"))

    # -- writing ---------------------------------------------------------------------------------
    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise GalleryError(f"gallery {self.path} was opened read-only")

    def _write(self, statements: Callable[[sqlite3.Connection], object]) -> None:
        """Run statements in one transaction that also bumps the generation."""
        self._require_writer()
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                statements(self._db)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(self.generation + 1),))
        except sqlite3.OperationalError as exc:
            hint = "the disk is full" if "full" in str(exc) else "check that the gallery folder is writable"
            raise GalleryError(
                f"cannot write to gallery {self.path} ({exc}): {hint}; nothing of this batch was kept"
            ) from None
        self.generation += 1
        self._dirty = True

    def add(self, records: list[FaceRecord], vectors: np.ndarray) -> list[int]:
        """Store a batch of faces in one transaction; returns their ids."""
        if not records:
            return []
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape != (len(records), self.dim):
            raise ValueError(f"expected {len(records)} vectors of {self.dim} dims, got {vectors.shape}")
        names = [validate_name(r.person) for r in records]  # before anything is written
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        ids: list[int] = []

        def insert(db: sqlite3.Connection) -> None:
            for name, record, vector in zip(names, records, vectors):
                cursor = db.execute(
                    "INSERT INTO faces(person, source, sha256, x1, y1, x2, y2, score, enrolled_at, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, record.source, record.sha256, *record.box, record.score, now, vector.tobytes()),
                )
                ids.append(int(cursor.lastrowid or 0))

        self._write(insert)
        self._faces.add(ids, vectors, names)
        return ids

    def remove_person(self, name: str) -> int:
        """Forget a person: their rows and vectors. Returns how many faces went."""
        name = validate_name(name)
        ids = [i for i, person in self._faces.person_of.items() if person == name]
        if not ids:
            return 0

        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM faces WHERE person = ?", (name,))
            if self._has_table("vetoes"):
                db.execute("DELETE FROM vetoes WHERE person = ?", (name,))

        self._write(delete)
        self._faces.remove(ids)
        return len(ids)

    def rename_person(self, old: str, new: str, *, merge: bool = False) -> int:
        """Give every face of `old` the name `new`, in one transaction; returns how many faces moved.

        Renaming onto a person who exists is a merge, and only done when asked (`merge=True`): two people
        wrongly named alike must not become one by a typo. A merge into nobody is a rename, refused too.
        """
        old, new = validate_name(old), validate_name(new)
        moved = [i for i, person in self._faces.person_of.items() if person == old]
        if not moved:
            raise InputError(f"no person named {old!r} in gallery {self.path}; see `facerec people`")
        if old == new:
            raise InputError(f"{old!r} is already called that")
        exists = new in self._faces.faces_of
        if exists and not merge:
            raise InputError(f"gallery {self.path} already has a person named {new!r}; to make them one: facerec merge")
        if merge and not exists:
            raise InputError(f"no person named {new!r} in gallery {self.path} to merge into; to rename: facerec rename")

        def move(db: sqlite3.Connection) -> None:
            db.execute("UPDATE faces SET person = ? WHERE person = ?", (new, old))
            if self._has_table("vetoes"):
                db.execute("UPDATE OR IGNORE vetoes SET person = ? WHERE person = ?", (new, old))
                db.execute("DELETE FROM vetoes WHERE person = ?", (old,))

        self._write(move)
        self._faces.rename(old, new)
        return len(moved)

    def save(self) -> None:
        """Write the face index and the person index for the current generation atomically, then drop
        older ones."""
        if not self._dirty:
            return
        self._require_writer()
        targets = []
        for kind, index in (("index", self._faces.index), ("people", self._faces.centroids())):
            target = self._cache_path(kind, self.generation)
            try:
                with atomic_path(target) as tmp:
                    index.write(tmp)
            except (OSError, RuntimeError) as exc:
                # The database already holds every face; the next open rebuilds the indexes from it.
                raise GalleryError(
                    f"could not save the search index of {self.path} ({exc}); the faces are safe and the "
                    f"index will be rebuilt"
                ) from None
            targets.append(target)
        for old in [*self.path.glob("index-*.faiss"), *self.path.glob("people-*.faiss"), *stale_temporaries(self.path)]:
            if old not in targets:
                old.unlink(missing_ok=True)
        self._dirty = False

    def replace_vectors(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        meta: GalleryMeta,
        *,
        keep_base: tuple[np.ndarray, np.ndarray] | None = None,
        vetoes: list[tuple[FaceRecord, np.ndarray]] | None = None,
    ) -> None:
        """Re-embed the whole gallery in one transaction: every face's vector and the metadata that says
        which weights made them.

        keep_base: (ids, vectors) to remember as the base model's, for an exact rollback (kept where a face
        already has one); None forgets every remembered base vector. vetoes: vetoed faces embedded by the new
        weights, stored in the same transaction.
        """
        ids = np.asarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32)
        if sorted(ids.tolist()) != sorted(self._faces.person_of) or vectors.shape != (len(ids), self.dim):
            raise ValueError("replace_vectors needs one vector of the gallery's size for every stored face")

        def rewrite(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE faces SET vector = ? WHERE id = ?", [(v.tobytes(), int(i)) for i, v in zip(ids, vectors)]
            )
            for key, value in meta.to_rows().items():
                if value is None:
                    db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
            db.execute("CREATE TABLE IF NOT EXISTS base_vectors (face_id INTEGER PRIMARY KEY, vector BLOB NOT NULL)")
            if keep_base is None:
                db.execute("DELETE FROM base_vectors")
            else:
                db.execute("DELETE FROM base_vectors WHERE face_id NOT IN (SELECT id FROM faces)")
                db.executemany(
                    "INSERT OR IGNORE INTO base_vectors(face_id, vector) VALUES (?, ?)",
                    [(int(i), np.asarray(v, np.float32).tobytes()) for i, v in zip(*keep_base)],
                )
            if vetoes:
                self._insert_vetoes(db, vetoes, meta.weights_sha256)

        self._write(rewrite)
        self.meta = meta
        self._faces.replace(ids, vectors)

    # -- searching -------------------------------------------------------------------------------
    def people_vectors(self) -> tuple[list[str], np.ndarray]:
        return self._faces.people_vectors()

    def face_vectors(self) -> tuple[list[str], np.ndarray]:
        return self._faces.face_vectors()

    def search(self, vectors: np.ndarray, top_k: int = 3, rule: str = "centroid") -> list[list[Candidate]]:
        """For each query vector, the best `top_k` people and their cosine similarity (see PeopleSearch)."""
        return self._faces.search(vectors, top_k, rule)

    def close(self) -> None:
        try:
            if self._lock_fd is not None and self._dirty and hasattr(self, "_faces"):
                self.save()
        finally:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
