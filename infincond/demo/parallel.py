"""Task parallelism for building the Shapes world on a few CPU cores.

The world's networks are small: a step is hundreds of short operations, and splitting each one over
the cores (PyTorch's intra-op threads) gains little on 2 cores and collapses when the machine is busy
(every operation ends in a barrier that waits for a descheduled thread). Here each thread does whole
pieces of work with its own intra-op thread count instead: a step's batch split into shards computed
side by side (:class:`Shards`), and whole stages side by side (``build_world`` trains the teacher
beside the dual encoder). Every thread works on its own data and results are combined in a fixed order,
so the outcome never depends on timing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

#: Guards torch's global random generator: building a model seeds it and draws its initial weights,
#: which must not interleave with another thread doing the same.
GLOBAL_RNG_LOCK = threading.Lock()

#: Serialises saving models: a first ``save_pretrained`` imports modules lazily, and two threads importing
#: the same package for the first time at once can meet a half-initialised module.
SAVE_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generator seeded with ``seed`` and held by this thread for the block (a model's
    initial weights drawn there are the same whatever other threads do)."""
    with GLOBAL_RNG_LOCK:
        torch.manual_seed(seed)
        yield


def save_pretrained(folder, *parts) -> None:
    """``part.save_pretrained(folder)`` for a model and its processor, one thread at a time."""
    with SAVE_LOCK:
        for part in parts:
            part.save_pretrained(folder)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads in the calling thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def split_evenly(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering range(n), sizes differing by at most one."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


class Shards:
    """Runs one function per shard at once: shard 0 on the calling thread, the others on helper threads
    with the calling thread's intra-op thread count. Results come back in shard order.

    Use as a context manager (the helper threads end with it)."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        threads = torch.get_num_threads()
        self._pool = (ThreadPoolExecutor(n - 1, thread_name_prefix="infincond-shard", initializer=torch.set_num_threads,
                                         initargs=(threads,)) if n > 1 else None)

    def map(self, fn: Callable[[int], T]) -> list[T]:
        """``[fn(0), fn(1), ...]``, computed side by side."""
        futures = [self._pool.submit(fn, k) for k in range(1, self.n)] if self._pool is not None else []
        try:
            first = fn(0)
        finally:
            rest = [future.result() for future in futures]  # always joined, even when shard 0 failed
        return [first, *rest]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Shards:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sum_gradients(per_shard: Sequence[Sequence[torch.Tensor | None]], params: Sequence[torch.Tensor]) -> None:
    """Set each parameter's ``.grad`` to the sum of its shards' gradients, added in shard order (None
    where no shard reached it, as a single backward pass would leave it)."""
    for i, param in enumerate(params):
        parts = [grads[i] for grads in per_shard if grads[i] is not None]
        if not parts:
            param.grad = None
            continue
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        param.grad = total
