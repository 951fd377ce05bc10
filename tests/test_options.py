"""The flags, the ``--help`` text and docs/operations.md's table all come from the settings'
declarations, and that table is the generated one (regenerate with
``python -m trackerd.options --write docs/operations.md``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from trackerd import options
from trackerd.cli import parser
from trackerd.settings import Settings, SettingsError, option
from trackerd.settings import options as declared

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"


def test_the_options_table_is_the_generated_one() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    assert options.START in text, "docs/operations.md has lost its options table"
    assert options.with_table(text) == text, (
        "docs/operations.md's options table is out of date: run "
        "python -m trackerd.options --write docs/operations.md"
    )


SECRETS = {"token", "signing_keys", "webhook_secret", "admin_key"}
"""Read from the environment only: on a command line they would show in the process list."""


def test_every_setting_has_a_variable_and_a_readme_row_and_all_but_the_secrets_a_flag() -> None:
    table = options.markdown_table()
    for o in declared():
        assert f"`{o.env}`" in table
        assert (o.flag is None) == (o.name in SECRETS), o.name
    for name in SECRETS:
        assert f"`--{name.replace('_', '-')}`" not in table


# The flag names operators and scripts already use: renaming a field must not change them.
EXISTING_FLAGS = {
    "--host": "host",
    "--port": "port",
    "--source": "source",
    "--fps": "fps",
    "--heartbeat-interval": "heartbeat_interval_s",
    "--heartbeat-timeout": "heartbeat_timeout_s",
    "--max-message-bytes": "max_message_bytes",
    "--graceful-timeout": "graceful_timeout_s",
    "--max-connections": "max_connections",
    "--rate-limit": "rate_limit_per_s",
    "--rate-limit-burst": "rate_limit_burst",
    "--send-timeout": "send_timeout_s",
    "--source-timeout": "source_timeout_s",
    "--allowed-origins": "allowed_origins",
    "--certfile": "certfile",
    "--keyfile": "keyfile",
    "--log-level": "log_level",
    "--log-format": "log_format",
    "--stats-interval": "stats_interval_s",
}


@pytest.mark.parametrize(("flag", "name"), EXISTING_FLAGS.items())
def test_existing_flags_keep_their_names_and_settings(flag: str, name: str) -> None:
    assert {o.flag: o.name for o in declared()}[flag] == name


def test_flags_reach_the_settings_in_any_case_for_choices() -> None:
    flags = "--source-retry-max 3 --rate-limit 5 --log-level debug --log-format JSON"
    args = parser().parse_args([*flags.split(), "--heartbeat-interval", "7"])
    settings = Settings.load(vars(args), {})
    assert settings.source_retry_max_s == 3.0 and settings.rate_limit_per_s == 5.0
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.heartbeat_interval_s == 7.0


def test_the_token_has_no_flag() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--token", "s3cret"])


def test_a_new_field_gets_a_flag_a_variable_and_a_row_from_its_declaration() -> None:
    @dataclass(frozen=True)
    class Extra:
        max_connections_per_ip: int = option(10, "WebSocket clients one address may hold")
        idle_timeout_s: float = option(30.0, "close a client idle this long")
        secret: str = option("", "a secret", env_only=True, env="SECRET")

    got = {o.name: (o.flag, o.env, o.shown_default) for o in declared(Extra)}
    assert got == {
        "max_connections_per_ip": (
            "--max-connections-per-ip",
            "TRACKERD_MAX_CONNECTIONS_PER_IP",
            "10",
        ),
        "idle_timeout_s": ("--idle-timeout", "TRACKERD_IDLE_TIMEOUT_S", "30"),
        "secret": (None, "SECRET", "none"),
    }


def test_a_field_without_a_declaration_is_refused() -> None:
    @dataclass(frozen=True)
    class Undocumented:
        knob: int = 3

    with pytest.raises(TypeError, match=r"Settings\.knob must be declared with option"):
        declared(Undocumented)


def test_help_names_every_flag_and_every_variable() -> None:
    text = parser().format_help()
    for o in declared():
        assert o.env in text, o.env
        if o.flag is not None:
            assert o.flag in text, o.flag
    assert "TRACKERD_SOURCE_RETRY_MAX_S" in text  # the one the hand-written list had missed


def test_the_generated_help_text_is_markdown_safe() -> None:
    row = next(line for line in options.markdown_table().splitlines() if "TRACKERD_TOKEN" in line)
    assert r"Bearer \<token\>" in row  # not swallowed as an HTML tag
    assert row.count(" | ") == 3  # four cells


def test_write_replaces_only_the_table(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{options.START}\nold table\n{options.END}\n\nAfter.\n")
    assert options.main(["--write", os.fspath(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{options.START}\n| option |")
    assert text.endswith(f"{options.END}\n\nAfter.\n") and "old table" not in text
    with pytest.raises(ValueError, match="markers"):
        options.with_table("no markers here")


def test_choices_are_checked_after_the_case_is_normalised() -> None:
    with pytest.raises(SettingsError, match="log_format must be one of text, json"):
        Settings.load({}, {"TRACKERD_LOG_FORMAT": "xml"})


def test_readme_layout_names_every_module_of_the_package() -> None:
    """The README's layout table is the map a newcomer reads first: a module missing from it
    (sessions, images, eyes and geometry were, for a while) is a module nobody finds."""
    text = README.read_text(encoding="utf-8")
    layout = text[text.index("## Layout") : text.index("## Dependencies")]
    package = README.parent / "trackerd"
    modules = sorted(
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if not p.name.startswith("_")
    )
    missing = [name for name in modules if f"| `{name}` |" not in layout]
    assert not missing, f"README's Layout table does not name: {missing}"
