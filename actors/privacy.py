"""Kiosk-mode memory hygiene: freed memory is overwritten, so a visitor's pixels don't linger.

Python frees a frame's buffers when the last reference goes, but freed heap memory keeps its
bytes until something reuses it. glibc can fill every freed block with a pattern
(``mallopt(M_PERTURB)``, the same switch as the MALLOC_PERTURB_ environment variable); kiosk
mode turns it on in every actor at start-up. Large buffers (frames) are unmapped on free anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_PERTURB = -6  # from glibc's malloc.h
SCRUB_BYTE = 0xA5


def scrub_freed_memory() -> bool:
    """Ask glibc to overwrite freed blocks from now on; False where that isn't available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_PERTURB, SCRUB_BYTE))
    except (OSError, AttributeError):
        return False
