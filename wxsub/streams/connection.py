"""How every wxsub process connects to Kafka: one place that turns KafkaSettings into aiokafka
client keyword arguments, and one that turns an auth failure into a one-line explanation.

``client_kwargs(settings.kafka)`` is what the worker, the gateway, ``wxsub publish``,
``wxsub stats``, the demo and the benchmarks pass to every ``AIOKafkaProducer``,
``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``; :func:`security_kwargs` is the same without
``bootstrap_servers`` (for code that is handed a bootstrap string separately). The returned dicts
hold the revealed SASL password: pass them to aiokafka, never log them.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka.errors import KafkaError

from wxsub.errors import SetupError
from wxsub.settings import KafkaSettings

__all__ = [
    "AUTH_ERRORS",
    "AccessDenied",
    "KafkaProbe",
    "access_denied",
    "bootstrap_error",
    "client_kwargs",
    "principal_of",
    "security_kwargs",
]

#: aiokafka error class names that mean "authentication or authorization failed": retrying
#: cannot help, the operator must fix a credential or an ACL.
AUTH_ERRORS: Mapping[str, str] = {
    "TopicAuthorizationFailedError": "Topic:{resource} (READ or WRITE/DESCRIBE)",
    "GroupAuthorizationFailedError": "Group:{resource} (READ)",
    "TransactionalIdAuthorizationFailed": "TransactionalId:{resource} (WRITE)",
    "ClusterAuthorizationFailedError": "Cluster (IDEMPOTENT_WRITE, or CREATE for topics)",
    "TopicAuthorizationFailed": "Topic:{resource}",
    "SaslAuthenticationFailed": "",
    "AuthenticationFailedError": "",
    "IllegalSaslStateError": "",
    "UnsupportedSaslMechanismError": "",
}


class AccessDenied(SetupError):
    """Kafka refused our principal: bad credentials or a missing ACL. Never retried."""


def security_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for ``kafka.security_protocol`` and friends (no bootstrap)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = _ssl_context(
            str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
            kafka.ssl_key_password.reveal() if kafka.ssl_key_password else None,
            kafka.ssl_check_hostname,
        )
    if protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # KafkaSettings checked it
        out["sasl_mechanism"] = kafka.sasl_mechanism
        out["sasl_plain_username"] = kafka.sasl_username
        out["sasl_plain_password"] = kafka.sasl_password.reveal()
    return out


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """``bootstrap_servers`` plus :func:`security_kwargs`: what every aiokafka client gets."""
    return {"bootstrap_servers": kafka.bootstrap, **security_kwargs(kafka)}


def principal_of(security: Mapping[str, Any]) -> str:
    """``User:<name>`` for SASL, else a description (TLS/plaintext principals are the broker's)."""
    user = security.get("sasl_plain_username")
    if user:
        return f"User:{user}"
    if security.get("security_protocol") == "SSL":
        return "the client certificate's subject"
    return "User:ANONYMOUS"


def access_denied(
    exc: BaseException, security: Mapping[str, Any], resource: str
) -> AccessDenied | None:
    """An :class:`AccessDenied` with one line naming principal, resource and missing ACL when
    ``exc`` (or its cause) is an authentication/authorization failure, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, KafkaError | OSError | SetupError) and name in AUTH_ERRORS:
            who = principal_of(security)
            acl = AUTH_ERRORS[name].format(resource=resource)
            if not acl:
                return AccessDenied(
                    f"Kafka authentication failed for {who} "
                    f"({security.get('sasl_mechanism', security.get('security_protocol', ''))}): "
                    "check kafka.sasl_username / kafka.sasl_password"
                )
            return AccessDenied(
                f"Kafka denied {who} access to {resource}: missing ACL ALLOW {acl} "
                f"({name}; docs/operations.md lists each component's ACLs)"
            )
        seen = seen.__cause__ or seen.__context__
    return None


async def bootstrap_error(
    bootstrap: str, security: Mapping[str, Any], timeout_s: float = 5.0
) -> BaseException | None:
    """Why connecting to ``bootstrap`` fails, or None when some broker accepts us.

    aiokafka's bootstrap swallows each broker's error (a bad password, a TLS failure) into one
    ``KafkaConnectionError("Unable to bootstrap ...")``; this opens one connection per address
    itself, so :func:`access_denied` can tell an authentication failure from an outage."""
    from aiokafka.conn import create_conn

    last: BaseException | None = None
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(
                    host.strip("[]"),
                    int(port),
                    request_timeout_ms=int(timeout_s * 1000),
                    **security,
                )
        except (KafkaError, OSError, TimeoutError, ValueError) as exc:
            last = exc
            if access_denied(exc, security, "") is not None:
                return exc
            continue
        conn.close()
        return None
    return last


@functools.lru_cache(maxsize=8)
def _ssl_context(
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    from aiokafka.helpers import create_ssl_context

    ctx: ssl.SSLContext = create_ssl_context(
        cafile=cafile, certfile=certfile, keyfile=keyfile, password=password
    )
    ctx.check_hostname = check_hostname  # the CA is checked either way
    return ctx


class KafkaProbe:
    """Is Kafka reachable right now? One metadata round trip, cached for ``max_age_s``.

    What the worker's and the gateway's ``/health/ready`` ask. Never raises: a failed probe is
    ``(False, reason)``, the reason naming the error class only (never a credential)."""

    def __init__(
        self, kafka: KafkaSettings, timeout_s: float = 3.0, max_age_s: float = 1.0
    ) -> None:
        self._kw = client_kwargs(kafka)
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._client: Any = None
        self._last: tuple[float, bool, str] = (-1e9, False, "not probed yet")
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, str]:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            at, ok, why = self._last
            if now - at < self._max_age_s:
                return ok, why
            ok, why = await self._probe()
            self._last = (asyncio.get_running_loop().time(), ok, why)
            return ok, why

    async def _probe(self) -> tuple[bool, str]:
        from aiokafka.client import AIOKafkaClient

        try:
            async with asyncio.timeout(self._timeout_s):
                if self._client is None:
                    client = AIOKafkaClient(client_id="wxsub-health", **self._kw)
                    try:
                        await client.bootstrap()
                    except BaseException:
                        await client.close()
                        raise
                    self._client = client
                await self._client.fetch_all_metadata()
        except TimeoutError:
            return False, "kafka: no metadata answer in time"
        except (KafkaError, OSError) as exc:
            return False, f"kafka: {type(exc).__name__}"
        return True, "ok"

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
