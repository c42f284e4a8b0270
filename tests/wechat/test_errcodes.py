"""Every errcode of wechat-api.md has a disposition, and unknown ones fail safe."""

from __future__ import annotations

import pytest

from wxsub.wechat.errcodes import (
    TOKEN_ERRCODES,
    CreditEffect,
    Disposition,
    classify,
    credit_effect,
    describe,
)

CASES = {
    0: Disposition.SUCCESS,
    -1: Disposition.RETRYABLE,
    40001: Disposition.TOKEN,
    40014: Disposition.TOKEN,
    42001: Disposition.TOKEN,
    40003: Disposition.PERMANENT,
    40037: Disposition.PERMANENT,
    41030: Disposition.PERMANENT,
    43101: Disposition.PERMANENT,
    43107: Disposition.PERMANENT,
    43108: Disposition.RETRYABLE,
    45168: Disposition.PERMANENT,
    47003: Disposition.PERMANENT,
    45009: Disposition.QUOTA,
    45011: Disposition.RETRYABLE,
    40164: Disposition.PERMANENT,
    48001: Disposition.PERMANENT,
    40002: Disposition.PERMANENT,
    40013: Disposition.PERMANENT,
}


@pytest.mark.parametrize(("errcode", "disposition"), sorted(CASES.items()))
def test_every_documented_errcode_is_classified(errcode: int, disposition: Disposition) -> None:
    assert classify(errcode) is disposition
    assert describe(errcode).meaning != "unknown errcode"


def test_token_errcodes() -> None:
    assert frozenset({40001, 40014, 42001}) == TOKEN_ERRCODES


@pytest.mark.parametrize("errcode", [40037, 43107, 45009, 40164, 48001, 41030])
def test_configuration_problems_alert(errcode: int) -> None:
    assert describe(errcode).alert


@pytest.mark.parametrize("errcode", [43101, 40003, 47003, -1, 43108])
def test_per_message_problems_do_not_alert(errcode: int) -> None:
    assert not describe(errcode).alert


def test_unknown_errcode_is_permanent_and_alerts() -> None:
    info = describe(99999)
    assert info.disposition is Disposition.PERMANENT
    assert info.alert


def test_credit_effects() -> None:
    """Sent: the credit is spent; 43101: WeChat says there is none (zero); anything else that
    ends a send (refused, retries exhausted, unknown code, no answer): not sent, give it back."""
    assert credit_effect(0) is CreditEffect.SPENT
    assert credit_effect(43101) is CreditEffect.ZERO
    for errcode in (*sorted(set(CASES) - {0, 43101}), 99999, None):
        assert credit_effect(errcode) is CreditEffect.RESTORE
    # the values are the Correction record's action on the corrections topic
    assert (CreditEffect.ZERO, CreditEffect.RESTORE) == ("zero", "restore")
