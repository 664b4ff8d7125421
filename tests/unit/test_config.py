"""Settings: a malformed value stops the start with the setting's name and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.config import (
    MAIL_SCHEMES,
    MailboxTarget,
    MailTarget,
    Settings,
    SettingsError,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's environment must not leak into what is tested."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def load(**overrides: object) -> Settings:
    """Settings from `overrides` only: never a `.env` file."""
    return load_settings(_env_file=None, **overrides)


# --------------------------------------------------------------------------- MAIL_URL


def test_unknown_mail_scheme_names_setting_and_accepted_schemes() -> None:
    """ftp:// is refused at start, saying MAIL_URL and smtp/smtps/maildir."""
    with pytest.raises(SettingsError) as info:
        load(mail_url="ftp://x")
    message = str(info.value)
    assert "MAIL_URL" in message
    assert "'ftp'" in message
    for scheme in ("smtp://", "smtps://", "maildir://"):
        assert scheme in message
    assert set(MAIL_SCHEMES) == {"smtp", "smtps", "maildir"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://mail.example.com",
            MailTarget(scheme="smtp", host="mail.example.com", port=25),
        ),
        (
            "smtp://relay:p%40ss%2Fword@mail.example.com:587?starttls=true",
            MailTarget(
                scheme="smtp",
                host="mail.example.com",
                port=587,
                username="relay",
                password="p@ss/word",
                starttls=True,
            ),
        ),
        (
            "smtp://mail.example.com:2525?starttls=0",
            MailTarget(scheme="smtp", host="mail.example.com", port=2525, starttls=False),
        ),
        (
            "SMTPS://apikey:secret@smtp.esp.example:465",
            MailTarget(
                scheme="smtps",
                host="smtp.esp.example",
                port=465,
                username="apikey",
                password="secret",
            ),
        ),
        ("smtps://smtp.esp.example", MailTarget(scheme="smtps", host="smtp.esp.example", port=465)),
        ("maildir://data/outbox", MailTarget(scheme="maildir", path=Path("data/outbox"))),
        ("maildir:///var/mail/out", MailTarget(scheme="maildir", path=Path("/var/mail/out"))),
    ],
    ids=[
        "smtp default port",
        "smtp user password starttls",
        "smtp starttls off",
        "smtps upper-case scheme",
        "smtps default port",
        "maildir relative",
        "maildir absolute",
    ],
)
def test_mail_url_parses(url: str, expected: MailTarget) -> None:
    """Host, port, user, password (URL-decoded) and STARTTLS come from the URL."""
    assert load(mail_url=url).mail_target == expected


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("maildir://", "has no folder"),
        ("smtp://", "has no host"),
        ("smtp://:25", "has no host"),
        ("smtp://mail.example.com:99999", "bad port"),
        ("mail.example.com:25", "unknown scheme"),
    ],
)
def test_malformed_mail_url_says_what_is_wrong(url: str, hint: str) -> None:
    """Each way of getting MAIL_URL wrong has its own explanation."""
    with pytest.raises(SettingsError) as info:
        load(mail_url=url)
    assert "MAIL_URL" in str(info.value)
    assert hint in str(info.value)


