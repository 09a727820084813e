"""dlib's face-recognition ResNet read in pure numpy and rebuilt in PyTorch.

The parser is checked on hand-built bytes and on damaged copies of the real file; the rebuilt
network is checked against dlib itself (golden test, skipped when dlib's Python bindings are
absent: `pip install dlib-bin`); the converted-weights cache is checked for reuse and repair.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerec.embedders import dlib_resnet
from facerec.embedders.dlib_format import (
    MODEL_FILENAME,
    NUM_AFFINE_LAYERS,
    NUM_CONV_LAYERS,
    DlibReader,
    anet_wrappers,
    parse_resnet,
)
from facerec.embedders.dlib_resnet import (
    DlibResNet,
    find_model_file,
    load_dlib_resnet,
    zero_extend_add,
)
from facerec.errors import ModelError

# ------------------------------------------------------------------------------------------
# Hand-built dlib serialisation.


def pack_int(value: int) -> bytes:
    """dlib's packed integer: control byte (size | 0x80 if negative), then |value| little-endian."""
    magnitude = abs(value)
    size = max(1, (magnitude.bit_length() + 7) // 8)
    return bytes([size | (0x80 if value < 0 else 0)]) + magnitude.to_bytes(size, "little")


def pack_str(text: str) -> bytes:
    return pack_int(len(text)) + text.encode("ascii")


def pack_double(mantissa: int, exponent: int) -> bytes:
    return pack_int(mantissa) + pack_int(exponent)


def pack_tensor(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype="<f4")
    dims = tuple(array.shape) + (1,) * (4 - array.ndim)
    return pack_int(2) + b"".join(pack_int(d) for d in dims) + array.tobytes()


def reader(data: bytes) -> DlibReader:
    return DlibReader(data, name="unit.dat")


def assert_one_line_model_error(excinfo: pytest.ExceptionInfo, name: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert name in message


@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, b"\x01\x00"),
        (1, b"\x01\x01"),
        (150, b"\x01\x96"),
        (4736, b"\x02\x80\x12"),
        (-28, b"\x81\x1c"),
        (-300, b"\x82\x2c\x01"),
        (2**40 + 5, b"\x06\x05\x00\x00\x00\x00\x01"),
        (2**63 - 1, b"\x08" + b"\xff" * 7 + b"\x7f"),
        (-(2**63), b"\x88" + b"\x00" * 7 + b"\x80"),
    ],
)
def test_read_int(value: int, encoded: bytes) -> None:
    assert pack_int(value) == encoded
    r = reader(encoded)
    assert r.read_int() == value
    assert r.remaining == 0


def test_read_int_accepts_zero_length_and_non_minimal_encodings() -> None:
    r = reader(b"\x00" + b"\x04\x07\x00\x00\x00")
    assert r.read_int() == 0
    assert r.read_int() == 7


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing at all
        b"\x02\x01",  # says two bytes, has one
        b"\x09" + b"\x00" * 9,  # more than 8 bytes
        b"\x41\x01",  # reserved bits set
        b"\x08" + b"\xff" * 8,  # 2**64 - 1 does not fit an int64
    ],
)
def test_read_int_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ModelError) as excinfo:
        reader(data).read_int()
    assert_one_line_model_error(excinfo, "unit.dat")


def test_read_int_range_check() -> None:
    with pytest.raises(ModelError, match="outside"):
        reader(pack_int(-1)).read_int("a dimension", 0, 10)
    with pytest.raises(ModelError, match="outside"):
        reader(pack_int(11)).read_int("a dimension", 0, 10)


def test_read_string_and_bool() -> None:
    r = reader(pack_str("con_4") + b"10")
    assert r.read_string() == "con_4"
    assert r.read_bool() is True
    assert r.read_bool() is False
    r.expect_end()
    with pytest.raises(ModelError, match="truncated"):
        reader(pack_int(10) + b"short").read_string()
    with pytest.raises(ModelError, match="ASCII"):
        reader(pack_int(2) + b"\xc3\xa9").read_string()
    with pytest.raises(ModelError):
        reader(pack_int(10_000) + b"x" * 10_000).read_string()  # absurd identifier length
    with pytest.raises(ModelError, match="neither"):
        reader(b"\x01").read_bool()
    with pytest.raises(ModelError, match="expected 'relu_'"):
        reader(pack_str("relu")).expect_string("relu_", "layer name")


