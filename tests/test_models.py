"""The model registry: choosing a model, devices, the packaged offline model."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest

from facerec.config import Settings
from facerec.embedders import choose_model, get_spec, load_embedder, resolve_device
from facerec.errors import ModelError


def settings_for(tmp_path, download_url: str) -> Settings:
    return Settings(models_dir=tmp_path / "models", download_url=download_url, download_timeout_s=2.0)


def test_auto_offline_picks_dlib_and_says_why(tmp_path):
    name, why = choose_model(settings_for(tmp_path, "http://127.0.0.1:9/"))
    assert name == "dlib-resnet"
    assert "works offline" in why and "cannot be downloaded" in why and str(tmp_path / "models") in why


def test_auto_with_weights_in_models_folder_picks_vggface2(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / get_spec("vggface2").weights_file).write_bytes(b"x")
    name, why = choose_model(settings_for(tmp_path, "http://127.0.0.1:9/"))
    assert name == "vggface2" and "are in" in why


def test_auto_with_reachable_mirror_picks_vggface2(tmp_path):
    class Head(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if self.path.endswith(get_spec("vggface2").weights_file) else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mirror/"
        name, why = choose_model(settings_for(tmp_path, url))
        assert name == "vggface2" and "will be downloaded" in why
    finally:
        server.shutdown()


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")


def test_unknown_model():
    with pytest.raises(ModelError, match="choose one of: vggface2, casia-webface, dlib-resnet"):
        get_spec("arcface")


def test_packaged_dlib_model_loads_offline(tmp_path):
    embedder = load_embedder("dlib-resnet", device="cpu", settings=Settings(models_dir=tmp_path))
    assert embedder.weights_path.name == "dlib_face_recognition_resnet_model_v1.dat"
    assert embedder.weights_sha256 == get_spec("dlib-resnet").sha256
    chips = np.random.default_rng(0).integers(0, 255, (3, 150, 150, 3), dtype=np.uint8)
    vectors = embedder.embed(chips)
    assert vectors.shape == (3, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    raw = embedder.descriptors(chips)
    mirrored = embedder.descriptors(chips[:, :, ::-1].copy())
    expected = (raw + mirrored) / np.linalg.norm(raw + mirrored, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-5)  # test-time flip: the mean of chip and mirror


def test_inception_resnet_comes_without_torchvision_and_facenet_pytorch_still_imports(weights):
    """facenet-pytorch's package imports torchvision (about 1.5 s of a process's start); the embedder takes its
    InceptionResnetV1 without it, and the whole package imports normally afterwards, with that same class."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from facerec.embedders.base import load_embedder\n"
        f"embedder = load_embedder('vggface2', weights={str(weights)!r}, device='cpu', progress=False)\n"
        "vectors = embedder.embed(np.zeros((1, 160, 160, 3), np.uint8))\n"
        "assert vectors.shape == (1, 512)\n"
        "print(sorted(m for m in ('torchvision', 'facenet_pytorch', 'torch._dynamo') if m in sys.modules))\n"
        "from facenet_pytorch import MTCNN, InceptionResnetV1\n"
        "from facenet_pytorch.models.mtcnn import PNet\n"
        "print(type(embedder.module) is InceptionResnetV1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]
