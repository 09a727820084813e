"""The `facerec` command: parse options, call the Python API, print text or JSON, map errors to exit codes.

Exit codes: 0 success; 1 some input failed (reported, the rest was processed); 2 bad usage, a missing
gallery or model, or a gallery made by another model; 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .config import default_gallery_dir
from .embedders.registry import MODELS
from .errors import FacerecError, Interrupted

if TYPE_CHECKING:
    from .enroll import EnrollReport
    from .pipeline import FacePipeline
    from .recognizer import FaceRecognizer
    from .stream import WatchSummary

Command = TypeVar("Command", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"facerec: error: {message}", err=True)
    if code == 130:
        # CPython remembers a KeyboardInterrupt that escaped an eval() of a string (TorchScript evaluates
        # type annotations so while building networks) and then ends the process by SIGINT at exit, even
        # though we handled it. Each string eval resets that flag: the exit code stays 130.
        eval("None")
    sys.exit(code)


def handle_errors(command: Command) -> Command:
    """Our exceptions become one line on stderr and their exit code; never a traceback.

    Ctrl-C during a command that reports (enroll, watch) prints what was done before it — the same report,
    as JSON with --json or as text — then the one-line error, exit 130.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = _interrupt_once()
        try:
            result = command(*args, **kwargs)
        except Interrupted as exc:
            if exc.report is not None:
                _emit(bool(kwargs.get("as_json")), exc.report.to_dict(), _text_of(exc.report))
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except FacerecError as exc:
            _restore(previous)
            _fail(str(exc), exc.exit_code)
        # An interrupted command leaves further Ctrl-C ignored until the process has exited.
        _restore(previous)
        return result

    return wrapper  # type: ignore[return-value]


def _interrupt_once() -> Any:
    """Ctrl-C raises KeyboardInterrupt once; further ones (people press it twice) are ignored while the
    command cleans up — background threads joined, the gallery index saved, the report printed — so that
    the process ends with exit 130 and whole files, never by the signal itself mid-cleanup. Returns the
    handler to restore (None where handlers cannot be set: not the main thread)."""

    fired = False

    def interrupted(signum: int, frame: object) -> None:
        nonlocal fired
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not fired:  # a second signal that arrived before the line above ran: ignored too
            fired = True
            raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGINT, interrupted)
    except ValueError:  # not the main thread
        return None


def _restore(handler: Any) -> None:
    if handler is not None:
        signal.signal(signal.SIGINT, handler)


