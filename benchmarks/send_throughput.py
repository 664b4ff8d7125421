"""Benchmark: the sending engine end to end against Postfix's `smtp-sink` on loopback.

In one run, against one `smtp-sink` started for the run on a free loopback port:

* reference A: Postfix's `smtp-source` (C, 16 parallel sessions, connections reused),
  the raw SMTP limit of this machine for messages of the engine's size;
* reference B: a naive `smtplib` loop, one new connection per message;
* the engine: for each size, a fresh SQLite database is seeded with N valid profiles
  in one audience and a delivery with a ~2.2 KB HTML template (variables, a loop,
  six links), prepared and confirmed through the real ctx; then
  `Sender(ctx, make_transport(settings)).run(execution_id)` is timed: claims,
  profile reads, sandboxed rendering, signed links, MIME assembly, the SMTP pool and
  the batched database records are all inside the figure. The KPIs must show
  sent == N afterwards, and the sink must have counted N more messages.

Seeding and preparing run in one child process and sending in another, so the peak
RSS printed is the sender's own (its process's `ru_maxrss`), not the seed's.

    .venv/bin/python benchmarks/send_throughput.py [--sizes 100000,300000] [--quick]

Needs `smtp-sink` and `smtp-source` (Debian: the `postfix` package, in /usr/sbin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.bootstrap import bootstrap
from bot.config import Settings, load_settings
from bot.context import Context
from bot.domain.roles import COMMAND_LINE, Actor, Role
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import MessageTemplates, profile_context
from bot.engine.sender import Sender
from bot.engine.transports import make_transport
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.deliveries.views import delivery_detail
from bot.store.models import Audience, AudienceMember, Delivery, Execution, Profile

REF = "send-bench"
SENDER = "Example Outdoor <news@example.com>"
MAIL_FROM = "news@example.com"
SOURCE_SESSIONS = 16
RSS_LIMIT_MB = 300
RSS_SPREAD = 0.20
GOAL_RATE = 1_000
CHUNK = 10_000
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Lisbon", "Rome", "Oslo", "Dublin"]
PLANS = ["free", "pro", "team", "enterprise"]
PRODUCTS = ["Trail shoes", "Rain jacket", "Daypack", "Headlamp", "Water filter", "Tent"]

SUBJECT = "{{ first_name }}, your {{ plan }} picks for the spring sale"

TEXT = """Hello {{ first_name }} {{ last_name }},

Spring is here in {{ city }}. As a {{ plan }} member you have {{ points }} points.
{% for item in products %}
- {{ item }}
{% endfor %}
Shop the sale: https://shop.example.com/sale
"""

HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ delivery.name }}</title>
<style>
  body { margin: 0; padding: 0; background: #f4f4f7; font-family: Helvetica, Arial, sans-serif; }
  .wrap { max-width: 600px; margin: 0 auto; background: #ffffff; }
  .hero { padding: 32px 24px; background: #0b6e4f; color: #ffffff; }
  .body { padding: 24px; color: #333333; font-size: 16px; line-height: 24px; }
  .item { padding: 12px 0; border-bottom: 1px solid #eeeeee; }
  .cta { display: inline-block; padding: 12px 20px; background: #0b6e4f; color: #ffffff; }
  .foot { padding: 24px; color: #888888; font-size: 12px; line-height: 18px; }
</style>
</head>
<body>
<table class="wrap" role="presentation" width="100%" cellpadding="0" cellspacing="0">
  <tr>
    <td class="hero">
      <h1>Hello {{ first_name }}, spring is here in {{ city }}</h1>
      <p>Our spring sale starts on Monday. Here is what we picked for you.</p>
    </td>
  </tr>
  <tr>
    <td class="body">
      <p>Dear {{ first_name }} {{ last_name }},</p>
      <p>As a <strong>{{ plan | title }}</strong> member you have collected
         <strong>{{ points }}</strong> points so far. Spend them before the end of
         the month and get up to 30 % off the items below.</p>
      <table role="presentation" width="100%" cellpadding="0" cellspacing="0">
        {% for item in products %}
        <tr>
          <td class="item">
            <strong>{{ loop.index }}. {{ item }}</strong><br>
            <a href="https://shop.example.com/p/{{ item | lower | replace(' ', '-') }}">
              See the {{ item | lower }}</a>
          </td>
        </tr>
        {% endfor %}
      </table>
      <p style="margin-top: 24px;">
        <a class="cta" href="https://shop.example.com/sale?plan={{ plan }}">Shop the sale</a>
      </p>
      <p>See you soon,<br>The Example Outdoor team</p>
    </td>
  </tr>
  <tr>
    <td class="foot">
      You receive this message because {{ email }} subscribed to our newsletter.
      <a href="https://example.com/prefs">Preferences</a> ·
      <a href="https://example.com/help">Help</a> ·
      Example Outdoor, 1 rue de l'Exemple, 75001 Paris, France.
    </td>
  </tr>
</table>
</body>
</html>
"""


