"""The sensitive-word matcher."""

from __future__ import annotations

from wxsub.agents.rules.content import WordMatcher, matcher


def test_finds_words_case_and_space_insensitive() -> None:
    words = WordMatcher(["赌博", "Casino", "  "])
    assert words.size == 2
    assert words.find("欢迎来到赌博天堂") == "赌博"
    assert words.find("赌 博") == "赌博"
    assert words.find("best CASINO deals") == "casino"
    assert words.find("正常商品") is None
    assert words.find_any(["ok", "go to casino"]) == "casino"
    assert "赌博" not in repr(words)


def test_empty_list_matches_nothing_and_matchers_are_cached() -> None:
    assert WordMatcher([]).find("anything") is None
    assert matcher(("a", "b")) is matcher(("a", "b"))
