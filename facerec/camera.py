"""What a camera does to faces: measured on the camera's own pictures, and done again to good photos.

`facerec adapt --target` teaches the embedder the camera it will serve. People are enrolled from good
photos; the camera sees them small, blurred, noisy, compressed or grey. A student network learns to map a
damaged chip onto the vector the base model gives the clean one, so this module provides both halves: a
`Camera` measured from unlabelled faces of the target, and `Camera.damage`, which does the same to a
gallery chip.

Everything is measured on the chips the embedder sees (any model), per face:

* detail: the face's effective width in pixels. A face 18 px wide that was enlarged and a 100 px face
  blurred to the same detail look alike to a network, and so they do here: a chip loses a characteristic
  share of its contrast when shrunk to a fraction of its size and enlarged back, at each of `_PROBES`.
  That curve, compared with the same curve of the gallery's own chips damaged at known widths
  (`DetailScale`), says how much detail the face holds: the width whose damage on your own photos looks
  like this face.
* grey (an infrared camera at night), brightness and contrast of the face.
* noise: sensor noise in grey levels, by Immerkær's estimator (robust form: the median absolute response
  of a mask that cancels smooth image content), on the face region of its photo at native resolution.
* compression: the JPEG quality of the photo, from its quantisation tables (JPEG files only: video codecs
  leave no such record, and the report says compression was not measured; `--jpeg` sets it).

A camera is the list of its measured faces (`Look`s), and one synthetic damage copies one of them at random,
so the mix of sizes and conditions follows the camera's own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# Fractions of the chip's size at which a chip is shrunk and enlarged back to read its detail curve.
_PROBES = np.geomspace(0.06, 1.0, 12)
# Known widths (fractions of the chip) at which the gallery's chips are damaged to calibrate the curve.
_KNOWN = np.geomspace(0.06, 1.0, 24)
# A face whose chip's channels differ by less than this (mean of max - min, grey levels) is grey.
GREY_SPREAD = 4.0
# Below this many pixels across, a chip is too small to hold a face; detail estimates stop here.
MIN_WIDTH_PX = 6
# The IJG quantisation table of luminance at quality 50, in natural order; the sum is what matters.
_IJG_LUMA = np.array(
    [
        *(16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56),
        *(14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92),
        *(49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99),
    ],
    np.float64,
)


@dataclass(frozen=True)
class Look:
    """One face as a camera shows it."""

    width: float  # effective detail: how many pixels wide the face is, in what it holds
    grey: bool
    noise: float  # sensor noise, standard deviation in grey levels
    jpeg: int | None  # JPEG quality of its photo; None: not compressed, or not measurable
    brightness: float  # mean grey level of the face
    contrast: float  # standard deviation of the grey levels


def _grey(chips: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) float32 luminance (BT.601, as JPEG and cv2 use)."""
    return chips.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _centre(grey: np.ndarray) -> np.ndarray:
    """The chip's middle, where the face is: borders hold background and the warp's black corners."""
    size = grey.shape[-1]
    cut = size // 6
    return grey[..., cut : size - cut, cut : size - cut]


def _resized(image: np.ndarray, fraction: float) -> np.ndarray:
    """Shrunk to `fraction` of its size (area averaging, as a sensor does) and enlarged back (bicubic)."""
    size = image.shape[0]
    small = max(MIN_WIDTH_PX, round(size * fraction))
    if small >= size:
        return image
    shrunk = cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (size, size), interpolation=cv2.INTER_CUBIC)


def _detail_curves(grey: np.ndarray) -> np.ndarray:
    """(N, len(_PROBES)): the log share of each chip's contrast lost when shrunk to each probe fraction."""
    curves = np.empty((len(grey), len(_PROBES)), np.float64)
    for i, chip in enumerate(grey):
        contrast = float(_centre(chip).std()) + 1.0
        for j, fraction in enumerate(_PROBES):
            curves[i, j] = np.log(np.abs(_centre(chip - _resized(chip, fraction))).mean() / contrast + 1e-4)
    return curves


@dataclass(frozen=True)
class DetailScale:
    """The detail curve of the gallery's own chips damaged at each of `_KNOWN` fractions, to read others by."""

    curves: np.ndarray  # (len(_KNOWN), len(_PROBES)) mean curve per known fraction

    @classmethod
    def fit(cls, chips: np.ndarray, *, limit: int = 48, seed: int = 0) -> DetailScale:
        """Calibrated on up to `limit` of the gallery's chips (a sample is enough: the curves barely vary)."""
        rng = np.random.default_rng(seed)
        sample = _grey(chips[rng.permutation(len(chips))[:limit]])
        return cls(np.stack([_detail_curves(np.stack([_resized(g, f) for g in sample])).mean(axis=0) for f in _KNOWN]))

    def fractions(self, chips: np.ndarray) -> np.ndarray:
        """Each chip's effective detail as a fraction of its size: the known fraction whose curve is nearest,
        refined between the two nearest."""
        if len(chips) == 0:
            return np.zeros(0)
        distance = ((_detail_curves(_grey(chips))[:, None, :] - self.curves[None]) ** 2).sum(axis=2)
        order = np.argsort(distance, axis=1)[:, :2]
        rows = np.arange(len(chips))
        near, next_ = distance[rows, order[:, 0]], distance[rows, order[:, 1]]
        weight = next_ / np.maximum(near + next_, 1e-12)  # the nearer known fraction weighs more
        logs = np.log(_KNOWN)
        return np.exp(weight * logs[order[:, 0]] + (1 - weight) * logs[order[:, 1]])


