"""Large photos decoded at a reduced size for detection (JPEG DCT scaling), chips as the full resolution gives
them, and enroll/identify detecting several photos at once: all on real photos of ../shared.

The large photo is a 2x2 mosaic of four real photos of ../shared (4096x4666 px), so every face keeps the
detail its camera gave it; it is written to tmp_path, never to the repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facerec import FacePipeline, FaceRecognizer
from facerec.cli import main
from facerec.detect import iou
from facerec.errors import ImageError
from facerec.images import decode_image, decode_reduced, image_size

CELLS = ("known/shea_whigham/1.jpg", "known/paul_rudd/1.jpg", "known/angelina_jolie/1.jpg", "unknown/obama3.jpg")


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load("dlib-resnet", device="cpu")


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory, shared) -> Path:
    """Four real photos side by side in one large JPEG."""
    photos = [decode_image((shared / "faces" / c).read_bytes(), c) for c in CELLS]
    height, width = max(p.shape[0] for p in photos), max(p.shape[1] for p in photos)
    canvas = np.full((2 * height, 2 * width, 3), 200, np.uint8)
    for n, photo in enumerate(photos):
        row, col = divmod(n, 2)
        canvas[row * height : row * height + photo.shape[0], col * width : col * width + photo.shape[1]] = photo
    path = tmp_path_factory.mktemp("large") / "mosaic.jpg"
    Image.fromarray(canvas).save(path, quality=90)
    return path


def _sideways(source: Path, target: Path) -> Path:
    """The same photo stored turned a quarter, with the EXIF orientation (6) that turns it back."""
    with Image.open(source) as image:
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(target, quality=90, exif=exif)
    return target


def test_a_large_jpeg_is_decoded_at_half_size_and_a_small_one_in_full(mosaic, shared):
    data = mosaic.read_bytes()
    full = decode_image(data, "mosaic")
    reduced = decode_reduced(data, "mosaic", max_side=1600)
    assert reduced.factor == 2 and reduced.size == full.shape[:2] == (4666, 4096)
    assert reduced.pixels.shape == (2333, 2048, 3) and reduced.pixels.flags.c_contiguous
    # Each reduced pixel is the mean of a 2x2 block of the full decode, up to JPEG's own rounding.
    blocks = full.reshape(2333, 2, 2048, 2, 3).mean(axis=(1, 3))
    assert np.abs(reduced.pixels - blocks).mean() < 1.5
    # Never below max_side: at 2400 px no 1/2 scaling fits; a photo under 2x max_side is decoded in full.
    assert decode_reduced(data, "mosaic", max_side=2400).factor == 1
    assert decode_reduced(data, "mosaic", max_side=500).factor == 8
    small = (shared / "faces/known/obama/obama.jpg").read_bytes()
    same = decode_reduced(small, "obama", max_side=1600)
    assert same.factor == 1 and np.array_equal(same.pixels, decode_image(small, "obama"))
    assert image_size(mosaic) == (4096, 4666) and image_size(mosaic.parent / "missing.jpg") is None


def test_exif_orientation_is_honoured_in_the_reduced_decode(mosaic, tmp_path):
    sideways = _sideways(mosaic, tmp_path / "sideways.jpg")
    assert image_size(sideways) == (4666, 4096)  # stored on its side
    upright = decode_reduced(mosaic.read_bytes(), "upright", max_side=1600)
    turned = decode_reduced(sideways.read_bytes(), "sideways", max_side=1600)
    assert turned.factor == 2 and turned.size == (4666, 4096) and turned.pixels.shape == upright.pixels.shape
    assert np.abs(turned.pixels.astype(np.int16) - upright.pixels).mean() < 3.0


def test_truncated_large_jpeg_is_one_clear_error(mosaic, tmp_path):
    data = mosaic.read_bytes()
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_reduced(data[: len(data) // 3], "cut.jpg", max_side=1600)
    with pytest.raises(ImageError, match="over the limit"):
        decode_reduced(data, "big.jpg", max_side=1600, max_pixels=10_000_000)  # the full size counts


def test_faces_found_on_the_reduced_decode_are_those_of_the_full_one(pipeline, mosaic):
    photo = pipeline.load_reduced(mosaic)
    assert photo.image is not None and photo.image.factor == 2
    assert photo.sha256 == pipeline.load_photo(mosaic).sha256  # the hash is of the file's bytes, as before
    reduced = pipeline.detect_photos([photo])[0]
    full = pipeline.detect(pipeline.read(mosaic))
    assert len(reduced) == len(full) == 4
    for a, b in zip(reduced, full):
        assert iou(a.box, b.box) > 0.9 and abs(a.score - b.score) < 0.01
        assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 0.03 * b.width


def test_chips_are_those_of_the_full_resolution(pipeline, mosaic):
    photo = pipeline.load_reduced(mosaic)
    full = pipeline.read(mosaic)
    faces = pipeline.detect(full)
    needed = 2 * 2 * pipeline.embedder.spec.input_size  # the reduced decode holds the face at 2x the chip
    large = [f for f in faces if min(f.width, f.height) >= needed]
    small = [f for f in faces if min(f.width, f.height) < needed]
    assert large and small
    for face in small:  # cut from the full decode itself
        assert np.array_equal(pipeline.photo_chips(photo, [face])[0], pipeline.chip(full, face))
    for face in large:  # cut from the reduced decode, within a grey level of the full decode's chip
        chip, reference = pipeline.photo_chips(photo, [face])[0], pipeline.chip(full, face)
        assert np.abs(chip.astype(np.int16) - reference).mean() < 1.0
        vectors = pipeline.embed([chip, reference])
        assert vectors[0] @ vectors[1] > 0.999
    # A photo with faces of both kinds: every chip from the full decode.
    both = pipeline.photo_chips(photo, faces)
    assert all(np.array_equal(c, pipeline.chip(full, f)) for c, f in zip(both, faces))


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, shared) -> tuple[Path, dict]:
    """../shared's known people enrolled through the CLI, with a truncated photo and a group photo added."""
    root = tmp_path_factory.mktemp("enrolled")
    folder = root / "in"
    shutil.copytree(shared / "faces" / "known", folder)
    (folder / "ann").mkdir()
    (folder / "ann" / "broken.jpg").write_bytes((shared / "faces/known/obama/obama.jpg").read_bytes()[:3000])
    shutil.copy(shared / "faces/groups/friends_cast.jpg", folder / "ann" / "group.jpg")
    result = CliRunner().invoke(
        main, ["enroll", str(folder), "--gallery", str(root / "g"), "--model", "dlib-resnet", "--json"]
    )
    assert result.exit_code == 1, (result.output, result.stderr)  # 1: a file could not be read
    return root / "g", json.loads(result.stdout)


