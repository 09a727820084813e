"""The window a webcam user sees, for real: `facerec watch` under Xvfb, as separate processes.

A screenshot of the window (xwd) must be a frame of the clip, pixel for pixel, with the overlay of that
frame (box, name and similarity, as printed by --json) and a legible frame rate; `q` and the window's
close button end the run with its summary and complete events; a display on which no window opens is a
one-line error, not an abort. Needs Xvfb, openbox, wmctrl, xdotool and xwd (Debian: xvfb openbox wmctrl
xdotool x11-apps; .ci/run installs them as root); skipped without them.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.annotate import _KNOWN, draw_matches
from facerec.stream import RATE_COLOUR, TrackedFace, draw_rate

TOOLS = ("Xvfb", "openbox", "wmctrl", "xdotool", "xwd")
FPS_BAND = (slice(0, 36), slice(0, 180))  # where run_watch writes the frame rate: top left
LOOPS = 6  # the podium clip played 6 times: `q` ends the run long before the clip does


def cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "facerec.cli", *args], env=env or dict(os.environ), text=True, **kw)


def x(args: list[str], disp: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, env={**os.environ, "DISPLAY": disp}, capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def display():
    """A fresh Xvfb, on a display number it picks itself (-displayfd), with a window manager as on a
    desktop: without one, a Qt window on a bare X server was seen to stay unpainted now and then."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (Debian: apt-get install xvfb openbox wmctrl xdotool x11-apps)"
        )
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-s", "0"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    manager = None
    try:
        # The number, then a newline (a separate write): a pipe closed before it would kill the server.
        number, deadline = b"", time.monotonic() + 60
        while not number.endswith(b"\n") and select.select([read], [], [], max(deadline - time.monotonic(), 0))[0]:
            if not (chunk := os.read(read, 32)):
                break
            number += chunk
        assert number.strip().isdigit() and number.endswith(b"\n"), f"Xvfb did not start within 60 s ({number!r})"
        disp = f":{number.decode().strip()}"
        manager = subprocess.Popen(
            ["openbox", "--sm-disable"],
            env={**os.environ, "DISPLAY": disp},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while x(["wmctrl", "-m"], disp).returncode != 0:
            assert manager.poll() is None and time.monotonic() < deadline, "openbox did not start within 60 s"
            time.sleep(0.1)
        yield disp
    finally:
        os.close(read)
        for process in (manager, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, shared) -> Path:
    """Obama's two photos of ../shared/faces/known, enrolled through the CLI."""
    photos = tmp_path_factory.mktemp("photos")
    (photos / "obama").symlink_to(shared / "faces/known/obama", target_is_directory=True)
    gallery = tmp_path_factory.mktemp("window") / "g"
    enroll = cli(
        "enroll",
        str(photos),
        "--gallery",
        str(gallery),
        "--model",
        "dlib-resnet",
        "--json",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = enroll.communicate(timeout=600)
    assert enroll.returncode == 0, err
    assert json.loads(out)["added"] == {"obama": 2}
    return gallery


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, shared) -> Path:
    """../shared/video/obama_podium.mp4 played LOOPS times, in one file."""
    source = cv2.VideoCapture(str(shared / "video/obama_podium.mp4"))
    fps, frames = source.get(cv2.CAP_PROP_FPS), []
    while (frame := source.read()[1]) is not None:
        frames.append(frame)
    path = tmp_path_factory.mktemp("clip") / "podium-looped.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for _ in range(LOOPS):
        for frame in frames:
            out.write(frame)
    out.release()
    return path


def clip_frames(clip: Path, last: int) -> list[np.ndarray]:
    """Frames 0..last of the clip, RGB, decoded as `facerec watch` decodes them."""
    capture, frames = cv2.VideoCapture(str(clip)), []
    while len(frames) <= last and (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames


def frame_count(clip: Path) -> int:
    return int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))


