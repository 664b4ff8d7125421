"""Kill a sending process with SIGKILL mid-batch, start it again, count what arrived.

The bound README states: nobody is lost, and at most one batch (SEND_BATCH_SIZE, the
messages in flight) reaches the relay twice. The relay holds the connection on the
K-th message until the process is dead, so the kill lands in the middle of a batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from aiosmtpd.controller import Controller
from scenario import as_user, detail_json, prepare_one
from smtp_relay import Holding, free_port
from sqlalchemy import func, select

from bot.bootstrap import bootstrap
from bot.config import load_settings
from bot.domain.roles import Role
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import SendingLog

N = 600
BATCH = 100
KILL_AT = 250  # in the middle of the third batch


def test_sigkill_mid_send_loses_nobody_and_repeats_at_most_one_batch(tmp_path: Path) -> None:
    recorder = Holding(KILL_AT)
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    db = tmp_path / "greenlight.db"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": f"sqlite:///{db}",
        "MAIL_URL": f"smtp://127.0.0.1:{port}",
        "TRACKING_SECRET": "crash-test",
        "SEND_BATCH_SIZE": str(BATCH),
        "SMTP_POOL_SIZE": "4",
        "LOG_LEVEL": "WARNING",
    }
    try:
        root = bootstrap(
            load_settings(
                _env_file=None, database_url=env["DATABASE_URL"], tracking_secret="crash-test"
            )
        )
        ctx = root.context
        emails = [f"user{i}@x.example" for i in range(N)]
        prepare_one(ctx, tmp_path, emails, text="Hello {{ email }}")
        confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")

        command = [sys.executable, "-m", "bot", "jobs", "run-due"]
        first = subprocess.Popen(command, env=env, cwd=tmp_path)
        try:
            assert recorder.reached.wait(120), "the sender never reached the K-th message"
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(30) == -signal.SIGKILL
        finally:
            recorder.release.set()
            if first.poll() is None:
                first.kill()

        with ctx.sessions() as s:
            claimed = s.scalar(select(func.count()).where(SendingLog.claim_token.is_not(None)))
        assert 0 < claimed <= BATCH, "the batch in flight was left claimed"

        second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
    finally:
        controller.stop()

    counts: dict[str, int] = {}
    for rcpt in recorder.received:
        counts[rcpt] = counts.get(rcpt, 0) + 1
    assert sorted(counts) == sorted(emails), "every recipient received the message"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= BATCH, f"{duplicates} messages sent twice, more than one batch"
    detail = detail_json(ctx, "big")
    assert detail["state"] == "finished"
    assert (detail["kpis"]["sent"], detail["logs"]["sent"]) == (N, N)
    root.close()
