"""What the PostgreSQL benchmarks share: an emptied database, real `python -m bot worker`
processes, their peak memory and CPU time, and the delivery's state as the database holds it.

Used by `send_throughput.py --postgres` and `ack_latency.py --postgres`. The database
given is emptied (its `public` schema dropped and migrated again): give one made for
the benchmarks, never one whose data matters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, text

from bot.store.db import make_engine, upgrade

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def reset(url: str) -> None:
    """Drop everything in the database's `public` schema, then migrate it to the head."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade(engine)
    finally:
        engine.dispose()


def analyze(url: str) -> None:
    """`VACUUM ANALYZE` after the bulk seed: the planner's statistics as a database in use
    has them (autovacuum would analyze the new rows within a minute or so)."""
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def server_version(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def delivery_state(engine: Engine, ref: str) -> str | None:
    """The delivery's state column, read the way any client would (no ORM, one row)."""
    with engine.connect() as conn:
        value = conn.execute(text("SELECT state FROM deliveries WHERE ref = :r"), {"r": ref})
        return value.scalar_one_or_none()


def database_counters(engine: Engine) -> dict[str, int]:
    """The database's cumulative counters (pg_stat_database): commits, rows written.

    A backend reports its counts when its transaction ends, at most once a second,
    and when it exits: read them after the processes measured have stopped."""
    query = text(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
        "FROM pg_stat_database WHERE datname = current_database()"
    )
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(query).one()
    return dict(row._mapping)


def listening_for_sends(engine: Engine) -> int:
    """Connections of this database that LISTEN for new send jobs: a procrastinate worker
    logs that it starts before it listens, and a job deferred in between would wait for
    its next poll (5 s); once it listens, a deferred job wakes it at once."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LISTEN %' AND (query LIKE '%send%' OR query LIKE '%any_queue%')"
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# -- /proc readings -----------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MB; read before it exits."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, every other thread) CPU seconds of the process so far: a worker's
    event loop (rendering, building, SMTP) against its database writes in threads."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


def _serves(entry: Path, database: str) -> bool:
    """A backend's title is `postgres: [CLUSTER:] USER DATABASE CLIENT STATE`; the
    background processes' titles name no client, and are shared by every database."""
    title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    words = title.split()
    for i, word in enumerate(words[3:], start=3):
        if word == "[local]" or (word.endswith(")") and "(" in word):
            return words[i - 1] == database
    return True


class CpuTracker:
    """CPU seconds of processes that may come and go during a run (PostgreSQL's backends:
    a connection pool closes its spare connections): `sample` often, then `seconds`
    sums, per process seen, its last reading less its reading at `start` (0 for one
    started meanwhile). A process that exits loses at most its time since the last sample.
    """

    def __init__(self, names: tuple[str, ...], database: str | None = None) -> None:
        self.names = names
        self.database = database
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def start(self) -> None:
        self.first = self.last = self._read()

    def sample(self) -> None:
        self.last = {**self.last, **self._read()}

    def seconds(self) -> dict[str, float]:
        self.sample()
        totals = dict.fromkeys(self.names, 0.0)
        for pid, (name, seconds) in self.last.items():
            totals[name] += seconds - self.first.get(pid, (name, 0.0))[1]
        return totals

    def _read(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                if comm not in self.names:
                    continue
                if self.database and comm == "postgres" and not _serves(entry, self.database):
                    continue
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
        return found


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


# -- the workers ---------------------------------------------------------------------------


def worker_env(database_url: str, mail_url: str, **settings: str | int | float) -> dict[str, str]:
    """The environment of a worker: no `.env` is read (its folder has none)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
        "MAIL_URL": mail_url,
        "TRACKING_SECRET": "bench",
        "PUBLIC_BASE_URL": "https://mail.example.com",
        "LOG_LEVEL": "INFO",
    }
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


def _fetches_sends(line: str) -> bool:
    """procrastinate's "Starting worker on queues …" line, for a worker that takes sends."""
    return "Starting worker on" in line and ("send" in line or "all queues" in line)


@dataclass
class Fleet:
    """`python -m bot worker` processes, each its own process group (signals to it alone)."""

    env: dict[str, str]
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    profile: str | None = None  # cProfile each worker to PROFILE.wN

    def start(self, count: int, concurrency: int) -> None:
        for _ in range(count):
            n = len(self.processes)
            command = [sys.executable]
            if self.profile:
                command += [__file__, "profile", f"{self.profile}.w{n}"]
            command += ["-m", "bot", "worker", "--concurrency", str(concurrency)]
            with (self.folder / f"worker-{n}.log").open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        env=self.env,
                        cwd=self.folder,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def log(self, n: int) -> str:
        return (self.folder / f"worker-{n}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for n, process in enumerate(self.processes):
            if process.poll() is not None:
                raise SystemExit(f"worker {n} exited ({process.returncode}):\n{self.log(n)}")

    def wait_ready(self, engine: Engine, timeout: float = 60) -> float:
        """Until every process fetches send jobs (its log says procrastinate's worker on
        the send queue started) and listens for new ones; returns the seconds it took."""
        started = time.monotonic()

        def ready() -> bool:
            logs = [self.log(n).splitlines() for n in range(len(self.processes))]
            fetching = all(any(_fetches_sends(line) for line in log) for log in logs)
            return fetching and listening_for_sends(engine) >= len(self.processes)

        wait_until("the workers started", ready, timeout, self.check_alive)
        return time.monotonic() - started

    def peaks_mb(self) -> list[float]:
        return [peak_rss_mb(pid) for pid in self.pids]

    def cpu(self) -> list[float]:
        return [cpu_seconds(pid) for pid in self.pids]

    def thread_cpu(self) -> tuple[float, float]:
        """(main threads, other threads) CPU seconds, summed over the workers."""
        readings = [thread_cpu_seconds(pid) for pid in self.pids]
        return sum(r[0] for r in readings), sum(r[1] for r in readings)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (each ends after its batch in flight, recorded), SIGKILL past `timeout`."""
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def wait_until(
    what: str,
    condition: Callable[[], bool],
    timeout: float,
    check: Callable[[], None] | None = None,
    every: float = 0.02,
) -> None:
    """Poll `condition` (and `check`, which raises when something died) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


# -- profiling every thread of a process -----------------------------------------------------


def profile_module(out: str, module: str, argv: list[str]) -> None:
    """Run `python -m MODULE ARGV` with cProfile in every thread (`-m cProfile` sees only
    the main one, and the sender's database writes and the handlers' reads run in worker
    threads); the threads' stats are merged into OUT when the module returns."""
    import cProfile
    import pstats
    import runpy
    import threading

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: object) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook in the new thread

    main = cProfile.Profile()
    profiles.append(main)
    threading.setprofile(start)
    sys.argv = [module, *argv]
    main.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        main.disable()
        threading.setprofile(None)
        with lock:
            for profile in profiles:
                profile.create_stats()
            stats = pstats.Stats(*profiles)
        stats.dump_stats(out)


if __name__ == "__main__":
    # python benchmarks/pg_fleet.py profile OUT -m MODULE [ARGS…]
    if len(sys.argv) < 5 or sys.argv[1] != "profile" or sys.argv[3] != "-m":
        raise SystemExit("usage: pg_fleet.py profile OUT -m MODULE [ARGS…]")
    profile_module(sys.argv[2], sys.argv[4], sys.argv[5:])
