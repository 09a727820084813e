"""The contact sheet of a clustering run: one self-contained HTML page a person opens in a browser, and an
enroll-ready folder of face crops per group.

Thumbnails are inlined (base64 JPEG), so the page can be mailed or moved; the crops are square with context
around each face and large enough that `facerec enroll` finds the face again.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cluster import GROUPS_DIR, KNOWN_DIR, SHEET_NAME, ClusterResult, FaceRef
from .errors import ImageError
from .fileio import write_bytes_atomically
from .images import read_image

_THUMB = 96
_SHEET_FACES_PER_ROW = 40  # a row shows at most this many thumbnails; the groups folder has them all


def face_crop(
    image: np.ndarray, box: Sequence[float], *, margin: float = 0.4, min_side: int = 160, max_side: int = 512
) -> np.ndarray:
    """A square crop around the face with context, upscaled when small so a detector finds the face again
    (`facerec enroll` detects afresh in each photo)."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = image.shape[:2]
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    size = max(1, round(side))
    left, top, right, bottom = max(0, x0), max(0, y0), min(width, x0 + size), min(height, y0 + size)
    crop = image[top : max(bottom, top + 1), left : max(right, left + 1)]
    # A face near the border: pad to the square rather than stretch it.
    crop = cv2.copyMakeBorder(
        crop,
        top - y0,
        max(0, y0 + size - bottom),
        left - x0,
        max(0, x0 + size - right),
        cv2.BORDER_CONSTANT,
        value=(128, 128, 128),
    )
    if min(crop.shape[:2]) < min_side:
        scale = min_side / max(1, min(crop.shape[:2]))
        crop = cv2.resize(
            crop,
            (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            interpolation=cv2.INTER_CUBIC,
        )
    elif max(crop.shape[:2]) > max_side:
        crop = cv2.resize(crop, (max_side, max_side), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def _jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _thumbnail(crop: np.ndarray, size: int = _THUMB) -> np.ndarray:
    import cv2

    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _safe_folder_name(name: str) -> str:
    clean = "".join(c if c.isalnum() or c in " -_.," else "_" for c in name).strip(" .")
    return clean or "unnamed"


def write_contact_sheet(result: ClusterResult, out_dir: str | Path, *, thumbnails: int = _SHEET_FACES_PER_ROW) -> Path:
    """A self-contained HTML page of every group (biggest first), the known people and the unclustered
    faces, plus out_dir/groups/<id>/ holding one crop per face so that, after renaming the folders to
    people's names, `facerec enroll out_dir/groups` enrolls them. Returns the page's path.

    Each photo is decoded once however many faces it holds. The groups folder is built aside and swapped in,
    so a failed run leaves the previous one; the page is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, list[FaceRef]]] = []  # (kind, label, folder, faces)
    for cluster in result.clusters:
        rows.append(("group", cluster.id, f"{GROUPS_DIR}/{cluster.id}", cluster.faces))
    for person in result.known:
        rows.append(("known", person.name, f"{KNOWN_DIR}/{_safe_folder_name(person.name)}", person.faces))
    wanted: dict[str, list[tuple[int, int, FaceRef]]] = defaultdict(list)
    for row, (_kind, _label, _folder, faces) in enumerate(rows):
        for position, face in enumerate(faces):
            wanted[face.image].append((row, position, face))
    for position, face in enumerate(result.unclustered[:thumbnails]):
        wanted[face.image].append((len(rows), position, face))

    staging = Path(tempfile.mkdtemp(prefix=".sheet-", dir=out_dir))
    thumbs: dict[tuple[int, int], str] = {}
    unreadable: list[str] = []
    try:
        for image_path, spots in wanted.items():
            try:
                image = read_image(image_path)
            except ImageError as exc:
                unreadable.append(str(exc))
                continue
            for row, position, face in spots:
                crop = face_crop(image, face.box)
                if row < len(rows):
                    _kind, _label, folder, _faces = rows[row]
                    target = (
                        staging / folder / f"{Path(face.image).stem}-{face.key[:8]}-{face.key.rpartition('#')[2]}.jpg"
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(_jpeg(crop, 92))
                if position < thumbnails:
                    thumbs[(row, position)] = base64.b64encode(_jpeg(_thumbnail(crop), 80)).decode("ascii")
        for sub in (GROUPS_DIR, KNOWN_DIR):
            (staging / sub).mkdir(exist_ok=True)
            final, old = out_dir / sub, out_dir / f".{sub}.old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
            os.replace(staging / sub, final)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    page = _sheet_html(result, rows, thumbs, thumbnails, unreadable, out_dir)
    path = out_dir / SHEET_NAME
    write_bytes_atomically(path, page.encode("utf-8"), 0o644)
    return path


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px;margin:0 0 4px} p.summary{color:#555;margin:0 0 18px}
section{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 12px;margin:0 0 12px}
section.known{border-color:#8bc34a} section.unclustered{border-style:dashed}
header{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap;margin-bottom:8px}
header .id{font-weight:700;font-size:17px} header .size{color:#666}
code{background:#f0f0f0;padding:2px 6px;border-radius:4px;font-size:13px;user-select:all}
.faces{display:flex;flex-wrap:wrap;gap:4px}
.faces img{width:96px;height:96px;border-radius:4px;object-fit:cover;display:block}
.more{align-self:center;color:#666;padding:0 8px}
ul.problems{color:#a33;font-size:13px}
"""


def _sheet_html(
    result: ClusterResult,
    rows: list[tuple[str, str, str, list[FaceRef]]],
    thumbs: dict[tuple[int, int], str],
    limit: int,
    unreadable: list[str],
    out_dir: Path,
) -> str:
    esc = html.escape
    out_flag = f" --out {esc(str(out_dir))}"
    faces_total = (
        sum(len(c.faces) for c in result.clusters) + sum(len(k.faces) for k in result.known) + len(result.unclustered)
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>facerec cluster</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>facerec cluster</h1>",
        (
            f"<p class='summary'>{result.photos} photos, {faces_total} faces: {len(result.clusters)} groups, "
            f"{len(result.known)} known {'person' if len(result.known) == 1 else 'people'}, "
            f"{len(result.unclustered)} {'face' if len(result.unclustered) == 1 else 'faces'} unclustered. "
            f"Name a group with <code>facerec name GROUP_ID NAME{out_flag}</code>, or rename folders under "
            f"<code>{esc(str(out_dir / GROUPS_DIR))}</code> and run "
            f"<code>facerec enroll {esc(str(out_dir / GROUPS_DIR))}</code>.</p>"
        ),
    ]

    def strip(row: int, faces: list[FaceRef]) -> str:
        cells = [
            f"<img src='data:image/jpeg;base64,{thumbs[(row, i)]}' alt='' title='{esc(face.image)}'>"
            for i, face in enumerate(faces[:limit])
            if (row, i) in thumbs
        ]
        if len(faces) > limit:
            cells.append(f"<span class='more'>+{len(faces) - limit} more</span>")
        return "<div class='faces'>" + "".join(cells) + "</div>"

    for row, (kind, label, _folder, faces) in enumerate(rows):
        noun = "face" if len(faces) == 1 else "faces"
        if kind == "group":
            hint = f"<code>facerec name {esc(label)} NAME{out_flag}</code>"
            parts.append(
                f"<section class='group' id='{esc(label)}'><header><span class='id'>{esc(label)}</span>"
                f"<span class='size'>{len(faces)} {noun}</span>{hint}</header>{strip(row, faces)}</section>"
            )
        else:
            parts.append(
                f"<section class='known'><header><span class='id'>{esc(label)}</span>"
                f"<span class='size'>{len(faces)} {noun} · already in the gallery</span></header>"
                f"{strip(row, faces)}</section>"
            )
    if result.unclustered:
        noun = "face" if len(result.unclustered) == 1 else "faces"
        parts.append(
            f"<section class='unclustered'><header><span class='id'>unclustered</span>"
            f"<span class='size'>{len(result.unclustered)} {noun} in no group of at least the minimum size</span>"
            f"</header>{strip(len(rows), result.unclustered)}</section>"
        )
    problems = [f"{p.image}: {p.reason}" for p in result.problems] + unreadable
    if problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in problems[:200])
        more = f"<li>… and {len(problems) - 200} more</li>" if len(problems) > 200 else ""
        parts.append(
            f"<section><header><span class='id'>problems</span><span class='size'>{len(problems)}</span></header>"
            f"<ul class='problems'>{items}{more}</ul></section>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
