"""WeChat template keyword types as pure functions (rules from wechat-api.md).

Used twice: the sandbox judges values with :func:`check` (a failure is errcode 47003), and the
decide stage renders values with :func:`fit`, which makes a value valid only where a faithful
transformation exists (cut a ``thing`` with an ellipsis, format an amount or a datetime).
Lengths count code points, so one CJK character or one emoji counts 1.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = [
    "TYPES",
    "check",
    "clean",
    "fit",
    "is_chinese",
    "keyword_type",
]

TYPES = frozenset(
    {
        "thing",
        "number",
        "letter",
        "symbol",
        "character_string",
        "time",
        "date",
        "amount",
        "phone_number",
        "car_number",
        "name",
        "phrase",
        "enum",
    }
)

_ELLIPSIS = "…"
_KEYWORD = re.compile(r"^([a-z_]+?)\d*(?:\.DATA)?$")


def keyword_type(name: str) -> str:
    """The type of a keyword name: ``thing1`` -> ``thing``, ``number01`` -> ``number``."""
    match = _KEYWORD.match(name)
    return match.group(1) if match else name


# --- character classes -----------------------------------------------------------------------


def is_chinese(ch: str) -> bool:
    """A CJK ideograph (unified, extensions or compatibility)."""
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x323AF
        or 0xF900 <= code <= 0xFAFF
    )


def _is_control(ch: str) -> bool:
    # Cc covers \t \n \r and C0/C1; Zl/Zp are the Unicode line and paragraph separators;
    # Cs (lone surrogates) cannot travel in JSON at all.
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")


def _is_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _is_ascii_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


# --- date and time grammar -------------------------------------------------------------------

_CLOCK = r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?"
_DATES = (
    r"(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})日",
    r"(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})",
    r"(?P<y>\d{4})-(?P<m>\d{1,2})",
    r"(?P<m>\d{1,2})-(?P<d>\d{1,2})",
)
_TIME_RE = [re.compile(rf"^(?:{d} +)?{_CLOCK}$", re.ASCII) for d in _DATES]
_DATE_RE = [re.compile(rf"^{d}(?: +{_CLOCK})?$", re.ASCII) for d in _DATES]


def _valid_parts(parts: dict[str, str | None]) -> bool:
    h, mi, s = parts.get("h"), parts.get("mi"), parts.get("s")
    if h is not None and not (int(h) <= 23 and int(mi or 0) <= 59 and int(s or 0) <= 59):
        return False
    y, m, d = parts.get("y"), parts.get("m"), parts.get("d")
    if m is not None and not 1 <= int(m) <= 12:
        return False
    if d is not None and m is not None:
        try:
            dt.date(int(y) if y else 2000, int(m), int(d))  # 2000: a leap year for "02-29"
        except ValueError:
            return False
    return True


def _one_moment(patterns: list[re.Pattern[str]], text: str) -> bool:
    for pattern in patterns:
        match = pattern.match(text)
        if match and _valid_parts(match.groupdict()):
            return True
    return False


def _moment_or_range(patterns: list[re.Pattern[str]], value: str) -> bool:
    sides = value.split("~")
    if len(sides) > 2:
        return False
    return all(_one_moment(patterns, side.strip(" ")) for side in sides)


# --- the rules -------------------------------------------------------------------------------

_NUMBER = re.compile(r"^\d+(?:\.\d+)?$", re.ASCII)
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)元?$", re.ASCII)


def _thing(v: str) -> str | None:
    return None if len(v) <= 20 else "longer than 20 characters"


def _number(v: str) -> str | None:
    if len(v) > 32:
        return "longer than 32 characters"
    return None if _NUMBER.match(v) else "not a number"


def _letter(v: str) -> str | None:
    if len(v) > 32:
        return "longer than 32 letters"
    return None if all(_is_ascii_letter(c) for c in v) else "not letters only"


def _symbol(v: str) -> str | None:
    if len(v) > 5:
        return "longer than 5 symbols"
    return None if all(_is_symbol(c) for c in v) else "not symbols only"


def _character_string(v: str) -> str | None:
    if len(v) > 32:
        return "longer than 32 characters"
    ok = (v.isascii() and v.isalnum()) or all(_is_ascii_alnum(c) or _is_symbol(c) for c in v)
    return None if ok else "only digits, letters and symbols allowed"


def _time(v: str) -> str | None:
    return None if _moment_or_range(_TIME_RE, v) else "not a time (15:01, 2019年10月1日 15:01)"


def _date(v: str) -> str | None:
    return None if _moment_or_range(_DATE_RE, v) else "not a date (2019年10月1日, 2019-10-01)"


def _amount(v: str) -> str | None:
    if unicodedata.category(v[0]) != "Sc":
        return "must start with one currency symbol"
    match = _AMOUNT.match(v[1:])
    if not match:
        return "not an amount (¥12.50)"
    digits = sum(c.isdigit() for c in match.group(1))
    return None if digits <= 10 else "more than 10 digits"


def _phone_number(v: str) -> str | None:
    if len(v) > 17:
        return "longer than 17 characters"
    ok = all((c.isascii() and c.isdigit()) or _is_symbol(c) for c in v)
    return None if ok and any(c.isdigit() for c in v) else "only digits and symbols allowed"


def _car_number(v: str) -> str | None:
    if len(v) > 8:
        return "longer than 8 characters"
    inner = v[1:] if is_chinese(v[0]) else v
    inner = inner[:-1] if inner and is_chinese(inner[-1]) else inner
    ok = bool(inner) and all(_is_ascii_alnum(c) for c in inner)
    return None if ok else "Chinese only first and last, letters or digits between"


def _name(v: str) -> str | None:
    if not all(is_chinese(c) or _is_ascii_letter(c) or _is_symbol(c) or c == " " for c in v):
        return "only Chinese, letters and symbols allowed"
    if any(is_chinese(c) for c in v):
        return None if len(v) <= 10 else "longer than 10 characters (with Chinese)"
    return None if len(v) <= 20 else "longer than 20 characters"


def _phrase(v: str) -> str | None:
    if len(v) > 5:
        return "longer than 5 characters"
    return None if all(is_chinese(c) for c in v) else "Chinese characters only"


_RULES: dict[str, Callable[[str], str | None]] = {
    "thing": _thing,
    "number": _number,
    "letter": _letter,
    "symbol": _symbol,
    "character_string": _character_string,
    "time": _time,
    "date": _date,
    "amount": _amount,
    "phone_number": _phone_number,
    "car_number": _car_number,
    "name": _name,
    "phrase": _phrase,
}


def check(type_: str, value: str, enum_values: Sequence[str] | None = None) -> str | None:
    """None when ``value`` is valid for keyword type ``type_``, else a short reason."""
    if not isinstance(value, str):
        return "not a string"
    if not value:
        return "empty"
    # isprintable() is False for every Cc, Zl, Zp and Cs character (and for some others)
    if not value.isprintable() and any(_is_control(c) for c in value):
        return "control character or newline"
    if type_ == "enum":
        return None if enum_values is not None and value in enum_values else "not an enum value"
    rule = _RULES.get(type_)
    return rule(value) if rule else f"unknown keyword type {type_!r}"


# --- rendering -------------------------------------------------------------------------------

_CONTROL_RUN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")


def clean(text: str) -> str:
    """Replace each run of control characters and newlines with one space; strip the ends."""
    return _CONTROL_RUN.sub(" ", text).strip()


def fit(type_: str, value: object, enum_values: Sequence[str] | None = None) -> str | None:
    """A valid rendering of ``value`` for ``type_``, or None when no faithful one exists.

    Faithful transformations only: control characters become spaces, a ``thing`` longer than
    20 is cut to 19 + "…", numbers become ``number``/``amount`` text (amount: ``¥12.50``),
    datetimes become ``time``/``date`` text. Anything else must already be valid.
    """
    if type(value) is str and value.isprintable():
        # (most values) isprintable() is False for every character _CONTROL_RUN matches, so
        # clean() would only strip: without its regex, ~2 k instructions less per value fitted
        text = value.strip()
    else:
        rendered = _render(type_, value)
        if rendered is None:
            return None
        text = clean(rendered)
    if type_ == "thing" and len(text) > 20:
        text = text[:19].rstrip() + _ELLIPSIS
    return text if check(type_, text, enum_values) is None else None


def _render(type_: str, value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if type_ == "amount" and isinstance(value, int | float | Decimal):
        return _money(value)
    if type_ == "number" and isinstance(value, int | Decimal):
        return _plain_decimal(Decimal(value))
    if type_ == "number" and isinstance(value, float):
        return _plain_decimal(Decimal(repr(value))) if value == value else None
    if type_ in ("time", "date") and isinstance(value, dt.date | dt.time):
        return _moment(type_, value)
    return value if isinstance(value, str) else None


def _money(value: int | float | Decimal) -> str | None:
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
        if not amount.is_finite():
            return None
        amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return None
    if amount.is_zero():
        amount = amount.copy_abs()
    return f"¥{amount}" if amount >= 0 else None


def _plain_decimal(value: Decimal) -> str | None:
    if not value.is_finite() or value < 0:
        return None
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _moment(type_: str, value: dt.date | dt.time) -> str | None:
    if isinstance(value, dt.datetime):
        day = f"{value.year}年{value.month}月{value.day}日"
        return f"{day} {value:%H:%M}" if type_ == "time" else day
    if isinstance(value, dt.date):
        return f"{value.year}年{value.month}月{value.day}日" if type_ == "date" else None
    return f"{value:%H:%M}" if type_ == "time" else None
