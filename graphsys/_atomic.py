"""Atomic, durable writes: temporary name, fsync, rename.

A file or directory written through these helpers appears whole or not at all, even
if the process is killed or the disk fills half way. Partial directories carry the
writer's pid in their name so a later run can tell them from a live writer's and
clean them up.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from graphsys.errors import DatasetError, DatasetExistsError

_PARTIAL = ".partial-"


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry table (makes creations and renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def no_space_error(path: str | os.PathLike, exc: OSError) -> DatasetError:
    """Turn a full-disk OSError into an error that names the file and the fix."""
    return DatasetError(
        f"no space left on the device while writing {path} ({exc.strerror}); nothing was "
        "kept. Free space on that disk or write the output to another one, then run again."
    )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling, fsync, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise no_space_error(path, exc) from exc
        raise


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_file(Path(dirpath, name))
        fsync_dir(dirpath)


def remove_stale_partials(final: Path) -> list[Path]:
    """Delete partial files or directories of ``final`` left by writers no longer alive."""
    removed = []
    if not final.parent.is_dir():
        return removed
    prefix = f".{final.name}{_PARTIAL}"
    for candidate in final.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and psutil.pid_exists(int(pid_text)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def publish_directory(tmp: Path, final: Path, *, overwrite: bool = False) -> None:
    """Rename the finished directory ``tmp`` to ``final`` (replacing it if ``overwrite``).

    An old ``final`` is moved aside before the rename and removed after it, so a
    reader sees the old or the new directory, never a mix.
    """
    if final.exists():
        if not overwrite:
            raise DatasetExistsError(
                f"output path {final} appeared while writing; nothing was replaced. "
                "Choose another path or pass --overwrite."
            )
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_dir(final.parent)


@contextmanager
def atomic_directory(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and publish it at ``final`` on success.

    On any exception the temporary directory is removed and ``final`` is untouched. A
    full disk is reported as a :class:`DatasetError` that names the file and the fix.

    Example:
        >>> with atomic_directory("out/cora") as tmp:   # doctest: +SKIP
        ...     (tmp / "manifest.json").write_text("{}")
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise DatasetExistsError(
            f"output path {final} already exists; choose another path, remove it, "
            "or pass --overwrite to replace it"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = final.with_name(f".{final.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        publish_directory(tmp, final, overwrite=overwrite)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise no_space_error(getattr(exc, "filename", None) or final, exc) from exc
        raise
