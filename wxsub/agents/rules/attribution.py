"""Open attribution as pure functions: the notification reference a sent page carries, and the
join of an ``opened`` event to the send it names.

Every send whose kind has a ``page`` gets ``wxref=<ref>`` appended to it (``?`` or ``&``). The
ref is the notification id's first 9 bytes (72 bits of blake2b) in base64url without padding:
12 characters of ``[A-Za-z0-9_-]``. The stats stage keys the refs it keeps by user
(``appid:openid|ref``), so two refs only collide when they are one user's; even across one app,
10 million sends in the attribution window collide with probability ~1e-8. A kind without a page
opens nothing (WeChat shows the message without a link): no ref, no opens.

A send's ref is kept the app's ``retention.open_window_s`` (default 7 days) after the send; the
window is fixed at the send (kept with the ref), so a later change applies to later sends. An
``opened`` event within it is ``opened`` once, then ``duplicate``; past the window it is
``unknown_ref``.

An open whose ref is not kept (yet) is held for a grace (``worker.open_grace_ms``) after its
event time, when it is young enough: its send's outcome may still be on its way (an in-doubt
send settled later by its receipt, or the deliver stage's answer written in its next turn). At
most ``MAX_HELD_PER_USER`` opens per user are held; the send ends them ``opened`` (the first
within the window) and ``duplicate``, the grace's end ``unknown_ref``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from wxsub.schemas.struct import record

__all__ = [
    "MAX_HELD_PER_USER",
    "OPEN_WINDOW_MS",
    "REF_PARAM",
    "Held",
    "HeldOpen",
    "SentRef",
    "decode_held",
    "decode_ref",
    "encode_held",
    "encode_ref",
    "hold_until",
    "judge_held",
    "judge_open",
    "ref_of",
    "window_ms",
    "with_ref",
]

REF_PARAM = "wxref"
#: the default open window (``retention.open_window_s``); refs kept before windows were per
#: app carry none and have this one
OPEN_WINDOW_MS = 7 * 24 * 3600 * 1000
#: opens held per user while they wait for their sends: a user opens the few messages just
#: sent; more than this at once is a publisher's bug or a flood, and ends ``unknown_ref`` at once
MAX_HELD_PER_USER = 16
_REF_BYTES = 9


def ref_of(notification_id: str) -> str:
    """The short reference of a notification id (12 characters of base64url)."""
    try:
        raw = bytes.fromhex(notification_id)
    except ValueError:  # not one of ours (hex blake2b): hash it, still deterministic
        raw = hashlib.blake2b(notification_id.encode(), digest_size=16).digest()
    if len(raw) < _REF_BYTES:
        raw = hashlib.blake2b(raw, digest_size=16).digest()
    return base64.urlsafe_b64encode(raw[:_REF_BYTES]).decode()


def with_ref(body: Mapping[str, Any], notification_id: str) -> dict[str, Any]:
    """The send body with ``wxref=<ref>`` appended to its page (unchanged without a page)."""
    page = body.get("page")
    if not page:
        return dict(body)
    sep = "&" if "?" in page else "?"
    return {**body, "page": f"{page}{sep}{REF_PARAM}={ref_of(notification_id)}"}


def window_ms(open_window_s: int) -> int:
    """The open window of a send made now, from the app's ``retention.open_window_s``."""
    return open_window_s * 1000


@record
class SentRef:
    """What the stats stage keeps per sent ref: the send's template, kind, time, first open,
    and the open window in force at the send."""

    template_id: str
    kind: str
    sent_at: int
    opened_at: int = 0
    window_ms: int = OPEN_WINDOW_MS

    @property
    def until(self) -> int:
        """When the ref is forgotten (its DueIndex time)."""
        return self.sent_at + self.window_ms


def encode_ref(ref: SentRef) -> bytes:
    return orjson.dumps([ref.template_id, ref.kind, ref.sent_at, ref.opened_at, ref.window_ms])


def decode_ref(raw: bytes) -> SentRef:
    doc = orjson.loads(raw)
    template_id, kind, sent_at, opened_at = doc[:4]
    window = int(doc[4]) if len(doc) > 4 else OPEN_WINDOW_MS
    return SentRef(str(template_id), str(kind), int(sent_at), int(opened_at), window)


def judge_open(kept: SentRef | None, now_ms: int) -> str:
    """``opened`` (the first open of a kept send), ``duplicate`` (opened before) or
    ``unknown_ref`` (no such send, or older than its window: its ref was forgotten)."""
    if kept is None or now_ms - kept.sent_at > kept.window_ms:
        return "unknown_ref"
    if kept.opened_at:
        return "duplicate"
    return "opened"


@record
class HeldOpen:
    """An ``opened`` event waiting for its send: its id and event time."""

    event_id: str
    at: int


@record
class Held:
    """The opens of one user and ref held for their send, until ``due_ms`` (wall clock)."""

    due_ms: int
    appid: str
    openid: str
    ref: str
    opens: tuple[HeldOpen, ...]


def hold_until(at_ms: int, now_ms: int, grace_ms: int, held_of_user: int) -> int | None:
    """When an open with no kept ref stops waiting for its send (wall clock), or None: it ends
    ``unknown_ref`` now (too old for the grace, or the user has ``MAX_HELD_PER_USER`` held).
    The grace runs from the event time, or from now for an event time in the future."""
    due = min(at_ms, now_ms) + grace_ms
    if due <= now_ms or held_of_user >= MAX_HELD_PER_USER:
        return None
    return due


def encode_held(held: Held) -> bytes:
    opens = [[o.event_id, o.at] for o in held.opens]
    return orjson.dumps([held.due_ms, held.appid, held.openid, held.ref, opens])


def decode_held(raw: bytes) -> Held:
    due, appid, openid, ref, opens = orjson.loads(raw)
    return Held(int(due), str(appid), str(openid), str(ref),
                tuple(HeldOpen(str(e), int(a)) for e, a in opens))  # fmt: skip


def judge_held(kept: SentRef, opens: Sequence[HeldOpen]) -> tuple[SentRef, list[str]]:
    """The verdicts of the opens held for ``kept`` (in their order) when it arrives, and the
    ref as it is after them (marked by its first open)."""
    verdicts = []
    for o in opens:
        verdict = judge_open(kept, o.at)
        if verdict == "opened":
            kept = SentRef(kept.template_id, kept.kind, kept.sent_at, o.at, kept.window_ms)
        verdicts.append(verdict)
    return kept, verdicts
