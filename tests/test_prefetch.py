"""The background stages of enroll and identify: order, errors, early exit, thread budget, and what they mean
for enrollment (copies of one photo in flight at once are enrolled once)."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time

import pytest
import torch
from click.testing import CliRunner

from facerec.cli import main
from facerec.prefetch import prefetch


def slow_square(x: int) -> int:
    time.sleep(random.Random(x).uniform(0, 0.01))  # finish out of order
    return x * x


def test_results_come_in_order_and_ahead_of_the_consumer():
    started = []

    def work(x):
        started.append(x)
        return slow_square(x)

    seen = []
    for value in prefetch(range(40), work, workers=3, depth=5):
        seen.append(value)
        time.sleep(0.002)
        assert len(started) <= len(seen) + 5  # never more than `depth` ahead
    assert seen == [x * x for x in range(40)]


def test_an_error_is_raised_at_its_item():
    def work(x):
        if x == 7:
            raise ValueError("bad seven")
        return x

    got = []
    with pytest.raises(ValueError, match="bad seven"):
        for value in prefetch(range(20), work, workers=2, depth=4):
            got.append(value)
    assert got == list(range(7))


def test_leaving_early_stops_the_work_and_the_threads():
    calls = []
    before = threading.active_count()

    def work(x):
        calls.append(x)
        time.sleep(0.01)
        return x

    for value in prefetch(range(1000), work, workers=2, depth=4):
        if value == 3:
            break
    assert len(calls) < 12
    time.sleep(0.05)
    assert threading.active_count() == before


def test_workers_compute_on_one_torch_thread_and_the_caller_on_what_is_left():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        during = set()
        assert set(prefetch(range(6), lambda _: torch.get_num_threads(), workers=2)) == {1}
        for _ in prefetch(range(3), lambda x: x, workers=3):
            during.add(torch.get_num_threads())
        assert during == {1} and torch.get_num_threads() == 4
        for _ in prefetch(range(3), lambda x: x, workers=1):
            during.add(torch.get_num_threads())
        assert during == {1, 3} and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_copies_of_one_photo_in_flight_are_enrolled_once(tmp_path, shared, weights):
    """Two workers may decode two copies of a photo at once; one copy is enrolled, the others are skipped
    with the name they were enrolled under, and nothing is refused by the database."""
    photo = next((shared / "faces/known").glob("*/*.jpg"))
    for person in ("ann", "bob", "cid"):
        (tmp_path / "in" / person).mkdir(parents=True)
        for i in range(3):
            shutil.copy(photo, tmp_path / "in" / person / f"{i}.jpg")
    result = CliRunner().invoke(
        main,
        [
            "enroll",
            str(tmp_path / "in"),
            "--gallery",
            str(tmp_path / "g"),
            "--weights",
            str(weights),
            "--model",
            "vggface2",
            "--json",
        ],
    )
    assert result.exit_code == 0, (result.output, result.stderr)
    report = json.loads(result.stdout)
    assert report["faces_added"] == 1 and report["added"] == {"ann": 1}
    assert sorted(s["reason"] for s in report["skipped"]) == ["already enrolled as ann"] * 8