# -- the database: seed, prepare, confirm (child process "prepare") ---------------------


def _settings(db: Path, port: int = 25, pool: int = 16, batch: int = 500) -> Settings:
    return load_settings(
        _env_file=None,
        database_url=f"sqlite:///{db}",
        mail_url=f"smtp://127.0.0.1:{port}",
        tracking_secret="bench",
        public_base_url="https://mail.example.com",
        smtp_pool_size=pool,
        send_batch_size=batch,
    )


def _attributes(i: int) -> dict[str, Any]:
    return {
        "plan": PLANS[i % len(PLANS)],
        "points": (i * 37) % 5000,
        "city": CITIES[i % len(CITIES)],
        "products": [PRODUCTS[(i + k) % len(PRODUCTS)] for k in range(3)],
    }


def _profile_chunks(n: int, now: datetime) -> Iterator[list[dict[str, Any]]]:
    """N valid, distinct profiles in chunks, so 300,000 are never all in memory."""
    for start in range(1, n + 1, CHUNK):
        yield [
            {
                "id": i,
                "email": f"user.{i}@example{i % 97}.com",
                "email_key": f"user.{i}@example{i % 97}.com",
                "first_name": f"Ann{i}",
                "last_name": f"Smith{i}",
                "timezone": "Europe/Paris",
                "attributes": _attributes(i),
                "email_status": "valid",
                "error_count": 0,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(n, start + CHUNK - 1) + 1)
        ]


def _seed(ctx: Context, n: int) -> None:
    """Bulk inserts, as benchmarks/prepare.py: the import's checks are not measured here."""
    now = datetime.now(UTC)
    with ctx.sessions.begin() as s:
        s.add(Audience(id=1, name="everyone", version=1, created_at=now, updated_at=now))
        s.flush()
        for rows in _profile_chunks(n, now):
            s.execute(insert(Profile), rows)
            s.execute(
                insert(AudienceMember), [{"audience_id": 1, "profile_id": r["id"]} for r in rows]
            )
        s.add(
            Delivery(
                ref=REF,
                name="Spring sale",
                audience_id=1,
                sender=SENDER,
                subject=SUBJECT,
                html=HTML,
                text=TEXT,
                validity_seconds=302_400,
                definition_hash="bench",
                created_at=now,
                updated_at=now,
            )
        )


def phase_prepare(db: Path, n: int) -> dict[str, Any]:
    """Seed, prepare and confirm (on-confirm: the delivery starts at once)."""
    root = bootstrap(_settings(db))
    ctx = root.context
    started = time.perf_counter()
    _seed(ctx, n)
    seeded = time.perf_counter()
    result = prepare_delivery(ctx, COMMAND_LINE, REF)
    prepared = time.perf_counter()
    confirm_send(ctx, Actor("U0BENCH", frozenset({Role.START_DELIVERIES})), REF)
    with ctx.sessions() as s:
        execution_id = s.scalar(
            select(Execution.id)
            .join(Delivery, Delivery.id == Execution.delivery_id)
            .where(Delivery.ref == REF, Execution.key == "main")
        )
    root.close()
    return {
        "seed_s": seeded - started,
        "prepare_s": prepared - seeded,
        "to_deliver": result.to_deliver,
        "execution_id": execution_id,
    }


# -- the send (child process "send") -----------------------------------------------------


def _rss_mb() -> float:
    """This process's peak resident set so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_send(
    db: Path, port: int, pool: int, batch: int, execution_id: int, profile: Path | None
) -> dict[str, Any]:
    """Time the real sender on a prepared, confirmed delivery; then check the KPIs."""
    settings = _settings(db, port, pool, batch)
    root = bootstrap(settings)
    ctx = root.context
    transport = make_transport(settings)

    async def go() -> str:
        try:
            return (await Sender(ctx, transport).run(execution_id)).value
        finally:
            await transport.close()

    rss_before = _rss_mb()
    cpu_before = _cpu_s()
    started = time.perf_counter()
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        state = profiler.runcall(asyncio.run, go())
        profiler.dump_stats(profile)
    else:
        state = asyncio.run(go())
    elapsed = time.perf_counter() - started
    cpu = _cpu_s() - cpu_before
    rss_peak = _rss_mb()  # read before the checks below, which load nothing large anyway
    detail = delivery_detail(ctx, COMMAND_LINE, REF).to_json()
    root.close()
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "state": state,
        "delivery_state": detail["state"],
        "kpi_sent": detail["kpis"]["sent"],
        "logs": detail["logs"],
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_peak,
    }


# -- references and the sink (parent process) --------------------------------------------


@dataclass
class Sink:
    """`smtp-sink` on a free loopback port; `-c` counters let us count what it took."""

    process: subprocess.Popen[bytes]
    port: int
    counters: Path

    @classmethod
    def start(cls, folder: Path) -> Sink:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        counters = folder / "sink-counters.txt"
        with counters.open("wb") as out:
            # As root smtp-sink insists on dropping privileges (-u); 1000 is the backlog.
            process = subprocess.Popen(
                [_tool("smtp-sink"), "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        sink = cls(process, port, counters)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"smtp-sink exited at once:\n{counters.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return sink
            except OSError:
                time.sleep(0.05)
        sink.stop()
        raise SystemExit(f"smtp-sink does not answer on 127.0.0.1:{port}")

    def messages(self) -> int:
        """Messages the sink has taken so far: the last `mesg=` of its running counter."""
        with self.counters.open("rb") as f:
            f.seek(max(0, self.counters.stat().st_size - 400))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def wait_for(self, count: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while (seen := self.messages()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _tool(name: str) -> str:
    """Postfix's test tools live in /usr/sbin, which is not on every user's PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin") or name


