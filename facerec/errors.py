"""Exceptions of our own, so the CLI can turn every expected failure into one line and an exit code.

Every message names the file (or gallery, or model) involved and says what to do about it.
"""

from __future__ import annotations

from typing import Any, Protocol


class Report(Protocol):
    """What a command reports (enroll, watch): plain data for --json."""

    def to_dict(self) -> dict[str, Any]: ...


class FacerecError(Exception):
    """Base class: an expected failure with a user-facing message."""

    exit_code = 1


class InputError(FacerecError):
    """A path or argument given by the user cannot be used."""


class ImageError(InputError):
    """A file cannot be read as an image (missing, not an image, truncated, too large or too small)."""


class NoFaceError(InputError):
    """An image holds no usable face."""


class InvalidNameError(InputError):
    """A person name that cannot be stored safely."""


class SettingsError(InputError):
    """A FACEREC_* environment variable holds a value that cannot be used."""

    exit_code = 2


class ModelError(FacerecError):
    """A model or its weights cannot be found, downloaded, verified or loaded."""

    exit_code = 2


class GalleryError(FacerecError):
    """The gallery cannot be opened or written."""


class GalleryNotFoundError(GalleryError):
    exit_code = 2


class GalleryMismatchError(GalleryError):
    """The gallery was built with another model, weights or format version."""

    exit_code = 2


class GalleryBusyError(GalleryError):
    """Another process holds the gallery lock for longer than we are willing to wait."""


class Interrupted(FacerecError):
    """Ctrl-C during a long command; `report` holds what was finished (and kept) before it."""

    exit_code = 130

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


class SourceError(InputError):
    """A camera, video file or stream that cannot be opened at all."""

    exit_code = 2


class StreamLostError(FacerecError):
    """A live source that disappeared and did not come back within the reconnect time."""
