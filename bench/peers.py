"""One stateful hop in each Python stream engine, on the same broker and input (issue 21).

The hop, the same in each engine: consume a keyed JSON order event, read and update one state
entry for its key (``{"n": events of this key so far, "status": ...}``), produce one JSON record
(``{"event_id", "n", "status"}``) under the same key. Engines, each in a subprocess of its own so
its process CPU time (``time.process_time``: every thread, librdkafka's included) is its own:

- ``raw-aiokafka``: the baseline, bench/baseline.py's raw loop (no state, no guarantee);
- ``raw-confluent``: the same raw loop on confluent-kafka (librdkafka), Quix Streams' client,
  so the client's share of Quix's cost is visible;
- ``wxsub``: a minimal :class:`~wxsub.streams.stage.Stage` with one store on
  :class:`~wxsub.streams.runtime.StageRunner` (committed-only RocksDB store with a changelog),
  ``commit_interval_ms`` 100 like the worker's default;
- ``quix``: a Quix Streams ``Application`` with ``sdf.apply(..., stateful=True).to_topic(...)``
  (RocksDB state with its changelog), ``commit_interval`` at its documented default (5 s);
- ``faust`` / ``faust-fast``: a Faust agent with a RocksDB table, stock and with
  bench/faust_fastpath's two hot spots bypassed.

Each stateful engine runs ``eos`` (exactly-once) and ``alo`` (at-least-once). The clock and the
CPU run from the first record consumed to the last output durable (exactly-once: its transaction
committed; at-least-once: acked and the offsets committed). Every run's output is then read
back (read_committed) and checked: exactly-once must produce every (key, n) exactly once and each
key's last ``n`` must equal its events; at-least-once must produce each at least once.

    python -m bench.peers [--events 100000] [--faust-events 20000] [--rounds 2] [--bootstrap ..]
    python -m bench.peers --tiny          # smoke size (tests/bench runs it)
    python -m bench.peers --one KIND GUARANTEE BOOTSTRAP INPUT OUTPUT N RESULT_JSON WORKDIR

The aiokafka clients (setup, read-back, ``raw-aiokafka``, ``wxsub``) connect with the ``[kafka]``
settings of ``$WXSUB_CONFIG`` / ``WXSUB_KAFKA_*`` (bench.common.kafka_settings: TLS, SASL); the
other engines (confluent-kafka, Quix, Faust) are given the bootstrap only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import (
    ROOT,
    broker,
    client,
    kafka_settings,
    machine,
    order_events,
    produce,
    ratio,
    read_topic,
)

__all__ = ["ENGINES", "main", "run_peers"]

PARTITIONS = 8
#: (engine, guarantee) in the order of a round (the next round runs them in reverse: ABBA)
ENGINES: tuple[tuple[str, str], ...] = (
    ("raw-aiokafka", "none"),
    ("raw-confluent", "none"),
    ("wxsub", "eos"),
    ("quix", "eos"),
    ("wxsub", "alo"),
    ("quix", "alo"),
    ("faust", "eos"),
    ("faust-fast", "eos"),
    ("faust", "alo"),
    ("faust-fast", "alo"),
)


def _hop_state(prev: dict[str, Any] | None, doc: dict[str, Any]) -> dict[str, Any]:
    """The state update, the same in every engine."""
    return {"n": prev["n"] + 1 if prev else 1, "status": doc["status"]}


def _hop_out(state: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": doc["event_id"], "n": state["n"], "status": state["status"]}


def _done(t0: float, c0: float, n: int) -> dict[str, float]:
    return {"n": n, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


# --- engines (each runs in its own subprocess) ------------------------------------------------


def raw_confluent(bootstrap: str, inp: str, out: str, n: int) -> dict[str, float]:
    """bench/baseline.py's raw loop on confluent-kafka: consume -> orjson -> produce."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"rawck-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": True,
    })  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 10})
    consumer.subscribe([inp])
    done, t0, c0 = 0, 0.0, 0.0
    try:
        while done < n:
            msgs = consumer.consume(num_messages=2000, timeout=0.1)
            if msgs and not t0:
                t0, c0 = time.perf_counter(), time.process_time()
            for msg in msgs:
                if msg.error():
                    continue
                doc = orjson.loads(msg.value())
                try:
                    producer.produce(out, orjson.dumps(doc), msg.key())
                except BufferError:
                    producer.poll(0.05)
                    producer.produce(out, orjson.dumps(doc), msg.key())
                done += 1
            producer.poll(0)
        producer.flush(60)
        return _done(t0, c0, done)
    finally:
        consumer.close()


