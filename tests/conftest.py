"""Shared fixtures: where the real face data is, and the test weights."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared() -> Path:
    """`../shared`; tests that need real faces or video skip when it is missing."""
    from facerec.testing import find_shared

    path = find_shared(PROJECT_ROOT)
    if path is None:
        pytest.skip("../shared (real faces and video) is not beside the project; see ../shared/README.md")
    return path


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """Deterministic random InceptionResnetV1 weights, used through the real --weights path.

    The pretrained files cannot be downloaded here, so these prove plumbing, not accuracy.
    """
    from facerec.testing import write_random_facenet_weights

    return write_random_facenet_weights(tmp_path_factory.mktemp("weights") / "random-facenet.pt", seed=0)


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    from facerec.testing import write_random_facenet_weights

    return write_random_facenet_weights(tmp_path_factory.mktemp("weights") / "other-facenet.pt", seed=1)


@pytest.fixture(scope="session")
def known_gallery(tmp_path_factory, shared: Path, weights: Path) -> Path:
    """../shared/faces/known enrolled once per session; tests that change a gallery copy it first."""
    from facerec import FaceRecognizer

    path = tmp_path_factory.mktemp("galleries") / "known"
    FaceRecognizer(path, model="vggface2", weights=weights, device="cpu").enroll(shared / "faces" / "known")
    return path


@pytest.fixture
def gallery_copy(tmp_path: Path, known_gallery: Path) -> Path:
    import shutil

    target = tmp_path / "gallery"
    shutil.copytree(known_gallery, target)
    return target


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test may touch the user's gallery or models folder, or reach the internet for weights."""
    monkeypatch.setenv("FACEREC_MODELS", str(tmp_path_factory.getbasetemp() / "no-models"))
    monkeypatch.setenv("FACEREC_GALLERY", str(tmp_path_factory.getbasetemp() / "default-gallery"))
    monkeypatch.setenv("FACEREC_DOWNLOAD_URL", "http://127.0.0.1:9/")  # discard port: refused at once
