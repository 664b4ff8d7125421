"""One delivery definition as written in a deliveries YAML file, and its hash.

The pydantic model checks everything that can be checked without the database
(shape, unknown fields, addresses, time zones, cron, templates, the validity period,
the rules between fields), so that an import can list every problem of a file at
once. Cross-field rules raise `FieldError`, which names the field it is about:
pydantic would otherwise report them against the whole entry.

`definition_hash` covers exactly what changes what is sent (content, sender, audience,
schedule, recurrence, validity, EFS) and not the name or the Slack channel: a
preparation stays valid across a rename, and is invalidated by anything else.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.domain.errors import DomainError
from bot.domain.recurrence import crontab_trigger
from bot.domain.schedule import (
    DEFAULT_VALIDITY,
    Aggregation,
    ScheduleMode,
    check_request_confirmation,
    check_validity,
    default_request_confirmation,
    parse_duration,
)
from bot.domain.waves import LocalMoment
from bot.engine.message import check_address_header
from bot.engine.rendering import (
    MessageTemplates,
    RenderError,
    RenderLimitExceeded,
    TemplateSyntaxProblem,
    profile_context,
)

REF_PATTERN = r"[a-z0-9][a-z0-9_-]*"  # whole value (fullmatch): no trailing newline
_HEADER_UNSAFE = re.compile(r"[\r\n\x00]")
_BARE_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*")  # a date and no time
_NAMED_ADDRESS = re.compile(r"^(?P<name>[^<>]*)<(?P<addr>[^<>]*)>$")


class FieldError(ValueError):
    """A rule between fields broke; `field` is the one to fix (dotted, relative)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or ValueError with an example of a valid name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not a known time zone; use an IANA name like Europe/Paris"
        ) from None


@cache
def _template_env() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment()


def check_template(source: str) -> str:
    """Parse (not render) a template, so a syntax error is caught at import time."""
    try:
        _template_env().parse(source)
    except TemplateSyntaxError as exc:
        message = f"template syntax error on template line {exc.lineno}: {exc.message}"
        raise ValueError(message) from None
    return source


def check_render_cost(definition: DeliveryDefinition) -> None:
    """Render once for a profile with no data: a template over the rendering limits
    without any profile data is over them for everyone, so refuse it now."""
    try:
        templates = MessageTemplates(definition.subject, definition.html, definition.text)
        templates.render(
            profile_context(
                email="someone@example.com",
                first_name=None,
                last_name=None,
                timezone=None,
                attributes=None,
                delivery={"ref": definition.ref, "name": definition.name},
            )
        )
    except TemplateSyntaxProblem as exc:
        raise FieldError(
            exc.part, f"template error on template line {exc.line}: {exc.reason}"
        ) from None
    except RenderLimitExceeded as exc:
        raise FieldError(exc.part, f"template line {exc.line}: {exc.reason}") from None
    except RenderError:
        pass  # it may well render with a profile's data; the preparation tells