def test_enroll_in_batches_stores_what_one_photo_at_a_time_gives(enrolled, pipeline):
    gallery, report = enrolled
    assert [Path(f["path"]).name for f in report["failed"]] == ["broken.jpg"]
    assert [Path(s["path"]).name for s in report["skipped"]] == ["group.jpg"]  # ambiguous: several faces
    rec = FaceRecognizer(gallery, model="dlib-resnet", device="cpu")
    records = [record for _, record in rec.gallery.records()]
    _, vectors = rec.gallery.vectors()
    rec.close()
    assert len(records) == report["faces_added"] == 14
    for record, vector in zip(records, vectors):
        photo = pipeline.load_photo(Path(record.source))
        assert photo.image is not None and photo.sha256 == record.sha256
        face, _ = pipeline.main_face(photo.image)
        assert face is not None and np.allclose(face.box, record.box, atol=0.5)
        assert float(vector @ pipeline.vectors(photo.image, [face])[0]) > 0.999


def test_identify_in_batches_gives_what_one_photo_at_a_time_gives(enrolled, shared, tmp_path, mosaic):
    rec = FaceRecognizer(enrolled[0], model="dlib-resnet", device="cpu")
    faces = shared / "faces"
    paths = [
        *sorted((faces / "unknown").iterdir()),
        faces / "groups/friends_cast.jpg",
        faces / "groups/bald_guys.jpg",
        faces / "nofaces/dogs.jpg",
        mosaic,
        tmp_path / "missing.jpg",
    ]
    (tmp_path / "broken.jpg").write_bytes(mosaic.read_bytes()[:5000])
    paths.insert(3, tmp_path / "broken.jpg")
    batched = list(rec.identify_paths(paths, top_k=2))
    assert [r.image for r in batched] == [str(p) for p in paths]  # in order, one result per input
    for path, result in zip(paths, batched):
        if path.name in ("missing.jpg", "broken.jpg"):
            assert result.error is not None and path.name in result.error
            continue
        alone = rec.identify(path, top_k=2)
        assert result.error is None and len(result.faces) == len(alone.faces), path
        for a in result.faces:  # faces of equal size may come in another order: pair them by place
            # Batched convolutions round differently (mtcnn.py: logits within 1e-6), which can move a
            # box by a fraction of a pixel.
            b = max(alone.faces, key=lambda f: iou(a.box, f.box))
            assert a.name == b.name and iou(a.box, b.box) > 0.9, path
            assert a.similarity == pytest.approx(b.similarity, abs=0.01), path
    named = {f.name for r in batched if r.error is None for f in r.faces}
    assert {"obama", "biden", "kit_harington", "rose_leslie"} <= named
    assert sum(len(r.faces) for r in batched if r.error is None) > 40
    rec.close()


def test_a_reduced_photo_drawn_on_is_drawn_at_full_resolution(enrolled, tmp_path, mosaic):
    rec = FaceRecognizer(enrolled[0], model="dlib-resnet", device="cpu")
    (result,) = rec.identify_paths([mosaic], annotate_dir=tmp_path / "drawn")
    assert len(result.faces) == 4
    (drawn,) = (tmp_path / "drawn").iterdir()
    with Image.open(drawn) as image:
        assert image.size == (4096, 4666)
    rec.close()
