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
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from wxsub.errors import ConfigError
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
    """A string that never shows itself in repr/str. Use ``.reveal()`` where it must be sent."""

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


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "wxsub."
    partitions: int = 8
    replication_factor: int = 1
    producer_linger_s: float = 0.01
    request_timeout_s: float = 30.0
    # connecting like a production client (docs/operations.md, "Securing Kafka")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: Secret | None = None  # "env:NAME" keeps it out of the file
    ssl_cafile: Path | None = None  # PEM CA bundle (default: the system's)
    ssl_certfile: Path | None = None  # PEM client certificate (mutual TLS)
    ssl_keyfile: Path | None = None  # its PEM private key
    ssl_key_password: Secret | None = None
    ssl_check_hostname: bool = True
    # false: the operator creates the topics; the worker only checks them (and says which lack)
    create_topics: bool = True
    min_insync_replicas: int | None = None  # topic config for wxsub's topics (None: broker's)

    def __post_init__(self) -> None:
        _check(self.partitions >= 1, "kafka.partitions", "must be >= 1")
        _check(self.replication_factor >= 1, "kafka.replication_factor", "must be >= 1")
        _check(bool(self.bootstrap.strip()), "kafka.bootstrap", "must not be empty")
        if self.min_insync_replicas is not None:
            _check(
                1 <= self.min_insync_replicas <= self.replication_factor,
                "kafka.min_insync_replicas",
                "must be >= 1 and <= kafka.replication_factor",
            )
        if self.security_protocol.startswith("SASL_"):
            _check(
                bool(self.sasl_username),
                "kafka.sasl_username",
                f"required with security_protocol {self.security_protocol}",
            )
            _check(
                bool(self.sasl_password),
                "kafka.sasl_password",
                f"required with security_protocol {self.security_protocol} (a string or env:NAME)",
            )
        _check(
            self.ssl_keyfile is None or self.ssl_certfile is not None,
            "kafka.ssl_certfile",
            "required when kafka.ssl_keyfile is set",
        )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, key)
            _check(path is None or path.is_file(), f"kafka.{key}", f"no such file: {path}")

    def topic(self, name: str) -> str:
        """Full topic name for a logical one (``topic('intents')`` -> ``wxsub.intents``)."""
        return f"{self.topic_prefix}{name}"


@dataclass(frozen=True)
class WorkerSettings:
    app_id: str = "wxsub"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    state_dir: Path = Path(".wxsub/state")
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    max_in_flight: int = 200
    # records a stage takes per poll, over its partitions (each partition's share is one
    # transaction): larger amortises the transactions' round trips, smaller cuts latency
    max_batch: int = 2000
    # a partition starts its next batch no sooner than this after its last one started (Kafka
    # Streams' commit.interval.ms): fewer, larger transactions, at most this much added latency
    commit_interval_ms: int = 100
    in_doubt_policy: Literal["report", "resend"] = "report"
    merchants: Path | None = None  # bootstrap: used until the merchants topic holds a config
    # the worker that owns deliver partition 0 pulls every app's template list this often
    # (wxsub.liveconfig); 0 = never (pull with ``wxsub templates pull``)
    templates_pull_interval_s: float = 300.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_event_bytes: int = DEFAULT_MAX_BYTES
    session_timeout_ms: int = 10_000
    # expiry (docs/lifecycle.md): each store is swept once per interval, at most this many
    # entries per timer tick, on the stages' timers
    sweep_interval_s: float = 600.0
    sweep_per_tick: int = 1000

    def __post_init__(self) -> None:
        _check(self.sweep_interval_s > 0, "worker.sweep_interval_s", "must be > 0")
        _check(self.sweep_per_tick >= 1, "worker.sweep_per_tick", "must be >= 1")
        _check(0 < self.web_port < 65536, "worker.web_port", "must be a TCP port (1-65535)")
        _check(self.max_in_flight >= 1, "worker.max_in_flight", "must be >= 1")
        _check(self.max_batch >= 1, "worker.max_batch", "must be >= 1")
        _check(self.commit_interval_ms >= 0, "worker.commit_interval_ms", "must be >= 0")
        _check(self.max_event_bytes >= 256, "worker.max_event_bytes", "must be >= 256")
        _check(
            self.templates_pull_interval_s >= 0, "worker.templates_pull_interval_s", "must be >= 0"
        )


@dataclass(frozen=True)
class AppCredentials:
    """A mini program's API credentials."""

    appid: str
    secret: Secret