def test_mail_url_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAIL_URL in the environment is what the engine relays to."""
    monkeypatch.setenv("MAIL_URL", "smtp://mta.internal:2525")
    target = load().mail_target
    assert (target.scheme, target.host, target.port) == ("smtp", "mta.internal", 2525)


def test_env_file_is_read(tmp_path: Path) -> None:
    """A `.env` file works as documented in `.env.example`."""
    env = tmp_path / ".env"
    env.write_text("MAIL_URL=smtps://mx.example.org\nKPI_CHANNEL=C0KPI\n", encoding="utf-8")
    s = load_settings(_env_file=env)
    assert s.mail_target.host == "mx.example.org"
    assert s.kpi_channel == "C0KPI"


# --------------------------------------------------------------------------- defaults


def test_defaults_need_no_server() -> None:
    """A first run works with nothing set: SQLite and a local Maildir."""
    s = load()
    assert s.database_url == "sqlite:///data/greenlight.db"
    assert s.mail_url == "maildir://data/outbox"
    assert s.mail_target == MailTarget(scheme="maildir", path=Path("data/outbox"))
    assert s.public_base_url == "http://localhost:3000"
    assert s.port == 3000
    assert s.log_level == "INFO"
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.kpi_channel is None
    assert s.slack_bot_token is None
    assert s.tracking_secret is None


# --------------------------------------------------------------------------- secrets


SECRETS = {
    "slack_bot_token": "xoxb-very-secret-token",
    "slack_signing_secret": "signing-secret-value",
    "slack_app_token": "xapp-app-level-token",
    "tracking_secret": "tracking-secret-value",
    "feedback_secret": "feedback-secret-value",
}


def test_secrets_are_secretstr_and_hidden_from_repr() -> None:
    """Tokens never appear in a log line or traceback that prints the settings."""
    s = load(**SECRETS)
    shown = repr(s) + str(s) + str(s.model_dump())
    for name, value in SECRETS.items():
        secret = getattr(s, name)
        assert isinstance(secret, SecretStr)
        assert secret.get_secret_value() == value
        assert value not in shown
        assert value not in repr(secret)


def test_smtp_password_is_usable() -> None:
    """The relay password still reaches the SMTP login."""
    s = load(mail_url="smtp://u:hunter2@mail.example.com")
    assert s.mail_target.password == "hunter2"


# --------------------------------------------------------------------------- other checks


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("postgres://u@db/greenlight", "write postgresql://"),
        ("mysql://u@db/greenlight", "unsupported database 'mysql'"),
    ],
)
def test_bad_database_url_is_explained(url: str, hint: str) -> None:
    """DATABASE_URL accepts SQLite and PostgreSQL, and says how to write them."""
    with pytest.raises(SettingsError) as info:
        load(database_url=url)
    assert "DATABASE_URL" in str(info.value)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "url", ["sqlite:///tmp/g.db", "postgresql://u@db/g", "postgresql+psycopg://u@db/g"]
)
def test_good_database_urls_are_kept(url: str) -> None:
    """Supported drivers, with or without a +driver suffix, pass as written."""
    assert load(database_url=url).database_url == url


def test_public_base_url_trailing_slash_is_dropped() -> None:
    """Tracking links join paths onto the base URL without a double slash."""
    assert load(public_base_url="https://gl.example.com/").public_base_url == (
        "https://gl.example.com"
    )


def test_public_base_url_needs_http() -> None:
    """A base URL without a scheme would make broken tracking links."""
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        load(public_base_url="gl.example.com")


def test_log_level_is_normalised_and_checked() -> None:
    """debug is read as DEBUG; an unknown level is refused with the choices."""
    assert load(log_level="debug").log_level == "DEBUG"
    with pytest.raises(SettingsError, match="LOG_LEVEL: use DEBUG, INFO, WARNING or ERROR"):
        load(log_level="verbose")


@pytest.mark.parametrize("port", [0, 70000])
def test_port_out_of_range(port: int) -> None:
    """PORT must be a TCP port."""
    with pytest.raises(SettingsError, match="PORT"):
        load(port=port)


def test_every_bad_setting_is_reported_at_once() -> None:
    """Fix them all in one go: the message lists each bad setting on its own line."""
    with pytest.raises(SettingsError) as info:
        load(mail_url="ftp://x", log_level="loud", database_url="mysql://db")
    message = str(info.value)
    assert message.startswith("invalid settings:")
    lines = message.splitlines()[1:]
    assert {line.strip().split(":")[0] for line in lines} == {
        "MAIL_URL",
        "LOG_LEVEL",
        "DATABASE_URL",
    }


def test_first_run_generates_and_keeps_a_tracking_secret(tmp_path: Path) -> None:
    """Without TRACKING_SECRET a secret is made once and every later start reads it."""
    from bot.bootstrap import with_tracking_secret

    path = tmp_path / "data" / "tracking_secret"
    first = with_tracking_secret(load_settings(_env_file=None), path)
    second = with_tracking_secret(load_settings(_env_file=None), path)
    assert first.tracking_secret is not None and len(first.tracking_secret.get_secret_value()) > 30
    assert first.tracking_secret == second.tracking_secret
    assert path.stat().st_mode & 0o777 == 0o600
    given = with_tracking_secret(load_settings(_env_file=None, tracking_secret="mine"), path)
    assert given.tracking_secret.get_secret_value() == "mine"


# ------------------------------------------------------------- FEEDBACK_MAILBOX_URL


def test_feedback_mailbox_is_off_by_default() -> None:
    assert load().feedback_mailbox is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("maildir:///var/mail/bounces", MailboxTarget("maildir", path=Path("/var/mail/bounces"))),
        ("maildir://data/bounces", MailboxTarget("maildir", path=Path("data/bounces"))),
        (
            "imaps://bounces%40shop.example:s%3Acret@imap.example.com/Bounces%20In",
            MailboxTarget(
                "imaps", host="imap.example.com", port=993, username="bounces@shop.example",
                password="s:cret", folder="Bounces In",
            ),
        ),
        (
            "imap://u:pw-1@mx.example.com:1143?starttls=true",
            MailboxTarget(
                "imap", host="mx.example.com", port=1143, username="u", password="pw-1",
                folder="INBOX", starttls=True,
            ),
        ),
    ],
)  # fmt: skip
def test_feedback_mailbox_urls(url: str, expected: MailboxTarget) -> None:
    target = load(feedback_mailbox_url=url).feedback_mailbox
    assert target == expected
    assert expected.password == "" or expected.password not in repr(target)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("pop3://u:secret@host/INBOX", "maildir://PATH"),
        ("imap://host/INBOX", "no user and password"),
        ("imaps://u:secret@/INBOX", "no host"),
        ("imap://u:secret@host:99999/INBOX", "bad port"),
        ("maildir://", "no folder"),
    ],
)
def test_bad_feedback_mailbox_urls_say_why_without_the_password(url: str, says: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(feedback_mailbox_url=url)
    assert "FEEDBACK_MAILBOX_URL" in str(info.value) and says in str(info.value)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("MAIL_URL", "smtp://bob:hunter2@mx.example:notaport"),
        ("MAIL_URL", "ftp://bob:hunter2@mx.example"),
        ("FEEDBACK_MAILBOX_URL", "imaps://bob:hunter2@mx.example:x/INBOX"),
    ],
)
def test_a_bad_url_is_reported_without_its_password(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str
) -> None:
    monkeypatch.setenv(name, url)
    with pytest.raises(SettingsError) as caught:
        load()
    message = str(caught.value)
    assert "hunter2" not in message and name in message
    assert "bob:***@mx.example" in message or "mx.example" not in message


def test_the_public_base_url_follows_the_port_unless_it_is_set() -> None:
    assert load(port=4000).public_base_url == "http://localhost:4000"
    assert load(port=4000, public_base_url="https://gl.example/").public_base_url == (
        "https://gl.example"
    )


def test_the_server_listens_on_loopback_unless_host_says_otherwise() -> None:
    assert load().host == "127.0.0.1"
    assert load(host="0.0.0.0").host == "0.0.0.0"