def _json(payload: dict[str, Any]) -> str:
    """One JSON line that is valid UTF-8 even when a file name is not: its stray bytes (which Python holds
    as lone surrogates) come out as \\udcXX escapes instead of raw bytes that break JSON readers."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    click.echo(_json(payload) if as_json else text)


def _text_of(report: Any) -> str:
    """The text view of a report that an interruption carries."""
    from .enroll import EnrollReport
    from .stream import WatchSummary

    if isinstance(report, EnrollReport):
        return _enroll_text(report)
    if isinstance(report, WatchSummary):
        return _watch_text(report)
    return str(report)


gallery_option = click.option(
    "--gallery",
    type=click.Path(path_type=Path, file_okay=False),
    default=default_gallery_dir,
    show_default="$FACEREC_GALLERY or ~/.local/share/facerec/gallery",
    help="Gallery folder.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")


def model_options(command):
    command = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the networks run.",
    )(command)
    return click.option(
        "--weights",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Use this weights file instead of the models folder or a download.",
    )(command)


def _recognizer(
    gallery: Path,
    weights: Path | None = None,
    device: str = "auto",
    model: str | None = None,
    min_face_size: int | None = None,
) -> FaceRecognizer:
    from .recognizer import FaceRecognizer

    return FaceRecognizer(
        gallery, model=model, weights=weights, device=device, min_face_size=min_face_size, progress=sys.stderr.isatty()
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facerec")
def main() -> None:
    """Face recognition: enroll people from photos, then identify them in other photos."""


@main.command()
@click.argument("photo_dir", type=click.Path(path_type=Path))
@gallery_option
@click.option(
    "--model",
    type=click.Choice(["auto", *sorted(MODELS)]),
    default="auto",
    show_default=True,
    help="Embedding model for a new gallery (auto: vggface2 when its weights can be had, else the "
    "offline dlib-resnet); an existing gallery keeps its own.",
)
@model_options
@click.option(
    "--min-face-size",
    type=click.IntRange(min=12),
    default=None,
    help="Smallest face to detect, in pixels [default: 20].",
)
@json_option
@handle_errors
def enroll(
    photo_dir: Path,
    gallery: Path,
    model: str | None,
    weights: Path | None,
    device: str,
    min_face_size: int | None,
    as_json: bool,
) -> None:
    """Enroll the people in PHOTO_DIR: one sub-folder per person, or image files named after people.

    Photos already in the gallery are skipped, so re-running after adding photos is cheap.
    Exits 1 when some file could not be read (the others are enrolled).
    """
    rec = _recognizer(gallery, weights, device, model, min_face_size=min_face_size)
    report = rec.enroll(photo_dir)
    if rec.model_note:
        click.echo(rec.model_note, err=True)
    _emit(as_json, report.to_dict(), _enroll_text(report))
    if report.failed:
        sys.exit(1)


def _enroll_text(report: EnrollReport) -> str:
    lines = [
        f"enrolled {report.faces_added} faces of {len(report.added)} people into {report.gallery} (model "
        f"{report.model})"
    ]
    lines += [f"  {name}: {count}" for name, count in report.added.items()]
    for title, items in (("skipped", report.skipped), ("could not read", report.failed)):
        if items:
            lines.append(f"{title} {len(items)} photo{'s' if len(items) != 1 else ''}:")
            lines += [f"  {item.path}: {item.reason}" for item in items]
    lines.append(f"gallery now holds {report.people_total} people, {report.faces_total} faces")
    return "\n".join(lines)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@gallery_option
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    help="Cosine similarity needed to name a face, instead of the calibrated operating point.",
)
@click.option(
    "--max-false-accept",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Share of strangers that may be named, turned into this gallery's threshold [default: 0.05].",
)
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Candidates listed per face.")
@click.option(
    "--annotate",
    "annotate_dir",
    type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
    default=None,
    help="Write copies of the images with boxes and names drawn into this folder.",
)
@model_options
@click.option(
    "--min-face-size",
    type=click.IntRange(min=12),
    default=None,
    help="Smallest face to detect, in pixels [default: 20].",
)
@json_option
@handle_errors
def identify(
    paths: tuple[Path, ...],
    gallery: Path,
    threshold: float | None,
    max_false_accept: float | None,
    top_k: int,
    annotate_dir: Path | None,
    weights: Path | None,
    device: str,
    min_face_size: int | None,
    as_json: bool,
) -> None:
    """Name every face in the given image files and folders ('unknown' below the threshold).

    With --json, one JSON object per image. Exits 1 when some input could not be read.
    """
    rec = _recognizer(gallery, weights, device, min_face_size=min_face_size)
    failed = 0
    results = rec.identify_paths(
        paths, threshold=threshold, top_k=top_k, annotate_dir=annotate_dir, max_false_accept=max_false_accept
    )
    # Closed on the way out (Ctrl-C included): its background workers stop before the process does.
    try:
        for n, result in enumerate(results):
            if n == 0 and not as_json and result.operating_point:
                click.echo(f"facerec: operating point: {result.operating_point}", err=True)
            if result.error is not None:
                failed += 1
                click.echo(f"facerec: error: {result.error}", err=True)
                if as_json:
                    click.echo(_json(result.to_dict()))
                continue
            if as_json:
                click.echo(_json(result.to_dict()))
            elif not result.faces:
                click.echo(f"{result.image}: no faces")
            for face in result.faces if not as_json else ():
                box = ",".join(str(round(v)) for v in face.box)
                limit = "nobody can be named" if result.threshold is None else f"{result.threshold:.3f}"
                if face.name == "unknown" and face.candidates:
                    best = face.candidates[0]
                    detail = f"closest {best.name} {best.similarity:.3f}, score {best.score:.3f} < {limit}"
                elif face.similarity is not None:
                    detail = f"similarity {face.similarity:.3f}, score {face.match_score:.3f} >= {limit}"
                else:
                    detail = "gallery is empty"
                click.echo(f"{result.image}: {face.name} ({detail}) box {box}")
    finally:
        results.close()
    rec.close()
    if failed:
        sys.exit(1)


@main.command()
@gallery_option
@json_option
@handle_errors
def people(gallery: Path, as_json: bool) -> None:
    """List the enrolled people and how many faces each has."""
    from . import admin

    counts = admin.people(gallery)
    payload = {"gallery": str(gallery), "people": [{"name": n, "faces": c} for n, c in counts.items()]}
    width = max((len(n) for n in counts), default=0)
    text = "\n".join(f"{n:<{width}}  {c}" for n, c in counts.items()) or "no people enrolled"
    _emit(as_json, payload, text)


@main.command()
@click.argument("name")
@gallery_option
@json_option
@handle_errors
def forget(name: str, gallery: Path, as_json: bool) -> None:
    """Remove person NAME and all their face vectors from the gallery."""
    from . import admin
    from .config import Settings

    removed = admin.forget(gallery, name, Settings.from_env())
    _emit(
        as_json,
        {"name": name, "faces_removed": removed},
        f"forgot {name} ({removed} face{'s' if removed != 1 else ''})",
    )


@main.command()
@click.argument("photo_dir", type=click.Path(path_type=Path))
@gallery_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the groups, the contact sheet and the cache go [default: PHOTO_DIR/.facerec-cluster].",
)
@click.option(
    "--min-faces",
    type=click.IntRange(min=2),
    default=3,
    show_default=True,
    help="Smallest group; faces in smaller ones are left unclustered.",
)
@click.option(
    "--cut",
    type=click.FloatRange(-1, 1),
    default=None,
    help="Cosine similarity two groups need on average to merge [default: the model's measured cut].",
)
@click.option(
    "--model",
    type=click.Choice(sorted(MODELS)),
    default="dlib-resnet",
    show_default=True,
    help="Embedding model when the gallery does not exist yet (an existing gallery uses its own).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@json_option
@handle_errors
def cluster(
    photo_dir: Path,
    gallery: Path,
    out_dir: Path | None,
    min_faces: int,
    cut: float | None,
    model: str,
    device: str,
    as_json: bool,
) -> None:
    """Group the faces of the photos in PHOTO_DIR by person, naming those the gallery knows.

    Writes a contact sheet (an HTML page) and one folder of face crops per group; name a group with
    `facerec name GROUP_ID NAME`. Re-running on a grown folder keeps the group ids and embeds only new photos.
    """
    from .discover import cluster_photos

    rec = _recognizer(gallery, device=device, model=model)
    run = cluster_photos(rec.session, photo_dir, out=out_dir, cut=cut, min_faces=min_faces)
    result = run.result
    lines = [
        f"{result.photos} photos: {len(result.clusters)} groups, {len(result.known)} known people, "
        f"{len(result.unclustered)} faces in no group (cut {run.cut:.3f}, at least {min_faces} faces a group)"
    ]
    lines += [f"  {c.id}: {c.size} faces" for c in result.clusters]
    lines += [f"  {k.name} (in the gallery): {len(k.faces)} faces" for k in result.known]
    if result.problems:
        lines.append(f"left out {len(result.problems)} photo{'s' if len(result.problems) != 1 else ''}:")
        lines += [f"  {p.image}: {p.reason}" for p in result.problems]
    lines.append(f"contact sheet: {run.sheet}")
    if result.clusters:
        lines.append(f"name a group: facerec name {result.clusters[0].id} NAME --out {run.out} --gallery {gallery}")
    _emit(as_json, run.to_dict(), "\n".join(lines))


@main.command()
@click.argument("group_id")
@click.argument("name")
@gallery_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The folder `facerec cluster` wrote (PHOTO_DIR/.facerec-cluster unless --out was given).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@json_option
@handle_errors
def name(group_id: str, name: str, gallery: Path, out_dir: Path, device: str, as_json: bool) -> None:
    """Enroll the faces of group GROUP_ID (from `facerec cluster`) as NAME, joining a person of that name."""
    from .discover import name_group, state_model

    rec = _recognizer(gallery, device=device, model=state_model(out_dir))
    report = name_group(rec.session, out_dir, group_id, name)
    text = (
        f"enrolled {report.added} faces of {group_id} as {name}"
        + (f" ({report.already} were enrolled already)" if report.already else "")
        + f"; gallery now holds {report.people_total} people, {report.faces_total} faces"
    )
    text += "".join(f"\n  skipped {why}" for why in report.skipped)
    _emit(as_json, report.to_dict(), text)


@main.command()
@click.argument("old")
@click.argument("new")
@gallery_option
@json_option
@handle_errors
def rename(old: str, new: str, gallery: Path, as_json: bool) -> None:
    """Rename person OLD to NEW (NEW must not exist yet: to join two people, use merge)."""
    _rename(old, new, gallery, as_json, merge=False)


@main.command()
@click.argument("source")
@click.argument("target")
@gallery_option
@json_option
@handle_errors
def merge(source: str, target: str, gallery: Path, as_json: bool) -> None:
    """Merge person SOURCE into TARGET: every face of SOURCE becomes TARGET's."""
    _rename(source, target, gallery, as_json, merge=True)


