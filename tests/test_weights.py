"""Weights: download, verify, cache, and load, against a local HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from facerec.embedders import weights
from facerec.embedders.weights import download, load_state_dict, resolve_weights, sha256_file
from facerec.errors import ModelError


def _good_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buf)
    return buf.getvalue()


GOOD = _good_bytes()
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = bytearray(GOOD)
for _i in (len(BAD) // 3, len(BAD) // 2, len(BAD) - 10):
    BAD[_i] ^= 0xFF
BAD = bytes(BAD)
BAD_SHA = hashlib.sha256(BAD).hexdigest()
assert BAD != GOOD


class Server:
    """A local HTTP server with per-path request counts."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets /slow.pt return at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.counts[path] += 1
                name = path.rsplit("/", 1)[-1]
                if name == "good.pt":
                    self._send(GOOD)
                elif name == "bad.pt":
                    self._send(BAD)
                elif name == "short.pt":  # promises more than it sends, then hangs up
                    self._send(GOOD, length=len(GOOD) + 100)
                elif name == "slow.pt":  # never answers within the client's timeout
                    server.release.wait(5)
                else:
                    self.send_error(404)

            def do_HEAD(self) -> None:
                if self.path.endswith("/good.pt"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(GOOD)))
                    self.end_headers()
                else:
                    self.send_error(404)

            def _send(self, body: bytes, length: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def requests(self) -> int:
        with self.lock:
            return sum(self.counts.values())


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    # A proxy from the environment must not intercept requests to our local server.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(2)


def _one_line(exc: pytest.ExceptionInfo[ModelError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- download ----------------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    data = b"a" * (3 * (1 << 20) + 17)  # spans several 1 MiB blocks
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_download_verifies_and_leaves_no_temp_files(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "new" / "sub" / "w.pt"  # folder is created
    assert download(server.url("/good.pt"), dest, GOOD_SHA, progress=False) == dest
    assert dest.read_bytes() == GOOD
    assert _listing(dest.parent) == ["w.pt"]
    assert server.counts["/good.pt"] == 1


def test_download_checksum_mismatch_keeps_nothing(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    with pytest.raises(ModelError) as exc:
        download(server.url("/bad.pt"), dest, GOOD_SHA, progress=False)
    message = _one_line(exc)
    assert "SHA-256" in message and BAD_SHA in message and GOOD_SHA in message
    assert "w.pt" in message
    assert _listing(tmp_path) == []


def test_download_short_body_is_an_error(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    with pytest.raises(ModelError) as exc:
        download(server.url("/short.pt"), dest, None, progress=False)
    assert str(dest) in _one_line(exc)
    assert _listing(tmp_path) == []


def test_download_timeout_fails_fast(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    start = time.monotonic()
    with pytest.raises(ModelError) as exc:
        download(server.url("/slow.pt"), dest, None, timeout=0.3, progress=False)
    assert time.monotonic() - start < 3
    assert "timed out" in _one_line(exc)
    assert _listing(tmp_path) == []


def test_ctrl_c_during_download_removes_temp_file(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_urlopen = urllib.request.urlopen

    class Interrupting:
        def __init__(self, response) -> None:
            self.response = response
            self.headers = response.headers
            self.reads = 0

        def read(self, n: int) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise KeyboardInterrupt
            return self.response.read(10)  # a partial first chunk, so the temp file has content

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self.response.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupting(real_urlopen(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        download(server.url("/good.pt"), tmp_path / "w.pt", GOOD_SHA, progress=False)
    assert _listing(tmp_path) == []


# --- resolve_weights ---------------------------------------------------------------------------------


def test_resolve_downloads_once_then_uses_cache(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = resolve_weights("w.pt", server.url("/good.pt"), GOOD_SHA, models_dir=models, progress=False)
    assert first == models / "w.pt"
    assert first.read_bytes() == GOOD
    assert server.counts["/good.pt"] == 1
    second = resolve_weights("w.pt", server.url("/good.pt"), GOOD_SHA, models_dir=models, progress=False)
    assert second == first
    assert server.requests() == 1
    assert _listing(models) == ["w.pt"]  # pinned weights need no sidecar


def test_resolve_checksum_mismatch_leaves_models_dir_empty(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", server.url("/bad.pt"), GOOD_SHA, models_dir=models, progress=False)
    assert "SHA-256" in _one_line(exc)
    assert _listing(models) == []


def test_resolve_404_names_destination_and_weights_flag(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    url = server.url("/missing.pt")
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", url, GOOD_SHA, models_dir=models, progress=False)
    message = _one_line(exc)
    assert str(models / "w.pt") in message
    assert "pass --weights" in message
    assert "404" in message and url in message
    assert _listing(models) == []


def test_resolve_connection_refused_fails_fast(tmp_path: Path) -> None:
    models = tmp_path / "models"
    url = f"http://127.0.0.1:{_free_port()}/good.pt"
    start = time.monotonic()
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", url, GOOD_SHA, models_dir=models, timeout=2.0, progress=False)
    assert time.monotonic() - start < 2
    message = _one_line(exc)
    assert url in message and str(models / "w.pt") in message
    assert _listing(models) == []


def test_resolve_uses_mirror_instead_of_url(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = resolve_weights(
        "good.pt",
        server.url("/official/missing.pt"),
        GOOD_SHA,
        models_dir=models,
        download_url=server.url("/mirror/"),  # trailing slash is tolerated
        progress=False,
    )
    assert path.read_bytes() == GOOD
    assert server.counts == Counter({"/mirror/good.pt": 1})


def test_explicit_file_wins_without_request(server: Server, tmp_path: Path) -> None:
    mine = tmp_path / "finetuned.pt"
    mine.write_bytes(BAD)  # the user's own file: not checked against the pinned digest
    got = resolve_weights(
        "w.pt", server.url("/good.pt"), GOOD_SHA, explicit=mine, models_dir=tmp_path / "models", progress=False
    )
    assert got == mine
    assert server.requests() == 0
    assert not (tmp_path / "models").exists()


def test_explicit_missing_or_folder_is_an_error(server: Server, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", server.url("/good.pt"), GOOD_SHA, explicit=missing, models_dir=tmp_path)
    assert _one_line(exc) == f"weights file {missing} does not exist"
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", server.url("/good.pt"), GOOD_SHA, explicit=tmp_path, models_dir=tmp_path)
    assert str(tmp_path) in _one_line(exc)
    assert server.requests() == 0


def test_corrupted_cached_file_with_pinned_digest(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "w.pt").write_bytes(BAD)
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", server.url("/good.pt"), GOOD_SHA, models_dir=models, progress=False)
    message = _one_line(exc)
    assert str(models / "w.pt") in message
    assert BAD_SHA in message and GOOD_SHA in message
    assert "delete it" in message
    assert server.requests() == 0
    assert (models / "w.pt").read_bytes() == BAD  # never deleted behind the user's back


def test_unpinned_sidecar_written_and_tampering_rejected(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = resolve_weights("w.pt", server.url("/good.pt"), None, models_dir=models, progress=False)
    sidecar = models / "w.pt.sha256"
    assert sidecar.read_text().split()[0] == GOOD_SHA
    assert _listing(models) == ["w.pt", "w.pt.sha256"]

    assert resolve_weights("w.pt", server.url("/good.pt"), None, models_dir=models, progress=False) == path
    assert server.requests() == 1

    path.write_bytes(BAD)
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", server.url("/good.pt"), None, models_dir=models, progress=False)
    message = _one_line(exc)
    assert str(path) in message and BAD_SHA in message and GOOD_SHA in message
    assert "delete" in message
    assert server.requests() == 1


def test_unpinned_hand_placed_file_without_sidecar_is_used(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "w.pt").write_bytes(BAD)
    assert resolve_weights("w.pt", server.url("/good.pt"), None, models_dir=models) == models / "w.pt"
    assert server.requests() == 0


def test_garbled_sidecar_is_an_error(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "w.pt").write_bytes(GOOD)
    (models / "w.pt.sha256").write_text("not a digest\n")
    with pytest.raises(ModelError) as exc:
        resolve_weights("w.pt", server.url("/good.pt"), None, models_dir=models)
    assert "w.pt.sha256" in _one_line(exc)


# --- load_state_dict ---------------------------------------------------------------------------------


class NotATensor:
    """A custom class, which weights_only unpickling refuses."""

    def __init__(self) -> None:
        self.x = 1


def test_load_state_dict_good(tmp_path: Path) -> None:
    f = tmp_path / "w.pt"
    f.write_bytes(GOOD)
    state = load_state_dict(f)
    assert list(state) == ["w"]
    assert torch.equal(state["w"], torch.arange(6.0))
    assert state["w"].device.type == "cpu"


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: (d / "trunc.pt").write_bytes(GOOD[: len(GOOD) // 2]) and d / "trunc.pt", id="truncated"),
        pytest.param(lambda d: (d / "text.pt").write_text("hello, not torch\n") and d / "text.pt", id="text"),
        pytest.param(lambda d: _save(NotATensor(), d / "custom.pt"), id="custom-class"),
        pytest.param(lambda d: _save({"w": NotATensor()}, d / "custom-in-dict.pt"), id="custom-class-in-dict"),
        pytest.param(lambda d: _save(torch.zeros(3), d / "tensor.pt"), id="bare-tensor"),
        pytest.param(lambda d: _save({"model": {"w": torch.zeros(1)}, "epoch": 3}, d / "ckpt.pt"), id="checkpoint"),
        pytest.param(lambda d: _save({}, d / "empty.pt"), id="empty-dict"),
        pytest.param(lambda d: d / "absent.pt", id="missing"),
    ],
)
def test_load_state_dict_rejects(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(ModelError) as exc:
        load_state_dict(path)
    message = _one_line(exc)
    assert str(path) in message
    assert "False" not in message  # torch's own advice (weights_only=False) is not passed on


EXECUTED: list[str] = []


def _runs_code() -> torch.Tensor:
    EXECUTED.append("ran")
    return torch.zeros(1)


class RunsCodeWhenUnpickled:
    """Unpickles into a plain tensor by calling a function: would pass every check if code were allowed to run."""

    def __reduce__(self):
        return (_runs_code, ())


def test_load_state_dict_never_runs_code_from_the_file(tmp_path: Path) -> None:
    path = _save({"w": RunsCodeWhenUnpickled()}, tmp_path / "code.pt")
    EXECUTED.clear()
    with pytest.raises(ModelError) as exc:
        load_state_dict(path)
    assert str(path) in _one_line(exc)
    assert EXECUTED == []


def test_module_exports() -> None:
    assert set(weights.__all__) == {"sha256_file", "download", "resolve_weights", "load_state_dict", "unreachable"}


def test_unreachable_says_why_without_downloading(server: Server) -> None:
    assert weights.unreachable(server.url("/good.pt")) is None
    assert weights.unreachable(server.url("/missing.pt")) == "HTTP Error 404: Not Found"
    assert server.counts["/good.pt"] == 0  # HEAD requests are not counted as downloads
    refused = weights.unreachable(f"http://127.0.0.1:{_free_port()}/good.pt", timeout=2)
    assert refused is not None and "refused" in refused.lower()
