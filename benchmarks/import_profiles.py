"""How fast `profiles import` is on SQLite, against the raw speed of sqlite3.

Generates a CSV of 100,000 profiles in a temporary folder, imports it into a fresh
database (first pass: every row is created; second pass: every row is unchanged), and
compares the first pass with a reference: the same CSV read with the csv module and
written with one sqlite3 `executemany` into an identical, freshly migrated database.
The reference does no validation, no duplicate detection and no audience, so the ratio
says what the checks and the ORM cost.

    .venv/bin/python benchmarks/import_profiles.py [ROWS]
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bot.bootstrap import Root, bootstrap
from bot.config import load_settings
from bot.context import Context
from bot.domain.roles import COMMAND_LINE
from bot.services.imports.profiles import ProfilesImportReport, import_profiles

ZONES = ["Europe/Paris", "Europe/London", "America/New_York", "Asia/Tokyo", ""]
PLANS = ["free", "pro", "team"]
CITIES = ["Paris", "Lyon", "London", "Berlin", "New York", "Tokyo", "São Paulo"]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(1)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "last_name", "timezone", "plan", "city"])
        for i in range(rows):
            writer.writerow(
                [
                    f"user{i:06d}@example.com",
                    f"First{i % 977}",
                    f"Last{i % 1013}",
                    rng.choice(ZONES),
                    rng.choice(PLANS),
                    rng.choice(CITIES),
                ]
            )


def fresh_root(folder: Path, name: str) -> Root:
    settings = load_settings(_env_file=None, database_url=f"sqlite:///{folder / name}")
    return bootstrap(settings)


def timed_import(
    ctx: Context, path: Path, audience: str | None
) -> tuple[float, ProfilesImportReport]:
    start = time.perf_counter()
    report = import_profiles(ctx, COMMAND_LINE, path, audience)
    return time.perf_counter() - start, report


def show(label: str, seconds: float, rows: int, note: str = "") -> None:
    print(f"  {label:<26} {seconds:6.2f} s {rows / seconds:9,.0f} rows/s  {note}".rstrip())


def raw_reference(folder: Path, path: Path) -> float:
    """csv.reader + json.dumps + one sqlite3 executemany: the floor for this work."""
    fresh_root(folder, "reference.db").close()  # migrate an identical schema
    start = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    with path.open(newline="", encoding="utf-8") as source:
        reader = csv.reader(source)
        next(reader)
        rows = [
            (
                email,
                email.lower(),
                first or None,
                last or None,
                tz or None,
                json.dumps({"plan": plan, "city": city}),
                "valid",
                0,
                now,
                now,
            )
            for email, first, last, tz, plan, city in reader
        ]
    conn = sqlite3.connect(folder / "reference.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    with conn:
        conn.executemany(
            "INSERT INTO profiles (email, email_key, first_name, last_name, timezone, "
            "attributes, email_status, error_count, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()
    return time.perf_counter() - start


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "profiles.csv"
        write_csv(path, rows)
        print(
            f"{rows:,} rows, {path.stat().st_size / 1e6:.1f} MB of CSV; SQLite "
            f"{sqlite3.sqlite_version}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs"
        )

        root = fresh_root(folder, "greenlight.db")
        for label in ("import --audience (create)", "re-import (unchanged)"):
            seconds, report = timed_import(root.context, path, "bench")
            note = (
                f"created {report.created:,}, unchanged {report.unchanged:,}, "
                f"members added {report.members_added:,}"
            )
            show(label, seconds, rows, note)
        root.close()

        root = fresh_root(folder, "plain.db")
        plain, _ = timed_import(root.context, path, None)
        root.close()
        show("import (create)", plain, rows)

        reference = raw_reference(folder, path)
        show("raw sqlite3 executemany", reference, rows)
        print(f"  import (create) / raw sqlite3: {plain / reference:.1f}x")


if __name__ == "__main__":
    main()
