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
from facerec.prefetch import batches, prefetch, prefetch_batches


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


def test_batches_close_at_the_budget_or_the_count():
    weights = [1, 1, 5, 1, 9, 0, 0, 0, 0, 1]
    assert list(batches(range(10), lambda i: weights[i], budget=4, most=3)) == [
        [0, 1, 2],  # 1 + 1 + 5 reaches the budget
        [3, 4],  # one heavy item closes its batch at once
        [5, 6, 7],  # light items: at most `most`
        [8, 9],  # the rest
    ]
    assert list(batches([], lambda i: 1, budget=4, most=3)) == []


def test_batched_results_come_one_by_one_in_order_and_leaving_early_stops_the_work():
    seen_batches = []

    def work(batch):
        seen_batches.append(list(batch))
        return [slow_square(x) for x in batch]

    out = list(prefetch_batches(range(50), work, weight=lambda x: x % 7, budget=10, most=4, workers=3, depth=3))
    assert out == [x * x for x in range(50)]
    assert sorted(x for b in seen_batches for x in b) == list(range(50)) and max(map(len, seen_batches)) == 4
    before = threading.active_count()
    calls = []
    stage = prefetch_batches(range(1000), lambda b: calls.extend(b) or b, weight=lambda x: 1, budget=5, most=5)
    for value in stage:
        if value == 7:
            break
    stage.close()
    assert len(calls) < 60
    time.sleep(0.05)
    assert threading.active_count() == before


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
