"""The PostgreSQL mode: `python -m bot worker` processes share the sending of a delivery.

Real worker processes (the command a user runs) against the test's PostgreSQL and an
SMTP relay on loopback. The test waits for what the processes do (a delivery finished,
a job taken over), never for time to pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from scenario import as_user, detail_json, prepare_one, settings_for
from smtp_relay import Relay, free_port
from sqlalchemy import Engine, func, select, text

from bot.bootstrap import Root, bootstrap
from bot.domain.roles import Role
from bot.jobs.queue import ServerQueue
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import AuditEntry, GuardAlert, SendingLog

PG_ENV = "GREENLIGHT_TEST_POSTGRES_URL"


class Recording:
    """An MTA that takes `delay` seconds per message and notes when each one came."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.received.append((time.monotonic(), envelope.rcpt_tos[0]))
        return "250 2.0.0 queued"

    def rcpts(self) -> list[str]:
        with self.lock:
            return [r for _, r in self.received]


@pytest.fixture
def relay_factory() -> Iterator[Callable[[float], tuple[Recording, int]]]:
    controllers: list[Controller] = []

    def make(delay: float = 0.0) -> tuple[Recording, int]:
        recording, port = Recording(delay), free_port()
        controller = Controller(recording, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return recording, port

    yield make
    for controller in controllers:
        controller.stop()


@pytest.fixture
def pg(postgres_engine: Engine, tmp_path: Path) -> Iterator[Callable[..., Root]]:
    """A root on the test PostgreSQL with these settings (the tables emptied)."""
    roots: list[Root] = []

    def make(**overrides: Any) -> Root:
        names = ", ".join(
            ["procrastinate_jobs", "procrastinate_periodic_defers", "procrastinate_workers"]
        )
        with postgres_engine.begin() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            ours = [t for t in tables if t != "alembic_version" and not t.startswith("procr")]
            conn.execute(text(f"TRUNCATE {', '.join(ours)}, {names} RESTART IDENTITY CASCADE"))
        settings = settings_for(tmp_path, database_url=os.environ[PG_ENV], **overrides)
        root = bootstrap(settings, migrate=False, engine=postgres_engine)
        roots.append(root)
        return root

    yield make


class Workers:
    """`python -m bot worker` processes, each in its own session (signals to it alone)."""

    def __init__(self, root: Root, tmp_path: Path) -> None:
        s = root.settings
        self.env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": s.database_url,
            "MAIL_URL": s.mail_url,
            "TRACKING_SECRET": s.tracking_secret.get_secret_value() if s.tracking_secret else "",
            "SEND_BATCH_SIZE": str(s.send_batch_size),
            "SMTP_POOL_SIZE": str(s.smtp_pool_size),
            "SEND_RATE_LIMIT": str(s.send_rate_limit),
            "STALL_TIMEOUT_SECONDS": str(s.stall_timeout_seconds),
            "SEND_PARALLELISM": str(s.send_parallelism),
            "LOG_LEVEL": "INFO",
        }
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", "--concurrency", str(concurrency)],
            env=self.env,
            cwd=self.tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, n: int) -> str:
        return (self.tmp_path / f"worker-{n}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers_of(tmp_path: Path) -> Iterator[Callable[[Root], Workers]]:
    made: list[Workers] = []

    def make(root: Root) -> Workers:
        made.append(Workers(root, tmp_path))
        return made[-1]

    yield make
    for workers in made:
        workers.stop()


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 90) -> None:
    """Until the processes under test have done something (polled, not slept through)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def start_send(root: Root, tmp_path: Path, n: int) -> list[str]:
    emails = [f"user{i}@x.example" for i in range(n)]
    prepare_one(root.context, tmp_path, emails, text="Hello {{ email }}")
    confirm_send(root.context, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
    ServerQueue(root.settings).kick()  # what `serve` does at the confirm
    return emails


def finished(root: Root) -> bool:
    return detail_json(root.context, "big")["state"] == "finished"


def claims(root: Root) -> int:
    with root.context.sessions() as s:
        return s.scalar(select(func.count()).where(SendingLog.claim_token.is_not(None))) or 0


def test_two_workers_send_one_delivery_each_recipient_once(
    pg: Callable[..., Root],
    relay_factory: Callable[[float], tuple[Recording, int]],
    workers_of: Callable[[Root], Workers],
    tmp_path: Path,
) -> None:
    relay, port = relay_factory(0.0)
    root = pg(mail_url=f"smtp://127.0.0.1:{port}", send_batch_size=100, smtp_pool_size=2)
    workers = workers_of(root)
    workers.start()
    workers.start()
    emails = start_send(root, tmp_path, 1_500)
    wait_until("the delivery finished", lambda: finished(root))
    assert sorted(relay.rcpts()) == sorted(emails), "every recipient exactly once"
    detail = detail_json(root.context, "big")
    assert detail["kpis"]["sent"] == 1_500 and claims(root) == 0
    both = [workers.log(0), workers.log(1)]
    assert all("greenlight:send" in log for log in both), "both workers sent"


def test_a_stopped_worker_is_taken_over_and_when_it_wakes_it_sends_nothing_more(
    pg: Callable[..., Root],
    relay_factory: Callable[[float], tuple[Recording, int]],
    workers_of: Callable[[Root], Workers],
    tmp_path: Path,
) -> None:
    """SIGSTOP a worker mid-send past the stall timeout: its jobs run again on another
    worker, which sends the rest; SIGCONT it: its fence finds its attempt superseded and
    it stops before another message."""
    relay, port = relay_factory(0.01)
    root = pg(
        mail_url=f"smtp://127.0.0.1:{port}",
        send_batch_size=50,
        smtp_pool_size=2,
        stall_timeout_seconds=3,
        send_parallelism=2,
    )
    workers = workers_of(root)
    stalled = workers.start(concurrency=2)  # takes both slots of the execution
    emails = start_send(root, tmp_path, 1_200)
    wait_until("the first worker sends", lambda: len(relay.rcpts()) >= 150)
    os.kill(stalled.pid, signal.SIGSTOP)
    at_stop = len(relay.rcpts())
    workers.start(concurrency=2)
    wait_until("its jobs were taken over", lambda: _taken_over(root) >= 1, timeout=60)
    wait_until("the other worker sends", lambda: len(relay.rcpts()) >= at_stop + 100)
    os.kill(stalled.pid, signal.SIGCONT)
    wait_until("the delivery finished", lambda: finished(root))
    received = relay.rcpts()
    assert sorted(set(received)) == sorted(emails), "nobody lost"
    duplicates = len(received) - len(set(received))
    # What the stopped worker had relayed and not yet recorded when it stopped: its
    # connections' messages in flight and the answers of one write, per job (2 jobs,
    # 2 connections each; the writes hold a few answers at this pace).
    assert duplicates <= 2 * (2 + 8), duplicates
    assert "was taken over; this sender stops" in workers.log(0)
    assert claims(root) == 0


def _taken_over(root: Root) -> int:
    """Send jobs the recovery ended (their worker stalled)."""
    query = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed' AND task_name = :t"
    with root.context.sessions() as s:
        return s.scalar(text(query), {"t": "greenlight:send"}) or 0


def test_the_rate_limit_holds_for_three_workers_together(
    pg: Callable[..., Root],
    relay_factory: Callable[[float], tuple[Recording, int]],
    workers_of: Callable[[Root], Workers],
    tmp_path: Path,
) -> None:
    relay, port = relay_factory(0.0)
    rate = 40.0
    root = pg(
        mail_url=f"smtp://127.0.0.1:{port}",
        send_batch_size=20,
        smtp_pool_size=2,
        send_rate_limit=rate,
        send_parallelism=6,
    )
    workers = workers_of(root)
    for _ in range(3):
        workers.start(concurrency=2)
    start_send(root, tmp_path, 240)
    wait_until("the delivery finished", lambda: finished(root), timeout=120)
    times = sorted(t for t, _ in relay.received)
    senders = {line.split("[")[0] for n in range(3) for line in workers.log(n).splitlines()}
    assert senders, "the workers logged"
    # Any 2-second window grants at most the rate's worth, plus the bucket's capacity and
    # the chunk each worker may hold (store.rate, engine.rate_limit). The relay sees when
    # messages arrive, not when they were granted: a window can also hold the messages
    # granted before it and still on their way, at most one per SMTP connection (six
    # send jobs of two connections each), when a loaded machine delays them.
    granted = 2 * rate + rate / 10 + 3 * (rate / 20)
    in_flight = 6 * 2
    bound = granted + in_flight
    busiest = max(sum(1 for u in times if t <= u < t + 2) for t in times)
    assert busiest <= bound, (busiest, bound)
    assert times[-1] - times[0] >= (240 - bound) / rate
    sent_by = [workers.log(n).count("greenlight:send") for n in range(3)]
    assert sum(1 for n in sent_by if n) >= 2, f"the sending was shared: {sent_by}"


def test_a_worker_whose_registration_was_pruned_starts_again_and_sends(
    pg: Callable[..., Root],
    relay_factory: Callable[[float], tuple[Recording, int]],
    workers_of: Callable[[Root], Workers],
    tmp_path: Path,
) -> None:
    """Another worker's start prunes the rows of workers with a stale heartbeat; one that
    was only stalled then fails every fetch (its row is gone). It starts again,
    registered anew, instead of living on without working."""
    relay, port = relay_factory(0.0)
    root = pg(mail_url=f"smtp://127.0.0.1:{port}", send_batch_size=50)
    workers = workers_of(root)
    workers.start()
    wait_until("the worker registered", lambda: _registered(root) == 2)
    with root.context.sessions.begin() as s:
        s.execute(text("DELETE FROM procrastinate_workers"))  # what the pruning does
    emails = start_send(root, tmp_path, 200)
    wait_until("the delivery finished", lambda: finished(root))
    assert sorted(relay.rcpts()) == sorted(emails)
    assert "the worker stopped on an error; it starts again" in workers.log(0)
    assert _registered(root) == 2, "registered anew: a send and a control worker"


def _registered(root: Root) -> int:
    with root.context.sessions() as s:
        return s.scalar(text("SELECT count(*) FROM procrastinate_workers")) or 0


def test_workers_sending_one_delivery_are_paused_once_by_the_send_guard(
    pg: Callable[..., Root], workers_of: Callable[[Root], Workers], tmp_path: Path
) -> None:
    """Four send slots over two workers: the guard pauses the delivery once, each slot
    stops after its batch in flight, and every recipient is sent once or still queued."""
    relay = Relay()
    relay.start()
    try:
        root = pg(mail_url=f"smtp://127.0.0.1:{relay.port}", send_batch_size=50, smtp_pool_size=2)
        workers = workers_of(root)
        workers.start()
        workers.start()
        emails = [
            f"hard{i}@stale.example" if i % 10 == 0 else f"u{i}@x.example" for i in range(3000)
        ]
        prepare_one(root.context, tmp_path, emails)
        confirm_send(root.context, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
        ServerQueue(root.settings).kick()

        def settled() -> bool:
            if detail_json(root.context, "big")["state"] != "paused" or claims(root):
                return False
            with root.context.sessions() as s:
                sending = text(
                    "SELECT count(*) FROM procrastinate_jobs"
                    " WHERE status = 'doing' AND task_name = 'greenlight:send'"
                )
                return not s.scalar(sending)

        wait_until("the guard paused the delivery and every slot stopped", settled)
        with root.context.sessions() as s:
            pauses = s.scalars(select(AuditEntry.action).where(AuditEntry.actor == "guard"))
            actions = list(pauses)
            alerts = s.scalar(select(func.count()).select_from(GuardAlert))
            logs = s.execute(select(SendingLog.email, SendingLog.status)).all()
        assert actions == ["delivery.pause"] and alerts == 1
        done = {e for e, st in logs if st.value != "queued"}
        assert 200 <= len(done) < 3000, "paused soon after the threshold, the rest queued"
        got = relay.recorder.by_rcpt()
        assert all(len(v) == 1 for v in got.values()), "nobody sent twice"
        assert set(got) == {e for e in done if not e.startswith("hard")}
    finally:
        relay.stop()
