"""One typed, frozen settings object, read once at start-up.

Sources, later wins: defaults < TOML file (``WXSUB_CONFIG`` or ``--config``) < environment.
Each scalar field ``<section>.<name>`` has the env var ``WXSUB_<SECTION>_<NAME>``
(``kafka.bootstrap`` <- ``WXSUB_KAFKA_BOOTSTRAP``). Per-app tables (secrets, push keys) come from
the TOML file; their secrets may be given as ``env:VARNAME`` so the file itself holds none.
Every error names the key that is wrong. Secrets are wrapped in :class:`Secret`, whose repr and
str are masked, so they never reach logs, metrics or exception messages by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, GetCoreSchemaHandler, ValidationInfo
from pydantic.dataclasses import dataclass
from pydantic_core import CoreSchema, core_schema

from wxsub.configmodel import STRICT, Bad, Int, Number, validate
from wxsub.schemas.codec import DEFAULT_MAX_BYTES
from wxsub.tomlfile import read_toml

__all__ = [
    "AppCredentials",
    "DeliverySettings",
    "GatewaySettings",
    "KafkaSettings",
    "PushEndpoint",
    "Secret",
    "Settings",
    "SupportSettings",
    "WeChatSettings",
    "WorkerSettings",
    "load_settings",
]


class Secret:
    """A string that never shows itself in repr/str. Use ``.reveal()`` where it must be sent.

    In a settings file it is the value itself or ``env:VARNAME`` (read from the environment
    the settings are loaded with), so the file need not hold it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.with_info_plain_validator_function(_secret)


def _secret(raw: Any, info: ValidationInfo) -> Secret:
    """A Secret from a settings value; the messages never hold the value."""
    if isinstance(raw, Secret):
        return raw
    if not isinstance(raw, str) or not raw:
        raise ValueError("required (a string, or env:VARNAME)")
    if raw.startswith("env:"):
        env = (info.context or {}).get("env", os.environ)
        var = raw[4:]
        if var not in env:
            raise ValueError(f"environment variable {var} is not set")
        return Secret(env[var])
    return Secret(raw)


def _rule(ok: Any, message: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _with_appids(table: Any) -> Any:
    """``[<section>.apps.<appid>]`` tables get their appid from the key."""
    if not isinstance(table, Mapping):
        return table
    return {k: {**v, "appid": k} if isinstance(v, Mapping) else v for k, v in table.items()}


Port = Annotated[Int, _rule(lambda p: 0 < p < 65536, "must be a TCP port (1-65535)")]
NonEmpty = Annotated[str, _rule(lambda s: bool(s.strip()), "must not be empty")]
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_is_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_is_none)]
OptionalSecret = Annotated[Secret | None, BeforeValidator(_empty_is_none)]


@dataclass(frozen=True, config=STRICT)
class KafkaSettings:
    bootstrap: NonEmpty = "127.0.0.1:9092"
    topic_prefix: str = "wxsub."
    partitions: Annotated[Int, Field(ge=1)] = 8
    replication_factor: Annotated[Int, Field(ge=1)] = 1
    producer_linger_s: Number = 0.01
    request_timeout_s: Number = 30.0
    # connecting like a production client (docs/operations.md, "Securing Kafka")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: OptionalSecret = None  # "env:NAME" keeps it out of the file
    ssl_cafile: OptionalPath = None  # PEM CA bundle (default: the system's)
    ssl_certfile: OptionalPath = None  # PEM client certificate (mutual TLS)
    ssl_keyfile: OptionalPath = None  # its PEM private key
    ssl_key_password: OptionalSecret = None
    ssl_check_hostname: bool = True
    # false: the operator creates the topics; the worker only checks them (and says which lack)
    create_topics: bool = True
    # topic config for wxsub's topics (None: the broker's)
    min_insync_replicas: Annotated[Int | None, BeforeValidator(_empty_is_none)] = None

    def __post_init__(self) -> None:
        isr = self.min_insync_replicas
        if isr is not None and not 1 <= isr <= self.replication_factor:
            raise Bad("min_insync_replicas", "must be >= 1 and <= kafka.replication_factor")
        protocol = self.security_protocol
        if protocol.startswith("SASL_"):
            if not self.sasl_username:
                raise Bad(
                    "sasl_username", f"required with security_protocol {self.security_protocol}"
                )
            if not self.sasl_password:
                raise Bad(
                    "sasl_password",
                    f"required with security_protocol {protocol} (a string or env:NAME)",
                )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise Bad("ssl_certfile", "required when kafka.ssl_keyfile is set")
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                raise Bad(key, f"no such file: {path}")

    def topic(self, name: str) -> str:
        """Full topic name for a logical one (``topic('intents')`` -> ``wxsub.intents``)."""
        return f"{self.topic_prefix}{name}"


