"""The Python API: `FaceRecognizer` enrolls, identifies and manages a gallery by composing the other modules.

    from facerec import FaceRecognizer
    rec = FaceRecognizer("my-gallery")
    rec.enroll("photos/")                       # one sub-folder per person, or files named after people
    for face in rec.identify("party.jpg").faces:
        print(face.name, face.similarity)

Models load on first use, never at import or construction.
"""

from __future__ import annotations

import hashlib
import platform
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .adapt import AdaptOptions, AdaptReport, RollbackReport, ScoreMap, adapt_gallery, describe, rollback_gallery
from .config import Settings, default_gallery_dir
from .detect import Detector, Face, choose_main_face
from .embedders import Embedder, choose_model, get_spec, load_embedder
from .errors import FacerecError, GalleryMismatchError, ImageError, InputError, Interrupted, InvalidNameError
from .gallery import Candidate, FaceRecord, Gallery, validate_name
from .images import decode_image, is_image_path, iter_image_files, read_bytes, read_image
from .pipeline import prefetch

UNKNOWN = "unknown"


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class _Prepared:
    """One enrollment photo after the background stage: a chip to embed, or why it is left out."""

    path: Path
    digest: str = ""
    record: FaceRecord | None = None
    chip: np.ndarray | None = None
    skipped: Skipped | None = None  # read, but no usable face
    failed: Skipped | None = None  # could not be read


@dataclass
class EnrollReport:
    """What one enroll run did. `failed` are files that could not be read; `skipped` the rest left out."""

    gallery: str
    model: str
    added: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)
    people_total: int = 0
    faces_total: int = 0
    interrupted: bool = False

    @property
    def faces_added(self) -> int:
        return sum(self.added.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "faces_added": self.faces_added}


@dataclass
class FaceMatch:
    box: list[float]
    score: float
    name: str
    similarity: float | None
    candidates: list[Candidate]


@dataclass
class ImageResult:
    image: str
    faces: list[FaceMatch] = field(default_factory=list)
    threshold: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return asdict(self)


def decide(candidates: list[Candidate], threshold: float) -> str:
    """The name a face gets: its best candidate when at or above the threshold, else 'unknown'."""
    return candidates[0].name if candidates and candidates[0].similarity >= threshold else UNKNOWN


