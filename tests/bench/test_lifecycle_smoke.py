"""``bench.lifecycle`` at tiny size, so it does not rot: ten simulated days of a small shop, with
retention reached within them (orders 7 days, ledger 3, watches 10). Nothing here asserts on a
timing: the live keys of a store whose retention has passed stop growing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lifecycle_benchmark_runs_and_state_levels_off() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.lifecycle", "--days", "10", "--scale", "0.0005",
         "--step-min", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [ln.split() for ln in done.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(1, 11)), done.stdout
    orders = [int(r[1]) for r in rows]
    ledger = [int(r[4]) for r in rows]
    # 50 orders a day: kept 7 days after they completed, then forgotten day by day
    assert orders[6] == 7 * 50 and orders[9] <= orders[7] + 50, orders
    # ledger entries (and their msgid index) are kept 3 days
    assert ledger[9] <= ledger[4], ledger
