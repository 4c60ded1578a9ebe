"""The controller's exceptions, typed by what the caller must do about them.

A *permanent* error means retrying cannot help (bad input, nothing to act on): the
Pub/Sub path logs it and acknowledges the message. A *temporary* error means the same
delivery may succeed later (an API is down, the service kept changing under us): the
Pub/Sub path raises it so Pub/Sub redelivers, and the ledger makes redelivery safe.
"""


class ControllerError(Exception):
    """Root of every error the controller raises on purpose."""


class PermanentError(ControllerError):
    """Retrying the same input cannot succeed; acknowledge and log."""


class TemporaryError(ControllerError):
    """The same input may succeed later; let Pub/Sub redeliver."""


class MalformedInput(PermanentError):
    """The delivery could not be parsed into an incident (which field, and why, is in the message)."""


class PolicyError(PermanentError):
    """A policy file is invalid; the message names the file, the line and the field."""


class ServiceNotFound(PermanentError):
    """The Cloud Run service named by the alert or the request does not exist."""


class ConflictError(TemporaryError):
    """The service changed between our read and our write (stale etag) more times than we retry."""


class AccessDenied(PermanentError):
    """Google refused the controller's credentials (401/403): no redelivery can fix that.

    ``method`` is the API method refused, ``permission`` the IAM permission it needs.
    """

    def __init__(self, message: str, *, service: str, method: str, permission: str) -> None:
        super().__init__(message)
        self.service = service
        self.method = method
        self.permission = permission
