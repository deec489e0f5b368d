"""glibc malloc settings for processes that make views batch after batch (pretraining).

PyTorch's CPU tensors come from glibc ``malloc``, which serves blocks above its mmap
threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps them on ``free``. Making views
allocates the same large tensors again and again (two views of 64 x 4 x 224 x 224 float32
are 2 x 51 MiB), so every batch pays a page fault per 4 KiB page: about 0.18 ms per sample
per view on this project's 2-core CPU (``GLCNET_ALLOCATOR=system glcnet benchmark views``
against ``glcnet benchmark views``), as much as making the view itself.
:func:`keep_freed_memory` makes glibc serve every block from its heap and keep freed
memory for reuse (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD = 1 GiB``): the steady state has
no page faults; the cost is that the process's resident memory stays at its peak instead
of shrinking. So only the commands that make views call it: ``glcnet pretrain`` (its
DataLoader workers inherit it; an ``experiment`` process from its first pretraining on) and
the ``views`` and ``pretrain`` benchmarks; ``evaluate``, ``predict``, ``finetune`` and
``prepare`` leave malloc as it is. ``GLCNET_ALLOCATOR=system`` (or a non-glibc libc)
leaves it as it is everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>


def keep_freed_memory() -> bool:
    """Configure glibc malloc to reuse freed blocks; True when it took effect."""
    if os.environ.get("GLCNET_ALLOCATOR", "reuse") == "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): leave it
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
