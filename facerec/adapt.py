"""Few-shot adaptation of the embedder to a gallery's people: trained, measured, gated and reversible.

Naive fine-tuning on a few photos per person often makes embeddings worse, so every choice here is
about keeping what the pretrained model knows and proving any gain before keeping it:

* Metric learning on unit vectors: a CosFace (additive-margin softmax) head whose class weights start at
  the people's mean base embeddings, so the first steps refine the existing geometry instead of fitting
  a random classifier.
* Only the last stage of the network learns (`TRAINABLE`), at a low rate; the network stays in eval mode,
  so batch-norm statistics never move (dlib's are folded into fixed affine layers anyway). Face-safe
  augmentation (flip, colour jitter, small affine, blur, greyscale), a fixed seed, early stopping on a
  held-out split, mixed precision on a GPU.
* Measured on photos that training never saw, before and after: identification of the new people (the
  gate split, disjoint from the early-stopping split) and a general check that shows forgetting (a fixed
  LFW subset, or people held back from training). The model is kept only when the first improves and the
  second drops by no more than `max_drop`.
* A kept model is a plain state dict in the models folder (loaded like any weights file) with a JSON
  record beside it; the gallery is re-embedded in one transaction and keeps its base vectors, so
  `rollback` restores the base model's results exactly.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .camera import Camera, DetailScale, Observation, jpeg_quality, observe_region
from .camera_view import CameraView, Scene, as_camera_shows, embed_views, join, scene, view_key
from .cohort import CAMERA_STRANGERS_FILE, MIN_STRANGERS, save_strangers
from .config import Settings
from .decision import PHOTO_FALSE_ACCEPT, ScoreMap
from .detect import Face
from .distil import DistilOptions, Held, Probes, damaged_probes, distil, gain_interval
from .embedders.base import FAMILIES, Embedder
from .errors import GalleryMismatchError, ImageError, InputError, ModelError
from .evaluate import read_pairs, ten_fold
from .fileio import sha256_bytes, sha256_file, write_atomically, write_bytes_atomically
from .gallery import Adaptation, FaceRecord, Gallery, GalleryMeta, no_gallery
from .images import read_bytes
from .lfw import central_chips
from .pipeline import FacePipeline
from .target import TargetFaces, read_target
from .training import EarlyStopping, Step, Trained, run_epochs
from .vectors import group_means, normalise

# Parameter-name prefixes that learn, per model family: the last stage and the embedding layer.
TRAINABLE = {
    "dlib": ("blocks.11.", "blocks.12.", "blocks.13.", "fc."),
    "facenet": ("repeat_3.", "block8.", "last_linear.", "last_bn."),
}
# LFW pairs of these folds (of 10) form the general check: 1,200 pairs, the same for every run.
LFW_CHECK_FOLDS = 2
# Damaged copies of each held-out photo the gate and early stopping measure on (they go together in the
# bootstrap, so more copies steady the figure without pretending to more photos).
PROBE_COPIES = 4
# Share of the people held back from training for the general check when no --lfw is given.
GENERAL_PEOPLE_SHARE = 0.2


@dataclass(frozen=True)
class AdaptOptions:
    """How to train and when to keep the result; the defaults were chosen on low-resolution LFW."""

    epochs: int = 15
    holdout: float = 0.3  # share of each training person's photos held out for measuring
    max_drop: float = 0.01  # largest drop of the general check that a kept model may cause
    lr: float = 3e-5  # the network's trainable layers
    head_lr: float = 1e-3  # the CosFace class weights
    margin: float = 0.1
    scale: float = 30.0
    weight_decay: float = 1e-4
    batch_size: int = 32
    patience: int = 4  # epochs without a better held-out score before stopping
    seed: int = 0


@dataclass
class FaceSet:
    """Labelled model chips: what training and measuring need, wherever the photos came from."""

    chips: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) index into people
    people: list[str]
    sha256: list[str]  # of each source photo: the data fingerprint


@dataclass
class Split:
    """Indices into a FaceSet. val and gate are held-out photos of disjoint halves of the training people."""

    train: np.ndarray
    val: np.ndarray
    gate: np.ndarray
    general_enroll: np.ndarray  # held-back people's photos (empty when LFW is the general check)
    general_probe: np.ndarray


@dataclass
class Scores:
    new_people: float  # identification accuracy of the gate photos among the training people
    general: float  # LFW pairs accuracy, or identification accuracy among the held-back people
    # A camera adaptation: the gallery's own clean photos, each identified against the others as stored.
    clean_gallery: float | None = None
    # A camera adaptation with enough target faces: the gate photos named right at the photo operating point
    # set on the target's faces (what the gallery will be calibrated on, see keep_camera_strangers). Reported,
    # not gated on: the threshold's own noise made it refuse where top-1 rightly kept (README, adapt --target).
    named: float | None = None


@dataclass
class AdaptReport:
    gallery: str
    model: str
    device: str
    source: str  # "gallery" or the photo folder
    general_check: str
    people: int
    train_photos: int
    gate_photos: int
    val_photos: int
    general_photos: int
    before: Scores
    after: Scores
    epochs_run: int
    best_epoch: int  # 0: no epoch beat the base model on the early-stopping split
    losses: list[float]
    val_accuracy: list[float]
    seconds: float
    kept: bool
    reason: str
    dry_run: bool
    checkpoint: str | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    camera: dict[str, Any] | None = None  # with --target: the camera and the gallery's photos, measured alike
    gain: list[float] | None = None  # with --target: held-out top-1 gain, and its 95% bootstrap interval

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RollbackReport:
    gallery: str
    model: str
    weights: str
    faces: int
    restored: int  # faces whose base vectors were kept at adapt time
    re_embedded: int  # faces enrolled after adapting, embedded again with the base model
    checkpoint: str | None  # the adapted checkpoint, left in the models folder

    def to_dict(self) -> dict:
        return asdict(self)


# -- data --------------------------------------------------------------------------------------------
def _face_of_record(record: FaceRecord, pipeline: FacePipeline) -> tuple[np.ndarray, Face]:
    """The enrolled face found again in its source photo: the photo must be there and unchanged."""
    source = Path(record.source)
    fix = f"put it back, or `facerec forget {record.person!r}` and enroll that person again"
    if not source.is_file():
        if "#frame" in record.source:
            raise InputError(
                f"{record.source}: this face of {record.person} was enrolled from video, and adapting needs the photo "
                f"of every enrolled face; `facerec forget {record.person!r}` and enroll them from photos"
            )
        raise InputError(f"{source}: the photo enrolled as {record.person} is missing; {fix}")
    photo = pipeline.load_photo(source)
    if photo.sha256 != record.sha256 or photo.image is None:
        raise InputError(f"{source}: the photo enrolled as {record.person} has changed since it was enrolled; {fix}")
    face = pipeline.face_at(photo.image, record.box)
    if face is None:
        raise InputError(f"{source}: the face enrolled as {record.person} is no longer found in it; {fix}")
    return photo.image, face


def _chip_of_record(record: FaceRecord, pipeline: FacePipeline) -> np.ndarray:
    return pipeline.chip(*_face_of_record(record, pipeline))


def gallery_chips(records: list[FaceRecord], pipeline: FacePipeline, progress: bool) -> np.ndarray:
    """Every enrolled face's chip, re-made from its source photo; any missing or changed photo is an error
    before anything else happens."""
    bar = tqdm(records, desc="read gallery photos", unit="photo", disable=not progress, leave=False)
    return pipeline.embedder.stack([_chip_of_record(r, pipeline) for r in bar])


def gallery_observations(
    records: list[FaceRecord], pipeline: FacePipeline, progress: bool
) -> tuple[list[Observation], list[Scene]]:
    """Every enrolled face as the camera module measures faces (what the gallery's own photos look like), and
    with its surroundings, to be damaged as the camera would."""
    found, scenes = [], []
    for record in tqdm(records, desc="read gallery photos", unit="photo", disable=not progress, leave=False):
        image, face = _face_of_record(record, pipeline)
        found.append(
            Observation(
                pipeline.chip(image, face),
                pipeline.embedder.face_width(face),
                observe_region(image, face.box),
                jpeg_quality(read_bytes(Path(record.source))),
            )
        )
        scenes.append(scene(image, face))
    return found, scenes


def photo_faces(plan: list[tuple[str, Path]], pipeline: FacePipeline, progress: bool) -> FaceSet:
    """A labelled photo folder (the enroll layout) as chips; photos without one clear face are left out."""
    chips, names, hashes = [], [], []
    for person, path in tqdm(plan, desc="read photos", unit="photo", disable=not progress, leave=False):
        try:
            photo = pipeline.load_photo(path)
        except ImageError:
            continue
        assert photo.image is not None
        face, _ = pipeline.main_face(photo.image)
        if face is not None:
            chips.append(pipeline.chip(photo.image, face))
            names.append(person)
            hashes.append(photo.sha256)
    return _face_set(chips, names, hashes, pipeline.embedder)


def _face_set(chips: list[np.ndarray] | np.ndarray, names: list[str], hashes: list[str], embedder: Embedder) -> FaceSet:
    people = sorted(set(names))
    row = {name: i for i, name in enumerate(people)}
    return FaceSet(embedder.stack(chips), np.array([row[n] for n in names], np.int64), people, list(hashes))


def split_faces(faces: FaceSet, holdout: float, *, hold_back_people: bool, seed: int, source: str) -> Split:
    """Which photos train, which stop training early, which decide, and which check forgetting."""
    counts = np.bincount(faces.labels, minlength=len(faces.people))
    eligible = [p for p in range(len(faces.people)) if counts[p] >= 2]
    if len(faces.people) < 2:
        held = f"{len(faces.people)} {'person' if len(faces.people) == 1 else 'people'}"
        raise InputError(f"{source} holds {held}; adapting needs at least 2 people with at least 2 photos each")
    if len(eligible) < 2:
        raise InputError(
            f"{source}: only {len(eligible)} of its {len(faces.people)} people have 2 or more photos; "
            f"adapting needs at "
            "least 2 people with at least 2 photos each: enroll more photos of them"
        )
    rng = np.random.default_rng(seed)
    held_back: list[int] = []
    if hold_back_people:
        count = max(2, round(GENERAL_PEOPLE_SHARE * len(eligible)))
        if len(eligible) - count < 2:
            raise InputError(
                f"{source}: {len(eligible)} people with 2 or more photos are too few to hold {count} "
                f"back for the general "
                f"check; give --lfw DIR (LFW for the check) or enroll at least {count + 2} such people"
            )
        held_back = sorted(rng.choice(eligible, size=count, replace=False).tolist())
    training = [p for p in eligible if p not in held_back]
    train: list[int] = []
    val: list[int] = []
    gate: list[int] = []
    g_enroll: list[int] = []
    g_probe: list[int] = []
    for person in eligible:
        photos = rng.permutation(np.flatnonzero(faces.labels == person)).tolist()
        if person in held_back:
            half = len(photos) // 2
            g_enroll += photos[:half]
            g_probe += photos[half:]
            continue
        n_hold = min(len(photos) - 1, max(1, round(holdout * len(photos))))
        (val if training.index(person) % 2 == 0 else gate).extend(photos[:n_hold])
        train += photos[n_hold:]
    as_array = lambda items: np.array(sorted(items), np.int64)
    return Split(as_array(train), as_array(val), as_array(gate), as_array(g_enroll), as_array(g_probe))


# -- measuring ---------------------------------------------------------------------------------------
def identification(
    vectors: np.ndarray, labels: np.ndarray, enroll: np.ndarray, probe: np.ndarray
) -> tuple[float, float]:
    """Closed-set accuracy of the probes against the enrolled people's centroids (the gallery's rule), and the
    mean margin of the true person over the best other one (a finer score to break ties)."""
    if len(probe) == 0:
        return float("nan"), float("nan")
    people, rows = np.unique(labels[enroll], return_inverse=True)
    centroids = group_means(vectors[enroll], rows, len(people))
    sims = vectors[probe] @ centroids.T
    truth = np.searchsorted(people, labels[probe])
    accuracy = float(np.mean(people[sims.argmax(axis=1)] == labels[probe]))
    true_sim = sims[np.arange(len(probe)), truth]
    sims[np.arange(len(probe)), truth] = -np.inf
    return accuracy, float(np.mean(true_sim - sims.max(axis=1))) if len(people) > 1 else 0.0


def clean_leave_one_out(queries: np.ndarray, stored: np.ndarray, labels: np.ndarray) -> float:
    """Each photo's clean vector identified among the centroids of what the gallery stores, its own person's
    without it (people with one photo are left out): what the gallery does with clean photos of its people,
    on every enrolled photo rather than a few held out."""
    people = int(labels.max()) + 1 if len(labels) else 0
    sums = np.zeros((people, stored.shape[1]))
    np.add.at(sums, labels, stored)
    counts = np.bincount(labels, minlength=people)
    mine = counts[labels] > 1
    if not mine.any():
        return float("nan")
    sims = queries[mine] @ normalise(sums).T
    rows = np.flatnonzero(mine)
    own = normalise(sums[labels[rows]] - stored[rows])
    sims[np.arange(len(rows)), labels[rows]] = (own * queries[rows]).sum(axis=1)
    return float(np.mean(sims.argmax(axis=1) == labels[rows]))


class LfwCheck:
    """Verification accuracy on a fixed subset of LFW pairs: the folds of `LFW_CHECK_FOLDS`, chips made once."""

    def __init__(self, lfw_dir: Path, pipeline: FacePipeline, progress: bool) -> None:
        pairs = [p for p in read_pairs(lfw_dir / "pairs.txt", lfw_dir) if p.fold < LFW_CHECK_FOLDS]
        if not pairs:
            raise InputError(f"{lfw_dir / 'pairs.txt'} holds no pairs; give the LFW folder with its standard pairs.txt")
        photos = list(dict.fromkeys(str(q) for pair in pairs for q in (pair.a, pair.b)))
        row = {p: i for i, p in enumerate(photos)}
        self.a = np.array([row[str(p.a)] for p in pairs])
        self.b = np.array([row[str(p.b)] for p in pairs])
        self.same = np.array([p.same for p in pairs])
        self.folds = np.array([p.fold for p in pairs])
        self.chips, _ = central_chips(photos, pipeline, progress=progress)
        self.description = f"LFW pairs, folds 1-{LFW_CHECK_FOLDS} of {lfw_dir / 'pairs.txt'} ({len(pairs)} pairs)"

    def accuracy(self, embedder: Embedder) -> float:
        vectors = embedder.embed(self.chips)
        return ten_fold((vectors[self.a] * vectors[self.b]).sum(axis=1), self.same, self.folds).accuracy


def _measure(embedder: Embedder, faces: FaceSet, split: Split, lfw: LfwCheck | None) -> tuple[Scores, np.ndarray]:
    """The gate's scores, and every face's vector (for mapping thresholds)."""
    vectors = embedder.embed(faces.chips)
    new_people, _ = identification(vectors, faces.labels, split.train, split.gate)
    if lfw is not None:
        general = lfw.accuracy(embedder)
    else:
        general, _ = identification(vectors, faces.labels, split.general_enroll, split.general_probe)
    return Scores(round(new_people, 4), round(general, 4)), vectors


# -- training ----------------------------------------------------------------------------------------
def _augmenter(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image random flip, colour and brightness jitter, small rotation/shift/scale, blur and greyscale."""
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    transform = v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.02)], p=0.8),
            v2.RandomAffine(degrees=8, translate=(0.04, 0.04), scale=(0.93, 1.07)),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
            v2.RandomGrayscale(p=0.1),
        ]
    )
    return lambda batch: torch.stack([transform(chip) for chip in batch])


