"""The project's error tree.

Like kopf, remediation failures are split by what the caller should do next:
retry later (`TemporaryError`) or give up and record it (`PermanentError`).
Input errors inherit ``ValueError`` too, so generic callers can still catch them.
"""

from __future__ import annotations


class RemediatorError(Exception):
    """Base of every error raised on purpose by remediator."""


class InvalidInput(RemediatorError, ValueError):
    """Input from outside (webhook, playbook, config) is malformed."""


class PayloadError(InvalidInput):
    """A webhook body is not a valid Alertmanager v4 payload."""


class MatcherError(InvalidInput):
    """A label matcher does not follow the Alertmanager syntax."""


class DurationError(InvalidInput):
    """A duration string is not of the ``1h30m`` form."""


class TemplateError(InvalidInput):
    """A target template cannot be rendered for this alert."""


class ConfigError(InvalidInput):
    """The daemon's configuration is invalid."""


class PermanentError(RemediatorError):
    """A step failed in a way that retrying cannot fix (404, 403, 422, bad input).

    ``status`` is the HTTP status of the API answer behind it, when there was one, so
    callers test ``exc.status == 404`` rather than the wording of the message.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TemporaryError(RemediatorError):
    """A step failed in a way that may pass later; ``delay`` is a hint in seconds.

    ``status`` is the HTTP status of the API answer behind it, if any (None for a timeout
    or an unreachable server).
    """

    def __init__(self, message: str, *, delay: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.delay = delay
        self.status = status


class GuardrailUnavailable(RemediatorError, ConnectionError):
    """Guardrail state cannot be reached: the daemon must fail closed."""


class StoreUnavailable(RemediatorError, ConnectionError):
    """The intake/audit store cannot be reached: the webhook must answer 503."""
