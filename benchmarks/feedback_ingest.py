"""Benchmark: feedback events posted to `serve`, and Compute stats over 1,000,000 logs.

Builds a fresh SQLite database in a temporary folder and seeds it in bulk:

* an EFS delivery with N sent logs (default 200,000), each waiting for its report;
* a second delivery of M logs (default 1,000,000; 85 % sent, 5 % failed, 10 %
  pending) with opens and clicks from a quarter of its recipients, for Compute stats.

Then it starts `python -m bot serve` on that database (a subprocess, as in
production), posts N generic events (one per log: 70 % delivered, 10 % opens, 5 %
clicks, 10 % soft bounces, 4 % hard bounces, 1 % complaints; a fifth matched by
Message-ID, the rest by log id) in signed batches of B (default 500) over one
keep-alive connection, and prints events per second. Goal: at least 5,000/s.

Compute stats (`views.compute_stats`) is then timed on the second
delivery. Goal: under 2 s.

The first tenth of the batches is then posted again, as a provider retrying would:
every event must come back a duplicate, and the time says what a retry costs.

References measured in the same run: parsing and checking the signatures of the
same request bodies without a server or database; a raw `sqlite3` `executemany`
UPDATE of the same rows' status on a copy of the database; a raw GROUP BY count of
the 1,000,000 logs.

    .venv/bin/python benchmarks/feedback_ingest.py [--events N] [--batch B] [--stats-logs M]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.bootstrap import bootstrap
from bot.config import load_settings
from bot.domain.roles import COMMAND_LINE
from bot.engine.message import MessageSkeleton
from bot.engine.tokens import TokenSigner
from bot.feedback import generic
from bot.services.deliveries.views import compute_stats
from bot.store.counters import live_counters, recount
from bot.store.models import Audience, Delivery, Execution

ROOT = Path(__file__).resolve().parents[1]
SECRET = "benchmark-feedback-secret"
TRACKING = "benchmark-tracking-secret"
SENDER = "news@shop.example"


def stamp(moment: datetime) -> str:
    """How SQLAlchemy stores an aware datetime on SQLite: naive UTC, microseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def settings_env(folder: Path, port: int) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{folder / 'greenlight.db'}",
        "MAIL_URL": f"maildir://{folder / 'outbox'}",
        "FEEDBACK_SECRET": SECRET,
        "TRACKING_SECRET": TRACKING,
        "PUBLIC_BASE_URL": "http://127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }


