"""How fast `profiles import` is on SQLite, and how much memory it takes, against the raw
speed of sqlite3, for 100,000 and 1,000,000 rows.

For each size it generates a CSV in a temporary folder and runs the real command,
`python -m bot profiles import FILE [--audience bench]`, as a child process, measuring
its wall time and its peak resident memory (the child's own `ru_maxrss`, from `wait4`):
first into a fresh database (every row created), then again (every row unchanged), then
without an audience into another fresh database. The reference, in a child too, reads
the same CSV with the csv module and writes it with one sqlite3 `executemany` into an
identical, freshly migrated database: no validation, no duplicate detection, no
audience, every row in memory at once. A one-row import gives the command's floor (the
interpreter and its libraries).

    .venv/bin/python benchmarks/import_profiles.py [ROWS ...]     (default 100000 1000000)
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ZONES = ["Europe/Paris", "Europe/London", "America/New_York", "Asia/Tokyo", ""]
PLANS = ["free", "pro", "team"]
CITIES = ["Paris", "Lyon", "London", "Berlin", "New York", "Tokyo", "São Paulo"]
ROOT = Path(__file__).resolve().parents[1]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(1)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "last_name", "timezone", "plan", "city"])
        for i in range(rows):
            writer.writerow(
                [
                    f"user{i:07d}@example.com",
                    f"First{i % 977}",
                    f"Last{i % 1013}",
                    rng.choice(ZONES),
                    rng.choice(PLANS),
                    rng.choice(CITIES),
                ]
            )


def migrated(folder: Path, name: str) -> str:
    # Imported here: the reference's child process loads nothing of Greenlight.
    from bot.bootstrap import bootstrap
    from bot.config import load_settings

    url = f"sqlite:///{folder / name}"
    bootstrap(load_settings(_env_file=None, database_url=url)).close()
    return url


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float
    output: str


def child(command: list[str], env: dict[str, str]) -> Run:
    """Run `command`; its wall time and its own peak RSS (not its siblings')."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command} failed ({proc.returncode}):\n{output}")
    return Run(seconds, usage.ru_maxrss / 1024, output)


def import_run(folder: Path, url: str, path: Path, audience: str | None) -> Run:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": url,
        "TRACKING_SECRET": "bench",
        "MAIL_URL": f"maildir://{folder / 'outbox'}",
    }
    command = [sys.executable, "-m", "bot", "profiles", "import", str(path), "--json"]
    return child([*command, "--audience", audience] if audience else command, env)


def show(label: str, run: Run, rows: int, note: str = "") -> None:
    print(
        f"  {label:<28} {run.seconds:6.2f} s {rows / run.seconds:9,.0f} rows/s "
        f"{run.peak_mb:6.0f} MB  {note}".rstrip()
    )


def raw_reference(path: Path, database: Path) -> None:
    """csv.reader + json.dumps + one sqlite3 executemany: the floor for this work."""
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
    conn = sqlite3.connect(database)
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


def measure(folder: Path, rows: int) -> None:
    path = folder / f"profiles-{rows}.csv"
    write_csv(path, rows)
    print(f"{rows:,} rows, {path.stat().st_size / 1e6:.1f} MB of CSV")
    url = migrated(folder, f"audience-{rows}.db")
    for label in ("import --audience (create)", "re-import (unchanged)"):
        run = import_run(folder, url, path, "bench")
        report = json.loads(run.output)
        note = (
            f"created {report['created']:,}, unchanged {report['unchanged']:,}, "
            f"members added {report['members_added']:,}"
        )
        show(label, run, rows, note)
    plain = import_run(folder, migrated(folder, f"plain-{rows}.db"), path, None)
    show("import (create)", plain, rows)
    migrated(folder, f"reference-{rows}.db")
    reference = child(
        [sys.executable, __file__, "--reference", str(path), str(folder / f"reference-{rows}.db")],
        dict(os.environ),
    )
    show("raw sqlite3 executemany", reference, rows)
    print(f"  import (create) / raw sqlite3: {plain.seconds / reference.seconds:.1f}x")
    path.unlink()


def main() -> None:
    if sys.argv[1:2] == ["--reference"]:
        raw_reference(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    print(
        f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one = folder / "one.csv"
        write_csv(one, 1)
        floor = import_run(folder, migrated(folder, "one.db"), one, "bench")
        print(f"one row (the command's floor): {floor.seconds:.2f} s, {floor.peak_mb:.0f} MB")
        for rows in sizes:
            measure(folder, rows)


if __name__ == "__main__":
    main()
