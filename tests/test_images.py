"""facerec.images: every kind of file becomes RGB uint8 (H, W, 3), or one clear ImageError.

All test images are generated in tmp_path; real photos come from ../shared (the `shared` fixture).
"""

from __future__ import annotations

import io
import os
import resource
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from facerec import images
from facerec.config import Settings
from facerec.errors import ImageError
from facerec.images import (
    IMAGE_SUFFIXES,
    MIN_SIDE,
    decode_image,
    is_image_path,
    iter_image_files,
    read_bytes,
    read_image,
)

OBAMA = "faces/known/obama/obama.jpg"


# --- helpers ----------------------------------------------------------------------------------------


def _assert_rgb(pixels: np.ndarray, shape: tuple[int, int] | None = None) -> None:
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.flags.c_contiguous
    if shape is not None:
        assert pixels.shape[:2] == shape


def _fails(path: Path, **kwargs: object) -> str:
    """read_image must raise ImageError (and nothing else), one line, naming the file."""
    with pytest.raises(ImageError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert Path(path).name in message
    assert "\n" not in message
    return message


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid-looking RGB PNG whose IHDR claims width x height but whose data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs: object) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


# --- real photos ------------------------------------------------------------------------------------


def test_real_jpeg_decodes_like_pillow(shared: Path) -> None:
    path = shared / OBAMA
    with Image.open(path) as im:
        width, height = im.size
        expected = np.asarray(im.convert("RGB"))
    pixels = read_image(path)
    _assert_rgb(pixels, (height, width))
    assert pixels.flags.writeable
    assert np.array_equal(pixels, expected)


@pytest.mark.parametrize(
    ("orientation", "stored_turn"),
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)],
)
def test_exif_orientation_is_honoured(shared: Path, tmp_path: Path, orientation: int, stored_turn) -> None:
    with Image.open(shared / OBAMA) as im:
        original = im.convert("RGB")
    stored = original.transpose(stored_turn)  # pixels on their side, as a camera held sideways writes them
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, f"sideways{orientation}.jpg", stored, quality=95, exif=exif)
    with Image.open(path) as check:  # the file really is stored sideways
        assert check.size == (original.height, original.width)

    pixels = read_image(path)
    _assert_rgb(pixels, (original.height, original.width))
    diff = np.abs(pixels.astype(np.int16) - np.asarray(original).astype(np.int16)).mean()
    assert diff < 4.0


def test_real_rgba_png_has_three_channels(shared: Path) -> None:
    path = shared / "faces/unknown/32bit.png"
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        width, height = im.size
    _assert_rgb(read_image(path), (height, width))


def test_matches_settings_default() -> None:
    assert images.decode_image.__kwdefaults__["max_pixels"] == Settings.max_image_pixels
    assert images.read_image.__kwdefaults__["max_pixels"] == Settings.max_image_pixels


# --- modes ------------------------------------------------------------------------------------------


def test_rgba_transparent_becomes_white(tmp_path: Path) -> None:
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[:, :12] = (255, 0, 0, 0)  # fully transparent red
    rgba[:, 12:] = (0, 0, 255, 255)  # opaque blue
    rgba[0, 20] = (0, 255, 0, 128)  # half-transparent green
    path = _save(tmp_path, "alpha.png", Image.fromarray(rgba, "RGBA"))
    pixels = read_image(path)
    _assert_rgb(pixels, (24, 24))
    assert (pixels[:, :12] == 255).all()
    assert (pixels[1:, 12:] == (0, 0, 255)).all()
    assert np.abs(pixels[0, 20].astype(int) - (127, 255, 127)).max() <= 1


def test_la_and_palette_transparency_become_white(tmp_path: Path) -> None:
    la = np.zeros((20, 20, 2), np.uint8)
    la[..., 0] = 10
    la[:, 10:, 1] = 255
    path = _save(tmp_path, "la.png", Image.fromarray(la, "LA"))
    pixels = read_image(path)
    assert (pixels[:, :10] == 255).all() and (pixels[:, 10:] == 10).all()

    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette.paste(1, (10, 0, 20, 20))
    path = _save(tmp_path, "transparent.gif", palette, transparency=0)
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 20))
    assert (pixels[:, :10] == 255).all()
    assert (pixels[:, 10:] == (200, 30, 40)).all()


