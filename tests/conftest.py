"""Shared fixtures: where the real face data is, and the test weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def find_shared() -> Path | None:
    """The real data set beside the project (FACEREC_SHARED overrides), or None when it is absent."""
    env = os.environ.get("FACEREC_SHARED")
    candidate = Path(env) if env else PROJECT_ROOT.parent / "shared"
    return candidate if (candidate / "faces").is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    """`../shared`; tests that need real faces or video skip when it is missing."""
    path = find_shared()
    if path is None:
        pytest.skip("../shared (real faces and video) is not beside the project; see ../shared/README.md")
    return path
