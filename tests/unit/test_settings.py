from dataclasses import replace
from pathlib import Path

import pytest

from wxsub.agents.deliver import DeliverStage, delivery_policy
from wxsub.agents.rules.delivery import DeliveryPolicy
from wxsub.errors import ConfigError
from wxsub.settings import DeliverySettings, Secret, Settings, load_settings
from wxsub.worker import create_worker


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


async def test_delivery_section_from_toml_and_env_reaches_the_deliver_stage(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text(
        "[delivery]\nmax_attempts = 3\nbackoff_base_ms = 500\njitter = 0.1\n"
        "quota_pause_ms = 60000\ntimer_interval_s = 0.5\n"
    )
    s = load_settings(cfg, env={"WXSUB_DELIVERY_RECEIPT_WINDOW_MS": "30000"})
    assert s.delivery == DeliverySettings(
        max_attempts=3,
        backoff_base_ms=500,
        jitter=0.1,
        quota_pause_ms=60_000,
        receipt_window_ms=30_000,
        timer_interval_s=0.5,
    )
    resend = replace(s, worker=replace(s.worker, in_doubt_policy="resend"))
    worker = create_worker(resend, ["deliver"])  # the composition root
    try:
        (runner,) = worker.runners
        stage = runner.stage
        assert isinstance(stage, DeliverStage)
        assert stage.policy == replace(delivery_policy(s.delivery), in_doubt_resend=True)
        assert (stage.policy.max_attempts, stage.policy.receipt_window_ms) == (3, 30_000)
        assert stage.spec.timer_interval_s == 0.5
    finally:
        await worker.client.aclose()


def test_delivery_defaults_are_the_policy_defaults() -> None:
    assert load_settings(env={}).delivery == DeliverySettings()
    assert delivery_policy(DeliverySettings()) == DeliveryPolicy()


@pytest.mark.parametrize(
    ("env", "key", "message"),
    [
        ({"WXSUB_DELIVERY_MAX_ATTEMPTS": "many"}, "delivery.max_attempts", "must be an integer"),
        ({"WXSUB_DELIVERY_MAX_ATTEMPTS": "0"}, "delivery.max_attempts", "must be >= 1"),
        ({"WXSUB_DELIVERY_BACKOFF_BASE_MS": "-1"}, "delivery.backoff_base_ms", ">= 0"),
        (
            {"WXSUB_DELIVERY_BACKOFF_BASE_MS": "5000", "WXSUB_DELIVERY_BACKOFF_MAX_MS": "1000"},
            "delivery.backoff_max_ms",
            "must be >= delivery.backoff_base_ms",
        ),
        ({"WXSUB_DELIVERY_JITTER": "1"}, "delivery.jitter", "must be >= 0 and < 1"),
        ({"WXSUB_DELIVERY_QUOTA_PAUSE_MS": "0"}, "delivery.quota_pause_ms", "must be >= 1"),
        ({"WXSUB_DELIVERY_RECEIPT_SKEW_MS": "-5"}, "delivery.receipt_skew_ms", ">= 0"),
        ({"WXSUB_DELIVERY_RECEIPT_WINDOW_MS": "2m"}, "delivery.receipt_window_ms", "integer"),
        ({"WXSUB_DELIVERY_TIMER_INTERVAL_S": "0"}, "delivery.timer_interval_s", "must be > 0"),
    ],
)
def test_bad_delivery_values_name_the_key(env: dict[str, str], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    assert err.value.key.startswith(key)
    assert key in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize("line", ["max_attempt = 3", "in_doubt_resend = true"])
def test_unknown_delivery_keys_are_rejected(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text(f"[delivery]\n{line}\n")
    name = line.split(" ", 1)[0]
    with pytest.raises(ConfigError, match=rf"delivery\.{name}: unknown setting"):
        load_settings(cfg, env={})


def test_bad_delivery_value_in_toml_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text('[delivery]\njitter = "lots"\n')
    with pytest.raises(ConfigError, match=r"delivery\.jitter: must be a number; got 'lots'"):
        load_settings(cfg, env={})


@pytest.mark.parametrize(
    "toml",
    [
        '[wechat.apps.wx1]\nsecret = ["s3cr3t-value"]\n',
        '[wechat.apps.wx1]\nsecret = "s3cr3t-value"\ncolour = "s3cr3t-value"\n',
        '[gateway.apps.wx1]\ntoken = "s3cr3t-value"\nmode = "safe"\n',
        '[gateway.apps.wx1]\ntoken = "s3cr3t-value"\naes_key = 7\n',
        '[gateway.apps]\nwx1 = "s3cr3t-value"\n',
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_password = "s3cr3t-value"\n',
        '[support]\nenabled = true\nhost = "0.0.0.0"\ntoken = ["s3cr3t-value"]\n',
    ],
)
def test_errors_never_show_a_secret(tmp_path: Path, toml: str) -> None:
    """pydantic's errors hold the input; the ConfigError made of them never does for a secret."""
    cfg = tmp_path / "wxsub.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert "s3cr3t" not in str(err.value) and "s3cr3t" not in repr(err.value)
    assert err.value.key.startswith(("wechat.apps.wx1", "gateway.apps.wx1", "kafka.", "support."))
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_other_wxsub_variables_are_not_settings() -> None:
    """Only WXSUB_<SECTION>_<FIELD> of a known field is a setting (WXSUB_KAFKA_HOME is the
    test broker's install, WXSUB_CONFIG the file)."""
    s = load_settings(env={"WXSUB_KAFKA_HOME": "/opt/kafka", "WXSUB_VENV": ".venv"})
    assert s == Settings()
