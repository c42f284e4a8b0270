"""kafka.* security settings: env:NAME secrets, errors naming the key, aiokafka kwargs."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from wxsub.errors import ConfigError
from wxsub.settings import load_settings
from wxsub.streams.connection import access_denied, client_kwargs, security_kwargs
from wxsub_dev.kafka_certs import make_tls


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    kafka = load_settings(env={}).kafka
    assert security_kwargs(kafka) == {}
    assert client_kwargs(kafka) == {"bootstrap_servers": "127.0.0.1:9092"}


def test_sasl_ssl_from_env_with_an_env_secret(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    env = {
        "WXSUB_KAFKA_BOOTSTRAP": "127.0.0.1:1,127.0.0.1:2",
        "WXSUB_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "WXSUB_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "WXSUB_KAFKA_SASL_USERNAME": "svc",
        "WXSUB_KAFKA_SASL_PASSWORD": "env:KPW",
        "KPW": "s3cr3t-kafka-pw",
        "WXSUB_KAFKA_SSL_CAFILE": str(tls.ca),
    }
    kafka = load_settings(env=env).kafka
    assert "s3cr3t" not in repr(kafka)
    kw = client_kwargs(kafka)
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("svc", "s3cr3t-kafka-pw")
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["ssl_context"].check_hostname


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"WXSUB_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "kafka.sasl_username"),
        (
            {"WXSUB_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "WXSUB_KAFKA_SASL_USERNAME": "u"},
            "kafka.sasl_password",
        ),
        ({"WXSUB_KAFKA_SASL_PASSWORD": "env:NOPE"}, "kafka.sasl_password"),
        ({"WXSUB_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol"),
        ({"WXSUB_KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "kafka.ssl_cafile"),
        ({"WXSUB_KAFKA_MIN_INSYNC_REPLICAS": "2"}, "kafka.min_insync_replicas"),
    ],
)
def test_errors_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert key in str(info.value)


def test_access_denied_names_principal_resource_and_acl() -> None:
    from aiokafka.errors import GroupAuthorizationFailedError, KafkaError

    sec = {"sasl_plain_username": "svc", "sasl_plain_password": "pw-never-shown"}
    denied = access_denied(GroupAuthorizationFailedError(), sec, "Group:wxsub-orders")
    assert denied is not None
    text = str(denied)
    assert "User:svc" in text and "Group:wxsub-orders" in text and "READ" in text
    assert "pw-never-shown" not in text and "\n" not in text
    assert access_denied(KafkaError("other"), sec, "x") is None
