"""facerec: face recognition you can trust — MTCNN detection, pretrained embedders, a crash-safe FAISS gallery.

Importing facerec loads no model; models load on first use.
"""

__version__ = "0.1.0"

from .detect import Face  # noqa: E402
from .errors import FacerecError  # noqa: E402
from .gallery import Candidate  # noqa: E402
from .recognizer import EnrollReport, FaceMatch, FaceRecognizer, ImageResult  # noqa: E402

__all__ = ["Candidate", "EnrollReport", "Face", "FaceMatch", "FaceRecognizer", "FacerecError", "ImageResult", "__version__"]
