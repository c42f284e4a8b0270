"""``wxsub trace APPID OPENID`` and ``wxsub trace --order APPID ORDER_ID``: a user's or an
order's trace, as a timeline in the terminal (``--json`` for tools).

Any worker with ``[support] enabled`` answers (it forwards to the owner of the key's partition);
the command asks ``support.url`` of the settings, or ``--url``, with ``support.token``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from wxsub.errors import SetupError
from wxsub.settings import load_settings

__all__ = ["fetch_trace", "format_trace", "register"]


def fetch_trace(
    url: str, appid: str, key: str, *, order: bool = False, token: str = "", timeout_s: float = 30
) -> dict[str, Any]:
    """The trace document from the support API at ``url``."""
    path, name = ("order", "order_id") if order else ("user", "openid")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.get(
            f"{url.rstrip('/')}/support/api/{path}",
            params={"appid": appid, name: key},
            headers=headers,
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise SetupError(f"cannot reach the support API at {url}: {exc}") from exc
    doc: dict[str, Any] = orjson.loads(resp.content) if resp.content else {}
    if resp.status_code != 200:
        raise SetupError(f"support API: {doc.get('error', resp.status_code)}")
    return doc


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _delivery(d: Mapping[str, Any] | None) -> str:
    if not d:
        return ""
    text = f"{d['state']}"
    if d.get("attempts"):
        text += f" after {d['attempts']} attempt(s)"
    if d.get("msgid"):
        text += f" msgid {d['msgid']}"
    if d.get("errcode"):
        text += f" errcode {d['errcode']}"
    if d.get("reconciled"):
        text += " (reconciled from the receipt)"
    return text


def _user_lines(u: Mapping[str, Any]) -> list[str]:
    lines = [f"user {u['appid']}:{u['openid']} (partition {u['partition']})"]
    credits = ", ".join(f"{t}={n}" for t, n in u["credits"].items()) or "none"
    lines.append(f"  credits: {credits}")
    mutes = [f"template {t}" for t in u["muted_templates"]]
    mutes += [f"kind {k}" for k in u["muted_kinds"]]
    lines.append(f"  muted: {', '.join(mutes) or 'nothing'}")
    for label, cap in u["caps"].items():
        lines.append(f"  {label} cap: {cap['used']} of {cap['max']} in {cap['window_s']} s")
    for h in u["held"]:
        lines.append(
            f"  held for collapse: {h['kind']} {h['template_id']} until {_when(h['due_at'])}"
        )
    for d in u["deferred"]:
        lines.append(
            f"  deferred (quiet hours): {d['kind']} {d['template_id']} until {_when(d['due_at'])}"
        )
    lines.append("  timeline (UTC, oldest first):")
    if not u["decisions"]:
        lines.append("    no decisions kept for this user")
    for d in u["decisions"]:
        what = f"{d['reason']}" + (f" ({d['detail']})" if d["detail"] else "")
        line = f"    {_when(d['at'])}  {d['kind']:<13} {d['subject']:<16} {what}"
        delivery = _delivery(d.get("delivery"))
        if delivery:
            line += f"  -> {delivery}"
        lines.append(line)
    for part, why in u.get("unavailable", {}).items():
        lines.append(f"  ({part} unavailable: {why})")
    return lines


def format_trace(doc: Mapping[str, Any]) -> str:
    """A user's or an order's trace as text."""
    if "order_id" not in doc:
        return "\n".join(_user_lines(doc))
    lines = [f"order {doc['appid']}:{doc['order_id']} (partition {doc['partition']})"]
    order = doc["order"]
    if order is None:
        lines.append("  no such order in the orders table (never seen, or not yet)")
    else:
        lines.append(f"  status {order['status']} at {_when(order['occurred_at'])}, "
                     f"user {order['openid']}")  # fmt: skip
    for p in doc["pending"]:
        lines.append(
            f"  pending logistics {p['event_id']} ({p['state']}) since {_when(p['received_at'])}"
        )
    if doc.get("user") is not None:
        lines += _user_lines(doc["user"])
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trace",
        help="why a user got (or did not get) a message: their credits, decisions, deliveries",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("appid")
    p.add_argument("key", metavar="OPENID", help="the user's openid (the order id with --order)")
    p.add_argument("--order", action="store_true", help="KEY is an order id")
    p.add_argument("--json", action="store_true", help="print the trace as JSON")
    p.add_argument("--url", help="a worker's support URL (default: support.url of the settings)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    token = settings.support.token.reveal() if settings.support.token else ""
    doc = fetch_trace(
        args.url or settings.support.url, args.appid, args.key, order=args.order, token=token
    )
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_trace(doc))
    return 0
