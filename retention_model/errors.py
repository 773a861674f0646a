"""Errors raised by the pure core.

Every error a user can act on derives from :class:`RetentionError` and from the
builtin exception callers already catch, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "FeatureSpecMismatchError",
    "NotLoadedError",
    "RetentionError",
    "SettingsError",
]


class RetentionError(Exception):
    """Root of every error raised by this project."""


class SettingsError(RetentionError, ValueError):
    """A setting has a value that is not allowed."""


class BundleError(RetentionError, OSError):
    """A model bundle is missing, unreadable or malformed."""


class FeatureSpecMismatchError(BundleError):
    """A bundle was trained on features the running code does not produce."""


class NotLoadedError(RetentionError, AttributeError):
    """A model wrapper was used before :meth:`load` was called."""
