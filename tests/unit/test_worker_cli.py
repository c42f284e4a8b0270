"""``wxsub worker``: a bad ``--stages`` value is a one-line error and exit 2, before anything
starts; the worker's collector settings."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from wxsub.errors import ConfigError
from wxsub.worker import ALL_STAGES, GC_THRESHOLDS, _tune_gc, parse_stages


def test_stages_are_returned_in_pipeline_order() -> None:
    assert parse_stages("deliver, orders,,decide") == ("orders", "decide", "deliver")
    assert parse_stages(",".join(ALL_STAGES)) == ALL_STAGES


@pytest.mark.parametrize("text", ["orders,bogus", "", " , "])
def test_a_bad_stage_list_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--stages: "):
        parse_stages(text)


def test_the_command_says_it_in_one_line_and_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wxsub", "worker", "--stages", "orders,delivr"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wxsub: --stages: unknown stage(s) delivr "
        "(known: orders, products, decide, deliver, stats, cards)"
    ]


def test_worker_tunes_the_cyclic_gc() -> None:
    """The worker raises the collector's thresholds and freezes what start-up loaded."""
    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
