"""``wxsub publish`` without a broker: line splitting, validation, messages and exit codes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from wxsub import publish
from wxsub.cli import main
from wxsub.schemas import KINDS


def good(name: str = "order_status", i: int = 0, **changes: Any) -> bytes:
    return orjson.dumps(KINDS[name].schema["examples"][i] | changes)


async def lines_of(data: bytes, max_bytes: int = 1000) -> list[tuple[int, bytes | None, int]]:
    return [
        item async for item in publish.read_lines(io.BufferedReader(io.BytesIO(data)), max_bytes)
    ]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
async def test_read_lines(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(publish, "_CHUNK", chunk)
    data = b'\xef\xbb\xbf{"a":1}\r\n\n  \n{"b":"\xe4\xb8\xad"}\n' + b"x" * 25 + b"\n{}"
    assert await lines_of(data, max_bytes=20) == [
        (1, b'{"a":1}', 7),
        (4, b'{"b":"\xe4\xb8\xad"}', 11),
        (5, None, 25),
        (6, b"{}", 2),
    ]


@pytest.mark.parametrize("chunk", [2, 5, 1 << 20])
async def test_read_lines_long_last_line_and_empty(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(publish, "_CHUNK", chunk)
    assert await lines_of(b"", 10) == []
    assert await lines_of(b"\n\n", 10) == []
    assert await lines_of(b"{}\n" + b"y" * 33, 10) == [(1, b"{}", 2), (2, None, 33)]


def write(tmp_path: Path, *lines: bytes) -> str:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_dry_run_reports_each_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        good(),
        good(amount=12.5),
        b"{not json",
        b"",
        good(v=2),
        good("order_status", 1),
        b'{"title": "\xff"}',
        good(order_id=None),
    )
    assert main(["publish", "--dry-run", "order_status", path]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("line 2: schema at /amount: ")
    assert err[1].startswith("line 3: bad_json: ")
    assert (
        err[2]
        == "line 5: unknown_version at /v: major version 2 is not supported (this build reads 1)"
    )
    assert err[3].startswith("line 7: bad_utf8: invalid UTF-8 at byte 11")
    assert err[4].startswith("line 8: schema at /order_id: null is not of type")
    assert err[5].startswith("2 valid, 5 invalid, 0 not produced; 8 lines in ")
    assert len(err) == 6


def test_dry_run_all_good(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [good(name, i) for name in ("product_price", "product_stock", "promotion") for i in [0]]
    path = write(
        tmp_path, good("product_price"), good("product_price", occurred_at="2024-06-05T10:00:00Z")
    )
    assert main(["publish", "--dry-run", "product_price", path]) == 0
    assert capsys.readouterr().err.startswith("2 valid, 0 invalid")
    # a product_stock line is not a product_price even though both go to the products topic
    path = write(tmp_path, *lines)
    assert main(["publish", "--dry-run", "product_price", path]) == 1
    assert "line 2: schema at /type: " in capsys.readouterr().err


def test_oversized_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WXSUB_WORKER_MAX_EVENT_BYTES", "300")
    path = write(tmp_path, good("preference"), good("preference", junk="x" * 5000))
    assert main(["publish", "--dry-run", "preference", path]) == 1
    err = capsys.readouterr().err
    assert "line 2: oversized: 5" in err and "the limit is 300" in err


def test_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "PROGRESS_INTERVAL_S", 0.0)
    path = write(tmp_path, good("preference"), good("preference"))
    assert main(["publish", "--dry-run", "--progress", "preference", path]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("progress: line 1, ") and err[1].startswith("progress: line 2, ")
    assert err[2].startswith("2 valid")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "watch", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["publish", "orders", "-"])
    assert info.value.code == 2
    assert "invalid choice: 'orders'" in capsys.readouterr().err


def test_unreachable_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    path = write(tmp_path, good("preference"))
    code = main(["publish", "--bootstrap", f"127.0.0.1:{unused_tcp_port}", "preference", path])
    assert code == 2
    assert f"cannot reach Kafka at 127.0.0.1:{unused_tcp_port}" in capsys.readouterr().err


def test_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, good("preference"))
    assert main(["--config", str(tmp_path / "none.toml"), "publish", "preference", path]) == 2
    assert "file not found" in capsys.readouterr().err
