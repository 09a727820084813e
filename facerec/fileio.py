"""Durable file replacement and content hashing: the one place that knows how a file is written safely.

Every file facerec writes that another process (or a crash) could see half-written — the gallery's index
caches, downloaded and adapted weights, their records, evaluation caches — goes through `atomic_path`:
a temporary file beside the target, fsynced, renamed over it, the folder fsynced. A crash at any moment
leaves the old file or the new one, never a mixture; a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_BLOCK = 1 << 20


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable; a platform that cannot open folders (Windows) skips it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, mode: int = 0o600) -> Iterator[Path]:
    """A temporary path beside `path` to write by any means (a library that wants a file name, such as
    `faiss.write_index` or `np.savez`); on a clean exit it is fsynced and renamed over `path`.

    An exception inside the block (including Ctrl-C) removes the temporary file and leaves `path` as it
    was. The temporary name is hidden and unique, so concurrent writers never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_atomically(path: Path, write: Callable[[BinaryIO], object], mode: int = 0o600) -> None:
    """`write(file)` into `path` through `atomic_path`: the form for writers that take an open file."""
    with atomic_path(path, mode) as tmp, open(tmp, "xb") as f:
        write(f)


def write_bytes_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    write_atomically(path, lambda f: f.write(data), mode)


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files `atomic_path` left in `folder` when a process was killed mid-write."""
    return [p for p in folder.glob(".*.tmp") if p.is_file()]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks so large weights never sit in memory twice.

    Raises OSError when the file cannot be read; callers turn that into their own message.
    """
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()
