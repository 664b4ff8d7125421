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
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import send_throughput as bench  # noqa: E402  (the seed and the sink are shared)
from mock_slack import MockSlack  # noqa: E402

from bot.blocks import ids  # noqa: E402
from bot.bootstrap import bootstrap  # noqa: E402
from bot.domain.roles import COMMAND_LINE, Role  # noqa: E402
from bot.services.deliveries.prepare import prepare_delivery  # noqa: E402
from bot.services.roles import grant  # noqa: E402

SECRET = "bench-signing-secret"
USER = "U0BENCH"
CHANNEL = "C0BENCH"
GOAL_P99_MS = 300.0


def seed(db: Path, n: int) -> int:
    """The delivery of send_throughput, prepared but not confirmed; USER holds the roles."""
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


def start_serve(db: Path, sink_port: int, slack_url: str, folder: Path) -> tuple[Any, str]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "MAIL_URL": f"smtp://127.0.0.1:{sink_port}",
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack_url + "/api/",
        "TRACKING_SECRET": "bench",
        "PUBLIC_BASE_URL": "https://mail.example.com",
        "PORT": str(port),
        "SMTP_POOL_SIZE": "16",
        "SEND_BATCH_SIZE": "500",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("SLACK_APP_TOKEN", None)
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"], cwd=folder, env=env, stdout=log, stderr=log
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
    """Each body POSTed to /slack/events, `concurrency` at a time; ms to each answer."""
    queue = list(reversed(bodies))
    times: list[float] = []
    failures: list[str] = []

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                headers = _signed(body)  # signed when sent: the timestamp is fresh
                started = time.perf_counter()
                async with session.post(url + "/slack/events", data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
                times.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    failures.append(f"HTTP {status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        raise SystemExit(f"{len(failures)} requests were not acknowledged: {failures[:5]}")
    return times


def summary(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(times)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    bench._require_postfix_tools()
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )

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
        process, url = start_serve(db, sink.port, slack.url, folder)
        try:
            print(f"serve on {url}, smtp-sink on 127.0.0.1:{sink.port}, mock Slack {slack.url}")
            n = args.requests
            warm = list(requests(slack.url, 20 * n, WARMUP))
            asyncio.run(fire(url, warm, args.concurrency))
            print(f"\n[reference] {n} requests, {args.concurrency} at a time, nothing sending …")
            idle = summary(
                asyncio.run(fire(url, list(requests(slack.url, 0, n)), args.concurrency))
            )
            show("idle", idle)

            confirm = click(slack.url, 10 * n, ids.CONFIRM_SEND, bench.REF)
            asyncio.run(fire(url, [confirm], 1))
            deadline = time.monotonic() + 120
            while (taken := sink.messages()) < 2_000:
                if process.poll() is not None:
                    raise SystemExit("serve exited while starting the send")
                if time.monotonic() > deadline:
                    raise SystemExit("the confirmed send never started (see serve.log)")
                time.sleep(0.1)
            print(f"\n[loaded] confirmed; the sink has taken {taken:,} messages; {n} requests …")
            before, t0 = sink.messages(), time.perf_counter()
            loaded_times = asyncio.run(fire(url, list(requests(slack.url, n, n)), args.concurrency))
            after, elapsed = sink.messages(), time.perf_counter() - t0
            loaded = summary(loaded_times)
            show("while sending", loaded)
            rate = (after - before) / elapsed
            print(f"  relayed meanwhile: {after - before:,} messages ({rate:,.0f} msg/s)")
            still_sending = after < to_deliver
            # The commands of both runs and of the warm-up, and the confirm click.
            expected = answering(0, n) + answering(n, n) + answering(20 * n, WARMUP) + 1
            answered = wait_for_responses(slack, expected, timeout=120)
            print(f"  answers at response_url: {answered:,} of the {expected:,} expected")
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            slack.stop()
            sink.stop()

    ok = loaded["p99"] < GOAL_P99_MS
    print("\nGoals")
    print(
        f"  p99 < {GOAL_P99_MS:.0f} ms while sending: {'PASS' if ok else 'FAIL'} "
        f"({loaded['p99']:.1f} ms; idle {idle['p99']:.1f} ms, {loaded['p99'] / idle['p99']:.1f} ×)"
    )
    print(f"  the send was still running at the end: {'PASS' if still_sending else 'FAIL'}")
    print(f"  every command answered: {'PASS' if answered == expected else 'FAIL'}")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
