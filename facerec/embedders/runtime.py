"""Which engine runs an embedder's network for inference: PyTorch, or ONNX Runtime on the CPU.

Why two: on a 2-core AMD EPYC, dlib-resnet's forward pass at batch 2 and 4 (one or two faces and their mirror
images, what `identify` and `watch` embed at a time) took 0.63x and 0.69x of PyTorch's time in ONNX Runtime
(interleaved medians of 40 calls; PyTorch's oneDNN convolutions reorder their weights at every call, which
costs most on the 256-channel layers at 4x4 and smaller). MTCNN's nets measured 1.0-1.4x in ONNX Runtime and
stay on PyTorch (facerec.mtcnn); so do training and the GPU.

ONNX Runtime runs a network as loaded from its weights file (an adapted model's checkpoint included), exported
once and cached in the models folder beside the file's other conversions. A cached or fresh export is used
only after it gives PyTorch's outputs on a fixed input, so a stale, truncated or miscompiled file costs an
export, never wrong vectors; when exporting fails, PyTorch runs the network (one warning). A network whose
weights changed since loading (tracked by its tensors' in-place version counters) runs in PyTorch: `adapt`
trains copies and measures each a few times, where an export each time would cost more than it saves.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ..fileio import write_bytes_atomically

log = logging.getLogger(__name__)

OPSET = 17
# An export is used when its outputs on the check input are this close to PyTorch's (raw outputs of magnitude
# ~0.1-10; the two engines differ by ~3e-7 on dlib-resnet).
TOLERANCE = 1e-4


def onnx_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's package are installed (found, not imported: importing
    onnx takes ~1 s, which a cached export never needs)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def choose(setting: str, device: str) -> str:
    """The engine for a device under FACEREC_RUNTIME: 'auto' takes ONNX Runtime on the CPU when it is
    installed; 'onnx' insists (an error when it cannot be had); 'torch' never uses it."""
    if setting == "torch" or (setting == "auto" and (device != "cpu" or not onnx_available())):
        return "torch"
    if device != "cpu":
        raise ModelError(f"FACEREC_RUNTIME=onnx runs on the CPU only, not {device}; use --device cpu or unset it")
    if not onnx_available():
        raise ModelError("FACEREC_RUNTIME=onnx needs ONNX Runtime: pip install onnxruntime onnx (or unset it)")
    return "onnx"


@dataclass(frozen=True)
class Runner:
    """How one embedder runs its network: `engine` ('torch' or 'onnx'), the file that caches the export of the
    weights as loaded, and what makes the fixed check input from chips (the model family's own scaling)."""

    engine: str
    cache: Path
    to_input: Callable[[np.ndarray], torch.Tensor]
    size: int

    def __call__(self, module: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
        """The network's raw outputs (N, dim) for a CPU or GPU batch (N, 3, H, W)."""
        session = None
        if self.engine == "onnx" and not module.training:  # a module in training mode stays as PyTorch runs it
            session = _session(module, self, torch.get_num_threads())
        if session is None:
            return _in_torch(module, inputs)
        return session.run(None, {"x": inputs.contiguous().numpy()})[0]

    def check_input(self) -> torch.Tensor:
        chips = np.random.default_rng(0).integers(0, 256, (2, self.size, self.size, 3), dtype=np.uint8)
        return self.to_input(chips)


def _in_torch(module: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """PyTorch's raw outputs, channels last (the layout its CPU convolutions and cuDNN run fastest in)."""
    return module(inputs.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()


@dataclass
class _Loaded:
    """A network as loaded from its weights file: its parameters and buffers and their state then
    (`fingerprint`), its verified export once made, and its sessions by torch thread count (None: it cannot
    have any)."""

    tensors: list[torch.Tensor]
    fingerprint: tuple
    model: bytes = b""
    sessions: dict[int, Any] | None = field(default_factory=dict)


_LOCK = threading.Lock()
_LOADED: weakref.WeakKeyDictionary[torch.nn.Module, _Loaded] = weakref.WeakKeyDictionary()


def fingerprint(tensors: list[torch.Tensor]) -> tuple:
    """Changes whenever one of the tensors is moved or changed in place (an optimiser step, a loaded state
    dict): each one's storage and PyTorch's in-place version counter. Kept as a list, not read from the
    state dict at each call: that took 3 ms for InceptionResnetV1's 714 tensors."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


def loaded(module: torch.nn.Module) -> None:
    """Mark `module` as its weights file's network: the one ONNX Runtime may run, from the export cached
    beside the file's other conversions."""
    with _LOCK:
        if module not in _LOADED:
            tensors = list(module.state_dict(keep_vars=True).values())
            _LOADED[module] = _Loaded(tensors, fingerprint(tensors))


def _session(module: torch.nn.Module, runner: Runner, threads: int) -> Any | None:
    """An ONNX Runtime session of the loaded network on `threads` threads, or None (PyTorch runs it): for a
    network whose weights changed since loading (`adapt` trains copies, never the loaded network, and
    measures each a few times: an export each time would cost more than it saves), and after an export
    failed (one warning)."""
    with _LOCK:
        state = _LOADED.get(module)
        if state is None or state.sessions is None or state.fingerprint != fingerprint(state.tensors):
            return None
        if not state.model:
            verified = _verified(module, runner, threads)
            if verified is None:
                state.sessions = None
                return None
            state.model, state.sessions[threads] = verified
        if threads not in state.sessions:
            state.sessions[threads] = _new_session(state.model, threads)
        return state.sessions[threads]


def _verified(module: torch.nn.Module, runner: Runner, threads: int) -> tuple[bytes, Any] | None:
    """The network exported to ONNX (from the cache when it checks out) and a session of it on `threads`
    threads; None when exporting failed or disagreed with PyTorch."""
    cache = runner.cache
    if cache.is_file():
        try:
            model = cache.read_bytes()
            session = _agreeing(module, runner, model, threads)
            if session is not None:
                return model, session
            log.warning("ignoring %s: its outputs differ from the network's; exporting it again", cache)
        except Exception as exc:  # unreadable or not a model: export again
            log.warning("ignoring unusable %s (%s: %s); exporting it again", cache, type(exc).__name__, exc)
    try:
        model = _export(module, runner.check_input())
        session = _agreeing(module, runner, model, threads)
    except Exception as exc:
        log.warning("cannot run the embedder in ONNX Runtime (%s: %s); using PyTorch", type(exc).__name__, exc)
        return None
    if session is None:
        log.warning("the ONNX export of the embedder differs from PyTorch's outputs; using PyTorch")
        return None
    try:
        write_bytes_atomically(cache, model, mode=0o644)
    except OSError as exc:
        log.warning("cannot cache the ONNX export in %s (%s); exporting again next time", cache, exc)
    return model, session


def _export(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """TorchScript-based export, batch size left free. The exporter's deprecation and tracing notices are
    silenced under the lock that serialises exports (warning filters are process-wide)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to any binary file object
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            opset_version=OPSET,
        )
    return buffer.getvalue()


def _agreeing(module: torch.nn.Module, runner: Runner, model: bytes, threads: int) -> Any | None:
    """A session of `model` when its outputs on the check input are PyTorch's, else None."""
    example = runner.check_input()
    with torch.inference_mode():
        expected = _in_torch(module, example)
    session = _new_session(model, threads)
    got = session.run(None, {"x": example.numpy()})[0]
    return session if got.shape == expected.shape and np.abs(got - expected).max() <= TOLERANCE else None


def _new_session(model: bytes, threads: int) -> Any:
    """A session on `threads` intra-op threads that sleep when idle (spinning ones would take the core
    facerec's detection threads work on beside the embedding)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
