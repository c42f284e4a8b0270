"""Pipeline A/B: the exactly-once pipeline benchmark for two checkouts, alternated on one broker.

Timed runs on a shared VM drift (±8% here from one run to the next), so two versions measured
one after the other differ by the drift as much as by the code. This runs
:func:`bench.pipeline.run_pipeline` with the worker of checkout A, then B, then B, then A, ...
(pairs in ABBA order) on one broker, and prints every run, the medians and B/A per pair. The
input is produced and the users seeded by this checkout; the stored forms it writes are ones
both versions must read.

    git worktree add /tmp/base <rev>
    python -m bench.ab /tmp/base . [--events 60000] [--pairs 4] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import broker
from bench.pipeline import run_pipeline

__all__ = ["checkouts", "main", "run_ab"]


async def run_ab(
    bootstrap: str, roots: tuple[Path, Path], events: int, pairs: int, work: Path
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for i in range(pairs):
        for arm in ("A", "B") if i % 2 == 0 else ("B", "A"):
            root = roots[0] if arm == "A" else roots[1]
            r = await run_pipeline(
                bootstrap, work / f"{i}{arm}", events, max(events // 5, 1), "exactly_once",
                code_root=root,
            )  # fmt: skip
            runs[arm].append(r)
            print(
                f"  {arm} {r['events_per_s']:7.0f} events/s  "
                f"{r['cpu_us_per_event']:6.1f} µs CPU/event  "
                f"intents={r['intents']} dup={r['duplicates']}",
                flush=True,
            )
    return runs


def checkouts(parser: argparse.ArgumentParser, a: Path, b: Path) -> tuple[Path, Path]:
    """The two checkouts an A/B runs, resolved; a path that is not one is a usage error."""
    roots = (a.resolve(), b.resolve())
    for root in roots:
        if not (root / "wxsub" / "__main__.py").is_file():
            parser.error(f"{root} is not a wxsub checkout (no wxsub/__main__.py)")
    return roots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="checkout A (the base)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args(argv)
    roots = checkouts(parser, args.a, args.b)
    print(f"A = {roots[0]}\nB = {roots[1]}", flush=True)
    with broker(args.bootstrap) as boot, tempfile.TemporaryDirectory(prefix="wxab-") as tmp:
        runs = asyncio.run(run_ab(boot, roots, args.events, args.pairs, Path(tmp)))
    cpu = {arm: [r["cpu_us_per_event"] for r in rs] for arm, rs in runs.items()}
    for arm in ("A", "B"):
        print(f"  {arm} median {statistics.median(cpu[arm]):.1f} µs CPU/event")
    ratios = [b / a for a, b in zip(cpu["A"], cpu["B"], strict=True)]
    print("  B/A CPU per event, per pair: " + ", ".join(f"{x:.2f}" for x in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