@dataclass(frozen=True)
class WeChatSettings:
    api_base: str = "https://api.weixin.qq.com"
    token_mode: Literal["stable", "classic"] = "stable"  # noqa: S105 (a mode, not a secret)
    token_refresh_margin_s: float = 200.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_connections: int = 200
    keepalive_expiry_s: float = 15.0
    apps: Mapping[str, AppCredentials] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(
            self.api_base.startswith(("http://", "https://")),
            "wechat.api_base",
            "must start with http:// or https://",
        )
        _check(self.read_timeout_s > 0, "wechat.read_timeout_s", "must be > 0")
        _check(self.max_connections >= 1, "wechat.max_connections", "must be >= 1")


@dataclass(frozen=True)
class PushEndpoint:
    """Message-push settings of one mini program (WeChat -> our gateway)."""

    appid: str
    token: Secret
    aes_key: Secret | None = None
    mode: Literal["plain", "compatible", "safe"] = "plain"
    original_id: str | None = None  # the gh_... id WeChat sends as ToUserName


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8081
    max_body_bytes: int = 64 * 1024
    timestamp_window_s: int = 300
    dedupe_ttl_s: float = 600.0
    dedupe_max_entries: int = 100_000
    produce_timeout_s: float = 4.0
    apps: Mapping[str, PushEndpoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(0 < self.port < 65536, "gateway.port", "must be a TCP port (1-65535)")
        _check(self.max_body_bytes >= 256, "gateway.max_body_bytes", "must be >= 256")
        _check(self.dedupe_max_entries >= 1, "gateway.dedupe_max_entries", "must be >= 1")
        _check(
            self.dedupe_ttl_s >= 2 * self.timestamp_window_s,
            "gateway.dedupe_ttl_s",
            "must be >= 2 * gateway.timestamp_window_s (a replay inside the window is caught)",
        )
        _check(self.produce_timeout_s > 0, "gateway.produce_timeout_s", "must be > 0")


@dataclass(frozen=True)
class DeliverySettings:
    """The deliver stage's retry, pause and reconciliation knobs (``DeliveryPolicy``; its
    ``in_doubt_resend`` follows ``worker.in_doubt_policy``). ``docs/delivery.md`` explains them."""

    max_attempts: int = 5  # retryable refusals before a send is failed
    backoff_base_ms: int = 2_000  # first retry delay; doubles per refusal
    backoff_max_ms: int = 300_000
    jitter: float = 0.25  # +- this fraction of the delay
    quota_pause_ms: int = 600_000  # 45009: the appid's sends pause this long
    receipt_skew_ms: int = 5_000  # a receipt may carry a time this much before our attempt
    receipt_window_ms: int = 120_000  # ... and settles an attempt at most this much older
    timer_interval_s: float = 1.0  # how often due retries and crash leftovers are looked at

    def __post_init__(self) -> None:
        _check(self.max_attempts >= 1, "delivery.max_attempts", "must be >= 1")
        _check(self.backoff_base_ms >= 0, "delivery.backoff_base_ms", "must be >= 0")
        _check(
            self.backoff_max_ms >= self.backoff_base_ms,
            "delivery.backoff_max_ms",
            "must be >= delivery.backoff_base_ms",
        )
        _check(0 <= self.jitter < 1, "delivery.jitter", "must be >= 0 and < 1")
        _check(self.quota_pause_ms >= 1, "delivery.quota_pause_ms", "must be >= 1")
        _check(self.receipt_skew_ms >= 0, "delivery.receipt_skew_ms", "must be >= 0")
        _check(self.receipt_window_ms >= 0, "delivery.receipt_window_ms", "must be >= 0")
        _check(self.timer_interval_s > 0, "delivery.timer_interval_s", "must be > 0")


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class SupportSettings:
    """The support query API and console on each worker (docs/support.md). They show personal
    data, so they are off by default, on loopback unless configured, and need ``token``
    (``Authorization: Bearer``; give it as ``env:NAME``) on any other interface."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 6067
    token: Secret | None = None
    # how the other workers reach this one (default http://host:port); in its group metadata
    advertised_url: str = ""

    def __post_init__(self) -> None:
        _check(0 < self.port < 65536, "support.port", "must be a TCP port (1-65535)")
        _check(
            not self.enabled or self.host in _LOOPBACK or bool(self.token),
            "support.token",
            "required when support.host is not a loopback address",
        )

    @property
    def url(self) -> str:
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
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
            parsed = {
                k: _coerce(f"{name}.{k}", _field_type(section, k), v) for k, v in values.items()
            }
            out = replace(out, **{name: replace(section, **parsed)})
        return out


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any) and the ``WXSUB_*`` environment into a validated Settings."""
    env = os.environ if env is None else env
    path = path or env.get("WXSUB_CONFIG") or None
    doc = read_toml(path, "config") if path is not None else {}
    unknown = set(doc) - {f.name for f in fields(Settings)}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown section")
    sections: dict[str, Any] = {}
    for f in fields(Settings):
        sections[f.name] = _load_section(f.name, _section_type(f.name), doc.get(f.name, {}), env)
    return Settings(**sections)


# --- internals -------------------------------------------------------------------------------


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _section_type(name: str) -> type:
    hints = typing.get_type_hints(Settings)
    return typing.cast(type, hints[name])


def _field_type(section: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        raise ConfigError(name, "unknown setting")
    return hints[name]


def _load_section(name: str, cls: type, table: Any, env: Mapping[str, str]) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(name, "must be a table")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = f"{name}.{f.name}"
        env_name = f"WXSUB_{name}_{f.name}".upper()
        if f.name == "apps":
            values["apps"] = _load_apps(name, table.get("apps", {}), env)
        elif env_name in env:
            values[f.name] = _coerce(key, hints[f.name], env[env_name], env_name)
        elif f.name in table:
            values[f.name] = _coerce(key, hints[f.name], table[f.name])
        value = values.get(f.name)
        if isinstance(value, Secret) and value.reveal().startswith("env:"):
            values[f.name] = _secret(key, value.reveal(), env)  # a secret named, not given
    extra = set(table) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if extra:
        raise ConfigError(f"{name}.{sorted(extra)[0]}", "unknown setting")
    return cls(**values)


def _load_apps(section: str, table: Any, env: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{section}.apps", "must be a table of appid -> settings")
    out: dict[str, Any] = {}
    for appid, raw in table.items():
        key = f"{section}.apps.{appid}"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        if section == "wechat":
            out[appid] = AppCredentials(appid, _secret(f"{key}.secret", raw.get("secret"), env))
        else:
            aes = raw.get("aes_key")
            mode = raw.get("mode", "plain")
            _check(
                mode in ("plain", "compatible", "safe"),
                f"{key}.mode",
                "must be plain, compatible or safe",
            )
            out[appid] = PushEndpoint(
                appid,
                _secret(f"{key}.token", raw.get("token"), env),
                _secret(f"{key}.aes_key", aes, env) if aes is not None else None,
                mode,
                raw.get("original_id"),
            )
            if mode != "plain":
                _check(out[appid].aes_key is not None, f"{key}.aes_key", f"required in {mode} mode")
    return out


def _secret(key: str, raw: Any, env: Mapping[str, str]) -> Secret:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(key, "required (a string, or env:VARNAME)")
    if raw.startswith("env:"):
        var = raw[4:]
        if var not in env:
            raise ConfigError(key, f"environment variable {var} is not set")
        return Secret(env[var])
    return Secret(raw)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(key: str, tp: Any, raw: Any, env_name: str | None = None) -> Any:
    """Turn a TOML value or env string into ``tp``, or raise ConfigError naming the key."""
    where = f"{key} (env {env_name})" if env_name else key
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if raw is None or raw == "":
            return None
        return _coerce(key, args[0], raw, env_name)
    if origin is Literal:
        choices = get_args(tp)
        if raw not in choices:
            raise ConfigError(where, f"must be one of {', '.join(map(str, choices))}; got {raw!r}")
        return raw
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in (*_TRUE, *_FALSE):
            return raw.lower() in _TRUE
        raise ConfigError(where, f"must be a boolean; got {raw!r}")
    if tp in (int, float):
        try:
            if isinstance(raw, bool):
                raise ValueError
            return tp(raw)
        except (TypeError, ValueError):
            kind = "an integer" if tp is int else "a number"
            raise ConfigError(where, f"must be {kind}; got {raw!r}") from None
    if tp is Path:
        if not isinstance(raw, str | Path):
            raise ConfigError(where, f"must be a path; got {raw!r}")
        return Path(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(where, f"must be a string; got {raw!r}")
        return raw
    if tp is Secret:
        return Secret(str(raw))
    if is_dataclass(tp):
        raise ConfigError(where, "must be a table")
    raise ConfigError(where, f"unsupported type {tp!r}")
