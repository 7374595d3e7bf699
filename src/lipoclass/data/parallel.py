"""One chunked process-pool map for the per-particle stages (``prepare``, ``compute_features``).

Per-particle work (decode + a few NumPy passes) is far too small for one task per particle,
so the items are cut into chunks (about eight per worker, so a slow chunk does not leave a
core idle), each chunk runs in a worker process, and results come back in input order.
Warnings raised in a worker would be lost (or printed from the child), so every chunk records
them and the caller re-issues one summary with ``warn_collected``. Small inputs run in this
process: starting workers costs more than it saves below a few hundred particles.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["parallel_map", "warn_collected"]

T = TypeVar("T")
R = TypeVar("R")


def _run_chunk(args: tuple[Callable[[Any], Any], Sequence[Any]]) -> tuple[list[Any], list[str]]:
    """``fn`` over one chunk, with the warnings it raised (as messages)."""
    fn, items = args
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [fn(item) for item in items]
    return results, [str(w.message) for w in caught]


def _progress(total: int, desc: str, enabled: bool) -> Any:  # pragma: no cover - cosmetic
    from tqdm import tqdm

    show = enabled and total >= 2000 and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", disable=not show)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int | None = None,
    *,
    desc: str = "",
    progress: bool = True,
    min_items: int = 400,
    min_chunk: int = 32,
) -> tuple[list[R], list[str]]:
    """``[fn(x) for x in items]`` in order, in ``workers`` processes (default: CPU count)
    when there are at least ``min_items`` items, else in this process.

    ``fn`` must be picklable (a module-level function, or ``functools.partial`` of one).
    Returns (results, messages of the warnings ``fn`` raised). A tqdm bar (``desc``) is shown
    for 2000 items or more, only when ``progress`` and stderr is a terminal. Exceptions
    raised by ``fn`` propagate (the first one, in input order)."""
    n = len(items)
    nw = workers if workers is not None else (os.cpu_count() or 1)
    if nw < 1:
        raise ValueError(f"workers must be >= 1, got {nw}")
    if nw == 1 or n < min_items:
        res, msgs = _run_chunk((fn, items))
        return res, msgs
    size = max(min_chunk, n // (nw * 8))
    chunks = [(fn, items[i : i + size]) for i in range(0, n, size)]
    results: list[R] = []
    messages: list[str] = []
    bar = _progress(n, desc, progress)
    try:
        with ProcessPoolExecutor(max_workers=nw) as ex:
            for res, msgs in ex.map(_run_chunk, chunks):
                results.extend(res)
                messages.extend(msgs)
                bar.update(len(res))
    finally:
        bar.close()
    return results, messages


def warn_collected(messages: Sequence[str], stacklevel: int = 3) -> None:
    """Re-issue collected warning ``messages`` as one warning: the first message plus how
    many more there were (``stacklevel`` 3 points at the caller of the function calling
    this)."""
    if messages:
        more = f" (and {len(messages) - 1} more warning(s))" if len(messages) > 1 else ""
        warnings.warn(f"{messages[0]}{more}", stacklevel=stacklevel)
