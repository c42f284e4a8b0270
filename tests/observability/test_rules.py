"""promtool checks the rules and the scrape config, and runs the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess

from tests.observability.catalog import PROMETHEUS_DIR, alert_rules, load_yaml


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: run deploy/prometheus/install.sh (scripts/setup.sh does)"
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_are_valid() -> None:
    res = _promtool("check", "rules", "rules/wxsub.rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


def test_rules_unit_tests_pass() -> None:
    res = _promtool("test", "rules", "rules/tests.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = load_yaml(PROMETHEUS_DIR / "rules" / "tests.yml")["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for name in (rule["alert"] for rule in alert_rules()):
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} never shown quiet"


def test_scrape_config_is_valid() -> None:
    res = _promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_install_script_is_quiet_when_installed() -> None:
    res = subprocess.run(
        ["bash", str(PROMETHEUS_DIR / "install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
