"""``wxsub publish`` against the real broker, run as the command a publisher would run."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all, unique_name
from wxsub.schemas import KINDS

pytestmark = pytest.mark.kafka


async def wxsub_publish(
    prefix: str, *args: str, stdin: bytes | None = None
) -> tuple[int, list[str]]:
    """Run ``python -m wxsub publish ...`` with ``kafka.topic_prefix`` = prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXSUB_")}
    env["WXSUB_KAFKA_TOPIC_PREFIX"] = prefix
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxsub", "publish", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=120)
    assert out == b""
    lines = err.decode().splitlines()
    print("\n".join(lines))  # shown when the test fails
    # ours only: a library may log a warning (a retried request on a busy broker) to stderr too
    return proc.returncode or 0, [line for line in lines if line.startswith(_OURS) or _DONE in line]


_OURS = ("line ", "wxsub publish:", "progress:")
_DONE = " not produced; "


def event(name: str, i: int = 0, **changes: Any) -> bytes:
    return orjson.dumps(KINDS[name].schema["examples"][i] | changes)


def watch_line(n: int) -> bytes:
    """Even n: a SKU price watch (7 SKUs); odd n: a category promotion watch (5 categories)."""
    if n % 2 == 0:
        target = {"type": "sku", "id": f"s{n % 7}"}
        return event("watch", 0, event_id=f"w{n}", openid=f"user{n}", target=target)
    return event("watch", 1, event_id=f"w{n}", target={"type": "category", "id": f"c{n % 5}"})


def partition_of(key: bytes, partitions: int) -> int:
    return int(DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))))


async def test_good_lines_published_bad_lines_reported(
    kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path
) -> None:
    prefix = unique_name("pub") + "."
    topic = await new_topic(partitions=3, name=prefix + "order-status")
    app = "wx1234567890abcdef"
    good = [
        event("order_status", event_id="e1", order_id="A-1", status="created"),
        event("order_status", event_id="e2", order_id="B-2", title_extra="未知字段 🎁"),
        event("order_status", event_id="e3", order_id="A-1", status="paid"),
        event("order_status", 1, event_id="e4", order_id="C-3"),
        event("order_status", event_id="e5", order_id="A-1", status="shipped"),
    ]
    lines = [
        good[0],
        event("order_status", event_id="bad1", amount=259.9),
        good[1] + b"\r",
        b"",
        b'{"type": "order_status", "v": 1',
        good[2],
        event("order_status", event_id="bad2", v=2),
        good[3],
        good[4],
    ]
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    code, err = await wxsub_publish(
        prefix, "order_status", str(path), "--bootstrap", kafka_bootstrap
    )

    assert code == 1
    assert err[0].startswith("line 2: schema at /amount: 259.9 ")
    assert err[1].startswith("line 5: bad_json: ")
    assert err[2].startswith("line 7: unknown_version at /v: ")
    assert err[3].startswith(f"5 published to {topic}, 3 invalid, 0 not produced; 9 lines in ")
    assert len(err) == 4

    records = await read_all(kafka_bootstrap, topic)
    keys = {b"e1": b"A-1", b"e2": b"B-2", b"e3": b"A-1", b"e4": b"C-3", b"e5": b"A-1"}
    assert sorted(r.value for r in records) == sorted(good)  # byte for byte, extra field kept
    for r in records:
        key = f"{app}:".encode() + keys[orjson.loads(r.value)["event_id"].encode()]
        assert r.key == key
        assert r.partition == partition_of(key, 3)
    a1 = [orjson.loads(r.value)["status"] for r in records if r.key.endswith(b":A-1")]
    assert a1 == ["created", "paid", "shipped"]  # one key, one partition, file order


async def test_stdin_many_lines_all_good(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    prefix = unique_name("pub") + "."
    topic = await new_topic(partitions=4, name=prefix + "watches")
    lines = [watch_line(n) for n in range(5000)]
    stdin = b"\n".join(lines)  # no final newline

    code, err = await wxsub_publish(
        prefix, "watch", "-", "--bootstrap", kafka_bootstrap, stdin=stdin
    )

    assert code == 0
    assert len(err) == 1 and err[0].startswith(f"5000 published to {topic}, 0 invalid")
    records = await read_all(kafka_bootstrap, topic)
    assert sorted(r.value for r in records) == sorted(lines)
    for r in records:
        target = orjson.loads(r.value)["target"]
        key = f"wx1234567890abcdef:{target['type']}:{target['id']}".encode()
        assert (r.key, r.partition) == (key, partition_of(key, 4))


async def test_missing_topic_is_a_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = unique_name("pub") + "."
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(event("preference") + b"\n")

    code, err = await wxsub_publish(prefix, "preference", str(path), "--bootstrap", kafka_bootstrap)

    assert code == 2
    assert err == [
        f"wxsub publish: topic {prefix}preferences does not exist on {kafka_bootstrap}; "
        "start the worker once (it creates the topics) or check kafka.topic_prefix"
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert f"{prefix}preferences" not in await admin.list_topics()  # not auto-created
    finally:
        await admin.close()
