"""Roles of SPEC section 2 and the sentence a refused person reads."""

from __future__ import annotations

import pytest

from bot.domain.errors import DomainError, PermissionDenied
from bot.domain.roles import (
    GRANTS,
    Permission,
    Role,
    allows,
    parse_role,
    permissions,
    require,
    roles_granting,
)

P = Permission
PREPARE = Role.PREPARE_DELIVERIES
START = Role.START_DELIVERIES
ADMIN = Role.ADMINISTRATION

SENDING_ACTIONS = [P.CONFIRM_SEND, P.PAUSE, P.RESUME, P.STOP, P.APPROVE, P.SKIP]


def test_start_deliveries_includes_everything_of_prepare() -> None:
    """Whoever may send may also prepare and see deliveries."""
    assert GRANTS[PREPARE] <= GRANTS[START]
    assert GRANTS[PREPARE] < GRANTS[START]


@pytest.mark.parametrize("permission", [P.VIEW_DELIVERIES, P.PREPARE], ids=str)
def test_prepare_role_can_prepare_and_see(permission: Permission) -> None:
    """prepare-deliveries prepares deliveries and sees them."""
    assert allows([PREPARE], permission)
    require([PREPARE], permission)


@pytest.mark.parametrize("permission", SENDING_ACTIONS, ids=str)
def test_only_start_deliveries_can_act_on_sends(permission: Permission) -> None:
    """Confirm, pause, resume, stop, approve and skip belong to start-deliveries alone."""
    assert roles_granting(permission) == (START,)
    assert allows([START], permission)
    assert not allows([PREPARE], permission)
    assert not allows([ADMIN], permission)
    assert not allows([PREPARE, ADMIN], permission)
    assert not allows([], permission)


@pytest.mark.parametrize("permission", [P.MANAGE_ROLES, P.VIEW_ALL_LOGS], ids=str)
def test_administration_manages_roles_and_sees_logs(permission: Permission) -> None:
    """Only administration grants and revokes roles and sees every log."""
    assert roles_granting(permission) == (ADMIN,)
    assert not allows([START, PREPARE], permission)


def test_no_role_allows_nothing() -> None:
    """A Slack user without any role can do nothing in Greenlight."""
    assert permissions([]) == frozenset()


def test_permissions_are_the_union_of_roles() -> None:
    """Holding two roles gives what either allows."""
    assert permissions([PREPARE, ADMIN]) == GRANTS[PREPARE] | GRANTS[ADMIN]
    assert permissions([START, START]) == GRANTS[START]


def test_refusal_to_confirm_says_permissions_do_not_allow_it() -> None:
    """The private message of SPEC section 2 for a confirm without the role."""
    with pytest.raises(PermissionDenied) as info:
        require([PREPARE], P.CONFIRM_SEND)
    message = str(info.value)
    assert "permissions do not allow you to confirm a delivery" in message
    assert "start-deliveries" in message


@pytest.mark.parametrize("permission", SENDING_ACTIONS[1:], ids=str)
def test_refusal_names_the_action_and_the_role(permission: Permission) -> None:
    """Other refusals say what was refused and which role to ask for."""
    with pytest.raises(PermissionDenied) as info:
        require([PREPARE, ADMIN], permission)
    message = str(info.value)
    assert f"do not allow you to {permission.value}" in message
    assert "*start-deliveries*" in message


def test_refusal_to_manage_roles_points_to_administration() -> None:
    """A start-deliveries holder cannot grant roles and is told who can."""
    with pytest.raises(PermissionDenied, match=r"\*administration\*"):
        require([START], P.MANAGE_ROLES)


def test_refusal_lists_every_role_that_would_allow_it() -> None:
    """When two roles allow an action, the message offers both."""
    with pytest.raises(PermissionDenied) as info:
        require([], P.PREPARE)
    assert "*prepare-deliveries* or *start-deliveries*" in str(info.value)


def test_permission_denied_is_a_domain_error() -> None:
    """Handlers catching DomainError also show role refusals."""
    assert issubclass(PermissionDenied, DomainError)


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("start-deliveries", START),
        ("  Prepare-Deliveries ", PREPARE),
        ("ADMINISTRATION", ADMIN),
    ],
)
def test_parse_role_accepts_names_loosely(text: str, role: Role) -> None:
    """Case and surrounding spaces do not matter in `/campaign roles grant`."""
    assert parse_role(text) is role


@pytest.mark.parametrize("text", ["admin", "", "start_deliveries"])
def test_parse_role_unknown_lists_the_roles(text: str) -> None:
    """An unknown role name is answered with the list of real ones."""
    with pytest.raises(PermissionDenied) as info:
        parse_role(text)
    message = str(info.value)
    assert repr(text) in message
    for role in Role:
        assert role.value in message