def check_address(value: str) -> str:
    """An address, bare or as `Name <addr>`; only its syntax is checked (no DNS)."""
    text = value.strip()
    if _HEADER_UNSAFE.search(text):
        raise ValueError("an address must be on one line")
    match = _NAMED_ADDRESS.match(text)
    addr = match.group("addr").strip() if match else text
    if not addr:
        raise ValueError(f"{value!r} has no address; write news@example.com or Name <news@…>")
    try:
        validate_email(addr, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{addr!r} is not a valid address: {exc}") from None
    return text


def _no_bare_date(value: Any) -> Any:
    """YAML reads `2026-11-27` as a date; a contact date needs a time as well."""
    if isinstance(value, date) and not isinstance(value, datetime):
        raise ValueError("give a date and a time, like 2026-11-27T08:00")
    if isinstance(value, str) and _BARE_DATE.fullmatch(value):
        raise ValueError("give a date and a time, like 2026-11-27T08:00")
    return value


Address = Annotated[str, Field(min_length=3, max_length=400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _time_of_day(value: Any) -> Any:
    """YAML reads an unquoted 9:00 as the number 540 (base 60): ask for quotes."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError('write the time of day in quotes, like time: "09:00"')
    if isinstance(value, str) and not re.fullmatch(r"\s*([01]\d|2[0-3]):[0-5]\d\s*", value):
        raise ValueError('write the time of day as HH:MM (24 hours), like time: "09:00"')
    return value.strip() if isinstance(value, str) else value


def _calendar_day(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and not _BARE_DATE.fullmatch(value)):
        raise ValueError("give the date alone, like date: 2026-12-05; the time goes in time")
    return value


class ScheduleDefinition(_Strict):
    mode: ScheduleMode = ScheduleMode.ON_CONFIRM
    at: Annotated[datetime | None, BeforeValidator(_no_bare_date)] = None
    # recipient-local: the date and the time of day each recipient gets it at, in
    # their own zone; `timezone` is then the zone of profiles that have none.
    date: Annotated[dt.date | None, BeforeValidator(_calendar_day)] = None
    time: Annotated[str | None, BeforeValidator(_time_of_day)] = None
    timezone: str | None = Field(default=None, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    @model_validator(mode="after")
    def _mode_fields(self) -> ScheduleDefinition:
        needs = _MODE_FIELDS.get(self.mode, ())
        for name in needs:
            if getattr(self, name) is None:
                what = _NEEDED[name]
                if name == "timezone" and self.mode is ScheduleMode.RECIPIENT_LOCAL:
                    what = "the time zone of profiles that have none"
                raise FieldError(
                    name, f"mode: {self.mode.value} needs {what}, like {_EXAMPLES[name]}"
                )
        for name in _EXAMPLES:
            if name not in needs and getattr(self, name) is not None:
                modes = " or ".join(f"mode: {m}" for m, f in _MODE_FIELDS.items() if name in f)
                raise FieldError(
                    name, f"{name} is used only with {modes}; set the mode or remove {name}"
                )
        return self

    def at_utc(self) -> datetime | None:
        """The contact date in UTC; a date without an offset is read in `timezone`.

        For recipient-local, the moment in the delivery's own zone (its profiles
        without a zone get it then)."""
        local = self.local_moment()
        if local is not None:
            return local.instant_in(self.timezone or "UTC")
        if self.at is None:
            return None
        at = self.at
        if at.tzinfo is None:
            at = at.replace(tzinfo=zone(self.timezone or "UTC"))
        return at.astimezone(UTC)

    def local_moment(self) -> LocalMoment | None:
        if self.mode is not ScheduleMode.RECIPIENT_LOCAL or self.date is None or not self.time:
            return None
        return LocalMoment.parse(f"{self.date.isoformat()}T{self.time}")


_MODE_FIELDS: dict[ScheduleMode, tuple[str, ...]] = {
    ScheduleMode.AT: ("at", "timezone"),
    ScheduleMode.RECIPIENT_LOCAL: ("date", "time", "timezone"),
}
_NEEDED = {
    "at": "a contact date",
    "date": "a date",
    "time": "a time of day",
    "timezone": "a time zone",
}
_EXAMPLES = {
    "at": "at: 2026-11-27T08:00",
    "date": "date: 2026-12-05",
    "time": 'time: "09:00"',
    "timezone": "timezone: Europe/Paris",
}


class RecurrenceDefinition(_Strict):
    cron: str = Field(min_length=1, max_length=120)
    timezone: str = Field(max_length=64)
    aggregation: Aggregation = Aggregation.NONE
    request_confirmation: bool | None = None
    approvals_required: int = Field(default=1, ge=1)
    # How long an approval request waits before it expires, when sooner than the next
    # occurrence (which always ends it). Not hashed: it changes no message.
    approval_expiry: timedelta | None = None

    @field_validator("approval_expiry", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> timedelta | None:
        if value is None or isinstance(value, timedelta):
            period = value
        elif isinstance(value, str):
            try:
                period = parse_duration(value)
            except DomainError as exc:
                raise ValueError(str(exc)) from None
        else:
            raise ValueError("write the approval expiry like 2h, 90m or 1d")
        if period is not None and period <= timedelta(0):
            raise ValueError("the approval expiry must be longer than zero")
        return period

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            crontab_trigger(value, "UTC")
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a cron expression ({exc}); write 5 fields like '0 9 * * 1' "
                "(minute hour day-of-month month day-of-week)"
            ) from None
        return value

    @model_validator(mode="after")
    def _confirmation(self) -> RecurrenceDefinition:
        if self.request_confirmation is None:
            self.request_confirmation = default_request_confirmation(self.aggregation)
            return self
        try:
            check_request_confirmation(self.aggregation, self.request_confirmation)
        except DomainError as exc:
            raise FieldError("request_confirmation", str(exc)) from None
        return self


class GuardDefinition(_Strict):
    """`guard: {rate: 0.05, window: 500, minimum: 200}`: this delivery's send guard
    (`bot.domain.guard`); a field left out takes the global setting (`GUARD_…`).
    `guard: off` is read as `{off: true}`."""

    off: bool = False
    rate: float | None = Field(default=None, gt=0, lt=1)
    window: int | None = Field(default=None, ge=1, le=100_000)
    minimum: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _reachable(self) -> GuardDefinition:
        if self.window is not None and self.minimum is not None and self.minimum > self.window:
            raise FieldError("minimum", "the minimum must not be above the window")
        return self


def _guard_off(value: Any) -> Any:
    """YAML reads `off` as false: both mean the guard is off; `on` is the default."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return {"off": True}
    if value is True or isinstance(value, str):
        raise ValueError("write guard: off, or guard: {rate: 0.05, window: 500, minimum: 200}")
    return value


class DeliveryDefinition(_Strict):
    """One entry of a deliveries YAML file (DESIGN.md, "Public interfaces")."""

    ref: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=300)
    audience: str = Field(min_length=1, max_length=200)
    sender: Address = Field(alias="from")
    reply_to: Address | None = None
    subject: str = Field(min_length=1)
    html: str | None = None
    text: str | None = None
    schedule: ScheduleDefinition | None = None
    recurrence: RecurrenceDefinition | None = None
    validity: timedelta = DEFAULT_VALIDITY
    efs: bool = False
    slack_channel: str | None = Field(default=None, min_length=1, max_length=100)
    # Not hashed: it changes no message, and may change while the delivery sends.
    guard: Annotated[GuardDefinition | None, BeforeValidator(_guard_off)] = None

    @field_validator("ref", mode="before")
    @classmethod
    def _ref_hint(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(REF_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a ref; use lower-case letters, digits, - and _, "
                "starting with a letter or digit (like spring-sale)"
            )
        return value

    @field_validator("sender", "reply_to")
    @classmethod
    def _address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        text = check_address(value)
        header = "From" if info.field_name == "sender" else "Reply-To"
        check_address_header(header, text, single=header == "From")
        return text

    @field_validator("subject", "html", "text")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("subject")
    @classmethod
    def _one_line_subject(cls, value: str) -> str:
        if _HEADER_UNSAFE.search(value.strip()):
            raise ValueError("the subject must be on one line")
        return value.strip()

    @field_validator("validity", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        if isinstance(value, timedelta):
            period = value
        elif isinstance(value, str):
            try:
                period = parse_duration(value)
            except DomainError as exc:
                raise ValueError(str(exc)) from None
        else:
            raise ValueError("write the validity period like 3d12h, 36h or 90m")
        try:
            return check_validity(period)
        except DomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("slack_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and re.search(r"\s", value):
            raise ValueError("a Slack channel is an id like C0123456789 (no spaces)")
        return value

    @model_validator(mode="after")
    def _between_fields(self) -> DeliveryDefinition:
        if not (self.html or self.text):
            raise FieldError("html", "a delivery needs an html body, a text body, or both")
        check_render_cost(self)
        if self.recurrence is not None and self.schedule is not None:
            raise FieldError(
                "schedule",
                "a recurring delivery starts at each occurrence of its recurrence, so it "
                "cannot also have a schedule; remove schedule or recurrence",
            )
        return self

    # What the database stores and what the hash covers -----------------------------

    def columns(self) -> dict[str, Any]:
        """The Delivery columns this definition sets (without audience_id and state)."""
        schedule = self.schedule or ScheduleDefinition()
        recurrence = self.recurrence
        return {
            "ref": self.ref,
            "name": self.name,
            "sender": self.sender,
            "reply_to": self.reply_to,
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "schedule_mode": schedule.mode.value,
            "scheduled_at": schedule.at_utc(),
            "schedule_timezone": schedule.timezone,
            "schedule_local": local.text() if (local := schedule.local_moment()) else None,
            "recurrence_cron": recurrence.cron if recurrence else None,
            "recurrence_timezone": recurrence.timezone if recurrence else None,
            "aggregation": (recurrence.aggregation if recurrence else Aggregation.NONE).value,
            "request_confirmation": bool(recurrence and recurrence.request_confirmation),
            "approvals_required": recurrence.approvals_required if recurrence else 1,
            "approval_expiry_seconds": (
                int(recurrence.approval_expiry.total_seconds())
                if recurrence and recurrence.approval_expiry
                else None
            ),
            "validity_seconds": int(self.validity.total_seconds()),
            "efs": self.efs,
            "slack_channel": self.slack_channel,
            "guard": self._guard_column(),
        }

    def _guard_column(self) -> dict[str, Any] | None:
        """What `Delivery.guard` stores: None (the global settings), off, or overrides."""
        if self.guard is None:
            return None
        if self.guard.off:
            return {"off": True}
        return self.guard.model_dump(exclude_none=True, exclude={"off"}) or None

    def hash(self) -> str:
        return definition_hash(self.columns(), self.audience)


# Columns that change what is sent; name and slack_channel are left out on purpose.
HASHED_COLUMNS = (
    "sender",
    "reply_to",
    "subject",
    "html",
    "text",
    "schedule_mode",
    "scheduled_at",
    "schedule_timezone",
    "schedule_local",
    "recurrence_cron",
    "recurrence_timezone",
    "aggregation",
    "request_confirmation",
    "approvals_required",
    "validity_seconds",
    "efs",
)


# Hashed columns added after deliveries were stored: left out of the hash while unset.
_ADDED_LATER = frozenset({"schedule_local"})


def definition_hash(columns: dict[str, Any], audience: str) -> str:
    """sha256 of a canonical JSON of what is sent; the same for a file entry and a row."""
    canon: dict[str, Any] = {"audience": audience}
    for name in HASHED_COLUMNS:
        value = columns.get(name)
        if value is None and name in _ADDED_LATER:
            continue  # the hashes stored before the column existed stay the same
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        canon[name] = value
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def delivery_hash(delivery: Any) -> str:
    """The hash of a stored Delivery row (to check a row against its definition_hash)."""
    columns = {name: getattr(delivery, name) for name in HASHED_COLUMNS}
    return definition_hash(columns, delivery.audience.name)


def error_field(err: Any) -> str | None:
    """The dotted field path of one pydantic error, with FieldError's field appended."""
    parts = [str(p) for p in err.get("loc", ())]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        parts.append(cause.field)
    return ".".join(parts) or None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def error_reason(err: Any) -> str:
    """pydantic's message, minus its "Value error, " prefix; an unknown field gets the
    closest known name and the list of known ones."""
    kind = err.get("type")
    if kind == "extra_forbidden":
        loc = [str(p) for p in err.get("loc", ())]
        section = loc[0] if len(loc) > 1 else None
        sections: dict[str, type[BaseModel]] = {
            "schedule": ScheduleDefinition,
            "recurrence": RecurrenceDefinition,
            "guard": GuardDefinition,
        }
        model = sections.get(section or "", DeliveryDefinition)
        known = _field_names(model)
        close = difflib.get_close_matches(loc[-1] if loc else "", known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        where = f" of {section}" if section else ""
        return f"unknown field; {hint}the fields{where} are: {', '.join(known)}"
    if kind == "missing":
        return "this field is required"
    message = str(err.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


__all__ = [
    "DeliveryDefinition",
    "FieldError",
    "GuardDefinition",
    "RecurrenceDefinition",
    "ScheduleDefinition",
    "ValidationError",
    "check_address",
    "check_template",
    "definition_hash",
    "delivery_hash",
    "error_field",
    "error_reason",
    "zone",
]
