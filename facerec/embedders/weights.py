"""Finding, downloading, verifying and loading model weight files.

Weights are large, come from the network and are unpickled, so every step is defensive: a download
lands in place only when it is complete and its SHA-256 matches, a cached file is re-checked before
use, and loading never runs code from the file (`weights_only=True`). Every failure is a one-line
`ModelError` that names the file and says what to do about it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tqdm import tqdm

from facerec.errors import ModelError
from facerec.fileio import atomic_path, sha256_file, write_bytes_atomically

if TYPE_CHECKING:
    import torch

__all__ = ["download", "load_state_dict", "resolve_weights", "sha256_file", "unreachable"]

_BLOCK = 1 << 20  # 1 MiB
_SIDECAR_SUFFIX = ".sha256"
_USER_AGENT = "facerec (python urllib)"
_HEX = frozenset("0123456789abcdef")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    timeout: float = 15.0,
    progress: bool = True,
) -> Path:
    """Stream url into a temporary file in dest's folder (created if missing), fsync it, check the SHA-256
    (when given), then os.replace it into place and fsync the folder, so dest is either absent or complete
    and verified. On ANY failure the temporary file is removed and ModelError is raised.

    The temporary file sits beside dest so the final rename is atomic (same file system), and a crash or
    a concurrent reader never sees half a file under dest's name. `timeout` bounds the connection and
    each read, so an unreachable or stalled server fails fast instead of hanging. Ctrl-C also removes
    the temporary file; the KeyboardInterrupt itself is re-raised unchanged.
    """
    dest = Path(dest)
    expected = _normalise_digest(sha256)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"cannot create folder {dest.parent} for {dest.name} ({_reason(exc)}); "
            "set FACEREC_MODELS to a writable folder, or pass --weights FILE"
        ) from exc
    try:
        with atomic_path(dest, 0o644) as tmp, open(tmp, "xb") as out:
            got = _fetch(url, dest, out, timeout=timeout, progress=progress)
            if expected is not None and got != expected:
                raise ModelError(
                    f"downloaded {dest.name} has SHA-256 {got}, expected {expected}: "
                    "the download was corrupted or replaced; nothing was kept"
                )
    except OSError as exc:
        raise _write_error(dest, exc) from exc
    return dest


def resolve_weights(
    filename: str,
    url: str,
    sha256: str | None,
    *,
    explicit: Path | None = None,
    models_dir: Path,
    download_url: str | None = None,
    timeout: float = 15.0,
    progress: bool = True,
) -> Path:
    """Order: an explicit file (must exist and be a file; it is the user's own, e.g. fine-tuned, so no checksum);
    then models_dir/filename (verified against sha256 when pinned); otherwise download to models_dir/filename,
    from download_url.rstrip('/') + '/' + filename when download_url (a mirror) is set, else from url.

    Unpinned weights (sha256 None, for models whose official checksum we do not know) use trust on first
    use: after a successful download the digest is written to a sidecar `<file>.sha256`
    (`sha256sum` format), and a models_dir file with such a sidecar must match it, so a file that is
    later truncated or replaced is caught. An unpinned file put into models_dir by hand, without a
    sidecar, is used as it is.
    """
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not explicit.exists():
            raise ModelError(f"weights file {explicit} does not exist")
        if not explicit.is_file():
            raise ModelError(f"weights file {explicit} is not a file: pass the path of a .pt file")
        return explicit

    expected = _normalise_digest(sha256)
    dest = Path(models_dir).expanduser() / filename
    sidecar = _sidecar(dest)

    if dest.exists():
        if not dest.is_file():
            raise ModelError(
                f"{dest} is not a file: remove it so {filename} is downloaded again, or pass --weights FILE"
            )
        _verify_cached(dest, expected, sidecar)
        return dest

    source = download_url.rstrip("/") + "/" + filename if download_url else url
    download(source, dest, expected, timeout=timeout, progress=progress)
    if expected is None:
        _write_sidecar(dest, sidecar)
    return dest


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """torch.load(path, map_location='cpu', weights_only=True); anything that is not a dict of tensors
    (or fails to load: truncated, a pickle with code, not a torch file) -> ModelError naming the file.

    `weights_only=True` means a file can only describe tensors and plain containers, never run code,
    so a replaced or hostile weights file is refused instead of executed. Tensors land on the CPU so a
    file saved on a GPU machine loads anywhere; moving the model is the caller's business.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... depending on the damage
        raise ModelError(
            f"cannot load weights from {path} ({_load_reason(exc)}): it is truncated, not a PyTorch file, or holds "
            "objects other than tensors; delete it so it is downloaded again, or pass another --weights FILE"
        ) from exc

    if not isinstance(obj, dict):
        raise ModelError(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors: "
            "pass a file saved with torch.save(model.state_dict(), FILE)"
        )
    if not obj:
        raise ModelError(
            f"{path} holds an empty dict, no weights: pass a file saved with torch.save(model.state_dict(), FILE)"
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(
                f"{path} holds {key!r} = {type(value).__name__}, not a tensor (a training checkpoint?): "
                "pass a file saved with torch.save(model.state_dict(), FILE)"
            )
    return obj


# --- helpers -----------------------------------------------------------------------------------------


def _fetch(url: str, dest: Path, out: BinaryIO, *, timeout: float, progress: bool) -> str:
    """Copy url's body into out, hashing on the way; network and disk failures become ModelError."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError/HTTPError are OSErrors
        raise _download_error(url, dest, exc) from exc

    hasher = hashlib.sha256()
    received = 0
    with response:
        length = _content_length(response)
        with tqdm(
            total=length,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=dest.name,
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            while True:
                try:
                    chunk = response.read(_BLOCK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _download_error(url, dest, exc) from exc
                if not chunk:
                    break
                hasher.update(chunk)
                received += len(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _write_error(dest, exc) from exc
                bar.update(len(chunk))
    # http.client returns b"" rather than raising when the server hangs up early, so check the length.
    if length is not None and received != length:
        reason = f"connection closed after {received} of {length} bytes"
        raise _download_error(url, dest, reason)
    return hasher.hexdigest()


def _content_length(response: object) -> int | None:
    value = getattr(response, "headers", {}).get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _verify_cached(dest: Path, expected: str | None, sidecar: Path) -> None:
    """Check a models_dir file against the pinned digest, else against its trust-on-first-use sidecar."""
    recorded = None
    if expected is None:
        if not sidecar.exists():
            return
        recorded = _read_sidecar(sidecar, dest)
    try:
        got = sha256_file(dest)
    except OSError as exc:
        raise ModelError(f"cannot read {dest} ({_reason(exc)}); fix its permissions, or pass --weights FILE") from exc
    if expected is not None and got != expected:
        raise ModelError(
            f"{dest} has SHA-256 {got}, expected {expected}: delete it so it is downloaded again, or "
            f"pass --weights FILE"
        )
    if recorded is not None and got != recorded:
        raise ModelError(
            f"{dest} has SHA-256 {got}, expected {recorded} (recorded in {sidecar.name} when it was downloaded): "
            f"delete it and {sidecar.name} so it is downloaded again, or pass --weights FILE"
        )


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + _SIDECAR_SUFFIX)


def _read_sidecar(sidecar: Path, dest: Path) -> str:
    try:
        text = sidecar.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ModelError(
            f"cannot read {sidecar} ({_reason(exc)}); fix its permissions, or pass --weights FILE"
        ) from exc
    fields = text.split()
    digest = fields[0].lower() if fields else ""
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ModelError(
            f"{sidecar} does not hold a SHA-256 digest: delete it and {dest.name} so they are downloaded again, "
            "or pass --weights FILE"
        )
    return digest


def _write_sidecar(dest: Path, sidecar: Path) -> None:
    """Record a fresh download's digest; if that fails, drop the download so it is never trusted unrecorded."""
    try:
        digest = sha256_file(dest)
        write_bytes_atomically(sidecar, f"{digest}  {dest.name}\n".encode("ascii"), 0o644)
    except BaseException as exc:
        _remove_quietly(dest)
        if isinstance(exc, OSError):
            raise ModelError(
                f"cannot record the SHA-256 of {dest} in {sidecar.name} ({_reason(exc)}); nothing was kept: "
                f"make {dest.parent} writable, or pass --weights FILE"
            ) from exc
        raise


def _normalise_digest(sha256: str | None) -> str | None:
    if not sha256:
        return None
    digest = sha256.strip().lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValueError(f"not a hex SHA-256 digest: {sha256!r}")
    return digest


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _reason(exc: BaseException | str) -> str:
    """A one-line reason: HTTPError as 'HTTP Error 404: Not Found', URLError as its underlying cause."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP Error {exc.code}: {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc)
    if isinstance(exc, BaseException) and not text:
        text = type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text


def _load_reason(exc: BaseException) -> str:
    """The informative part of torch.load's error, without its advice to turn weights_only off."""
    text = _ANSI.sub("", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = "weights_only refused it: " + text.split(marker, 1)[1].strip()
    text = " ".join(text.split())
    text = text.split(". ", 1)[0].rstrip(".")
    if isinstance(exc, (KeyError, EOFError)) or not text:  # the pickle reader's bare key / empty message
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _download_error(url: str, dest: Path, exc: BaseException | str) -> ModelError:
    return ModelError(
        f"cannot download {dest.name} from {url} ({_reason(exc)}); "
        f"download it yourself and put it at {dest}, or pass --weights FILE"
    )


def _write_error(dest: Path, exc: OSError) -> ModelError:
    return ModelError(
        f"cannot write {dest} ({_reason(exc)}): free some space or make {dest.parent} writable, "
        "set FACEREC_MODELS to another folder, or pass --weights FILE"
    )


def unreachable(url: str, *, timeout: float = 5.0) -> str | None:
    """Why url cannot be downloaded now (one line), or None when the server answers it.

    A HEAD request, so deciding between an online and an offline model costs no download.
    """
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return _reason(exc)
