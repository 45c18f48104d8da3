"""Keep freed CPU memory in the process: glibc otherwise hands each large freed block back to the system,
and the next forward pass's activations and logits fault back in a 4 KiB page at a time (on the 2-core hosts
of docs/results.md, sessions 15-16, half of the CPU time went to the kernel for seconds at a time and a
training step took about 0.8x as long with freed memory kept)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

MMAP_THRESHOLD = 32 * 2**20
"""Allocations below this come from the heap and are reused (glibc's upper bound for its adaptive one)."""
TRIM_THRESHOLD = 2**30
"""Free memory at the top of the heap kept before glibc gives it back."""
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
"""Where a container's memory limit is read (cgroup v2, then v1); "max" or a huge number: no limit."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_kept = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds, as ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do
    at start-up, unless the environment sets either. Every job (train, attack, analyze, reproduce) calls it;
    returns whether this process keeps freed memory (``False`` without glibc, e.g. on macOS)."""
    global _kept
    if not _kept and os.name == "posix" and not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library's, where it has one
        settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        _kept = mallopt is not None and all(mallopt(option, value) == 1 for option, value in settings)
    return _kept


def freed_memory_kept() -> bool:
    """Whether `keep_freed_memory` has set the thresholds in this process (for the hardware record)."""
    return _kept


def memory_limit_bytes(limits: Sequence[str] = CGROUP_LIMITS) -> int | None:
    """The CPU memory this process may use: the machine's, or its container's limit where that is lower
    (containers and CI runners see the host's memory); ``None`` where neither can be read."""
    try:
        memory: int | None = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        memory = None
    for path in limits:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            memory = int(text) if memory is None else min(memory, int(text))
    return memory