def _rename(old: str, new: str, gallery: Path, as_json: bool, *, merge: bool) -> None:
    from . import admin
    from .config import Settings

    moved = admin.rename(gallery, old, new, Settings.from_env(), merge=merge)
    faces = f"{moved} face{'s' if moved != 1 else ''}"
    text = f"merged {old} into {new} ({faces})" if merge else f"renamed {old} to {new} ({faces})"
    _emit(as_json, {"from": old, "to": new, "faces": moved, "merged": merge}, text)


@main.command()
@click.argument("photo", type=click.Path(path_type=Path))
@click.option("--not", "not_name", required=True, help="The person this face is not.")
@gallery_option
@json_option
@handle_errors
def reject(photo: Path, not_name: str, gallery: Path, as_json: bool) -> None:
    """Say that the face PHOTO is taken for (or its one face) is not NOT: it, and faces nearly identical to
    it, are never named NOT again. Kept until `facerec forget NOT`, across adapt and rollback."""
    rec = _recognizer(gallery)
    report = rec.reject(photo, not_name)
    _emit(
        as_json,
        report.to_dict(),
        f"{photo}: the face at {','.join(str(round(v)) for v in report.box)} (named {report.was_named}) is not "
        f"{not_name}; {report.vetoes} face{'s' if report.vetoes != 1 else ''} vetoed for {not_name}",
    )


