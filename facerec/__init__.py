"""facerec: face recognition you can trust — MTCNN detection, pretrained embedders, a crash-safe FAISS gallery.

Importing facerec loads no model and imports no torch; the names below are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .detect import Face
    from .enroll import EnrollReport
    from .errors import FacerecError
    from .gallery import Candidate
    from .identify import FaceMatch, ImageResult
    from .pipeline import FacePipeline, FoundFace
    from .recognizer import FaceRecognizer

# Public name -> the module that owns it.
_EXPORTS = {
    "Candidate": "gallery",
    "EnrollReport": "enroll",
    "Face": "detect",
    "FaceMatch": "identify",
    "FacePipeline": "pipeline",
    "FaceRecognizer": "recognizer",
    "FacerecError": "errors",
    "FoundFace": "pipeline",
    "ImageResult": "identify",
}

__all__ = [
    "Candidate",
    "EnrollReport",
    "Face",
    "FaceMatch",
    "FacePipeline",
    "FaceRecognizer",
    "FacerecError",
    "FoundFace",
    "ImageResult",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
