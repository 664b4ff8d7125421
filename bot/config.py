"""Settings: read once from the environment (or `.env`), validated before anything starts.

A malformed value stops the program at start with the setting's name and what is
expected, rather than failing later in the middle of a send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.domain.guard import GuardPolicy

MAIL_SCHEMES = ("smtp", "smtps", "maildir")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class MailTarget:
    """Where messages go, parsed from MAIL_URL."""

    scheme: str
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    path: Path | None = None


def _without_password(message: str, url: str) -> str:
    """`message` with the password of `url` (`scheme://user:PASSWORD@host`) masked: a
    settings error is printed, logged and pasted into tickets."""
    found = re.match(r"^[^:/]*://[^:/@]*:([^@]*)@", url)
    return message.replace(found.group(1), "***") if found and found.group(1) else message


def parse_mail_url(url: str) -> MailTarget:
    """Parse MAIL_URL; raise ValueError naming what is wrong and what is accepted."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in MAIL_SCHEMES:
        raise ValueError(
            f"unknown scheme {parts.scheme!r} in {url!r}; use smtp://host:port, "
            "smtps://host:port or maildir://PATH"
        )
    if scheme == "maildir":
        path = (parts.netloc + parts.path) or ""
        if not path:
            raise ValueError(f"{url!r} has no folder; write maildir://data/outbox")
        return MailTarget(scheme=scheme, path=Path(unquote(path)))
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host; write {scheme}://host:port")
    try:
        port = parts.port or (465 if scheme == "smtps" else 25)
    except ValueError as exc:
        raise ValueError(f"{url!r} has a bad port: {exc}") from None
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["false"])[-1].lower() in _TRUE
    return MailTarget(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=starttls,
    )


FEEDBACK_MAILBOX_SCHEMES = ("maildir", "imap", "imaps")


@dataclass(frozen=True)
class MailboxTarget:
    """The mailbox bounce messages are read from, parsed from FEEDBACK_MAILBOX_URL."""

    scheme: str
    path: Path | None = None  # maildir
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    folder: str = "INBOX"
    starttls: bool = False

    def describe(self) -> str:
        """Where it is, without the password: what logs may say."""
        if self.scheme == "maildir":
            return f"maildir {self.path}"
        return f"{self.scheme}://{self.username}@{self.host}:{self.port}/{self.folder}"