@main.command()
@click.option(
    "--strangers",
    "folder",
    type=click.Path(path_type=Path),
    required=True,
    help="Photos from the camera or source the gallery serves, of people who are not enrolled.",
)
@gallery_option
@json_option
@handle_errors
def calibrate(folder: Path, gallery: Path, as_json: bool) -> None:
    """Calibrate the gallery's operating points on your own strangers instead of the shipped LFW faces.

    Photos in the style the gallery will see (camera, resolution, light) hold the asked-for false-accept
    rate where LFW's do not; 2,500 faces or more are best. Kept in the gallery folder; run again to replace.
    """
    from .cohort import build_strangers

    rec = _recognizer(gallery)
    report = build_strangers(rec.session, folder)
    text = (
        f"calibrated {gallery} on {report.faces} faces of {report.photos} photos in {folder} "
        f"({report.normalisation} normalise scores, {report.calibration} set thresholds)"
    )
    text += "".join(f"\n  left out {problem}" for problem in report.problems)
    if report.warning:
        text += f"\nwarning: {report.warning}"
    _emit(as_json, report.to_dict(), text)


@main.command()
@gallery_option
@click.option(
    "--max-false-accept",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="The operating point to examine [default: the photo one, 0.05].",
)
@json_option
@handle_errors
def check(gallery: Path, max_false_accept: float | None, as_json: bool) -> None:
    """Examine the gallery with its own photos: expected accuracy, strangers' false accepts, suspect photos.

    Each face is identified with itself left out. Flags faces closer to another person than to their own
    (a wrong label?), people with one photo, and near copies. Exits 0 whatever it finds.
    """
    from .check import check_gallery

    rec = _recognizer(gallery)
    report = check_gallery(rec.gallery, rec.policy(max_false_accept=max_false_accept))
    rec.close()

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{report.people} people, {report.faces} faces; operating point: {report.operating_point}",
        f"  known faces named right, each left out: {rate(report.known_accuracy)} ({report.known_faces} faces)",
        f"  faces named as somebody else when their person is left out: {rate(report.stranger_false_accepts)}",
    ]
    lines += [f"  {f.kind}: {f.person}: {f.source}: {f.detail}" for f in report.flags] or ["  nothing flagged"]
    _emit(as_json, report.to_dict(), "\n".join(lines))


