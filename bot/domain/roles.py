"""Roles and what they allow (SPEC section 2); checked when the action happens."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bot.domain.errors import PermissionDenied


class Role(StrEnum):
    PREPARE_DELIVERIES = "prepare-deliveries"
    START_DELIVERIES = "start-deliveries"
    ADMINISTRATION = "administration"


class SubjectKind(StrEnum):
    """Who holds a role: a Slack user (U…/W…), or a Slack user group (S…) and its members."""

    USER = "user"
    USERGROUP = "usergroup"


class Permission(StrEnum):
    VIEW_DELIVERIES = "view deliveries"
    PREPARE = "prepare deliveries"
    CONFIRM_SEND = "confirm a delivery"
    PAUSE = "pause a delivery"
    RESUME = "resume a delivery"
    STOP = "stop a delivery"
    APPROVE = "approve an occurrence"
    SKIP = "skip an occurrence"
    COMPUTE_STATS = "compute stats"
    SEND_PROOF = "send a proof"
    MANAGE_ROLES = "grant and revoke roles"
    VIEW_ALL_LOGS = "see every log"


_PREPARE = frozenset(
    {
        Permission.VIEW_DELIVERIES,
        Permission.PREPARE,
        Permission.COMPUTE_STATS,
        Permission.SEND_PROOF,
    }
)
_START = _PREPARE | {
    Permission.CONFIRM_SEND,
    Permission.PAUSE,
    Permission.RESUME,
    Permission.STOP,
    Permission.APPROVE,
    Permission.SKIP,
}
_ADMIN = frozenset({Permission.MANAGE_ROLES, Permission.VIEW_ALL_LOGS, Permission.VIEW_DELIVERIES})

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.PREPARE_DELIVERIES: _PREPARE,
    Role.START_DELIVERIES: frozenset(_START),
    Role.ADMINISTRATION: _ADMIN,
}


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise PermissionDenied(f"unknown role {text!r}; the roles are: {known}") from None


def permissions(roles: Iterable[Role]) -> frozenset[Permission]:
    out: frozenset[Permission] = frozenset()
    for role in roles:
        out |= GRANTS[role]
    return out


def allows(roles: Iterable[Role], permission: Permission) -> bool:
    return permission in permissions(roles)


def roles_granting(permission: Permission) -> tuple[Role, ...]:
    return tuple(r for r in Role if permission in GRANTS[r])


def require(roles: Iterable[Role], permission: Permission) -> None:
    """Raise PermissionDenied with the sentence a person sees when refused."""
    if allows(roles, permission):
        return
    needed = " or ".join(f"*{r.value}*" for r in roles_granting(permission))
    if permission is Permission.CONFIRM_SEND:
        raise PermissionDenied(
            "Your permissions do not allow you to confirm a delivery. "
            f"Ask an administrator for the {needed} role."
        )
    raise PermissionDenied(
        f"Your permissions do not allow you to {permission.value}. "
        f"Ask an administrator for the {needed} role."
    )


@dataclass(frozen=True)
class Actor:
    """Who acts, with the roles they hold at that moment (SPEC section 2: at the click).

    A Slack user's roles are read when their request arrives. The command line is run
    by whoever runs Greenlight itself, on its machine: it acts as `COMMAND_LINE`,
    which holds every role.
    """

    id: str
    roles: frozenset[Role]

    def may(self, permission: Permission) -> bool:
        return allows(self.roles, permission)

    def require(self, permission: Permission) -> None:
        require(self.roles, permission)


COMMAND_LINE = Actor("cli", frozenset(Role))