@dataclass(frozen=True, config=STRICT)
class WorkerSettings:
    app_id: str = "wxsub"
    web_host: str = "127.0.0.1"
    web_port: Port = 6066
    state_dir: Path = Path(".wxsub/state")
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    max_in_flight: Annotated[Int, Field(ge=1)] = 200
    # records a stage takes per poll, over its partitions (each partition's share is one
    # transaction): larger amortises the transactions' round trips, smaller cuts latency
    max_batch: Annotated[Int, Field(ge=1)] = 2000
    # a partition starts its next batch no sooner than this after its last one started (Kafka
    # Streams' commit.interval.ms): fewer, larger transactions, at most this much added latency
    commit_interval_ms: Annotated[Int, Field(ge=0)] = 100
    in_doubt_policy: Literal["report", "resend"] = "report"
    merchants: OptionalPath = None  # bootstrap: used until the merchants topic holds a config
    # the worker that owns deliver partition 0 pulls every app's template list this often
    # (wxsub.liveconfig); 0 = never (pull with ``wxsub templates pull``)
    templates_pull_interval_s: Annotated[Number, Field(ge=0)] = 300.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_event_bytes: Annotated[Int, Field(ge=256)] = DEFAULT_MAX_BYTES
    session_timeout_ms: Int = 10_000
    # expiry (docs/lifecycle.md): each store is swept once per interval, at most this many
    # entries per timer tick, on the stages' timers
    sweep_interval_s: Annotated[Number, Field(gt=0)] = 600.0
    sweep_per_tick: Annotated[Int, Field(ge=1)] = 1000
    # an ``opened`` event whose send's outcome has not reached the stats stage yet waits this
    # long after its event time, then ends unknown_ref (docs/policies.md, Opens). A send in doubt
    # is settled by its receipt, which WeChat pushes when it handles the send, before any open:
    # the default is the receipt window (delivery.receipt_window_ms + receipt_skew_ms)
    open_grace_ms: Annotated[Int, Field(ge=0)] = 125_000


@dataclass(frozen=True, config=STRICT)
class AppCredentials:
    """A mini program's API credentials."""

    appid: str
    secret: Secret


@dataclass(frozen=True, config=STRICT)
class WeChatSettings:
    api_base: Annotated[
        str,
        _rule(
            lambda u: u.startswith(("http://", "https://")), "must start with http:// or https://"
        ),
    ] = "https://api.weixin.qq.com"
    token_mode: Literal["stable", "classic"] = "stable"  # noqa: S105 (a mode, not a secret)
    token_refresh_margin_s: Number = 200.0
    connect_timeout_s: Number = 3.0
    read_timeout_s: Annotated[Number, Field(gt=0)] = 10.0
    max_connections: Annotated[Int, Field(ge=1)] = 200
    keepalive_expiry_s: Number = 15.0
    apps: Annotated[Mapping[str, AppCredentials], BeforeValidator(_with_appids)] = field(
        default_factory=dict
    )


@dataclass(frozen=True, config=STRICT)
class PushEndpoint:
    """Message-push settings of one mini program (WeChat -> our gateway)."""

    appid: str
    token: Secret
    aes_key: Secret | None = None
    mode: Literal["plain", "compatible", "safe"] = "plain"
    original_id: OptionalStr = None  # the gh_... id WeChat sends as ToUserName

    def __post_init__(self) -> None:
        if self.mode != "plain" and self.aes_key is None:
            raise Bad("aes_key", f"required in {self.mode} mode")