async def wxsub_hop(
    bootstrap: str, inp: str, out: str, n: int, guarantee: str, workdir: Path
) -> dict[str, float]:
    """A minimal Stage with one store on StageRunner."""
    from aiokafka import ConsumerRecord

    from wxsub.streams.connection import security_kwargs
    from wxsub.streams.runtime import StageRunner
    from wxsub.streams.stage import PartitionContext, StageSpec

    clock = {"t0": 0.0, "c0": 0.0, "committed": 0}
    finished = asyncio.Event()

    class Hop:
        spec = StageSpec("hop", (inp,), stores=("counts",))

        async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
            if not clock["t0"]:
                clock["t0"], clock["c0"] = time.perf_counter(), time.process_time()
            store, send, loads, dumps = ctx.stores["counts"], ctx.send, orjson.loads, orjson.dumps
            for rec in records:
                doc = loads(rec.value)
                prev = store.get(rec.key)
                state = _hop_state(loads(prev) if prev is not None else None, doc)
                store.put(rec.key, dumps(state))
                await send(out, rec.key, dumps(_hop_out(state, doc)))

        async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
            return None

    result: dict[str, float] = {}

    def on_commit(partition: int, records: int) -> None:
        clock["committed"] += records
        if clock["committed"] >= n and not result:
            result.update(_done(clock["t0"], clock["c0"], int(clock["committed"])))
            finished.set()

    runner = StageRunner(
        Hop(), bootstrap=bootstrap, app_id=f"hop{uuid.uuid4().hex[:8]}", state_dir=workdir,
        changelog_topic=lambda stage, store: f"{out}-{stage}-{store}-changelog",
        commit_interval_ms=100, on_commit=on_commit,
        security=security_kwargs(kafka_settings(bootstrap)),
        guarantee="exactly_once" if guarantee == "eos" else "at_least_once",
    )  # fmt: skip
    await _create_topics(bootstrap, [f"{out}-hop-counts-changelog"], compact=True)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(finished.wait(), 600)
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 60)
    return result


def quix_hop(
    bootstrap: str, inp: str, out: str, n: int, guarantee: str, workdir: Path
) -> dict[str, float]:
    """Quix Streams: Application + stateful apply + to_topic, its documented settings."""
    from quixstreams import Application, State

    app = Application(
        broker_address=bootstrap, consumer_group=f"quix{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", state_dir=str(workdir / "quix-state"), loglevel="WARNING",
        processing_guarantee="exactly-once" if guarantee == "eos" else "at-least-once",
    )  # fmt: skip
    src = app.topic(inp, value_deserializer="json", key_deserializer="bytes")
    dst = app.topic(out, value_serializer="json", key_serializer="bytes")
    clock = {"t0": 0.0, "c0": 0.0}

    def hop(doc: dict[str, Any], state: State) -> dict[str, Any]:
        if not clock["t0"]:
            clock["t0"], clock["c0"] = time.perf_counter(), time.process_time()
        new = _hop_state(state.get("s"), doc)
        state.set("s", new)
        return _hop_out(new, doc)

    app.dataframe(src).apply(hop, stateful=True).to_topic(dst)
    result: dict[str, float] = {}
    ctx = app._processing_context  # to stop the clock at the final commit
    commit = ctx.commit_checkpoint

    def commit_checkpoint(force: bool = False, **kw: Any) -> None:
        commit(force=force, **kw)
        if force and not result:  # the final commit of run(count=n), after the last output
            result.update(_done(clock["t0"], clock["c0"], n))

    ctx.commit_checkpoint = commit_checkpoint
    app.run(count=n, collect=False)
    return result


