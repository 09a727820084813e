"""The embedder in ONNX Runtime: the same vectors as PyTorch, never stale weights, and PyTorch when it fails."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facerec.config import Settings
from facerec.embedders import runtime
from facerec.embedders.base import Embedder, load_embedder
from facerec.errors import ModelError, SettingsError


def _embedders(model: str, models: Path, weights: Path | None = None) -> tuple[Embedder, Embedder]:
    """The model's embedder on ONNX Runtime and on PyTorch (the same loaded network)."""
    settings = Settings.from_env()
    load = lambda engine: load_embedder(
        model, weights=weights, device="cpu", settings=replace(settings, models_dir=models, runtime=engine)
    )
    return load("onnx"), load("torch")


def _chips(shared: Path, embedder: Embedder) -> np.ndarray:
    from facerec.detect import Detector
    from facerec.pipeline import FacePipeline

    settings = Settings.from_env()
    pipeline = FacePipeline(embedder, Detector.from_settings("cpu", settings), settings)
    photos = [shared / "faces/known/paul_rudd/1.jpg", shared / "faces/unknown/kit_with_rose.jpg"]
    images = [pipeline.read(p) for p in photos]
    return embedder.stack([c for image in images for c in pipeline.chips(image, pipeline.detect(image))])


def test_onnx_runtime_gives_pytorchs_vectors_on_real_faces_and_caches_its_export(shared, tmp_path):
    on_onnx, on_torch = _embedders("dlib-resnet", tmp_path)
    assert (on_onnx.runner.engine, on_torch.runner.engine) == ("onnx", "torch")
    assert on_onnx.module is on_torch.module
    chips = _chips(shared, on_onnx)
    assert len(chips) >= 3
    fast, plain = on_onnx.views(chips), on_torch.views(chips)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # ONNX Runtime did run it: the verified export is cached, named after the weights file's digest.
    (cache,) = tmp_path.glob("dlib-resnet-*.onnx")
    assert cache.name == f"dlib-resnet-{on_onnx.weights_sha256[:16]}.onnx" and cache.stat().st_size > 10**6
    assert runtime._LOADED[on_onnx.module].sessions


def test_a_corrupt_or_stale_cached_export_is_replaced_never_used(tmp_path, weights, other_weights):
    chips = np.random.default_rng(3).integers(0, 256, (4, 160, 160, 3), dtype=np.uint8)
    other, _ = _embedders("vggface2", tmp_path / "other", other_weights)
    other.embed(chips)
    (stale,) = (tmp_path / "other").glob("*.onnx")

    for planted in (b"not a model", stale.read_bytes()):  # garbage, then another network's valid export
        models = tmp_path / f"models-{len(planted)}"
        on_onnx, on_torch = _embedders("vggface2", models, weights)
        cache = models / f"vggface2-{on_onnx.weights_sha256[:16]}.onnx"
        models.mkdir()
        cache.write_bytes(planted)
        runtime._LOADED.pop(on_onnx.module, None)  # as in a new process
        runtime.loaded(on_onnx.module)
        np.testing.assert_allclose(on_onnx.embed(chips), on_torch.embed(chips), atol=1e-5)
        assert cache.read_bytes() != planted and runtime._LOADED[on_onnx.module].sessions


def test_weights_changed_after_loading_are_what_runs(weights, tmp_path):
    """A network whose weights change after its export (a state dict loaded, an optimiser step) must give the
    new weights' vectors, never the export's."""
    base, _ = _embedders("vggface2", tmp_path, weights)
    network = copy.deepcopy(base.module)
    runtime.loaded(network)
    embedder = replace(base, module=network)
    chips = np.random.default_rng(4).integers(0, 256, (3, 160, 160, 3), dtype=np.uint8)
    before = embedder.embed(chips)
    assert runtime._LOADED[network].sessions  # ONNX Runtime ran it
    with torch.no_grad():
        network.last_linear.weight.mul_(-1.0)  # in place, as an optimiser step changes it
    after = embedder.embed(chips)
    np.testing.assert_allclose(after, replace(embedder, runner=replace(base.runner, engine="torch")).embed(chips))
    assert np.abs(after - before).max() > 0.1


def test_an_export_that_fails_leaves_pytorch_running_it(weights, tmp_path, monkeypatch, caplog):
    def broken(module, example):
        raise RuntimeError("exporter gone")

    monkeypatch.setattr(runtime, "_export", broken)
    base, on_torch = _embedders("vggface2", tmp_path, weights)
    network = copy.deepcopy(base.module)
    runtime.loaded(network)
    chips = np.random.default_rng(5).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="facerec.embedders.runtime"):
        vectors = replace(base, module=network).embed(chips)
        replace(base, module=network).embed(chips)
    np.testing.assert_allclose(vectors, replace(on_torch, module=network).embed(chips))
    assert [r.getMessage() for r in caplog.records] == [
        "cannot run the embedder in ONNX Runtime (RuntimeError: exporter gone); using PyTorch"
    ]
    assert not list(tmp_path.glob("*.onnx"))


def test_which_engine_runs_it(monkeypatch):
    assert runtime.choose("torch", "cpu") == "torch"
    assert runtime.choose("auto", "cuda") == "torch"
    assert runtime.choose("auto", "cpu") == runtime.choose("onnx", "cpu") == "onnx"
    with pytest.raises(ModelError, match="CPU only"):
        runtime.choose("onnx", "cuda")
    monkeypatch.setattr(runtime, "onnx_available", lambda: False)
    assert runtime.choose("auto", "cpu") == "torch"
    with pytest.raises(ModelError, match="pip install onnxruntime onnx"):
        runtime.choose("onnx", "cpu")


def test_the_runtime_setting(monkeypatch):
    monkeypatch.setenv("FACEREC_RUNTIME", "torch")
    assert Settings.from_env().runtime == "torch"
    monkeypatch.setenv("FACEREC_RUNTIME", "tensorrt")
    with pytest.raises(SettingsError, match="FACEREC_RUNTIME='tensorrt': give one of auto, onnx, torch"):
        Settings.from_env()


def test_a_models_folder_that_cannot_hold_the_export_costs_a_warning_only(weights, tmp_path, caplog):
    blocked = tmp_path / "models"
    blocked.write_text("a file where the models folder should be")
    on_onnx, on_torch = _embedders("vggface2", blocked, weights)
    chips = np.random.default_rng(6).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="facerec.embedders.runtime"):
        np.testing.assert_allclose(on_onnx.embed(chips), on_torch.embed(chips), atol=1e-5)
    assert any("cannot cache the ONNX export" in r.getMessage() for r in caplog.records)
    assert runtime._LOADED[on_onnx.module].sessions
