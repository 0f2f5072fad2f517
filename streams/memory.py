"""Giving freed memory back to the system, so a worker's RSS follows what it holds.

A worker frees a lot: account states that leave memory for the store, snapshot buffers,
fetched batches. glibc keeps freed blocks in per-thread arenas and rarely returns them,
so without help RSS stays at its high-water mark. The worker limits glibc to two arenas
at start-up and trims the heap after each checkpoint. Elsewhere than glibc both are
no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - present only in glibc
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def limit_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas; call before the worker starts its threads."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.warning("mallopt(M_ARENA_MAX, %d) refused", arenas)


def trim() -> None:
    """Return free heap memory to the system (cheap when there is little to return)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def process_memory() -> dict[str, int]:
    """This process's memory in bytes, from /proc (Linux; empty elsewhere): resident
    (`rss`) and its high-water mark (`rss_peak`), resident anonymous memory (`anonymous`:
    the heaps) and resident file mappings (`file`: libraries such as chDB's), and the
    blocks Python's allocator has handed out (`python_blocks`, a count)."""
    out = {"python_blocks": sys.getallocatedblocks()}
    fields = {"VmRSS": "rss", "VmHWM": "rss_peak", "RssAnon": "anonymous", "RssFile": "file"}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in fields:
                    out[fields[name]] = int(rest.split()[0]) * 1024  # given in kB
    except OSError:
        pass
    return out
