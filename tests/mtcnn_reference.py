"""The reference facerec's MTCNN cascade must match: facenet-pytorch's own detect_face, and the matching of
two detections (tests/test_mtcnn.py and bench/mtcnn.py)."""

from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=1)
def _facenet():
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        net.to(memory_format=torch.channels_last)  # as facerec ran it before its own cascade
    return mtcnn


def prepare(image: np.ndarray, min_face: int = 20, max_side: int = 1600) -> tuple[np.ndarray, int]:
    """As facerec.detect.Detector prepares a photo: downscaled to max_side, the minimum face along with it."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), max(12, int(min_face * scale))


def facenet_detect(image, minsize, thresholds=(0.6, 0.7, 0.7), factor=0.709):
    from facenet_pytorch.models.utils.detect_face import detect_face

    m = _facenet()
    p, r, o = m.pnet, m.rnet, m.onet
    with torch.inference_mode():
        b, pt = detect_face(np.ascontiguousarray(image), minsize, p, r, o, list(thresholds), factor, "cpu")
    return np.asarray(b[0], np.float64).reshape(-1, 5), np.asarray(pt[0], np.float64).reshape(-1, 5, 2)


def iou(a, b):
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-12)


def match(ref, ours):
    """Greedy IoU matching. Returns dict: n_ref, n_ours, matched, min_iou, max_lm (landmark error / box
    width), max_dp (probability difference), unmatched probabilities (ref / ours)."""
    (rb, rp), (ob, op) = ref, ours
    out = dict(n_ref=len(rb), n_ours=len(ob), matched=0, min_iou=1.0, max_lm=0.0, max_dp=0.0, un_ref=[], un_ours=[])
    if len(rb) and len(ob):
        m = iou(rb, ob)
        used_r, used_o = set(), set()
        for flat in np.argsort(-m, axis=None):
            i, j = np.unravel_index(flat, m.shape)
            if i in used_r or j in used_o or m[i, j] < 0.5:
                continue
            used_r.add(i)
            used_o.add(j)
            w = max(rb[i, 2] - rb[i, 0], 1e-6)
            out["matched"] += 1
            out["min_iou"] = min(out["min_iou"], float(m[i, j]))
            out["max_lm"] = max(out["max_lm"], float(np.abs(rp[i] - op[j]).max() / w))
            out["max_dp"] = max(out["max_dp"], float(abs(rb[i, 4] - ob[j, 4])))
        out["un_ref"] = [float(rb[i, 4]) for i in range(len(rb)) if i not in used_r]
        out["un_ours"] = [float(ob[j, 4]) for j in range(len(ob)) if j not in used_o]
    else:
        out["un_ref"] = [float(v) for v in rb[:, 4]]
        out["un_ours"] = [float(v) for v in ob[:, 4]]
    return out


def ok(stats, iou_min=0.95, lm_max=0.02, dp_max=0.01):
    return (
        stats["n_ref"] == stats["n_ours"] == stats["matched"]
        and stats["min_iou"] >= iou_min
        and stats["max_lm"] <= lm_max
        and stats["max_dp"] <= dp_max
    )