def faust_hop(
    kind: str, bootstrap: str, inp: str, out: str, n: int, guarantee: str, workdir: Path,
    result: str,
) -> None:  # fmt: skip
    """A Faust agent with a RocksDB table (``faust-fast``: bench/faust_fastpath installed)."""
    import faust

    if kind.endswith("-fast"):
        from bench import faust_fastpath

        faust_fastpath.install()
    app = faust.App(
        f"fhop{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}", store="rocksdb://",
        web_enabled=False, topic_partitions=PARTITIONS, consumer_auto_offset_reset="earliest",
        datadir=str(workdir / "faust-data"),
        processing_guarantee="exactly_once" if guarantee == "eos" else "at_least_once",
    )  # fmt: skip
    src = app.topic(inp, value_serializer="raw", key_serializer="raw")
    dst = app.topic(out, value_serializer="raw", key_serializer="raw")
    table = app.Table("counts", partitions=PARTITIONS)  # app defaults: raw keys, json values
    clock = {"done": 0, "t0": 0.0, "c0": 0.0}

    @app.agent(src)
    async def hop(stream: Any) -> None:
        async for key, value in stream.items():
            if not clock["done"]:
                clock["t0"], clock["c0"] = time.perf_counter(), time.process_time()
            doc = orjson.loads(value)
            state = _hop_state(table.get(key), doc)
            table[key] = state
            await dst.send(key=key, value=orjson.dumps(_hop_out(state, doc)))
            clock["done"] += 1
            if clock["done"] >= n:
                await app.producer.flush()
                with contextlib_suppress():
                    await app.consumer.commit()  # exactly-once: commits the transactions
                doc = _done(clock["t0"], clock["c0"], n)
                Path(result).write_text(json.dumps(doc))  # Faust captures stdout
                os._exit(0)

    sys.argv = ["faust", "worker", "-l", "warn", "--without-web"]
    app.main()


def contextlib_suppress() -> Any:
    import contextlib

    return contextlib.suppress(Exception)


def one(argv: list[str]) -> int:
    kind, guarantee, bootstrap, inp, out = argv[:5]
    n, result, workdir = int(argv[5]), argv[6], Path(argv[7])
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if kind == "raw-aiokafka":
        from bench.baseline import raw_loop

        doc = asyncio.run(raw_loop(bootstrap, inp, out, n))
    elif kind == "raw-confluent":
        doc = raw_confluent(bootstrap, inp, out, n)
    elif kind == "wxsub":
        doc = asyncio.run(wxsub_hop(bootstrap, inp, out, n, guarantee, workdir))
    elif kind == "quix":
        doc = quix_hop(bootstrap, inp, out, n, guarantee, workdir)
    elif kind in ("faust", "faust-fast"):
        faust_hop(kind, bootstrap, inp, out, n, guarantee, workdir, result)
        return 0
    else:
        raise SystemExit(f"unknown engine {kind!r}")
    Path(result).write_text(json.dumps(doc))
    return 0


# --- the comparison ---------------------------------------------------------------------------


