"""Bounded fuzzing (hypothesis) of the two parsers that read untrusted bytes: image decoding and dlib's
model format. Each run is CI-sized (a fixed number of examples, derandomised so a failure reproduces);
raise FACEREC_FUZZ_EXAMPLES for a longer hunt.

The property: any input either parses or raises our own one-line error. Anything else (IndexError,
MemoryError, a hang, a crash) is a bug.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facerec.embedders.dlib_format import parse_resnet
from facerec.embedders.dlib_resnet import find_model_file
from facerec.errors import ImageError, ModelError
from facerec.images import decode_image

EXAMPLES = int(os.environ.get("FACEREC_FUZZ_EXAMPLES", "150"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def seeds() -> list[bytes]:
    """Small valid images of every format we read: mutations of real structure reach deeper than noise."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    out = []
    for fmt, mode in (
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("WEBP", "RGB"),
        ("PPM", "RGB"),
        ("PNG", "I;16"),
    ):
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


@st.composite
def mutated(draw, originals) -> bytes:
    """A valid file with a few bytes changed, a slice cut out or repeated, or cut short."""
    data = bytearray(draw(st.sampled_from(originals())))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["set", "cut", "repeat", "truncate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
        else:
            del data[at:]
    return bytes(data)


def check_image(data: bytes) -> None:
    try:
        pixels = decode_image(data, "fuzz.img", max_pixels=4_000_000)
    except ImageError as exc:
        assert str(exc).startswith("fuzz.img: ") and "\n" not in str(exc)
        return
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.flags.c_contiguous


@fuzz
@given(mutated(seeds))
def test_decode_image_survives_mutated_images(data: bytes) -> None:
    check_image(data)


@fuzz
@given(st.binary(max_size=4096))
def test_decode_image_survives_noise(data: bytes) -> None:
    check_image(data)


@lru_cache(maxsize=1)
def model_bytes() -> list[bytes]:
    try:
        return [find_model_file().read_bytes()]
    except ModelError:  # pragma: no cover - face_recognition_models is a dependency
        pytest.skip("face_recognition_models is not installed")


@settings(
    max_examples=max(10, EXAMPLES // 5),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated(model_bytes))
def test_dlib_parser_survives_mutated_models(data: bytes) -> None:
    """A changed byte in a weight is still a model (dlib has no checksum: the pinned SHA-256 guards that);
    anything structural must be a ModelError naming the file, never another exception."""
    try:
        weights = parse_resnet(data, name="fuzz.dat")
    except ModelError as exc:
        assert "fuzz.dat" in str(exc) and "\n" not in str(exc)
        return
    assert weights.fc_weight.shape == (128, 256)
