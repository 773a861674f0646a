"""Settings: environment, flags, and errors that name the setting."""

from __future__ import annotations

import pytest

from retention_model.errors import SettingsError
from streams.reference import settings_table
from streams.settings import Settings


def test_defaults_are_valid() -> None:
    settings = Settings.load({})
    assert settings.events_topic == "user-events"
    assert settings.broker_list == ["127.0.0.1:9092"]


def test_environment_then_flags() -> None:
    env = {"RETENTION_BATCH_MAX_SIZE": "500", "RETENTION_BROKER": "kafka://a:1,b:2", "PATH": "/bin"}
    settings = Settings.load(env, {"batch_max_size": 800, "partitions": None})
    assert settings.batch_max_size == 800
    assert settings.broker_list == ["a:1", "b:2"]
    assert settings.partitions == 4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RETENTION_PARTITIONS": "zero"},
            r"RETENTION_PARTITIONS \(--partitions\) is 'zero'; allowed: an integer from 1 to 1024",
        ),
        ({"RETENTION_PARTITIONS": "0"}, r"RETENTION_PARTITIONS.*is 0"),
        ({"RETENTION_MODEL_DEVICE": "tpu"}, r"RETENTION_MODEL_DEVICE.*'tpu'; allowed: one of auto, cpu, gpu"),
        ({"RETENTION_BROKER": "localhost"}, r"RETENTION_BROKER.*host:port"),
        ({"RETENTION_BATCH_MAX_WAIT": "5"}, r"unknown setting RETENTION_BATCH_MAX_WAIT"),
        ({"RETENTION_HIGH_RISK": "0.6"}, r"RETENTION_HIGH_RISK is no longer a setting: .* as \[risk\] high"),
        ({"RETENTION_POLICY_FILE": "/nonexistent.toml"}, r"RETENTION_POLICY_FILE: cannot read policy file"),
    ],
)
def test_wrong_settings_fail_with_name_value_and_allowed(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(env)


def test_settings_are_frozen() -> None:
    settings = Settings.load({})
    with pytest.raises(AttributeError):
        settings.partitions = 8  # type: ignore[misc]


def test_table_lists_every_setting() -> None:
    table = settings_table()
    for name in Settings.__dataclass_fields__:
        assert f"RETENTION_{name.upper()}" in table
