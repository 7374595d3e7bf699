"""How many CPU threads a training run uses when the config leaves it open.

On a small shared machine two busy-waiting OpenMP threads that must meet at every layer are
much slower than one thread when another process holds a core: each barrier waits for the
descheduled thread (measured on the 2-core reference machine, load average ~5.5: LipNet-4
bf16 at batch 32 trained at ~585 img/s with 1 thread and ~100 img/s with 2). So
``pick_threads`` gives all usable cores to an idle machine and one thread less per core that
other processes keep busy, never fewer than one. "Busy" comes from a 0.15 s probe of the
idle share in /proc/stat while this process sleeps (Linux; it also sees a hypervisor's steal
time; cached for 10 s), else from the 1-minute load average, which reacts slowly and still
counts this process's own training of the last minute."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

__all__ = ["busy_cores", "pick_threads", "torch_threads", "usable_cores"]

_PROBE: tuple[float, float] | None = None  # (monotonic time, busy cores)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_ticks() -> tuple[int, int] | None:
    """(idle + iowait ticks, all ticks) of the machine from /proc/stat, or None."""
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    v = [int(p) for p in parts[1:9]]  # user nice system idle iowait irq softirq steal
    return v[3] + v[4], sum(v)


def busy_cores(window: float = 0.15, max_age: float = 10.0) -> float | None:
    """Cores kept busy by other processes over the last ``window`` seconds (this process
    sleeps meanwhile), from /proc/stat; None where that is not readable. Cached."""
    global _PROBE
    now = time.monotonic()
    if _PROBE is not None and now - _PROBE[0] < max_age:
        return _PROBE[1]
    a = _cpu_ticks()
    if a is None:
        return None
    time.sleep(window)
    b = _cpu_ticks()
    if b is None or b[1] <= a[1]:
        return None
    idle = (b[0] - a[0]) / (b[1] - a[1])
    busy = (1.0 - idle) * (os.cpu_count() or 1)
    _PROBE = (time.monotonic(), busy)
    return busy


def pick_threads(cores: int | None = None, load: float | None = None) -> int:
    """Intra-op threads for a CPU run: ``cores - round(busy)`` clipped to [1, cores], where
    ``busy`` is what other processes use: ``load`` if given, else the /proc/stat probe
    (``busy_cores``), else the 1-minute load average."""
    n = usable_cores() if cores is None else max(1, int(cores))
    if load is None:
        load = busy_cores()
        if load is None:  # no /proc/stat: the load average (it also counts our own past work)
            try:
                load = os.getloadavg()[0]
            except (AttributeError, OSError):
                return n
    return max(1, min(n, n - round(max(0.0, float(load)))))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``: leave them), restoring the caller's
    setting afterwards. The one place training and inference set torch's thread count."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if int(n) != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if int(n) != before:
            torch.set_num_threads(before)
