"""A real worker fed valid events and every kind of bad input keeps running, passes the valid
ones on, and the DLQ holds exactly the bad ones, with their reasons and original bytes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.fixtures.kafka_helpers import read_all
from tests.pipeline.harness import Deployment
from wxsub.dlq import parse_dead_letter
from wxsub.errors import InputError
from wxsub.schemas import decode_topic

pytestmark = pytest.mark.kafka

MAX_BYTES = 4096
NOW = "2026-11-26T10:00:00+08:00"


def order(i: int, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "type": "order_status", "v": 1, "event_id": f"ord-{i}", "occurred_at": NOW,
        "appid": "wxdemo", "openid": f"o{i}", "order_id": f"A{i}", "status": "paid",
        "amount": 1990,
    }  # fmt: skip
    doc.update(over)
    return doc


def watch(i: int) -> dict[str, object]:
    return {
        "type": "watch", "v": 1, "event_id": f"w-{i}", "occurred_at": NOW, "appid": "wxdemo",
        "openid": f"o{i}", "op": "watch", "target": {"type": "sku", "id": f"S{i}"},
        "kind": "price_drop",
    }  # fmt: skip


def _key(doc: dict[str, object]) -> str:
    if doc["type"] == "watch":
        target = doc["target"]
        assert isinstance(target, dict)
        return f"{doc['appid']}:{target['type']}:{target['id']}"
    return f"{doc['appid']}:{doc['order_id']}"


def crafted() -> list[tuple[str, str, bytes, str | None]]:
    """(logical topic, key, raw, expected DLQ reason or None for valid)."""
    ok = [("order-status", _key(order(i)), orjson.dumps(order(i)), None) for i in range(20)]
    ok += [("watches", _key(watch(i)), orjson.dumps(watch(i)), None) for i in range(5)]
    bad = [
        ("order-status", "wxdemo:B1", b'{"type": "order_status", "v": 1,', "bad_json"),
        ("order-status", "wxdemo:B2", b"\xff\xfe not utf-8", "bad_utf8"),
        ("order-status", _key(order(90)), orjson.dumps(order(90, status=42)), "schema"),
        ("order-status", _key(order(91)), orjson.dumps(order(91, v=7)), "unknown_version"),
        ("order-status", _key(order(92)), orjson.dumps(order(92, x="x" * MAX_BYTES)), "oversized"),
        ("order-status", "wxdemo:someone-else", orjson.dumps(order(93)), "wrong_key"),
        ("order-status", _key(watch(94)), orjson.dumps(watch(94)), "unknown_type"),
        ("logistics", "wxdemo:B3", b"[]", "schema"),
        ("products", "wxdemo:sku:S1", b"null", "schema"),
        ("watches", "wxdemo:sku:S9", b"", "bad_json"),
        ("subscriptions", "wxdemo:o1", b'{"type":"subscription"}', "schema"),
        ("preferences", "wxdemo:o1", "{\"名字\": \"😀\"}".encode(), "unknown_type"),
    ]  # fmt: skip
    return ok + bad


def fuzzed(seed: int, n: int) -> list[tuple[str, str, bytes, str | None]]:
    """Valid events mutated at random: flipped bytes, truncation, CJK/emoji, huge strings."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        raw = bytearray(orjson.dumps(order(1000 + i, item_title="商品😀" * rnd.randint(0, 3))))
        how = rnd.choice(["flip", "cut", "huge", "cjk", "type"])
        if how == "flip":
            for _ in range(rnd.randint(1, 4)):
                raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        elif how == "cut":
            raw = raw[: rnd.randrange(len(raw))]
        elif how == "huge":
            raw = bytearray(orjson.dumps(order(1000 + i, order_id="x" * rnd.randint(100, 9000))))
        elif how == "cjk":
            raw = bytearray(orjson.dumps(order(1000 + i, status="已发货😀")))
        else:
            raw = bytearray(orjson.dumps(order(1000 + i, amount=str(rnd.random()))))
        key = f"wxdemo:A{1000 + i}"
        out.append(
            ("order-status", key, bytes(raw), _expected_reason("order-status", key, bytes(raw)))
        )
    return out


def _expected_reason(topic: str, key: str, raw: bytes) -> str | None:
    try:
        ev = decode_topic(topic, raw, MAX_BYTES)
    except InputError as exc:
        return exc.reason
    return None if ev.key == key else "wrong_key"


async def test_bad_input_goes_to_dlq_and_worker_keeps_running(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inputs = crafted() + fuzzed(seed=3, n=150)
    dep = Deployment(
        kafka_bootstrap, tmp_path, merchants_toml="",
        extra_env={"WXSUB_WORKER_MAX_EVENT_BYTES": str(MAX_BYTES)},
    )  # fmt: skip
    (tmp_path / "merchants.toml").write_text("")
    from wxsub.streams.topics import ensure_topics

    await ensure_topics(dep.kafka, f"app{dep.uid}")
    dep.start(0)
    try:
        await dep.publish((t, k, raw) for t, k, raw, _ in inputs)
        want_bad = [i for i in inputs if i[3] is not None]
        await dep.wait_for("dlq", len(want_bad), timeout=120)
        valid = [i for i in inputs if i[3] is None]
        await dep.wait_for("outcomes", len(valid), timeout=60)
        await asyncio.sleep(2)
        assert dep.procs[0] is not None and dep.procs[0].poll() is None, dep.logs()
        dlq = await read_all(kafka_bootstrap, dep.kafka.topic("dlq"))
        outcomes = await dep.outcomes()
    finally:
        dep.stop_all()
    letters = [parse_dead_letter(r.value, r.headers, r.key) for r in dlq]
    got = Counter((dl.topic, dl.key, dl.value, dl.reason) for dl in letters)
    want = Counter((dep.kafka.topic(t), k.encode(), raw, reason) for t, k, raw, reason in want_bad)
    assert got == want
    assert all(dl.stage and dl.message and dl.offset >= 0 for dl in letters)
    # every valid event was passed on (an outcome: no merchant config -> no_template, or applied)
    valid_ids = {orjson.loads(raw)["event_id"] for _, _, raw, reason in inputs if reason is None}
    assert valid_ids <= {o.event_id for o in outcomes}
