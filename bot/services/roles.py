"""Role assignments: who may prepare, start and administer (SPEC section 2).

Roles are held by Slack user ids, or by a Slack user group whose members then hold
them. The first administrator is granted from the command line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.roles import Actor, Permission, Role, SubjectKind, parse_role
from bot.store import audit
from bot.store import roles as store

_SUBJECT = re.compile(r"^[UWS][A-Z0-9]{2,}$")


@dataclass(frozen=True)
class Grant:
    subject_kind: SubjectKind
    subject_id: str
    role: Role
    granted_by: str | None
    granted_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_kind": self.subject_kind.value,
            "subject_id": self.subject_id,
            "role": self.role.value,
            "granted_by": self.granted_by,
            "granted_at": self.granted_at.isoformat(),
        }


def parse_subject(text: str) -> tuple[SubjectKind, str]:
    """A Slack user id (U…/W…) or user group id (S…), also as <@U…> or <!subteam^S…>."""
    raw = text.strip()
    mention = re.fullmatch(r"<[@!](?:subteam\^)?([A-Z0-9]+)(?:\|[^>]*)?>", raw)
    ident = (mention.group(1) if mention else raw).upper()
    if not _SUBJECT.match(ident):
        raise DomainError(
            f"{text!r} is not a Slack user or user group id; use an id like U012AB3CD "
            "(a user) or S0614TZR7 (a user group), or mention the user"
        )
    return (SubjectKind.USERGROUP if ident.startswith("S") else SubjectKind.USER, ident)


def _change(ctx: Context, actor: Actor, subject: str, role: str, grant: bool) -> bool:
    actor.require(Permission.MANAGE_ROLES)
    kind, ident = parse_subject(subject)
    parsed = parse_role(role)
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        if grant:
            if store.holds(s, kind, ident, parsed):
                return False
            store.add(s, kind, ident, parsed, actor.id, now)
        elif not store.remove(s, kind, ident, parsed):
            return False
        audit.record(
            s,
            now,
            actor=actor.id,
            action="role.grant" if grant else "role.revoke",
            subject_kind=kind.value,
            subject_ref=ident,
            detail={"role": parsed.value},
        )
    return True


def grant(ctx: Context, actor: Actor, subject: str, role: str) -> bool:
    """Grant a role; False when it was already held (nothing changes)."""
    return _change(ctx, actor, subject, role, grant=True)


def revoke(ctx: Context, actor: Actor, subject: str, role: str) -> bool:
    """Revoke a role; False when it was not held."""
    return _change(ctx, actor, subject, role, grant=False)


def list_grants(ctx: Context, actor: Actor) -> list[Grant]:
    actor.require(Permission.MANAGE_ROLES)
    with ctx.sessions() as s:
        return [
            Grant(r.subject_kind, r.subject_id, r.role, r.granted_by, r.granted_at)
            for r in store.every(s)
        ]


def roles_of(ctx: Context, user_id: str, usergroups: Sequence[str] = ()) -> frozenset[Role]:
    """Every role a user holds directly or through one of their user groups."""
    with ctx.sessions() as s:
        return store.roles_of(s, user_id, [g.upper() for g in usergroups])


def direct_roles_and_groups(ctx: Context, user_id: str) -> tuple[frozenset[Role], list[str]]:
    """The user's own roles and the user groups that hold a role, in one read: what
    every Slack request needs before its acknowledgement (the groups' roles are read
    again only when some group holds one)."""
    with ctx.sessions() as s:
        return store.roles_of(s, user_id, []), store.granted_groups(s)
