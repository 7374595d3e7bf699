"""Independent tasks (the folds of a cross-validation, the runs of a study) run serially, in
local worker processes or on a Ray cluster, with results handed back in task order.

Each task is a picklable ``fn(*args)``; workers bound torch's CPU threads to their share of
the cores so they do not oversubscribe. Folds are seeded by fold number, so the executor
changes where a fold runs, not what it computes (same threads, same numbers)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lipoclass.choices import EXECUTORS
from lipoclass.errors import LipoclassError

__all__ = ["EXECUTORS", "ExecutorConfig", "run_tasks"]


@dataclass(frozen=True)
class ExecutorConfig:
    """``executor`` "local" with ``workers`` processes (1: in this process) or "ray" (a local
    Ray instance, or the cluster at ``address``); ``threads``: torch threads per worker
    (None: the cores divided by the workers); ``gpu``: on Ray, give each task one GPU when
    the cluster has GPUs."""

    executor: str = "local"
    workers: int = 1
    address: str | None = None
    threads: int | None = None
    gpu: bool = False

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        if int(self.workers) < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.address is not None and self.executor != "ray":
            raise ValueError("an address applies to executor 'ray' only")

    @property
    def parallel(self) -> bool:
        return self.executor == "ray" or self.workers > 1


def _set_threads(n: int) -> None:
    """Worker initializer: bound torch's CPU threads."""
    import torch

    torch.set_num_threads(max(1, n))


def _call_with_threads(n: int | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    if n is not None:
        _set_threads(n)
    return fn(*args)


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    config: ExecutorConfig | None = None,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(*t) for t in tasks]`` on the configured executor; ``on_done(i, result)`` is
    called as each task finishes (progress). The first exception propagates."""
    cfg = config or ExecutorConfig()
    results: list[Any] = [None] * len(tasks)

    def done(i: int, r: Any) -> None:
        results[i] = r
        if on_done is not None:
            on_done(i, r)

    if not cfg.parallel or len(tasks) <= 1:
        for i, t in enumerate(tasks):
            done(i, fn(*t))
        return results
    if cfg.executor == "ray":
        _run_ray(fn, tasks, cfg, done)
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(cfg.workers, len(tasks))
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"),
        initializer=_set_threads, initargs=(threads,),
    )  # fmt: skip
    try:
        futures = {pool.submit(fn, *t): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures):
            done(futures[fut], fut.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def _run_ray(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    cfg: ExecutorConfig,
    done: Callable[[int, Any], None],
) -> None:
    try:
        import ray
    except ImportError:
        raise LipoclassError("--executor ray needs Ray: pip install 'lipoclass[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            if cfg.address:
                ray.init(address=cfg.address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(cfg.workers, 2), include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"--address {cfg.address}" if cfg.address else "local Ray"
            raise LipoclassError(f"{where}: cannot start or reach Ray ({exc})") from None
        started = True
    try:
        remote = ray.remote(_call_with_threads)
        gpus = 1 if cfg.gpu and ray.cluster_resources().get("GPU", 0) > 0 else 0
        opts = {"num_cpus": 1, "num_gpus": gpus}
        refs = {remote.options(**opts).remote(cfg.threads or 1, fn, t): i
                for i, t in enumerate(tasks)}  # fmt: skip
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done(refs[ready[0]], ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()
