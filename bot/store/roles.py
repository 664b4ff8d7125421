"""Role assignments: users and user groups, and the roles they hold."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.domain.roles import Role, SubjectKind
from bot.store.db import affected
from bot.store.models import RoleAssignment


def holds(session: Session, kind: SubjectKind, subject: str, role: Role) -> bool:
    return (
        session.scalar(
            select(RoleAssignment.id).where(
                RoleAssignment.subject_kind == kind,
                RoleAssignment.subject_id == subject,
                RoleAssignment.role == role,
            )
        )
        is not None
    )


def add(
    session: Session, kind: SubjectKind, subject: str, role: Role, by: str, at: datetime
) -> None:
    session.add(
        RoleAssignment(
            subject_kind=kind, subject_id=subject, role=role, granted_by=by, granted_at=at
        )
    )


def remove(session: Session, kind: SubjectKind, subject: str, role: Role) -> bool:
    return bool(
        affected(
            session.execute(
                delete(RoleAssignment).where(
                    RoleAssignment.subject_kind == kind,
                    RoleAssignment.subject_id == subject,
                    RoleAssignment.role == role,
                )
            )
        )
    )


def every(session: Session) -> Sequence[RoleAssignment]:
    return session.scalars(
        select(RoleAssignment).order_by(
            RoleAssignment.subject_kind, RoleAssignment.subject_id, RoleAssignment.role
        )
    ).all()


def roles_of(session: Session, user_id: str, usergroups: Sequence[str] = ()) -> frozenset[Role]:
    """Every role a user holds directly or through one of their user groups."""
    held = (RoleAssignment.subject_kind == SubjectKind.USER) & (
        RoleAssignment.subject_id == user_id
    )
    if usergroups:
        held = held | (
            (RoleAssignment.subject_kind == SubjectKind.USERGROUP)
            & RoleAssignment.subject_id.in_(list(usergroups))
        )
    return frozenset(session.scalars(select(RoleAssignment.role).where(held).distinct()))


def granted_groups(session: Session) -> list[str]:
    """The user groups that hold at least one role (the only ones worth asking Slack about)."""
    return list(
        session.scalars(
            select(RoleAssignment.subject_id)
            .where(RoleAssignment.subject_kind == SubjectKind.USERGROUP)
            .distinct()
        )
    )
