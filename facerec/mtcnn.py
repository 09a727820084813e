"""Our own MTCNN cascade on facenet-pytorch's trained P/R/O-Nets, batched and vectorised.

Behaves like facenet_pytorch.models.utils.detect_face.detect_face (same pyramid, same thresholds, same
three NMS passes, same crop quirks) but:

* the pyramid levels are box averages read from one integral image (exactly facenet's
  interpolate(mode="area"), without re-reading the whole image for every level);
* the P-Net pyramid of all images of a batch is cut into bands and packed into few small canvases
  (see `_plan` and `_pnet_forward`: an even placement plus one fix-up after conv1 makes every
  kept output equal to running the level alone);
* the R-Net and O-Net crops of all boxes of all images are taken at once from an integral image: the
  exact box average (adaptive average pooling, which is what facenet's `interpolate(mode="area")` does
  per box) as four gathers per output pixel, instead of one python-level slice + interpolate per box;
* R-Net and O-Net see the candidates of the whole batch together; NMS is torchvision's kernel (`_nms`).

Everything returned is in the coordinates of each image that was passed in.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import mtcnn_nets
from .prefetch import torch_threads

Result = TypeVar("Result")
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
PNET_WINDOW = 12

# P-Net runs on small canvases (see `_plan`): levels taller than a canvas are cut into overlapping bands,
# and bands are packed into canvases of at most CANVAS_PIXELS. Small canvases keep the activations in
# cache, which on a 2-core machine is worth ~2x over one call per level. R-Net / O-Net take RNET_CHUNK /
# ONET_CHUNK boxes per call for the same reason (~1.6x / ~1.9x over 512-box calls).
CANVAS_HEIGHT = 192
CANVAS_WIDTH = 1024
CANVAS_PIXELS = 192 * 640
PNET_CALL_PIXELS = 4096
RNET_CHUNK = 128
ONET_CHUNK = 16


def _head(c: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P-Net's 1x1 heads over a channels_last map (1, k, h, w) as one (6, k) x (k, h*w) product: 4x faster
    than the convolution, which torch runs as a (h*w, k) x (k, 6) product (~10% of P-Net's time)."""
    _, k, h, wd = c.shape
    x = c.permute(0, 2, 3, 1).reshape(h * wd, k)
    return torch.addmm(b[:, None], w.view(-1, k), x.t()).view(1, -1, h, wd)


def _prelu_pool(c: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """P-Net's PReLU then 2x2 max-pooling, the PReLU on a quarter of the values: a PReLU is monotone, or
    V-shaped where its slope is negative, so a window's largest output comes from its largest or its
    smallest input. Bit-identical, and ~2.8x faster than the two layers (a third of P-Net's time), with
    the window maximum and minimum taken from four strided views (torch's max-pooling on 10 channels
    last is slower than that). Dims are even on every canvas; odd ones take the layers as they are."""
    if c.shape[2] & 1 or c.shape[3] & 1:
        return F.max_pool2d(F.prelu(c, weight), 2, 2, ceil_mode=True)
    v = c[:, :, 0::2, 0::2], c[:, :, 0::2, 1::2], c[:, :, 1::2, 0::2], c[:, :, 1::2, 1::2]
    top = torch.maximum(torch.maximum(v[0], v[1]), torch.maximum(v[2], v[3]))
    low = torch.minimum(torch.minimum(v[0], v[1]), torch.minimum(v[2], v[3]))
    return torch.maximum(F.prelu(top, weight), F.prelu(low, weight))


class _PNetFull(torch.nn.Module):
    """P-Net with its two 1x1 heads as one: (n, 6, h, w) = background, face logits, 4 box offsets."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.w = torch.nn.Parameter(torch.cat([p.conv4_1.weight, p.conv4_2.weight]), requires_grad=False)
        self.b = torch.nn.Parameter(torch.cat([p.conv4_1.bias, p.conv4_2.bias]), requires_grad=False)

    def forward(self, x):
        p = self.p
        c = _prelu_pool(p.conv1(x), p.prelu1.weight)
        c = p.prelu3(p.conv3(p.prelu2(p.conv2(c))))
        return _head(c, self.w, self.b)


class _PNetA(torch.nn.Module):
    """conv1, for `_pnet_forward`'s fix-up (copying a value before the PReLU or after it is the same)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return self.p.conv1(x)


class _PNetB(torch.nn.Module):
    def __init__(self, full):
        super().__init__()
        self.p, self.w, self.b = full.p, full.w, full.b

    def forward(self, c):
        p = self.p
        c = p.prelu3(p.conv3(p.prelu2(p.conv2(_prelu_pool(c, p.prelu1.weight)))))
        return _head(c, self.w, self.b)


class Nets:
    """The three nets as called by the cascade: pnet (full), pnet_a (conv1), pnet_b (the rest),
    rnet, onet. R-Net and O-Net are TorchScript-frozen with oneDNN (MKLDNN) layouts on CPU when
    available (faster than eager on their batches of tiny images); P-Net stays eager channels_last, which
    on small canvases beat the frozen version (and allows the in-place fix-up between its halves)."""

    def __init__(self, device: str = "cpu", script: bool = True):
        mods = []
        for net in mtcnn_nets.trained():
            net.to(device)
            for prm in net.parameters():
                prm.requires_grad_(False)
            net.to(memory_format=torch.channels_last)
            mods.append(net)
        p, r, o = mods
        full = _PNetFull(p).eval()
        eager = dict(pnet=full, pnet_a=_PNetA(p).eval(), pnet_b=_PNetB(full).eval(), rnet=r, onet=o)
        self.scripted = False
        if script and str(device) == "cpu" and torch.backends.mkldnn.is_available():
            try:
                import warnings

                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    frozen = {
                        k: torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(eager[k])))
                        for k in ("rnet", "onet")
                    }
                eager.update(frozen)
                self.scripted = True
            except Exception:  # pragma: no cover - TorchScript gone or broken: eager is correct too
                pass
        self.pnet, self.pnet_a, self.pnet_b = eager["pnet"], eager["pnet_a"], eager["pnet_b"]
        self.rnet, self.onet = eager["rnet"], eager["onet"]


