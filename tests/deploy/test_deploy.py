"""deploy/ agrees with the code: env names, ports, commands, config files, image versions.

Docker and a cluster are not available to the test suite, so this is static: the YAML is
parsed and compared with wxsub.settings (WXSUB_* names), the CLI's subcommands, the defaults
and the files the manifests mount.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from wxsub.cli import build_parser
from wxsub.merchants import parse_merchants
from wxsub.settings import Settings, load_settings
from wxsub_dev.local_kafka import KAFKA_VERSION

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
PORTS = {"worker": Settings().worker.web_port, "gateway": Settings().gateway.port}


def setting_env_names() -> set[str]:
    """Every WXSUB_<SECTION>_<NAME> the settings loader reads, and WXSUB_CONFIG."""
    names = {"WXSUB_CONFIG"}
    for section in fields(Settings):
        for f in fields(getattr(Settings(), section.name)):
            if f.name != "apps":
                names.add(f"WXSUB_{section.name}_{f.name}".upper())
    return names


def subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(role, container, env) of every wxsub container in compose and k8s."""
    for name, svc in compose()["services"].items():
        if svc.get("image", "").startswith("wxsub"):
            env = {k: str(v) for k, v in svc["environment"].items()}
            yield svc["command"][0], {"name": name, "args": svc["command"]}, env
    for doc in k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                env = {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
                yield c["args"][0], c, env


def test_every_wxsub_variable_is_a_setting() -> None:
    known = setting_env_names()
    found = 0
    for _, c, env in containers():
        for name in env:
            if name.startswith("WXSUB_"):
                assert name in known, f"{c['name']}: {name} is not read by wxsub.settings"
                found += 1
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for name in re.findall(r"\b(WXSUB_[A-Z_]+)=", dockerfile):
        assert name in known, f"Dockerfile: {name}"
    assert found > 20


def test_commands_are_subcommands_and_ports_match_the_settings() -> None:
    commands = subcommands()
    roles = set()
    for role, c, env in containers():
        assert role in commands, f"{c['name']}: `wxsub {role}` does not exist"
        roles.add(role)
        var = "WXSUB_WORKER_WEB_PORT" if role == "worker" else "WXSUB_GATEWAY_PORT"
        port = int(env.get(var, PORTS[role]))
        assert port == PORTS[role], f"{c['name']}: {var}={port}, the default is {PORTS[role]}"
        host = env.get("WXSUB_WORKER_WEB_HOST" if role == "worker" else "WXSUB_GATEWAY_HOST")
        assert host == "0.0.0.0", f"{c['name']}: must listen on every interface in a container"
        for p in c.get("ports", []):
            assert p["containerPort"] == port
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["port"] in ("http", port)
                assert c[probe]["httpGet"]["path"] in ("/health", "/metrics")
    assert roles == {"worker", "gateway"}
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["wxsub"]' in dockerfile and 'CMD ["worker"]' in dockerfile
    assert f"EXPOSE {PORTS['worker']} {PORTS['gateway']}" in dockerfile


def test_the_config_files_load_with_their_secrets_from_the_environment(tmp_path: Path) -> None:
    configmap = next(d for d in k8s_docs() if d["kind"] == "ConfigMap")
    tomls = [configmap["data"]["wxsub.toml"], compose()["configs"]["wxsub-config"]["content"]]
    secrets = {"WX_APP_SECRET": "s", "WX_PUSH_TOKEN": "t", "WX_PUSH_AES_KEY": "k" * 43}
    for i, text in enumerate(tomls):
        path = tmp_path / f"wxsub-{i}.toml"
        path.write_text(text, encoding="utf-8")
        settings = load_settings(path, env=secrets)
        assert settings.wechat.apps and settings.gateway.apps
        refs = set(re.findall(r'"env:([A-Z_]+)"', text))
        for _, c, env in containers():
            assert refs <= set(env), f"{c['name']} lacks {refs - set(env)}"
    merchants = parse_merchants(tomllib.loads(configmap["data"]["merchants.toml"]))
    assert merchants.apps
    parse_merchants(tomllib.loads((DEPLOY / "merchants.example.toml").read_text("utf-8")))


def test_secrets_are_references_never_values() -> None:
    for doc in k8s_docs():
        assert doc["kind"] != "Secret", "ship no Secret: create wxsub-secrets at install time"
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for e in c["env"]:
                    if e["name"].startswith("WX_"):
                        assert e["valueFrom"]["secretKeyRef"]["name"] == "wxsub-secrets"
    for name, value in compose()["x-wxsub-env"].items():
        if name.startswith("WX_"):
            assert str(value).startswith("${"), f"compose {name} must come from the environment"


def test_k8s_shape() -> None:
    docs = k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "wxsub-worker") in kinds and ("Deployment", "wxsub-gateway") in kinds
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    state = sts["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in state["volumeMounts"] if m["name"] == "state")
    env = {e["name"]: e.get("value") for e in state["env"]}
    assert mount["mountPath"] == env["WXSUB_WORKER_STATE_DIR"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    assert sts["spec"]["serviceName"] in {
        d["metadata"]["name"] for d in docs if d["kind"] == "Service"
    }
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs)
    for svc in (d for d in docs if d["kind"] == "Service"):
        matched = [
            w
            for w in workloads
            if svc["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, svc["metadata"]["name"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_compose_mounts_exist_and_kafka_matches_the_tested_version() -> None:
    doc = compose()
    assert doc["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    prom = next(v for v in doc["services"]["prometheus"]["volumes"] if "prometheus" in v)
    assert (DEPLOY / prom.split(":")[0] / "prometheus.yml").exists()
    assert (DEPLOY / "grafana/dashboards").is_dir()
    targets = doc["configs"]["worker-targets"]["content"]
    workers = sorted(n for n, s in doc["services"].items() if s.get("command") == ["worker"])
    assert workers == ["worker-1", "worker-2"]
    assert all(f"{w}:{PORTS['worker']}" in targets for w in workers)
    assert (DEPLOY / "prometheus/targets/worker.json").exists()  # the file the config replaces


@pytest.mark.parametrize("path", ["deploy/Dockerfile", "deploy/compose.yaml", "deploy/k8s"])
def test_the_deploy_files_exist(path: str) -> None:
    assert (DEPLOY.parent / path).exists()