def test_greyscale_l(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (22, 1))
    path = _save(tmp_path, "grey.png", Image.fromarray(grey, "L"))
    pixels = read_image(path)
    _assert_rgb(pixels, grey.shape)
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], grey)


def test_one_bit(tmp_path: Path) -> None:
    bits = Image.new("1", (30, 20), 0)
    bits.paste(1, (15, 0, 30, 20))
    path = _save(tmp_path, "bits.pbm", bits)
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 30))
    assert (pixels[:, :15] == 0).all() and (pixels[:, 15:] == 255).all()


def test_sixteen_bit_greyscale_png(tmp_path: Path) -> None:
    values = np.zeros((20, 20), np.uint16)
    values[0, :3] = (65535, 257 * 100, 0)
    values[1:] = 257 * 50
    path = _save(tmp_path, "grey16.png", Image.fromarray(values))
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 20))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[0, 1]) == (100, 100, 100)
    assert tuple(pixels[0, 2]) == (0, 0, 0)
    assert (pixels[1:] == 50).all()


def test_thirty_two_bit_integer_tiff(tmp_path: Path) -> None:
    values = np.zeros((20, 20), np.int32)
    values[0, :4] = (-5, 257 * 100, 65535, 1_000_000)
    path = _save(tmp_path, "int32.tif", Image.fromarray(values))
    with Image.open(path) as im:
        assert im.mode == "I"
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 20))
    assert list(pixels[0, :4, 0]) == [0, 100, 255, 255]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [((0.0, 0.5, 1.0), (0, 128, 255)), ((0.0, 100.0, 300.0), (0, 100, 255))],
)
def test_float_tiff(tmp_path: Path, samples: tuple[float, ...], expected: tuple[int, ...]) -> None:
    values = np.zeros((20, 20), np.float32)
    values[0, :3] = samples
    path = _save(tmp_path, "float.tif", Image.fromarray(values))
    with Image.open(path) as im:
        assert im.mode == "F"
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 20))
    assert tuple(int(v) for v in pixels[0, :3, 1]) == expected


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = _save(tmp_path, "cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)), quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    pixels = read_image(path)
    _assert_rgb(pixels, (32, 32))
    red, green, blue = (pixels[..., c].mean() for c in range(3))
    assert red > 200 and green < 60 and blue < 60


def test_palette_gif(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    path = _save(tmp_path, "palette.gif", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE))
    with Image.open(path) as im:
        assert im.mode == "P"
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 40))
    assert (pixels[:, :20] == (255, 0, 0)).all()
    assert (pixels[:, 20:] == (0, 0, 255)).all()


def test_multi_frame_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (24, 24), colour).convert("P") for colour in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as im:
        assert im.n_frames == 2
    pixels = read_image(path)
    _assert_rgb(pixels, (24, 24))
    assert (pixels == (255, 0, 0)).all()


def test_sixteen_bit_colour_png_from_opencv(tmp_path: Path) -> None:
    bgr = np.zeros((20, 20, 3), np.uint16)
    bgr[...] = (65535, 257 * 100, 0)
    path = tmp_path / "colour16.png"
    assert cv2.imwrite(str(path), bgr)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    pixels = read_image(path)
    _assert_rgb(pixels, (20, 20))
    assert (pixels == (0, 100, 255)).all()


def test_opencv_fallback_for_formats_pillow_cannot_identify(tmp_path: Path) -> None:
    bgr = np.zeros((24, 24, 3), np.float32)
    bgr[...] = (0.25, 0.5, 1.0)
    ok, encoded = cv2.imencode(".hdr", bgr)
    assert ok
    data = encoded.tobytes()
    try:
        Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        pass
    else:
        pytest.skip("this Pillow reads Radiance HDR itself; the OpenCV path is not reached")
    pixels = decode_image(data, "light.hdr")
    _assert_rgb(pixels, (24, 24))
    assert np.abs(pixels[0, 0].astype(int) - (255, 128, 64)).max() <= 2


# --- bad input --------------------------------------------------------------------------------------


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    assert "convert it" in _fails(path)