def noise_level(grey_region: np.ndarray) -> float:
    """Sensor noise (grey levels) of a native-resolution region, by Immerkær's mask with a median: faces'
    edges are few, so they do not move the median the way they move the mean."""
    if min(grey_region.shape) < 3:
        return 0.0
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(grey_region.astype(np.float32), -1, mask, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(np.median(np.abs(response)) / (0.6745 * 6.0))  # the mask's gain on white noise is 6


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality a JPEG was saved at, from its luminance quantisation table; None for other formats."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            tables = getattr(image, "quantization", None)
            if image.format != "JPEG" or not tables:
                return None
            luma = np.array(tables[min(tables)], np.float64)
    except Exception:  # the photo decoded elsewhere: no quality is a measurement, not an error
        return None
    scale = 100.0 * luma.sum() / _IJG_LUMA.sum()  # IJG: table = T50 * scale / 100
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(np.clip(round(quality), 1, 100))


@dataclass(frozen=True)
class Observation:
    """What measuring one face needs: its chip, its width in the chip, and what only its photo shows."""

    chip: np.ndarray  # the embedder's chip (H, W, 3) uint8
    chip_width: float  # the face's detector-box width in chip pixels (`Embedder.face_width`)
    noise: float  # `noise_level` of its region of the photo
    jpeg: int | None  # `jpeg_quality` of the photo


def observe_region(image: np.ndarray, box: Sequence[float]) -> float:
    """The noise of a face's region of its RGB photo, at the photo's own resolution."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    height, width = image.shape[:2]
    region = image[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)]
    if region.size == 0:
        return 0.0
    return noise_level(_grey(region[None])[0])


@dataclass(frozen=True)
class CameraSummary:
    faces: int
    source: str
    face_width_px: tuple[float, float, float]  # effective detail: 10th percentile, median, 90th percentile
    grey_share: float
    noise: float  # median, grey levels
    jpeg_quality: int | None  # median over JPEG photos; None: not compressed or not measurable (video)
    brightness: float
    contrast: float

    def line(self) -> str:
        """One line for people."""
        jpeg = f"JPEG quality {self.jpeg_quality}" if self.jpeg_quality else "no JPEG compression measured"
        low, median, high = self.face_width_px
        return (
            f"{self.faces} faces: {median:.0f} px of detail (10-90%: {low:.0f}-{high:.0f}), "
            f"{self.grey_share:.0%} grey, noise {self.noise:.1f}, {jpeg}, "
            f"brightness {self.brightness:.0f}, contrast {self.contrast:.0f}"
        )


@dataclass(frozen=True)
class Camera:
    """A camera as the faces it shows (`looks`), and what was measured to know it."""

    looks: tuple[Look, ...]
    source: str  # where it was measured, or the options that described it

    @classmethod
    def measure(cls, observations: Sequence[Observation], detail: DetailScale, source: str) -> Camera:
        """The camera from faces of its own pictures; `detail` is calibrated on the gallery's chips."""
        if not observations:
            return cls((), source)
        chips = np.stack([o.chip for o in observations])
        grey = _grey(chips)
        spread = (chips.max(axis=3).astype(np.float32) - chips.min(axis=3)).mean(axis=(1, 2))
        widths = detail.fractions(chips) * np.array([o.chip_width for o in observations])
        centre = _centre(grey)
        looks = tuple(
            Look(
                width=round(float(max(w, MIN_WIDTH_PX)), 1),
                grey=bool(s < GREY_SPREAD),
                noise=round(o.noise, 2),
                jpeg=o.jpeg,
                brightness=round(float(c.mean()), 1),
                contrast=round(float(c.std()), 1),
            )
            for o, w, s, c in zip(observations, widths, spread, centre)
        )
        return cls(looks, source)

    def described(
        self,
        *,
        face_size: float | None = None,
        grey: bool | None = None,
        noise: float | None = None,
        jpeg: int | None = None,
    ) -> Camera:
        """The camera with what its user knows about it put in place of what was measured."""
        given = {"face size": face_size, "grey": grey, "noise": noise, "jpeg": jpeg}
        said = ", ".join(f"{k} {v}" for k, v in given.items() if v is not None)
        if not said:
            return self
        looks = tuple(
            Look(
                width=look.width if face_size is None else float(face_size),
                grey=look.grey if grey is None else grey,
                noise=look.noise if noise is None else float(noise),
                jpeg=look.jpeg if jpeg is None else jpeg,
                brightness=look.brightness,
                contrast=look.contrast,
            )
            for look in self.looks
        )
        return Camera(looks, f"{self.source}; given {said}")

    def summary(self) -> CameraSummary:
        """What was measured, as a report says it."""
        looks = self.looks or (Look(0.0, False, 0.0, None, 0.0, 0.0),)
        widths = np.array([look.width for look in looks])
        qualities = [look.jpeg for look in looks if look.jpeg is not None]
        return CameraSummary(
            faces=len(self.looks),
            source=self.source,
            face_width_px=(
                round(float(np.percentile(widths, 10)), 1),
                round(float(np.median(widths)), 1),
                round(float(np.percentile(widths, 90)), 1),
            ),
            grey_share=round(float(np.mean([look.grey for look in looks])), 3),
            noise=round(float(np.median([look.noise for look in looks])), 2),
            jpeg_quality=int(np.median(qualities)) if qualities else None,
            brightness=round(float(np.median([look.brightness for look in looks])), 1),
            contrast=round(float(np.median([look.contrast for look in looks])), 1),
        )

    def worse_than(self, gallery: Camera) -> list[str]:
        """How this camera's faces are worse than the gallery's (measured alike); none: nothing to adapt to."""
        if not self.looks or not gallery.looks:
            return []
        mine, theirs = self.summary(), gallery.summary()
        reasons = []
        if mine.face_width_px[1] < 0.8 * theirs.face_width_px[1]:
            reasons.append(
                f"faces hold {mine.face_width_px[1]:.0f} px of detail against the gallery's "
                f"{theirs.face_width_px[1]:.0f}"
            )
        if mine.grey_share > theirs.grey_share + 0.25:
            reasons.append(f"{mine.grey_share:.0%} of faces are grey against the gallery's {theirs.grey_share:.0%}")
        if mine.noise > theirs.noise + 2.0:
            reasons.append(f"noise {mine.noise:.1f} grey levels against the gallery's {theirs.noise:.1f}")
        clean_quality = theirs.jpeg_quality or 100
        if mine.jpeg_quality is not None and mine.jpeg_quality < clean_quality - 15:
            reasons.append(f"JPEG quality {mine.jpeg_quality} against the gallery's {clean_quality}")
        return reasons

    def damage(
        self, image: np.ndarray, box: Sequence[float], gallery_noise: float, rng: np.random.Generator
    ) -> np.ndarray:
        """A clean photo (or a face's surroundings in it) as this camera would show the face at `box`: one of
        its looks at random. The face's width becomes the right shrinking, its tone the look's; noise is added
        only beyond what the gallery's photos carry already. The photo keeps its size (shrunk and enlarged
        back), so the face must be detected and aligned again, as the camera's faces are: that is part of
        what the camera does to them."""
        return _damaged(image, self.looks[rng.integers(len(self.looks))], box, gallery_noise, rng)


def _damaged(
    image: np.ndarray, look: Look, box: Sequence[float], gallery_noise: float, rng: np.random.Generator
) -> np.ndarray:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    face_width = x2 - x1
    pixels = image.astype(np.float32)
    if look.grey:
        pixels = np.repeat(_grey(pixels[None])[0][..., None], 3, axis=2)
    # The face's tone, where the chip's centre measures it: the middle of the box.
    grey = _grey(pixels[None])[0]
    inset_x, inset_y = (x2 - x1) / 6, (y2 - y1) / 6
    top, left = max(int(y1 + inset_y), 0), max(int(x1 + inset_x), 0)
    tone = grey[top : max(int(y2 - inset_y), top + 1), left : max(int(x2 - inset_x), left + 1)]
    if tone.size == 0:
        tone = grey
    pixels = (pixels - tone.mean()) * (look.contrast / max(float(tone.std()), 1.0)) + look.brightness
    scale = min(1.0, look.width * float(np.exp(rng.normal(0.0, 0.1))) / max(face_width, 1.0))
    small = (max(2, round(width * scale)), max(2, round(height * scale)))
    if scale < 1.0:
        pixels = cv2.resize(pixels, small, interpolation=cv2.INTER_AREA)
    extra = float(np.sqrt(max(look.noise**2 - gallery_noise**2, 0.0)))
    if extra > 0:
        pixels = pixels + rng.normal(0.0, extra, pixels.shape[:2] + ((1,) if look.grey else (3,))).astype(np.float32)
    out = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if look.jpeg is not None and look.jpeg < 95:
        ok, encoded = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(look.jpeg)])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = decoded[..., ::-1]
    if scale < 1.0:
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(out)
