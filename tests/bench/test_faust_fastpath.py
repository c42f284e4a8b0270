"""bench/faust_fastpath: the patched Faust still passes every message through, in order, across
a rebalance and a paused (buffer-full) partition, and stops cleanly; install/uninstall restore
the originals; unverified versions are refused.

The Faust workers run as subprocesses (``python -m tests.bench.test_faust_fastpath ...``, as
bench/baseline.py runs its Faust agent): a Faust worker owns its process's loop and signals.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import faust_fastpath
from bench.common import produce
from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
PER_PARTITION = 200
FIRST = 20  # per partition, before the second worker starts
SECOND = 120  # up to here while it joins; the rest once both are in the group
REJOINED = re.compile(r"Joined group .* \(generation ([2-9]|\d\d+)\)")


def _functions() -> dict[str, Any]:
    from faust.topics import Topic
    from faust.transport.consumer import Consumer

    return {
        "_get_producer": Topic.__dict__["_get_producer"],
        "_drain_messages": Consumer.__dict__["_drain_messages"],
    }


@pytest.fixture
def clean_patch() -> Iterator[None]:
    faust_fastpath.uninstall()
    yield
    faust_fastpath.uninstall()


def test_install_patches_and_uninstall_restores(clean_patch: None) -> None:
    before = _functions()
    faust_fastpath.install()
    patched = _functions()
    assert faust_fastpath.installed()
    assert patched["_get_producer"] is faust_fastpath._get_producer
    assert patched["_drain_messages"] is faust_fastpath._drain_messages
    faust_fastpath.install()  # idempotent: the originals saved the first time are kept
    faust_fastpath.uninstall()
    assert not faust_fastpath.installed()
    assert _functions() == before
    assert all(_functions()[k] is f for k, f in before.items())
    faust_fastpath.uninstall()  # no-op
    assert all(_functions()[k] is f for k, f in before.items())


def test_unverified_faust_version_is_refused(
    clean_patch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _functions()
    monkeypatch.setitem(faust_fastpath.VERIFIED, "faust-streaming", ("0.99.0",))
    with pytest.raises(faust_fastpath.FastPathVersionError, match=r"faust-streaming 0\.15"):
        faust_fastpath.install()
    assert not faust_fastpath.installed()
    assert _functions() == before


def test_unverified_mode_version_or_changed_source_is_refused(
    clean_patch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _functions()
    monkeypatch.setitem(faust_fastpath.VERIFIED, "mode-streaming", ("0.6.0",))
    with pytest.raises(faust_fastpath.FastPathVersionError, match="mode-streaming"):
        faust_fastpath.install()
    monkeypatch.undo()
    monkeypatch.setitem(faust_fastpath._SOURCES, "Consumer._drain_messages", "0" * 16)
    with pytest.raises(faust_fastpath.FastPathVersionError, match="source of Consumer"):
        faust_fastpath.install()
    assert not faust_fastpath.installed()
    assert _functions() == before


# --- against the broker -----------------------------------------------------------------------


def _start_worker(boot: str, app_id: str, inp: str, out: str, tmp: Path, name: str) -> Any:
    log = (tmp / f"{name}.log").open("wb")
    cmd = [sys.executable, "-m", "tests.bench.test_faust_fastpath"]
    proc = subprocess.Popen(
        [*cmd, boot, app_id, inp, out, str(tmp / f"{name}.json")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    return proc


def _log(tmp: Path, name: str) -> str:
    return (tmp / f"{name}.log").read_text(errors="replace")


async def _wait_for_values(boot: str, out: str, want: set[bytes], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not want <= {r.value for r in await read_all(boot, out, "read_uncommitted")}:
            await asyncio.sleep(0.5)


def _stop(procs: list[Any], timeout: float) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(None)
    return codes


def _values(part: int, seqs: range) -> list[tuple[str, bytes, bytes]]:
    return [("", f"k{part}".encode(), f"{part}:{s:05d}".encode()) for s in seqs]


@pytest.mark.kafka
async def test_patched_agent_passes_everything_in_order_across_rebalance_and_stops(
    kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path
) -> None:
    boot = kafka_bootstrap
    inp = await new_topic(partitions=PARTITIONS)
    out = await new_topic(partitions=PARTITIONS)
    app_id = f"ffast-{uuid.uuid4().hex[:8]}"

    async def produce_part(seqs: range) -> None:
        for p in range(PARTITIONS):
            await produce(boot, ((inp, k, v) for _, k, v in _values(p, seqs)), partition=p)

    procs: list[Any] = []
    codes: list[int | None] = []
    try:
        await produce_part(range(FIRST))
        procs.append(_start_worker(boot, app_id, inp, out, tmp_path, "a"))
        first = {v for p in range(PARTITIONS) for _, _, v in _values(p, range(FIRST))}
        await _wait_for_values(boot, out, first, timeout=60)
        # these take worker a ~6 s (20 ms each): b joins the group meanwhile
        await produce_part(range(FIRST, SECOND))
        procs.append(_start_worker(boot, app_id, inp, out, tmp_path, "b"))
        async with asyncio.timeout(60):  # b in the group, a rebalanced (generation >= 2)
            while not (
                "Worker ready" in _log(tmp_path, "b") and REJOINED.search(_log(tmp_path, "a"))
            ):
                await asyncio.sleep(0.2)
        await produce_part(range(SECOND, PER_PARTITION))  # every partition: b gets some
        every = {v for p in range(PARTITIONS) for _, _, v in _values(p, range(PER_PARTITION))}
        await _wait_for_values(boot, out, every, timeout=60)
    finally:
        codes = _stop(procs, timeout=30)
    logs = {n: _log(tmp_path, n) for n in ("a", "b")}
    assert codes == [0, 0], f"exit codes {codes}:\n{logs['a'][-3000:]}\n{logs['b'][-3000:]}"
    for name, text in logs.items():
        assert "Traceback" not in text and "Crashed" not in text, f"{name}:\n{text[-3000:]}"

    records = await read_all(boot, out, "read_uncommitted")
    for p in range(PARTITIONS):
        got = [r.value for r in records if r.partition == p]
        # at least once: a rebalance may replay what was not committed yet, never reorder it
        first_seen = list(dict.fromkeys(got))
        assert first_seen == [v for _, _, v in _values(p, range(PER_PARTITION))]

    stats = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b")]
    assert all(s["patched"] for s in stats)
    assert sum(s["forwarded"] for s in stats) >= PARTITIONS * PER_PARTITION
    assert all(s["forwarded"] > 0 for s in stats)  # both owned partitions after the rebalance
    # the agent's buffer filled (partition paused), so the callback suspended and took the
    # wait_first path too, not only the in-place fast path
    assert sum(s["suspended_callbacks"] for s in stats) > 0


def worker(boot: str, app_id: str, inp: str, out: str, stats_path: str) -> None:
    """A Faust worker with the fast path: forwards each record to the same partition of
    ``out``, a little slowly into a tiny buffer, so the buffer fills and partitions pause."""
    import atexit

    import faust
    from faust.transport.consumer import Consumer

    faust_fastpath.install()
    stats = {"forwarded": 0, "suspended_callbacks": 0}
    started_init = faust_fastpath._Started.__init__

    def counting_init(self: Any, *args: Any) -> None:
        stats["suspended_callbacks"] += 1
        started_init(self, *args)

    faust_fastpath._Started.__init__ = counting_init  # type: ignore[method-assign,assignment]
    patched = Consumer._drain_messages is faust_fastpath._drain_messages
    atexit.register(lambda: Path(stats_path).write_text(json.dumps({**stats, "patched": patched})))
    app = faust.App(
        app_id,
        broker=f"kafka://{boot}",
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=4,
        broker_commit_every=20,
        datadir=str(Path(stats_path).parent / f"{Path(stats_path).stem}-data"),
    )
    src = app.topic(inp, value_serializer="raw", key_serializer="raw")
    dst = app.topic(out, value_serializer="raw", key_serializer="raw")

    @app.agent(src)
    async def forward(stream: Any) -> None:
        async for event in stream.events():
            await asyncio.sleep(0.02)
            await dst.send(key=event.key, value=event.value, partition=event.message.partition)
            stats["forwarded"] += 1

    sys.argv = ["faust", "worker", "-l", "info", "--without-web"]
    app.main()


if __name__ == "__main__":
    worker(*sys.argv[1:6])
