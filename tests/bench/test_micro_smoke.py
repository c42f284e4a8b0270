"""The micro-benchmarks (no broker, or one short probe) run at tiny size, so none of them rots,
and their output digests are stable: the digest is how a speed change proves identical results.

Nothing here asserts on a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


AGENTS = ("bench.agents_micro", "--events", "300", "--users", "60", "--batch", "50")
FANOUT = ("bench.agents_micro", "--fanout", "200", "--batch", "50")
PRODUCTS = ("bench.products_micro", "-n", "500")
DECIDE = ("bench.decide_micro", "--users", "30", "--orders", "60", "--repeat", "1")
DELIVER = ("bench.deliver_micro", "--intents", "60", "--users", "30", "--batch", "20")


@pytest.mark.parametrize(
    ("args", "digest"),
    [
        (AGENTS, r"digest (\w+)"),
        (FANOUT, r"digest (\w+)"),
        (PRODUCTS, r"sha256 (\w+)"),
        (DECIDE, r"digest: (\w+)"),
        (DELIVER, r"digest (\w+)"),
    ],
)
def test_micro_benchmark_runs_and_its_digest_is_stable(args: tuple[str, ...], digest: str) -> None:
    first, second = _run(*args), _run(*args)
    found = [re.search(digest, out) for out in (first, second)]
    assert found[0] is not None and found[1] is not None, first
    assert found[0].group(1) == found[1].group(1)  # same code, same input: same output


def test_agents_micro_fanout_decides_every_watcher() -> None:
    """Every watcher of the price drop is a user with credits: one intent each."""
    out = _run(*FANOUT)
    assert "-> 200 candidates -> 200 intents" in out, out


def test_products_micro_fans_out_to_the_matching_watchers() -> None:
    """The micro measures a fan-out, not a forward: 500 watches, 80% match (products_micro)."""
    out = _run(*PRODUCTS)
    assert "500 watchers" in out and " 402 records," in out, out


def test_deliver_micro_sends_every_intent() -> None:
    """Every intent is sent once through the sandbox: its attempt and its final record."""
    out = _run(*DELIVER)
    assert "60 intents -> 60 sends, 120 deliveries records, final states {'sent': 60};" in out, out
    assert "µs CPU per send" in out, out


@pytest.mark.kafka
def test_txn_probe_runs(kafka_bootstrap: str) -> None:
    out = _run("bench.txn_probe", "--bootstrap", kafka_bootstrap, "--n", "2")
    assert "as shipped" in out
    assert "wxsub.streams.aiokafka_tuning" in out
    assert "CPU per transaction: aiokafka" in out


@pytest.mark.kafka
def test_ab_runs_the_pipeline_for_both_checkouts(kafka_bootstrap: str) -> None:
    out = _run("bench.ab", str(ROOT), str(ROOT), "--events", "300", "--pairs", "1",
               "--bootstrap", kafka_bootstrap)  # fmt: skip
    assert out.count("intents=300 dup=0") == 2, out
    assert "B/A CPU per event, per pair" in out
