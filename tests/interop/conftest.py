"""Interop fixtures: the three SDK probes (built once per session) against an in-process sandbox.

``sdk`` is parametrized over wechatpy, WxJava and silenceper/wechat; ``configure`` points it at
the test's sandbox. The Go and Java probes are built by ``builds.py`` (cached by source hash;
scripts/setup.sh builds them ahead), and one process of each serves the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.sandbox import APPID, SECRET
from tests.interop.builds import BuildError, build_go, build_java
from tests.interop.probes import SDKS, Answer, LineProbe, Sdk, WechatpyProbe
from wxsub_sandbox import Sandbox

# push credentials for the crypto tests (43 chars of base64: WeChat's EncodingAESKey)
PUSH_TOKEN = "interopPushToken42"
PUSH_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def _built(build: Any) -> Any:
    try:
        return build()
    except BuildError as exc:
        pytest.fail(f"interop probe not built: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def go_probe() -> Iterator[LineProbe]:
    probe = LineProbe([str(_built(build_go))])
    yield probe
    probe.close()


@pytest.fixture(scope="session")
def java_probe() -> Iterator[LineProbe]:
    # C1 only and class data sharing: the probe lives for seconds, start-up is what counts
    argv = ["java", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Xmx256m", "-jar"]
    probe = LineProbe([*argv, str(_built(build_java))])
    yield probe
    probe.close()


@dataclass
class Driver:
    """One SDK under test: its capabilities and ``call``."""

    caps: Sdk
    probe: Any
    base_url: str

    @property
    def name(self) -> str:
        return self.caps.name

    async def call(self, op: str, **fields: Any) -> Answer:
        answer: Answer = await self.probe.call(op, **fields)
        return answer

    async def configure(
        self, *, stable: bool, appid: str = APPID, secret: str = SECRET, **extra: Any
    ) -> Answer:
        fields = {"base": self.base_url, "appid": appid, "secret": secret, "stable": stable}
        fields.update(token=PUSH_TOKEN, aes_key=PUSH_AES_KEY)
        answer = await self.call("config", **fields, **extra)
        assert answer["ok"], answer
        return answer


@pytest.fixture(params=list(SDKS))
def sdk_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sdk(sdk_name: str, sandbox: Sandbox, request: pytest.FixtureRequest) -> Driver:
    if sdk_name == "wechatpy":
        probe: Any = WechatpyProbe()
    else:
        probe = request.getfixturevalue("go_probe" if sdk_name == "silenceper" else "java_probe")
    return Driver(SDKS[sdk_name], probe, sandbox.base_url)
