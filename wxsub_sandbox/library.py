"""WeChat's public template library, as much of it as the sandbox needs: a few titles (``tid``)
with their keywords, and the rules of ``addtemplate``/``deltemplate``.

A private template made from a title has one line per chosen keyword, ``name:{{rule+kid.DATA}}``
(WeChat numbers a private template's keywords by the library keyword id: ``thing1``,
``character_string2``). Errcodes (WeChat's template-management codes; UNCONFIRMED where its
pages are silent): 200014 bad tid, 200020 bad kidList (2 to 5 known, distinct kids), 200021 bad
sceneDesc (required, <= 15 characters), 200012 the app holds 50 private templates already,
20002 deltemplate of a priTmplId the app does not have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "LIBRARY",
    "MAX_PRIVATE",
    "PubKeyword",
    "PubTitle",
    "add_errcode",
    "private_content",
    "private_id",
]

MAX_PRIVATE = 50


class PubKeyword(NamedTuple):
    kid: int
    name: str
    example: str
    rule: str  # the keyword type

    def to_api(self) -> dict[str, Any]:
        return {"kid": self.kid, "name": self.name, "example": self.example, "rule": self.rule}


class PubTitle(NamedTuple):
    tid: int
    title: str
    type: int  # 2 one-time, 3 long-term
    keywords: tuple[PubKeyword, ...]
    enums: Mapping[int, tuple[str, ...]] = {}  # kid -> values, for enum keywords


LIBRARY: Mapping[int, PubTitle] = {
    t.tid: t
    for t in (
        PubTitle(1001, "订单状态通知", 2, (
            PubKeyword(1, "订单号", "SO2024050112345", "character_string"),
            PubKeyword(2, "订单状态", "已发货", "phrase"),
            PubKeyword(3, "商品名称", "无线耳机", "thing"),
            PubKeyword(4, "更新时间", "2024年5月1日 12:00", "time"),
            PubKeyword(5, "订单金额", "¥199.00", "amount"),
        )),
        PubTitle(1002, "退款通知", 2, (
            PubKeyword(1, "订单号", "SO2024050112345", "character_string"),
            PubKeyword(2, "退款金额", "¥199.00", "amount"),
            PubKeyword(3, "退款状态", "已退款", "phrase"),
            PubKeyword(4, "退款时间", "2024年5月1日 12:00", "time"),
        )),
        PubTitle(1003, "物流异常提醒", 2, (
            PubKeyword(1, "运单号", "SF1234567890", "character_string"),
            PubKeyword(2, "异常原因", "地址不详", "thing"),
            PubKeyword(3, "物流状态", "配送异常", "phrase"),
            PubKeyword(4, "处理方式", "联系客服", "enum"),
        ), {4: ("联系客服", "重新派送", "退回商家")}),
    )
}  # fmt: skip


def add_errcode(tid: Any, kids: Any, scene: Any, held: int) -> int:
    """0 when ``addtemplate {tid, kidList, sceneDesc}`` is acceptable, else WeChat's errcode."""
    title = None
    if isinstance(tid, str | int) and not isinstance(tid, bool) and str(tid).isdigit():
        title = LIBRARY.get(int(tid))
    if title is None:
        return 200014
    known = {k.kid for k in title.keywords}
    if (not isinstance(kids, list) or not 2 <= len(kids) <= 5 or len(set(kids)) != len(kids)
            or not all(isinstance(k, int) and k in known for k in kids)):  # fmt: skip
        return 200020
    if not isinstance(scene, str) or not scene or len(scene) > 15:
        return 200021
    if held >= MAX_PRIVATE:
        return 200012
    return 0


def private_content(title: PubTitle, kids: Sequence[int]) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The private template's ``content`` and enum values for the chosen keywords."""
    by_kid = {k.kid: k for k in title.keywords}
    lines, enums = [], {}
    for kid in kids:
        kw = by_kid[kid]
        lines.append(f"{kw.name}:{{{{{kw.rule}{kid}.DATA}}}}")
        if kid in title.enums:
            enums[f"{kw.rule}{kid}"] = title.enums[kid]
    return "\n".join(lines), enums


def private_id(appid: str, tid: int, kids: Sequence[int], n: int) -> str:
    """A priTmplId (43 characters, like WeChat's), deterministic per app and choice."""
    raw = f"{appid}|{tid}|{','.join(map(str, kids))}|{n}".encode()
    return hashlib.blake2b(raw, digest_size=32).hexdigest()[:43]
