"""Background prefetching: decode the next videos while the model works on the current one."""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar, Union

T = TypeVar("T")
R = TypeVar("R")


def prefetch(
    items: Iterable[T],
    fn: Callable[[T], R],
    workers: int = 2,
    depth: int = 4,
) -> Iterator[tuple[T, Union[R, BaseException]]]:
    """Run ``fn`` over ``items`` in ``workers`` threads; yield ``(item, result)`` in INPUT order.

    - At most ``depth`` items are taken from ``items`` and not yet yielded (bounded memory):
      ``items`` is read lazily, so it may be endless.
    - An exception raised by ``fn`` is yielded as the result (one bad video does not end a
      run); exceptions raised by ``items`` itself propagate.
    - Closing the generator early (``break``, ``.close()``, garbage collection) cancels work
      not yet started and waits for the running calls, so no thread outlives it.
    """
    if workers < 1:
        raise ValueError(f"prefetch workers must be >= 1, got {workers}")
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    return _prefetch(iter(items), fn, workers, depth)


def _prefetch(
    it: Iterator[T], fn: Callable[[T], R], workers: int, depth: int
) -> Iterator[tuple[T, Union[R, BaseException]]]:
    pending: collections.deque[tuple[T, Future]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=min(workers, depth), thread_name_prefix="vamba-prefetch")
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < depth:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, pool.submit(fn, item)))
            if not pending:
                return
            item, future = pending.popleft()
            exc = future.exception()  # waits; BaseException from fn comes back here
            yield item, (exc if exc is not None else future.result())
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