@dataclass(frozen=True, config=STRICT)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: Port = 8081
    max_body_bytes: Annotated[Int, Field(ge=256)] = 64 * 1024
    timestamp_window_s: Int = 300
    dedupe_ttl_s: Number = 600.0
    dedupe_max_entries: Annotated[Int, Field(ge=1)] = 100_000
    produce_timeout_s: Annotated[Number, Field(gt=0)] = 4.0
    apps: Annotated[Mapping[str, PushEndpoint], BeforeValidator(_with_appids)] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.dedupe_ttl_s < 2 * self.timestamp_window_s:
            raise Bad(
                "dedupe_ttl_s",
                "must be >= 2 * gateway.timestamp_window_s (a replay inside the window is caught)",
            )


@dataclass(frozen=True, config=STRICT)
class DeliverySettings:
    """The deliver stage's retry, pause and reconciliation knobs (``DeliveryPolicy``; its
    ``in_doubt_resend`` follows ``worker.in_doubt_policy``). ``docs/delivery.md`` explains them."""

    max_attempts: Annotated[Int, Field(ge=1)] = 5  # retryable refusals before a send is failed
    backoff_base_ms: Annotated[Int, Field(ge=0)] = 2_000  # first retry delay; doubles per refusal
    backoff_max_ms: Int = 300_000
    jitter: Annotated[Number, _rule(lambda j: 0 <= j < 1, "must be >= 0 and < 1")] = 0.25
    quota_pause_ms: Annotated[Int, Field(ge=1)] = (
        600_000  # 45009: the appid's sends pause this long
    )
    receipt_skew_ms: Annotated[Int, Field(ge=0)] = (
        5_000  # a receipt may carry a time this much before our attempt
    )
    receipt_window_ms: Annotated[Int, Field(ge=0)] = (
        120_000  # ... and settles an attempt at most this much older
    )
    timer_interval_s: Annotated[Number, Field(gt=0)] = (
        1.0  # how often due retries and crash leftovers are looked at
    )

    def __post_init__(self) -> None:
        if self.backoff_max_ms < self.backoff_base_ms:
            raise Bad("backoff_max_ms", "must be >= delivery.backoff_base_ms")


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, config=STRICT)
class SupportSettings:
    """The support query API and console on each worker (docs/support.md). They show personal
    data, so they are off by default, on loopback unless configured, and need ``token``
    (``Authorization: Bearer``; give it as ``env:NAME``) on any other interface."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 6067
    token: OptionalSecret = None
    # how the other workers reach this one (default http://host:port); in its group metadata
    advertised_url: str = ""

    def __post_init__(self) -> None:
        if self.enabled and self.host not in _LOOPBACK and not self.token:
            raise Bad("token", "required when support.host is not a loopback address")

    @property
    def url(self) -> str:
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, config=STRICT)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    wechat: WeChatSettings = field(default_factory=WeChatSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    support: SupportSettings = field(default_factory=SupportSettings)

    def with_overrides(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some scalar fields replaced, validated like any other source."""
        out = self
        for name, values in sections.items():
            section = getattr(out, name)
            current = {f.name: getattr(section, f.name) for f in fields(section)}
            new = validate(type(section), current | dict(values), prefix=name)
            out = replace(out, **{name: new})
        return out


_SECTIONS: dict[str, Any] = {
    "kafka": KafkaSettings,
    "worker": WorkerSettings,
    "wechat": WeChatSettings,
    "gateway": GatewaySettings,
    "delivery": DeliverySettings,
    "support": SupportSettings,
}


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any) and the ``WXSUB_*`` environment into a validated Settings.

    ``WXSUB_<SECTION>_<NAME>`` sets ``<section>.<name>`` for every scalar field (other
    ``WXSUB_*`` variables are not settings and are left alone); ``env:VARNAME`` secrets are
    read from ``env`` too (default: the process environment)."""
    env = os.environ if env is None else env
    path = path or env.get("WXSUB_CONFIG") or None
    doc: dict[str, Any] = dict(read_toml(path, "config")) if path is not None else {}
    env_keys: dict[str, str] = {}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            env_name = f"WXSUB_{section}_{f.name}".upper()
            table = doc.get(section, {})
            if f.name != "apps" and env_name in env and isinstance(table, Mapping):
                doc[section] = {**table, f.name: env[env_name]}
                env_keys[f"{section}.{f.name}"] = env_name
    settings: Settings = validate(Settings, doc, context={"env": env}, env_keys=env_keys)
    return settings