_BUILDING = threading.Lock()


def nets(device: str = "cpu", script: bool = True) -> Nets:
    """The cascade's nets for a device, built once (facenet-pytorch's weights ship in its wheel). Under a
    lock: background threads detect at once, and building them twice would also race the warning filters
    that keep TorchScript's deprecation notices off the user's terminal."""
    with _BUILDING:
        return _nets(device, script)


@lru_cache(maxsize=8)
def _nets(device: str, script: bool) -> Nets:
    return Nets(device, script)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _after_fork_in_child() -> None:
    """A forked child (multiprocessing's default on Linux) has none of its parent's threads: its pools
    would queue work for threads that do not exist, and the lock may have been held by one of them."""
    global _BUILDING
    _BUILDING = threading.Lock()
    _POOLS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _map(work: Callable[..., Result], args: list[tuple], spread: tuple[int, int]) -> list[Result]:
    """work(*a) for each a, in order, over `spread` = (threads, torch threads each): this thread alone, or
    threads of a pool (see `_spread`)."""
    threads, each = spread
    if threads <= 1 or len(args) <= 1:
        return [work(*a) for a in args]
    with _BUILDING:
        pool = _POOLS.get(spread)
        if pool is None:
            pool = _POOLS[spread] = ThreadPoolExecutor(
                threads, thread_name_prefix="facerec-mtcnn", initializer=torch.set_num_threads, initargs=(each,)
            )

    def run(a: tuple) -> Result:
        with torch.inference_mode():
            return work(*a)

    return list(pool.map(run, args))


