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

**PostgreSQL mode** (`--postgres URL`; the database is emptied, give one made for it):
the production layout, real `python -m bot worker` processes. In one run, against one
`smtp-sink`: `smtp-source` as the reference (messages of the engine's size), then for
each `--concurrency` C and each W of `--workers` (at `--scaling-size` recipients), and
for each of `--sizes` (with `--rss-workers` workers): the database's schema is dropped
and migrated again, seeded with the same profiles and delivery, prepared (`VACUUM
ANALYZE` after it); W workers are started (`python -m bot worker --concurrency C`, each
its own process; SEND_PARALLELISM = W × C, so every one has a job) and once each fetches
jobs, the delivery is confirmed and the due work kicked as `serve` does at the confirm
(`ServerQueue.kick`). The figure is the time from the kick to the delivery's state
`finished` in the database (polled every 20 ms). Each worker's peak RSS is its VmHWM,
read before it stops; the CPU time of the workers (their event loop and their threads),
of PostgreSQL (the backends serving this database and the shared processes), of the
sink and of the whole machine during the send is printed per message (what is left is
other work on the machine: a figure to read the run's others by), and so are the
database's commits and rows written. The KPIs must show sent == N, and the sink must
have counted N more messages.

    .venv/bin/python benchmarks/send_throughput.py --postgres URL [--workers 1,2,4]
        [--concurrency 1,2] [--scaling-size 30000] [--sizes 100000,300000]
        [--rss-workers 2] [--profile PATH]

`--profile PATH` runs each worker with cProfile in every thread (PATH.WxC.N.wI).

Needs `smtp-sink` and `smtp-source` (Debian: the `postfix` package, in /usr/sbin).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pg_fleet, beside this script
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pg_fleet

from bot.bootstrap import bootstrap
from bot.config import Settings, load_settings
from bot.context import Context
from bot.domain.roles import COMMAND_LINE, Actor, Role
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import MessageTemplates, profile_context
from bot.engine.sender import Sender
from bot.engine.transports import make_transport
from bot.jobs.queue import ServerQueue
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
BATCH = 500  # SEND_BATCH_SIZE of the SQLite runs
FLEET_BATCH = 2_000  # of the workers' runs: the fastest of 500, 1,000, 2,000 and 5,000 here
GOAL_TWO_WORKERS = 1.7
GOAL_SOURCE_RATIO = 0.25
FLEET_RSS_LIMIT_MB = 150
BENCH_USER = Actor("U0BENCH", frozenset({Role.START_DELIVERIES}))
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


def _settings(db: Path | str, port: int = 25, pool: int = 16, batch: int = 500) -> Settings:
    """A SQLite file (a Path) or a PostgreSQL URL (a str)."""
    return load_settings(
        _env_file=None,
        database_url=db if isinstance(db, str) else f"sqlite:///{db}",
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


def phase_prepare(db: Path | str, n: int, confirm: bool = True) -> dict[str, Any]:
    """Seed, prepare and (unless told not to) confirm: on-confirm, the delivery starts."""
    root = bootstrap(_settings(db))
    ctx = root.context
    started = time.perf_counter()
    _seed(ctx, n)
    seeded = time.perf_counter()
    result = prepare_delivery(ctx, COMMAND_LINE, REF)
    prepared = time.perf_counter()
    if confirm:
        confirm_send(ctx, BENCH_USER, REF)
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


# -- the PostgreSQL mode: real `python -m bot worker` processes ----------------------------


@dataclass
class FleetRun:
    """One configuration: W worker processes of C jobs each sent N messages."""

    size: int
    workers: int
    concurrency: int
    prepared: dict[str, Any]
    elapsed_s: float  # from the kick to the delivery `finished` in the database
    first_s: float  # from the kick to the sink's first message of the run
    peaks_mb: list[float]  # VmHWM of each worker process, read before it stopped
    cpu: dict[str, float]  # CPU seconds during the send: workers, postgres, smtp-sink, all
    counters: dict[str, int]  # pg_stat_database during the send: commits, rows written

    @property
    def rate(self) -> float:
        return self.size / self.elapsed_s

    @property
    def label(self) -> str:
        return f"{self.workers} × --concurrency {self.concurrency}, {self.size:,}"


def fleet_run(
    sink: Sink, folder: Path, url: str, n: int, workers: int, concurrency: int, args: Any
) -> FleetRun:
    """A fresh database with N recipients prepared; W workers started and registered; the
    delivery confirmed and the due work kicked (what `serve` does at the confirm); timed
    until the database says `finished`; then the KPIs and the sink's count checked."""
    slots = args.parallelism or workers * concurrency
    print(
        f"\n[{workers} worker(s) × --concurrency {concurrency}, {n:,} recipients, "
        f"SEND_PARALLELISM {slots}] emptying the database, seeding and preparing …"
    )
    pg_fleet.reset(url)
    prepared = _child("--phase", "prepare", "--db", url, "--n", str(n), "--no-confirm")
    pg_fleet.analyze(url)
    print(
        f"  seed {prepared['seed_s']:.1f} s, prepare {prepared['prepare_s']:.1f} s, "
        f"to deliver {prepared['to_deliver']:,}"
    )
    if prepared["to_deliver"] != n:
        raise SystemExit(f"expected {n:,} recipients to deliver, got {prepared['to_deliver']:,}")
    run_folder = folder / f"fleet-{workers}x{concurrency}-{n}"
    run_folder.mkdir(parents=True, exist_ok=True)
    env = pg_fleet.worker_env(
        url,
        f"smtp://127.0.0.1:{sink.port}",
        smtp_pool_size=args.pool,
        send_batch_size=args.batch,
        send_parallelism=slots,
    )
    profile = f"{args.profile}.{workers}x{concurrency}.{n}" if args.profile else None
    fleet = pg_fleet.Fleet(env, run_folder, profile=profile)
    settings = _settings(url, sink.port, args.pool, args.batch)
    root = bootstrap(settings, migrate=False)
    engine = root.engine
    dbname = engine.url.database or ""
    queue = ServerQueue(settings)
    try:
        fleet.start(workers, concurrency)
        ready = fleet.wait_ready(engine)
        print(f"  {workers} worker(s) registered after {ready:.1f} s; confirming and kicking …")
        before = sink.messages()
        counters_before = pg_fleet.database_counters(engine)
        confirm_send(root.context, BENCH_USER, REF)
        others = pg_fleet.CpuTracker(("postgres", "smtp-sink"), dbname)
        others.start()
        cpu_before = _fleet_cpu(fleet, others)
        started = time.perf_counter()
        queue.kick()
        first: list[float] = []
        polls = itertools.count()

        def done() -> bool:
            if not first and sink.messages() > before:
                first.append(time.perf_counter() - started)
            if next(polls) % 25 == 24:
                others.sample()  # twice a second: backends that end are not lost
            return pg_fleet.delivery_state(engine, REF) == "finished"

        pg_fleet.wait_until("the delivery finished", done, args.timeout, fleet.check_alive)
        elapsed = time.perf_counter() - started
        cpu_after = _fleet_cpu(fleet, others)
        peaks = fleet.peaks_mb()  # before they stop: VmHWM of each live process
    finally:
        fleet.stop()
        queue.close()
    counters = _settled_counters(engine, counters_before)
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after if k != "each"}
    each = [a - b for a, b in zip(cpu_after["each"], cpu_before["each"], strict=True)]
    detail = delivery_detail(root.context, COMMAND_LINE, REF).to_json()
    root.close()
    taken = sink.wait_for(before + n) - before
    run = FleetRun(
        n, workers, concurrency, prepared, elapsed, first[0] if first else 0, peaks, cpu, counters
    )
    print(
        f"  {n:,} messages in {elapsed:.2f} s: {run.rate:,.0f} msg/s "
        f"(first message {run.first_s * 1000:.0f} ms after the kick)"
    )
    print(f"  peak RSS per worker: {', '.join(f'{p:.0f} MB' for p in peaks)}")
    per = {k: v / n * 1e6 for k, v in cpu.items()}
    print(
        f"  CPU per message: workers {per['workers']:.0f} µs (event loop {per['main']:.0f}, "
        f"threads {per['threads']:.0f}) "
        f"({', '.join(f'{c / elapsed:.0%}' for c in each)} of a core each), "
        f"postgres {per['postgres']:.0f} µs, smtp-sink {per['smtp-sink']:.0f} µs, "
        f"whole machine {per['machine']:.0f} µs "
        f"({cpu['machine'] / elapsed / (os.cpu_count() or 1):.0%} of all cores busy)"
    )
    ours = sum(per[k] for k in ("workers", "postgres", "smtp-sink", "benchmark"))
    print(
        f"  CPU of everything else (the kernel's own threads, other processes): "
        f"{per['machine'] - ours:.0f} µs per message, "
        f"{(cpu['machine'] - ours * n / 1e6) / elapsed:.0%} of a core"
    )
    print(
        f"  PostgreSQL: {counters['xact_commit']:,} commits "
        f"({counters['xact_commit'] / n * 1000:.0f} per 1,000 messages), "
        f"{counters['xact_rollback']:,} rollbacks, "
        f"{counters['tup_updated'] / n:.1f} rows updated and "
        f"{counters['tup_inserted'] / n:.1f} inserted per message"
    )
    print(
        f"  check: state {detail['state']}, KPI sent {detail['kpis']['sent']:,}, "
        f"logs {detail['logs']}, the sink counted {taken:,}"
    )
    if detail["kpis"]["sent"] != n or taken != n or detail["state"] != "finished":
        raise SystemExit("the workers did not relay every recipient exactly once")
    sent_by = [i for i in range(workers) if "greenlight:send" in fleet.log(i)]
    if len(sent_by) != workers:
        print(f"  note: only workers {sent_by} ran send jobs")
    return run


def _settled_counters(engine: Any, before: dict[str, int]) -> dict[str, int]:
    """The database's counters since `before`, once the stopped workers' backends have
    reported theirs (a backend reports as it exits: read until two readings agree)."""
    last: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = pg_fleet.database_counters(engine)
        if now == last:
            break
        last = now
        time.sleep(0.2)
    return {k: last[k] - before[k] for k in last}


def _fleet_cpu(fleet: pg_fleet.Fleet, others: pg_fleet.CpuTracker) -> dict[str, Any]:
    """CPU seconds so far: the workers (each; their main threads and the others),
    PostgreSQL's processes and the sink (`others`, since its start), the whole machine."""
    each = fleet.cpu()
    main, threads = fleet.thread_cpu()
    busy, _total = pg_fleet.machine_busy_seconds()
    return {
        "workers": sum(each),
        "each": each,
        "main": main,
        "threads": threads,
        **others.seconds(),
        "benchmark": _cpu_s(),  # this process: the polling, the sink's counter
        "machine": busy,
    }


def main_postgres(args: argparse.Namespace) -> None:
    url = args.postgres
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    concurrencies = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    scaling = args.scaling_size
    if args.quick:
        sizes, scaling, args.source_messages = [5_000, 15_000], 5_000, 20_000
    message = engine_message()
    print(
        f"python {platform.python_version()}, PostgreSQL {pg_fleet.server_version(url)}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"engine message: {len(message):,} bytes (HTML template {len(HTML.encode()):,} bytes)")
    print(f"SMTP_POOL_SIZE {args.pool} per job, SEND_BATCH_SIZE {args.batch}")
    scaling_runs: list[FleetRun] = []
    rss_runs: list[FleetRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.tmp) if args.tmp else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sink = Sink.start(Path(tmp))
        try:
            print(f"smtp-sink on 127.0.0.1:{sink.port}")
            print(
                f"\n[reference] smtp-source, {SOURCE_SESSIONS} sessions, {args.source_messages:,} …"
            )
            source = reference_source(sink, args.source_messages, len(message))
            print(f"  {source:,.0f} msg/s")
            for c in concurrencies:
                for w in workers:
                    scaling_runs.append(fleet_run(sink, folder, url, scaling, w, c, args))
            rss_concurrency = args.rss_concurrency or concurrencies[0]
            for n in sizes:
                rss_runs.append(
                    fleet_run(sink, folder, url, n, args.rss_workers, rss_concurrency, args)
                )
        finally:
            sink.stop()

    print("\nSummary")
    print(f"  smtp-source → smtp-sink: {source:,.0f} msg/s")
    for run in scaling_runs + rss_runs:
        shown = ", ".join(f"{p:.0f}" for p in run.peaks_mb)
        print(
            f"  {run.label}: {run.rate:,.0f} msg/s = {run.rate / source:.3f} × smtp-source; "
            f"peak RSS per worker {shown} MB"
        )
    print("Goals")
    for c in concurrencies:
        one = next((r for r in scaling_runs if r.workers == 1 and r.concurrency == c), None)
        two = next((r for r in scaling_runs if r.workers == 2 and r.concurrency == c), None)
        if one and two:
            gain = two.rate / one.rate
            print(
                f"  2 workers ≥ {GOAL_TWO_WORKERS} × 1 worker (--concurrency {c}): "
                f"{_verdict(gain >= GOAL_TWO_WORKERS)} ({gain:.2f} ×)"
            )
    best = max(scaling_runs + rss_runs, key=lambda r: r.rate)
    ratio = best.rate / source
    print(
        f"  best configuration ≥ {GOAL_SOURCE_RATIO} × smtp-source: "
        f"{_verdict(ratio >= GOAL_SOURCE_RATIO)} "
        f"({best.label}: {best.rate:,.0f} msg/s, {ratio:.3f} ×)"
    )
    if rss_runs:
        peaks = [p for r in rss_runs for p in r.peaks_mb]
        largest = [max(r.peaks_mb) for r in rss_runs]
        spread = max(largest) / min(largest) - 1
        print(
            f"  peak RSS per worker < {FLEET_RSS_LIMIT_MB} MB: "
            f"{_verdict(max(peaks) < FLEET_RSS_LIMIT_MB)} (largest {max(peaks):.0f} MB)"
        )
        print(
            f"  peak RSS within {RSS_SPREAD:.0%} across sizes: {_verdict(spread <= RSS_SPREAD)} "
            f"(+{spread:.1%} between the sizes' largest workers)"
        )
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000", help="recipients per engine run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 and 15,000")
    parser.add_argument("--pool", type=int, default=16, help="SMTP_POOL_SIZE")
    parser.add_argument(
        "--batch", type=int, help=f"SEND_BATCH_SIZE (default {BATCH}; {FLEET_BATCH} on PostgreSQL)"
    )
    parser.add_argument("--source-messages", type=int, default=100_000)
    parser.add_argument("--naive-messages", type=int, default=5_000)
    parser.add_argument("--profile", help="write cProfile stats of each send to PATH.N")
    parser.add_argument("--keep", action="store_true", help="keep the databases (in --tmp)")
    parser.add_argument("--tmp", help="folder for the databases (default: a temporary one)")
    postgres = parser.add_argument_group(
        "PostgreSQL mode", "real `python -m bot worker` processes (the database is emptied)"
    )
    postgres.add_argument("--postgres", metavar="URL", help="run the PostgreSQL mode on URL")
    postgres.add_argument("--workers", default="1,2,4", help="worker processes per run")
    postgres.add_argument(
        "--concurrency", default="1,2", help="--concurrency of each worker (a list: each tried)"
    )
    postgres.add_argument(
        "--parallelism", type=int, help="SEND_PARALLELISM (default: workers × concurrency)"
    )
    postgres.add_argument(
        "--scaling-size", type=int, default=30_000, help="recipients of the --workers runs"
    )
    postgres.add_argument(
        "--rss-workers", type=int, default=2, help="workers of the --sizes runs (0: none)"
    )
    postgres.add_argument("--rss-concurrency", type=int, help="their --concurrency")
    postgres.add_argument("--timeout", type=float, default=1800, help="seconds a run may take")
    # Internal: the phases run in child processes.
    parser.add_argument("--phase", choices=["prepare", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--no-confirm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--execution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "send" and args.batch is None:
        args.batch = BATCH
    if args.phase == "prepare":
        db: Path | str = args.db if args.db.startswith("postgresql") else Path(args.db)
        print(json.dumps(phase_prepare(db, args.n, confirm=not args.no_confirm)))
        return
    if args.phase == "send":
        profile = Path(args.profile) if args.profile else None
        result = phase_send(
            Path(args.db), args.port, args.pool, args.batch, args.execution, profile
        )
        print(json.dumps(result))
        return

    _require_postfix_tools()
    if args.batch is None:
        args.batch = FLEET_BATCH if args.postgres else BATCH
    if args.postgres:
        if args.rss_workers == 0:
            args.sizes = ""
        main_postgres(args)
        return

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