@main.command()
@gallery_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@json_option
@handle_errors
def info(gallery: Path, device: str, as_json: bool) -> None:
    """Show the gallery, its model, thresholds, counts, and the versions in use."""
    from . import admin
    from .config import Settings

    data = admin.info(gallery, Settings.from_env(), device)
    lines = [f"{key}: {value}" for key, value in data.items() if key not in ("versions", "adapted")]
    if data["adapted"]:
        adapted = data["adapted"]
        lines.append(
            f"adapted: {adapted['created']} on {adapted['people']} people, new-people accuracy "
            f"{adapted['before']['new_people']:.4f} -> {adapted['after']['new_people']:.4f}, general check "
            f"{adapted['before']['general']:.4f} -> {adapted['after']['general']:.4f}; base {adapted['base_weights']}"
        )
        if adapted.get("camera"):  # taught a camera (adapt --target): what it was measured to be
            from .camera import CameraSummary

            target = CameraSummary(**adapted["camera"]["target"])
            joined = adapted["camera"].get("views", {}).get("used")
            lines.append(
                f"adapted to the camera of {target.source}: {target.line()}"
                + ("; faces joined with their view as this camera shows them" if joined else "")
            )
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    _emit(as_json, data, "\n".join(lines))


@main.command()
@click.option(
    "--source", default="0", show_default=True, help="Camera index, video file, or stream URL (rtsp://, http://)."
)
@gallery_option
@click.option("--no-window", is_flag=True, help="Do not show a window (always the case without a display).")
@click.option(
    "--record",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the annotated video here (.mp4).",
)
@click.option(
    "--events",
    "events_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Append one JSON line per event (a track appears, a track leaves) to this file.",
)
@click.option(
    "--realtime", is_flag=True, help="Pace a video file at its own frame rate instead of as fast as possible."
)
@click.option(
    "--threshold", type=click.FloatRange(-1, 1), default=None, help="Cosine similarity needed to name a face."
)
@click.option(
    "--max-false-accept",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Share of strangers passing by that may be named [default: 0.005].",
)
@click.option(
    "--min-face-size",
    type=click.IntRange(min=12),
    default=40,
    show_default=True,
    help="Smallest face to find, in pixels of the frame (sets how much frames are shrunk for detection).",
)
@click.option(
    "--detect-every",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Run the detector on every N-th frame.",
)
@click.option(
    "--reconnect-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to keep reconnecting to a lost live source before giving up.",
)
@click.option(
    "--enroll", "enroll_name", default=None, help="Capture good frames of the one face in view and enroll them as NAME."
)
@model_options
@json_option
@handle_errors
def watch(
    source: str,
    gallery: Path,
    no_window: bool,
    record: Path | None,
    events_file: Path | None,
    realtime: bool,
    threshold: float | None,
    max_false_accept: float | None,
    min_face_size: int,
    detect_every: int,
    reconnect_timeout: float,
    enroll_name: str | None,
    weights: Path | None,
    device: str,
    as_json: bool,
) -> None:
    """Name the people in a camera, video file or stream, live; `q` or Esc closes the window.

    Ends with a summary (frames, people seen and for how long, processing rate). Exit code 2 when the
    source cannot be opened, 1 when a live source is lost for longer than --reconnect-timeout.
    """
    from .stream import FrameSource, run_watch

    rec = _recognizer(gallery, weights, device)
    status = lambda message: click.echo(f"facerec: {message}", err=True)
    if enroll_name is not None:
        added = rec.enroll_from_video(enroll_name, source, on_status=status)
        if rec.model_note:
            click.echo(rec.model_note, err=True)
        _emit(as_json, {"name": enroll_name, "faces_added": added}, f"enrolled {added} frames of {enroll_name}")
        return
    _ = rec.gallery  # no gallery or the wrong model: say so before opening the camera
    frames = FrameSource(source, realtime=realtime, reconnect_timeout=reconnect_timeout, on_status=status)
    results = rec.watch(
        frames,
        threshold=threshold,
        max_false_accept=max_false_accept,
        min_face=min_face_size,
        detect_every=detect_every,
    )
    if not as_json:
        click.echo(
            f"facerec: operating point: {rec.policy(threshold, video=True, max_false_accept=max_false_accept).source}",
            err=True,
        )
    summary = run_watch(
        results,
        frames.fps,
        window=not no_window,
        record=record,
        events_file=events_file,
        on_frame=(lambda result: click.echo(_json(result.to_dict()))) if as_json else None,
    )
    _emit(as_json, summary.to_dict(), _watch_text(summary))


