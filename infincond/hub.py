"""Resolving Hub repo ids and local paths, and turning loading failures into clear errors."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import LoadError

#: Files whose size and modification time identify the state of a local model or dataset folder.
_FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".arrow", ".parquet", ".model")


def is_local(ref: str | os.PathLike) -> bool:
    """True when ``ref`` names an existing file or folder rather than a Hub repo id."""
    return Path(os.fspath(ref)).expanduser().exists()


def local_revision(path: str | os.PathLike) -> str:
    """A short content stamp of a local folder (names, sizes, mtimes of its model/data files).

    It stands in for the commit hash a Hub repo would have, so caches notice when a local repo changes.
    """
    root = Path(os.fspath(path)).expanduser().resolve()
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        if file.suffix not in _FINGERPRINT_SUFFIXES and file != root:
            continue
        stat = file.stat()
        digest.update(f"{file.relative_to(root.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "local-" + digest.hexdigest()[:16]


def model_revision(ref: str, requested: str | None, config: object | None = None) -> str:
    """The revision that was really loaded: the commit hash for Hub repos, a content stamp for folders."""
    if is_local(ref):
        return local_revision(ref)
    commit = getattr(config, "_commit_hash", None)
    return commit or requested or "main"


@contextlib.contextmanager
def loading(what: str, ref: str) -> Iterator[None]:
    """Re-raise any failure inside the block as a :class:`LoadError` that says what to check."""
    try:
        yield
    except LoadError:
        raise
    except ImportError as error:
        raise LoadError(
            f"Could not load the {what} {ref!r}: a package it needs is missing ({error}). "
            "Install it (for timm-format repos: `pip install timm`) and try again."
        ) from error
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
        where = "the local path" if is_local(ref) else "the Hub repo id (and your network / HF_TOKEN)"
        raise LoadError(f"Could not load the {what} {ref!r}: {error}. Check {where}.") from error
