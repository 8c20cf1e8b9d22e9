"""Exceptions that carry a message meant for the operator, not a traceback."""

from __future__ import annotations


class ClinicFlowError(Exception):
    """An expected failure with a message that says what went wrong and what to do."""


class ConfigError(ClinicFlowError):
    """A setting is missing or invalid. The message names the variable and what it expects."""


class SourceUnavailableError(ClinicFlowError):
    """A configured source cannot be reached; nothing was written, the next run catches up."""


class DataQualityError(ClinicFlowError):
    """A load failed a critical data-quality check; the message says what to fix."""
