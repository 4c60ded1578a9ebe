"""The controller's exceptions, typed by what the caller must do about them (as kopf does).

Every exception the controller raises on purpose derives from :class:`ControllerError`, and
through one of its two branches says what the caller must do:

* :class:`PermanentError`: retrying the same input cannot help (bad input, nothing to act on,
  a refusal). The Pub/Sub path logs it and **acknowledges** the message; the HTTP API answers
  4xx/502; the CLI prints one line and exits non-zero. Nothing was changed.
* :class:`TemporaryError`: the same input may succeed later (an API is down, the service kept
  changing under us, a deadline ran out). The Pub/Sub path **raises it so Pub/Sub redelivers**
  (the ledger makes redelivery safe: it never acts twice); the HTTP API answers 503/409 with
  ``Retry-After``; the CLI says to run again. A redelivery **re-reads** the service: nothing read
  before the failure is trusted.
* :class:`ControllerError` directly: a signal that carries its own answer (``HttpError``,
  ``AuthError``): the surface that raised it answers with what it holds, no retry by us.

Where each class is, its base, and what the caller must do:

* here, ``MalformedInput`` (PermanentError): log, acknowledge (the delivery is bad)
* here, ``PolicyError`` (PermanentError): fix the policy file; acknowledge
* here, ``ServiceNotFound`` (PermanentError): acknowledge; 404
* here, ``AccessDenied`` (PermanentError): grant the permission named; acknowledge
* here, ``InvalidInput`` (PermanentError): a human fixes the file/argument, runs again
* here, ``UsageError`` (InvalidInput): CLI: one line, exit :data:`EXIT_USAGE`
* here, ``ConflictError`` (TemporaryError): redeliver; the next attempt re-reads
* adapters/pubsub ``PublishFailed`` (TemporaryError): redeliver (or 503 + Retry-After)
* adapters/monitoring ``MonitoringUnavailable`` (TemporaryError): policy fallback, else redeliver
* adapters/deadline ``DeadlineReached`` (TemporaryError): redeliver before the platform cuts us off
* adapters/cloudrun ``OperationFailed`` (TemporaryError): re-read: traffic may or may not have moved
* adapters/policy_files ``PolicyLoadError`` (PolicyError): fix the files it lists
* adapters/auth_config ``AuthError`` (ControllerError): answer its 401/403/503 as it says
* adapters/token_certs ``CertsFetchError`` (TemporaryError): Google's certificates later: 503
* adapters/slack ``_Retry``/``_WebhookStatus`` (TemporaryError): retried inside the adapter, never escape
* app/manual ``Refused`` (PermanentError): say why to the human; nothing changed
* app/canary_control ``NoCanaryPolicy`` (PermanentError): configure a canary policy; acknowledge
* core/backtest_model ``BacktestError`` (TemporaryError): Cloud Run/Monitoring unreadable: run again
* core/alertpolicies ``AlertPolicyError`` (InvalidInput): fix the rollback policy (exit 1)
* core/alertpolicy_spec ``UnsupportedPolicy`` (InvalidInput): the alert policy is outside the model
* core/lab_scenario ``ScenarioError`` (InvalidInput): fix the scenario file (exit 2)
* surfaces/http_requests ``HttpError`` (ControllerError): the HTTP answer it holds, as is
* app/settings ``SettingsError`` (InvalidInput): fix the environment variable it names

The classes outside this module stay beside the code that raises them, only deriving from here:
those modules were being split by others while this one was written (issue 8), and moving a class
would have touched every file importing it; the private Slack ones never leave their adapter.
``InvalidInput`` and its subclasses are also ``ValueError`` so existing ``except ValueError``
handlers keep catching them.
"""

from typing import Final

EXIT_USAGE: Final = 2
"""The one exit code of every CLI (``python -m controller``, the emulator, the demo) for a usage error:
a wrong argument or setting, said in one line with how to fix it. argparse uses the same."""


class ControllerError(Exception):
    """Root of every error the controller raises on purpose."""


class PermanentError(ControllerError):
    """Retrying the same input cannot succeed; acknowledge and log."""


class TemporaryError(ControllerError):
    """The same input may succeed later; let Pub/Sub redeliver (the next attempt re-reads everything)."""


class MalformedInput(PermanentError):
    """The delivery could not be parsed into an incident (which field, and why, is in the message)."""


class PolicyError(PermanentError):
    """A policy file is invalid; the message names the file, the line and the field."""


class ServiceNotFound(PermanentError):
    """The Cloud Run service named by the alert or the request does not exist."""


class InvalidInput(PermanentError, ValueError):
    """Something a human wrote (a file, an argument) is wrong; the message says what. Never retried."""


class UsageError(InvalidInput):
    """A command-line usage error: the CLI prints the message as one line and exits :data:`EXIT_USAGE`."""


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
