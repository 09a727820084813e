"""Drawing boxes and names on a copy of an image, for people to check what facerec saw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

_KNOWN = (40, 200, 40)
_UNKNOWN = (220, 40, 40)


def draw_matches(image: np.ndarray, matches: Sequence) -> np.ndarray:
    """An RGB copy with one box and label per match (anything with .box, .name, .similarity)."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(out.shape[:2]) / 500))
    scale = max(0.4, max(out.shape[:2]) / 1400)
    for match in matches:
        x1, y1, x2, y2 = (int(round(v)) for v in match.box)
        colour = _UNKNOWN if match.name == "unknown" else _KNOWN
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = match.name if match.similarity is None else f"{match.name} {match.similarity:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y1 - th - base - 4)
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 4), colour, cv2.FILLED)
        cv2.putText(
            out, label, (x1 + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA
        )
    return out


def write_image(image: np.ndarray, out_dir: Path, stem: str) -> Path:
    """Save an RGB image as out_dir/stem.jpg never overwriting an existing file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {out_dir} ({exc.strerror}); choose another --annotate folder") from None
    target = out_dir / f"{stem}.jpg"
    n = 1
    while target.exists():
        target = out_dir / f"{stem}-{n}.jpg"
        n += 1
    if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise InputError(f"cannot write {target}; check that {out_dir} is writable")
    return target
