"""Read dlib's `dlib_face_recognition_resnet_model_v1.dat` with numpy alone.

dlib writes a network with its own serialisation (see dlib/serialize.h and dlib/dnn/core.h):

* integers: a control byte (low nibble = how many bytes follow, bit 0x80 = negative), then the
  absolute value, little-endian;
* strings: their length as such an integer, then the bytes; bools: one ASCII byte '1' or '0';
* float/double: two integers, an int64 mantissa and an int16 exponent (value = m * 2**e; the
  exponents 32000/32001/32002 stand for +inf/-inf/nan);
* tensors: version 2, num_samples, k, nr, nc, then raw little-endian float32 values (NKRC);
  alias tensors: version 1 and the four dimensions only.

A network is written from the loss layer inwards: the loss layer, then one version integer per
layer wrapper from the output down to the input (tag and skip wrappers carry nothing else, so the
bytes cannot tell them apart from each other: the wiring comes from dlib's `anet_type`), then the
input layer, then each computational layer's record from the input outwards.

We parse exactly the `anet_type` of dlib's dnn_face_recognition_ex.cpp and nothing else: every
version, layer name and hyper-parameter is checked against that definition, so that a file which
parses is a file our PyTorch rebuild computes exactly.  Anything malformed raises `ModelError`
(one line naming the file) before any large allocation.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from facerec.errors import ModelError

MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"

INPUT_SIZE = 150
STEM_FILTERS = 32
EMBEDDING_DIM = 128

# The residual blocks of anet_type from the input outwards: (in_channels, out_channels, downsample).
# alevel4 = 3 x ares<32>; alevel3 = ares_down<64> + 3 x ares<64>; alevel2 = ares_down<128> +
# 2 x ares<128>; alevel1 = ares_down<256> + 2 x ares<256>; alevel0 = ares_down<256>.
RESIDUAL_BLOCKS: tuple[tuple[int, int, bool], ...] = (
    (32, 32, False),
    (32, 32, False),
    (32, 32, False),
    (32, 64, True),
    (64, 64, False),
    (64, 64, False),
    (64, 64, False),
    (64, 128, True),
    (128, 128, False),
    (128, 128, False),
    (128, 256, True),
    (256, 256, False),
    (256, 256, False),
    (256, 256, True),
)

NUM_CONV_LAYERS = 1 + 2 * len(RESIDUAL_BLOCKS)  # 29: the stem and two per block
NUM_AFFINE_LAYERS = NUM_CONV_LAYERS

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INT16_MIN, _INT16_MAX = -(1 << 15), (1 << 15) - 1
_INT32_MAX = (1 << 31) - 1
_MAX_STRING = 256
_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_CONV_MODE = 0
_FC_NO_BIAS = 1


@dataclass
class DlibResNetWeights:
    """Everything the PyTorch rebuild needs, already in torch's layouts (float32)."""

    channel_means: np.ndarray  # (3,): R, G, B means subtracted before dividing by 256
    convs: list[tuple[np.ndarray, np.ndarray]]  # (weight OIHW, bias O), input outwards
    affines: list[tuple[np.ndarray, np.ndarray]]  # (gamma C, beta C), one after each conv
    fc_weight: np.ndarray  # (128, 256): torch Linear layout (out, in), no bias
    distance_threshold: float = 0.6  # loss_metric's "same person" distance
    margin: float = 0.04
    input_size: int = INPUT_SIZE
    layer_names: list[str] = field(default_factory=list)  # dlib layer records, input outwards


