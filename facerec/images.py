"""Reading any image safely into RGB uint8. Knows nothing about faces.

Everything downstream (detection, alignment, embedding) wants one thing: an (H, W, 3) uint8 RGB array,
C-contiguous, upright as the photographer saw it. This module is the one place that copes with the
variety of real files (greyscale, 16-bit, palette, transparency, CMYK, EXIF rotation, multi-frame) and
with hostile ones (truncated, empty, decompression bombs, not an image at all). Every failure is an
`ImageError` whose message is one line naming the file and saying what to do.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from facerec.errors import ImageError

# Lower-case suffixes treated as images when walking folders.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jfif"}
)
# Smaller images cannot hold a detectable face.
MIN_SIDE = 20
# Larger files are refused before being read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

_DEFAULT_MAX_PIXELS = 120_000_000
_LIMIT_HINT = "FACEREC_MAX_IMAGE_PIXELS"
_CORRUPT_HINT = "re-export or re-download it"
_UNREADABLE = "not an image Pillow or OpenCV can read; convert it to JPEG or PNG"

# What corrupt data makes Pillow, its plugins or OpenCV raise. Deliberately broad (plugins raise
# IndexError, ZeroDivisionError... on hostile input) but never BaseException: Ctrl-C must still work.
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    AttributeError,
    OverflowError,
    RuntimeError,
    cv2.error,
)


def is_image_path(path: Path) -> bool:
    """Whether the suffix (any case) is one we treat as an image when walking folders."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def iter_image_files(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted, so a folder of photos is processed reproducibly.

    Hidden files and folders (name starting with '.') are skipped: they are editor, OS or VCS clutter.
    Symlinked folders are not followed, so a link loop can neither hang nor duplicate files.
    Broken file symlinks are still listed, so reading them later reports them rather than hiding them.
    A `root` that is itself an image file gives just that file.
    """
    root = Path(root)
    if not root.is_dir():
        if root.is_file() and is_image_path(root):
            return [root]
        if root.exists():
            raise ImageError(f"{root}: is neither a folder nor an image file; give a folder of photos")
        raise ImageError(f"{root}: no such folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        found.extend(base / f for f in filenames if not f.startswith(".") and is_image_path(Path(f)))
    return sorted(found)


def read_bytes(path: Path) -> bytes:
    """The whole file, refusing what cannot be a photo (missing, folder, special file, empty, huge).

    Checks come before reading so a FIFO or device never blocks us and a huge file is never loaded.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(f"{path}: no such file (a broken symbolic link); fix or remove the link") from None
        raise ImageError(f"{path}: no such file") from None
    except PermissionError as exc:
        raise ImageError(f"{path}: cannot be read ({_one_line(exc.strerror or exc)}); check its permissions") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: cannot be read ({_one_line(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{path}: is not a regular file (a device, pipe or socket); give an image file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(
            f"{path}: {info.st_size} bytes is over the limit of {MAX_FILE_BYTES} bytes; downscale or recompress it"
        )
    try:
        with open(path, "rb") as handle:
            # Read one byte past the limit: the file may have grown since stat().
            data = handle.read(MAX_FILE_BYTES + 1)
    except PermissionError as exc:
        raise ImageError(f"{path}: cannot be read ({_one_line(exc.strerror or exc)}); check its permissions") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({_one_line(exc.strerror or exc)})") from None
    if not data:
        raise ImageError(f"{path}: the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{path}: the file is over the limit of {MAX_FILE_BYTES} bytes; downscale or recompress it")
    return data


def read_image(path: str | Path, *, max_pixels: int = _DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file into RGB uint8 (H, W, 3); see `decode_image`."""
    path = Path(path)
    return decode_image(read_bytes(path), str(path), max_pixels=max_pixels)


def decode_image(data: bytes, name: str, *, max_pixels: int = _DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into a C-contiguous RGB uint8 array (H, W, 3), upright per EXIF.

    Pillow first (it knows EXIF and the most modes), OpenCV for what Pillow cannot identify.
    The pixel count is checked from the header before any pixels are decoded, so a decompression
    bomb fails fast. `name` is only used in error messages.
    """
    return _decode(data, name, max_pixels, None).pixels


@dataclass(frozen=True)
class Reduced:
    """An upright RGB image decoded at 1/`factor` of its size (factor 1: at full resolution).

    Pixel (i, j) of the reduced image covers full-resolution pixels factor*i .. factor*i + factor - 1,
    so a full-resolution point x (pixel centres at integers) is at (x + 0.5) / factor - 0.5 in it.
    """

    pixels: np.ndarray
    size: tuple[int, int]  # (height, width) of the image at full resolution, upright
    factor: int


def decode_reduced(data: bytes, name: str, *, max_side: int, max_pixels: int = _DEFAULT_MAX_PIXELS) -> Reduced:
    """Decode image bytes at the smallest size the format gives cheaply whose longer side is still at
    least `max_side`: JPEG's DCT scaling to 1/2, 1/4 or 1/8 (2.5x faster to decode at 1/2); other
    formats, and JPEGs under twice `max_side`, at full resolution.

    For a consumer that downsizes to `max_side` anyway (the detector): what it then sees differs from the
    downsized full decode by under a grey level on average. Same checks, errors and EXIF rotation as
    `decode_image`; the size limit and the smallest size apply to the full-resolution image.
    """
    return _decode(data, name, max_pixels, max_side)


def _decode(data: bytes, name: str, max_pixels: int, max_side: int | None) -> Reduced:
    if not data:
        raise ImageError(f"{name}: the file is empty")
    try:
        try:
            decoded = _decode_with_pillow(data, name, max_pixels, max_side)
        except UnidentifiedImageError:
            decoded = None
        if decoded is None:
            rgb = _decode_with_opencv(data, name, max_pixels)
            decoded = Reduced(rgb, rgb.shape[:2], 1)
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode it; downscale it") from None
    height, width = decoded.size
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ImageError(
            f"{name}: {width}x{height} pixels is too small to hold a face (at least {MIN_SIDE}x{MIN_SIDE})"
        )
    return Reduced(np.ascontiguousarray(decoded.pixels), decoded.size, decoded.factor)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header alone (no pixels decoded), or None when Pillow cannot tell:
    enough to plan work by size; reading the image is what reports a bad file. Only regular files are
    opened, so a FIFO never blocks."""
    try:
        if not Path(path).is_file():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:
        return None
    except _DECODE_ERRORS:  # UnidentifiedImageError among them: it is an OSError
        return None


# --- Pillow -----------------------------------------------------------------------------------------


def _decode_with_pillow(data: bytes, name: str, max_pixels: int, max_side: int | None) -> Reduced:
    """Pillow decoding; lets UnidentifiedImageError through so the caller can try OpenCV."""
    with warnings.catch_warnings():
        # Our own max_pixels is the limit that matters; Pillow's warning below its hard limit is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(_bomb_message(name, exc, max_pixels)) from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: the image header is corrupt ({_one_line(exc)}); {_CORRUPT_HINT}") from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(_over_limit(name, f"{width}x{height}", max_pixels))
            factor = _draft(image, max_side) if max_side else 1
            try:
                image.load()  # first frame of a multi-frame file; truncated data raises here
            except Image.DecompressionBombError as exc:
                raise ImageError(_bomb_message(name, exc, max_pixels)) from None
            except _DECODE_ERRORS as exc:
                raise ImageError(
                    f"{name}: the image is truncated or corrupt ({_one_line(exc)}); {_CORRUPT_HINT}"
                ) from None
            stored = image.size
            upright = _exif_upright(image)
            if upright.size != stored:  # turned a quarter: the full-resolution size turns with it
                width, height = height, width
            try:
                return Reduced(_pillow_to_rgb(upright, name), (height, width), factor)
            except _DECODE_ERRORS as exc:
                raise ImageError(
                    f"{name}: pixel mode {upright.mode} cannot be converted to RGB ({_one_line(exc)}); "
                    "convert it to JPEG or PNG"
                ) from None


def _draft(image: Image.Image, max_side: int) -> int:
    """Ask the JPEG decoder for the largest DCT scaling (1/8, 1/4, 1/2) that keeps the longer side at least
    `max_side`, before any pixel is decoded; the factor it will decode at (1: none, not a JPEG)."""
    if not isinstance(image, JpegImagePlugin.JpegImageFile):
        return 1
    width, height = image.size
    factor = next((k for k in (8, 4, 2) if max(width, height) >= k * max_side), 1)
    if factor == 1:
        return 1
    # Pillow picks the largest power of two within the ratio of the sizes asked for; these ask for `factor`.
    image.draft(image.mode, (max(1, width // factor), max(1, height // factor)))
    return int(image.decoderconfig[0]) if image.decoderconfig else 1


def _exif_upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; unchanged when the EXIF is absent or unreadable.

    A photo with malformed EXIF still has good pixels, so a broken tag is ignored rather than fatal.
    """
    try:
        orientation = image.getexif().get(0x0112)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        pass
    return image


def _pillow_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Any Pillow mode to RGB uint8: transparency over white, high bit depths scaled to 0..255."""
    mode = image.mode
    has_alpha = (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or "transparency" in image.info
        or (mode == "P" and image.palette is not None and image.palette.mode == "RGBA")
    )
    if has_alpha and mode not in ("I", "F") and not mode.startswith("I;16"):
        rgba = _writable(np.asarray(image.convert("RGBA")))
        return _composite_on_white(rgba[..., :3], rgba[..., 3])
    if mode == "RGB":
        return _writable(np.asarray(image))
    if mode.startswith("I;16"):
        try:
            grey = np.asarray(image)
        except _DECODE_ERRORS:  # a 16-bit layout numpy cannot view directly
            grey = np.asarray(image.convert("I"))
        return _grey_to_rgb(_scale_to_uint8(grey))
    if mode in ("I", "F"):
        return _grey_to_rgb(_scale_to_uint8(np.asarray(image)))
    # L, 1, P, CMYK, YCbCr, LAB, HSV...: Pillow knows the conversion.
    return _writable(np.asarray(image.convert("RGB")))


# --- OpenCV -----------------------------------------------------------------------------------------


def _decode_with_opencv(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """OpenCV decoding for formats Pillow cannot identify (e.g. Radiance HDR).

    OpenCV has no header-only read, so our pixel limit is applied after decoding here; OpenCV's own
    limit (2**30 pixels unless OPENCV_IO_MAX_IMAGE_PIXELS says otherwise) still guards against bombs.
    """
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except _DECODE_ERRORS:
        decoded = None
    if decoded is None or decoded.size == 0:
        raise ImageError(f"{name}: {_UNREADABLE}")
    height, width = decoded.shape[:2]
    if width * height > max_pixels:
        raise ImageError(_over_limit(name, f"{width}x{height}", max_pixels))
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if channels not in (1, 3, 4):
        raise ImageError(f"{name}: {channels}-channel images are not supported; convert it to JPEG or PNG")
    try:
        pixels = _scale_to_uint8(decoded)
    except ValueError:
        raise ImageError(f"{name}: pixel type {decoded.dtype} is not supported; convert it to JPEG or PNG") from None
    if channels == 1:
        return _grey_to_rgb(pixels.reshape(height, width))
    if channels == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    rgba = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return _composite_on_white(rgba[..., :3], rgba[..., 3])


# --- pixel helpers ----------------------------------------------------------------------------------


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map any sample type to uint8: 16-bit /257, 32-bit ints clipped to 16 bits first,
    floats as 0..1 when their maximum is at most 1, else as 0..255. Unknown types raise ValueError."""
    kind, size = pixels.dtype.kind, pixels.dtype.itemsize
    if kind == "u" and size == 1:
        return pixels
    if kind in "ui" and size <= 2:
        if kind == "i":  # signed 8/16-bit: negative samples have no meaning for a photo
            pixels = np.clip(pixels, 0, None)
        wide = pixels.astype(np.uint32)
        if size == 1:
            return wide.astype(np.uint8)
        return ((wide + 128) // 257).astype(np.uint8)
    if kind in "ui" and size in (4, 8):
        wide = np.clip(pixels, 0, 65535).astype(np.uint32)
        return ((wide + 128) // 257).astype(np.uint8)
    if kind == "f":
        values = np.nan_to_num(pixels.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and float(values.max()) <= 1.0:
            values = np.clip(values, 0.0, 1.0) * 255.0
        else:
            values = np.clip(values, 0.0, 255.0)
        return np.rint(values).astype(np.uint8)
    raise ValueError(f"unsupported sample type {pixels.dtype}")


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend over white, as a viewer shows it: transparent areas become white, not black garbage."""
    a = alpha.astype(np.uint16)[..., None]
    out = rgb.astype(np.uint16) * a + 255 * (255 - a) + 127
    out //= 255
    return out.astype(np.uint8)


def _writable(pixels: np.ndarray) -> np.ndarray:
    """Arrays viewed from Pillow's bytes are read-only; callers may want to draw on theirs."""
    return pixels if pixels.flags.writeable else pixels.copy()


# --- messages ---------------------------------------------------------------------------------------


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return text


def _over_limit(name: str, size: str, max_pixels: int) -> str:
    return f"{name}: {size} pixels is over the limit of {max_pixels} ({_LIMIT_HINT}); downscale it"


def _bomb_message(name: str, exc: Exception, max_pixels: int) -> str:
    """Pillow refused the header itself (above twice its own limit); it reports only the pixel count."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else None
    if pixels is None:
        return f"{name}: the image is over the pixel limit of {max_pixels} ({_LIMIT_HINT}); downscale it"
    if pixels > max_pixels:
        return _over_limit(name, str(pixels), max_pixels)
    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else "its"
    return f"{name}: {pixels} pixels is over Pillow's decompression-bomb limit of {limit}; downscale it"