def test_truncated_jpeg(shared: Path, tmp_path: Path) -> None:
    data = (shared / OBAMA).read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _fails(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    assert "empty" in _fails(path)
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", "empty.jpg")


def test_tiny_png(tmp_path: Path) -> None:
    path = _save(tmp_path, "tiny.png", Image.new("RGB", (1, 1), (1, 2, 3)))
    message = _fails(path)
    assert "1x1" in message and f"{MIN_SIDE}x{MIN_SIDE}" in message


def test_just_big_enough(tmp_path: Path) -> None:
    path = _save(tmp_path, "edge.png", Image.new("RGB", (MIN_SIDE, MIN_SIDE)))
    _assert_rgb(read_image(path), (MIN_SIDE, MIN_SIDE))
    path = _save(tmp_path, "thin.png", Image.new("RGB", (500, MIN_SIDE - 1)))
    _fails(path)


def test_decompression_bomb_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(50_000, 50_000))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    message = _fails(path)
    assert time.perf_counter() - started < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 200 * 1024  # 50000x50000x3 would be 7.5 GB
    assert "FACEREC_MAX_IMAGE_PIXELS" in message


def test_over_our_limit_but_under_pillows(tmp_path: Path) -> None:
    # 144 Mpx: above our 120 Mpx default, below Pillow's own hard limit, so our check must catch it.
    path = tmp_path / "large.png"
    path.write_bytes(_png_header_only(12_000, 12_000))
    message = _fails(path)
    assert "12000x12000" in message and "FACEREC_MAX_IMAGE_PIXELS" in message


def test_max_pixels_smaller_than_real_image(shared: Path) -> None:
    message = _fails(shared / OBAMA, max_pixels=1000)
    assert "1000" in message


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in _fails(tmp_path / "missing.jpg")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert "folder" in _fails(folder)


def test_video_given_as_photo(shared: Path) -> None:
    _fails(shared / "video/obama_podium.mp4")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    _fails(path)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_random_bytes_behind_a_real_signature(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for header in (b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00"):
        path = tmp_path / "garbage.img"
        path.write_bytes(header + rng.bytes(3000))
        _fails(path)


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    assert "no such file" in _fails(link)


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    _fails(fifo)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _save(tmp_path, "locked.png", Image.new("RGB", (30, 30)))
    path.chmod(0)
    try:
        assert "permission" in _fails(path).lower()
    finally:
        path.chmod(0o644)


def test_file_over_byte_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, "heavy.png", Image.new("RGB", (30, 30)))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 10)
    with pytest.raises(ImageError, match="heavy.png"):
        read_bytes(path)


def test_read_bytes_returns_content(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"abc")
    assert read_bytes(path) == b"abc"


# --- walking folders --------------------------------------------------------------------------------


def test_is_image_path() -> None:
    assert ".jfif" in IMAGE_SUFFIXES and ".pgm" in IMAGE_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
    assert is_image_path(Path("a/PHOTO.JPG"))
    assert is_image_path(Path("x.Tiff"))
    assert not is_image_path(Path("clip.mp4"))
    assert not is_image_path(Path("jpg"))


def test_iter_image_files(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / ".git").mkdir()
    for rel in (
        "z.png",
        "A.JPG",
        "b/deep/c.webp",
        "a/x.jpeg",
        "b/notes.txt",
        "b/clip.mp4",
        ".hidden.jpg",
        ".git/obj.png",
        "a/.thumb.jpg",
    ):
        (root / rel).write_bytes(b"x")
    (root / "a" / "gone.jpg").symlink_to(root / "nowhere.jpg")  # broken: still listed
    (root / "b" / "deep" / "up").symlink_to(root / "b", target_is_directory=True)  # a loop
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)  # another loop

    found = iter_image_files(root)

    expected = sorted(root / rel for rel in ("z.png", "A.JPG", "b/deep/c.webp", "a/x.jpeg", "a/gone.jpg"))
    assert found == expected
    assert found == sorted(found)
    assert len(set(found)) == len(found)
    with pytest.raises(ImageError, match="gone.jpg"):
        read_image(root / "a" / "gone.jpg")


def test_iter_image_files_on_a_file_or_nothing(tmp_path: Path) -> None:
    photo = tmp_path / "one.png"
    photo.write_bytes(b"x")
    assert iter_image_files(photo) == [photo]
    with pytest.raises(ImageError, match="nope"):
        iter_image_files(tmp_path / "nope")
    assert iter_image_files(tmp_path) == [photo]
