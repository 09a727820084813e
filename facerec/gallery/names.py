"""Person names as the gallery stores them: checked once, wherever a name comes from (folder, file, CLI)."""

from __future__ import annotations

import unicodedata

from ..errors import InvalidNameError


def validate_name(name: str) -> str:
    """A person name as stored: NFC-normalised and trimmed. Any letters are fine (names are data, never paths)."""
    clean = unicodedata.normalize("NFC", name).strip() if isinstance(name, str) else ""
    problem = None
    if not clean:
        problem = "it is empty"
    elif any(0xD800 <= ord(c) <= 0xDFFF for c in clean):
        problem = "it is not valid UTF-8 (rename the folder or file)"
    elif "/" in clean or "\\" in clean or clean in (".", ".."):
        problem = "it contains a path separator"
    elif any(unicodedata.category(c) in ("Cc", "Cf") for c in clean):
        problem = "it contains control characters"
    elif len(clean) > 200:
        problem = "it is longer than 200 characters"
    if problem:
        raise InvalidNameError(f"invalid person name {name!r}: {problem}")
    return clean