def _trainable(module: torch.nn.Module, family: str) -> list[torch.nn.Parameter]:
    prefixes = TRAINABLE[family]
    params = []
    for name, param in module.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
        if param.requires_grad:
            params.append(param)
    if not params:
        raise ModelError(f"no layer of this {family} network matches {prefixes}; it cannot be adapted")
    return params


def train(base: Embedder, faces: FaceSet, split: Split, options: AdaptOptions, *, progress: bool) -> Trained:
    """Fine-tune a copy of the base network; returns the epoch that did best on the early-stopping split
    (epoch 0 is the base network itself, so a run that never helps returns it unchanged)."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    device = base.device
    module = copy.deepcopy(base.module).eval()  # eval for good: batch-norm statistics stay as they are
    params = _trainable(module, base.spec.family)
    to_input = FAMILIES[base.spec.family].to_input
    augment = _augmenter(options.seed)
    model = replace(base, module=module)

    classes, targets = np.unique(faces.labels[split.train], return_inverse=True)
    base_vectors = base.embed(faces.chips[split.train])
    centroids = np.stack([base_vectors[targets == c].sum(axis=0) for c in range(len(classes))])
    head = torch.nn.Parameter(F.normalize(torch.from_numpy(centroids).float(), dim=1).to(device))
    optimiser = torch.optim.AdamW(
        [{"params": params, "lr": options.lr}, {"params": [head], "lr": options.head_lr, "weight_decay": 0.0}],
        weight_decay=options.weight_decay,
    )
    step = Step(optimiser, device)
    seen = np.concatenate([split.train, split.val])

    def val_score() -> tuple[float, float]:
        vectors = np.zeros((len(faces.labels), base.spec.dim), np.float32)
        vectors[seen] = model.embed(faces.chips[seen])
        return identification(vectors, faces.labels, split.train, split.val)

    def batch_losses(_epoch: int) -> Iterator[tuple[int, torch.Tensor]]:
        order = rng.permutation(len(split.train))
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            chips = torch.from_numpy(faces.chips[split.train[rows]]).permute(0, 3, 1, 2)
            batch = to_input(augment(chips).permute(0, 2, 3, 1).numpy()).to(device)
            labels = torch.from_numpy(targets[rows]).to(device)
            with step.autocast():
                embeddings = module(batch)
            cosine = F.normalize(embeddings.float(), dim=1) @ F.normalize(head, dim=1).T
            logits = options.scale * (cosine - options.margin * F.one_hot(labels, len(classes)))
            yield len(rows), F.cross_entropy(logits, labels)

    stopping = EarlyStopping(module, val_score(), options.patience)
    steps = -(-len(split.train) // options.batch_size)
    return run_epochs(
        options.epochs, batch_losses, step, stopping, val_score, steps=steps, desc="adapt", progress=progress
    )


def decide(before: Scores, after: Scores, max_drop: float) -> tuple[bool, str]:
    """The gate: better on the new people, and no more than max_drop worse on the general check."""
    gain = after.new_people - before.new_people
    drop = before.general - after.general
    if not gain > 0:  # NaN (nothing to measure) is no gain
        return False, f"new-people accuracy did not improve ({before.new_people:.4f} -> {after.new_people:.4f})"
    if not drop <= max_drop:
        return (
            False,
            f"general check dropped by {drop:.4f} ({before.general:.4f} -> {after.general:.4f}), more "
            f"than --max-drop {max_drop}",
        )
    return True, (
        f"new-people accuracy {before.new_people:.4f} -> {after.new_people:.4f}, general check "
        f"{before.general:.4f} -> {after.general:.4f} (allowed drop {max_drop})"
    )


def camera_gate(before: Scores, after: Scores, gain: tuple[float, float, float], max_drop: float) -> tuple[bool, str]:
    """The camera gate: held-out photos as the camera shows them identified better by more than their noise
    (the 95% interval of the gain above 0); the clean check (the model's) and the gallery's own clean photos
    (the model and the views together) each no more than max_drop worse."""
    interval = f"gain {gain[0]:+.4f}, 95% interval {gain[1]:+.4f} to {gain[2]:+.4f}"
    if not gain[1] > 0:  # NaN (nothing to measure) is no gain
        return False, f"held-out photos as the camera shows them: {interval}, not above their noise"
    clean = [("clean check", before.general, after.general)]
    if before.clean_gallery is not None and after.clean_gallery is not None:
        clean.append(("the gallery's clean photos", before.clean_gallery, after.clean_gallery))
    for what, was, now in clean:
        if not was - now <= max_drop:
            return False, f"{what} dropped by {was - now:.4f} ({was:.4f} -> {now:.4f}), more than --max-drop {max_drop}"
    said = ", ".join(f"{what} {was:.4f} -> {now:.4f}" for what, was, now in clean)
    named = "" if before.named is None else f", named right {before.named:.4f} -> {after.named:.4f}"
    return True, (
        f"held-out photos as the camera shows them: identified right {before.new_people:.4f} -> "
        f"{after.new_people:.4f} ({interval}){named}, {said} (allowed drop {max_drop})"
    )


# -- the command ---------------------------------------------------------------------------------------
def base_pipeline(meta: GalleryMeta, device: str, settings: Settings, min_face_size: int | None) -> FacePipeline:
    """The gallery's base (not adapted) model, checked against the SHA-256 the gallery remembers."""
    path, sha = meta.base_weights
    weights = Path(path) if path and Path(path).is_file() else None
    pipeline = FacePipeline.load(
        meta.model, weights=weights, device=device, min_face_size=min_face_size, settings=settings
    )
    if pipeline.embedder.weights_sha256 != sha:
        raise GalleryMismatchError(
            f"the base weights of {meta.model} that built this gallery ({path}, SHA-256 {sha[:12]}…) are not "
            f"here; put that file back at {path}"
        )
    return pipeline


def fingerprint(faces: FaceSet, base: Embedder, options: dict[str, Any], general: str) -> str:
    """What a checkpoint was made from: the training photos, the base weights, the options and the checks."""
    lines = sorted(f"{faces.people[label]}\t{sha}\n" for label, sha in zip(faces.labels, faces.sha256))
    return sha256_bytes(("".join(lines) + f"{base.weights_sha256}\n{options}\n{general}").encode())


def save_checkpoint(module: torch.nn.Module, record: dict[str, Any], models_dir: Path) -> Path:
    """The adapted weights as a plain state dict (loadable with weights_only) and its JSON record beside it."""
    path = models_dir / "adapted" / f"{record['model']}-{record['fingerprint'][:12]}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    try:
        write_atomically(path, lambda f: torch.save(state, f), mode=0o644)
        record = {**record, "weights_sha256": sha256_file(path)}
        write_bytes_atomically(path.with_suffix(".json"), json.dumps(record, indent=2).encode(), mode=0o644)
    except OSError as exc:
        raise ModelError(
            f"cannot write the adapted model to {path} ({exc.strerror or exc}); the gallery is unchanged: free some "
            "space or set FACEREC_MODELS to a writable folder, and run adapt again"
        ) from None
    return path


@dataclass(frozen=True)
class CameraRequest:
    """What `adapt --target` was told about the camera the model will serve: its pictures, and what the user
    knows (each given value replaces what was measured; without a target, they describe the camera alone)."""

    target: str | None = None
    face_size: float | None = None
    grey: bool | None = None
    noise: float | None = None
    jpeg: int | None = None
    views: str = "auto"  # faces joined with their camera views: on, off, auto (when held-out photos gain)


@dataclass
class _Setup:
    """What either method trains and checks on: the faces, their split, and the clean check."""

    faces: FaceSet
    split: Split
    source: str
    general: str
    general_photos: int


def _setup(faces: FaceSet, source: str, lfw: LfwCheck | None, options: AdaptOptions) -> _Setup:
    split = split_faces(faces, options.holdout, hold_back_people=lfw is None, seed=options.seed, source=source)
    return _Setup(faces, split, source, *_general_check(faces, split, lfw))


@dataclass
class _Trial:
    """One adaptation tried and measured, by either method: what the gate and the report need."""

    setup: _Setup
    before: Scores
    after: Scores
    trained: Trained
    kept: bool
    reason: str
    score_map: Callable[[Embedder], ScoreMap]  # measured on the adapted model, when it is kept
    camera: dict[str, Any] | None = None
    gain: tuple[float, float, float] | None = None
    view: CameraView | None = None  # camera adaptation: the faces' camera views are joined to their vectors
    views: np.ndarray | None = None  # every enrolled face's camera view (copies, N, H, W, 3)
    target: TargetFaces | None = None  # camera adaptation: the target's faces, the camera's strangers


def _general_check(faces: FaceSet, split: Split, lfw: LfwCheck | None) -> tuple[str, int]:
    if lfw is not None:
        return lfw.description, len(lfw.chips)
    people = len(np.unique(faces.labels[split.general_probe]))
    return (
        f"identification among {people} people held back from training",
        len(split.general_enroll) + len(split.general_probe),
    )


def _finetune_trial(
    base: Embedder, faces: FaceSet, source: str, lfw: LfwCheck | None, options: AdaptOptions, progress: bool
) -> _Trial:
    """In-domain adaptation: CosFace fine-tuning of the last stage on the labelled faces."""
    setup = _setup(faces, source, lfw, options)
    split = setup.split
    before, base_vectors = _measure(base, faces, split, lfw)
    training = train(base, faces, split, options, progress=progress)
    adapted = replace(base, module=training.module)
    after, adapted_vectors = _measure(adapted, faces, split, lfw)
    kept, reason = decide(before, after, options.max_drop)
    train_rows = split.train

    def score_map(_adapted: Embedder) -> ScoreMap:
        return ScoreMap.measure(base_vectors[train_rows], adapted_vectors[train_rows], faces.labels[train_rows])

    return _Trial(setup, before, after, training, kept, reason, score_map)


def measure_camera(
    request: CameraRequest, pipeline: FacePipeline, observed: list[Observation], detail: DetailScale, progress: bool
) -> tuple[Camera, Camera, TargetFaces | None]:
    """The target camera and the gallery's own photos, measured alike, and the target's faces; refuses a target
    that has no faces or is no worse than the gallery (nothing to adapt to)."""
    gallery_camera = Camera.measure(observed, detail, "the gallery's photos")
    found = None
    if request.target is not None:
        found = read_target(request.target, pipeline, progress=progress)
        if not found.observations:
            skipped = f" ({len(found.unreadable)} could not be read)" if found.unreadable else ""
            raise InputError(
                f"{request.target}: no face found in {found.pictures} {found.kind}{skipped}; give --target photos "
                "or video in which the camera shows faces (at least "
                f"{pipeline.detector.min_face_size} px wide), or describe it with --face-size/--grey"
            )
        camera = Camera.measure(found.observations, detail, f"{found.kind} {request.target} ({found.pictures} read)")
    else:
        camera = Camera(gallery_camera.looks, "the gallery's photos")
    camera = camera.described(face_size=request.face_size, grey=request.grey, noise=request.noise, jpeg=request.jpeg)
    if not camera.worse_than(gallery_camera):
        raise InputError(
            f"nothing to adapt to: the target's {camera.summary().line()}; the gallery's photos: "
            f"{gallery_camera.summary().line()}. The gallery is unchanged (give --face-size/--grey when the camera "
            "is worse than these pictures show)"
        )
    return camera, gallery_camera, found


def _camera_trial(
    base: Embedder,
    pipeline: FacePipeline,
    observed: list[Observation],
    scenes: list[Scene],
    keys: list[str],
    faces: FaceSet,
    request: CameraRequest,
    lfw: LfwCheck | None,
    options: AdaptOptions,
    distil_options: DistilOptions,
    progress: bool,
) -> _Trial:
    """Camera adaptation: distillation onto the base model's clean vectors, and the gallery's faces joined with
    their camera views where that identifies the early-stopping photos better (facerec.camera_view); the
    whole gated on other held-out gallery photos damaged like the camera, with a bootstrap interval."""
    source = f"gallery photos, to {request.target or 'the camera described'}"
    detail = DetailScale.fit(faces.chips, seed=options.seed)
    camera, gallery_camera, found = measure_camera(request, pipeline, observed, detail, progress)
    noise = float(np.median([o.noise for o in observed]))
    setup = _setup(faces, source, lfw, options)
    split = setup.split
    train_chips, train_labels = faces.chips[split.train], faces.labels[split.train]
    view = CameraView(camera, noise)
    views = view.views(scenes, keys, pipeline)  # every enrolled face's, as the gallery would store them

    def probes(rows: np.ndarray, seed: int) -> Probes:
        chosen = [scenes[i] for i in rows]
        return damaged_probes(chosen, faces.labels[rows], camera, pipeline, noise, copies=PROBE_COPIES, seed=seed)

    val, gate = probes(split.val, options.seed + 1), probes(split.gate, options.seed + 2)
    clean_val = Held(train_chips, train_labels, val).score(base)
    joined_val = Held(train_chips, train_labels, val, views[:, split.train]).score(base)
    use_views = request.views == "on" or (request.views == "auto" and joined_val > clean_val)
    stored_views = views[:, split.train] if use_views else None
    rng = np.random.default_rng(options.seed + 3)
    train_scenes = [scenes[i] for i in split.train]
    damaged = np.stack(
        [
            as_camera_shows(train_scenes, camera, pipeline, noise, rng)
            for _ in tqdm(range(distil_options.damages), desc="damage photos", disable=not progress, leave=False)
        ]
    )

    def scores(correct: np.ndarray, named: np.ndarray | None, embedder: Embedder, with_views: bool) -> Scores:
        """The gate photos' accuracy (and named right), the model's clean check and the gallery's own clean
        photos as it would store them, from one embedding of the gallery's chips."""
        clean = embedder.embed(faces.chips)
        general = (
            lfw.accuracy(embedder)
            if lfw is not None
            else identification(clean, faces.labels, split.general_enroll, split.general_probe)[0]
        )
        stored = join(clean, embed_views(embedder, views)) if with_views else clean
        gallery = clean_leave_one_out(clean, stored, faces.labels)
        share = None if named is None else round(float(named.mean()), 4)
        return Scores(round(float(correct.mean()), 4), round(general, 4), round(gallery, 4), share)

    # Before: the gallery as it is (clean vectors, base model); after: the model and the views it would keep.
    # With enough target faces (as keep_camera_strangers asks) each is also measured at the operating point they
    # set: what users get, reported beside top-1.
    strangers = (
        base.stack([o.chip for o in found.observations])
        if found is not None and len(found.observations) >= MIN_STRANGERS
        else None
    )

    def measured(embedder: Embedder, stored_views: np.ndarray | None) -> tuple[Scores, np.ndarray]:
        held = Held(train_chips, train_labels, gate, stored_views)
        named: np.ndarray | None = None
        if strangers is None:
            correct = held.correct(embedder)
        else:
            open_set = held.open_set(embedder, strangers)
            correct, named = open_set.correct, open_set.named(PHOTO_FALSE_ACCEPT)
        return scores(correct, named, embedder, stored_views is not None), correct

    before, before_correct = measured(base, None)
    training = distil(
        base,
        train_chips,
        train_labels,
        damaged,
        Held(train_chips, train_labels, val, stored_views),
        distil_options,
        progress=progress,
    )
    adapted = replace(base, module=training.module)
    after, after_correct = measured(adapted, stored_views)
    gain = gain_interval(before_correct, after_correct, gate.photo, seed=options.seed)
    kept, reason = camera_gate(before, after, gain, options.max_drop)
    chosen_view = view if use_views else None

    def score_map(adapted_model: Embedder) -> ScoreMap:
        stored = (
            adapted_model.embed(train_chips)
            if chosen_view is None
            else chosen_view.vectors(adapted_model, train_chips, views[:, split.train])
        )
        return ScoreMap.measure(base.embed(train_chips), stored, train_labels, probes=adapted_model.embed(damaged[0]))

    camera_record = {
        "target": asdict(camera.summary()),
        "gallery": asdict(gallery_camera.summary()),
        # Whether the gallery joins its faces with their camera views, and the base model's early-stopping
        # accuracy that decided it: clean vectors, and joined.
        "views": {"used": bool(use_views), "decided_on": [round(clean_val[0], 4), round(joined_val[0], 4)]},
    }
    return _Trial(
        setup,
        before,
        after,
        training,
        kept,
        reason,
        score_map,
        camera=camera_record,
        gain=gain,
        view=chosen_view,
        views=views,
        target=found,
    )


def keep_camera_strangers(target: TargetFaces | None, embedder: Embedder, gallery: Path, weights_sha256: str) -> str:
    """The target's faces, embedded by the kept weights, kept as the gallery's camera strangers
    (`cohort.CAMERA_STRANGERS_FILE`, a raw cohort): the gallery's operating points are then set on the
    camera's own faces' raw cosines, as `facerec calibrate --strangers` does with photos (the user's own
    strangers still come first). Faces of enrolled people in the target score high and make the thresholds
    stricter, never looser. Returns what the operating points rest on, for the report."""
    path = gallery / CAMERA_STRANGERS_FILE
    faces = len(target.observations) if target is not None else 0
    if target is not None and faces >= MIN_STRANGERS:
        vectors = embedder.embed(embedder.stack([o.chip for o in target.observations]))
        provenance = {"weights_sha256": weights_sha256, "target": target.source, "faces": faces}
        save_strangers(path, vectors[:0], vectors, provenance)
        return f"calibrated on the camera's own faces ({faces} strangers, raw cosine)"
    path.unlink(missing_ok=True)  # an earlier adaptation's
    return (
        f"the LFW table mapped onto the camera's scores: the target gave {faces} faces, and calibrating on the "
        f"camera needs {MIN_STRANGERS} (or run facerec calibrate --strangers with photos of the camera's strangers)"
    )


def adapt_gallery(
    gallery_path: Path,
    *,
    settings: Settings,
    device: str = "auto",
    min_face_size: int | None = None,
    photos: list[tuple[str, Path]] | None = None,
    photos_label: str | None = None,
    lfw: Path | None = None,
    options: AdaptOptions = AdaptOptions(),
    camera: CameraRequest | None = None,
    distil_options: DistilOptions = DistilOptions(),
    dry_run: bool = False,
    progress: bool = False,
) -> AdaptReport:
    """Train on the gallery's faces (or `photos`), measure, and keep the result only when the gate passes.

    With `camera`, the model is taught that camera by distillation on the gallery's photos (see
    facerec.distil); without it, it is fine-tuned to the gallery's people in their own photos.
    The gallery's write lock is held throughout, so nothing is enrolled or forgotten while its faces are
    being re-embedded (identify keeps working). Everything is checked before training: the model, every
    source photo, the amount of data, the LFW folder, the target.
    """
    started = time.perf_counter()
    meta = Gallery.read_meta(gallery_path)
    if meta is None:
        raise no_gallery(gallery_path)
    if camera is not None and photos is not None:
        raise InputError("--target teaches the model a camera from the gallery's own photos; drop --photos")
    pipeline = base_pipeline(meta, device, settings, min_face_size)
    base = pipeline.embedder
    if lfw is not None and not (lfw / "pairs.txt").is_file():
        raise InputError(
            f"{lfw}: no pairs.txt here; give --lfw the LFW folder that holds pairs.txt and one folder per person"
        )
    with Gallery.open_for_write(gallery_path, lock_timeout=settings.lock_timeout_s) as gallery:
        stored = gallery.records()
        records = [r for _, r in stored]
        persons, hashes = [r.person for r in records], [r.sha256 for r in records]
        if camera is not None:
            observed, scenes = gallery_observations(records, pipeline, progress)
            chips = base.stack([o.chip for o in observed])
            faces = _face_set(chips, persons, hashes, base)
            check = LfwCheck(lfw, pipeline, progress) if lfw is not None else None
            keys = [view_key(r.sha256, r.box) for r in records]
            trial = _camera_trial(
                base, pipeline, observed, scenes, keys, faces, camera, check, options, distil_options, progress
            )
        else:
            chips = gallery_chips(records, pipeline, progress)
            if photos is None:
                source, faces = f"gallery {gallery_path}", _face_set(chips, persons, hashes, base)
            else:
                source, faces = photos_label or "the photo folder", photo_faces(photos, pipeline, progress)
            check = LfwCheck(lfw, pipeline, progress) if lfw is not None else None
            trial = _finetune_trial(base, faces, source, check, options, progress)
        split = trial.setup.split
        report = AdaptReport(
            gallery=str(gallery_path),
            model=base.spec.name,
            device=base.device,
            source=trial.setup.source,
            general_check=trial.setup.general,
            people=len(np.unique(faces.labels[np.concatenate([split.train, split.gate, split.val])])),
            train_photos=len(split.train),
            gate_photos=len(split.gate),
            val_photos=len(split.val),
            general_photos=trial.setup.general_photos,
            before=trial.before,
            after=trial.after,
            epochs_run=len(trial.trained.losses),
            best_epoch=trial.trained.best_epoch,
            losses=trial.trained.losses,
            val_accuracy=trial.trained.val_accuracy,
            seconds=0.0,
            kept=trial.kept and not dry_run,
            reason=trial.reason if not (trial.kept and dry_run) else f"would be kept (--dry-run): {trial.reason}",
            dry_run=dry_run,
            camera=trial.camera,
            gain=list(trial.gain) if trial.gain else None,
        )
        if trial.kept and not dry_run:
            adapted = replace(base, module=trial.trained.module)
            score_map = trial.score_map(adapted)
            options_used = asdict(distil_options) if camera is not None else asdict(options)
            record = {
                "model": base.spec.name,
                "base_weights": str(base.weights_path),
                "base_weights_sha256": base.weights_sha256,
                "fingerprint": fingerprint(
                    faces,
                    base,
                    options_used,
                    trial.setup.general if trial.camera is None else f"{trial.setup.general}\n{trial.camera}",
                ),
                "people": report.people,
                "source": trial.setup.source,
                "photos": len(faces.labels),
                "general_check": trial.setup.general,
                "before": asdict(trial.before),
                "after": asdict(trial.after),
                "options": options_used,
                "camera": trial.camera,
                "score_map": asdict(score_map),
                "device": base.device,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            path = save_checkpoint(trial.trained.module, record, settings.models_dir)
            weights_sha256 = sha256_file(path)
            if trial.camera is not None:
                rests_on = keep_camera_strangers(trial.target, adapted, gallery_path, weights_sha256)
                record["camera"] = report.camera = {**trial.camera, "operating_points": rests_on}
            adaptation = Adaptation(
                str(base.weights_path),
                base.weights_sha256,
                {
                    k: record[k]
                    for k in (
                        "fingerprint",
                        "created",
                        "before",
                        "after",
                        "people",
                        "photos",
                        "general_check",
                        "source",
                        "camera",
                    )
                },
                score_map,
                trial.view.to_record() if trial.view is not None else None,
            )
            meta = gallery.meta.adapted(path.resolve(), weights_sha256, adaptation)
            _reembed(
                gallery,
                stored,
                adapted.embed(chips)
                if trial.view is None or trial.views is None
                else trial.view.vectors(adapted, chips, trial.views),
                lambda: base.embed(chips),
                meta,
                veto_vectors(gallery, meta, pipeline, adapted),
            )
            report.checkpoint = str(path)
            report.thresholds = {"score_map": asdict(score_map)}
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def _reembed(
    gallery: Gallery,
    stored: list[tuple[int, FaceRecord]],
    vectors: np.ndarray,
    base_vectors: Callable[[], np.ndarray],
    meta: GalleryMeta,
    vetoes: list[tuple[FaceRecord, np.ndarray]],
) -> None:
    """Switch the gallery to the checkpoint in one transaction, remembering the base vectors for rollback:
    the stored ones when the gallery is on its base model now (exact), else those already remembered."""
    ids = np.array([i for i, _ in stored], np.int64)
    keep = gallery.vectors() if gallery.meta.adaptation is None else (ids, base_vectors())
    gallery.replace_vectors(ids, vectors, meta, keep_base=keep, vetoes=vetoes)


def veto_vectors(
    gallery: Gallery, meta: GalleryMeta, pipeline: FacePipeline, embedder: Embedder
) -> list[tuple[FaceRecord, np.ndarray]]:
    """The gallery's vetoed faces that `meta`'s weights have not embedded yet, embedded by `embedder` from their
    photos, so that a veto holds on whichever model the gallery is switched to."""
    missing = gallery.veto_records(missing_for=meta.weights_sha256)
    if not missing:
        return []
    return list(zip(missing, embedder.embed(embedder.stack([_chip_of_record(r, pipeline) for r in missing]))))


def rollback_gallery(
    gallery_path: Path,
    *,
    settings: Settings,
    device: str = "auto",
    min_face_size: int | None = None,
    progress: bool = False,
) -> RollbackReport:
    """Return an adapted gallery to its base model: remembered base vectors back exactly, faces enrolled since
    adapting embedded again with the base model from their photos."""
    meta = Gallery.read_meta(gallery_path)
    if meta is None:
        raise no_gallery(gallery_path)
    if meta.adaptation is None:
        raise InputError(
            f"gallery {gallery_path} uses its base model already ({meta.weights_path}); nothing to roll back"
        )
    pipeline = base_pipeline(meta, device, settings, min_face_size)
    base = pipeline.embedder
    with Gallery.open_for_write(gallery_path, lock_timeout=settings.lock_timeout_s) as gallery:
        stored = gallery.records()
        kept_ids, kept_vectors = gallery.vectors("base_vectors")
        remembered = dict(zip(kept_ids.tolist(), kept_vectors))
        missing = [(i, r) for i, r in stored if i not in remembered]
        if missing:
            fresh = base.embed(gallery_chips([r for _, r in missing], pipeline, progress))
            remembered.update(zip([i for i, _ in missing], fresh))
        ids = np.array([i for i, _ in stored], np.int64)
        vectors = (
            np.stack([remembered[i] for i in ids.tolist()]) if len(ids) else np.zeros((0, base.spec.dim), np.float32)
        )
        meta_base = gallery.meta.on_base()
        gallery.replace_vectors(
            ids, vectors, meta_base, keep_base=None, vetoes=veto_vectors(gallery, meta_base, pipeline, base)
        )
        # The adapted camera's strangers were embedded by the adapted weights: of no use to the base model.
        (gallery_path / CAMERA_STRANGERS_FILE).unlink(missing_ok=True)
    return RollbackReport(
        str(gallery_path),
        base.spec.name,
        str(base.weights_path),
        len(ids),
        len(ids) - len(missing),
        len(missing),
        meta.weights_path,
    )
