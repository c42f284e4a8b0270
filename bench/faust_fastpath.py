"""Faust's two per-message hot spots, bypassed: a version-pinned patch of faust-streaming.

wxsub does not run on Faust (docs/design.md); Faust is the reference that bench/baseline.py
measures. This module shows what Faust costs once its two hot spots are fixed, and stands for
the upstream change. ``install()`` (idempotent) and ``uninstall()`` patch and restore exactly
two functions, and refuse any faust-streaming / mode-streaming but the versions verified here
(and any source of the replaced functions that differs from what was read), rather than patch
code nobody has read.

1. ``faust.topics.Topic._get_producer`` (every ``Topic.send`` / ``publish_message``).
   Stock: ``await app.maybe_start_producer()``, which mode's ``@stampede`` wraps in a
   ``StampedeWrapper``: ``asyncio.sleep(0)`` before the call, after ``set_result`` and in its
   ``finally``, so three trips through the event loop on *every* send, long after the producer
   has started. Patched: when the producer has started (``producer._started``, the flag
   ``Service.maybe_start`` tests) or the app is transactional (``maybe_start_producer`` then
   only returns ``app.consumer.transactions``), return it directly; otherwise (first sends)
   fall back to the stock ``maybe_start_producer`` and its stampede protection.

2. ``faust.transport.consumer.Consumer._drain_messages`` (the fetcher loop).
   Stock: ``await self.wait_first(callback(message), self.suspend_flow.wait())`` per message:
   four tasks (callback, suspend flag, stopped, crashed), an ``asyncio.wait`` and at least one
   event-loop round trip per record, although the callback (decode, put into the agent's queue)
   almost never suspends. Patched (the loop is otherwise the stock one, verbatim): when none of
   ``suspend_flow`` / stopped / crashed is set, the callback coroutine is stepped once in place,
   in a context copy of its own as a task would have. If it finishes there (the common case) no
   task is made. If it suspends (queue full, flow control, producer back-pressure, the
   callback lock) its remainder goes through the stock ``wait_first`` with the same rivals, so
   a rebalance (``suspend_flow``) or a stop still cancels it as before. When a flag is already
   set the stock call is made unchanged. Stop, rebalance and pause keep their semantics; the
   fetcher still yields every 100 records and per ``getmany``.

Upstream fix this stands for (faust-streaming / mode-streaming):
- mode: ``StampedeWrapper.__call__`` should return the cached result without awaiting (no
  ``sleep(0)`` at all on the fast path); faust: ``Topic._get_producer`` should return
  ``app.producer`` without awaiting anything once it has started (start it in ``App.on_start``
  / keep the stampede only for the first call).
- faust: ``Consumer._drain_messages`` should call the message callback directly when the flow
  is active (test ``suspend_flow`` / stop flags, which are plain events) and only race it
  against them when it actually suspends, instead of a ``Service.wait_first`` (four tasks)
  per record.
Related upstream reports, none naming these causes: robinhood/faust#718 ("Time taken to send
lots of messages is longer in faust than aiokafka"), robinhood/faust#563 ("Message consumption
is slow", ~300-500 msg/s vs 10x with plain aiokafka). No faust-streaming issue or PR about
``stampede`` / ``wait_first`` cost was found.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from importlib.metadata import version
from typing import Any, cast

__all__ = ["VERIFIED", "FastPathVersionError", "install", "installed", "uninstall"]

#: distribution -> versions whose code was read and tested with these patches
VERIFIED: dict[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.3",),
    "mode-streaming": ("0.7.1",),
}
#: sha256[:16] of the source of each function replaced or relied upon, as read
_SOURCES = {
    "Consumer._drain_messages": "44a2500309e83c63",
    "Topic._get_producer": "93292ab6a147592f",
    "App.maybe_start_producer": "776ccefb9db5a370",
    "Service.wait_first": "feade6a31f8a6789",
}

_originals: dict[str, Any] = {}


class FastPathVersionError(RuntimeError):
    """The installed faust / mode is not a version these patches were verified against."""


def _check_versions() -> None:
    for dist, ok in VERIFIED.items():
        # mode's own ``mode.__version__`` says 0.0.1 in mode-streaming 0.7.1: ask the metadata
        got = version(dist)
        if got not in ok:
            raise FastPathVersionError(
                f"bench.faust_fastpath: {dist} {got} is installed, but the patches were verified "
                f"only against {', '.join(ok)}; read the new code and update VERIFIED"
            )
    import faust  # the reference only: wxsub does not run on Faust

    if faust.__version__ not in VERIFIED["faust-streaming"]:
        raise FastPathVersionError(f"bench.faust_fastpath: faust {faust.__version__} imported")
    for name, fun in _targets().items():
        got = hashlib.sha256(inspect.getsource(fun).encode()).hexdigest()[:16]
        if got != _SOURCES[name]:
            raise FastPathVersionError(
                f"bench.faust_fastpath: the source of {name} differs from the one verified "
                f"({got} != {_SOURCES[name]}); refusing to patch it"
            )


def _targets() -> dict[str, Callable[..., Any]]:
    from faust.app.base import App
    from faust.topics import Topic
    from faust.transport.consumer import Consumer
    from mode.services import Service

    return {
        "Consumer._drain_messages": Consumer.__dict__["_drain_messages"],
        "Topic._get_producer": Topic.__dict__["_get_producer"],
        "App.maybe_start_producer": App.__dict__["maybe_start_producer"].__wrapped__,
        "Service.wait_first": Service.__dict__["wait_first"],
    }


def installed() -> bool:
    """True while the patches are in place."""
    return bool(_originals)


def install() -> None:
    """Patch faust (idempotent); raises FastPathVersionError on an unverified version."""
    if _originals:
        return
    _check_versions()
    from faust.topics import Topic
    from faust.transport.consumer import Consumer

    _originals["Topic._get_producer"] = Topic.__dict__["_get_producer"]
    _originals["Consumer._drain_messages"] = Consumer.__dict__["_drain_messages"]
    Topic._get_producer = _get_producer  # type: ignore[method-assign]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]


def uninstall() -> None:
    """Put the original functions back (no-op when not installed)."""
    if not _originals:
        return
    from faust.topics import Topic
    from faust.transport.consumer import Consumer

    Topic._get_producer = _originals.pop("Topic._get_producer")  # type: ignore[method-assign]
    Consumer._drain_messages = _originals.pop("Consumer._drain_messages")  # type: ignore[method-assign]


async def _get_producer(self: Any) -> Any:
    """``Topic._get_producer`` without the stampede's three event-loop yields once started."""
    app = self.app
    if app.in_transaction:
        return app.consumer.transactions  # all maybe_start_producer does in this case
    producer = app.producer
    if producer._started.is_set():  # what Service.maybe_start tests
        return producer
    return await app.maybe_start_producer()  # first sends: keep the stampede protection


