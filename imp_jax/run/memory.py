"""Whether a run's arrays fit in the host's memory, checked before they are allocated.

An allocation that the host cannot serve does not always fail cleanly: under an address-space
limit (``ulimit -v``) XLA:CPU's threads can block forever instead. So before a run allocates its
train state on a CPU, :func:`check_fits` compares what it needs at least (two copies of the
state: the one held and the one a step computes) with what the process may still allocate: the
address-space limit left over, the cgroup's memory limit left over, and the host's available
memory, whichever is smallest.
"""

from __future__ import annotations

import resource
from pathlib import Path

GIB = 2**30


def _read_int(path: str, key: str | None = None) -> int | None:
    """An integer from ``path``: the whole file, or the ``key:`` line (in kB, as /proc has)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    if key is None:
        return int(text) if text.strip().isdigit() else None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def headroom() -> tuple[int, str] | None:
    """The bytes this process may still allocate and the limit that says so, or None where no
    limit can be read."""
    limits = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    used = _read_int("/proc/self/status", "VmSize")
    if soft != resource.RLIM_INFINITY and used is not None:
        limits.append((soft - used, "the address-space limit (ulimit -v)"))
    cap, current = (_read_int("/sys/fs/cgroup/memory.max"),
                    _read_int("/sys/fs/cgroup/memory.current"))
    if cap is not None and current is not None:
        limits.append((cap - current, "the cgroup's memory limit"))
    available = _read_int("/proc/meminfo", "MemAvailable")
    if available is not None:
        limits.append((available, "the host's available memory"))
    return min(limits) if limits else None


def check_fits(state_bytes: int, what: str) -> None:
    """Raises MemoryError, naming the sizes and the limit, when two copies of a train state of
    ``state_bytes`` (described by ``what``) cannot be allocated."""
    room = headroom()
    needed = 2 * state_bytes
    if room is not None and needed > room[0]:
        raise MemoryError(f"{what} needs at least {needed / GIB:.2f} GiB (two copies of its "
                          f"{state_bytes / GIB:.2f} GiB train state), and {room[1]} leaves "
                          f"{max(room[0], 0) / GIB:.2f} GiB")