@pytest.mark.parametrize(
    "mantissa, exponent, expected",
    [
        (3, -1, 1.5),
        (0, 0, 0.0),
        (-5, 2, -20.0),
        (0xA3D70A, -28, 0.04),  # loss_metric's margin as dlib wrote it
        (0x99999A, -24, 0.6),  # its distance threshold
        (1, 1000, 2.0**1000),
    ],
)
def test_read_double(mantissa: int, exponent: int, expected: float) -> None:
    r = reader(pack_double(mantissa, exponent))
    assert r.read_double() == pytest.approx(expected, rel=1e-7)
    assert r.remaining == 0


def test_read_double_specials_and_limits() -> None:
    assert reader(pack_double(0, 32000)).read_double(finite=False) == math.inf
    assert reader(pack_double(0, 32001)).read_double(finite=False) == -math.inf
    assert math.isnan(reader(pack_double(0, 32002)).read_double(finite=False))
    for data in (pack_double(0, 32002), pack_double(1, 30000)):  # nan; overflows a double
        with pytest.raises(ModelError, match="not finite"):
            reader(data).read_double("margin")
    with pytest.raises(ModelError, match="outside"):
        reader(pack_double(1, 40000)).read_double()  # exponent is an int16
    with pytest.raises(ModelError, match="truncated"):
        reader(pack_int(3)).read_double()


def test_read_tensor_and_alias() -> None:
    values = np.arange(6, dtype=np.float32).reshape(1, 2, 1, 3) - 2.5
    r = reader(pack_tensor(values) + pack_int(1) + b"".join(pack_int(d) for d in (1, 32, 1, 1)))
    got = r.read_tensor()
    assert got.dtype == np.float32 and got.shape == (1, 2, 1, 3)
    np.testing.assert_array_equal(got, values)
    assert r.read_alias() == (1, 32, 1, 1)
    r.expect_end()
    empty = reader(pack_tensor(np.zeros((0, 0, 0, 0)))).read_tensor()
    assert empty.shape == (0, 0, 0, 0)


def test_read_tensor_rejects_bad_headers_and_absurd_sizes() -> None:
    header = pack_int(2) + b"".join(pack_int(d) for d in (2**31 - 1,) * 4)
    with pytest.raises(ModelError, match="claims") as excinfo:
        reader(header + b"\x00" * 64).read_tensor("params")  # must fail before allocating
    assert_one_line_model_error(excinfo, "unit.dat")
    with pytest.raises(ModelError, match="claims"):
        reader(pack_tensor(np.ones(4))[:-1]).read_tensor()  # one byte short
    with pytest.raises(ModelError, match="version 3"):
        reader(pack_int(3) + pack_tensor(np.ones(1))[1:]).read_tensor()
    with pytest.raises(ModelError, match="outside"):
        reader(pack_int(2) + pack_int(-1) + pack_int(1) * 3).read_tensor()
    with pytest.raises(ModelError, match="alias version"):
        reader(pack_int(2) + pack_int(1) * 4).read_alias()
    with pytest.raises(ModelError, match="trailing"):
        reader(b"\x01\x00").expect_end()


def test_anet_wiring() -> None:
    wrappers = anet_wrappers()
    assert len(wrappers) == 130  # one version integer per wrapper in the real file
    layers = [w.layer for w in wrappers if w.kind == "layer"]
    assert layers.count("con_4") == NUM_CONV_LAYERS == 29
    assert layers.count("affine_") == NUM_AFFINE_LAYERS == 29
    assert layers[0] == "con_4" and layers[-1] == "fc_2"
    stride2 = [w.args for w in wrappers if w.layer == "con_4" and w.args[4] == 2]
    assert all(args[6:] == (0, 0) for args in stride2)  # stride-2 convolutions are unpadded
    assert len(stride2) == 5


# ------------------------------------------------------------------------------------------
# The real file.


@pytest.fixture(scope="module")
def model_file() -> Path:
    try:
        return find_model_file()
    except ModelError as exc:
        pytest.skip(f"face_recognition_models is not installed: {exc}")


@pytest.fixture(scope="module")
def model_bytes(model_file: Path) -> bytes:
    return model_file.read_bytes()


@pytest.fixture(scope="module")
def weights(model_bytes: bytes):
    return parse_resnet(model_bytes)


def test_find_model_file_does_not_import_the_package(model_file: Path) -> None:
    assert model_file.name == MODEL_FILENAME and model_file.is_file()
    was_imported = "face_recognition_models" in sys.modules
    find_model_file()
    assert ("face_recognition_models" in sys.modules) == was_imported