def _require_postfix_tools() -> None:
    missing = [n for n in ("smtp-sink", "smtp-source") if shutil.which(n) is None]
    missing = [n for n in missing if shutil.which(n, path="/usr/sbin") is None]
    if missing:
        print(
            f"{' and '.join(missing)} not found. They come with Postfix; on Debian/Ubuntu:\n"
            "  sudo apt-get update && "
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n"
            "(the tools land in /usr/sbin; the Postfix service need not run)",
            file=sys.stderr,
        )
        raise SystemExit(2)


def engine_message() -> bytes:
    """One message as the engine builds it, to size the references' messages alike."""
    settings = load_settings(
        _env_file=None, tracking_secret="bench", public_base_url="https://mail.example.com"
    )

    @dataclass
    class About:
        sender: str = SENDER
        reply_to: str | None = None
        ref: str = REF

    i = 12_345
    email = f"user.{i}@example{i % 97}.com"
    context = profile_context(
        email=email,
        first_name=f"Ann{i}",
        last_name=f"Smith{i}",
        timezone="Europe/Paris",
        attributes=_attributes(i),
        delivery={"ref": REF, "name": "Spring sale"},
    )
    rendered = MessageTemplates(SUBJECT, HTML, TEXT).render(context)
    return MessageSkeleton.for_delivery(About(), settings).build(i, email, rendered)


