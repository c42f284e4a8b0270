"""What a production Kafka costs the exactly-once pipeline: the single plaintext broker vs the
secured three-broker cluster (SASL_SSL SCRAM-SHA-512, replication 3, min ISR 2), in one run.

    python -m bench.secure --events 20000 --rounds 2

Runs :func:`bench.pipeline.run_pipeline` alternately on a ``LocalKafka`` and on a
``LocalKafkaCluster`` (both started here), and prints the medians, the ratio and what
replication 3 + TLS add per event (wall time and worker CPU). Record results in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.pipeline import run_pipeline
from wxsub_dev.kafka_cluster import LocalKafkaCluster
from wxsub_dev.local_kafka import LocalKafka

__all__ = ["compare"]


async def compare(n: int, rounds: int, work: Path) -> dict[str, Any]:
    users = max(n // 5, 1)
    runs: dict[str, list[dict[str, Any]]] = {"plaintext_1": [], "secured_3": []}
    async with LocalKafka() as single, LocalKafkaCluster(users={"wxsub": "bench-pw"}) as cluster:
        secure = (cluster.settings(), cluster.client_env())
        for i in range(rounds):
            runs["plaintext_1"].append(
                await run_pipeline(single.bootstrap, work / f"p{i}", n, users, "exactly_once")
            )
            runs["secured_3"].append(
                await run_pipeline(
                    cluster.bootstrap, work / f"s{i}", n, users, "exactly_once", secure=secure
                )
            )
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("events_per_s", "cpu_us_per_event")}
        for k, v in runs.items()
    }
    p, s = med["plaintext_1"], med["secured_3"]
    return {
        "events": n,
        "rounds": rounds,
        "median": med,
        "throughput_ratio_secured_over_plaintext": s["events_per_s"] / p["events_per_s"],
        "extra_wall_us_per_event": 1e6 / s["events_per_s"] - 1e6 / p["events_per_s"],
        "extra_worker_cpu_us_per_event": s["cpu_us_per_event"] - p["cpu_us_per_event"],
        "duplicates": sum(r["duplicates"] for v in runs.values() for r in v),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.secure", description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wxsub-bench-secure-") as tmp:
        out = asyncio.run(compare(args.events, args.rounds, Path(tmp)))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
