"""Benchmark: the hourly KPI digest with 500 deliveries inside their validity period.

Builds a fresh SQLite database in a temporary folder (or uses `--database-url`, which
must name an empty, migrated-or-empty database), seeds N active deliveries (default
500; one in ten is an execution of a recurring delivery) with realistic counters and
the snapshots of 48 earlier hourly digests, then:

- times building one digest: the claim, one query for the active executions, the
  previous digest's snapshots, the new snapshots written, the Block Kit messages and
  the chart's data (what happens once per digest, in the database);
- times drawing the chart (matplotlib, first draw in the process and a later one);
- posts the digest to a local mock of Slack's Web API (`tests/mock_slack.py`) and
  counts the calls, with the pause between posts set to zero;
- for reference, times the naive approach: `views.delivery_detail` for each
  delivery, one at a time (a dozen queries per delivery).

    .venv/bin/python benchmarks/digest.py [--deliveries N] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mock_slack import MockSlack  # noqa: E402

from bot.bootstrap import bootstrap  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.context import Context  # noqa: E402
from bot.domain.roles import COMMAND_LINE  # noqa: E402
from bot.notify.slack import SlackNotifications  # noqa: E402
from bot.notify.slack_client import make_client  # noqa: E402
from bot.services.deliveries.views import delivery_detail  # noqa: E402
from bot.services.digest import build, claim, run_digest  # noqa: E402
from bot.store.models import (  # noqa: E402
    Audience,
    Delivery,
    Digest,
    DigestSnapshot,
    Execution,
    KpiCounter,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
HISTORY_HOURS = 48
RECURRING_SHARE = 10  # one delivery in ten is a recurring one's execution
CHANNEL = "C0KPI"


def _counters(rng: random.Random, to_deliver: int, progress: float) -> dict[str, int]:
    """Counters of an execution `progress` (0..1) of the way through its life."""
    relayed = int(to_deliver * min(1.0, progress * 4))  # relaying ends in the first quarter
    failed = int(relayed * rng.uniform(0.005, 0.06) * progress)
    pending = int(relayed * 0.02 * (1 - progress))
    sent = relayed - failed - pending
    opens = int(sent * rng.uniform(0.10, 0.45) * min(1.0, progress * 2))
    clicks = int(opens * rng.uniform(0.05, 0.3))
    return {
        "to_deliver": to_deliver,
        "pending": pending,
        "sent": sent,
        "failed": failed,
        "unique_opens": opens,
        "unique_clicks": clicks,
    }


def seed(ctx: Context, n: int) -> None:
    """N active executions, and 48 posted hourly digests with their snapshots."""
    rng = random.Random(7)
    with ctx.sessions.begin() as s:
        audience = Audience(name="everyone", version=1, created_at=NOW, updated_at=NOW)
        s.add(audience)
        s.flush()
        deliveries: list[dict[str, Any]] = []
        executions: list[dict[str, Any]] = []
        for number in range(1, n + 1):
            recurring = number % RECURRING_SHARE == 0
            deliveries.append(
                {
                    "id": number,
                    "ref": f"delivery-{number:04d}",
                    "name": f"Autumn campaign {number} — {rng.choice(['EU', 'US', 'APAC'])}",
                    "audience_id": audience.id,
                    "sender": "news@shop.example",
                    "subject": "Hi",
                    "text": "Hello",
                    "validity_seconds": 302_400,
                    "definition_hash": "bench",
                    "state": "in-progress",
                    "recurrence_cron": "0 8 * * *" if recurring else None,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
            started = NOW - timedelta(hours=rng.randint(1, 80))
            executions.append(
                {
                    "id": number,
                    "delivery_id": number,
                    "key": f"{started:%Y-%m-%d}" if recurring else "main",
                    "state": "finished",
                    "started_at": started,
                    "validity_ends_at": started + timedelta(seconds=302_400),
                    "created_at": NOW,
                }
            )
        s.execute(insert(Delivery), deliveries)
        s.execute(insert(Execution), executions)
        sizes = {e["id"]: int(10 ** rng.uniform(2.5, 5.3)) for e in executions}
        lives = {e["id"]: e["started_at"] for e in executions}
        life = timedelta(seconds=302_400)
        s.execute(
            insert(KpiCounter),
            [
                {
                    "execution_id": e["id"],
                    **_counters(rng, sizes[e["id"]], (NOW - lives[e["id"]]) / life),
                    "updated_at": NOW,
                }
                for e in executions
            ],
        )
        for hour in range(HISTORY_HOURS, 0, -1):
            at = NOW - timedelta(hours=hour)
            digest = Digest(
                slot_at=at,
                channel=CHANNEL,
                state="posted",
                attempts=1,
                built_at=at,
                posted_at=at,
                created_at=at,
            )
            s.add(digest)
            s.flush()
            rows = [
                {
                    "digest_id": digest.id,
                    "execution_id": e["id"],
                    **_counters(rng, sizes[e["id"]], (at - lives[e["id"]]) / life),
                }
                for e in executions
                if lives[e["id"]] <= at
            ]
            if rows:
                s.execute(insert(DigestSnapshot), rows)


def naive(ctx: Context) -> float:
    """The reference: each delivery's detail read on its own, as `deliveries show` does."""
    with ctx.sessions() as s:
        refs = list(s.scalars(select(Delivery.ref).order_by(Delivery.ref)))
    started = time.perf_counter()
    for ref in refs:
        delivery_detail(ctx, COMMAND_LINE, ref).to_json()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    args = parser.parse_args()
    n = args.deliveries
    print(f"python {platform.python_version()} on {platform.machine()}, {n} active deliveries")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        mock = MockSlack()
        mock.start()
        settings = load_settings(
            _env_file=None,
            database_url=url,
            mail_url=f"maildir://{Path(tmp) / 'outbox'}",
            tracking_secret="bench",
            slack_bot_token=SecretStr("xoxb-bench"),
            slack_api_url=f"{mock.url}/api/",
            kpi_channel=CHANNEL,
        )
        root = bootstrap(settings, FixedClock(NOW + timedelta(minutes=1)))
        ctx = root.context
        with ctx.sessions() as s:
            if s.scalar(select(func.count()).select_from(Delivery)):
                sys.exit("the database is not empty; give an empty one")
        started = time.perf_counter()
        seed(ctx, n)
        with ctx.sessions() as s:
            snapshots = s.scalar(select(func.count()).select_from(DigestSnapshot))
            deliveries = s.scalar(select(func.count()).select_from(Delivery))
        print(
            f"seed: {time.perf_counter() - started:.2f} s ({deliveries} deliveries, "
            f"{snapshots:,} snapshots of {HISTORY_HOURS} earlier digests)"
        )

        started = time.perf_counter()
        claimed = claim(ctx, NOW, CHANNEL)
        assert claimed is not None
        rows = build(ctx, *claimed)
        built = time.perf_counter() - started
        print(f"build one digest (claim, query, snapshots, messages, chart data): {built:.3f} s")
        print(f"  rows: {rows}")

        from bot.notify.charts import kpi_chart_png, load
        from bot.store.models import DigestPart

        started = time.perf_counter()
        load()  # what the sender process does in the background when it starts
        imported = time.perf_counter() - started

        from bot.services.digest_views import DigestChart

        with ctx.sessions() as s:
            stored = s.scalar(
                select(DigestPart.payload).where(
                    DigestPart.digest_id == claimed[0], DigestPart.kind == "chart"
                )
            )
        chart = DigestChart.from_json(stored or {})
        started = time.perf_counter()
        png = kpi_chart_png(chart)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        kpi_chart_png(chart)
        warm = time.perf_counter() - started
        points = sum(len(line.points) for line in chart.series)
        print(
            f"chart: matplotlib import {imported:.3f} s (once, when the sender starts), "
            f"first draw {cold:.3f} s, next draws {warm:.3f} s; {len(png):,} bytes, "
            f"{points} points"
        )
        print(f"one digest at its tick: build + first draw = {built + cold:.3f} s (goal < 1 s)")

        # Post what was built: the claim is released as a failed attempt would leave it.
        with ctx.sessions.begin() as s:
            d = s.get(Digest, claimed[0])
            assert d is not None
            d.state, d.claim_token = "pending", None

        async def post() -> Any:
            async def no_pause(_: float) -> None:
                return None

            return await run_digest(ctx, SlackNotifications(make_client(settings)), sleep=no_pause)

        started = time.perf_counter()
        report = asyncio.run(post())
        posted = time.perf_counter() - started
        methods = ["upload POST" if c.path.startswith("/upload/") else c.method for c in mock.calls]
        counts = {m: methods.count(m) for m in dict.fromkeys(methods)}
        print(f"post to the mock Slack (chart drawn, no pause between posts): {posted:.3f} s")
        print(f"  status {report.status}: {report.messages} messages, chart {report.chart}")
        print(f"  Slack calls: {counts}")
        print(f"  messages per 40 deliveries: {report.messages / (n / 40):.2f} (goal: at most 1)")

        reference = naive(ctx)
        print(f"reference: delivery_detail for each of {deliveries} deliveries: {reference:.3f} s")
        print(f"ratio reference / digest build: {reference / built:.1f}")
        mock.stop()
        root.close()
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
