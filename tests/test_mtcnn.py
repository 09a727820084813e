"""facerec's MTCNN cascade (facerec/mtcnn.py) against facenet-pytorch's detect_face on real photos and frames.

Tolerance per image: same face count, every face matched with IoU >= 0.95, landmarks within 2% of the
box width, probability within 0.01 (in practice everything so far is identical to float precision).
Needs ../shared (skipped otherwise).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import mtcnn_reference as compare
from conftest import PROJECT_ROOT
from facerec import mtcnn
from facerec.prefetch import torch_threads
from facerec.testing import find_shared

SHARED = find_shared(PROJECT_ROOT) or Path("/nonexistent")
needs_shared = pytest.mark.skipif(find_shared(PROJECT_ROOT) is None, reason="../shared (real photos) is absent")


_prep = compare.prepare


def _load(path):
    from facerec.images import read_image

    return read_image(path)


def _assert_same(ref, ours, what):
    stats = compare.match(ref, ours)
    assert compare.ok(stats), f"{what}: {stats}"


def _photos():
    return sorted(
        glob.glob(str(SHARED / "faces/known/*/*"))
        + glob.glob(str(SHARED / "faces/known/*.*"))
        + glob.glob(str(SHARED / "faces/unknown/*"))
    )


@needs_shared
@pytest.mark.parametrize("path", _photos(), ids=lambda p: Path(p).name)
def test_web_photos_equal_facenet(path):
    image, ms = _prep(_load(path))
    _assert_same(compare.facenet_detect(image, ms), mtcnn.detect(image, ms), path)


@needs_shared
@pytest.mark.parametrize("name", ["friends_cast.jpg", "bald_guys.jpg", "worlds_largest_selfie.jpg"])
def test_group_photos_equal_facenet(name):
    image, ms = _prep(_load(SHARED / "faces/groups" / name))
    ref = compare.facenet_detect(image, ms)
    _assert_same(ref, mtcnn.detect(image, ms), name)
    if name == "worlds_largest_selfie.jpg":
        assert len(ref[0]) > 200


@needs_shared
def test_lfw_200_batched_equal_facenet():
    paths = sorted(glob.glob(str(SHARED / "faces/lfw/*/*.jpg")))
    paths = paths[:: max(1, len(paths) // 200)][:200]
    images = [_load(p) for p in paths]
    ours = mtcnn.detect_many(images, 20, batch=32)
    for p, im, o in zip(paths, images, ours):
        _assert_same(compare.facenet_detect(im, 20), o, p)


@needs_shared
@pytest.mark.parametrize("video", ["obama_podium.mp4", "hamilton_clip.mp4", "crowd_arcade.mp4"])
def test_video_frames_equal_facenet_batched(video):
    cap = cv2.VideoCapture(str(SHARED / "video" / video))
    frames = []
    for _ in range(3):
        for _ in range(20):
            ok, f = cap.read()
        if ok:
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    assert frames
    prepped = [_prep(f, 40) for f in frames]
    ours = mtcnn.detect_batch([p[0] for p in prepped], [p[1] for p in prepped])
    for (im, ms), o in zip(prepped, ours):
        _assert_same(compare.facenet_detect(im, ms), o, video)


@needs_shared
def test_batch_of_mixed_sizes_equals_single_images():
    paths = [*_photos()[:6], str(SHARED / "faces/groups/friends_cast.jpg")]
    prepped = [_prep(_load(p)) for p in paths]
    batch = mtcnn.detect_batch([p[0] for p in prepped], [p[1] for p in prepped])
    for (im, ms), b in zip(prepped, batch):
        one = mtcnn.detect(im, ms)
        assert one[0].shape == b[0].shape
        np.testing.assert_allclose(one[0], b[0], atol=1e-3)
        np.testing.assert_allclose(one[1], b[1], atol=1e-3)


@needs_shared
def test_cascade_spread_over_threads_equals_one_thread(monkeypatch):
    """`watch` spreads a frame's canvases and R-/O-Net batches over threads (Detector.parallel): the same
    faces, computed in more than one thread."""
    import threading

    cap = cv2.VideoCapture(str(SHARED / "video" / "crowd_arcade.mp4"))
    ok, frame = cap.read()
    assert ok
    images = [_load(SHARED / "faces/groups/worlds_largest_selfie.jpg"), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)]
    one = mtcnn.detect_batch(images, [20, 40])
    threads = set()
    crops = mtcnn._crops
    monkeypatch.setattr(mtcnn, "_crops", lambda *a: (threads.add(threading.current_thread().name), crops(*a))[1])
    with torch_threads(2):  # the caller's threads are what is shared out
        spread = mtcnn.detect_batch(images, [20, 40], parallel=2)
    assert len([t for t in threads if t.startswith("facerec-mtcnn")]) == 2
    assert len(one[0][0]) > 200 and len(one[1][0]) >= 3
    for (b1, p1), (b2, p2) in zip(one, spread):
        assert b1.shape == b2.shape
        np.testing.assert_allclose(b1, b2, atol=1e-3)
        np.testing.assert_allclose(p1, p2, atol=1e-3)


@needs_shared
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_detects_spread_after_its_parent_did():
    """multiprocessing forks on Linux: a child must not queue its cascade for its parent's pool threads,
    which it does not have (it hung)."""
    import time

    image = _load(SHARED / "faces/groups/friends_cast.jpg")
    with torch_threads(2):
        found = len(mtcnn.detect(image, 20, parallel=2)[0])
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only when it finds the same faces, and never return to pytest
            code = 1
            try:
                code = 0 if len(mtcnn.detect(image, 20, parallel=2)[0]) == found else 1
            finally:
                os._exit(code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.2)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's detection hung")


@needs_shared
def test_grey_image_as_rgb():
    rgb, ms = _prep(_load(SHARED / "faces/groups/friends_cast.jpg"))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ours = mtcnn.detect(grey, ms)
    _assert_same(compare.facenet_detect(np.repeat(grey[:, :, None], 3, 2), ms), ours, "grey")
    assert len(ours[0]) >= 4
    # (H, W, 1) and RGBA are accepted too
    _assert_same(ours, mtcnn.detect(grey[:, :, None], ms), "grey (H, W, 1)")


def test_empty_and_tiny_images():
    assert mtcnn.detect_batch([]) == []
    for shape in [(0, 0, 3), (1, 1, 3), (11, 40, 3), (19, 19, 3), (30, 30, 3)]:
        boxes, points = mtcnn.detect(np.zeros(shape, np.uint8), 20)
        assert boxes.shape == (0, 5) and points.shape == (0, 5, 2)
    # a flat grey image: nothing, no error
    boxes, _ = mtcnn.detect(np.full((300, 400, 3), 128, np.uint8), 20)
    assert boxes.shape == (0, 5)


@needs_shared
def test_huge_image_uses_float64_integral_and_matches():
    # > 2**31 / 255 pixels: the integral image switches to float64; results must not change
    image = _load(SHARED / "faces/groups/friends_cast.jpg")
    huge = cv2.resize(image, (image.shape[1] * 8, image.shape[0] * 8), interpolation=cv2.INTER_LINEAR)
    assert huge.shape[0] * huge.shape[1] * 255 >= 2**31
    ms = 160  # faces are 8x bigger: keep the pyramid short
    ours = mtcnn.detect(huge, ms)
    assert len(ours[0]) >= 4
    _assert_same(compare.facenet_detect(huge, ms), ours, "huge")


def _pyramid(sizes, min_face):
    return tuple(
        (int(h * s + 1), int(w * s + 1)) for h, w in sizes for s in mtcnn._scales(h, w, min_face, mtcnn.FACTOR)
    )


@pytest.mark.parametrize(
    "sizes, min_face",
    [
        ([(360, 480)], 20),  # a web photo
        ([(480, 360)], 20),
        ([(250, 250)], 20),  # LFW
        ([(1080, 1920)], 40),  # a video frame
        ([(96, 128)], 40),  # a video region
        ([(360, 480), (480, 360), (250, 250), (301, 517), (600, 200)], 20),  # a batch of photos
        ([(900, 1600)], 20),  # a level wider than a full-height canvas
        ([(300, 3000)], 20),  # wider than CANVAS_WIDTH
    ],
)
def test_packed_bands_cover_every_level_once_and_never_overlap(sizes, min_face):
    dims = _pyramid(sizes, min_face)
    places, shapes = mtcnn._layout.__wrapped__(dims)
    taken = [np.zeros(s, bool) for s in shapes]
    rows = [np.zeros((h - 1) // 2 - 4, int) for h, _ in dims]  # each level's P-Net output rows
    for k, r0, ph, q0, oq, c, y0, x0 in places:
        h, w = dims[k]
        assert y0 % 2 == x0 % 2 == r0 % 2 == 0, "an odd position shifts P-Net's stride-2 grid"
        assert r0 == 2 * q0 and r0 + ph <= h and oq <= (ph - 1) // 2 - 4
        tall, wide = ph + (ph & 1), w + (w & 1)  # an odd side keeps one more row/column for the fix-up
        assert y0 + tall <= shapes[c][0] and x0 + wide <= shapes[c][1], "a band sticks out of its canvas"
        assert not taken[c][y0 : y0 + tall, x0 : x0 + wide].any(), "two bands overlap"
        taken[c][y0 : y0 + tall, x0 : x0 + wide] = True
        rows[k][q0 : q0 + oq] += 1
    assert all((r == 1).all() for r in rows), "a level's output row is missed or computed twice"
    widest = max(w for _, w in dims)
    for h, w in shapes:
        assert h % 32 == 0 and w % 64 == 0
        assert h * w <= max(mtcnn.CANVAS_PIXELS, 64 * (widest + 64)), "a canvas outgrows the cache budget"


def test_a_web_photos_pyramid_packs_tightly():
    """The reason for skyline packing: a 480x360 photo's pyramid (126k pixels) took 197-246k canvas pixels
    on 768-wide shelves."""
    for size in [(360, 480), (480, 360)]:
        dims = _pyramid([size], 20)
        _, shapes = mtcnn._layout(dims)
        assert sum(h * w for h, w in shapes) <= 1.3 * sum(h * w for h, w in dims)


@pytest.mark.parametrize("shape", [(1, 10, 190, 638), (1, 10, 63, 94), (2, 10, 7, 9)])
def test_prelu_then_pool_from_the_window_extremes_is_bit_identical(shape):
    """P-Net's PReLU applied after pooling to the window's maximum and minimum: exact for slopes of either
    sign (P-Net's first PReLU has 5 negative slopes of 10), odd sizes included."""
    import torch
    import torch.nn.functional as F

    net = mtcnn.nets("cpu").pnet.p
    weight = net.prelu1.weight
    assert (weight < 0).any() and (weight > 0).any()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    x[:, :, ::3] *= 1e-3  # values near the kink
    with torch.inference_mode():
        expected = F.max_pool2d(F.prelu(x, weight), 2, 2, ceil_mode=True)
        assert torch.equal(mtcnn._prelu_pool(x, weight), expected)


def test_our_nets_are_facenets_nets():
    """The nets built without facenet-pytorch give its own nets' outputs, bit for bit, from its weights."""
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    from facerec.mtcnn_nets import trained

    for ours, theirs, shape in zip(
        trained(), (PNet(), RNet(), ONet()), ((2, 3, 37, 53), (5, 3, 24, 24), (5, 3, 48, 48))
    ):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            for a, b in zip(ours(x), theirs.eval()(x)):
                assert torch.equal(a, b)


def test_our_nms_is_torchvisions_batched_nms():
    import torch
    from torchvision.ops import batched_nms

    g = torch.Generator().manual_seed(1)
    for n, groups in ((0, 1), (1, 1), (300, 1), (2000, 7), (6000, 40)):  # torchvision goes per group above 4000
        corner = torch.rand(n, 2, generator=g, dtype=torch.float64) * 400
        boxes = torch.cat([corner, corner + 8 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 60], 1)
        scores = torch.rand(n, generator=g, dtype=torch.float64)
        ids = torch.randint(0, groups, (n,), generator=g)
        for threshold in (0.5, 0.7):
            assert torch.equal(mtcnn._nms(boxes, scores, ids, threshold), batched_nms(boxes, scores, ids, threshold))


@needs_shared
def test_detection_imports_neither_torchvision_nor_facenet_pytorch():
    """Their imports cost about 1.5 s of every process's start (torchvision pulls in torch._dynamo)."""
    import subprocess
    import sys

    code = (
        "import sys, cv2\n"
        "from facerec import mtcnn\n"
        f"image = cv2.imread({str(SHARED / 'faces/unknown/kit_with_rose.jpg')!r})[:, :, ::-1].copy()\n"
        "assert len(mtcnn.detect(image)[0]) == 2\n"
        "print(sorted(m for m in ('torchvision', 'facenet_pytorch', 'torch._dynamo') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