def _watch_text(summary: WatchSummary) -> str:
    lines = [
        f"{summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} frames/s), "
        f"{summary.faces} face detections, {summary.tracks} tracks"
    ]
    lines += [f"  {name}: {seconds:.1f} s" for name, seconds in summary.people.items()]
    if summary.unknown_tracks:
        lines.append(f"  unknown: {summary.unknown_tracks} track(s)")
    return "\n".join(lines)


@main.command()
@gallery_option
@click.option(
    "--photos",
    "photo_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Train on this labelled photo folder (enroll layout) instead of the gallery's faces.",
)
@click.option(
    "--lfw",
    "lfw_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="LFW folder (with pairs.txt) for the general check; without it, some people are held back instead.",
)
@click.option(
    "--target",
    default=None,
    metavar="PATH",
    help="Teach the model this camera: a folder of its photos, a video file or a stream (unlabelled); "
    "its faces are measured and their damage is done to the gallery's photos.",
)
@click.option(
    "--face-size",
    type=click.FloatRange(4, 1000),
    default=None,
    metavar="PX",
    help="The camera's faces hold this many pixels across (replaces what --target measured).",
)
@click.option("--grey", is_flag=True, default=None, help="The camera gives grey faces (infrared at night).")
@click.option("--noise", type=click.FloatRange(0, 100), default=None, help="The camera's noise, in grey levels.")
@click.option("--jpeg", type=click.IntRange(1, 100), default=None, metavar="Q", help="The camera's JPEG quality.")
@click.option(
    "--views",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="With a camera: store each enrolled face joined with its view as the camera would show it "
    "(auto: when that identifies held-out photos better).",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 200),
    default=None,
    help="Most epochs to train (early stopping may end sooner)  [default: 15; 4 for a camera]",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.05, 0.9),
    default=0.3,
    show_default=True,
    help="Share of each person's photos held out from training, to decide with.",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Largest drop of the general check a kept model may cause.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Where to train."
)
@click.option("--dry-run", is_flag=True, help="Train and measure, but keep nothing.")
@click.option("--rollback", is_flag=True, help="Return the gallery to its base model and re-embed it.")
@json_option
@handle_errors
def adapt(
    gallery: Path,
    photo_dir: Path | None,
    lfw_dir: Path | None,
    target: str | None,
    face_size: float | None,
    grey: bool | None,
    noise: float | None,
    jpeg: int | None,
    views: str,
    epochs: int | None,
    holdout: float,
    max_drop: float,
    device: str,
    dry_run: bool,
    rollback: bool,
    as_json: bool,
) -> None:
    """Fine-tune the embedder to the gallery's people or to a camera; keep it only when held-out photos prove it
    better.

    Without --target: fine-tuned to the gallery's people in their own photos. With --target (or --face-size,
    --grey, --noise, --jpeg): taught the camera by distillation, the base model on each clean gallery photo
    teaching a copy that sees the photo as the camera would show it; and each enrolled face stored joined with
    its view as the camera would show it (--views), faces enrolled later too.

    Reports, before and after, identification of held-out photos (as the camera shows them, with --target)
    and a general check (LFW pairs with --lfw, else people held back from training). A kept model is saved
    in the models folder and the gallery is re-embedded with it; --rollback undoes that. Exits 0 whether or
    not the model was kept (see "kept" in --json).
    """
    from .adapt import AdaptOptions, CameraRequest
    from .camera import CameraSummary
    from .distil import DistilOptions

    rec = _recognizer(gallery, device=device)
    if rollback:
        done = rec.rollback()
        _emit(
            as_json,
            done.to_dict(),
            f"gallery {done.gallery} is back on {done.model} ({done.weights}): "
            f"{done.restored} faces restored, {done.re_embedded} embedded again",
        )
        return
    described = (face_size, grey, noise, jpeg)
    camera = (
        CameraRequest(target, *described, views=views)
        if target is not None or any(v is not None for v in described)
        else None
    )
    options = AdaptOptions(holdout=holdout, max_drop=max_drop, **({"epochs": epochs} if epochs and not camera else {}))
    distil_options = DistilOptions(**({"epochs": epochs} if epochs else {}))
    report = rec.adapt(
        photo_dir, lfw=lfw_dir, options=options, camera=camera, distil_options=distil_options, dry_run=dry_run
    )
    verdict = "kept" if report.kept else "not kept"
    lines = [
        f"adapted {report.model} on {report.people} people from {report.source} ({report.device}, "
        f"{report.seconds:.0f} s, "
        f"{report.epochs_run} epochs, best {report.best_epoch})",
    ]
    if report.camera:
        lines += [
            f"  camera:  {CameraSummary(**report.camera['target']).line()}",
            f"  gallery: {CameraSummary(**report.camera['gallery']).line()}",
        ]
        joined = report.camera["views"]
        clean_val, joined_val = joined["decided_on"]
        lines.append(
            f"  views:   faces {'' if joined['used'] else 'not '}joined with their camera view "
            f"(early-stopping photos with the base model: clean {clean_val:.4f}, joined {joined_val:.4f})"
        )
    held_out = "held-out photos, as the camera" if report.camera else "new people, held-out photos"
    lines += [
        f"  {'':<34}{'before':>8}{'after':>8}",
        f"  {held_out:<34}{report.before.new_people:>8.4f}{report.after.new_people:>8.4f}"
        f"   ({report.gate_photos} photos)",
        *(
            [
                f"  {'  named right, operating point':<34}{report.before.named:>8.4f}{report.after.named:>8.4f}"
                "   (set on the camera's own faces, as the gallery will be)"
            ]
            if report.before.named is not None and report.after.named is not None
            else []
        ),
        f"  {'general check':<34}{report.before.general:>8.4f}{report.after.general:>8.4f}   ({report.general_check})",
    ]
    if report.before.clean_gallery is not None and report.after.clean_gallery is not None:
        lines.append(
            f"  {'the gallery clean, leave-one-out':<34}{report.before.clean_gallery:>8.4f}"
            f"{report.after.clean_gallery:>8.4f}   (each enrolled photo against the others, as stored)"
        )
    lines.append(f"{verdict}: {report.reason}")
    if report.camera and report.camera.get("operating_points"):
        lines.append(f"operating points: {report.camera['operating_points']}")
    if report.checkpoint:
        lines.append(
            f"checkpoint {report.checkpoint}; gallery re-embedded (undo: facerec adapt --rollback --gallery {gallery})"
        )
    _emit(as_json, report.to_dict(), "\n".join(lines))


