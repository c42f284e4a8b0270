"""``wxsub publish KIND [FILE|-]``: validate JSONL events and produce them with the right key.

Each non-blank line is decoded exactly like the worker decodes it (:func:`wxsub.schemas.decode`).
Invalid lines are reported on stderr as ``line N: reason at /pointer: message`` and skipped;
valid lines are produced unchanged (the publisher's bytes, so fields this build does not know
survive) to the kind's topic with its key, by an idempotent producer (acks=all). Exit status:
0 when every line was published, 1 when any line was invalid or not produced, 2 when nothing
could be done (bad settings, unreadable file, Kafka unreachable, topic missing).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from wxsub.errors import InputError, InputReason
from wxsub.schemas import KINDS
from wxsub.settings import Settings, load_settings
from wxsub.streams.connection import client_kwargs

__all__ = ["PROGRESS_INTERVAL_S", "check_line", "read_lines", "register", "run"]

_CHUNK = 1 << 20
_MAX_IN_FLIGHT = 2000
_BOM = b"\xef\xbb\xbf"
#: seconds between progress lines
PROGRESS_INTERVAL_S = 2.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish",
        help="validate JSONL events and produce them to their topic with the right key",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("kind", metavar="KIND", choices=sorted(KINDS), help=", ".join(sorted(KINDS)))
    p.add_argument("file", metavar="FILE", nargs="?", default="-", help="JSONL file (- = stdin)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: kafka.bootstrap)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    p.add_argument("--progress", action="store_true", help="report progress even if not a TTY")
    p.add_argument("--dry-run", action="store_true", help="validate only; produce nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.bootstrap:
        settings = settings.with_overrides(kafka={"bootstrap": args.bootstrap})
    try:
        stream: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as exc:
        print(f"wxsub publish: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    tally = Tally(progress=args.progress or sys.stderr.isatty())
    with stream:
        return asyncio.run(_main(args.kind, stream, settings, tally, dry_run=args.dry_run))


def check_line(kind: str, line: bytes | None, size: int, max_bytes: int) -> bytes:
    """The Kafka key of a valid line, or raise InputError (``line=None``: dropped as too long)."""
    if line is None:
        raise InputError(InputReason.OVERSIZED, f"{size} bytes, the limit is {max_bytes}")
    return KINDS[kind].decode(line, max_bytes).key.encode()  # type: ignore[no-any-return]


async def read_lines(
    stream: IO[bytes], max_bytes: int
) -> AsyncIterator[tuple[int, bytes | None, int]]:
    """(line number, bytes without EOL or None if longer than max_bytes, size), blanks skipped.

    Reads chunks in a thread, so a slow pipe never stalls the producer, and never buffers more
    than a chunk plus ``max_bytes``, however long a line is. A leading UTF-8 BOM is dropped.
    """
    read = getattr(stream, "read1", stream.read)
    number, buf, skipping = 0, b"", -1  # skipping: bytes so far of an over-long line
    while True:
        chunk = await asyncio.to_thread(read, _CHUNK)
        parts = (buf + chunk).split(b"\n")
        buf = parts.pop() if chunk else b""  # at EOF the last part is the final line
        for part in parts:
            number += 1
            if number == 1:
                part = part.removeprefix(_BOM)
            if skipping >= 0:
                yield number, None, skipping + len(part)
                skipping = -1
            elif part.strip():
                line = part.removesuffix(b"\r")
                yield number, (line if len(line) <= max_bytes else None), len(line)
        if len(buf) > max_bytes + len(_BOM):
            skipping, buf = max(skipping, 0) + len(buf), b""
        if not chunk:
            return


@dataclass
class Tally:
    """Counts, per-line reports and progress on stderr."""

    progress: bool = False
    lines: int = 0
    published: int = 0
    invalid: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    def seen(self, number: int) -> None:
        self.lines = number
        now = time.monotonic()
        if self.progress and now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            rate = self.lines / max(now - self.started, 1e-9)
            _err(f"progress: line {self.lines}, {self.published} published, "
                 f"{self.invalid} invalid, {rate:,.0f} lines/s")  # fmt: skip

    def bad(self, number: int, error: InputError) -> None:
        self.invalid += 1
        where = f" at {error.pointer}" if error.pointer else ""
        _err(f"line {number}: {error.reason}{where}: {error.detail}")

    def not_produced(self, number: int, error: BaseException) -> None:
        self.failed += 1
        _err(f"line {number}: not produced: {type(error).__name__}: {error}")

    def summary(self, topic: str, dry_run: bool) -> str:
        took = time.monotonic() - self.started
        done = f"{self.published} valid" if dry_run else f"{self.published} published to {topic}"
        return (f"{done}, {self.invalid} invalid, {self.failed} not produced; "
                f"{self.lines} lines in {took:.1f}s")  # fmt: skip

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.failed == 0


async def _main(
    kind: str, stream: IO[bytes], settings: Settings, tally: Tally, dry_run: bool
) -> int:
    topic = settings.kafka.topic(KINDS[kind].topic)
    lines = read_lines(stream, settings.worker.max_event_bytes)
    if dry_run:
        await _validate(kind, lines, settings.worker.max_event_bytes, tally)
    else:
        try:
            await _publish(kind, lines, topic, settings, tally)
        except _Fatal as exc:
            _err(f"wxsub publish: {exc}")
            return 2
    _err(tally.summary(topic, dry_run))
    return 0 if tally.ok else 1


class _Fatal(Exception):
    """Nothing can be published (Kafka unreachable, topic missing)."""


async def _validate(
    kind: str, lines: AsyncIterator[tuple[int, bytes | None, int]], max_bytes: int, tally: Tally
) -> None:
    async for number, line, size in lines:
        tally.seen(number)
        try:
            check_line(kind, line, size, max_bytes)
        except InputError as exc:
            tally.bad(number, exc)
        else:
            tally.published += 1


async def _publish(
    kind: str,
    lines: AsyncIterator[tuple[int, bytes | None, int]],
    topic: str,
    settings: Settings,
    tally: Tally,
) -> None:
    producer = await _start_producer(settings)
    try:
        await _require_topic(producer, topic, settings.kafka.bootstrap)
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        async for number, line, size in lines:
            tally.seen(number)
            try:
                key = check_line(kind, line, size, settings.worker.max_event_bytes)
                assert line is not None  # check_line raised otherwise
                pending.append((number, await producer.send(topic, value=line, key=key)))
            except InputError as exc:
                tally.bad(number, exc)
            except KafkaError as exc:
                tally.not_produced(number, exc)
            if len(pending) >= _MAX_IN_FLIGHT:
                await _settle(pending, tally)
        await producer.flush()
        await _settle(pending, tally)
    finally:
        await producer.stop()


async def _start_producer(settings: Settings) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        **client_kwargs(settings.kafka),
        client_id="wxsub-publish",
        enable_idempotence=True,
        acks="all",
        linger_ms=int(settings.kafka.producer_linger_s * 1000),
        request_timeout_ms=int(settings.kafka.request_timeout_s * 1000),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise _Fatal(f"cannot reach Kafka at {settings.kafka.bootstrap}: {exc}") from exc
    return producer


async def _require_topic(producer: AIOKafkaProducer, topic: str, bootstrap: str) -> None:
    """Fail clearly if the topic does not exist (listing never auto-creates it)."""
    try:
        cluster = await producer.client.fetch_all_metadata()
    except KafkaError as exc:
        raise _Fatal(f"cannot read topics from Kafka at {bootstrap}: {exc}") from exc
    if topic not in cluster.topics():
        raise _Fatal(
            f"topic {topic} does not exist on {bootstrap}; start the worker once "
            "(it creates the topics) or check kafka.topic_prefix"
        )


async def _settle(pending: list[tuple[int, asyncio.Future[Any]]], tally: Tally) -> None:
    for number, future in pending:
        try:
            await future
        except KafkaError as exc:
            tally.not_produced(number, exc)
        else:
            tally.published += 1
    pending.clear()


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
