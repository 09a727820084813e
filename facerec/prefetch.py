"""Overlapping the stages of a run over many photos.

Reading, decoding and detecting the next photos happens in background threads while the caller embeds and
searches or stores the current ones. PyTorch, OpenCV, Pillow and hashlib release the GIL in their kernels,
so every core works; bench/throughput.py measures the gain.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """The calling thread computes on `count` torch threads (at least one), restored on leaving. Torch's CPU
    thread count is a per-thread setting (OpenMP's), so it is the caller's own count that changes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def torch_threads_beside(busy: int) -> ContextManager[None]:
    """The calling thread computes on its torch thread count less `busy` threads working beside it (at least
    one): the cores are shared rather than oversubscribed."""
    import torch

    return torch_threads(torch.get_num_threads() - busy)


def prefetch(
    items: Iterable[Item], work: Callable[[Item], Result], *, workers: int = 2, depth: int = 8
) -> Generator[Result, None, None]:
    """work(item) for every item, in order, computed up to `depth` items ahead by `workers` threads.

    Each worker computes on one torch thread and, while this runs, the caller on its own count less the
    workers (`torch_threads_beside`; on 2 cores, every thread on both cores ran at 25 photos/s instead of 38).
    An exception raised by `work` is raised here, at its item. Leaving the loop early (break, an
    exception, Ctrl-C) cancels what has not started and waits for the items being worked on.
    """
    workers = max(1, workers)
    with (
        torch_threads_beside(workers),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facerec", initializer=_one_torch_thread) as pool,
    ):
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def batches(
    items: Iterable[Item], weight: Callable[[Item], float], *, budget: float, most: int
) -> Iterator[list[Item]]:
    """Consecutive items in lists of at most `most`; a list closes as soon as its weights reach `budget`,
    so an item that weighs a whole budget goes alone."""
    batch: list[Item] = []
    total = 0.0
    for item in items:
        batch.append(item)
        total += weight(item)
        if len(batch) >= most or total >= budget:
            yield batch
            batch, total = [], 0.0
    if batch:
        yield batch


def prefetch_batches(
    items: Iterable[Item],
    work: Callable[[list[Item]], list[Result]],
    *,
    weight: Callable[[Item], float],
    budget: float,
    most: int,
    workers: int = 2,
    depth: int = 4,
) -> Iterator[Result]:
    """`prefetch` over `batches` of the items: work(batch) gives one result per item of its batch, and
    they come one at a time, in order. `depth` counts batches; leaving early stops as `prefetch` does."""
    stage = prefetch(batches(items, weight, budget=budget, most=most), work, workers=workers, depth=depth)
    try:
        for results in stage:
            yield from results
    finally:
        stage.close()