def _pipeline(model: str, weights: Path | None, device: str) -> FacePipeline:
    """For commands that need a model but no gallery (verify, eval): 'auto' says which it chose and why."""
    from .pipeline import FacePipeline

    pipeline = FacePipeline.load(model, weights=weights, device=device, progress=sys.stderr.isatty())
    if pipeline.model_note:
        click.echo(pipeline.model_note, err=True)
    return pipeline


model_choice = click.option(
    "--model",
    type=click.Choice(["auto", *sorted(MODELS)]),
    default="auto",
    show_default=True,
    help="Embedding model (auto: vggface2 when its weights can be had, else dlib-resnet).",
)


@main.command()
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@model_choice
@model_options
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    help="Cosine similarity needed for 'same' [default: the model's verification threshold].",
)
@json_option
@handle_errors
def verify(
    image_a: Path, image_b: Path, model: str, weights: Path | None, device: str, threshold: float | None, as_json: bool
) -> None:
    """Say whether the main faces of IMAGE_A and IMAGE_B are the same person (exit 0 either way)."""
    from .verify import verify as verify_photos

    result = verify_photos(image_a, image_b, _pipeline(model, weights, device), threshold=threshold)
    verdict = "same person" if result.same else "different people"
    _emit(
        as_json,
        result.to_dict(),
        f"{verdict}: similarity {result.similarity:.3f}, threshold {result.threshold:.3f} ({result.model})",
    )


