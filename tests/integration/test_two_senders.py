"""Two senders over one database: neither takes the other's batch in flight.

Two schedulers (two processes, or a tick and a kick in one) can run the due work at
the same time. The first sender's batch is held at the relay; the second must send
the rest, leave that batch alone, and leave the finishing to the first.
"""

from __future__ import annotations

import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from scenario import as_user, detail_json, due_now, prepare_one
from smtp_relay import Holding, free_port

from bot.bootstrap import Root, bootstrap
from bot.clock import FixedClock
from bot.context import Context
from bot.domain.roles import Role
from bot.jobs.due_work import DueReport
from bot.services.deliveries.lifecycle import confirm_send

EMAILS = [f"user{i}@x.example" for i in range(6)]


def test_a_second_sender_never_resends_a_live_senders_batch(
    root: Root, ctx: Context, tmp_path: Path
) -> None:
    holder = Holding(1)
    port = free_port()
    controller = Controller(holder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ctx = ctx.with_settings(
            mail_url=f"smtp://127.0.0.1:{port}", smtp_pool_size=1, send_batch_size=2
        )
        prepare_one(ctx, tmp_path, EMAILS)
        confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
        other = bootstrap(
            ctx.settings,
            FixedClock(ctx.clock.now()),
            migrate=False,
            engine=root.engine if root.engine.dialect.name == "postgresql" else None,
        )

        reports: list[DueReport] = []
        first = threading.Thread(target=lambda: reports.append(due_now(ctx)))
        first.start()
        assert holder.reached.wait(30), "the first sender never relayed"
        report = due_now(other.context)
        assert report.sent == {"big": "in-progress"}, "the first sender finishes, not this one"
        assert len(holder.received) == 5, "the second sent the others, not the held batch"
        holder.release.set()
        first.join(30)
        assert not first.is_alive()
        assert [r.sent for r in reports] == [{"big": "finished"}], "the first sender finished"
    finally:
        holder.release.set()
        controller.stop()
    assert sorted(holder.received) == sorted(EMAILS), "each recipient exactly once"
    detail = detail_json(ctx, "big")
    assert (detail["state"], detail["kpis"]["sent"]) == ("finished", 6)
