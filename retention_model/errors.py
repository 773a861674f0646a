"""Errors raised by the pure core.

Every error a user can act on derives from :class:`RetentionError` and from the
builtin exception callers already catch, so ``except ValueError`` keeps working.
The adapters' own errors derive from it too (``streams.compat.UnsupportedFaustError``,
``streams.output.DeliveryFailedError``, ``training.instacart.InstacartMissingError``).
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailableError",
    "BundleError",
    "EventLogError",
    "FeatureSpecMismatchError",
    "NotLoadedError",
    "PolicyFileError",
    "PortInUseError",
    "RetentionError",
    "SettingsError",
    "TrainingDataError",
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


class BrokerUnavailableError(RetentionError, ConnectionError):
    """No Kafka broker answered within the wait a command allows (exit code 3)."""


class PortInUseError(RetentionError, OSError):
    """A port the worker must listen on is taken by another process."""


class EventLogError(RetentionError, ValueError):
    """A row of an event log breaks the schema (``--skip-invalid`` counts such rows instead)."""


class PolicyFileError(RetentionError, ValueError):
    """A policy file that cannot be used, with the reason."""


class TrainingDataError(RetentionError, ValueError):
    """An event log cannot give what training or an evaluation asked of it (too short, one class, ...)."""
