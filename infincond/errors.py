"""The project's own exceptions: every error a user can cause says what to do next."""

from __future__ import annotations


class InfinconError(Exception):
    """Base class of the errors InFiConD raises for problems a user can fix."""


class LoadError(InfinconError):
    """A teacher, encoder or dataset could not be loaded from the given repo id or path."""


class ColumnDetectionError(InfinconError):
    """The image or label column of a dataset could not be found."""


class ConfigError(InfinconError):
    """A setting has a value that cannot be used."""


class ConstraintError(InfinconError):
    """Weight constraints contradict each other or refer to unknown concepts or classes."""


class HubError(InfinconError):
    """The Hub refused a request (bad token, no access, missing repo) or could not be reached."""


class ExtractionError(InfinconError):
    """The image pass failed in a way settings can fix (an input worker died, the GPU ran out of memory)."""
