"""PartitionStore.scan: committed and pending entries under a prefix, in key order, after a key."""

from __future__ import annotations

import random
from pathlib import Path

from wxsub.streams.store import PartitionStore


def _model(
    committed: dict[bytes, bytes],
    pending: dict[bytes, bytes | None],
    prefix: bytes,
    start_after: bytes | None,
) -> list[tuple[bytes, bytes]]:
    merged: dict[bytes, bytes | None] = {**committed, **pending}
    return sorted(
        (k, v)
        for k, v in merged.items()
        if v is not None and k.startswith(prefix) and (start_after is None or k > start_after)
    )


def test_scan_matches_a_sorted_merge_of_committed_and_pending(tmp_path: Path) -> None:
    rng = random.Random(11)
    alphabet = [b"a", b"ab", b"b", b"\x00", b"\xff", b"a\xff", b"b\x00"]
    for case in range(60):
        store = PartitionStore("s", 0, tmp_path / f"s{case}")
        committed: dict[bytes, bytes] = {}
        for _ in range(rng.randrange(0, 40)):
            key = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
            committed[key] = rng.randbytes(rng.randrange(0, 8))
            store.put(key, committed[key])
        store.apply(3)  # committed, with the checkpoint key in the same database
        committed[b"\x00wxsub:checkpoint"] = b"3"  # under the prefix b"\x00": scanned too
        pending: dict[bytes, bytes | None] = {}
        if case % 2:  # half the cases with nothing pending (the fast path)
            for _ in range(rng.randrange(1, 10)):
                key = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
                if rng.random() < 0.3:
                    pending[key] = None
                    store.delete(key)
                else:
                    pending[key] = rng.randbytes(3)
                    store.put(key, pending[key])
        for prefix in (b"a", b"b", b"ab", b"\x00", b"\xff", b"c"):
            want = _model(committed, pending, prefix, None)
            assert list(store.scan(prefix)) == want, (case, prefix)
            keys = [k for k, _ in want] + [prefix, prefix + b"a", prefix + b"\xff"]
            for after in keys:
                got = list(store.scan(prefix, start_after=after))
                assert got == _model(committed, pending, prefix, after), (case, prefix, after)
        store.close()


def test_scan_stops_at_the_end_of_the_prefix_without_reading_further(tmp_path: Path) -> None:
    store = PartitionStore("s", 0, tmp_path / "s")
    for i in range(1000):
        store.put(b"b:%04d" % i, b"x")
    store.put(b"a:1", b"1")
    store.apply(None)
    assert list(store.scan(b"a:")) == [(b"a:1", b"1")]
    assert next(iter(store.scan(b"b:", start_after=b"b:0998"))) == (b"b:0999", b"x")
    assert list(store.scan(b"b:", start_after=b"b:0999")) == []
    store.close()