def plan_enrollment(photo_dir: Path) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """(person, photo) pairs: every sub-folder is a person; a loose image is a person named by its stem."""
    if not photo_dir.exists():
        raise InputError(f"{photo_dir}: no such folder; give the folder that holds one sub-folder per person")
    if not photo_dir.is_dir():
        raise InputError(f"{photo_dir}: is a file, not a folder; give the folder that holds one sub-folder per person")
    plan: list[tuple[str, Path]] = []
    skipped: list[Skipped] = []
    for entry in sorted(photo_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name, photos = entry.name, iter_image_files(entry)
        elif is_image_path(entry):
            name, photos = entry.stem, [entry]
        else:
            continue
        try:
            person = validate_name(name)
        except InvalidNameError as exc:
            skipped.extend(Skipped(str(p), str(exc)) for p in photos)
            continue
        plan.extend((person, p) for p in photos)
    if not plan and not skipped:
        raise InputError(
            f"{photo_dir}: no images found; put one sub-folder per person (or image files named after people) in it"
        )
    return plan, skipped


def expand_paths(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Files as given, folders as the images inside them; a path that cannot be used comes with its error."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = iter_image_files(path)
            if not files:
                yield path, f"{path}: no images in this folder"
            yield from ((f, None) for f in files)
        elif path.exists() or path.is_symlink():
            yield path, None
        else:
            yield path, f"{path}: no such file"


class FaceRecognizer:
    """Enroll people into a gallery folder and identify faces against it.

    gallery: the gallery folder (default: FACEREC_GALLERY or a per-user data folder).
    model: for a new gallery ('auto', the default: vggface2 when its weights are here or can be downloaded,
        else the offline dlib-resnet); an existing gallery remembers its own and refuses another.
    weights: an explicit weights file; otherwise the gallery's remembered file, the models folder, or a download.
    """

    def __init__(
        self,
        gallery: str | Path | None = None,
        *,
        model: str | None = None,
        weights: str | Path | None = None,
        device: str = "auto",
        min_face_size: int | None = None,
        settings: Settings | None = None,
        progress: bool = False,
    ) -> None:
        self.gallery_path = Path(gallery) if gallery is not None else default_gallery_dir()
        self.settings = settings or Settings.from_env()
        self.requested_model = model
        self.weights = Path(weights) if weights is not None else None
        self.device = device
        self.min_face_size = min_face_size or self.settings.min_face_size
        self.progress = progress
        self._model: str | None = None
        # Why 'auto' chose the model it did (one line), when it had to choose.
        self.model_note: str | None = None
        self._embedder: Embedder | None = None
        self._detector: Detector | None = None
        self._reader: Gallery | None = None

    # -- models ----------------------------------------------------------------------------------
    def _stored_meta(self) -> dict[str, str] | None:
        return Gallery.read_meta(self.gallery_path)

    @property
    def model(self) -> str:
        """The gallery's model; for a new gallery the one asked for, or with 'auto' (the default) the best
        one available here (see `model_note` for why)."""
        if self._model is None:
            meta = self._stored_meta()
            stored = meta["model"] if meta else None
            requested = None if self.requested_model in (None, "auto") else self.requested_model
            if stored and requested and requested != stored:
                raise GalleryMismatchError(
                    f"gallery {self.gallery_path} was built with model {stored}, not {requested}; "
                    "leave out --model, or use another --gallery for the other model"
                )
            if stored or requested:
                self._model = stored or requested
            else:
                self._model, self.model_note = choose_model(self.settings)
        return self._model

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            meta = self._stored_meta() or {}
            weights = self.weights
            remembered = Path(meta["weights_path"]) if meta.get("weights_path") else None
            if weights is None and remembered is not None and remembered.is_file():
                weights = remembered
            elif weights is None and remembered is not None and "adapted" in meta:
                raise GalleryMismatchError(
                    f"gallery {self.gallery_path} uses the adapted model {remembered}, which is missing; put it back, "
                    f"or return to the base model: facerec adapt --rollback --gallery {self.gallery_path}"
                )
            embedder = load_embedder(self.model, weights=weights, device=self.device, settings=self.settings, progress=self.progress)
            stored_sha = meta.get("weights_sha256")
            if stored_sha and stored_sha != embedder.weights_sha256:
                raise GalleryMismatchError(
                    f"gallery {self.gallery_path} was built with other weights for {embedder.spec.name} "
                    f"(SHA-256 {stored_sha[:12]}…, file {meta.get('weights_path')}), not {embedder.weights_path} "
                    f"({embedder.weights_sha256[:12]}…); pass --weights with the file it was built with"
                )
            self._embedder = embedder
        return self._embedder

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = Detector.from_settings(self.embedder.device, self.settings, min_face_size=self.min_face_size)
        return self._detector

    def threshold(self, threshold: float | None = None, *, video: bool = False) -> float:
        """The identification threshold in force: the one given, else the model's calibrated threshold
        for a gallery of this many people (stricter for video, which sees many strangers)."""
        if threshold is not None:
            return threshold
        gallery = self.gallery
        return _identify_threshold(gallery.meta, gallery.people_count, video=video)

    # -- faces -----------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detector.detect(image)

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """One unit vector per face."""
        if not faces:
            return np.zeros((0, self.embedder.spec.dim), np.float32)
        return self.embedder.embed(np.stack([self.embedder.chip(image, f) for f in faces]))

    # -- enroll ----------------------------------------------------------------------------------
    def _open_writer(self) -> Gallery:
        embedder = self.embedder
        create = {
            "model": embedder.spec.name,
            "dim": str(embedder.spec.dim),
            "weights_sha256": embedder.weights_sha256,
            "weights_path": str(embedder.weights_path),
        }
        return Gallery.open_for_write(self.gallery_path, create=create, lock_timeout=self.settings.lock_timeout_s)

    def enroll(self, photo_dir: str | Path) -> EnrollReport:
        """Add every photo of a folder; photos already in the gallery (same content) are skipped cheaply.

        Each batch is committed as it completes, so an interrupted run keeps what it finished and a
        re-run continues where it stopped.
        """
        plan, invalid = plan_enrollment(Path(photo_dir))
        self._reader = None
        report = EnrollReport(gallery=str(self.gallery_path), model=self.model, skipped=list(invalid))
        added: Counter[str] = Counter()
        pending: list[tuple[FaceRecord, np.ndarray]] = []

        with self._open_writer() as gallery:
            # Who each photo (by content hash) is enrolled as: stored ones, and this run's as they are taken.
            # Background threads only read it, to skip decoding photos seen before (a re-run is quick); the
            # decision is this thread's, so that two copies of one photo in flight are enrolled once.
            owners = gallery.owners_by_hash()

            def flush() -> None:
                if pending:
                    vectors = self.embedder.embed(np.stack([chip for _, chip in pending]))
                    gallery.add([record for record, _ in pending], vectors)
                    added.update(record.person for record, _ in pending)
                    pending.clear()

            def prepare(step: tuple[str, Path]) -> _Prepared:
                """Everything but the embedding, in the background."""
                person, path = step
                try:
                    data = read_bytes(path)
                    digest = hashlib.sha256(data).hexdigest()
                    if digest in owners:
                        return _Prepared(path, digest)
                    image = decode_image(data, str(path), max_pixels=self.settings.max_image_pixels)
                except ImageError as exc:
                    return _Prepared(path, failed=Skipped(str(path), str(exc)))
                face, why = choose_main_face(self.detect(image), self.settings.enroll_min_score, self.settings.enroll_dominance)
                if face is None:
                    return _Prepared(path, digest, skipped=Skipped(str(path), why))
                record = FaceRecord(person, str(path.resolve()), digest, face.box, face.score)
                return _Prepared(path, digest, record, self.embedder.chip(image, face))

            self.detector, self.embedder  # load the models here, not in the background threads
            bar = tqdm(total=len(plan), desc="enroll", unit="photo", disable=not self.progress, leave=False)
            try:
                for photo in prefetch(plan, prepare, workers=self.settings.workers, depth=2 * self.settings.batch_size):
                    bar.update()
                    if photo.failed is not None:
                        report.failed.append(photo.failed)
                    elif photo.skipped is not None:
                        report.skipped.append(photo.skipped)
                    elif photo.digest in owners:
                        report.skipped.append(Skipped(str(photo.path), f"already enrolled as {owners[photo.digest]}"))
                    else:
                        owners[photo.digest] = photo.record.person
                        pending.append((photo.record, photo.chip))
                        if len(pending) >= self.settings.batch_size:
                            flush()
                        bar.set_postfix(faces=sum(added.values()) + len(pending), refresh=False)
                flush()
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                bar.close()
            report.added = dict(sorted(added.items()))
            report.people_total = len(gallery.people())
            report.faces_total = gallery.count
        if report.interrupted:
            raise Interrupted(
                f"interrupted: {report.faces_added} faces enrolled before the interruption are kept; "
                "run the same command again to continue",
                report,
            )
        return report

    # -- identify --------------------------------------------------------------------------------
    @property
    def gallery(self) -> Gallery:
        """A read snapshot of the gallery, opened once and reused by identify calls."""
        if self._reader is None:
            reader = Gallery.open(self.gallery_path)  # no gallery: say so before loading any model
            try:
                self.embedder  # checks that the gallery's model and weights are the ones loaded
            except BaseException:
                reader.close()
                raise
            self._reader = reader
        return self._reader

    def identify(self, image: str | Path | np.ndarray, *, threshold: float | None = None, top_k: int = 3) -> ImageResult:
        """Every face in one image, named by its best match or 'unknown' below the threshold."""
        name = "<array>" if isinstance(image, np.ndarray) else str(image)
        pixels = image if isinstance(image, np.ndarray) else read_image(image, max_pixels=self.settings.max_image_pixels)
        return self._identify_pixels(name, pixels, threshold, top_k)

    def _identify_pixels(self, name: str, pixels: np.ndarray, threshold: float | None, top_k: int) -> ImageResult:
        faces = self.detect(pixels)
        return self._name_faces([(name, faces, [self.embedder.chip(pixels, f) for f in faces])], threshold, top_k)[0]

    def _name_faces(
        self, photos: list[tuple[str, list[Face], list[np.ndarray]]], threshold: float | None, top_k: int
    ) -> list[ImageResult]:
        """Name the faces of several photos (name, faces, chips) with one batch through the embedder."""
        gallery, limit = self.gallery, self.threshold(threshold)
        rule = get_spec(self.model).thresholds.rule
        vectors = self.embedder.embed(self.embedder.stack([chip for _, _, chips in photos for chip in chips]))
        candidates = iter(gallery.search(vectors, top_k=max(1, top_k), rule=rule))
        results = []
        for name, faces, _ in photos:
            matches = [
                FaceMatch(
                    box=[round(v, 1) for v in face.box],
                    score=round(face.score, 4),
                    name=decide(cands, limit),
                    similarity=round(cands[0].similarity, 4) if cands else None,
                    candidates=[Candidate(c.name, round(c.similarity, 4)) for c in cands],
                )
                for face, cands in zip(faces, candidates)
            ]
            results.append(ImageResult(image=name, faces=matches, threshold=limit))
        return results

    def identify_paths(
        self,
        paths: Iterable[str | Path],
        *,
        threshold: float | None = None,
        top_k: int = 3,
        annotate_dir: str | Path | None = None,
    ) -> Iterator[ImageResult]:
        """identify() over files and folders; a bad input yields a result with `error` and the batch goes on.

        The next photos are read and searched for faces in the background while the faces of a few
        photos are embedded together: results come in order, a few photos at a time.
        """
        from .annotate import draw_matches, write_image

        self.gallery, self.detector  # fail fast (no gallery, wrong model) before the first image

        def prepare(entry: tuple[Path, str | None]):
            """(path, pixels if they are to be drawn on, faces, chips, error), in the background."""
            path, error = entry
            if error is not None:
                return path, None, [], [], error
            try:
                pixels = read_image(path, max_pixels=self.settings.max_image_pixels)
            except ImageError as exc:
                return path, None, [], [], str(exc)
            faces = self.detect(pixels)
            chips = [self.embedder.chip(pixels, face) for face in faces]
            return path, pixels if annotate_dir is not None else None, faces, chips, None

        def finish(batch: list) -> Iterator[ImageResult]:
            named = iter(self._name_faces([(str(p), faces, chips) for p, _, faces, chips, error in batch if error is None],
                                          threshold, top_k))
            for path, pixels, _, _, error in batch:
                if error is not None:
                    yield ImageResult(image=str(path), error=error)
                    continue
                result = next(named)
                if annotate_dir is not None:
                    write_image(draw_matches(pixels, result.faces), Path(annotate_dir), path.stem)
                yield result
            batch.clear()

        batch: list = []
        for prepared in prefetch(expand_paths(paths), prepare, workers=self.settings.workers, depth=16):
            batch.append(prepared)
            if len(batch) >= 8 or sum(len(chips) for _, _, _, chips, _ in batch) >= self.settings.batch_size:
                yield from finish(batch)
        yield from finish(batch)

    # -- video ---------------------------------------------------------------------------------------
    def _decider(self, threshold: float | None):
        """name_vectors(vectors) -> [(name or 'unknown', similarity)] against the gallery, for the stream tracker."""
        gallery, limit = self.gallery, self.threshold(threshold, video=True)
        rule = get_spec(self.model).thresholds.rule

        def name_vectors(vectors: np.ndarray) -> list[tuple[str, float]]:
            return [
                (decide(candidates, limit), candidates[0].similarity if candidates else 0.0)
                for candidates in gallery.search(vectors, top_k=1, rule=rule)
            ]

        return name_vectors

    def video_detector(self, min_face: int = 40) -> Detector:
        """MTCNN for frames: its image pyramid starts at 12/min_face of the frame, so the smallest face
        asked for sets the cost (a 40 px minimum searches the frame at 30% size and below)."""
        return Detector.from_settings(self.embedder.device, self.settings, min_face_size=min_face)

    def watch(
        self,
        source,
        *,
        threshold: float | None = None,
        min_face: int = 40,
        detect_every: int = 2,
        realtime: bool = False,
        reconnect_timeout: float = 30.0,
        on_status=lambda message: None,
    ):
        """Per-frame results (faces, track names, appear/leave events) for a camera index, video file or
        stream URL (or an open `stream.FrameSource`).

        The last result has `end` set and carries the leave events of the tracks still open.
        """
        from .stream import FrameSource, Tracker, watch

        tracker = Tracker(self.embed, self._decider(threshold))
        frames = source if isinstance(source, FrameSource) else FrameSource(
            str(source), realtime=realtime, reconnect_timeout=reconnect_timeout, on_status=on_status
        )
        try:
            yield from watch(frames, self.video_detector(min_face), tracker, detect_every=detect_every)
        finally:
            frames.close()

    def enroll_from_video(self, name: str, source: str | int, *, count: int = 5, timeout: float = 30.0,
                          on_status=lambda message: None) -> int:
        """Capture `count` good frames of the one face in view and enroll them as `name`."""
        from .stream import FrameSource, collect_enrollment_frames

        name = validate_name(name)
        frames = FrameSource(str(source), on_status=on_status)
        try:
            chosen = collect_enrollment_frames(frames, self.video_detector(), count=count, timeout=timeout, on_status=on_status)
        finally:
            frames.close()
        records, chips = [], []
        for frame, face in chosen:
            digest = hashlib.sha256(frame.image.tobytes()).hexdigest()
            records.append(FaceRecord(name, f"{source}#frame{frame.index}", digest, face.box, face.score))
            chips.append(self.embedder.chip(frame.image, face))
        self._reader = None
        with self._open_writer() as gallery:
            gallery.add(records, self.embedder.embed(np.stack(chips)))
        return len(records)

    # -- adapting --------------------------------------------------------------------------------
    def adapt(self, photo_dir: str | Path | None = None, *, lfw: str | Path | None = None,
              options: AdaptOptions | None = None, dry_run: bool = False) -> AdaptReport:
        """Fine-tune the embedder on the gallery's faces (or a labelled photo folder) and keep it only when
        it identifies held-out photos better without forgetting (see facerec.adapt)."""
        plan = None
        if photo_dir is not None:
            plan, _ = plan_enrollment(Path(photo_dir))
        self.close()
        self._embedder = None
        return adapt_gallery(
            self.gallery_path, settings=self.settings, device=self.device, min_face_size=self.min_face_size,
            photos=plan, photos_label=str(photo_dir) if photo_dir is not None else None,
            lfw=Path(lfw) if lfw is not None else None, options=options or AdaptOptions(), dry_run=dry_run,
            progress=self.progress,
        )

    def rollback(self) -> RollbackReport:
        """Return the gallery to its base model (exactly the vectors it had before adapting)."""
        self.close()
        self._embedder = None
        return rollback_gallery(self.gallery_path, settings=self.settings, device=self.device,
                                min_face_size=self.min_face_size, progress=self.progress)

    # -- gallery management ----------------------------------------------------------------------
    def people(self) -> dict[str, int]:
        with Gallery.open(self.gallery_path) as gallery:
            return gallery.people()

    def forget(self, name: str) -> int:
        """Remove a person and all their vectors; returns how many faces were removed."""
        self._reader = None
        with Gallery.open_for_write(self.gallery_path, lock_timeout=self.settings.lock_timeout_s) as gallery:
            removed = gallery.remove_person(name)
        if removed == 0:
            raise InputError(f"no person named {name!r} in gallery {self.gallery_path}; see `facerec people`")
        return removed

    def info(self) -> dict:
        """What a bug report needs: where things are, which model and versions, how big the gallery is."""
        import cv2
        import faiss
        import torch
        from importlib.metadata import version

        with Gallery.open(self.gallery_path) as gallery:
            people = gallery.people()
            meta = dict(gallery.meta)
            index_kind = gallery.index_kind
        spec = get_spec(meta["model"])
        return {
            "gallery": str(self.gallery_path.resolve()),
            "model": spec.name,
            "model_description": spec.description,
            "weights": meta.get("weights_path"),
            "weights_sha256": meta.get("weights_sha256"),
            "adapted": describe(meta),
            "dim": spec.dim,
            "device": self.embedder.device if self._embedder else _describe_device(self.device),
            "thresholds": {
                "identify": round(_identify_threshold(meta, len(people)), 4),
                "watch": round(_identify_threshold(meta, len(people), video=True), 4),
                "verify": spec.thresholds.verify,
                "rule": spec.thresholds.rule,
            },
            "people": len(people),
            "faces": sum(people.values()),
            "index": index_kind,
            "created": meta.get("created"),
            "format_version": int(meta["format_version"]),
            "models_dir": str(self.settings.models_dir),
            "versions": {
                "facerec": __version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "facenet-pytorch": version("facenet-pytorch"),
                "faiss": faiss.__version__,
                "opencv": cv2.__version__,
                "numpy": np.__version__,
            },
        }

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _identify_threshold(meta: dict[str, str], people: int, *, video: bool = False) -> float:
    """The model's calibrated threshold for a gallery of this size, moved onto an adapted model's score
    scale when the gallery is adapted."""
    threshold = get_spec(meta["model"]).thresholds.identify_for(people, video=video)
    score_map = ScoreMap.from_meta(meta)
    return score_map.apply(threshold) if score_map else threshold


def _describe_device(device: str) -> str:
    from .embedders import resolve_device

    try:
        return resolve_device(device)
    except FacerecError as exc:
        return f"unavailable ({exc})"

