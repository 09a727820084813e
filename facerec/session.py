"""A gallery together with the pipeline that fits it: which model and weights, checked before any use.

A gallery remembers the model and the exact weights (SHA-256) that made its vectors; comparing a vector of
other weights with them would give meaningless similarities. `GallerySession` resolves the model (the
gallery's, the one asked for, or 'auto'), loads the pipeline only when it matches, and opens the gallery
for reading (one snapshot reused by identify calls) or writing. enroll, identify, video and admin are
written against it; `FaceRecognizer` is a thin face over them.
"""

from __future__ import annotations

from pathlib import Path

from .config import Settings, default_gallery_dir
from .decision import GalleryCalibration, Policy, calibrate_gallery, identify_policy
from .errors import GalleryMismatchError
from .gallery import Gallery, GalleryMeta
from .pipeline import FacePipeline


class GallerySession:
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
        self.path = Path(gallery) if gallery is not None else default_gallery_dir()
        self.settings = settings or Settings.from_env()
        self.requested_model = None if model in (None, "auto") else model
        self.weights = Path(weights) if weights is not None else None
        self.device = device
        self.min_face_size = min_face_size or self.settings.min_face_size
        self.progress = progress
        self.model_note: str | None = None  # why 'auto' chose the model it did, when it had to choose
        self._model: str | None = None
        self._pipeline: FacePipeline | None = None
        self._reader: Gallery | None = None
        self._calibration: tuple[Gallery, GalleryCalibration | None] | None = None

    def stored_meta(self) -> GalleryMeta | None:
        return Gallery.read_meta(self.path)

    @property
    def model(self) -> str:
        """The gallery's model; for a new gallery the one asked for, or the best one available here."""
        if self._model is None:
            meta = self.stored_meta()
            stored = meta.model if meta else None
            if stored and self.requested_model and self.requested_model != stored:
                raise GalleryMismatchError(
                    f"gallery {self.path} was built with model {stored}, not {self.requested_model}; "
                    "leave out --model, or use another --gallery for the other model"
                )
            if stored or self.requested_model:
                self._model = stored or self.requested_model
            else:
                from .embedders.base import choose_model

                self._model, self.model_note = choose_model(self.settings)
        assert self._model is not None
        return self._model

    @property
    def pipeline(self) -> FacePipeline:
        """The pipeline of the gallery's model and weights (checked against the SHA-256 it remembers)."""
        if self._pipeline is None:
            meta = self.stored_meta()
            weights = self.weights
            remembered = Path(meta.weights_path) if meta else None
            if weights is None and remembered is not None and remembered.is_file():
                weights = remembered
            elif weights is None and remembered is not None and meta is not None and meta.adaptation is not None:
                raise GalleryMismatchError(
                    f"gallery {self.path} uses the adapted model {remembered}, which is missing; put it back, "
                    f"or return to the base model: facerec adapt --rollback --gallery {self.path}"
                )
            pipeline = FacePipeline.load(
                self.model,
                weights=weights,
                device=self.device,
                min_face_size=self.min_face_size,
                settings=self.settings,
                progress=self.progress,
            )
            embedder = pipeline.embedder
            if meta is not None and meta.weights_sha256 != embedder.weights_sha256:
                raise GalleryMismatchError(
                    f"gallery {self.path} was built with other weights for {embedder.spec.name} "
                    f"(SHA-256 {meta.weights_sha256[:12]}…, file {meta.weights_path}), not {embedder.weights_path} "
                    f"({embedder.weights_sha256[:12]}…); pass --weights with the file it was built with"
                )
            self._pipeline = pipeline
        return self._pipeline

    @property
    def reader(self) -> Gallery:
        """A read snapshot of the gallery, opened once and reused; checks the pipeline fits it."""
        if self._reader is None:
            reader = Gallery.open(self.path)  # no gallery: say so before loading any model
            try:
                _ = self.pipeline
            except BaseException:
                reader.close()
                raise
            self._reader = reader
        return self._reader

    def open_writer(self) -> Gallery:
        """The gallery locked for writing, created for this pipeline's model when it does not exist."""
        self.close()  # a writer's changes make any earlier snapshot stale
        embedder = self.pipeline.embedder
        create = GalleryMeta.new(embedder.spec.name, embedder.spec.dim, embedder.weights_path, embedder.weights_sha256)
        return Gallery.open_for_write(self.path, create=create, lock_timeout=self.settings.lock_timeout_s)

    def policy(
        self, threshold: float | None = None, *, video: bool = False, max_false_accept: float | None = None
    ) -> Policy:
        """The identification policy in force for this gallery (see facerec.decision); the gallery's
        calibration is computed once per snapshot, and only when no raw threshold is given."""
        reader = self.reader
        calibrated = None
        if threshold is None:
            if self._calibration is None or self._calibration[0] is not reader:
                self._calibration = (reader, calibrate_gallery(reader))
            calibrated = self._calibration[1]
        policy = identify_policy(
            reader.meta,
            reader.people_count,
            video=video,
            threshold=threshold,
            max_false_accept=max_false_accept,
            calibrated=calibrated,
        )
        return policy.with_vetoes(reader.vetoes(reader.meta.weights_sha256))

    def reload(self) -> None:
        """Forget the loaded pipeline and snapshot: the gallery's weights changed (adapt, rollback)."""
        self.close()
        self._pipeline = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
