"""The launcher: clear errors, kept data dirs, and `wxsub kafka up`."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.fixtures.kafka_helpers import create_topic, unique_name
from wxsub.errors import SetupError
from wxsub_dev.local_kafka import KAFKA_VERSION, LocalKafka

ROOT = Path(__file__).resolve().parents[2]


def test_pom_and_launcher_agree_on_the_kafka_version() -> None:
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert match and match.group(1) == KAFKA_VERSION


def test_missing_jars_say_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"scripts/setup\.sh"):
        LocalKafka(home=tmp_path).start()


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.kafka
def test_a_failed_start_shows_the_broker_log_and_cleans_up() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        kafka = LocalKafka(port=taken.getsockname()[1])
        with pytest.raises(SetupError, match="Address already in use") as err:
            kafka.start()
    assert "exited with code" in str(err.value)
    data_dir = re.search(r"last lines of (\S+)/server\.log", str(err.value))
    assert data_dir and not Path(data_dir.group(1)).exists()
    assert not kafka.running


@pytest.mark.kafka
async def test_wxsub_kafka_up_serves_until_sigterm_and_keeps_its_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wxsub.cli", "kafka", "up", "--data-dir", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        match = re.search(r"bootstrap (127\.0\.0\.1:\d+)", line)
        assert match, line + proc.stderr.read()
        topic = await create_topic(match.group(1), unique_name("cli"), 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    # the kept data dir starts again as the same cluster, with the topic still there
    async with LocalKafka(data_dir=data_dir) as again:
        assert topic in await _topics(again.bootstrap)
    assert (data_dir / "server.log").exists()


def test_wxsub_kafka_up_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wxsub.cli", "kafka", "up", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--port" in out.stdout and "--data-dir" in out.stdout
