"""Every benchmark connects with the project's Kafka settings (``$WXSUB_CONFIG`` /
``WXSUB_KAFKA_*``: TLS, SASL), so each one runs against a secured cluster too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.common import ROOT, Deployment, client, kafka_settings

SECURE_ENV = {
    "WXSUB_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "WXSUB_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "WXSUB_KAFKA_SASL_USERNAME": "bench",
    "WXSUB_KAFKA_SASL_PASSWORD": "bench-pw",
    "WXSUB_KAFKA_REPLICATION_FACTOR": "3",
}


def test_no_benchmark_builds_a_client_from_a_bare_bootstrap() -> None:
    bare = re.compile(r"bootstrap_servers\s*=")
    offenders = [
        f"{path.name}:{n}"
        for path in sorted((ROOT / "bench").glob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if bare.search(line)
    ]
    assert offenders == [], "use bench.common.client / client_kwargs(settings.kafka)"


def test_benchmark_clients_take_the_environments_security_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("WXSUB_CONFIG", raising=False)
    for name, value in SECURE_ENV.items():
        monkeypatch.setenv(name, value)
    kw = client("broker-1:9093")
    assert kw["bootstrap_servers"] == "broker-1:9093"
    assert kw["security_protocol"] == "SASL_PLAINTEXT"
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"]) == ("SCRAM-SHA-512", "bench")
    assert kw["sasl_plain_password"] == "bench-pw"
    assert kafka_settings("broker-1:9093").replication_factor == 3

    dep = Deployment("broker-1:9093", tmp_path)  # the deployments' own clients
    assert dep.security["sasl_plain_username"] == "bench"
    assert dep.kafka.topic_prefix == f"b{dep.uid}." and dep.kafka.replication_factor == 3
