"""The server's settings: flags over the environment over the defaults, and every bad value
refused at start-up with a message that names the setting."""

from __future__ import annotations

from typing import Any

import pytest

from trackerd.settings import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    Settings,
    SettingsError,
)


def test_defaults_are_the_original_servers() -> None:
    settings = Settings.load({}, {})
    assert (settings.host, settings.port) == (DEFAULT_HOST, DEFAULT_PORT) == ("localhost", 5000)
    assert settings.heartbeat_interval_s == DEFAULT_HEARTBEAT_INTERVAL_S == 20.0
    assert settings.heartbeat_timeout_s == DEFAULT_HEARTBEAT_TIMEOUT_S == 20.0
    assert settings.source == "auto" and settings.fps == 0.0


def test_flags_win_over_the_environment_which_wins_over_the_defaults() -> None:
    environ = {"HOST": "0.0.0.0", "PORT": "8080", "TRACKERD_FPS": "15", "TRACKERD_SOURCE": "1"}
    settings = Settings.load({"port": 9000, "source": None}, environ)
    assert settings.host == "0.0.0.0"  # environment (HOST, as in the original)
    assert settings.port == 9000  # flag over PORT
    assert settings.fps == 15.0 and settings.source == "1"  # TRACKERD_*
    assert Settings.load({}, {"TRACKERD_LOG_LEVEL": "debug"}).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("flags", "environ", "says"),
    [
        ({}, {"PORT": "http"}, "port: environment variable PORT='http' is not an integer"),
        ({}, {"TRACKERD_FPS": "fast"}, "fps: environment variable TRACKERD_FPS='fast'"),
        ({"port": 70000}, {}, "port must be 0-65535"),
        ({"port": -1}, {}, "port must be 0-65535"),
        ({"host": " "}, {}, "host must not be empty"),
        ({"source": ""}, {}, "source must not be empty"),
        ({"fps": -1.0}, {}, "fps must be >= 0"),
        ({"fps": float("nan")}, {}, "fps must be a finite number"),
        ({}, {"TRACKERD_HEARTBEAT_INTERVAL_S": "0"}, "heartbeat_interval_s must be > 0"),
        ({}, {"TRACKERD_HEARTBEAT_TIMEOUT_S": "inf"}, "heartbeat_timeout_s must be a finite"),
        ({"max_message_bytes": 10}, {}, "max_message_bytes must be >= 64"),
        ({"graceful_timeout_s": 600.0}, {}, "graceful_timeout_s must be 0-60"),
        ({"handshake_timeout_s": 0.0}, {}, "handshake_timeout_s must be > 0"),
        ({"log_level": "LOUD"}, {}, "log_level must be one of"),
        ({"log_format": "xml"}, {}, "log_format must be one of"),
        ({}, {"TRACKERD_HEARTBEAT_INTERVAL": "5"}, "unknown environment variable"),
        ({"max_connections": 0}, {}, "max_connections must be >= 1"),
        ({}, {"TRACKERD_RATE_LIMIT_PER_S": "0"}, "rate_limit_per_s must be > 0"),
        ({"rate_limit_burst": 0}, {}, "rate_limit_burst must be >= 1"),
        ({"send_timeout_s": -1.0}, {}, "send_timeout_s must be > 0"),
        ({"source_timeout_s": 0.0}, {}, "source_timeout_s must be > 0"),
        ({"allowed_origins": "example.com"}, {}, "'example.com' is not an origin"),
        ({"allowed_origins": "https://a.example/path"}, {}, "is not an origin"),
        ({}, {"TRACKERD_TOKEN": "two words"}, "token must not contain spaces"),
        ({"keyfile": "key.pem"}, {}, "keyfile needs certfile"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(
    flags: dict[str, Any], environ: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(flags, environ)
    assert says in str(info.value)


def test_a_misspelt_variable_is_named_with_the_known_ones() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load({}, {"TRACKERD_PROT": "5000"})
    assert "TRACKERD_PROT" in str(info.value) and "TRACKERD_SOURCE" in str(info.value)
    # Variables other modules read are not settings, and not refused.
    Settings.load({}, {"TRACKERD_CASCADE_DIR": "/somewhere"})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_origins_are_normalised_and_loopback_is_recognised() -> None:
    settings = Settings.load(
        {"allowed_origins": " HTTPS://App.Example.com/, http://localhost:8080 ,"}, {}
    )
    assert settings.origins == ("https://app.example.com", "http://localhost:8080")
    assert Settings(host="localhost").loopback and Settings(host="127.0.0.2").loopback
    assert Settings(host="::1").loopback and not Settings(host="0.0.0.0").loopback
    assert Settings.load({}, {"TRACKERD_TOKEN": "s3cret"}).token == "s3cret"