def reference_source(sink: Sink, count: int, size: int) -> float:
    """smtp-source: 16 sessions, connections reused (-d); returns msg/s."""
    before = sink.messages()
    command = [
        _tool("smtp-source"),
        "-d",
        "-s",
        str(SOURCE_SESSIONS),
        "-l",
        str(size),
        "-m",
        str(count),
        "-M",
        "bench.example",
        "-f",
        MAIL_FROM,
        "-t",
        "someone@example.org",
        f"127.0.0.1:{sink.port}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    elapsed = time.perf_counter() - started
    taken = sink.wait_for(before + count) - before
    if taken != count:
        raise SystemExit(f"smtp-source: the sink counted {taken:,} messages, not {count:,}")
    return count / elapsed


def reference_naive(sink: Sink, count: int, message: bytes) -> float:
    """smtplib, a new connection (connect, EHLO, MAIL, RCPT, DATA, QUIT) per message."""
    before = sink.messages()
    started = time.perf_counter()
    for i in range(count):
        # local_hostname given: otherwise smtplib asks DNS for our name on every connection.
        with smtplib.SMTP("127.0.0.1", sink.port, local_hostname="bench.example") as smtp:
            smtp.sendmail(MAIL_FROM, [f"user.{i}@example.org"], message)
    elapsed = time.perf_counter() - started
    taken = sink.wait_for(before + count) - before
    if taken != count:
        raise SystemExit(f"naive loop: the sink counted {taken:,} messages, not {count:,}")
    return count / elapsed


def _child(*args: str) -> dict[str, Any]:
    """Run a phase of this script in a fresh process; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class EngineRun:
    size: int
    prepared: dict[str, Any]
    sent: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.size / self.sent["elapsed_s"]


def engine_run(sink: Sink, folder: Path, n: int, args: argparse.Namespace) -> EngineRun:
    db = folder / f"send-{n}.db"
    print(f"\n[engine, {n:,} recipients] seeding and preparing in a child process …")
    prepared = _child("--phase", "prepare", "--db", str(db), "--n", str(n))
    print(
        f"  seed {prepared['seed_s']:.1f} s, prepare {prepared['prepare_s']:.1f} s, "
        f"to deliver {prepared['to_deliver']:,}"
    )
    if prepared["to_deliver"] != n:
        raise SystemExit(f"expected {n:,} recipients to deliver, got {prepared['to_deliver']:,}")
    before = sink.messages()
    print(f"  sending through smtp-sink (pool {args.pool}, batch {args.batch}) …")
    phase = ["--phase", "send", "--db", str(db), "--port", str(sink.port)]
    phase += ["--pool", str(args.pool), "--batch", str(args.batch)]
    phase += ["--execution", str(prepared["execution_id"])]
    if args.profile:
        phase += ["--profile", f"{args.profile}.{n}"]
    sent = _child(*phase)
    taken = sink.wait_for(before + n) - before
    run = EngineRun(n, prepared, sent)
    print(
        f"  {n:,} messages in {sent['elapsed_s']:.1f} s: {run.rate:,.0f} msg/s "
        f"(the sender on CPU {sent['cpu_s'] / sent['elapsed_s']:.0%} of the time)"
    )
    print(
        f"  sender's peak RSS {sent['rss_peak_mb']:.0f} MB "
        f"({sent['rss_before_mb']:.0f} MB before sending)"
    )
    print(
        f"  check: state {sent['delivery_state']}, KPI sent {sent['kpi_sent']:,}, "
        f"logs {sent['logs']}, the sink counted {taken:,}"
    )
    if sent["kpi_sent"] != n or taken != n or sent["delivery_state"] != "finished":
        raise SystemExit("the engine did not relay every recipient exactly once")
    if not args.keep:
        db.unlink()
    return run


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000", help="recipients per engine run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 and 15,000")
    parser.add_argument("--pool", type=int, default=16, help="SMTP_POOL_SIZE")
    parser.add_argument("--batch", type=int, default=500, help="SEND_BATCH_SIZE")
    parser.add_argument("--source-messages", type=int, default=100_000)
    parser.add_argument("--naive-messages", type=int, default=5_000)
    parser.add_argument("--profile", help="write cProfile stats of each send to PATH.N")
    parser.add_argument("--keep", action="store_true", help="keep the databases (in --tmp)")
    parser.add_argument("--tmp", help="folder for the databases (default: a temporary one)")
    # Internal: the phases run in child processes.
    parser.add_argument("--phase", choices=["prepare", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--execution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "prepare":
        print(json.dumps(phase_prepare(args.db, args.n)))
        return
    if args.phase == "send":
        profile = Path(args.profile) if args.profile else None
        result = phase_send(args.db, args.port, args.pool, args.batch, args.execution, profile)
        print(json.dumps(result))
        return

    _require_postfix_tools()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        sizes, args.source_messages, args.naive_messages = [5_000, 15_000], 20_000, 2_000

    message = engine_message()
    print(
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"engine message: {len(message):,} bytes (HTML template {len(HTML.encode()):,} bytes)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.tmp) if args.tmp else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sink = Sink.start(Path(tmp))
        try:
            print(f"smtp-sink on 127.0.0.1:{sink.port}")
            print(f"\n[A] smtp-source, {SOURCE_SESSIONS} sessions, {args.source_messages:,} …")
            source = reference_source(sink, args.source_messages, len(message))
            print(f"  {source:,.0f} msg/s")
            print(f"\n[B] smtplib, one connection per message, {args.naive_messages:,} …")
            naive = reference_naive(sink, args.naive_messages, message)
            print(f"  {naive:,.0f} msg/s")
            runs = [engine_run(sink, folder, n, args) for n in sizes]
        finally:
            sink.stop()

    print("\nSummary")
    print(f"  [A] smtp-source → smtp-sink: {source:,.0f} msg/s")
    print(f"  [B] naive smtplib loop:      {naive:,.0f} msg/s")
    for run in runs:
        print(
            f"  engine, {run.size:,}: {run.rate:,.0f} msg/s = {run.rate / source:.2f} × A, "
            f"{run.rate / naive:.2f} × B; peak RSS {run.sent['rss_peak_mb']:.0f} MB"
        )
    peaks = [run.sent["rss_peak_mb"] for run in runs]
    slowest = min(run.rate for run in runs)
    spread = max(peaks) / min(peaks) - 1
    print("Goals")
    print(f"  ≥ {GOAL_RATE:,} msg/s end to end: {_verdict(slowest >= GOAL_RATE)} ({slowest:,.0f})")
    print(f"  faster than the naive loop: {_verdict(slowest > naive)} ({slowest / naive:.2f} ×)")
    under = max(peaks) < RSS_LIMIT_MB
    print(f"  peak RSS < {RSS_LIMIT_MB} MB: {_verdict(under)} ({max(peaks):.0f} MB)")
    print(
        f"  peak RSS within {RSS_SPREAD:.0%} across sizes: "
        f"{_verdict(spread <= RSS_SPREAD)} (+{spread:.1%} from smallest to largest)"
    )
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
