"""Kiosk-mode memory hygiene: once the visitor has gone, no actor's memory holds their data.

Python frees a message's buffers when the last reference goes, but freed heap memory keeps its
bytes until something reuses it, and several layers keep freed or finished buffers on purpose:

- glibc fills freed blocks with a pattern only when asked (``mallopt(M_PERTURB)``, the
  MALLOC_PERTURB_ switch), and even then not the blocks it caches per thread for reuse (the
  "tcache": up to 7 blocks of each size up to 1 KiB, where a 512-byte descriptor lands). That
  cache can only be switched off before a process starts (``GLIBC_TUNABLES``), so kiosk mode
  starts every actor again with it off (:func:`restart_without_malloc_cache`);
- numpy keeps up to 7 freed data buffers of each size under 1 KiB without freeing them;
- libzmq keeps each connection's last message in its receive and send buffers, which live as
  long as the connection; an actor's own state (a face track's recent descriptors, dlib's
  network activations) lives until the next visitor overwrites it.

So in kiosk mode the run loop *scrubs* each actor once the visitor's data has stopped flowing for
``privacy.scrub_after_s`` (the registry's ``visitor`` topics, messages/topics.py): the actor drops what it
holds (``on_scrub``), the sockets it connects are closed and opened again (which ends both sides
of those connections and frees their buffers), and :func:`scrub_process` empties numpy's cache,
collects garbage and returns free memory to the system. Large buffers (frames) are unmapped on
free anyway. RELIABILITY.md says how this is proven.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Mapping

import numpy as np

M_PERTURB = -6  # from glibc's malloc.h
SCRUB_BYTE = 0xA5
NO_MALLOC_CACHE = "glibc.malloc.tcache_count=0"
NUMPY_CACHE_BYTES = 1024  # numpy caches freed data buffers smaller than this...
NUMPY_CACHE_DEPTH = 7  # ...up to this many of each size (numpy/_core/src/multiarray/alloc.c)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def scrub_freed_memory() -> bool:
    """Ask glibc to overwrite freed blocks from now on; False where that isn't available."""
    libc = _libc()
    try:
        return bool(libc is not None and libc.mallopt(M_PERTURB, SCRUB_BYTE))
    except AttributeError:
        return False


def malloc_cache_off(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process started with glibc's per-thread cache of freed blocks switched off."""
    return NO_MALLOC_CACHE in env.get("GLIBC_TUNABLES", "").split(":")


def restart_without_malloc_cache() -> None:
    """Start this process again (same pid, same arguments) with glibc's per-thread cache off.

    Returns only when the cache is already off, or where this is not glibc. Costs one more
    interpreter start-up (the actor's imports run twice), once, at kiosk start.
    """
    if malloc_cache_off() or not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None:
        return
    tunables = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES", ""), NO_MALLOC_CACHE]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})


def flush_numpy_cache() -> None:
    """Take every buffer out of numpy's small-buffer cache zero-filled, and put them back so."""
    held = [np.zeros(n, np.uint8) for n in range(1, NUMPY_CACHE_BYTES) for _ in range(NUMPY_CACHE_DEPTH)]
    del held


def scrub_process() -> None:
    """After an actor dropped its visitor state: free what is unreachable, overwrite what is cached."""
    gc.collect()
    flush_numpy_cache()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
