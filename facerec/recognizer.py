"""The Python API: `FaceRecognizer` enrolls, identifies and manages a gallery.

    from facerec import FaceRecognizer
    rec = FaceRecognizer("my-gallery")
    rec.enroll("photos/")                       # one sub-folder per person, or files named after people
    for face in rec.identify("party.jpg").faces:
        print(face.name, face.similarity)

A thin face over the modules that do the work (enroll, identify, video, admin, adapt), all written
against one `GallerySession`. Models load on first use, never at import or construction. For faces and
vectors without a gallery, use `facerec.FacePipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import admin
from .config import Settings
from .decision import Policy
from .detect import Face
from .enroll import EnrollReport, enroll_folder, plan_enrollment
from .gallery import Gallery
from .identify import ImageResult, RejectReport, identify_image, identify_paths, reject
from .pipeline import FacePipeline
from .session import GallerySession

if TYPE_CHECKING:
    from .adapt import AdaptOptions, AdaptReport, CameraRequest, RollbackReport
    from .distil import DistilOptions
    from .stream import FrameResult, FrameSource


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
        self.session = GallerySession(
            gallery,
            model=model,
            weights=weights,
            device=device,
            min_face_size=min_face_size,
            settings=settings,
            progress=progress,
        )

    # -- what the session resolved -----------------------------------------------------------------
    @property
    def gallery_path(self) -> Path:
        return self.session.path

    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def model(self) -> str:
        return self.session.model

    @property
    def model_note(self) -> str | None:
        return self.session.model_note

    @property
    def pipeline(self) -> FacePipeline:
        return self.session.pipeline

    @property
    def gallery(self) -> Gallery:
        """A read snapshot of the gallery, opened once and reused by identify calls."""
        return self.session.reader

    def policy(
        self, threshold: float | None = None, *, video: bool = False, max_false_accept: float | None = None
    ) -> Policy:
        """The operating point in force: a raw threshold given, else the share of strangers asked for
        (default 5% for photos, 0.5% for video) turned into this gallery's calibrated threshold."""
        return self.session.policy(threshold, video=video, max_false_accept=max_false_accept)

    def threshold(self, threshold: float | None = None, *, video: bool = False) -> float:
        return self.policy(threshold, video=video).threshold

    # -- faces -------------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Face]:
        return self.pipeline.detect(image)

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """One unit vector per face."""
        return self.pipeline.vectors(image, faces)

    # -- enroll and identify -------------------------------------------------------------------------
    def enroll(self, photo_dir: str | Path) -> EnrollReport:
        """Add every photo of a folder (see facerec.enroll.enroll_folder)."""
        return enroll_folder(self.session, photo_dir)

    def identify(
        self,
        image: str | Path | np.ndarray,
        *,
        threshold: float | None = None,
        top_k: int = 3,
        max_false_accept: float | None = None,
    ) -> ImageResult:
        """Every face in one image, named by its best match or 'unknown' below the threshold."""
        return identify_image(self.session, image, threshold=threshold, top_k=top_k, max_false_accept=max_false_accept)

    def identify_paths(
        self,
        paths: Iterable[str | Path],
        *,
        threshold: float | None = None,
        top_k: int = 3,
        annotate_dir: str | Path | None = None,
        max_false_accept: float | None = None,
    ) -> Generator[ImageResult, None, None]:
        """identify() over files and folders; a bad input yields a result with `error` and the batch goes on."""
        return identify_paths(
            self.session,
            paths,
            threshold=threshold,
            top_k=top_k,
            annotate_dir=annotate_dir,
            max_false_accept=max_false_accept,
        )

    def reject(self, image: str | Path, name: str) -> RejectReport:
        """Say that a face of `image` is not `name` (see facerec.identify.reject)."""
        return reject(self.session, image, name)

    # -- video -------------------------------------------------------------------------------------
    def watch(
        self,
        source: str | int | FrameSource,
        *,
        threshold: float | None = None,
        max_false_accept: float | None = None,
        min_face: int = 40,
        detect_every: int = 2,
        realtime: bool = False,
        reconnect_timeout: float = 30.0,
        on_status: Callable[[str], None] = lambda message: None,
    ) -> Generator[FrameResult, None, None]:
        """Per-frame results for a camera index, video file or stream URL (see facerec.video.watch_source)."""
        from .video import watch_source

        return watch_source(
            self.session,
            source,
            threshold=threshold,
            max_false_accept=max_false_accept,
            min_face=min_face,
            detect_every=detect_every,
            realtime=realtime,
            reconnect_timeout=reconnect_timeout,
            on_status=on_status,
        )

    def enroll_from_video(
        self,
        name: str,
        source: str | int,
        *,
        count: int = 5,
        timeout: float = 30.0,
        on_status: Callable[[str], None] = lambda message: None,
    ) -> int:
        """Capture `count` good frames of the one face in view and enroll them as `name`."""
        from .video import enroll_from_camera

        return enroll_from_camera(self.session, name, source, count=count, timeout=timeout, on_status=on_status)

    # -- adapting ----------------------------------------------------------------------------------
    def adapt(
        self,
        photo_dir: str | Path | None = None,
        *,
        lfw: str | Path | None = None,
        options: AdaptOptions | None = None,
        camera: CameraRequest | None = None,
        distil_options: DistilOptions | None = None,
        dry_run: bool = False,
    ) -> AdaptReport:
        """Fine-tune the embedder on the gallery's faces (or a labelled photo folder), or teach it a camera
        (`camera`: its photos or video, and what is known of it), and keep it only when it identifies
        held-out photos better without forgetting (see facerec.adapt and facerec.distil)."""
        from .adapt import AdaptOptions, adapt_gallery
        from .distil import DistilOptions

        plan = plan_enrollment(Path(photo_dir))[0] if photo_dir is not None else None
        self.session.reload()
        return adapt_gallery(
            self.gallery_path,
            settings=self.settings,
            device=self.session.device,
            min_face_size=self.session.min_face_size,
            photos=plan,
            photos_label=str(photo_dir) if photo_dir is not None else None,
            lfw=Path(lfw) if lfw is not None else None,
            options=options or AdaptOptions(),
            camera=camera,
            distil_options=distil_options or DistilOptions(),
            dry_run=dry_run,
            progress=self.session.progress,
        )

    def rollback(self) -> RollbackReport:
        """Return the gallery to its base model (exactly the vectors it had before adapting)."""
        from .adapt import rollback_gallery

        self.session.reload()
        return rollback_gallery(
            self.gallery_path,
            settings=self.settings,
            device=self.session.device,
            min_face_size=self.session.min_face_size,
            progress=self.session.progress,
        )

    # -- administration ----------------------------------------------------------------------------
    def people(self) -> dict[str, int]:
        return admin.people(self.gallery_path)

    def forget(self, name: str) -> int:
        """Remove a person and all their vectors; returns how many faces were removed."""
        self.session.close()
        return admin.forget(self.gallery_path, name, self.settings)

    def info(self) -> dict[str, Any]:
        """What a bug report needs: where things are, which model and versions, how big the gallery is."""
        return admin.info(self.gallery_path, self.settings, self.session.device)

    def close(self) -> None:
        self.session.close()
