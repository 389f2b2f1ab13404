"""Exceptions raised by dotflow-core.

Every message is one line that names the bad value and what would be valid.
"""

from __future__ import annotations


class DotFlowError(Exception):
    """Base class of every error dotflow-core raises on purpose."""


class ConfigurationError(DotFlowError):
    """A setting, provider selection or step is wrong; nothing has run yet.

    Providers raise it from ``configure`` or ``get_next_task_id`` to reject
    their settings; ``dotflow start`` turns it into exit code 2.
    """


class UnknownProviderError(ConfigurationError):
    """A provider name was selected that no installed distribution offers."""

    def __init__(self, name: str, installed: list[str]) -> None:
        choices = ", ".join(sorted(installed)) or "none installed"
        super().__init__(
            f"unknown provider {name!r}; installed providers: {choices} (or 'none' for no provider)"
        )
        self.name = name
        self.installed = sorted(installed)


class ProviderLoadError(ConfigurationError):
    """A provider could not be imported or does not match the hook contract."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(f"provider {name!r} failed to load: {cause}")
        self.name = name
        self.cause = cause


class InvalidStepError(ConfigurationError):
    """A step cannot be imported, or is not marked with ``@action``."""


class UndeliveredEventsError(DotFlowError):
    """Events of the run were dropped or left undelivered, and the provider was told to say so.

    A provider in a strict delivery mode raises it from ``shutdown`` (after
    doing everything it can, spooling included); the manager records it like
    any hook failure (one ERROR line, no traceback) and ``dotflow start`` ends
    with exit code 3 (``EXIT_UNDELIVERED``) where it would have ended with 0.
    """


class StepTimeoutError(TimeoutError):
    """An attempt of a step ran longer than its ``@action(timeout=...)``."""


class WorkflowStateError(DotFlowError, RuntimeError):
    """A workflow was used in a way its state does not allow (e.g. started twice)."""