def find_window(disp: str, proc: subprocess.Popen, timeout: float = 300) -> str:
    """The id of watch's visible window, polled for while the model loads and the first frame is read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"watch ended (code {proc.returncode}) before its window appeared"
        found = x(["xdotool", "search", "--onlyvisible", "--name", "^facerec$"], disp).stdout.split()
        if found:
            return found[0].decode()
        time.sleep(0.2)
    raise AssertionError(f"no facerec window within {timeout:.0f} s")


def screenshot(disp: str, window: str) -> np.ndarray | None:
    """The window's pixels, RGB, from xwd's dump (a 24-bit TrueColor Xvfb: 32-bit pixels); None when xwd
    cannot read that window (gone: under load the first window found was once one Qt replaced)."""
    dump = x(["xwd", "-id", window, "-silent"], disp)
    if dump.returncode != 0:
        return None
    data = dump.stdout
    header = np.frombuffer(data[:100], ">u4").astype(int)
    size, width, height, order, bits, stride, colours = header[[0, 4, 5, 7, 11, 12, 19]]
    assert bits == 32 and tuple(header[14:17]) == (0xFF0000, 0xFF00, 0xFF), f"unexpected xwd format {header}"
    start = size + 12 * colours
    pixels = np.frombuffer(data[start : start + stride * height], np.uint8).reshape(height, stride)
    pixels = pixels[:, : 4 * width].reshape(height, width, 4)
    return np.ascontiguousarray(pixels[:, :, 2::-1] if order == 0 else pixels[:, :, 1:])


def painted_shot(disp: str, proc: subprocess.Popen, timeout: float = 120) -> tuple[str, np.ndarray]:
    """watch's window and a screenshot of it once it shows a named face's box and the frame rate (drawn
    from the second frame on); polled, as the first paint can lag behind the window's appearing."""
    window = find_window(disp, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"watch ended (code {proc.returncode}) before a box was shown"
        shot = screenshot(disp, window)
        if shot is None:
            window = find_window(disp, proc)
        elif (shot == _KNOWN).all(axis=2).sum() > 200 and (shot[FPS_BAND] == RATE_COLOUR).all(axis=2).sum() > 50:
            return window, shot
        time.sleep(0.3)
    raise AssertionError(f"the window showed no named face's box and frame rate within {timeout:.0f} s")


def read_rate(shot: np.ndarray) -> float | None:
    """The frame rate written in the top left ('12.3 fps'; RATE_COLOUR where solid), read by matching renderings."""
    seen = (shot[FPS_BAND] == RATE_COLOUR).all(axis=2)
    best, best_overlap = None, 0.0
    for tenths in range(1000):
        canvas = np.zeros_like(shot[FPS_BAND])
        draw_rate(canvas, tenths / 10)
        drawn = (canvas == RATE_COLOUR).all(axis=2)
        overlap = (seen & drawn).sum() / max((seen | drawn).sum(), 1)
        if overlap > best_overlap:
            best, best_overlap = tenths / 10, overlap
    return best if best_overlap > 0.9 else None


def check_shot(shot: np.ndarray, clip: Path, results: list[dict]) -> tuple[int, float]:
    """The screenshot is one frame of the clip with that frame's overlay: (its index, the rate shown)."""
    height, width = cv2.VideoCapture(str(clip)).read()[1].shape[:2]
    assert shot.shape == (height, width, 3), f"window {shot.shape[1]}x{shot.shape[0]}, frame {width}x{height}"
    frames = clip_frames(clip, max(r["frame"] for r in results))
    outside = np.ones(shot.shape[:2], bool)
    outside[FPS_BAND] = False
    errors = []
    for result in results:
        expected = draw_matches(frames[result["frame"]], [TrackedFace(**face) for face in result["faces"]])
        errors.append(np.abs(expected.astype(int) - shot)[outside].mean())
    best = int(np.argmin(errors))
    assert errors[best] < 1.0, f"no frame of the clip with its overlay looks like the window (best {errors[best]:.1f})"
    assert [face["name"] for face in results[best]["faces"]] == ["obama"], results[best]
    rate = read_rate(shot)
    assert rate is not None and rate > 0, "no frame rate in the window's top left"
    return results[best]["frame"], rate


def check_events(events: Path, tracks: int) -> None:
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    appears = {e["track"] for e in lines if e["event"] == "appear"}
    leaves = [e["track"] for e in lines if e["event"] == "leave"]
    assert appears and sorted(leaves) == sorted(appears) and len(leaves) == tracks


def start_watch(display: str, gallery: Path, clip: Path, events: Path, *json: str, stdout) -> subprocess.Popen:
    """`facerec watch` on a clip in a window on `display`, writing its events file."""
    return cli(
        "watch",
        "--source",
        str(clip),
        "--gallery",
        str(gallery),
        *json,
        "--events",
        str(events),
        env={**os.environ, "DISPLAY": display},
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def test_window_shows_the_overlay_and_q_closes_it(display, gallery, long_clip, tmp_path):
    out, events = tmp_path / "out.jsonl", tmp_path / "events.jsonl"
    with open(out, "w") as stdout:
        proc = start_watch(display, gallery, long_clip, events, "--json", stdout=stdout)
        try:
            window, shot = painted_shot(display, proc)
            cv2.imwrite(str(tmp_path / "window.png"), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR))
            x(["xdotool", "key", "--window", window, "q"], display)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    printed = [json.loads(line) for line in out.read_text().splitlines()]
    results, summary = printed[:-1], printed[-1]["summary"]
    # `q` ended it, not the clip: it stopped well before the end, with the summary of what it saw.
    assert 0 < summary["frames"] == len(results) < frame_count(long_clip) - 100
    assert list(summary["people"]) == ["obama"] and summary["tracks"] >= 1
    check_events(events, summary["tracks"])
    index, rate = check_shot(shot, long_clip, results)
    print(f"window: frame {index} of {summary['frames']}, {rate} fps shown; screenshot {tmp_path / 'window.png'}")


def test_close_button_ends_watch(display, gallery, long_clip, tmp_path):
    """Closing the window (the window manager asks it to close) ends the run like `q`; it used to reopen
    on the next frame."""
    events = tmp_path / "events.jsonl"
    proc = start_watch(display, gallery, long_clip, events, stdout=subprocess.PIPE)
    try:
        window, _ = painted_shot(display, proc)
        x(["wmctrl", "-i", "-c", window], display)  # what its close button does
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    first = out.splitlines()[0]
    assert " frames in " in first and "tracks" in first and "  obama: " in out
    assert int(first.split()[0]) < frame_count(long_clip) - 100
    check_events(events, int(first.split(", ")[-1].split()[0]))


@pytest.mark.skipif(sys.platform != "linux", reason="DISPLAY names an X server only on Linux")
def test_display_without_server_is_a_clear_error(gallery, shared):
    """A DISPLAY naming no X server (stale after ssh or tmux): OpenCV's Qt would abort the process; watch
    says what is wrong in one line instead."""
    number = next(
        n for n in range(150, 1000) if not any(Path(f"/tmp/{p}").exists() for p in (f".X{n}-lock", f".X11-unix/X{n}"))
    )
    proc = cli(
        "watch",
        "--source",
        str(shared / "video/obama_podium.mp4"),
        "--gallery",
        str(gallery),
        env={**os.environ, "DISPLAY": f":{number}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert f"cannot open a window on display :{number}" in err and "--no-window" in err
    assert "Traceback" not in err and out == ""