def test_find_model_file_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_package(name: str):
        raise dlib_resnet.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(dlib_resnet.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(dlib_resnet.importlib.metadata, "files", no_package)
    with pytest.raises(ModelError, match="pip install face_recognition_models"):
        find_model_file()


def test_real_file_parses(weights) -> None:
    assert len(weights.convs) == NUM_CONV_LAYERS == 29
    assert len(weights.affines) == NUM_AFFINE_LAYERS == 29
    assert weights.layer_names.count("con_4") == 29 and weights.layer_names.count("affine_") == 29
    assert weights.convs[0][0].shape == (32, 3, 7, 7) and weights.convs[0][1].shape == (32,)
    assert weights.convs[-1][0].shape == (256, 256, 3, 3)
    assert weights.fc_weight.shape == (128, 256)  # transposed from dlib's (in, out)
    assert weights.fc_weight.flags.c_contiguous
    assert weights.distance_threshold == pytest.approx(0.6)
    assert weights.margin == pytest.approx(0.04)
    np.testing.assert_allclose(weights.channel_means, [122.782, 117.001, 104.298], rtol=1e-6)
    assert weights.input_size == 150


@pytest.mark.parametrize("fraction", [0.0, 1e-7, 1e-6, 5e-6, 1e-5, 0.01, 0.3, 0.5, 0.9, 0.999999])
def test_truncated_real_file(model_bytes: bytes, fraction: float) -> None:
    cut = int(len(model_bytes) * fraction)
    with pytest.raises(ModelError) as excinfo:
        parse_resnet(model_bytes[:cut], name="cut.dat")
    assert_one_line_model_error(excinfo, "cut.dat")


def test_truncated_real_file_by_one_byte_and_trailing_garbage(model_bytes: bytes) -> None:
    with pytest.raises(ModelError, match="truncated"):
        parse_resnet(model_bytes[:-1])
    with pytest.raises(ModelError, match="trailing"):
        parse_resnet(model_bytes + b"\x00")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
    with pytest.raises(ModelError) as excinfo:
        parse_resnet(data, name="random.dat")
    assert_one_line_model_error(excinfo, "random.dat")


@pytest.mark.parametrize("seed", range(8))
def test_random_tail_after_real_header(model_bytes: bytes, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    cut = int(rng.integers(1, 600))  # inside the versions / input layer / first conv record
    tail = rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes()
    with pytest.raises(ModelError):
        parse_resnet(model_bytes[:cut] + tail)


def test_structural_edits_are_rejected(model_bytes: bytes) -> None:
    first_conv = model_bytes.index(pack_str("con_4"))
    params_header = pack_int(2) + pack_int(4736)
    at = model_bytes.index(params_header, first_conv)
    huge = model_bytes[:at] + pack_int(2) + pack_int(2**31 - 1) + model_bytes[at + len(params_header) :]
    with pytest.raises(ModelError, match="claims"):
        parse_resnet(huge)
    size_at = model_bytes.index(pack_int(150) + pack_int(150))
    smaller = model_bytes[:size_at] + pack_int(112) + pack_int(112) + model_bytes[size_at + 4 :]
    with pytest.raises(ModelError, match="input size"):
        parse_resnet(smaller)
    loss_at = model_bytes.index(b"loss_metric_2")
    other_loss = model_bytes[:loss_at] + b"loss_metric_3" + model_bytes[loss_at + 13 :]
    with pytest.raises(ModelError, match="loss layer"):
        parse_resnet(other_loss)
    data_start = at + len(params_header) + 3 * len(pack_int(1))  # then dims 1, 1, 1, then floats
    nan_weight = bytearray(model_bytes)
    nan_weight[data_start + 12 : data_start + 16] = struct.pack("<f", math.nan)  # the 4th filter value
    with pytest.raises(ModelError, match="non-finite"):
        parse_resnet(bytes(nan_weight))


# ------------------------------------------------------------------------------------------
# The PyTorch module.


def test_zero_extend_add_matches_dlib() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 64, 3, 3, generator=gen)  # conv path: more channels, smaller (8x8 -> 3x3)
    b = torch.randn(2, 32, 4, 4, generator=gen)  # pooled shortcut
    out = zero_extend_add(a, b)
    expected = torch.zeros(2, 64, 4, 4)
    expected[:, :64, :3, :3] += a
    expected[:, :32, :4, :4] += b
    assert out.shape == (2, 64, 4, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(zero_extend_add(b, a), expected, rtol=0, atol=0)
    same = torch.randn(2, 8, 5, 5, generator=gen)
    torch.testing.assert_close(zero_extend_add(same, same), same * 2)


def test_empty_model_shapes_and_state_dict_round_trip(weights) -> None:
    empty = DlibResNet.empty()
    loaded = DlibResNet.from_weights(weights)
    assert set(empty.state_dict()) == set(loaded.state_dict())
    empty.load_state_dict(loaded.state_dict())
    empty.eval()
    x = torch.rand(2, 3, 150, 150) * 255
    with torch.inference_mode():
        out = loaded(x)
        torch.testing.assert_close(empty(x), out)
    assert out.shape == (2, 128)
    assert not loaded.training
    with pytest.raises(ValueError, match="150"):
        loaded(torch.zeros(1, 3, 112, 112))


# ------------------------------------------------------------------------------------------
# Golden: the same chips through dlib and through DlibResNet.

GOLDEN_IMAGES = (
    "known/obama/obama.jpg",
    "known/biden/biden.jpg",
    "known/kit_harington/john1.jpeg",
    "known/rose_leslie/img1.jpg",
    "unknown/obama_and_biden.jpg",
    "unknown/kit_with_rose.jpg",
)


def test_golden_against_dlib(shared: Path, model_file: Path, weights) -> None:
    dlib = pytest.importorskip(
        "dlib", reason="dlib's Python bindings are not installed (test-only: `pip install dlib-bin`)"
    )
    from PIL import Image

    predictor_file = model_file.parent / "shape_predictor_5_face_landmarks.dat"
    if not predictor_file.is_file():
        pytest.skip(f"{predictor_file} is missing (face_recognition_models ships it)")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_file))
    recognizer = dlib.face_recognition_model_v1(str(model_file))

    chips = []
    for rel in GOLDEN_IMAGES:
        with Image.open(shared / "faces" / rel) as im:
            img = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        for box in detector(img, 1):
            chips.append(dlib.get_face_chip(img, predictor(img, box), size=150, padding=0.25))
    assert len(chips) >= 5, f"dlib found only {len(chips)} faces in {GOLDEN_IMAGES}"

    expected = np.array([recognizer.compute_face_descriptor(chip) for chip in chips], dtype=np.float32)

    model = DlibResNet.from_weights(weights)
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        got = model(batch).numpy()

    assert got.shape == expected.shape == (len(chips), 128)
    max_diff = float(np.abs(got - expected).max())
    assert max_diff < 1e-4, f"max |torch - dlib| = {max_diff:.3g} over {len(chips)} faces"
    # Not L2-normalised, like dlib's.
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


