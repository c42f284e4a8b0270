"""Reasons and results are StrEnums: the strings on the wire (records, DLQ headers, metric labels)
are the same as when they were bare strings, and the docs name every member."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from wxsub.agents.rules.delivery import LedgerState, StepResult
from wxsub.dlq import dead_letter, parse_dead_letter
from wxsub.errors import InputError, InputReason, RejectReason
from wxsub.schemas.internal import (
    Correction,
    Delivery,
    Outcome,
    OutcomeReason,
    decode_internal,
    encode_internal,
)
from wxsub.wechat.errcodes import CreditEffect

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("reason", list(OutcomeReason))
def test_policies_doc_names_every_outcome_reason(reason: OutcomeReason) -> None:
    assert f"`{reason.value}`" in (DOCS / "policies.md").read_text()


@pytest.mark.parametrize("reason", list(InputReason))
def test_operations_doc_names_every_dlq_reason(reason: InputReason) -> None:
    assert f"`{reason.value}`" in (DOCS / "operations.md").read_text()


@pytest.mark.parametrize("reason", list(RejectReason))
def test_gateway_doc_names_every_reject_reason(reason: RejectReason) -> None:
    assert f"`{reason.value}`" in (DOCS / "gateway.md").read_text()


@pytest.mark.parametrize("reason", list(OutcomeReason))
def test_an_outcome_encodes_the_same_with_the_member_or_the_string(reason: OutcomeReason) -> None:
    fields = ("e1", "order_status", reason, "decide", "wxapp", "o-1", "T", "n1", 43101, "d", 5)
    plain = Outcome(*fields[:2], str(reason.value), *fields[3:])  # type: ignore[arg-type]
    member = Outcome(*fields)  # type: ignore[arg-type]
    assert type(plain.reason) is str and type(member.reason) is OutcomeReason
    raw = encode_internal(member)
    assert raw == encode_internal(plain)
    assert f'"reason":"{reason.value}"'.encode() in raw
    assert decode_internal(Outcome, raw) == member == plain


def test_corrections_and_deliveries_encode_the_same() -> None:
    for action in (CreditEffect.ZERO, CreditEffect.RESTORE):
        corr = Correction("wxapp", "o-1", "T", action, "n1", 5)
        assert encode_internal(corr) == encode_internal(
            Correction("wxapp", "o-1", "T", str(action.value), "n1", 5)
        )
    for state in LedgerState:
        rec = Delivery("n1", state, "wxapp", "o-1", "T", 1, "42", None, 5)
        assert encode_internal(rec) == encode_internal(
            Delivery("n1", state.value, "wxapp", "o-1", "T", 1, "42", None, 5)
        )


def test_metric_labels_are_the_values() -> None:
    registry = CollectorRegistry()
    counter = Counter("t", "t", ["reason", "result"], registry=registry)
    counter.labels(OutcomeReason.NO_CREDIT, StepResult.SENT).inc()
    counter.labels("no_credit", "sent").inc()  # the same series
    samples = [s for m in registry.collect() for s in m.samples if s.name == "t_total"]
    assert [(s.labels, s.value) for s in samples] == [
        ({"reason": "no_credit", "result": "sent"}, 2)
    ]


def test_dlq_reason_headers() -> None:
    for error, reason in (
        (InputError(InputReason.BAD_JSON, "x"), b"bad_json"),
        (RuntimeError("boom"), b"internal"),
    ):
        _, _, headers = dead_letter(b"{", None, "orders", 0, 7, error, "orders")
        assert ("wxsub.dlq.reason", reason) in headers
        assert parse_dead_letter(b"{", headers).reason == reason.decode()
