"""Thread use of the per-sample CPU work (views), robust on a busy machine.

torch runs each operator over ``torch.get_num_threads()`` OpenMP threads, with a barrier
at its end. The CPU views (:mod:`glcnet.transforms.render_uint8`) run dozens of small operators
per sample; when other processes share the cores, every barrier waits for a descheduled
thread and the views collapse (measured: 68.6 ms/sample on 2 threads under load average
4.6 on 2 cores, against 2.6 ms on one thread). So that work runs on ONE intra-op thread
per Python thread, with the thread budget spent across samples instead
(:func:`for_each_sample`): no barrier per operator, only one join per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count.

    Local: the caller's setting (e.g. the training step's threads) is back on exit.
    """
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def for_each_sample(count: int, work: Callable[[Iterator[int]], None], workers: int | None = None) -> None:
    """Call ``work(indices)`` in ``workers`` threads (default: ``torch.get_num_threads()``)
    that share the sample indices ``0..count-1`` (each taken by exactly one thread, in
    order of demand), every thread on one torch intra-op thread.

    ``work`` must write only its own samples' outputs (e.g. ``out[i]``). The calling
    thread is one of the workers; exceptions propagate.
    """
    workers = max(1, min(torch.get_num_threads() if workers is None else workers, count))
    counter = itertools.count()  # next() is atomic under the GIL: dynamic load balance

    def indices() -> Iterator[int]:
        while (i := next(counter)) < count:
            yield i

    def run() -> None:
        with torch_threads(1):
            work(indices())

    with torch_threads(1):
        if workers == 1:
            work(indices())
            return
        with ThreadPoolExecutor(workers - 1) as pool:  # fresh threads: fork-safe (DataLoader workers)
            futures = [pool.submit(run) for _ in range(workers - 1)]
            work(indices())
            for f in futures:
                f.result()
