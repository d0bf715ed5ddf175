"""Writing files and folders so that nothing a user has is lost: atomic writes (write beside, then rename),
folders replaced whole, and file-system failures turned into :class:`StorageError` messages that say what
to do."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import StorageError


@contextlib.contextmanager
def storage_errors(action: str, path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a file-system failure inside the block as a :class:`StorageError` naming ``path``."""
    try:
        yield
    except StorageError:
        raise
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError, OSError) as error:
        where = os.fspath(path)
        if isinstance(error, PermissionError) or error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = "it is read-only, or you may not write there. Choose a folder you can write to."
        elif isinstance(error, NotADirectoryError) or error.errno == errno.ENOTDIR:
            hint = "part of that path is a file, not a folder. Choose another path."
        elif isinstance(error, IsADirectoryError):
            hint = "a folder is in the way of a file. Choose another path."
        elif error.errno == errno.ENOSPC:
            hint = "the disk is full. Free some space or choose another disk."
        else:
            hint = f"{error.strerror or error}. Choose another path."
        raise StorageError(f"Could not {action} at {where!r}: {hint}") from error


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk where the platform allows it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, durable: bool = True) -> Path:
    """Write ``path`` through ``write(file)`` under a temporary name beside it, fsync it, rename it into
    place and fsync the folder (so the rename itself survives a crash): a reader sees the old file or the
    new one, never half of it. ``durable=False`` skips the fsyncs, for files that can be made again."""
    path = Path(path)
    with storage_errors("write a file", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as handle:
                write(handle)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            fsync_folder(path.parent)
    return path


def write_fully(handle: int, data, at: int | None = None) -> None:
    """Write all of ``data`` (bytes-like, contiguous) to the file descriptor ``handle``: at byte ``at``, or
    where the file's position is (its end, when opened to append). One write may take only part of it."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(handle, view) if at is None else os.pwrite(handle, view, at)
        view = view[written:]
        at = None if at is None else at + written


def file_identity(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(device, inode, size) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size


def append_durably(path: str | os.PathLike, data: bytes, identity: tuple[int, int, int] | None
                   ) -> tuple[int, int, int] | None:
    """Append ``data`` to the file at ``path`` and flush it to disk, if it is still the file ``identity``
    (:func:`file_identity`) describes: nothing is written when it is missing or another one (replaced,
    truncated or grown by another writer); returns its new identity, or None when nothing was written. A
    crash mid-way leaves a prefix of ``data`` at the end: readers of such files drop an incomplete record."""
    with storage_errors("write a file", path):
        try:
            handle = os.open(path, os.O_WRONLY | os.O_APPEND)  # never created here: it would lack its header
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(handle)
            if identity is None or (st.st_dev, st.st_ino, st.st_size) != tuple(identity):
                return None
            write_fully(handle, data)
            getattr(os, "fdatasync", os.fsync)(handle)
            return st.st_dev, st.st_ino, st.st_size + len(data)
        finally:
            os.close(handle)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def check_folder_target(target: str | os.PathLike, *, what: str, replaceable: Callable[[Path], bool]) -> Path:
    """``target`` as a Path when :func:`replace_folder` may write there (before any long work starts):
    missing, empty, or holding a previous one of the same kind, under a folder this process can write to."""
    target = Path(target).expanduser()
    with storage_errors(f"save {what}", target):
        if target.exists() and not target.is_dir():
            raise StorageError(f"Could not save {what} at {os.fspath(target)!r}: it is a file, not a folder. "
                               "Choose a new folder.")
        if target.is_dir() and any(target.iterdir()) and not replaceable(target):
            others = sorted(p.name for p in target.iterdir())
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise StorageError(f"Could not save {what} at {os.fspath(target)!r}: the folder holds other files "
                               f"({shown}). Choose a new or empty folder, or one that holds a previous {what[2:]}.")
        existing = target.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise StorageError(f"Could not save {what} at {os.fspath(target)!r}: {os.fspath(existing)!r} is a file, "
                               "not a folder. Choose another path.")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StorageError(f"Could not save {what} at {os.fspath(target)!r}: {os.fspath(existing)!r} is "
                               "read-only, or you may not write there. Choose a folder you can write to.")
    return target


def replace_folder(target: str | os.PathLike, write: Callable[[Path], None], *, what: str,
                   replaceable: Callable[[Path], bool]) -> Path:
    """Write a folder with ``write(stage)`` into a fresh folder beside ``target``, then move it into place.

    ``target`` may be missing, empty, or hold a previous one of the same kind (``replaceable(target)``),
    which is replaced whole; a folder with other content is refused, so that nothing else is overwritten.
    If writing fails, ``target`` is left as it was. ``what`` names the content in messages ("a student").
    """
    target = check_folder_target(target, what=what, replaceable=replaceable)
    with storage_errors(f"save {what}", target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        stage = target.with_name(f".{target.name}.tmp-{tag}")
        old = target.with_name(f".{target.name}.old-{tag}")
        try:
            stage.mkdir()
            write(stage)
            if target.exists():
                os.rename(target, old)
            try:
                os.rename(stage, target)
            except OSError:
                if old.exists():  # put the previous folder back before reporting the failure
                    os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return target
