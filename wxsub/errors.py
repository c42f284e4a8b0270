"""The one exceptions module of wxsub.

Hierarchy::

    WxsubError                      root of everything we raise on purpose
    ├── ConfigError                 bad settings or merchant config (names the key)
    ├── SetupError                  missing tool on the machine (Java, Maven, ...)
    ├── InputError                  an event that cannot be accepted (goes to the DLQ)
    ├── PushRejected                a WeChat message push the gateway refuses (reason names why)
    ├── ProduceError                Kafka did not confirm a write: nothing may be acknowledged
    ├── PrometheusError             a Prometheus we run or query failed (promcheck)
    └── WeChatError                 anything the WeChat edge reports
        ├── RetryableError          provably not sent, or WeChat said "not sent": try again later
        │   └── QuotaExceeded       45009: stop sending for this appid until the quota resets
        ├── PermanentError          WeChat refused for good (errcode kept)
        └── InDoubtError            the request may have reached WeChat: never blindly resend

Foreign errors (httpx, aiokafka) are translated to these at the boundary (``raise ... from exc``),
so agents never see library exceptions. Messages never contain secrets.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConfigError",
    "InDoubtError",
    "InputError",
    "InputReason",
    "PermanentError",
    "ProduceError",
    "PrometheusError",
    "PushRejected",
    "QuotaExceeded",
    "RejectReason",
    "RetryableError",
    "SetupError",
    "WeChatError",
    "WxsubError",
]


class WxsubError(Exception):
    """Root of every error wxsub raises on purpose."""


class ConfigError(WxsubError):
    """A setting or merchant-config value is invalid; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class SetupError(WxsubError):
    """Something the machine must provide is missing; the message says what to install."""


class InputReason(enum.StrEnum):
    """Why an input went to the DLQ: the ``wxsub.dlq.reason`` header and the ``reason`` label of
    ``wxsub_events_invalid_total``. All but INTERNAL are ``InputError`` reasons."""

    OVERSIZED = "oversized"  # more bytes than max_event_bytes (checked before parsing)
    BAD_UTF8 = "bad_utf8"
    BAD_JSON = "bad_json"
    UNKNOWN_VERSION = "unknown_version"  # ``v`` is another major version than this build reads
    UNKNOWN_TYPE = "unknown_type"  # on a multi-kind topic, ``type`` names no kind published there
    SCHEMA = "schema"  # the JSON Schema, or a check it cannot express, rejects it
    WRONG_KEY = "wrong_key"  # the record key is not the event's key
    INTERNAL = "internal"  # not an InputError: any other exception (a bug)


class InputError(WxsubError):
    """An input event is invalid. ``pointer`` is a JSON pointer to the bad part (or "")."""

    def __init__(self, reason: InputReason, message: str, pointer: str = "") -> None:
        super().__init__(f"{reason}: {message}" + (f" at {pointer}" if pointer else ""))
        self.reason = reason
        self.detail = message
        self.pointer = pointer


class RejectReason(enum.StrEnum):
    """Why the gateway refused a push: the ``reason`` label of ``wxsub_gateway_rejected_total``
    (the gateway maps each to an HTTP status)."""

    UNKNOWN_APP = "unknown_app"
    TOO_LARGE = "too_large"
    MISSING_PARAM = "missing_param"
    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    REPLAYED_NONCE = "replayed_nonce"
    APPID_MISMATCH = "appid_mismatch"
    BAD_CIPHERTEXT = "bad_ciphertext"
    MALFORMED = "malformed"
    FORBIDDEN_XML = "forbidden_xml"
    INVALID_EVENT = "invalid_event"


class PushRejected(WxsubError):
    """A message push the gateway refuses. ``reason`` is a short metric label (no secrets)."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ProduceError(WxsubError):
    """Kafka did not confirm a write (acks=all); the caller must not acknowledge its input."""


class PrometheusError(WxsubError):
    """A Prometheus started by ``wxsub_dev.promcheck`` failed, or refused a query."""


class WeChatError(WxsubError):
    """An error from the WeChat edge. ``errcode`` is WeChat's, or None for transport errors."""

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message if errcode is None else f"{message} (errcode {errcode})")
        self.errcode = errcode


class RetryableError(WeChatError):
    """Nothing was sent (or WeChat says so): safe to try again after a delay."""


class QuotaExceeded(RetryableError):
    """The appid's daily quota is used up (45009)."""


class PermanentError(WeChatError):
    """WeChat refused the request for good; retrying cannot help."""


class InDoubtError(WeChatError):
    """The request may have reached WeChat but no answer came back."""
