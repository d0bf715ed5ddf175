"""The project's own exceptions: every error a user can cause says what to do next.

Errors about a value the user gave (a setting, a name, a file's content) are also ``ValueError``s, so
generic ``except ValueError`` handlers catch them too.
"""

from __future__ import annotations


class InfinconError(Exception):
    """Base class of the errors InFiConD raises for problems a user can fix."""


class LoadError(InfinconError):
    """A teacher, encoder, dataset, student or image could not be loaded from the given repo id or path."""


class ColumnDetectionError(InfinconError, ValueError):
    """The image or label column of a dataset could not be found."""


class ConfigError(InfinconError, ValueError):
    """A setting, a name or a file's content has a value that cannot be used."""


class ConstraintError(InfinconError, ValueError):
    """Weight constraints contradict each other or refer to unknown concepts or classes."""


class HubError(InfinconError):
    """The Hub refused a request (bad token, no access, missing repo) or could not be reached."""


class StorageError(InfinconError):
    """A student or a log could not be written where asked (folder taken, read-only, not a folder)."""


class ExtractionError(InfinconError):
    """The image pass failed in a way settings can fix (an input worker died, the GPU ran out of memory)."""
