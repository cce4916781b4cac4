"""Where a build writes, how it publishes, and who may build: the staging folder, the swap, the lock.

Beside ``--out`` (``build/idx``) a build keeps::

    build/.idx.lock        flock()ed while a build of build/idx runs (the kernel releases it when
                           the build dies, even by kill -9); holds the build's pid for the message
    build/.idx.removals.lock  flock()ed for a moment by ``index remove`` while it rewrites
                           removals.jsonl, and by publishing while it carries that file into the
                           new index and swaps the folders (index/removals.py)
    build/.idx.building/   the unfinished build: its journal (build_journal.jsonl), then the index
                           files; a name that store.read_manifest refuses, so it is never taken
                           for an index, even complete

When the staging folder holds a complete index it is opened with the checks the matchers and the
reducer use (:func:`index.store.verify`, the calibration) and only then swapped with ``--out``:

- ``--out`` does not exist (or is an empty folder): one ``rename()``.
- ``--out`` holds an index: ``renameat2(RENAME_EXCHANGE)`` swaps the two folders in one atomic
  step (Linux >= 3.15 on ext4, xfs, btrfs, tmpfs and most local filesystems): every path under
  ``--out`` names either the old index or the new one, never a mix, never nothing. Where the call
  or the filesystem does not have it (ENOSYS, EINVAL), two renames: ``--out`` aside, staging in
  its place; between the two, for microseconds, ``--out`` does not exist (a process opening it
  right then is refused with "does not exist" and, under systemd, restarted a second later).

Just before the swap, under the removals lock, every removal recorded in ``--out`` is written into
the staged index with its rows there (:func:`index.removals.carry`): a removal made while a build
or a compaction ran is honoured by the index that replaces the one it was made in.

The replaced index is then renamed aside and deleted: its files are *unlinked*, never rewritten,
so a matcher that has them memory-mapped keeps reading the old index until it restarts (the
kernel frees the blocks when the last mapping goes); the disk needs room for both meanwhile.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import sys
import time
from pathlib import Path

from index import calibration, journal, removals, store

LOCK_SUFFIX = ".lock"
REPLACED_MARK = ".replaced-"  # ``.<name>.replaced-<ns>``: a swapped-out index being deleted
# Files an index build writes: a folder holding only these (or nothing) may be replaced by a build.
INDEX_FILES = re.compile(
    r"(manifest\.json(\.tmp)?|meta\.sqlite(-journal)?|build_report\.json|calibration\.json(\.tmp)?"
    r"|distractor_model\.npz|shard_\d{3,}(\.codes|\.bounds)?\.npy|"
    + re.escape(journal.FILENAME)
    + "|"
    + re.escape(removals.FILENAME)
    + r"(\.tmp)?)"
)


class BuildLocked(RuntimeError):
    """Another build into the same --out is running."""


def target(out: Path) -> Path:
    """The folder a build of ``out`` replaces: absolute; a symbolic link's target (the link keeps naming it)."""
    out = Path(os.path.abspath(out))
    return out.resolve() if out.is_symlink() else out


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}{store.STAGING_SUFFIX}"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


class BuildLock:
    """An exclusive flock() on ``.<out>.lock``: a second build into the same --out refuses at once."""

    def __init__(self, out: Path):
        self.path = lock_path(out)
        self.out = out
        self.fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BuildLocked(
                f"another build into {self.out} is running (pid {holder}; lock {self.path}): "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *_: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)  # the file stays: deleting a lock file races the next build's open()
            self.fd = None


def check_replaceable(out: Path) -> None:
    """Refuse an --out that is not a folder an index build may replace as a whole."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file, not an index folder")
    foreign = sorted(p.name for p in out.iterdir() if not INDEX_FILES.fullmatch(p.name))
    if foreign:
        raise ValueError(
            f"--out {out} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which an index "
            "build does not write; a build replaces the whole folder, so give a new or empty folder, "
            "or move those files away"
        )


def prepare_staging(out: Path) -> Path:
    """The staging folder of ``out``, made empty but for the journal of an earlier unfinished
    build, whose finished photos are kept; folders of indexes replaced earlier are deleted."""
    remove_replaced(out)
    staging = staging_dir(out)
    staging.mkdir(parents=True, exist_ok=True)
    for entry in staging.iterdir():
        if entry.name == journal.FILENAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()  # unlinked, not rewritten: see ShardWriter
    return staging


def remove_replaced(out: Path) -> None:
    for old in out.parent.glob(f".{glob_escape(out.name)}{REPLACED_MARK}*"):
        shutil.rmtree(old, ignore_errors=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def publish(staging: Path, out: Path) -> None:
    """Verify the staged index as a matcher would open it, then swap it in as ``out`` (atomically
    where the system can); the index it replaces is unlinked, never rewritten."""
    store.verify(staging, staged=True)
    calibration.load(staging)
    _fsync_tree(staging)
    with removals.Lock(out):  # no removal lands in ``out`` between the carry and the swap
        removals.carry(out, staging)
        aside = _swap(staging, out)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _swap(staging: Path, out: Path) -> Path | None:
    """Put ``staging`` in the place of ``out``; the folder the replaced index was moved to, if any."""
    if out.exists() and any(out.iterdir()):
        if exchange(staging, out):
            old = staging
        else:  # no atomic exchange here: two renames (see the module docstring)
            old = _replaced_name(out)
            os.rename(out, old)
            try:
                os.rename(staging, out)
            except OSError:
                os.rename(old, out)  # put the previous index back
                raise
        aside = _replaced_name(out)
        os.rename(old, aside)
        _fsync_dir(out.parent)
        return aside
    os.rename(staging, out)  # also replaces an empty folder in one step
    _fsync_dir(out.parent)
    return None


def _replaced_name(out: Path) -> Path:
    return out.parent / f".{out.name}{REPLACED_MARK}{time.time_ns()}"


_AT_FDCWD = -100
_RENAME_EXCHANGE = 1 << 1


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # an old kernel, or a filesystem without exchange
    raise OSError(err, f"renameat2 RENAME_EXCHANGE: {os.strerror(err)}", str(a), None, str(b))


def _fsync_tree(folder: Path) -> None:
    """The staged files on disk before they are published (a power cut must not publish holes)."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
