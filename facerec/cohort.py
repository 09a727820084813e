"""Background cohorts: faces of people in no gallery, which calibrate a gallery's decision (facerec.decision).

The shipped cohort is LFW's half A for dlib-resnet (bench/make_cohort.py). A user's own strangers — photos
from the camera or source the gallery will serve, of nobody enrolled — make a cohort in the deployment's
style, which is what holds the false-accept rate where LFW's does not (README, "Operating points"):
`facerec calibrate --strangers DIR` embeds them and keeps them in the gallery folder as `strangers.npz`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .fileio import atomic_path, sha256_bytes

if TYPE_CHECKING:
    from .session import GallerySession

STRANGERS_FILE = "strangers.npz"
# The faces of a camera a gallery was adapted to (`adapt --target`), embedded by the adapted weights: its
# strangers in the camera's own style, kept beside the user's (which are never overwritten by adapting).
CAMERA_STRANGERS_FILE = "camera-strangers.npz"
# Below this many faces the cohort's statistics are too thin to trust (bench/calibration.py: 500
# normalisation faces held the rate only within 1.36x; 1,000 or more within 1.1x).
MIN_STRANGERS = 200
GOOD_STRANGERS = 2500
NORMALISATION_SHARE = 4 / 7  # 2,000 : 1,500, as the shipped cohort


@dataclass(frozen=True)
class Cohort:
    """`normalisation` faces give each person's and each query's score statistics; `calibration` faces
    (other photos) are the strangers thresholds are set on."""

    normalisation: np.ndarray
    calibration: np.ndarray
    description: str
    # Faces from where the gallery is used (the user's strangers, the adapted camera's), not the shipped LFW
    # ones: nothing to warn about photos unlike the cohort.
    deployment: bool = False

    @property
    def raw(self) -> bool:
        """No normalisation faces: raw cosines are compared. The faces of the camera a gallery was adapted to
        are kept so: they are already in the deployment's style, and on the camera set of bench/adapt.py
        normalising against them told its faces apart worse (named right at 5% false accepts 0.38 against
        0.67 with raw cosines)."""
        return len(self.normalisation) == 0

    def without_copies(self, faces: np.ndarray, similarity: float, chunk: int = 4096) -> Cohort:
        """The cohort less its faces that are copies of `faces` (cosine >= `similarity`): a gallery's own
        photo found in its cohort — a gallery enrolled from LFW against the shipped cohort, or strangers
        from a folder that held enrolled photos — is no stranger, and kept it wrecks the calibration (the
        LFW protocol of bench/compare.py: threshold 8.7 instead of 4.0, 36% of known people named instead
        of 96%, as 88 calibration strangers were enrolled photos)."""
        if not len(faces):
            return self

        def keep(cohort: np.ndarray) -> np.ndarray:
            best = np.full(len(cohort), -np.inf, np.float32)
            for start in range(0, len(faces), chunk):
                best = np.maximum(best, (cohort @ faces[start : start + chunk].T).max(axis=1))
            return best < similarity

        normalisation, calibration = keep(self.normalisation), keep(self.calibration)
        dropped = int((~normalisation).sum() + (~calibration).sum())
        if not dropped:
            return self
        return replace(
            self,
            normalisation=self.normalisation[normalisation],
            calibration=self.calibration[calibration],
            description=f"{self.description}, less {dropped} copies of enrolled photos",
        )


def _read(path: Path, weights_sha256: str, what: str, *, deployment: bool) -> Cohort | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            provenance = json.loads(str(data["provenance"]))
            if provenance.get("weights_sha256") != weights_sha256:
                return None  # another model's (or an adapted model's) vectors: not comparable
            cohort = Cohort(data["normalisation"].astype(np.float32), data["calibration"].astype(np.float32), what)
            strangers = f" ({len(cohort.calibration)} strangers{', raw cosine' if cohort.raw else ''})"
            return replace(cohort, description=what + strangers, deployment=deployment)
    except (OSError, KeyError, ValueError):
        return None


def shipped_cohort(model: str, weights_sha256: str) -> Cohort | None:
    """The cohort shipped for these exact weights, or None."""
    path = Path(__file__).resolve().parent / "embedders" / "cohorts" / f"{model}.npz"
    return _read(path, weights_sha256, "shipped LFW cohort", deployment=False) if path.is_file() else None


def gallery_cohort(gallery: Path, weights_sha256: str) -> Cohort | None:
    """The user's own strangers kept with the gallery, when made by these weights; else the faces of the camera
    the gallery was adapted to, when made by these weights."""
    for name, what in ((STRANGERS_FILE, "own strangers"), (CAMERA_STRANGERS_FILE, "the adapted camera's faces")):
        path = gallery / name
        found = _read(path, weights_sha256, f"{what}, {path}", deployment=True) if path.is_file() else None
        if found is not None:
            return found
    return None


def split_by_key(keys: list[str]) -> np.ndarray:
    """Which faces normalise (True) and which calibrate: by a hash of each key (its photo), so that a photo's
    faces stay on one side and the split does not depend on what else is in the folder."""
    return np.array([int(sha256_bytes(key.encode())[:8], 16) / 2**32 < NORMALISATION_SHARE for key in keys], bool)


def save_strangers(path: Path, normalisation: np.ndarray, calibration: np.ndarray, provenance: dict[str, Any]) -> None:
    """Strangers' vectors written atomically as a cohort file, for the weights named in `provenance`; no
    normalisation faces make a raw cohort (`Cohort.raw`)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        np.savez(
            f,
            normalisation=normalisation.astype(np.float16),
            calibration=calibration.astype(np.float16),
            provenance=np.array(json.dumps(provenance)),
        )


@dataclass
class CohortReport:
    gallery: str
    folder: str
    photos: int
    faces: int
    normalisation: int
    calibration: int
    problems: list[str]
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def build_strangers(session: GallerySession, folder: Path) -> CohortReport:
    """Every face of every photo under `folder` (people in no gallery), embedded with the gallery's model and
    split by photo into normalisation and calibration faces (a photo's faces stay on one side), kept in the
    gallery folder."""
    from .images import iter_image_files

    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give a folder of photos of people who are not enrolled")
    pipeline = session.pipeline
    with session.open_writer() as gallery:
        weights = gallery.meta.weights_sha256
        vectors: list[np.ndarray] = []
        keys: list[str] = []
        problems: list[str] = []
        photos = iter_image_files(folder)
        for path in photos:
            try:
                photo = pipeline.load_photo(path)
            except InputError as exc:
                problems.append(str(exc))
                continue
            assert photo.image is not None
            found = pipeline.faces(photo.image)
            vectors += [f.vector for f in found]
            keys += [photo.sha256] * len(found)
        side = split_by_key(keys)
        faces = len(keys)
        if faces < MIN_STRANGERS or side.all() or not side.any():
            raise InputError(
                f"{folder}: {faces} faces found; calibrating needs at least {MIN_STRANGERS} faces of people who are "
                f"not enrolled ({GOOD_STRANGERS} or more hold the rate best); nothing was changed"
            )
        provenance = {"weights_sha256": weights, "folder": str(folder.resolve()), "photos": len(photos)}
        stacked = np.stack(vectors)
        save_strangers(gallery.path / STRANGERS_FILE, stacked[side], stacked[~side], provenance)
    warning = (
        None
        if faces >= GOOD_STRANGERS
        else (f"only {faces} faces: the rate holds best with {GOOD_STRANGERS} or more; add photos and run again")
    )
    return CohortReport(
        str(session.path), str(folder), len(photos), faces, int(side.sum()), int((~side).sum()), problems, warning
    )