@main.group(name="eval")
def evaluate() -> None:
    """Measure accuracy on a standard benchmark."""


@evaluate.command(name="lfw")
@click.argument("lfw_dir", type=click.Path(path_type=Path, file_okay=False), envvar="FACEREC_LFW")
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Pairs file [default: LFW_DIR/pairs.txt].",
)
@model_choice
@model_options
@click.option(
    "--plot", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write the ROC curve to this PNG."
)
@click.option("--no-cache", is_flag=True, help="Embed every photo again instead of reusing cached vectors.")
@json_option
@handle_errors
def eval_lfw(
    lfw_dir: Path,
    pairs_file: Path | None,
    model: str,
    weights: Path | None,
    device: str,
    plot: Path | None,
    no_cache: bool,
    as_json: bool,
) -> None:
    """The standard LFW 10-fold verification protocol on LFW_DIR (or $FACEREC_LFW).

    Reports mean accuracy and its standard deviation, the threshold chosen, TAR at FAR=1e-3, and how
    many faces were not found. Embeddings are cached, so a re-run is fast.
    """
    from dataclasses import asdict

    from .evaluate import plot_roc, roc_curve
    from .lfw import evaluate_pairs

    pipeline = _pipeline(model, weights, device)
    embedder = pipeline.embedder
    report = evaluate_pairs(lfw_dir, pairs_file, pipeline, use_cache=not no_cache, progress=sys.stderr.isatty())
    result = report.result
    if plot is not None:
        far, tar, _ = roc_curve(report.scores, report.same)
        plot_roc({f"{embedder.spec.name} (acc {result.accuracy:.4f})": (far, tar)}, plot, "LFW verification ROC")
    payload = {
        "model": embedder.spec.name,
        "pairs_file": str(report.pairs_file),
        "photos": report.photos,
        "faces_not_found": report.missed,
        "flip": embedder.spec.flip,
        **asdict(result),
    }
    text = [
        f"LFW 10-fold ({embedder.spec.name}, {result.pairs} pairs): accuracy {result.accuracy:.4f} ± "
        f"{result.accuracy_std:.4f}",
        f"threshold (cosine similarity): {result.threshold:.3f}",
        f"TAR at FAR=1e-3: {result.tar_at_far['1e-3']:.4f}; AUC {result.auc:.5f}",
        f"faces not found: {report.missed} of {report.photos} photos (aligned with the mean LFW landmarks instead)",
    ]
    if plot is not None:
        text.append(f"ROC curve: {plot}")
    _emit(as_json, payload, "\n".join(text))


if __name__ == "__main__":  # pragma: no cover
    main()
