"""The sender in its own process (what `serve` runs): kicked, it relays; it reports
each batch back to the server; told to stop, it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from scenario import as_user, detail_json, due_now, prepare_one
from smtp_relay import Relay, free_port
from sqlalchemy import func, select

from bot.bootstrap import bootstrap, sender_child
from bot.config import load_settings
from bot.domain.roles import Role
from bot.jobs.process import SendProcess
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import SendingLog

N = 120
BATCH = 50


def test_the_sender_process_relays_reports_batches_and_stops(tmp_path: Path) -> None:
    relay = Relay()
    relay.start()
    settings = load_settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'greenlight.db'}",
        mail_url=f"smtp://127.0.0.1:{relay.port}",
        tracking_secret="process-test",
        send_batch_size=BATCH,
        smtp_pool_size=4,
    )
    root = bootstrap(settings)
    ctx = root.context
    emails = [f"user{i}@x.example" for i in range(N)]
    prepare_one(ctx, tmp_path, emails, subject="Hi {{ email }}", text="Hello {{ email }}")

    batches: list[int] = []
    all_reported = threading.Event()

    def on_batch(execution_id: int) -> None:
        batches.append(execution_id)
        if len(batches) >= -(-N // BATCH) + 1:  # each batch, then the finish
            all_reported.set()

    # A tick far away: only the kick can make the child send within the test.
    runner = SendProcess(settings, sender_child, on_batch=on_batch, tick_seconds=3600)
    runner.start()
    try:
        confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
        runner.kick()
        assert all_reported.wait(60), f"only {len(batches)} batches were reported"
        assert runner.is_alive()
    finally:
        runner.stop(timeout=30)
        relay.stop()

    assert not runner.is_alive()
    assert runner.rounds >= 1
    received = sorted(r.rcpt_tos[0] for r in relay.recorder.received)
    assert received == sorted(emails), "every recipient exactly once"
    assert len(set(batches)) == 1, "every batch belongs to the one execution"
    detail = detail_json(ctx, "big")
    assert detail["state"] == "finished"
    assert detail["kpis"]["sent"] == N
    root.close()


def test_stop_before_anything_is_due_is_prompt(tmp_path: Path) -> None:
    settings = load_settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'greenlight.db'}",
        mail_url=f"maildir://{tmp_path / 'outbox'}",
        tracking_secret="process-test",
    )
    bootstrap(settings).close()  # migrated, as the server does before starting the child
    rounds = threading.Semaphore(0)
    runner = SendProcess(settings, sender_child, tick_seconds=3600)
    runner.on_round = rounds.release
    runner.start()
    assert rounds.acquire(timeout=60), "the sender's first round never ended"
    runner.kick()
    assert rounds.acquire(timeout=60), "a kick makes the idle sender run a round"
    asked = time.monotonic()
    runner.stop(timeout=30)
    assert time.monotonic() - asked < 10, "an idle sender stops at once, not at the timeout"
    assert not runner.is_alive()
    assert runner.rounds >= 1


class SlowRecorder:
    """An MTA that takes 20 ms per message: a send of 1,000 lasts seconds, not moments."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.02)
        with self.lock:
            self.received.append(envelope.rcpt_tos[0])
        return "250 2.0.0 queued"


def test_stop_ends_the_send_after_the_batch_in_flight_and_a_restart_resumes(
    tmp_path: Path,
) -> None:
    many, batch = 1000, 20
    recorder = SlowRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    settings = load_settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'greenlight.db'}",
        mail_url=f"smtp://127.0.0.1:{port}",
        tracking_secret="process-test",
        send_batch_size=batch,
        smtp_pool_size=2,
    )
    root = bootstrap(settings)
    ctx = root.context
    emails = [f"user{i}@x.example" for i in range(many)]
    prepare_one(ctx, tmp_path, emails, text="Hello {{ email }}")
    first_batch = threading.Event()
    runner = SendProcess(
        settings, sender_child, on_batch=lambda _: first_batch.set(), tick_seconds=None
    )
    try:
        runner.start()
        confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
        runner.kick()
        assert first_batch.wait(60), "no batch was ever recorded"
        runner.stop(timeout=30)
        assert not runner.is_alive()
        with ctx.sessions() as s:
            claimed = s.scalar(select(func.count()).where(SendingLog.claim_token.is_not(None)))
        stopped_at = len(recorder.received)
        assert claimed == 0, "the batch in flight was recorded before stopping"
        assert batch <= stopped_at < many, "the send stopped part way"
        assert detail_json(ctx, "big")["state"] == "in-progress"

        # The next start (here its due work run in the foreground) sends the rest.
        assert due_now(ctx).sent == {"big": "finished"}
    finally:
        controller.stop()
    assert sorted(recorder.received) == sorted(emails), "everybody exactly once"


def test_sigterm_to_the_process_group_stops_after_the_batch_in_flight(tmp_path: Path) -> None:
    """systemd's stop: SIGTERM to every process of `serve`, the sender child included.
    Before, the child died at once, leaving its batch claimed and resent at the restart."""
    many, batch = 400, 20
    recorder = SlowRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": f"sqlite:///{tmp_path / 'greenlight.db'}",
        "MAIL_URL": f"smtp://127.0.0.1:{port}",
        "TRACKING_SECRET": "process-test",
        "SEND_BATCH_SIZE": str(batch),
        "SMTP_POOL_SIZE": "2",
        "PORT": str(free_port()),
    }
    settings = load_settings(
        _env_file=None, **{k.lower(): v for k, v in env.items() if k != "PATH"}
    )
    root = bootstrap(settings)
    ctx = root.context
    emails = [f"user{i}@x.example" for i in range(many)]
    prepare_one(ctx, tmp_path, emails, text="Hello {{ email }}")
    confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"], env=env, cwd=tmp_path, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(recorder.received) < 2 * batch:  # polling a real process, not the clock
            assert time.monotonic() < deadline and server.poll() is None, "nothing was sent"
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(60) == 0
        with ctx.sessions() as s:
            claimed = s.scalar(select(func.count()).where(SendingLog.claim_token.is_not(None)))
        assert claimed == 0, "the batch in flight was recorded before the child ended"
        assert len(recorder.received) < many, "it stopped part way"
        assert due_now(ctx).sent == {"big": "finished"}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        controller.stop()
        root.close()
    assert sorted(recorder.received) == sorted(emails), "everybody exactly once"
