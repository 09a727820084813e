"""Teaching the embedder a camera: knowledge distillation from the base model on the gallery's clean photos.

The base model on a clean chip is the teacher; a copy (the student) sees the same chip damaged as the
target camera would show it (`camera.Camera.damage`) and learns to land on the teacher's vector, so the
camera's faces come out where the gallery's photos of the same people are. No labels are needed, which is
what makes two or three photos per person enough: each photo is one more point whose position the student
must keep.

Measured choices (bench/adapt.py, dlib-resnet, LFW at 40 px; see the module docstring of bench/adapt.py):

* The loss is contrastive (InfoNCE): the student's vector of a damaged chip must pick its own teacher
  vector out of every training photo's, at temperature 0.02. A plain cosine-to-teacher loss collapsed every
  vector onto the mean (dlib's raw vectors share a large common component), and InfoNCE against other
  photos is what keeps them apart. The identity term is a mask: the same person's other photos are left
  out of the negatives. Without it the loss pushed a person's photos apart, and the gallery's own people
  got worse (0.830 -> 0.817 at 40 px) while people outside it got better.
* A clean term, the same loss on the undamaged chip, keeps the student a good model of clean photos (the
  gallery is embedded from clean photos by the student too), and a pull toward the base weights (L2-SP)
  limits forgetting further.
* Every layer learns: what a camera changes (resolution, blur, noise, grey) is in the early features.
* Early stopping on held-out gallery photos damaged the same way; the network stays in eval mode (dlib's
  batch norms are fixed affine layers); fixed seed; mixed precision on a GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .calibration import threshold_for
from .camera import Camera
from .camera_view import Scene, as_camera_shows, embed_views, join
from .embedders.base import FAMILIES, Embedder
from .pipeline import FacePipeline
from .training import EarlyStopping, Step, Trained, run_epochs
from .vectors import group_means


@dataclass(frozen=True)
class DistilOptions:
    """How to distil; the defaults were chosen on LFW at 40 and 64 px (bench/adapt.py), not on any gate set."""

    epochs: int = 4
    lr: float = 1e-5
    temperature: float = 0.02
    clean_weight: float = 1.0  # the clean chip's distance to its teacher vector: the guard against forgetting
    align: float = 1.0  # the damaged chip's distance to its teacher vector, beside the InfoNCE ranking
    anchor: float = 0.0  # L2-SP: weight of the squared distance to the base weights
    damages: int = 4  # damaged copies of each training photo (made once; each epoch goes through all)
    batch_size: int = 32
    patience: int = 2  # epochs without a better held-out score before stopping
    seed: int = 0


@dataclass
class Probes:
    """Held-out photos as the camera would show them, fixed once so every model is measured on the same ones."""

    chips: np.ndarray  # damaged chips
    labels: np.ndarray  # person of each
    photo: np.ndarray  # which held-out photo each is a damaged copy of (for the bootstrap)


def damaged_probes(
    scenes: list[Scene],
    labels: np.ndarray,
    camera: Camera,
    pipeline: FacePipeline,
    gallery_noise: float,
    *,
    copies: int,
    seed: int,
) -> Probes:
    rng = np.random.default_rng(seed)
    damaged = [as_camera_shows(scenes, camera, pipeline, gallery_noise, rng) for _ in range(copies)]
    return Probes(
        np.concatenate(damaged) if damaged else pipeline.embedder.stack([]),
        np.tile(labels, copies),
        np.tile(np.arange(len(scenes)), copies),
    )


def _own_less_best_other(sims: np.ndarray, people: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each probe's similarity to its own person less the best other person's: positive where it is
    identified right."""
    where = np.arange(len(sims)), np.searchsorted(people, labels)
    own = sims[where].copy()
    others = sims.copy()
    others[where] = -np.inf
    return own - others.max(axis=1)


@dataclass
class OpenSet:
    """Held-out probes as the gallery decides on them: whether each is identified right, its best score, and
    the camera's strangers' (the target's faces) best scores against the same stored people."""

    correct: np.ndarray
    best: np.ndarray
    strangers: np.ndarray

    def named(self, rate: float) -> np.ndarray:
        """Which probes are named right at the threshold the strangers set for `rate` (the conformal rule the
        gallery is calibrated by)."""
        return self.correct & (self.best >= threshold_for(self.strangers, rate))


