"""The on-disk gallery: SQLite rows (the truth), FAISS index caches, typed metadata, the write lock."""

from .meta import FORMAT_VERSION, Adaptation, GalleryMeta
from .names import validate_name
from .search import Candidate, PeopleSearch
from .store import DB_NAME, LOCK_NAME, FaceRecord, Gallery, no_gallery

__all__ = [
    "DB_NAME",
    "FORMAT_VERSION",
    "LOCK_NAME",
    "Adaptation",
    "Candidate",
    "FaceRecord",
    "Gallery",
    "GalleryMeta",
    "PeopleSearch",
    "no_gallery",
    "validate_name",
]
