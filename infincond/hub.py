"""Resolving Hub repo ids and local paths, and turning loading and Hub failures into clear errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError, HubError, InfinconError, LoadError


def is_local(ref: str | os.PathLike) -> bool:
    """True when ``ref`` names an existing file or folder rather than a Hub repo id."""
    return Path(os.fspath(ref)).expanduser().exists()


def local_files(path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """What a local folder (or file) holds, as (path relative to its parent, size, mtime in ns), sorted: every
    file but those under a ``.cache`` folder (the datasets library's own). The one rule of what a local
    repo's content stamp covers."""
    root = Path(os.fspath(path)).expanduser().resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                  and ".cache" not in p.relative_to(root).parts)
    return [(str(f.relative_to(root.parent)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def local_revision(path: str | os.PathLike) -> str:
    """A short content stamp of a local folder (:func:`local_files`): it stands in for the commit hash a
    Hub repo would have, so caches notice when a local repo changes."""
    digest = hashlib.sha256(json.dumps(local_files(path)).encode())
    return "local-" + digest.hexdigest()[:16]


def ref_key(ref: str | os.PathLike, revision: str | None = None) -> tuple[str, str | None]:
    """(ref, revision) as a cache key: for a local folder the revision is its content stamp, so the key
    changes when the folder does."""
    text = os.fspath(ref)
    return text, local_revision(text) if is_local(text) else revision


def model_revision(ref: str, requested: str | None, config: object | None = None) -> str:
    """The revision that was really loaded: the commit hash for Hub repos, a content stamp for folders."""
    if is_local(ref):
        return local_revision(ref)
    from huggingface_hub import try_to_load_from_cache

    # The repo was just downloaded: its config sits in the snapshot folder named by the commit.
    cached = try_to_load_from_cache(ref, "config.json", revision=requested)
    if isinstance(cached, str):
        return Path(cached).parent.name
    commit = getattr(config, "_commit_hash", None)
    return commit or requested or "main"


def looks_like_path(ref: str | os.PathLike) -> bool:
    """True when ``ref`` can only be meant as a local path: absolute, relative (``./``, ``../``, ``~``),
    with a backslash, or with more than one ``/`` (a Hub repo id has at most one)."""
    text = os.fspath(ref)
    return (text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1
            or (len(text) > 1 and text[1] == ":"))


def check_ref(what: str, ref: str | os.PathLike) -> str:
    """``ref`` as a string when it names an existing local path or a valid Hub repo id, else a clear
    :class:`LoadError` (a missing local path says so instead of "malformed repo id")."""
    text = os.fspath(ref).strip() if ref is not None else ""
    if not text:
        raise LoadError(f"No {what} given: give a Hub repo id (owner/name) or a local path.")
    if is_local(text):
        return text
    if looks_like_path(text):
        raise LoadError(f"The {what} path {text!r} does not exist. Check the path (a Hub repo id looks like "
                        "'owner/name').")
    if not is_repo_id(text):
        raise LoadError(f"{text!r} is neither an existing local path nor a valid Hub repo id for the {what}. "
                        "A repo id looks like 'owner/name' (letters, digits, '-', '_', '.').")
    return text


def check_repo_id(repo_id: str | None) -> str:
    """A repo id to push to, checked with the Hub's own rules before any work starts: ``name`` or
    ``namespace/name``. Raises :class:`ConfigError` with what a valid one looks like."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = (repo_id or "").strip()
    example = "Use 'your-name/model-name': letters, digits, '-', '_' and '.', at most 96 characters."
    if not text:
        raise ConfigError(f"Give a Hub repo name. {example}")
    if text.count("/") > 1:
        raise ConfigError(f"{text!r} is not a valid Hub repo id: it has more than one '/'. {example}")
    try:
        validate_repo_id(text)
    except HFValidationError as error:
        reason = str(error).split(":")[0].rstrip(".")
        raise ConfigError(f"{text!r} is not a valid Hub repo id ({reason}). {example}") from error
    return text


def _load_failures() -> tuple[type[BaseException], ...]:
    """The exceptions a loader raises for a bad repo or file (not for bugs): missing or unreadable files,
    Hub and network errors, malformed configs and weights."""
    import safetensors

    return (OSError, ValueError, KeyError, safetensors.SafetensorError, *_transport_errors())


@contextlib.contextmanager
def loading(what: str, ref: str) -> Iterator[None]:
    """Re-raise a loader's failure inside the block as a :class:`LoadError` that says what to check.

    Only failures that a bad repo or file causes are wrapped; anything else (a bug) surfaces as it is.
    """
    try:
        yield
    except InfinconError:
        raise
    except ImportError as error:
        raise LoadError(
            f"Could not load the {what} {ref!r}: a package it needs is missing ({error}). "
            "Install it (for timm-format repos: `pip install timm`) and try again."
        ) from error
    except _load_failures() as error:
        import safetensors

        if isinstance(error, safetensors.SafetensorError):
            raise LoadError(f"Could not load the {what} {ref!r}: its weights file is damaged or incomplete "
                            f"({error}). Download or save it again.") from error
        where = "the local path" if is_local(ref) else "the Hub repo id (and your network / HF_TOKEN)"
        raise LoadError(f"Could not load the {what} {ref!r}: {error}. Check {where}.") from error


def is_repo_id(ref: str | os.PathLike | None) -> bool:
    """True when ``ref`` is a valid Hub repo id (``name`` or ``namespace/name``) and not a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not ref or is_local(ref):
        return False
    try:
        validate_repo_id(str(ref))
    except HFValidationError:
        return False
    return True


def endpoint() -> str:
    """The Hub endpoint in use (``HF_ENDPOINT``, read by huggingface_hub at import)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def hub_errors(action: str, repo_id: str) -> Iterator[None]:
    """Re-raise a Hub failure inside the block as a :class:`HubError` that says what to check.

    The message never includes the token: huggingface_hub's errors carry the URL and the server's
    message, not the request headers.
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except RepositoryNotFoundError as error:
        raise HubError(f"Could not {action}: the repo {repo_id!r} does not exist, or it is private and your "
                       "token cannot see it. Check the name, and HF_TOKEN (or sign in).") from error
    except RevisionNotFoundError as error:
        raise HubError(f"Could not {action}: {repo_id!r} has no such revision ({error}).") from error
    except EntryNotFoundError as error:
        raise HubError(f"Could not {action}: a file is missing from {repo_id!r} ({error}). "
                       "Is it an InFiConD student?") from error
    except LocalEntryNotFoundError as error:  # raised when the endpoint cannot be reached and nothing is cached
        raise HubError(f"Could not {action}: the Hub at {endpoint()} cannot be reached and nothing is cached "
                       f"for {repo_id!r}. Check your network (or HF_ENDPOINT).") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            message = ("the Hub refused the request without a valid token (401). Set HF_TOKEN to a token with "
                       "write access, or sign in with Hugging Face.")
        elif status == 403:
            message = (f"your token may not write to {repo_id!r} (403). Use a token with write access to "
                       "that namespace, or push under your own name.")
        else:
            message = f"the Hub answered {status}: {error}"
        raise HubError(f"Could not {action}: {message}") from error
    except (*_transport_errors(), ConnectionError) as error:
        raise HubError(f"Could not {action}: the Hub at {endpoint()} cannot be reached ({type(error).__name__}). "
                       "Check your network (or HF_ENDPOINT).") from error


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection-level errors of the HTTP clients huggingface_hub may use (httpx2 in 2.x, httpx before)."""
    import importlib

    errors = []
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)