@dataclass
class Held:
    """What a model is measured on: the enrolled (training) chips, their labels and camera views (None: the
    gallery stores clean vectors), and damaged held-out probes."""

    enroll: np.ndarray
    labels: np.ndarray
    probes: Probes
    views: np.ndarray | None = None

    def _similarities(self, embedder: Embedder, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chips against the enrolled people's centroids (their clean vectors, joined with their camera
        views when given: what the gallery would store); and the people, in column order."""
        people, rows = np.unique(self.labels, return_inverse=True)
        clean = embedder.embed(self.enroll)
        stored = clean if self.views is None else join(clean, embed_views(embedder, self.views))
        return embedder.embed(chips) @ group_means(stored, rows, len(people)).T, people

    def margins(self, embedder: Embedder) -> np.ndarray:
        if len(self.probes.chips) == 0:
            return np.zeros(0)
        sims, people = self._similarities(embedder, self.probes.chips)
        return _own_less_best_other(sims, people, self.probes.labels)

    def correct(self, embedder: Embedder) -> np.ndarray:
        """Whether each probe's nearest centroid is its own person."""
        return self.margins(embedder) > 0

    def score(self, embedder: Embedder) -> tuple[float, float]:
        """Accuracy, then the mean margin to break ties (on a few held-out photos accuracy often ties)."""
        margins = self.margins(embedder)
        if len(margins) == 0:
            return float("nan"), float("nan")
        return float(np.mean(margins > 0)), float(np.mean(margins))

    def open_set(self, embedder: Embedder, strangers: np.ndarray) -> OpenSet:
        """The probes and the `strangers` chips, both against the stored people, embedded once."""
        sims, people = self._similarities(embedder, np.concatenate([self.probes.chips, strangers]))
        probes, others = sims[: len(self.probes.chips)], sims[len(self.probes.chips) :]
        margins = _own_less_best_other(probes, people, self.probes.labels)
        return OpenSet(margins > 0, probes.max(axis=1), others.max(axis=1))


def gain_interval(
    before: np.ndarray, after: np.ndarray, photo: np.ndarray, *, rounds: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """The accuracy gain and its 95% bootstrap interval, resampling held-out photos (a photo's damaged copies
    go together: they are not independent)."""
    if len(before) == 0:
        return float("nan"), float("nan"), float("nan")
    photos, rows = np.unique(photo, return_inverse=True)
    per_photo = np.bincount(rows, weights=after.astype(float) - before.astype(float), minlength=len(photos))
    counts = np.bincount(rows, minlength=len(photos)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(photos), size=(rounds, len(photos)))
    gains = per_photo[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(gains, [2.5, 97.5])
    return float(per_photo.sum() / counts.sum()), float(low), float(high)


def distil(
    base: Embedder,
    chips: np.ndarray,
    labels: np.ndarray,
    damaged: np.ndarray,
    val: Held,
    options: DistilOptions,
    *,
    progress: bool,
) -> Trained:
    """Distil a copy of the base network on `chips` (clean training chips of people `labels`; `damaged`, of
    shape (copies, N, H, W, 3): the same faces as the camera shows them, see `as_camera_shows`). Returns the
    epoch that did best on `val`, epoch 0 being the base network itself."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    device = base.device
    module = copy.deepcopy(base.module).eval()
    params = [p for p in module.parameters()]
    for param in params:
        param.requires_grad_(True)
    anchors = [p.detach().clone() for p in params] if options.anchor else []
    to_input = FAMILIES[base.spec.family].to_input
    student = replace(base, module=module)
    bank = torch.from_numpy(base.embed(chips)).to(device)  # the teacher's unit vectors, fixed
    people = torch.from_numpy(np.asarray(labels)).to(device)
    step = Step(torch.optim.Adam(params, lr=options.lr), device)

    score = lambda: val.score(student)
    copies = len(damaged)

    def batch_losses(_epoch: int) -> Iterator[tuple[int, torch.Tensor]]:
        order = rng.permutation(len(chips) * copies)
        for start in range(0, len(order), options.batch_size):
            picked = order[start : start + options.batch_size]
            copy_of, rows = picked // len(chips), picked % len(chips)
            batch = torch.cat([to_input(damaged[copy_of, rows]), to_input(chips[rows])]).to(device)
            targets = torch.from_numpy(rows).to(device)
            with step.autocast():
                vectors = F.normalize(module(batch).float(), dim=1)
            # The person's other photos are no negatives: pushing them away would undo who is who.
            other_photos = (people[targets][:, None] == people[None, :]) & (
                torch.arange(len(chips), device=device)[None, :] != targets[:, None]
            )
            logits = (vectors @ bank.T / options.temperature).masked_fill(other_photos.repeat(2, 1), -1e4)
            # InfoNCE only ranks: it is met as well by moving every vector off the teacher's common component,
            # which the clean gallery and the base model's thresholds would not follow. The distance to the
            # teacher's own vector (1 - cosine, on the logits' scale) keeps the student where the teacher is.
            distance = (1.0 - (vectors * bank[targets].repeat(2, 1)).sum(dim=1)) / options.temperature
            loss = F.cross_entropy(logits[: len(rows)], targets) + options.align * distance[: len(rows)].mean()
            loss = loss + options.clean_weight * distance[len(rows) :].mean()
            if anchors:
                loss = loss + options.anchor * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
            yield len(rows), loss

    stopping = EarlyStopping(module, score(), options.patience)
    steps = -(-len(chips) * copies // options.batch_size)
    return run_epochs(
        options.epochs, batch_losses, step, stopping, score, steps=steps, desc="adapt (distil)", progress=progress
    )