class _Started:
    """Awaitable that finishes a coroutine whose first step already ran and yielded
    ``pending``, each later step in the coroutine's own context (as its task would)."""

    __slots__ = ("_coro", "_ctx", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context, pending: Any):
        self._coro, self._ctx, self._pending = coro, ctx, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, ctx, pending = self._coro, self._ctx, self._pending
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go into the coroutine
                step: Callable[[Any], Any] = coro.throw
                arg: Any = exc
            else:
                step, arg = coro.send, value
            try:
                pending = ctx.run(step, arg)
            except StopIteration as stop:
                return stop.value


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover
    """faust 0.15.3 ``Consumer._drain_messages``, verbatim but for the marked lines."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    # fast path (patched): the flags wait_first would race the callback against
    suspend_is_set = self.suspend_flow.is_set
    crashed_is_set = self._crashed.is_set
    copy_context = contextvars.copy_context

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        # --- patched: was one wait_first per message ---
                        if suspend_is_set() or consumer_should_stop() or crashed_is_set():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            coro = callback(message)
                            ctx = copy_context()
                            try:
                                pending = ctx.run(coro.send, None)
                            except StopIteration:
                                pass
                            else:
                                await self.wait_first(
                                    _Started(coro, ctx, pending), self.suspend_flow.wait()
                                )
                        # --- end patched ---
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)
