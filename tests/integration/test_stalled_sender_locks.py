"""A sender stopped or cut off while it records a batch holds nothing the others need.

Recording a batch writes the execution's counter row last, after every executemany.

The counter row is the one row every sender of an execution writes. On PostgreSQL an
executemany is a pipeline, and a sender stopped while sending one (SIGSTOP, a cut
link) is neither idle in its transaction nor running a statement, so no timeout ends
it: it must not hold that row then, or every other sender waits for it (the cluster
test's stalled node did exactly that). Checked on the statements themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scenario import as_user, prepare_one
from sqlalchemy import event, text

from bot.bootstrap import Root
from bot.domain.logs import Event, LogEvent
from bot.domain.roles import Role
from bot.services.deliveries.lifecycle import confirm_send
from bot.store import logs
from bot.store.db import SERVER_KEEPALIVE
from bot.store.logs import Relayed
from bot.store.models import Execution


def test_the_counter_row_is_written_after_every_executemany(root: Root, tmp_path: Path) -> None:
    ctx = root.context
    prepare_one(ctx, tmp_path, [f"u{i}@x.example" for i in range(6)])
    confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        (execution_id,) = s.query(Execution.id).all()[0]
        claimed = logs.claim_queued(s, execution_id, "t1", now, 6)
    statements: list[tuple[str, bool]] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append((statement.split()[0] + " " + statement.split()[1], executemany))

    engine = root.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with ctx.sessions.begin() as s:
            logs.record_relayed(
                s,
                now,
                [LogEvent(c.log_id, Event.RELAYED) for c in claimed],
                [Relayed(c.log_id, f"<{c.log_id}@x>", None) for c in claimed],
                "t1",
            )
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    counters = [i for i, (sql, _) in enumerate(statements) if "kpi_counters" in sql]
    many = [i for i, (_, executemany) in enumerate(statements) if executemany]
    assert counters and many, statements
    assert min(counters) > max(many), statements
    writes = [i for i, (sql, _) in enumerate(statements) if sql.split()[0] in {"UPDATE", "INSERT"}]
    assert max(writes) in counters, "the counters are the transaction's last write"


pytestmark = pytest.mark.usefixtures("backend")


def test_the_server_probes_every_connection_so_a_cut_client_s_locks_end(
    root: Root, backend: str
) -> None:
    """A client cut from the network mid-pipeline is noticed by the server's keepalives
    (within half a minute, not the system's two hours) and its transaction ended."""
    if backend != "postgresql":
        pytest.skip("SQLite has no network connections")
    with root.context.sessions() as s:
        shown = [s.execute(text(f"SHOW tcp_keepalives_{n}")).scalar() for n in KEEPALIVE_NAMES]
    assert shown == [str(v) for v in SERVER_KEEPALIVE]


KEEPALIVE_NAMES = ("idle", "interval", "count")
