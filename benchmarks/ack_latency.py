"""Benchmark: how fast `serve` answers Slack while it relays a 100,000-recipient delivery.

Slack gives an app 3 seconds to acknowledge a command or a click; the goal here is a
p99 under 300 ms with a large send under way. One run:

1. a fresh SQLite database gets N profiles and a delivery prepared for all of them
   (as `benchmarks/send_throughput.py` seeds it); a user is granted the roles;
2. Postfix's `smtp-sink` stands in for the MTA, a local mock of Slack's Web API
   (`tests/mock_slack.py`) takes the `chat.*` calls and the `response_url` answers;
3. `python -m bot serve` runs as its own process on a free port, with the sender;
4. **reference**: R signed requests (slash commands and button clicks, a fixed mix),
   C at a time, against the idle app;
5. a signed **Confirm send** click starts the send; once the sink has taken
   messages, the same R requests are fired again, C at a time, while it relays;
6. it prints p50/p95/p99/max time to the HTTP answer for both, the relay rate during
   the loaded run (so the send was really going), and checks every request got its
   200 and every command its answer at the `response_url` (a Compute stats click
   answers by updating the Deployment message instead).

The first few requests of a fresh server (connections, caches) are sent before the
reference and not measured.

    .venv/bin/python benchmarks/ack_latency.py [--recipients 100000] [--requests 500]

**PostgreSQL mode** (`--postgres URL`; the database is emptied): the production layout.
`python -m bot serve` runs with WORKER_IN_SERVER=false (it only answers and defers
jobs), and `--workers` `python -m bot worker` processes apart do the sending; the
Confirm send click makes `serve` kick the due work, and the workers send. Same requests,
same checks; the goal is a p99 under 100 ms while they send. The CPU share of `serve`,
of each worker and of PostgreSQL during each run is printed.

    .venv/bin/python benchmarks/ack_latency.py --postgres URL [--workers 2]
        [--worker-concurrency 1] [--profile PATH]

`--profile PATH` runs `serve` with cProfile in every thread (its stats in PATH).

Needs `smtp-sink` (Debian: the `postfix` package, in /usr/sbin).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import pg_fleet  # noqa: E402
import send_throughput as bench  # noqa: E402  (the seed and the sink are shared)
from mock_slack import MockSlack  # noqa: E402

from bot.blocks import ids  # noqa: E402
from bot.bootstrap import bootstrap  # noqa: E402
from bot.domain.roles import COMMAND_LINE, Role  # noqa: E402
from bot.services.deliveries.prepare import prepare_delivery  # noqa: E402
from bot.services.roles import grant  # noqa: E402
from bot.store.db import make_engine  # noqa: E402

SECRET = "bench-signing-secret"
USER = "U0BENCH"
CHANNEL = "C0BENCH"
GOAL_P99_MS = 300.0  # SQLite: `serve` and its sender process share the machine
GOAL_P99_PG_MS = 100.0  # PostgreSQL: `serve` apart from the workers (which are niced)


def seed(db: Path | str, n: int) -> int:
    """The delivery of send_throughput, prepared but not confirmed; USER holds the roles.

    `db`: a SQLite file, or a PostgreSQL URL (a str)."""
    root = bootstrap(bench._settings(db))
    ctx = root.context
    bench._seed(ctx, n)
    result = prepare_delivery(ctx, COMMAND_LINE, bench.REF)
    for role in (Role.START_DELIVERIES, Role.ADMINISTRATION):
        grant(ctx, COMMAND_LINE, USER, role.value)
    root.close()
    return result.to_deliver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def slack_env(slack_url: str) -> dict[str, str]:
    """Slack as the server and the workers see it: the local mock, signed requests."""
    return {
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack_url + "/api/",
    }


def start_serve(
    db: Path | str,
    sink_port: int,
    slack_url: str,
    folder: Path,
    extra: dict[str, str] | None = None,
    profile: str | None = None,
) -> tuple[Any, str]:
    """`python -m bot serve` on a free port; `db` a SQLite file or a PostgreSQL URL;
    `profile`: run it under cProfile, its stats written to that path when it stops."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db if isinstance(db, str) else f"sqlite:///{db}",
        "MAIL_URL": f"smtp://127.0.0.1:{sink_port}",
        **slack_env(slack_url),
        "TRACKING_SECRET": "bench",
        "PUBLIC_BASE_URL": "https://mail.example.com",
        "PORT": str(port),
        "SMTP_POOL_SIZE": "16",
        "SEND_BATCH_SIZE": "500",
        "LOG_LEVEL": "WARNING",
        **(extra or {}),
    }
    env.pop("SLACK_APP_TOKEN", None)
    log = (folder / "serve.log").open("wb")
    profiling = [pg_fleet.__file__, "profile", profile] if profile else []
    process = subprocess.Popen(
        [sys.executable, *profiling, "-m", "bot", "serve"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited:\n{(folder / 'serve.log').read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("serve did not answer /healthz within 30 s")


# -- Slack-shaped, signed requests ---------------------------------------------------------


def _signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command(slack_url: str, n: int, name: str, text: str) -> str:
    return urlencode(
        {
            "team_id": "T1",
            "channel_id": CHANNEL,
            "user_id": USER,
            "user_name": "bench",
            "command": name,
            "text": text,
            "response_url": f"{slack_url}/response/{n}",
            "trigger_id": f"{n}.1.1",
            "api_app_id": "A1",
        }
    )


def click(slack_url: str, n: int, action_id: str, value: str) -> str:
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": USER, "name": "bench"},
        "api_app_id": "A1",
        "trigger_id": f"{n}.1.1",
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "message_ts": "1700000000.000100", "is_ephemeral": True},
        "response_url": f"{slack_url}/response/{n}",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "b1",
                "type": "button",
                "value": value,
                "action_ts": "1700000000.000001",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


# What an operator does during a send: look at it, list, open the card, compute stats.
MIX = (
    ("command", ids.CAMPAIGN_COMMAND, f"status {bench.REF}"),
    ("command", ids.CAMPAIGN_COMMAND, "list"),
    ("command", ids.CONFIRM_SEND_COMMAND, bench.REF),
    ("click", ids.COMPUTE_STATS, bench.REF),
    ("command", ids.CAMPAIGN_COMMAND, "help"),
)


WARMUP = 25  # first requests of a fresh process (connections, caches): not measured


def answering(first: int, count: int) -> int:
    """How many of these requests answer at their response_url.

    Slash commands do; a Compute stats click answers by updating the Deployment message.
    """
    return sum(1 for n in range(first, first + count) if MIX[n % len(MIX)][0] == "command")


def requests(slack_url: str, first: int, count: int) -> Iterator[str]:
    for n in range(first, first + count):
        kind, name, arg = MIX[n % len(MIX)]
        yield (
            command(slack_url, n, name, arg)
            if kind == "command"
            else click(slack_url, n, name, arg)
        )


async def fire(url: str, bodies: list[str], concurrency: int) -> list[float]:
    """Each body POSTed to /slack/events, `concurrency` at a time; ms to each answer, in
    the order of `bodies`."""
    queue = list(reversed(list(enumerate(bodies))))
    times = [0.0] * len(bodies)
    failures: list[str] = []

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                i, body = queue.pop()
                headers = _signed(body)  # signed when sent: the timestamp is fresh
                started = time.perf_counter()
                async with session.post(url + "/slack/events", data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
                times[i] = (time.perf_counter() - started) * 1000
                if status != 200:
                    failures.append(f"HTTP {status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        raise SystemExit(f"{len(failures)} requests were not acknowledged: {failures[:5]}")
    return times


def summary(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(times)}


def by_kind(first: int, times: list[float]) -> str:
    """The median of each request of the mix (request `first + i` took `times[i]`)."""
    kinds: dict[str, list[float]] = {}
    for i, ms in enumerate(times):
        kind, name, arg = MIX[(first + i) % len(MIX)]
        label = f"{name} {arg.split()[0]}" if kind == "command" else f"click {name}"
        kinds.setdefault(label, []).append(ms)
    return ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in kinds.items())


def show(label: str, stats: dict[str, float]) -> None:
    print(
        f"  {label}: p50 {stats['p50']:.1f} ms, p95 {stats['p95']:.1f} ms, "
        f"p99 {stats['p99']:.1f} ms, max {stats['max']:.1f} ms"
    )


def wait_for_responses(slack: MockSlack, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while len({c.path for c in slack.responses()}) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return len({c.path for c in slack.responses()})


@dataclass
class Measured:
    """What one run measured: both latency summaries, the send meanwhile, the answers."""

    idle: dict[str, float]
    loaded: dict[str, float]
    relayed: int
    rate: float
    still_sending: bool
    answered: int
    expected: int
    cpu: dict[str, float] = field(default_factory=dict)  # share of a core while loaded


def measure(
    url: str,
    slack: MockSlack,
    sink: bench.Sink,
    process: Any,
    args: argparse.Namespace,
    to_deliver: int,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> Measured:
    """Warm-up, the idle reference, the Confirm send click, then the loaded run once the
    sink has taken messages; `cpu` reads CPU seconds of the processes to report."""
    n = args.requests
    warm = list(requests(slack.url, 20 * n, WARMUP))
    asyncio.run(fire(url, warm, args.concurrency))
    print(f"\n[reference] {n} requests, {args.concurrency} at a time, nothing sending …")
    cpu_before = cpu() if cpu else {}
    t0 = time.perf_counter()
    idle_times = asyncio.run(fire(url, list(requests(slack.url, 0, n)), args.concurrency))
    idle_shares = _shares(cpu_before, cpu() if cpu else {}, time.perf_counter() - t0)
    idle = summary(idle_times)
    show("idle", idle)
    print(f"  median per request (ms): {by_kind(0, idle_times)}")
    if idle_shares:
        print("  CPU meanwhile: " + ", ".join(f"{k} {v:.0%}" for k, v in idle_shares.items()))

    confirm = click(slack.url, 10 * n, ids.CONFIRM_SEND, bench.REF)
    asyncio.run(fire(url, [confirm], 1))
    deadline = time.monotonic() + 120
    while (taken := sink.messages()) < 2_000:
        if process.poll() is not None:
            raise SystemExit("serve exited while starting the send")
        if time.monotonic() > deadline:
            raise SystemExit("the confirmed send never started (see the logs)")
        time.sleep(0.1)
    print(f"\n[loaded] confirmed; the sink has taken {taken:,} messages; {n} requests …")
    cpu_before = cpu() if cpu else {}
    before, t0 = sink.messages(), time.perf_counter()
    loaded_times = asyncio.run(fire(url, list(requests(slack.url, n, n)), args.concurrency))
    after, elapsed = sink.messages(), time.perf_counter() - t0
    shares = _shares(cpu_before, cpu() if cpu else {}, elapsed)
    loaded = summary(loaded_times)
    show("while sending", loaded)
    print(f"  median per request (ms): {by_kind(n, loaded_times)}")
    rate = (after - before) / elapsed
    print(f"  relayed meanwhile: {after - before:,} messages ({rate:,.0f} msg/s)")
    if shares:
        print("  CPU meanwhile: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    # The commands of both runs and of the warm-up, and the confirm click.
    expected = answering(0, n) + answering(n, n) + answering(20 * n, WARMUP) + 1
    answered = wait_for_responses(slack, expected, timeout=120)
    print(f"  answers at response_url: {answered:,} of the {expected:,} expected")
    return Measured(
        idle, loaded, after - before, rate, after < to_deliver, answered, expected, shares
    )


def _shares(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU seconds used between two readings, as a share of one core."""
    return {k: (after[k] - before[k]) / seconds for k in after}


def goals(m: Measured, goal_ms: float) -> None:
    ok = m.loaded["p99"] < goal_ms
    print("\nGoals")
    print(
        f"  p99 < {goal_ms:.0f} ms while sending: {'PASS' if ok else 'FAIL'} "
        f"({m.loaded['p99']:.1f} ms; idle {m.idle['p99']:.1f} ms, "
        f"{m.loaded['p99'] / m.idle['p99']:.1f} ×)"
    )
    print(f"  the send was still running at the end: {'PASS' if m.still_sending else 'FAIL'}")
    print(f"  every command answered: {'PASS' if m.answered == m.expected else 'FAIL'}")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def stop(process: Any) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def main_sqlite(args: argparse.Namespace) -> None:
    """`serve` with its own sender process, on SQLite (the embedded mode)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "ack.db"
        started = time.perf_counter()
        to_deliver = seed(db, args.recipients)
        seconds = time.perf_counter() - started
        print(f"seeded and prepared {to_deliver:,} recipients in {seconds:.1f} s")
        sink = bench.Sink.start(folder)
        slack = MockSlack()
        slack.start()
        process, url = start_serve(db, sink.port, slack.url, folder, profile=args.profile)
        try:
            print(f"serve on {url}, smtp-sink on 127.0.0.1:{sink.port}, mock Slack {slack.url}")
            measured = measure(url, slack, sink, process, args, to_deliver)
        finally:
            stop(process)
            slack.stop()
            sink.stop()
    goals(measured, GOAL_P99_MS)


def main_postgres(args: argparse.Namespace) -> None:
    """`serve` with WORKER_IN_SERVER=false on PostgreSQL, and `python -m bot worker`
    processes apart doing the sending (the PostgreSQL mode's production layout)."""
    url = args.postgres
    print(f"PostgreSQL {pg_fleet.server_version(url)}; emptying the database …")
    pg_fleet.reset(url)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        to_deliver = seed(url, args.recipients)
        pg_fleet.analyze(url)
        seconds = time.perf_counter() - started
        print(f"seeded and prepared {to_deliver:,} recipients in {seconds:.1f} s")
        sink = bench.Sink.start(folder)
        slack = MockSlack()
        slack.start()
        slots = args.workers * args.worker_concurrency
        common = {
            "SMTP_POOL_SIZE": "16",
            "SEND_BATCH_SIZE": str(args.batch),
            "SEND_PARALLELISM": str(slots),
        }
        env = pg_fleet.worker_env(url, f"smtp://127.0.0.1:{sink.port}", **common)
        env.update(slack_env(slack.url))
        (folder / "workers").mkdir()
        fleet = pg_fleet.Fleet(env, folder / "workers")
        process: Any = None
        engine = make_engine(url)
        try:
            fleet.start(args.workers, args.worker_concurrency)
            fleet.wait_ready(engine)
            process, server = start_serve(
                url,
                sink.port,
                slack.url,
                folder,
                {"WORKER_IN_SERVER": "false", **common},
                profile=args.profile,
            )
            print(
                f"serve on {server} (WORKER_IN_SERVER=false), {args.workers} × `python -m bot "
                f"worker --concurrency {args.worker_concurrency}` (SEND_PARALLELISM {slots}), "
                f"smtp-sink on 127.0.0.1:{sink.port}, mock Slack {slack.url}"
            )
            pids = {"serve": process.pid, **{f"worker {n}": p for n, p in enumerate(fleet.pids)}}
            postgres = pg_fleet.CpuTracker(("postgres",), engine.url.database)
            postgres.start()
            sampling = threading.Event()

            def sample() -> None:  # backends that end (pool churn) keep their time
                while not sampling.wait(0.5):
                    postgres.sample()

            threading.Thread(target=sample, daemon=True).start()

            def cpu() -> dict[str, float]:
                readings = {k: pg_fleet.cpu_seconds(p) for k, p in pids.items()}
                loop, threads = pg_fleet.thread_cpu_seconds(process.pid)
                readings["serve's event loop"], readings["serve's threads"] = loop, threads
                readings["postgres"] = postgres.seconds()["postgres"]
                return readings

            measured = measure(server, slack, sink, process, args, to_deliver, cpu)
            sampling.set()
            fleet.check_alive()
        finally:
            if process is not None:
                stop(process)
            fleet.stop()
            engine.dispose()
            slack.stop()
            sink.stop()
    goals(measured, GOAL_P99_PG_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20, help="requests in flight")
    parser.add_argument(
        "--postgres", metavar="URL", help="PostgreSQL mode on URL (the database is emptied)"
    )
    parser.add_argument("--workers", type=int, default=2, help="PostgreSQL mode: workers")
    parser.add_argument(
        "--worker-concurrency", type=int, default=1, help="PostgreSQL mode: each one's jobs"
    )
    parser.add_argument(
        "--batch", type=int, default=bench.FLEET_BATCH, help="PostgreSQL mode: SEND_BATCH_SIZE"
    )
    parser.add_argument("--profile", metavar="PATH", help="cProfile `serve` into PATH")
    args = parser.parse_args()
    bench._require_postfix_tools()
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.postgres:
        main_postgres(args)
    else:
        main_sqlite(args)


if __name__ == "__main__":
    main()