def seed(folder: Path, events: int, stats_logs: int, now: datetime) -> list[str]:
    """The two deliveries, in bulk; returns the Message-IDs of the feedback delivery."""
    env = settings_env(folder, 3000)
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    root = bootstrap(settings)
    ctx = root.context  # migrates the fresh database
    far = now + timedelta(days=30)
    with ctx.sessions.begin() as s:
        audience = Audience(name="everyone", created_at=now, updated_at=now)
        s.add(audience)
        s.flush()
        ids = []
        for ref, efs, logs in (("feedback", True, events), ("stats", False, stats_logs)):
            delivery = Delivery(
                ref=ref, name=ref.title(), audience_id=audience.id, sender=SENDER,
                subject="Spring", text="Hello", validity_seconds=30 * 86400, efs=efs,
                state="finished", definition_hash="0" * 64, targeted=logs, to_deliver=logs,
                started_at=now, finished_at=now, created_at=now, updated_at=now,
            )  # fmt: skip
            s.add(delivery)
            s.flush()
            execution = Execution(
                delivery_id=delivery.id, key="main", state="finished", started_at=now,
                finished_at=now, validity_ends_at=far, created_at=now,
            )  # fmt: skip
            s.add(execution)
            s.flush()
            ids.append(execution.id)
    root.close()
    feedback_execution, stats_execution = ids

    skeleton = MessageSkeleton(
        sender=SENDER, reply_to=None, delivery_ref="feedback",
        public_base_url="http://127.0.0.1", signer=TokenSigner(TRACKING),
    )  # fmt: skip
    at = stamp(now)
    conn = sqlite3.connect(folder / "greenlight.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    profiles = max(events, stats_logs)
    message_ids = [skeleton.message_id(i) for i in range(1, events + 1)]
    with conn:
        conn.executemany(
            "INSERT INTO profiles (id, email, email_key, attributes, email_status, error_count, "
            "created_at, updated_at) VALUES (?, ?, ?, '{}', 'valid', 0, ?, ?)",
            ((i, f"user{i}@example.com", f"user{i}@example.com", at, at)
             for i in range(1, profiles + 1)),
        )  # fmt: skip
        log_columns = (
            "INSERT INTO sending_logs (id, execution_id, profile_id, email, status, final, "
            "retry_count, message_id, relayed_at, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?)"
        )
        conn.executemany(
            log_columns,
            ((i, feedback_execution, i, f"user{i}@example.com", "pending", message_ids[i - 1],
              at, at, at) for i in range(1, events + 1)),
        )  # fmt: skip
        statuses = ["sent"] * 85 + ["failed"] * 5 + ["pending"] * 10
        conn.executemany(
            log_columns,
            ((events + p, stats_execution, p, f"user{p}@example.com", statuses[p % 100],
              f"<gl.{events + p}.00@shop.example>", at, at, at)
             for p in range(1, stats_logs + 1)),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO tracking_logs (execution_id, sending_log_id, profile_id, kind, "
            "occurred_at) VALUES (?, ?, ?, ?, ?)",
            ((stats_execution, events + p, p, "click" if p % 20 == 0 else "open", at)
             for p in range(1, stats_logs + 1) if p % 4 == 0),
        )  # fmt: skip
        by_status = {s: statuses.count(s) * stats_logs // 100 for s in ("sent", "failed")}
        conn.executemany(
            "INSERT INTO kpi_counters (execution_id, to_deliver, queued, pending, sent, failed, "
            "ignored, unique_opens, unique_clicks, rates_refreshed_at, updated_at) "
            "VALUES (?, ?, 0, ?, ?, ?, 0, 0, 0, ?, ?)",
            [
                (feedback_execution, events, events, 0, 0, at, at),
                (stats_execution, stats_logs, stats_logs - sum(by_status.values()),
                 by_status["sent"], by_status["failed"], at, at),
            ],
        )  # fmt: skip
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return message_ids


KIND_BY_PERCENT = (
    ["delivered"] * 70
    + ["open"] * 10
    + ["click"] * 5
    + ["soft_bounce"] * 10
    + ["hard_bounce"] * 4
    + ["complaint"]
)


def event(i: int, message_id: str, when: str) -> dict[str, Any]:
    """The generic event for log `i`, shaped as a relay's log reader would send it."""
    kind = KIND_BY_PERCENT[(i * 37) % 100]  # spread the kinds through the batches
    item: dict[str, Any] = {"id": f"mta-{i}", "type": kind, "occurred_at": when}
    if i % 5 == 0:
        item["message_id"] = message_id
    else:
        item["log_id"] = i
    item["recipient"] = f"user{i}@example.com"
    if kind == "hard_bounce":
        item.update(smtp_status="5.1.1", diagnostic="550 5.1.1 <user@example.com>: User unknown")
    elif kind == "soft_bounce":
        item.update(smtp_status="4.2.2", diagnostic="452 4.2.2 Mailbox full")
    elif kind == "click":
        item.update(url="https://shop.example/spring?utm=mail", user_agent="Mozilla/5.0")
    elif kind == "open":
        item["user_agent"] = "Mozilla/5.0"
    return item


def bodies(message_ids: list[str], batch: int, now: datetime) -> list[bytes]:
    when = now.isoformat()
    items = [event(i, mid, when) for i, mid in enumerate(message_ids, start=1)]
    return [
        json.dumps(items[k : k + batch], separators=(",", ":")).encode()
        for k in range(0, len(items), batch)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(folder, port), "PYTHONPATH": str(ROOT)}
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"], cwd=folder, env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.2)  # waiting for a process to listen, not for time to pass
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"serve did not start; see {folder / 'serve.log'}")


def post_all(port: int, payloads: list[bytes]) -> tuple[float, dict[str, int]]:
    signed = [(body, generic.sign(body, SECRET)) for body in payloads]  # the sender's cost
    totals = {"received": 0, "applied": 0, "duplicates": 0, "unmatched": 0}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    for body, signature in signed:
        conn.request(
            "POST",
            "/feedback/generic",
            body=body,
            headers={"X-Greenlight-Signature": signature, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 200:
            raise SystemExit(f"POST answered {resp.status}: {answer[:300]!r}")
        for key, value in json.loads(answer).items():
            totals[key] += value
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, totals


def parse_only(payloads: list[bytes]) -> float:
    signed = [(body, generic.sign(body, SECRET)) for body in payloads]
    start = time.perf_counter()
    for body, signature in signed:
        generic.verify_and_parse(body, signature, SECRET)
    return time.perf_counter() - start


def raw_update(database: Path, events: int, now: datetime) -> float:
    """The floor: one executemany UPDATE of the same rows' status, in one transaction."""
    at = stamp(now)
    rows = []
    for i in range(1, events + 1):
        kind = KIND_BY_PERCENT[(i * 37) % 100]
        status = {"delivered": "sent", "hard_bounce": "failed", "soft_bounce": "failed"}.get(kind)
        if status:
            rows.append((status, at, i))
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    with conn:
        conn.executemany(
            "UPDATE sending_logs SET status = ?, updated_at = ?, event_at = ? WHERE id = ?",
            ((status, at, at, i) for status, at, i in rows),
        )
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def raw_group_by(database: Path, execution_id: int) -> float:
    conn = sqlite3.connect(database)
    start = time.perf_counter()
    conn.execute(
        "SELECT status, count(*) FROM sending_logs WHERE execution_id = ? GROUP BY status",
        (execution_id,),
    ).fetchall()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--stats-logs", type=int, default=1_000_000)
    args = parser.parse_args()
    now = datetime.now(UTC)
    print(
        f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {args.events:,} events in batches of {args.batch}, "
        f"Compute stats over {args.stats_logs:,} logs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        message_ids = seed(folder, args.events, args.stats_logs, now)
        shutil.copy(folder / "greenlight.db", folder / "reference.db")
        payloads = bodies(message_ids, args.batch, now)
        print(f"seeded in {time.perf_counter() - start:.1f} s")

        port = free_port()
        serve = start_serve(folder, port)
        try:
            elapsed, totals = post_all(port, payloads)
            replay = payloads[: max(1, len(payloads) // 10)]  # a provider retrying
            replayed, again = post_all(port, replay)
        finally:
            serve.terminate()
            serve.wait(30)
        rate = args.events / elapsed
        print(
            f"POST /feedback/generic to serve   {elapsed:7.2f} s  {rate:9,.0f} events/s  "
            f"(goal ≥ 5,000/s)  {totals}"
        )
        if totals["applied"] != args.events or totals["unmatched"]:
            raise SystemExit(f"not every event was applied once: {totals}")
        n = again["received"]
        print(
            f"  the first {n:,} again (retries)  {replayed:7.2f} s  {n / replayed:9,.0f} events/s  "
            f"{again}"
        )
        if again["applied"] or again["duplicates"] != n:
            raise SystemExit(f"a retry must change nothing: {again}")
        parsed = parse_only(payloads)
        print(
            f"  reference: signature + parsing   {parsed:7.2f} s  "
            f"{args.events / parsed:9,.0f} events/s  (no server, no database)"
        )
        floor = raw_update(folder / "reference.db", args.events, now)
        print(
            f"  reference: raw executemany UPDATE {floor:6.2f} s  "
            f"{args.events / floor:9,.0f} events/s  (same rows, one transaction)"
        )

        env = settings_env(folder, 3000)
        settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
        root = bootstrap(settings, migrate=False)
        ctx = root.context
        with ctx.sessions() as s:
            live, fresh = live_counters(s, 1), recount(s, 1)
        # Opens and clicks are hourly; the status counters move with every event.
        if (live.pending, live.sent, live.failed) != (fresh.pending, fresh.sent, fresh.failed):
            raise SystemExit(f"the live counters differ from a recount: {live} != {fresh}")
        start = time.perf_counter()
        detail = compute_stats(ctx, COMMAND_LINE, "stats").to_json()
        stats = time.perf_counter() - start
        root.close()
        k = detail["kpis"]
        print(
            f"Compute stats, {args.stats_logs:,} logs       {stats:7.2f} s  (goal < 2 s)  "
            f"delivered {k['delivered_pct']} %, open rate {k['open_rate']} %"
        )
        group_by = raw_group_by(folder / "greenlight.db", 2)
        print(f"  reference: raw GROUP BY status    {group_by:7.2f} s")


if __name__ == "__main__":
    main()
