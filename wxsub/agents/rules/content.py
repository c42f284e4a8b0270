"""The sensitive-word check: one Aho-Corasick automaton per word list (pyahocorasick).

Matching is case-insensitive (``str.casefold``) and ignores whitespace inside a value, so
"赌 博" still hits "赌博". Automatons are built once per distinct word list and cached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import ahocorasick

__all__ = ["WordMatcher", "matcher"]

_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub("", text.casefold())


class WordMatcher:
    """Finds the first listed word in a text; an empty list matches nothing."""

    __slots__ = ("_automaton", "size")

    def __init__(self, words: Iterable[str]) -> None:
        normed = sorted({_norm(w) for w in words} - {""})
        self.size = len(normed)
        self._automaton: ahocorasick.Automaton | None = None
        if normed:
            automaton = ahocorasick.Automaton()
            for word in normed:
                automaton.add_word(word, word)
            automaton.make_automaton()
            self._automaton = automaton

    def find(self, text: str) -> str | None:
        """The first word found in ``text`` (by end position), or None."""
        if self._automaton is None:
            return None
        for _end, word in self._automaton.iter(_norm(text)):
            return str(word)
        return None

    def find_any(self, texts: Iterable[str]) -> str | None:
        for text in texts:
            hit = self.find(text)
            if hit is not None:
                return hit
        return None

    def __repr__(self) -> str:  # the words themselves stay out of logs
        return f"WordMatcher({self.size} words)"


@functools.lru_cache(maxsize=256)  # bounded; by word list (one per config): a C-level hit
def matcher(words: tuple[str, ...]) -> WordMatcher:
    """The cached matcher of one word list (a merchant config's ``sensitive_words``)."""
    return WordMatcher(words)