class DlibReader:
    """A strict cursor over dlib-serialised bytes: every read is bounds-checked and raises ModelError."""

    def __init__(self, data: bytes | bytearray | memoryview, name: str = MODEL_FILENAME) -> None:
        self._buf = memoryview(data).cast("B")
        self.name = name
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._buf) - self.pos

    def error(self, message: str, at: int | None = None) -> ModelError:
        """A one-line ModelError naming the file and the offset."""
        where = self.pos if at is None else at
        return ModelError(
            f"{self.name}: not a valid dlib face-recognition model ({message} at byte {where}); "
            "reinstall it with `pip install --force-reinstall face_recognition_models`"
        )

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining:
            raise self.error(f"truncated: {what} needs {n} bytes, {self.remaining} left")
        chunk = self._buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self, what: str = "integer", lo: int = _INT64_MIN, hi: int = _INT64_MAX) -> int:
        """dlib's packed integer, range-checked against [lo, hi]."""
        start = self.pos
        control = self._take(1, what)[0]
        if control & 0x70:
            raise self.error(f"bad control byte 0x{control:02x} for {what}", start)
        size = control & 0x0F
        if size > 8:
            raise self.error(f"{what} claims {size} bytes", start)
        value = int.from_bytes(self._take(size, what), "little")
        if control & 0x80:
            value = -value
        if not lo <= value <= hi:
            raise self.error(f"{what} = {value} is outside [{lo}, {hi}]", start)
        return value

    def read_string(self, what: str = "string", max_len: int = _MAX_STRING) -> str:
        """A length-prefixed ASCII string (dlib only writes short identifiers here)."""
        start = self.pos
        length = self.read_int(f"length of {what}", 0, max_len)
        raw = bytes(self._take(length, what))
        if not raw.isascii():
            raise self.error(f"{what} is not ASCII", start)
        return raw.decode("ascii")

    def expect_string(self, expected: str, what: str) -> None:
        start = self.pos
        got = self.read_string(what)
        if got != expected:
            raise self.error(f"{what} is {got!r}, expected {expected!r}", start)

    def read_bool(self, what: str = "bool") -> bool:
        start = self.pos
        byte = self._take(1, what)[0]
        if byte == 0x31:
            return True
        if byte == 0x30:
            return False
        raise self.error(f"{what} byte 0x{byte:02x} is neither '1' nor '0'", start)

    def read_double(self, what: str = "double", finite: bool = True) -> float:
        """float_details: int64 mantissa, int16 exponent; value = mantissa * 2**exponent."""
        start = self.pos
        mantissa = self.read_int(f"mantissa of {what}", _INT64_MIN, _INT64_MAX)
        exponent = self.read_int(f"exponent of {what}", _INT16_MIN, _INT16_MAX)
        if exponent in _FLOAT_SPECIALS:
            value = _FLOAT_SPECIALS[exponent]
        else:
            try:
                value = math.ldexp(float(mantissa), exponent)
            except OverflowError:
                value = math.inf
        if finite and not math.isfinite(value):
            raise self.error(f"{what} is not finite", start)
        return value

    def read_tensor(self, what: str = "tensor") -> np.ndarray:
        """A version-2 tensor as a float32 (N, K, R, C) array; sizes are checked before allocating."""
        start = self.pos
        version = self.read_int(f"version of {what}")
        if version != 2:
            raise self.error(f"{what} has tensor version {version}, expected 2", start)
        dims = tuple(self.read_int(f"dimension of {what}", 0, _INT32_MAX) for _ in range(4))
        count = math.prod(dims)
        if count * 4 > self.remaining:
            raise self.error(f"truncated: {what} {dims} claims {count} floats, only {self.remaining} bytes left", start)
        raw = self._take(count * 4, what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        """An alias_tensor: version 1 and its four dimensions (no data, no offset)."""
        start = self.pos
        version = self.read_int(f"version of {what}")
        if version != 1:
            raise self.error(f"{what} has alias version {version}, expected 1", start)
        n, k, r, c = (self.read_int(f"dimension of {what}", 0, _INT32_MAX) for _ in range(4))
        return n, k, r, c

    def expect_end(self) -> None:
        if self.remaining:
            raise self.error(f"{self.remaining} unexpected trailing bytes")


# ------------------------------------------------------------------------------------------
# The wiring of anet_type, input outwards.


class _Wrapper(NamedTuple):
    kind: str  # "layer" (an add_layer, with a record), "tag" or "skip" (version only)
    layer: str = ""  # dlib's record name: con_4, affine_, relu_, max_pool_2, avg_pool_2, add_prev_, fc_2
    args: tuple[int, ...] = ()


def _conv(in_c: int, out_c: int, k: int, stride: int) -> _Wrapper:
    pad = 0 if stride != 1 else k // 2  # dlib's default: stride-2 convolutions are unpadded
    return _Wrapper("layer", "con_4", (out_c, in_c, k, k, stride, stride, pad, pad))


def anet_wrappers() -> list[_Wrapper]:
    """Every layer wrapper of dlib's anet_type, from the input outwards (tags and skips included)."""
    seq = [
        _conv(3, STEM_FILTERS, 7, 2),
        _Wrapper("layer", "affine_", (STEM_FILTERS,)),
        _Wrapper("layer", "relu_"),
        _Wrapper("layer", "max_pool_2", (3, 3, 2, 2, 0, 0)),
    ]
    for in_c, out_c, down in RESIDUAL_BLOCKS:
        seq += [
            _Wrapper("tag"),  # tag1
            _conv(in_c, out_c, 3, 2 if down else 1),
            _Wrapper("layer", "affine_", (out_c,)),
            _Wrapper("layer", "relu_"),
            _conv(out_c, out_c, 3, 1),
            _Wrapper("layer", "affine_", (out_c,)),
        ]
        if down:  # add_prev2<avg_pool<2,2,2,2,skip1<tag2<block>>>>
            seq += [_Wrapper("tag"), _Wrapper("skip"), _Wrapper("layer", "avg_pool_2", (2, 2, 2, 2, 0, 0))]
        seq += [_Wrapper("layer", "add_prev_"), _Wrapper("layer", "relu_")]
    seq += [
        _Wrapper("layer", "avg_pool_2", (0, 0, 1, 1, 0, 0)),  # avg_pool_everything
        _Wrapper("layer", "fc_2", (EMBEDDING_DIM, RESIDUAL_BLOCKS[-1][1])),
    ]
    return seq


# ------------------------------------------------------------------------------------------


def parse_resnet(data: bytes | bytearray | memoryview, name: str = MODEL_FILENAME) -> DlibResNetWeights:
    """Parse dlib's face-recognition ResNet; raises ModelError (naming `name`) on any malformed input.

    Strict on purpose: the file is checked against anet_type layer by layer, so a damaged or
    different network fails here with one line instead of producing wrong descriptors later.
    """
    reader = DlibReader(data, name)
    try:
        return _parse(reader)
    except ModelError:
        raise
    except (IndexError, ValueError, OverflowError, struct.error, UnicodeDecodeError) as exc:  # belt and braces
        raise reader.error(f"malformed data ({type(exc).__name__}: {exc})") from exc


def _parse(r: DlibReader) -> DlibResNetWeights:
    start = r.pos
    version = r.read_int("add_loss_layer version")
    if version != 1:
        raise r.error(f"add_loss_layer version {version}, expected 1", start)
    r.expect_string("loss_metric_2", "loss layer")
    margin = r.read_double("loss margin")
    threshold = r.read_double("distance threshold")
    if not threshold > 0:
        raise r.error(f"distance threshold {threshold} is not positive")

    wrappers = anet_wrappers()
    innermost_version = 2
    for i, wrapper in enumerate(reversed(wrappers)):
        start = r.pos
        version = r.read_int("layer wrapper version")
        innermost = i == len(wrappers) - 1
        allowed = (1,) if wrapper.kind != "layer" else ((2, 3) if innermost else (2,))
        if version not in allowed:
            raise r.error(
                f"layer wrapper {i} from the output has version {version}, expected {allowed[0]} "
                f"({wrapper.kind} {wrapper.layer}); not dlib's face-recognition anet_type",
                start,
            )
        if innermost:
            innermost_version = version

    r.expect_string("input_rgb_image_sized", "input layer")
    means = np.array([r.read_double(f"{c} channel mean") for c in ("red", "green", "blue")], np.float32)
    start = r.pos
    size = (r.read_int("input rows"), r.read_int("input columns"))
    if size != (INPUT_SIZE, INPUT_SIZE):
        raise r.error(f"input size {size}, expected {(INPUT_SIZE, INPUT_SIZE)}", start)

    convs: list[tuple[np.ndarray, np.ndarray]] = []
    affines: list[tuple[np.ndarray, np.ndarray]] = []
    fc_weight: np.ndarray | None = None
    names: list[str] = []
    records = [w for w in wrappers if w.kind == "layer"]
    for index, wrapper in enumerate(records):
        what = f"layer {index} ({wrapper.layer})"
        r.expect_string(wrapper.layer, f"name of {what}")
        names.append(wrapper.layer)
        if wrapper.layer == "con_4":
            convs.append(_read_conv(r, wrapper.args, what))
        elif wrapper.layer == "affine_":
            affines.append(_read_affine(r, wrapper.args[0], what))
        elif wrapper.layer in ("max_pool_2", "avg_pool_2"):
            start = r.pos
            got = tuple(r.read_int(f"pooling parameter of {what}") for _ in range(6))
            if got != wrapper.args:
                raise r.error(f"{what} has nr, nc, strides, pads {got}, expected {wrapper.args}", start)
        elif wrapper.layer == "fc_2":
            fc_weight = _read_fc(r, wrapper.args, what)
        # relu_ and add_prev_ carry nothing but their name.
        for flag in ("setup called", "gradient stale", "output disabled"):
            r.read_bool(f"'{flag}' flag of {what}")
        for buf in ("x_grad", "cached_output", "params_grad"):
            r.read_tensor(f"{buf} of {what}")
        if index == 0 and innermost_version == 3:
            start = r.pos
            factor = r.read_int(f"sample expansion factor of {what}")
            if factor != 1:
                raise r.error(f"sample expansion factor {factor}, expected 1", start)
    r.expect_end()

    assert fc_weight is not None and len(convs) == NUM_CONV_LAYERS and len(affines) == NUM_AFFINE_LAYERS
    return DlibResNetWeights(
        channel_means=means,
        convs=convs,
        affines=affines,
        fc_weight=fc_weight,
        distance_threshold=threshold,
        margin=margin,
        input_size=INPUT_SIZE,
        layer_names=names,
    )


def _finite(r: DlibReader, array: np.ndarray, what: str, at: int) -> np.ndarray:
    if not np.isfinite(array).all():
        raise r.error(f"{what} holds non-finite values", at)
    return array


def _read_multipliers(r: DlibReader, what: str) -> None:
    for m in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
        r.read_double(f"{m} multiplier of {what}")


def _read_conv(r: DlibReader, args: tuple[int, ...], what: str) -> tuple[np.ndarray, np.ndarray]:
    out_c, in_c, kh, kw, sy, sx, py, px = args
    n_filters = out_c * in_c * kh * kw
    start = r.pos
    params = r.read_tensor(f"params of {what}")
    if params.shape != (n_filters + out_c, 1, 1, 1):
        raise r.error(f"{what} params have shape {params.shape}, expected {(n_filters + out_c, 1, 1, 1)}", start)
    _finite(r, params, f"params of {what}", start)
    here = r.pos
    got = tuple(r.read_int(f"hyper-parameter of {what}") for _ in range(7))
    if got != (out_c, kh, kw, sy, sx, py, px):
        raise r.error(
            f"{what} has num_filters, nr, nc, strides, pads {got}, expected {(out_c, kh, kw, sy, sx, py, px)}", here
        )
    here = r.pos
    if r.read_alias(f"filters of {what}") != (out_c, in_c, kh, kw):
        raise r.error(f"{what} filters alias is not {(out_c, in_c, kh, kw)}", here)
    here = r.pos
    if r.read_alias(f"biases of {what}") != (1, out_c, 1, 1):
        raise r.error(f"{what} biases alias is not {(1, out_c, 1, 1)}", here)
    _read_multipliers(r, what)
    flat = params.reshape(-1)
    return flat[:n_filters].reshape(out_c, in_c, kh, kw).copy(), flat[n_filters:].copy()


def _read_affine(r: DlibReader, channels: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    start = r.pos
    params = r.read_tensor(f"params of {what}")
    if params.shape != (2 * channels, 1, 1, 1):
        raise r.error(f"{what} params have shape {params.shape}, expected {(2 * channels, 1, 1, 1)}", start)
    _finite(r, params, f"params of {what}", start)
    for part in ("gamma", "beta"):
        here = r.pos
        if r.read_alias(f"{part} of {what}") != (1, channels, 1, 1):
            raise r.error(f"{what} {part} alias is not {(1, channels, 1, 1)}", here)
    here = r.pos
    mode = r.read_int(f"mode of {what}")
    if mode != _CONV_MODE:
        raise r.error(f"{what} mode {mode}, expected {_CONV_MODE} (per-channel)", here)
    flat = params.reshape(-1)
    return flat[:channels].copy(), flat[channels:].copy()


def _read_fc(r: DlibReader, args: tuple[int, ...], what: str) -> np.ndarray:
    outputs, inputs = args
    start = r.pos
    got = (r.read_int(f"num_outputs of {what}"), r.read_int(f"num_inputs of {what}"))
    if got != (outputs, inputs):
        raise r.error(f"{what} is {got[1]} -> {got[0]}, expected {inputs} -> {outputs}", start)
    start = r.pos
    params = r.read_tensor(f"params of {what}")
    if params.shape != (inputs, outputs, 1, 1):
        raise r.error(f"{what} params have shape {params.shape}, expected {(inputs, outputs, 1, 1)}", start)
    _finite(r, params, f"params of {what}", start)
    here = r.pos
    if r.read_alias(f"weights of {what}") != (inputs, outputs, 1, 1):
        raise r.error(f"{what} weights alias is not {(inputs, outputs, 1, 1)}", here)
    r.read_alias(f"biases of {what}")  # unused: this layer has no bias
    here = r.pos
    mode = r.read_int(f"bias mode of {what}")
    if mode != _FC_NO_BIAS:
        raise r.error(f"{what} bias mode {mode}, expected {_FC_NO_BIAS} (no bias)", here)
    _read_multipliers(r, what)
    # dlib stores (in, out) and computes x @ W; torch's Linear wants (out, in).
    return np.ascontiguousarray(params.reshape(inputs, outputs).T)
