"""promtool checks the rules and the scrape config, and runs the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess

from tests.observability.catalog import PROMETHEUS_DIR


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: run deploy/prometheus/install.sh (scripts/setup.sh does)"
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_are_valid() -> None:
    res = _promtool("check", "rules", "rules/wxsub.rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 10 rules found" in res.stdout


def test_rules_unit_tests_pass() -> None:
    res = _promtool("test", "rules", "rules/tests.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_is_unit_tested() -> None:
    rules = (PROMETHEUS_DIR / "rules" / "wxsub.rules.yml").read_text()
    tests = (PROMETHEUS_DIR / "rules" / "tests.yml").read_text()
    for name in (
        line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line
    ):
        # each alert is expected firing (exp_alerts with labels) and not firing (exp_alerts: [])
        blocks = [b for b in tests.split("alertname: ")[1:] if b.startswith(name + "\n")]
        assert any("exp_alerts: []" in b for b in blocks), name
        assert any("exp_labels:" in b for b in blocks), name


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
