"""The two pydantic base configurations every model of the controller uses.

``Strict``
    Our own documents and value objects (service snapshots, the ledger, policies, settings, API
    bodies): strict types, unknown fields refused (``extra="forbid"``), immutable. A typo in a
    policy or a request body is an error that names the field, never silently ignored.
``Lenient``
    Third-party documents (Cloud Monitoring notifications, the Pub/Sub envelope, Slack payloads):
    unknown fields ignored (``extra="ignore"``), because Google and Slack add fields over time and
    a harmless addition on their side must never stop a rollback; immutable; fields settable by
    their Python names as well as their aliases. The fields we read stay typed strictly; a model
    that must coerce (Slack's form-encoded payloads) says so with its own ``strict=False``.

Subclasses add to these (pydantic merges ``model_config``), they never start from ``BaseModel``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for our own models: strict, closed to unknown fields, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Lenient(BaseModel):
    """Base for third-party documents: unknown fields ignored, immutable, strict where typed."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, validate_by_name=True)