# ------------------------------------------------------------------------------------------
# The converted-weights cache.


def test_cache_is_written_reused_and_repaired(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir = tmp_path / "models"
    first = load_dlib_resnet(models_dir, source=model_file)
    assert not first.training
    caches = list(models_dir.glob("dlib-resnet-*.pt"))
    assert len(caches) == 1
    cache = caches[0]
    assert len(cache.stem.removeprefix("dlib-resnet-")) == 16
    assert [p.name for p in models_dir.iterdir()] == [cache.name]  # no temp files left behind
    x = torch.rand(2, 3, 150, 150) * 255
    with torch.inference_mode():
        reference = first(x)

    calls = {"parse": 0}
    real_parse = dlib_resnet.parse_resnet

    def counting_parse(*args, **kwargs):
        calls["parse"] += 1
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(dlib_resnet, "parse_resnet", counting_parse)

    second = load_dlib_resnet(models_dir, source=model_file)
    assert calls["parse"] == 0  # came from the cache
    assert not second.training
    assert second.distance_threshold == pytest.approx(0.6)
    with torch.inference_mode():
        torch.testing.assert_close(second(x), reference, rtol=0, atol=0)

    for damage in (b"not a torch file", cache.read_bytes()[: cache.stat().st_size // 2]):
        cache.write_bytes(damage)
        repaired = load_dlib_resnet(models_dir, source=model_file)
        with torch.inference_mode():
            torch.testing.assert_close(repaired(x), reference, rtol=0, atol=0)
        blob = torch.load(cache, map_location="cpu", weights_only=True)  # rewritten, loadable
        assert set(blob["state_dict"]) == set(first.state_dict())
    assert calls["parse"] == 2


def test_cache_for_a_different_source_is_not_reused(tmp_path: Path, model_file: Path) -> None:
    models_dir = tmp_path / "models"
    load_dlib_resnet(models_dir, source=model_file)
    (cache,) = models_dir.glob("dlib-resnet-*.pt")
    other = tmp_path / "other.dat"
    other.write_bytes(model_file.read_bytes() + b"\x00")  # another hash, and invalid
    with pytest.raises(ModelError, match="other.dat"):
        load_dlib_resnet(models_dir, source=other)


def test_load_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing.dat"):
        load_dlib_resnet(tmp_path, source=tmp_path / "missing.dat")
