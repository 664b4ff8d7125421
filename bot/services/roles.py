"""Role assignments: who may prepare, start and administer (SPEC section 2).

Roles are held by Slack user ids, or by a Slack user group whose members then hold
them. The first administrator is granted from the CLI, which acts as "cli".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.roles import Role, parse_role
from bot.services import audit
from bot.store.models import RoleAssignment

_SUBJECT = re.compile(r"^[UWS][A-Z0-9]{2,}$")


@dataclass(frozen=True)
class Grant:
    subject_kind: str
    subject_id: str
    role: Role
    granted_by: str | None
    granted_at: datetime

    def as_dict(self) -> dict[str, str | None]:
        return {
            "subject_kind": self.subject_kind,
            "subject_id": self.subject_id,
            "role": self.role.value,
            "granted_by": self.granted_by,
            "granted_at": self.granted_at.isoformat(),
        }


def parse_subject(text: str) -> tuple[str, str]:
    """A Slack user id (U…/W…) or user group id (S…), also as <@U…> or <!subteam^S…>."""
    raw = text.strip()
    mention = re.fullmatch(r"<[@!](?:subteam\^)?([A-Z0-9]+)(?:\|[^>]*)?>", raw)
    ident = (mention.group(1) if mention else raw).upper()
    if not _SUBJECT.match(ident):
        raise DomainError(
            f"{text!r} is not a Slack user or user group id; use an id like U012AB3CD "
            "(a user) or S0614TZR7 (a user group), or mention the user"
        )
    return ("usergroup" if ident.startswith("S") else "user", ident)


def grant(ctx: Context, subject: str, role: str, actor: str = "cli") -> bool:
    """Grant a role; False when it was already held (nothing changes)."""
    kind, ident = parse_subject(subject)
    parsed = parse_role(role)
    with ctx.sessions.begin() as s:
        exists = s.scalar(
            select(RoleAssignment.id).where(
                RoleAssignment.subject_kind == kind,
                RoleAssignment.subject_id == ident,
                RoleAssignment.role == parsed.value,
            )
        )
        if exists:
            return False
        s.add(
            RoleAssignment(
                subject_kind=kind,
                subject_id=ident,
                role=parsed.value,
                granted_by=actor,
                granted_at=ctx.clock.now(),
            )
        )
        audit.record(
            s,
            ctx.clock,
            actor=actor,
            action="role.grant",
            subject_kind=kind,
            subject_ref=ident,
            detail={"role": parsed.value},
        )
    return True


def revoke(ctx: Context, subject: str, role: str, actor: str = "cli") -> bool:
    """Revoke a role; False when it was not held."""
    kind, ident = parse_subject(subject)
    parsed = parse_role(role)
    with ctx.sessions.begin() as s:
        gone = s.execute(
            delete(RoleAssignment).where(
                RoleAssignment.subject_kind == kind,
                RoleAssignment.subject_id == ident,
                RoleAssignment.role == parsed.value,
            )
        ).rowcount
        if gone:
            audit.record(
                s,
                ctx.clock,
                actor=actor,
                action="role.revoke",
                subject_kind=kind,
                subject_ref=ident,
                detail={"role": parsed.value},
            )
    return bool(gone)


def list_grants(ctx: Context) -> list[Grant]:
    with ctx.sessions() as s:
        rows = s.scalars(
            select(RoleAssignment).order_by(
                RoleAssignment.subject_kind, RoleAssignment.subject_id, RoleAssignment.role
            )
        ).all()
    return [
        Grant(r.subject_kind, r.subject_id, Role(r.role), r.granted_by, r.granted_at) for r in rows
    ]


def roles_of(ctx: Context, user_id: str, usergroups: Iterable[str] = ()) -> frozenset[Role]:
    """Every role a user holds directly or through one of their user groups."""
    groups = [g.upper() for g in usergroups]
    with ctx.sessions() as s:
        stmt = select(RoleAssignment.role).where(
            (RoleAssignment.subject_kind == "user") & (RoleAssignment.subject_id == user_id)
        )
        if groups:
            stmt = stmt.union(
                select(RoleAssignment.role).where(
                    (RoleAssignment.subject_kind == "usergroup")
                    & RoleAssignment.subject_id.in_(groups)
                )
            )
        return frozenset(Role(r) for r in s.scalars(stmt))


def granted_groups(ctx: Context) -> list[str]:
    """The user groups that hold at least one role (the only ones worth asking Slack about)."""
    with ctx.sessions() as s:
        return list(
            s.scalars(
                select(RoleAssignment.subject_id)
                .where(RoleAssignment.subject_kind == "usergroup")
                .distinct()
            )
        )
