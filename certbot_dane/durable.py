"""Making many new files durable at once.

A single file is made durable the usual way: write a temporary file, fsync
it, rename it into place, fsync the directory. A check of hundreds of
lineages writes hundreds of files at once (state files, staged copies), and
an fsync each costs a journal commit each. :func:`flush` makes a whole set
durable with one ``syncfs`` per file system (Linux), which commits them all
together; the order of the steps (content durable before the rename,
rename durable before anything relies on it) is the same as with fsync.
Where ``syncfs`` is missing, :func:`flush` falls back to an fsync per path.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

#: Below this many files, fsync each: a syncfs also flushes whatever else
#: is dirty on the file system, which only pays off for many files.
BATCH_MIN = 8


def flush(paths: Iterable[Path]) -> None:
    """Make the content of these files (or directories' entries) durable."""
    paths = list(paths)
    syncfs = _syncfs()
    if syncfs is None or len(paths) < BATCH_MIN:
        for path in paths:
            fsync(path)
        return
    devices: dict[int, Path] = {}
    for path in paths:
        devices.setdefault(os.stat(path).st_dev, path)
    for path in devices.values():
        fd = os.open(path, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(path))
        finally:
            os.close(fd)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2), or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]
