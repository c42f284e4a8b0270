"""Micro-benchmark of the pure per-user decision (``rules.decide.decide``), CPU µs per call.

The inputs are realistic: the pipeline test's generated event log is run through the oracle and
every ``decide(state, cand, cfg, now_ms)`` call it makes is recorded (state before, candidate),
then replayed ``--repeat`` times. It also prints a digest of every Decision (orjson of the state,
intents and outcomes, plus ``on_timer`` over the final states), so two code versions can be
checked for byte-identical results.

    python -m bench.decide_micro [--users 600] [--orders 1300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import time
import tomllib

import orjson

from tests.pipeline import oracle
from tests.pipeline.eventlog import Knobs, generate
from wxsub.agents.rules import decide as dec
from wxsub.agents.rules.subscriptions import UserState
from wxsub.merchants import MerchantConfig, parse_merchants
from wxsub.schemas.internal import Candidate

__all__ = ["main"]

NOW = 1_717_245_296_789  # as in tests/pipeline/test_oracle.py

Call = tuple[UserState, Candidate, MerchantConfig | None, int]


def record_calls(users: int, orders: int) -> list[Call]:
    """Every decide() call the oracle makes over a generated log, with its inputs."""
    log = generate(Knobs(now_ms=NOW, users=users, orders=orders, skus=60, stores=6))
    merchants = parse_merchants(tomllib.loads(log.merchants_toml))
    calls: list[Call] = []
    real = dec.decide

    def spy(
        state: UserState,
        cand: Candidate,
        cfg: MerchantConfig | None,
        now: int,
        paused: str | None = None,
    ) -> dec.Decision:
        assert paused is None, "the generated log runs without kind pauses"
        calls.append((state, cand, cfg, now))
        return real(state, cand, cfg, now)

    oracle.dec.decide = spy  # type: ignore[assignment]
    try:
        oracle.expected(log.entries, merchants, NOW)
    finally:
        oracle.dec.decide = real
    return calls


def digest(calls: list[Call]) -> str:
    """A hash of every Decision for ``calls`` (and of on_timer over the resulting states)."""
    h = hashlib.sha256()
    for state, cand, cfg, now in calls:
        d = dec.decide(state, cand, cfg, now)
        h.update(orjson.dumps(d))
        h.update(orjson.dumps(dec.on_timer(d.state, cfg, now + 10**9)))
        h.update(orjson.dumps(UserState.from_dict(orjson.loads(orjson.dumps(d.state)))))
    return h.hexdigest()


def measure(calls: list[Call], repeat: int) -> float:
    """CPU µs per decide() call over ``repeat`` passes of ``calls``."""
    for state, cand, cfg, now in calls:  # warm-up (render memo, matcher cache)
        dec.decide(state, cand, cfg, now)
    start = time.process_time()
    for _ in range(repeat):
        for state, cand, cfg, now in calls:
            dec.decide(state, cand, cfg, now)
    return (time.process_time() - start) / (repeat * len(calls)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--orders", type=int, default=1300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    calls = record_calls(args.users, args.orders)
    reasons: dict[str, int] = {}
    for state, cand, cfg, now in calls:
        d = dec.decide(state, cand, cfg, now)
        key = "intent" if d.intents else (d.outcomes[0].reason if d.outcomes else "held")
        reasons[key] = reasons.get(key, 0) + 1
    print(f"calls: {len(calls)} x {args.repeat}  mix: {dict(sorted(reasons.items()))}")
    print(f"digest: {digest(calls)}")
    best = min(measure(calls, args.repeat) for _ in range(3))
    print(f"decide: {best:.1f} µs/decision (CPU, best of 3)")


if __name__ == "__main__":
    main()
