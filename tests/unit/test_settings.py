from pathlib import Path

import pytest

from wxsub.errors import ConfigError
from wxsub.settings import Secret, Settings, load_settings


def test_defaults_are_valid() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert s.kafka.topic("intents") == "wxsub.intents"


def test_env_overrides_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text('[kafka]\nbootstrap = "a:1"\npartitions = 4\n')
    s = load_settings(cfg, env={"WXSUB_KAFKA_PARTITIONS": "12"})
    assert s.kafka.bootstrap == "a:1"
    assert s.kafka.partitions == 12


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"WXSUB_KAFKA_PARTITIONS": "many"}, "kafka.partitions"),
        ({"WXSUB_KAFKA_PARTITIONS": "0"}, "kafka.partitions"),
        ({"WXSUB_WORKER_WEB_PORT": "70000"}, "worker.web_port"),
        ({"WXSUB_WORKER_PROCESSING_GUARANTEE": "maybe"}, "worker.processing_guarantee"),
        ({"WXSUB_WORKER_MAX_BATCH": "0"}, "worker.max_batch"),
        ({"WXSUB_WECHAT_API_BASE": "ftp://x"}, "wechat.api_base"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    assert err.value.key.startswith(key)
    assert key in str(err.value)


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text("[kafka]\nbootstrapp = 'x'\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrapp"):
        load_settings(cfg, env={})


def test_secrets_are_masked_and_can_come_from_env(tmp_path: Path) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text('[wechat.apps.wx1]\nsecret = "env:APP_SECRET"\n')
    s = load_settings(cfg, env={"APP_SECRET": "s3cr3t-value"})
    creds = s.wechat.apps["wx1"]
    assert creds.secret.reveal() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s)
    assert "s3cr3t-value" not in str(creds)
    assert repr(Secret("x")) == "Secret('***')"


def test_missing_secret_env_names_key(tmp_path: Path) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text('[wechat.apps.wx1]\nsecret = "env:NOPE"\n')
    with pytest.raises(ConfigError, match=r"wechat\.apps\.wx1\.secret"):
        load_settings(cfg, env={})


def test_overrides_validate() -> None:
    s = Settings().with_overrides(kafka={"bootstrap": "127.0.0.1:1234", "partitions": "3"})
    assert s.kafka.partitions == 3
    with pytest.raises(ConfigError):
        Settings().with_overrides(kafka={"partitions": "0"})