def _spread(parallel: int) -> tuple[int, int]:
    """How one cascade call shares the caller's torch threads: (threads, torch threads each), up to
    `parallel` threads. Threads rather than torch's own (OpenMP) threads alone: the nets' layers are too
    small for OpenMP's workers, which wait for each other at every operation (and stall when anything else,
    such as `watch`'s decoding thread, holds one up). On 2 cores: 16 web photos 722-887 ms on 2 torch
    threads, 623-696 spread over 2 threads of 1; a 338-face photo 3.2-3.9 s, 2.9-3.0 s."""
    available = torch.get_num_threads()
    threads = max(1, min(parallel, available))
    return threads, max(1, available // threads)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """torchvision's batched_nms (its coordinate form): IoU NMS within each group, the kept indices by
    decreasing score. Groups are kept apart by shifting each one's boxes beyond all the others'."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shifted = boxes + (groups.to(boxes) * (boxes.max() + 1))[:, None]
    return mtcnn_nets.nms_kernel()(shifted, scores, threshold)


# --- pyramid ------------------------------------------------------------------------------------------


def _scales(h: int, w: int, minsize: float, factor: float) -> list[float]:
    """facenet's pyramid scales, computed with the very same float operations."""
    m = 12.0 / minsize
    minl = min(h, w) * m
    scale, out = m, []
    while minl >= 12:
        out.append(scale)
        scale = scale * factor
        minl = minl * factor
    return out


class _Level:
    __slots__ = ("gid", "h", "image", "scale", "w")

    def __init__(self, image, scale, h, w, gid):
        self.image, self.scale, self.h, self.w, self.gid = image, scale, h, w, gid


class _Piece:
    """Rows r0 .. r0+ph of a level, giving its output rows q0 .. q0+oq; placed at (canvas, y0, x0)."""

    __slots__ = ("canvas", "level", "oq", "ph", "q0", "r0", "x0", "y0")

    def __init__(self, level, r0, ph, q0, oq):
        self.level, self.r0, self.ph, self.q0, self.oq = level, r0, ph, q0, oq
        self.canvas = self.y0 = self.x0 = -1


def _up(v: int, step: int) -> int:
    """v rounded up to a multiple of step."""
    return -(-v // step) * step


def _pieces(lv: _Level, band: int) -> list[_Piece]:
    """Cut a level into bands of at most `band` (even) rows that overlap by P-Net's 10-row reach.

    Output row q of a level sees input rows 2q .. 2q+11, so a band from (even) r0 of ph rows yields
    outputs r0/2 .. r0/2 + (ph-1)//2 - 5 exactly as the whole level would (the last band keeps the level's
    real bottom edge, with its partial pooling window).
    """
    out = []
    total = (lv.h - 1) // 2 - 4  # output rows of the whole level
    q = 0
    while q < total:
        r0 = 2 * q
        ph = min(band, lv.h - r0)
        oq = min((ph - 1) // 2 - 4, total - q)
        out.append(_Piece(lv, r0, ph, q, oq))
        q += oq
    return out


def _pack(pieces: list[_Piece], width: int, height: int) -> list[tuple[int, int]]:
    """Place pieces (tallest first) into canvases of width x height, each at the lowest, then leftmost,
    spot on a canvas's skyline where it fits, in the first canvas that has one. A piece with an odd width
    (height) takes one more column (row), for `_pnet_forward`'s fix-up, so every position stays even.
    Returns each canvas's used (rows, columns)."""
    # per canvas: its skyline as (x, width, top) segments tiling [0, width) left to right
    skylines: list[list[tuple[int, int, int]]] = []
    right: list[int] = []  # per canvas: its rightmost used column
    for p in pieces:
        w, h = _up(p.level.w, 2), _up(p.ph, 2)
        spot = None
        for c, segs in enumerate(skylines):
            if min(t for _, _, t in segs) + h > height:
                continue
            for i, (x, _, _) in enumerate(segs):
                if x + w > width:
                    break
                top, j = 0, i
                while j < len(segs) and segs[j][0] < x + w:  # the segments under [x, x + w)
                    top = max(top, segs[j][2])
                    j += 1
                if top + h <= height and (spot is None or top < spot[1]):
                    spot = (c, top, x, i, j)
            if spot is not None:
                break
        if spot is None:
            skylines.append([(0, width, 0)])
            right.append(0)
            spot = (len(skylines) - 1, 0, 0, 0, 1)
        c, top, x, i, j = spot
        p.canvas, p.y0, p.x0 = c, top, x
        segs = skylines[c]
        sx, sw, st = segs[j - 1]  # the last segment under the piece may stick out to its right
        rest = [(x + w, sx + sw - x - w, st)] if sx + sw > x + w else []
        skylines[c] = [*segs[:i], (x, w, top + h), *rest, *segs[j:]]
        right[c] = max(right[c], x + w)
    return [(max(t for _, _, t in segs), r) for segs, r in zip(skylines, right)]


def _plan(levels: list[_Level]) -> tuple[list[_Piece], tuple[tuple[int, int], ...]]:
    """Cut levels into bands and pack them into canvases; returns the placed pieces and each canvas's
    (height, width). See `_layout`."""
    places, shapes = _layout(tuple((lv.h, lv.w) for lv in levels))
    pieces = []
    for k, r0, ph, q0, oq, c, y0, x0 in places:
        p = _Piece(levels[k], r0, ph, q0, oq)
        p.canvas, p.y0, p.x0 = c, y0, x0
        pieces.append(p)
    return pieces, shapes


@lru_cache(maxsize=512)
def _layout(dims: tuple[tuple[int, int], ...]) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, int], ...]]:
    """The packing of levels of these (height, width): per band (level index, r0, ph, q0, oq, canvas, y0,
    x0), and each canvas's (height, width), rounded up to 32 rows and 64 columns so that shapes repeat
    (oneDNN's primitives are cached by shape). Cached: photos of one size and video frames plan once.

    A canvas has at most CANVAS_PIXELS, so that P-Net's activations stay in the CPU's caches (a 192x768
    canvas cost ~1.6x more per pixel than 192x640 or 176x768 on a 2-core EPYC): it is at most
    CANVAS_HEIGHT rows tall, lower when wider. For a pyramid of at most two canvases, each width from the
    widest level's to CANVAS_WIDTH (or all bands side by side) is tried, up to the first that holds it in
    one canvas as low as its tallest band, and the packing with the fewest canvas pixels (plus
    PNET_CALL_PIXELS per canvas, the fixed cost of a P-Net call) wins: a single photo's 480x360 pyramid
    takes 25-33% fewer pixels than on shelves 768 wide. Larger ones (a batch of photos, a 1080p frame)
    fill their canvases at the widest full-height width within 1.5% of the best, and trying every width
    would cost them about as much time as it saves.
    """
    levels = [_Level(0, 0.0, h, w, k) for k, (h, w) in enumerate(dims)]
    narrowest = _up(max(_up(w + 1, 2) for _, w in dims), 64)
    widths: Sequence[int] = (max(narrowest, CANVAS_PIXELS // CANVAS_HEIGHT // 64 * 64),)
    if sum(h * w for h, w in dims) <= 2 * CANVAS_PIXELS:
        # no wider than all bands side by side: a wider canvas holds nothing more in its first row
        side_by_side = _up(sum(_up(lv.w + 1, 2) * len(_pieces(lv, CANVAS_HEIGHT)) for lv in levels), 64)
        widths = range(narrowest, max(min(CANVAS_WIDTH, side_by_side), narrowest) + 1, 64)
    best: tuple[int, list[_Piece], list[tuple[int, int]]] | None = None
    for width in widths:
        height = max(64, min(CANVAS_HEIGHT, CANVAS_PIXELS // width) // 32 * 32)
        pieces = sorted((p for lv in levels for p in _pieces(lv, height)), key=lambda p: (-p.ph, -p.level.w))
        shapes = [(_up(h, 32), _up(w, 64)) for h, w in _pack(pieces, width, height)]
        cost = sum(h * w + PNET_CALL_PIXELS for h, w in shapes)
        if best is None or cost < best[0]:
            best = (cost, pieces, shapes)
        if len(shapes) == 1 and shapes[0][0] == _up(pieces[0].ph, 32):
            break  # a wider one is as low or, past 640 columns, only lower by cutting lower bands
    assert best is not None  # levels is not empty
    return tuple((p.level.gid, p.r0, p.ph, p.q0, p.oq, p.canvas, p.y0, p.x0) for p in best[1]), tuple(best[2])


def _pnet_forward(nets: Nets, x: torch.Tensor, fixes: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """P-Net on a canvas; returns (n, 6, H', W'): background and face logits, 4 box offsets.

    fixes: (y0, x0, h, w, fix_cols, fix_rows) of pieces whose odd width (height, at the level's bottom)
    makes a standalone run see a partial 2x2 pooling window at its last column (row): the conv1
    column (row) just past the piece is set to a copy of its last one, so that the max over the window
    equals the standalone partial-window max.
    """
    if not fixes:
        return nets.pnet(x)
    c = nets.pnet_a(x)
    for y0, x0, h, w, cols, rows in fixes:
        if cols:
            c[0, :, y0 : y0 + h - 2, x0 + w - 2] = c[0, :, y0 : y0 + h - 2, x0 + w - 3]
        if rows:
            c[0, :, y0 + h - 2, x0 : x0 + w - 1] = c[0, :, y0 + h - 3, x0 : x0 + w - 1]
    return nets.pnet_b(c)


def _bins(n: int, o: int, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pooling bins of n inputs into o outputs: [floor(i*n/o), ceil((i+1)*n/o))."""
    i = torch.arange(o, device=device)
    return torch.div(i * n, o, rounding_mode="floor"), -torch.div(-(i + 1) * n, o, rounding_mode="floor")


def _level(S: torch.Tensor, H: int, W: int, oh: int, ow: int, r0: int, ph: int, out: torch.Tensor) -> None:
    """Write rows r0 .. r0+ph of a normalised pyramid level (oh, ow) into `out` (ph, ow, 3).

    S: the image's integral image, flat (pixels, 4). Equal to facenet's interpolate(image, (oh, ow),
    mode="area"): box sums from the integral image are exact integers, divided by the bin height and width
    as adaptive_avg_pool2d does. Four gathers per output pixel read only what the level needs (gathering
    whole rows first read the image's full width for every level: 51 -> 20 ms for a 1080p frame's pyramid).
    """
    yA, yB = _bins(H, oh, S.device)
    rA, rB = (yA[r0 : r0 + ph] * (W + 1))[:, None], (yB[r0 : r0 + ph] * (W + 1))[:, None]
    xA, xB = _bins(W, ow, S.device)
    E = _gather(S, rB + xB)
    E -= _gather(S, rA + xB)
    E -= _gather(S, rB + xA)
    E += _gather(S, rA + xA)
    E = E[..., :3].to(torch.float32)
    E /= (yB - yA)[r0 : r0 + ph].to(torch.float32)[:, None, None]
    E /= (xB - xA).to(torch.float32)[None, :, None]
    E -= 127.5
    torch.mul(E, 0.0078125, out=out)


def _stage1(nets, integrals, sizes, minsizes, threshold, factor, device, spread=(1, 1)):
    """Pyramid + P-Net + the two NMS of facenet's first stage. Returns boxes (k, 9) and image indices.

    integrals: per image its 4-channel integral image, flat ((H+1)*(W+1), 4).
    """
    levels: list[_Level] = []
    for i, ((h, w), minsize) in enumerate(zip(sizes, minsizes)):
        for s in _scales(h, w, minsize, factor):
            levels.append(_Level(i, s, int(h * s + 1), int(w * s + 1), len(levels)))
    empty = torch.zeros(0, 9, device=device), torch.zeros(0, dtype=torch.long, device=device)
    if not levels:
        return empty
    pieces, shapes = _plan(levels)
    per_canvas: list[list[_Piece]] = [[] for _ in shapes]
    for p in pieces:
        per_canvas[p.canvas].append(p)
    margin = math.log(threshold / (1 - threshold)) - 1e-3 if 0 < threshold < 1 else -math.inf

    def canvas(shape: tuple[int, int], ps: list[_Piece]) -> tuple[torch.Tensor, ...] | None:
        """P-Net on one canvas: its boxes (m, 9), their images and their (image, level) groups."""
        x = torch.zeros((1, *shape, 3), device=device)
        fixes = []
        for p in ps:
            lv = p.level
            ih, iw = sizes[lv.image]
            _level(integrals[lv.image], ih, iw, lv.h, lv.w, p.r0, p.ph, x[0, p.y0 : p.y0 + p.ph, p.x0 : p.x0 + lv.w])
            cols, rows = bool(lv.w & 1), bool(p.ph & 1)  # an odd ph is always the level's last band
            if cols or rows:
                fixes.append((p.y0, p.x0, p.ph, lv.w, cols, rows))
        head = _pnet_forward(nets, x.permute(0, 3, 1, 2), fixes)[0]  # (6, h', w')
        oh, ow = head.shape[1:]
        owner = torch.full((oh, ow), -1, dtype=torch.long, device=device)  # piece of each output
        for k, p in enumerate(ps):
            owner[p.y0 // 2 : p.y0 // 2 + p.oq, p.x0 // 2 : p.x0 // 2 + (p.level.w - 1) // 2 - 4] = k
        nz = (((head[1] - head[0]) >= margin) & (owner >= 0)).nonzero()
        if len(nz) == 0:
            return None
        by, bx = nz[:, 0], nz[:, 1]
        piece = owner[by, bx]
        # facenet's probability: softmax of the 2-channel head, at the preselected positions only
        sel = head[:, by, bx].T  # (m, 6)
        prob = torch.softmax(sel[:, :2], dim=1)[:, 1]
        keep = prob >= threshold
        by, bx, piece, prob, sel = by[keep], bx[keep], piece[keep], prob[keep], sel[keep]
        if len(piece) == 0:
            return None
        dy = torch.tensor([p.q0 - p.y0 // 2 for p in ps], device=device)
        dx = torch.tensor([-(p.x0 // 2) for p in ps], device=device)
        bb = torch.stack([bx + dx[piece], by + dy[piece]], 1).to(torch.float32)  # (col, row) in the level
        # generateBoundingBox, with each level's python-float scale as facenet uses it
        q = torch.empty((len(piece), 4), device=device)
        for j in torch.unique(piece).tolist():
            m = piece == j
            s = ps[j].level.scale
            q[m, :2] = ((2 * bb[m] + 1) / s).floor()
            q[m, 2:] = ((2 * bb[m] + 12 - 1 + 1) / s).floor()
        return (
            torch.cat([q, prob[:, None], sel[:, 2:]], 1),
            torch.tensor([p.level.image for p in ps], device=device)[piece],
            torch.tensor([p.level.gid for p in ps], device=device)[piece],  # (image, level)
        )

    found = [f for f in _map(canvas, list(zip(shapes, per_canvas)), spread) if f is not None]
    all_boxes, all_inds, all_groups = [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]
    if not all_boxes:
        return empty
    boxes = torch.cat(all_boxes)
    inds = torch.cat(all_inds)
    groups = torch.cat(all_groups)
    # NMS within each scale + image, then within each image
    pick = _nms(boxes[:, :4].double(), boxes[:, 4].double(), groups, 0.5)
    boxes, inds = boxes[pick], inds[pick]
    pick = _nms(boxes[:, :4].double(), boxes[:, 4].double(), inds, 0.7)
    return boxes[pick], inds[pick]


# --- crops --------------------------------------------------------------------------------------------


def _integrals(images, device):
    """All images' integral images in one flat (sum of (H+1)*(W+1), 4) tensor (channels R, G, B and an
    unused 255; int32 when no sum can overflow, else float64), and per image its own part of it. Four
    channels make a pixel one 16-byte element, which gathers about 3x faster than three."""
    sizes = [im.shape[:2] for im in images]
    counts = [(h + 1) * (w + 1) for h, w in sizes]
    exact32 = all(h * w * 255 < 2**31 for h, w in sizes)
    dtype = np.int32 if exact32 else np.float64
    buf = np.empty((sum(counts), 4), dtype)
    start = 0
    for im, (h, w), c in zip(images, sizes, counts):
        view = buf[start : start + c].reshape(h + 1, w + 1, 4)
        # OpenCV's integral image is several times faster than two cumsums, and its RGBA conversion 30x
        # faster than numpy's concatenate (22 ms for a 1080p frame).
        if im.size:
            cv2.integral(cv2.cvtColor(im, cv2.COLOR_RGB2RGBA), sum=view, sdepth=cv2.CV_32S if exact32 else cv2.CV_64F)
        else:
            view[...] = 0
        start += c
    S = torch.from_numpy(buf).to(device)
    parts, start = [], 0
    for c in counts:
        parts.append(S[start : start + c])
        start += c
    return S, parts


def _gather(S: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The 4-channel pixels of a flat (pixels, 4) integral image at `index` -> (*index.shape, 4)."""
    if S.dtype == torch.int32:  # one 16-byte element per pixel
        flat = S.view(torch.complex128).view(-1)
        return flat.index_select(0, index.reshape(-1)).view(torch.int32).view(*index.shape, 4)
    return S.index_select(0, index.reshape(-1)).view(*index.shape, 4)


def _pad(boxes: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """facenet's pad(): truncated integer box, start clamped to 1, end to the image size (1-based)."""
    b = boxes[:, :4].trunc().int()
    x = b[:, 0].clamp_min(1)
    y = b[:, 1].clamp_min(1)
    ex = torch.minimum(b[:, 2], w)
    ey = torch.minimum(b[:, 3], h)
    return y, ey, x, ex


def _crops(
    S: torch.Tensor,
    base: torch.Tensor,
    stride: torch.Tensor,
    y: torch.Tensor,
    ey: torch.Tensor,
    x: torch.Tensor,
    ex: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Area-resampled crops [y-1:ey, x-1:ex] -> (n, 3, size, size) channels_last, normalised.

    Equal to facenet's per-box interpolate(mode="area") (= adaptive average pooling: bin i spans
    floor(i*n/size) .. ceil((i+1)*n/size)), computed from the integral image as four gathers per pixel.
    """
    i = torch.arange(size, device=S.device)
    y0, x0 = (y - 1).long(), (x - 1).long()
    hk, wk = (ey.long() - y0)[:, None], (ex.long() - x0)[:, None]
    sy = y0[:, None] + torch.div(i * hk, size, rounding_mode="floor")
    ey_ = y0[:, None] - torch.div(-(i + 1) * hk, size, rounding_mode="floor")
    sx = x0[:, None] + torch.div(i * wk, size, rounding_mode="floor")
    ex_ = x0[:, None] - torch.div(-(i + 1) * wk, size, rounding_mode="floor")
    ky = (ey_ - sy).to(torch.float32)
    kx = (ex_ - sx).to(torch.float32)
    st = stride[:, None]
    rA = base[:, None] + sy * st
    rB = base[:, None] + ey_ * st
    get = lambda r, c: _gather(S, r[:, :, None] + c[:, None, :])
    s = get(rB, ex_)
    s -= get(rA, ex_)
    s -= get(rB, sx)
    s += get(rA, sx)
    out = s[..., :3].to(torch.float32)
    out /= ky[:, :, None, None]
    out /= kx[:, None, :, None]
    out -= 127.5
    out *= 0.0078125
    return out.permute(0, 3, 1, 2)  # NHWC memory = channels_last


def _run_crops(net, S, base, stride, y, ey, x, ex, size, chunk, spread=(1, 1)):
    def run(i: int) -> tuple[torch.Tensor, ...]:
        sl = slice(i, i + chunk)
        return net(_crops(S, base[sl], stride[sl], y[sl], ey[sl], x[sl], ex[sl], size))

    outs = _map(run, [(i,) for i in range(0, len(y), chunk)], spread)
    return tuple(torch.cat(v, 0) for v in zip(*outs))


def _rerec(b: torch.Tensor) -> torch.Tensor:
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    side = torch.max(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2:4] = b[:, :2] + side.repeat(2, 1).permute(1, 0)
    return b


def _bbreg(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b1 = b[:, 0] + reg[:, 0] * w
    b2 = b[:, 1] + reg[:, 1] * h
    b3 = b[:, 2] + reg[:, 2] * w
    b4 = b[:, 3] + reg[:, 3] * h
    b[:, :4] = torch.stack([b1, b2, b3, b4]).permute(1, 0)
    return b


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet's nms_numpy(method='Min'): overlap = intersection / smaller area, +1 pixel areas."""
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, j].copy() for j in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = []
    while order.size > 0:
        i = order[-1]
        pick.append(i)
        idx = order[:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[idx]) - np.maximum(x1[i], x1[idx]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[idx]) - np.maximum(y1[i], y1[idx]) + 1)
        o = w * h / np.minimum(area[i], area[idx])
        order = order[np.where(o <= threshold)]
    return np.asarray(pick, np.int64)


# --- the cascade --------------------------------------------------------------------------------------


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {np.shape(image)}")
    return np.ascontiguousarray(a)


def detect_batch(
    images: Sequence[np.ndarray],
    min_face: int | Sequence[int] = 20,
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
    device: str = "cpu",
    parallel: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """MTCNN on a list of RGB uint8 images (any sizes); like facenet's detect_face on each one.

    min_face: facenet's `minsize` (pixels of the image given), one int for all or one per image.
    parallel: at most this many threads share the caller's torch threads, its P-Net canvases and R-/O-Net
    batches (`_spread`); the caller does its part on its share of the threads too. The results
    are the same.
    Returns per image (boxes (n, 5) float64: x1, y1, x2, y2, probability; points (n, 5, 2) float64),
    in facenet's order (decreasing O-Net probability, after its final 'Min' NMS).
    """
    images = [_as_rgb(im) for im in images]
    if not images:
        return []
    minsizes = [min_face] * len(images) if isinstance(min_face, int) else list(min_face)
    if len(minsizes) != len(images):
        raise ValueError("min_face: one value, or one per image")
    nn = nets(str(device))
    empty = (np.zeros((0, 5)), np.zeros((0, 5, 2)))
    spread = _spread(parallel) if str(device) == "cpu" else (1, torch.get_num_threads())  # a GPU is one queue
    with torch.inference_mode(), torch_threads(spread[1]):
        sizes = [im.shape[:2] for im in images]
        S, parts = _integrals(images, device)
        boxes, inds = _stage1(nn, parts, sizes, minsizes, thresholds[0], factor, device, spread)
        if len(boxes) == 0:
            return [empty for _ in images]
        hs = torch.tensor([s[0] for s in sizes], dtype=torch.int32, device=device)
        ws = torch.tensor([s[1] for s in sizes], dtype=torch.int32, device=device)
        bases = torch.tensor(np.cumsum([0] + [(h + 1) * (w + 1) for h, w in sizes])[:-1], device=device)
        strides = ws.long() + 1

        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        qq1 = boxes[:, 0] + boxes[:, 5] * regw
        qq2 = boxes[:, 1] + boxes[:, 6] * regh
        qq3 = boxes[:, 2] + boxes[:, 7] * regw
        qq4 = boxes[:, 3] + boxes[:, 8] * regh
        boxes = _rerec(torch.stack([qq1, qq2, qq3, qq4, boxes[:, 4]]).permute(1, 0))

        # Second stage
        for stage, (net, size, thr) in enumerate(((nn.rnet, 24, thresholds[1]), (nn.onet, 48, thresholds[2]))):
            y, ey, x, ex = _pad(boxes, ws[inds], hs[inds])
            ok = (ey > y - 1) & (ex > x - 1)  # facenet cannot crop these (and fails); we drop them
            if not bool(ok.all()):
                boxes, inds, y, ey, x, ex = boxes[ok], inds[ok], y[ok], ey[ok], x[ok], ex[ok]
            if len(boxes) == 0:
                return [empty for _ in images]
            chunk = min(RNET_CHUNK if size == 24 else ONET_CHUNK, -(-len(y) // spread[0]))
            out = _run_crops(net, S, bases[inds], strides[inds], y, ey, x, ex, size, chunk, spread)
            score = out[-1][:, 1]
            ipass = score > thr
            reg = out[0][ipass]
            b = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
            inds = inds[ipass]
            if stage == 0:
                pick = _nms(b[:, :4].double(), b[:, 4].double(), inds, 0.7)
                b, inds, reg = b[pick], inds[pick], reg[pick]
                boxes = _rerec(_bbreg(b, reg))
            else:
                pts = out[1][ipass]
                w_i = b[:, 2] - b[:, 0] + 1
                h_i = b[:, 3] - b[:, 1] + 1
                px = w_i[:, None] * pts[:, :5] + b[:, 0:1] - 1
                py = h_i[:, None] * pts[:, 5:10] + b[:, 1:2] - 1
                points = torch.stack((px, py), 2)
                boxes = _bbreg(b, reg)
        boxes_np = boxes.cpu().numpy()
        points_np = points.cpu().numpy()
        inds_np = inds.cpu().numpy()
    result = []
    for i in range(len(images)):
        sel = np.nonzero(inds_np == i)[0]
        keep = sel[_nms_min(boxes_np[sel, :4], boxes_np[sel, 4], 0.7)]
        result.append((boxes_np[keep].astype(np.float64), points_np[keep].astype(np.float64)))
    return result


def detect(
    image: np.ndarray,
    min_face: int = 20,
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
    device: str = "cpu",
    parallel: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """One image: (boxes (n, 5), points (n, 5, 2)), float64, like facenet's detect_face."""
    return detect_batch([image], min_face, thresholds, factor, device, parallel)[0]


def detect_many(
    images: Sequence[np.ndarray],
    min_faces: int | Sequence[int],
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
    device: str = "cpu",
    batch: int = 8,
    parallel: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Many images in batches of `batch`; min_faces one int or one per image. Memory: the batch's
    integral images take 16 bytes per pixel (31 MB for a 1600x1200 photo), so keep big photos to ~8."""
    images = list(images)
    mins = [min_faces] * len(images) if isinstance(min_faces, int) else list(min_faces)
    out = []
    for i in range(0, len(images), batch):
        out.extend(detect_batch(images[i : i + batch], mins[i : i + batch], thresholds, factor, device, parallel))
    return out
