"""Support endpoints: off by default, loopback unless configured, a token elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from wxsub.errors import ConfigError
from wxsub.merchants import Merchants
from wxsub.settings import Settings, load_settings
from wxsub.support.local import Local
from wxsub.support.web import SupportServer


def test_off_by_default_on_loopback_and_a_token_required_elsewhere(tmp_path: Path) -> None:
    assert load_settings(env={}).support.enabled is False
    assert load_settings(env={}).support.host == "127.0.0.1"
    with pytest.raises(ConfigError) as err:
        load_settings(env={"WXSUB_SUPPORT_ENABLED": "1", "WXSUB_SUPPORT_HOST": "0.0.0.0"})
    assert err.value.key == "support.token"
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text('[support]\nenabled = true\nhost = "0.0.0.0"\ntoken = "env:SUPPORT_TOKEN"\n')
    settings = load_settings(cfg, env={"SUPPORT_TOKEN": "s3cret"})
    assert settings.support.token is not None and settings.support.token.reveal() == "s3cret"
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError):
        load_settings(cfg, env={})  # the named variable is missing


async def test_api_needs_the_bearer_token_and_the_console_does_not() -> None:
    settings = load_settings(env={"SUPPORT_TOKEN": "s3cret"}).with_overrides(
        support={"enabled": True, "token": "s3cret"}
    )
    assert isinstance(settings, Settings)
    server = SupportServer(settings, Local({}, lambda: Merchants({}), 4, lambda: 0))
    client = TestClient(TestServer(server.app(), host="127.0.0.1"))
    await client.start_server()
    try:
        console = await client.get("/support/")
        assert console.status == 200 and "wxsub support" in await console.text()
        params = {"appid": "wx1", "openid": "o1"}
        assert (await client.get("/support/api/user", params=params)).status == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/support/local/user", params=params, headers=wrong)).status == 401
        ok = {"Authorization": "Bearer s3cret"}
        # authorised; no worker here runs the decide stage, so it is not the owner
        local = await client.get("/support/local/user", params=params, headers=ok)
        assert local.status == 503
    finally:
        await client.close()
        await server.stop()
