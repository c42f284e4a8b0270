"""Parse a subscribe-message template's ``content`` into its keywords.

WeChat's ``gettemplate`` returns the layout as text, e.g.
``"订单号:{{character_string1.DATA}}\\n状态:{{phrase2.DATA}}"``: it is the only place a sender
learns each keyword's name and type.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from wxsub.wechat.keywords import keyword_type

__all__ = ["TemplateKeyword", "parse_content"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+\d*)\.DATA\s*\}\}")


class TemplateKeyword(NamedTuple):
    """One keyword of a template, in layout order."""

    label: str  # the text before it on its line, without the colon ("订单号")
    name: str  # the data key ("character_string1")
    type: str  # its type ("character_string")


def parse_content(content: str) -> list[TemplateKeyword]:
    """The keywords of ``content`` in order. ValueError on a repeated keyword name."""
    out: list[TemplateKeyword] = []
    seen: set[str] = set()
    for line in content.splitlines():
        start = 0
        for match in _PLACEHOLDER.finditer(line):
            label = line[start : match.start()].strip().rstrip(":：").strip()
            name = match.group(1)
            if name in seen:
                raise ValueError(f"keyword {name} appears twice in the template content")
            seen.add(name)
            out.append(TemplateKeyword(label, name, keyword_type(name)))
            start = match.end()
    return out
