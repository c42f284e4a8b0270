"""``wxsub demo`` end to end on the session's broker (``make demo`` starts its own LocalKafka,
which tests/kafka covers), and Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.harness import ROOT

pytestmark = pytest.mark.kafka


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXSUB_")}
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "wxsub", "demo", "--workdir", str(tmp_path), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _children_of(config_dir: Path) -> list[int]:
    """Live processes started with a WXSUB_CONFIG under ``config_dir`` (workers, gateway)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"WXSUB_CONFIG={config_dir}".encode() in environ:
            found.append(int(proc.name))
    return found


def test_the_demo_reconciles(tmp_path: Path, kafka_bootstrap: str) -> None:
    proc = _demo(tmp_path, "--duration", "6", "--rate", "40", "--bootstrap", kafka_bootstrap)
    try:
        out, _ = proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "RECONCILED: every event is accounted for" in out, out
    summary = out[out.index("[4/4] summary") :]
    numbers = dict(re.findall(r"^  ([=+] [a-zA-Z/ ]+?|events in)\s+(\d+)", summary, re.M))
    parts = sum(int(n) for k, n in numbers.items() if k != "events in")
    assert int(numbers["events in"]) == parts > 0
    assert int(numbers["= sent"]) > 0 and int(numbers["+ DLQ"]) > 0
    assert int(numbers["+ service card"]) > 0, summary  # WeChat Pay orders: cards
    assert int(numbers["+ opens"]) > 0, summary  # users open some messages (wxref)
    assert "DEMO_PRICE_DROP_TPL" in summary and "/metrics" in summary
    assert not _children_of(tmp_path)


def test_ctrl_c_stops_everything(tmp_path: Path, kafka_bootstrap: str) -> None:
    proc = _demo(tmp_path, "--duration", "60", "--bootstrap", kafka_bootstrap)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[1/4]"):  # everything is up
                break
        assert _children_of(tmp_path), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "everything it started has been shut down" in rest
    deadline = time.monotonic() + 5
    while _children_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _children_of(tmp_path)
