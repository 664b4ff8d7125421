"""Confirm and start are one transaction: a failure between the two leaves nothing half done.

The fault is injected in the database itself, at the first write of the start (its
audit entry), so the test does not depend on how the code is arranged: before the
confirm and the start shared a transaction, the confirm was committed by then and
the delivery stayed `start-pending` for ever (no contact date, so nothing started it,
and it could not be confirmed again).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scenario import as_user, detail_json, prepare_one
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from bot.bootstrap import Root
from bot.context import Context
from bot.domain.roles import Role
from bot.services.deliveries.lifecycle import confirm_send

ALICE = as_user("U0ALICE", [Role.START_DELIVERIES])


@pytest.fixture
def start_fails(root: Root) -> Iterator[list[str]]:
    """Every write of a "delivery.start" audit entry fails, as a full disk or a lost
    connection would make it fail, until the test empties the returned list."""
    armed = ["delivery.start"]

    def fail(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        values = params.values() if isinstance(params, dict) else params or ()
        if armed and "audit_log" in statement and any(v in armed for v in values):
            raise OperationalError(statement, params, Exception("injected: disk I/O error"))

    event.listen(root.engine, "before_cursor_execute", fail)
    yield armed
    event.remove(root.engine, "before_cursor_execute", fail)


def test_a_failure_while_starting_undoes_the_confirm(
    ctx: Context, tmp_path: Path, start_fails: list[str]
) -> None:
    prepare_one(ctx, tmp_path, ["ann@x.example", "bob@x.example"])
    with pytest.raises(OperationalError):
        confirm_send(ctx, ALICE, "big")
    detail = detail_json(ctx, "big")
    assert (detail["state"], detail["confirmed_by"]) == ("ready", None), "nothing half done"
    assert detail["execution"]["state"] == "ready"

    start_fails.clear()  # the disk is back: the same person confirms again, once
    moved = confirm_send(ctx, ALICE, "big")
    assert (moved.before, moved.after) == ("start-pending", "in-progress")
    detail = detail_json(ctx, "big")
    assert (detail["state"], detail["confirmed_by"]) == ("in-progress", "U0ALICE")
    assert detail["execution"]["state"] == "in-progress"
