"""Every error headstart raises for bad input.

Each message says three things: what was expected, what was found, and how to fix it.
All errors derive from :class:`HeadstartError`, itself a ``ValueError`` so that code
catching ``ValueError`` (as scikit-learn's tooling does) keeps working.
"""

from __future__ import annotations


class HeadstartError(ValueError):
    """Base class of every user-facing headstart error."""

    def __init__(self, expected: str, found: str, fix: str) -> None:
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(f"Expected {expected}, but found {found}. Fix: {fix}")


class ConfigError(HeadstartError):
    """A configuration value is missing, unknown or out of range."""


class UnknownNameError(ConfigError):
    """A registry lookup failed (a backbone, strategy, head or score name)."""


class DataError(HeadstartError):
    """The dataset cannot be used as given (layout, labels, class counts)."""


class PreflightError(DataError):
    """One or more input files are unreadable; ``bad`` lists (path, reason) pairs."""

    def __init__(self, expected: str, found: str, fix: str, bad: list[tuple[str, str]]) -> None:
        self.bad = bad
        super().__init__(expected, found, fix)


class BackboneError(HeadstartError):
    """A backbone cannot be built or does not fit the request."""


class WeightsNotFoundError(BackboneError):
    """No offline source of pretrained weights was found; ``tried`` lists the sources."""

    def __init__(self, expected: str, found: str, fix: str, tried: list[str]) -> None:
        self.tried = tried
        super().__init__(expected, found, fix)


class UnsafeWeightsError(BackboneError):
    """A weights file would need arbitrary code (a pickle payload) to load; refused."""


class RunFolderError(HeadstartError):
    """A run folder is missing files or was written by an incompatible version."""


class DiskFullError(HeadstartError):
    """A write found the disk full; the message names the folder and the space needed."""


class NotFittedError(HeadstartError, AttributeError):
    """A model was used for prediction before it was fitted."""
