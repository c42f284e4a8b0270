"""Every benchmark runs at tiny size against the session broker, so none of them rots.

Benchmarks are not tests: nothing here asserts on a timing, only that each benchmark ran to the
end and printed its figures. They run as concurrent ``python -m bench --tiny --only X``
processes (independent deployments on the one broker) to keep the whole module quick.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]

# benchmark -> lines its output must contain
EXPECT = {
    "baseline": ["raw aiokafka", "faust pass-through", "faust vs raw"],
    "pipeline": ["at_least_once", "exactly_once", "exactly_once / at_least_once"],
    "peers": ["raw-confluent none", "wxsub eos", "quix eos", "faust alo", "wxsub vs quix, eos"],
    "latency": ["p50", "p99"],
    "fanout": ["fan-out to 2000 watchers", "intents=2000", "restart cold", "cold restore:"],
    "sender": ["ours vs aiohttp", "ours vs httpx-pool"],
}


def _start(name: str, bootstrap: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bench", "--tiny", "--only", name, "--bootstrap", bootstrap]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_every_benchmark_runs_at_tiny_size(kafka_bootstrap: str) -> None:
    procs = {name: _start(name, kafka_bootstrap) for name in EXPECT}
    outputs = {}
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=300)  # bounded; five benchmarks share 2 cores
            outputs[name] = (proc.returncode, out.decode(errors="replace"))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (code, text) in outputs.items():
        assert code == 0, f"{name} failed:\n{text[-3000:]}"
        missing = [line for line in EXPECT[name] if line not in text]
        assert not missing, f"{name} output lacks {missing}:\n{text[-3000:]}"
        # every run's output is read back and checked (bench/peers.py: exactly once per event)
        assert "WRONG" not in text, f"{name}:\n{text[-3000:]}"