def parse_feedback_mailbox_url(url: str) -> MailboxTarget:
    """Parse FEEDBACK_MAILBOX_URL; raise ValueError naming what is wrong and what is accepted.

    The URL holds a password, so errors describe it without quoting it.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in FEEDBACK_MAILBOX_SCHEMES:
        raise ValueError(
            f"unknown scheme {parts.scheme!r}; use maildir://PATH, "
            "imap://user:pass@host[:port]/FOLDER or imaps://user:pass@host[:port]/FOLDER"
        )
    if scheme == "maildir":
        path = parts.netloc + parts.path
        if not path:
            raise ValueError("no folder; write maildir:///var/mail/bounces")
        return MailboxTarget(scheme=scheme, path=Path(unquote(path)))
    if not parts.hostname:
        raise ValueError(f"no host; write {scheme}://user:pass@host/INBOX")
    if not parts.username or parts.password is None:
        raise ValueError(f"no user and password; write {scheme}://user:pass@host/INBOX")
    try:
        port = parts.port or (993 if scheme == "imaps" else 143)
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    starttls = parse_qs(parts.query).get("starttls", ["false"])[-1].lower() in _TRUE
    return MailboxTarget(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username),
        password=unquote(parts.password),
        folder=unquote(parts.path.strip("/")) or "INBOX",
        starttls=starttls and scheme == "imap",
    )


class Settings(BaseSettings):
    """Every setting of Greenlight; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `KEY=` (as in .env.example) means unset, not ""
    )

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # With no Slack setting at all, `serve` also serves the local playground
    # (/playground, loopback only): PLAYGROUND=false turns it off.
    playground: bool = True

    database_url: str = "sqlite:///data/greenlight.db"
    mail_url: str = "maildir://data/outbox"
    smtp_pool_size: int = Field(default=8, ge=1, le=256)
    smtp_timeout: float = Field(default=30.0, gt=0)
    send_rate_limit: float = Field(default=0.0, ge=0)
    send_batch_size: int = Field(default=200, ge=1, le=5000)
    # The PostgreSQL mode (bot.jobs.queue): a worker in serve's process group, or none
    # (workers of their own: `python -m bot worker`); jobs per worker; a worker whose
    # heartbeat is this old has its jobs run again elsewhere; send jobs per execution.
    worker_in_server: bool = True
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    stall_timeout_seconds: float = Field(default=30.0, ge=3, le=3600)
    send_parallelism: int = Field(default=4, ge=1, le=256)
    retry_interval_minutes: int = Field(default=60, ge=1)
    max_retries: int = Field(default=5, ge=0, le=50)
    # The send guard (bot.domain.guard): pause a send when more than GUARD_RATE of the
    # last GUARD_WINDOW relayed were refused or hard-bounced, once GUARD_MINIMUM were
    # relayed; a delivery's `guard:` overrides them.
    guard_rate: float = Field(default=0.05, gt=0, lt=1)
    guard_window: int = Field(default=500, ge=1, le=100_000)
    guard_minimum: int = Field(default=200, ge=1, le=100_000)
    # A message without its unsubscribe link (`domain.preparation.has_unsubscribe_link`)
    # is a preparation warning; true: an error, which blocks the confirm.
    require_unsubscribe_link: bool = False
    # How long the card's **Preview** link (`GET /p/{token}`) opens its page.
    preview_link_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # Where proofs go (comma-separated); unset: to the address of whoever asks for one.
    proof_addresses: str = ""
    public_base_url: str = ""  # unset: http://localhost:PORT (`_follow_port`)
    tracking_secret: SecretStr | None = None
    feedback_secret: SecretStr | None = None
    sendgrid_public_key: str | None = None
    mailgun_signing_key: SecretStr | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    ses_topic_arns: str = ""
    # A signed webhook older or newer than this (either way) is refused.
    webhook_max_age_seconds: int = Field(default=300, ge=30, le=86400)
    feedback_mailbox_url: SecretStr = SecretStr("")
    kpi_channel: str | None = None
    digest_cron: str = "0 * * * *"
    digest_timezone: str = "UTC"
    port: int = Field(default=3000, ge=1, le=65535)
    # The address `serve` listens on: loopback unless told (a container or a host that
    # Slack reaches directly sets 0.0.0.0); a tunnel or a reverse proxy needs no more.
    host: str = "127.0.0.1"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _follow_port(self) -> Settings:
        """Without PUBLIC_BASE_URL, links point at this machine's own PORT."""
        if not self.public_base_url:
            self.public_base_url = f"http://localhost:{self.port}"
        return self

    @model_validator(mode="after")
    def _guard_can_trip(self) -> Settings:
        """A minimum above the window could never be reached: the guard would be off."""
        if self.guard_minimum > self.guard_window:
            raise ValueError("GUARD_MINIMUM must not be above GUARD_WINDOW")
        return self

    @property
    def guard(self) -> GuardPolicy:
        """The global guard policy, which a delivery's `guard:` overrides."""
        return GuardPolicy(self.guard_rate, self.guard_window, self.guard_minimum)

    @field_validator("mail_url")
    @classmethod
    def _check_mail_url(cls, value: str) -> str:
        try:
            parse_mail_url(value)
        except ValueError as exc:
            raise ValueError(_without_password(str(exc), value)) from None
        return value

    @field_validator("feedback_mailbox_url")
    @classmethod
    def _check_feedback_mailbox_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url:
            try:
                parse_feedback_mailbox_url(url)
            except ValueError as exc:
                raise ValueError(_without_password(str(exc), url)) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"unsupported database {scheme!r}; use sqlite:///PATH or postgresql://…"
            )
        if scheme == "postgres":
            raise ValueError("write postgresql:// (SQLAlchemy does not accept postgres://)")
        if scheme == "sqlite" and not re.match(r"^sqlite(\+\w+)?:///", value):
            raise ValueError(
                f"{value!r} is not an SQLite URL: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (three slashes, then the path)"
            )
        return value

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value:
            return value  # follows PORT (`_follow_port`)
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError(f"{value!r} must not contain spaces or line breaks")
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("digest_cron")
    @classmethod
    def _check_digest_cron(cls, value: str) -> str:
        from bot.domain.recurrence import crontab_trigger

        try:
            crontab_trigger(value, "UTC")
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a cron expression ({exc}); write five fields, "
                "e.g. 0 * * * * for every hour at minute 0"
            ) from None
        return value

    @field_validator("digest_timezone")
    @classmethod
    def _check_digest_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. Europe/Paris") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("use DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @property
    def mail_target(self) -> MailTarget:
        return parse_mail_url(self.mail_url)

    @property
    def feedback_mailbox(self) -> MailboxTarget | None:
        """The bounce mailbox to read at every tick, or None when none is configured."""
        url = self.feedback_mailbox_url.get_secret_value()
        return parse_feedback_mailbox_url(url) if url else None


class SettingsError(Exception):
    """A setting is malformed; the message names each bad setting and the fix."""


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's report into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {name}: {msg}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