async def _create_topics(bootstrap: str, names: list[str], compact: bool = False) -> None:
    admin = AIOKafkaAdminClient(**client(bootstrap))
    replicas = kafka_settings(bootstrap).replication_factor
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact"} if compact else {}
        await admin.create_topics(
            [NewTopic(t, PARTITIONS, replicas, topic_configs=configs) for t in names]
        )
        # Quix checks its topics through its own admin client as it starts; on a loaded
        # machine that can come before the new topic's metadata has spread ("not found").
        for _ in range(300):
            descs = await admin.describe_topics(names)
            if all(
                d.get("error_code") == 0
                and len(d.get("partitions") or ()) == PARTITIONS
                and all(p.get("leader", -1) >= 0 for p in d["partitions"])
                for d in descs
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def _run_engine(
    kind: str, guarantee: str, bootstrap: str, inp: str, out: str, n: int, timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wxpeer-") as tmp:
        result = Path(tmp, "result.json")
        args = [kind, guarantee, bootstrap, inp, out, str(n), str(result), tmp]
        proc = subprocess.run(
            [sys.executable, "-m", "bench.peers", "--one", *args],
            cwd=ROOT, capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        if not result.exists():
            raise RuntimeError(f"{kind} {guarantee} failed: {proc.stderr.decode()[-2000:]}")
        doc: dict[str, Any] = json.loads(result.read_text())
    doc["per_s"], doc["cpu_us"] = doc["n"] / doc["wall_s"], doc["cpu_s"] / doc["n"] * 1e6
    return doc


async def _check(bootstrap: str, out: str, expect: dict[bytes, int], guarantee: str) -> str:
    """'ok', or what is wrong with the run's output (read_committed)."""
    recs = await read_topic(bootstrap, out)
    if guarantee == "none":
        return "ok" if len(recs) >= sum(expect.values()) else f"{len(recs)} outputs"
    seen = collections.Counter((r.key, orjson.loads(r.value)["n"]) for r in recs)
    last: dict[bytes, int] = {}
    for key, count in seen:
        last[key] = max(last.get(key, 0), count)
    missing = sum(1 for k, c in expect.items() for i in range(1, c + 1) if (k, i) not in seen)
    extra = sum(1 for (k, i) in seen if i > expect.get(k, 0))
    dups = sum(c - 1 for c in seen.values())
    if missing or extra or last != expect:
        return f"WRONG: {missing} missing, {extra} beyond the key's events"
    if dups:
        return "ok" if guarantee == "alo" else f"WRONG: {dups} duplicates"
    return "ok"


async def _settled_check(
    bootstrap: str, out: str, expect: dict[bytes, int], guarantee: str, patience_s: float = 15.0
) -> str:
    """:func:`_check`, read again for up to ``patience_s`` while it is not 'ok': a read_committed
    reader stops at the last stable offset, and the coordinator writes an engine's last
    transaction's markers after its EndTxn was answered (the engine may have exited already);
    missing records that are really missing stay missing."""
    deadline = time.monotonic() + patience_s
    while True:
        verdict = await _check(bootstrap, out, expect, guarantee)
        if verdict == "ok" or time.monotonic() > deadline:
            return verdict
        await asyncio.sleep(0.5)


async def run_peers(
    bootstrap: str, n: int, faust_n: int, rounds: int, engines: list[tuple[str, str]]
) -> dict[str, Any]:
    tag = f"peer{os.getpid()}-{time.time_ns()}"
    inp = f"{tag}.in"
    await _create_topics(bootstrap, [inp])
    events = list(order_events(n, max(n // 5, 1), 0))
    await produce(bootstrap, ((inp, k, v) for _, k, v in events))
    expect: dict[int, dict[bytes, int]] = {}
    for size in {n, min(faust_n, n)}:
        # what an engine reading ``size`` events sees: the first ``size`` of each partition's
        # order is not the first ``size`` produced, so Faust runs read a topic of their own
        expect[size] = dict(collections.Counter(k for _, k, _ in events[:size]))
    faust_inp = inp
    if faust_n < n:
        faust_inp = f"{tag}.in-faust"
        await _create_topics(bootstrap, [faust_inp])
        await produce(bootstrap, ((faust_inp, k, v) for _, k, v in events[:faust_n]))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in range(rounds):
        order = engines if r % 2 == 0 else list(reversed(engines))
        for kind, g in order:
            faust = kind.startswith("faust")
            size = min(faust_n, n) if faust else n
            out = f"{tag}.out-{kind}-{g}-{r}"
            try:
                for attempt in (1, 2):
                    out = f"{tag}.out-{kind}-{g}-{r}" + ("" if attempt == 1 else "-again")
                    await _create_topics(bootstrap, [out])
                    try:
                        res = _run_engine(
                            kind, g, bootstrap, faust_inp if faust else inp, out, size, 900
                        )
                        break
                    except RuntimeError as exc:
                        # Quix creates its changelog topic itself and checks it at once; on a
                        # loaded broker the metadata can lag ("not found on the broker") before
                        # anything is processed: run it once more, with fresh topics and group
                        if attempt == 2 or "not found on the broker" not in str(exc):
                            raise
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  {kind:<14} {g:<4} not run: {str(exc).strip().splitlines()[-1][:200]}")
                continue
            res["check"] = await _settled_check(bootstrap, out, expect[size], g)
            res["round"] = r
            runs[(kind, g)].append(res)
            print(f"  round {r + 1}  {kind:<14} {g:<4} {res['per_s']:>8.0f} events/s "
                  f"{res['cpu_us']:>7.1f} µs CPU/event  (n={res['n']}) output {res['check']}",
                  flush=True)  # fmt: skip
    return _summary(runs)


def _summary(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per engine; ``vs raw`` and ``CPU x raw``: medians of each run's ratio to the raw
    aiokafka loop of its own round."""
    raws = {x["round"]: x for x in runs.get(("raw-aiokafka", "none"), [])}
    med: dict[str, dict[str, Any]] = {}
    for (k, g), rs in runs.items():
        m: dict[str, Any] = {
            "per_s": statistics.median(x["per_s"] for x in rs),
            "cpu_us": statistics.median(x["cpu_us"] for x in rs),
            "n": rs[0]["n"],
            "runs": len(rs),
            "check": ", ".join(sorted({x["check"] for x in rs})),
        }
        paired = [(x, raws[x["round"]]) for x in rs if x["round"] in raws]
        if paired:
            m["vs_raw"] = statistics.median(x["per_s"] / b["per_s"] for x, b in paired)
            m["cpu_x_raw"] = statistics.median(x["cpu_us"] / b["cpu_us"] for x, b in paired)
        med[f"{k} {g}"] = m
    print("  medians (ratios: each run against the raw aiokafka loop of its own round):")
    print(f"  {'engine':<22} {'events/s':>9} {'µs CPU/event':>13} {'vs raw':>7} {'CPU x raw':>9}")
    for name, m in med.items():
        vs = f"{m['vs_raw']:.2f}x" if "vs_raw" in m else ""
        cpu = f"{m['cpu_x_raw']:.2f}x" if "cpu_x_raw" in m else ""
        print(f"  {name:<22} {m['per_s']:>9.0f} {m['cpu_us']:>13.1f} {vs:>7} {cpu:>9}"
              f"  output {m['check']}")  # fmt: skip
    for engine in ("wxsub", "quix", "faust", "faust-fast"):
        e, a = med.get(f"{engine} eos"), med.get(f"{engine} alo")
        if e and a:
            extra = e["cpu_us"] - a["cpu_us"]
            print(f"  {engine} exactly-once cost: {ratio(e['per_s'], a['per_s'])} the "
                  f"at-least-once throughput, {extra:+.1f} µs CPU/event")  # fmt: skip
    for g in ("eos", "alo"):
        w, q = med.get(f"wxsub {g}"), med.get(f"quix {g}")
        if w and q:
            print(f"  wxsub vs quix, {g}: {ratio(w['per_s'], q['per_s'])} throughput, "
                  f"{ratio(q['cpu_us'], w['cpu_us'])} less CPU per event")  # fmt: skip
    return med


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--one":
        return one(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tiny", action="store_true", help="smoke size")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--faust-events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (medians reported)")
    parser.add_argument("--engines", default="", help="comma-separated KIND:GUARANTEE subset")
    parser.add_argument("--bootstrap", default=os.environ.get("WXSUB_KAFKA_BOOTSTRAP"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    engines = list(ENGINES)
    if args.tiny:  # the smoke test: every engine once, Faust's fast path has tests of its own
        args.events, args.faust_events, args.rounds = 400, 200, 1
        engines = [e for e in engines if e[0] != "faust-fast"]
    if args.engines:
        engines = [tuple(e.split(":", 1)) for e in args.engines.split(",")]  # type: ignore[misc]
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    print(f"stateful hop, {PARTITIONS} partitions, {args.events} events "
          f"(Faust {min(args.faust_events, args.events)}) on {machine()}", flush=True)  # fmt: skip
    with broker(args.bootstrap) as boot:
        med = asyncio.run(run_peers(boot, args.events, args.faust_events, args.rounds, engines))
    if args.json:
        print(json.dumps(med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
