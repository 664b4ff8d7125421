"""Three worker machines, one PostgreSQL, one relay: a send survives a kill, a stall and a
cut link, with every recipient sent once and the duplicates inside the stated bound.

The nodes are network namespaces on a bridge (`nodes.py`), each worker in its own pid
space and hostname, running the command a user runs (`python -m bot worker`). The
PostgreSQL node runs a PostgreSQL made for the test; the MTA node runs `sink.py`, which
logs each accepted message's `X-Greenlight-Log` and sender address. While a
30,000-recipient delivery is sent:

(a) worker 1 is killed (SIGKILL on every process of the node), and started again once
    its jobs were taken over (a fresh pid space, as a container restart);
(b) worker 2 is stopped (SIGSTOP) past the stall timeout, and continued (SIGCONT) once
    its jobs were taken over and others sent on;
(c) worker 3's link is cut (`ip link set eth0 down`) past the stall timeout, and restored.

Then: every recipient has exactly one log, final; every log reached the relay (lost 0);
a log reached it twice only if one copy was in flight on a node at its event, and those
stay within the bound README states; a node continued after (b) or restored after (c)
started no message it no longer owned; the delivery is finished and its KPIs equal a
recount from the logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nodes import Network, Node, cannot_make_namespaces, run
from scenario import CLI, as_user, detail_json, prepare_one, settings_for
from sqlalchemy import text

from bot.bootstrap import Root, bootstrap
from bot.domain.roles import Role
from bot.engine.sender import UNRECORDED_MAX
from bot.jobs.queue import RECOVER_SECONDS, ServerQueue
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.views import compute_stats

REPO = Path(__file__).resolve().parents[2]
PG_BIN = sorted(glob("/usr/lib/postgresql/*/bin"))
WHY_NOT = cannot_make_namespaces() or (None if PG_BIN else "PostgreSQL is not installed")
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

RECIPIENTS = 30_000
CONCURRENCY = 2  # send jobs per worker node
POOL = 2  # SMTP connections per send job
STALL = 8.0  # STALL_TIMEOUT_SECONDS
RATE = 250.0  # the fleet's SEND_RATE_LIMIT: the send lasts long enough for three events
# What one node can have relayed and not recorded at an instant: per send job, a message
# on each connection and two groups of answers waiting for a write (engine.sender).
IN_FLIGHT_PER_NODE = CONCURRENCY * (POOL + 2 * UNRECORDED_MAX)
SECRET = "cluster-tracking-secret"


@dataclass
class Accepted:
    at: float
    peer: str
    log_id: int


@dataclass
class Sink:
    path: Path
    offset: int = 0
    seen: list[Accepted] = field(default_factory=list)

    def read(self) -> list[Accepted]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            at, peer, log_id, _ = line.split(" ", 3)
            self.seen.append(Accepted(float(at), peer, int(log_id)))
        return self.seen

    def count(self, peer: str | None = None, since: float = 0.0) -> int:
        return sum(1 for a in self.read() if (peer is None or a.peer == peer) and a.at >= since)


@dataclass
class Cluster:
    network: Network
    root: Root
    sink: Sink
    work: Path
    worker_env: dict[str, str]
    logs: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))

    def node(self, name: str) -> Node:
        return self.network.nodes[name]

    def start_worker(self, name: str) -> None:
        node = self.node(name)
        home = self.work / name
        home.mkdir(exist_ok=True)
        log = home / f"worker-{len(self.logs[name])}.log"
        self.logs[name].append(log)
        command = (
            f"hostname {name} && exec {sys.executable} -m bot worker --concurrency {CONCURRENCY}"
        )
        process = subprocess.Popen(
            node.exec_args(
                "unshare", "--uts", "--pid", "--fork", "--mount-proc", "--", "sh", "-c", command
            ),
            env=self.worker_env,
            cwd=home,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.network.processes.append(process)

    def scalar(self, query: str) -> int:
        with self.root.context.sessions() as s:
            return int(s.scalar(text(query)) or 0)

    def taken_over(self) -> int:
        """Send jobs that the recovery ended because their worker's heartbeat stopped."""
        return self.scalar(
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE status = 'failed' AND task_name = 'greenlight:send'"
        )

    def live_workers(self) -> int:
        return self.scalar("SELECT count(*) FROM procrastinate_workers")

    def finished(self) -> bool:
        return self.scalar("SELECT count(*) FROM deliveries WHERE state = 'finished'") == 1

    def count(self, peer: str | None = None, since: float = 0.0) -> int:
        return self.sink.count(peer, since)

    def activity(self) -> str:
        """What every database session is doing (who waits for which lock)."""
        query = (
            "SELECT client_addr, state, wait_event_type, wait_event, left(query, 120),"
            " pg_blocking_pids(pid) FROM pg_stat_activity WHERE datname = 'greenlight'"
        )
        with self.root.context.sessions() as s:
            rows = s.execute(text(query)).all()
        return "\n".join(" | ".join(str(v) for v in row) for row in rows)

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
            for paths in self.logs.values()
            for p in paths
        )


def wait_until(what: str, condition: Callable[[], bool], cluster: Cluster, timeout: float) -> None:
    """Until the nodes have done something (polled, never slept through)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what}: not within {timeout:.0f} s\n{cluster.activity()}\n{cluster.worker_logs()}"
            )
        assert not cluster.finished() or what == "the delivery finished", (
            f"the delivery finished before {what}: the send was too short for the test"
        )
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    network = Network()
    work = Path(tempfile.mkdtemp(prefix="glc-"))  # PostgreSQL's user must reach it
    os.chmod(work, 0o755)
    try:
        network.up(["db", "mta", "w1", "w2", "w3"])
        db, mta = network.nodes["db"], network.nodes["mta"]
        socket_dir = _postgres(network, db, work)
        sink_log = work / "sink.log"
        sink_log.touch()
        ready = work / "sink.out"
        network.processes.append(
            subprocess.Popen(
                mta.exec_args(
                    sys.executable,
                    str(REPO / "tests/cluster/sink.py"),
                    mta.address,
                    "2525",
                    str(sink_log),
                ),
                stdout=ready.open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        settings = settings_for(
            tmp_path,
            database_url=f"postgresql://greenlight@/greenlight?host={socket_dir}",
            mail_url=f"smtp://{mta.address}:2525",
            tracking_secret=SECRET,
        )
        root = bootstrap(settings)  # migrates, as the first `worker` would
        worker_env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": f"postgresql://greenlight@{db.address}:5432/greenlight",
            "MAIL_URL": f"smtp://{mta.address}:2525",
            "TRACKING_SECRET": SECRET,
            "FEEDBACK_SECRET": "test-feedback-secret",
            "SEND_BATCH_SIZE": "100",
            "SMTP_POOL_SIZE": str(POOL),
            "SEND_PARALLELISM": "6",
            "SEND_RATE_LIMIT": str(RATE),
            "STALL_TIMEOUT_SECONDS": str(STALL),
            "LOG_LEVEL": "INFO",
        }
        deadline = time.monotonic() + 30
        while b"listening" not in ready.read_bytes():
            assert time.monotonic() < deadline, ready.read_text()
            time.sleep(0.05)
        made = Cluster(network, root, Sink(sink_log), work, worker_env)
        yield made
        root.close()
    finally:
        network.down()
        run("rm", "-rf", str(work), check=False)


def _postgres(network: Network, db: Node, work: Path) -> Path:
    """A PostgreSQL of the test's own on the db node; its socket directory (for the test)."""
    bin_dir = Path(PG_BIN[-1])
    data, sockets = work / "pgdata", work / "pgsock"
    sockets.mkdir()
    run("chown", "postgres", str(work), str(sockets))
    run(
        "runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(data),
        "-A", "trust", "-U", "greenlight", "--no-sync",
    )  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {db.address.rsplit('.', 1)[0]}.0/24 trust\n")
    network.processes.append(
        subprocess.Popen(
            db.exec_args(
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={db.address}",
                "-c",
                f"unix_socket_directories={sockets}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ),
            stdout=(work / "postgres.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    deadline = time.monotonic() + 60
    while run(str(bin_dir / "pg_isready"), "-q", "-h", str(sockets), check=False).returncode:
        assert time.monotonic() < deadline, (work / "postgres.log").read_text()
        time.sleep(0.1)
    with psycopg.connect(f"host={sockets} user=greenlight dbname=postgres", autocommit=True) as c:
        c.execute("CREATE DATABASE greenlight")
    return sockets


def test_three_nodes_send_once_through_a_kill_a_stall_and_a_cut_link(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster
    ip = {name: c.node(name).address for name in ("w1", "w2", "w3")}
    for name in ip:
        c.start_worker(name)
    wait_until("three workers registered", lambda: c.live_workers() >= 6, c, 60)  # two each

    emails = [f"user{i}@x.example" for i in range(RECIPIENTS)]
    prepare_one(c.root.context, tmp_path, emails, text="Hello {{ email }}")
    confirm_send(c.root.context, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
    started = time.monotonic()
    ServerQueue(c.root.settings).kick()
    events: dict[str, Any] = {}

    # (a) kill worker 1 while it sends; its jobs are taken over when its heartbeat stops.
    wait_until("every node sends", lambda: all(c.count(ip[n]) >= 100 for n in ip), c, 120)
    assert c.taken_over() == 0, "no job is taken over while its worker lives"
    before = c.taken_over()
    killed_at = time.monotonic()
    assert c.node("w1").signal(signal.SIGKILL) >= 1
    wait_until("w1's jobs were taken over", lambda: c.taken_over() > before, c, STALL + 30)
    events["a"] = {"takeover_s": round(time.monotonic() - killed_at, 1)}
    c.start_worker("w1")  # the node comes back, in a fresh pid space

    # (b) stop worker 2 past the stall timeout; continue it once others sent its share.
    mark = time.monotonic()
    wait_until("w2 sends", lambda: c.count(ip["w2"], since=mark) >= 50, c, 60)
    before = c.taken_over()
    stopped_at = time.monotonic()
    assert c.node("w2").signal(signal.SIGSTOP) >= 1
    wait_until("w2's jobs were taken over", lambda: c.taken_over() > before, c, STALL + 30)
    events["b"] = {"takeover_s": round(time.monotonic() - stopped_at, 1)}
    mark = time.monotonic()
    wait_until("others send on", lambda: c.count(since=mark) >= 500, c, 60)
    continued_at = time.monotonic()
    c.node("w2").signal(signal.SIGCONT)

    # (c) cut worker 3's link past the stall timeout, then restore it.
    mark = time.monotonic()
    wait_until("w3 sends", lambda: c.count(ip["w3"], since=mark) >= 50, c, 60)
    before = c.taken_over()
    cut_at = time.monotonic()
    c.node("w3").cut()
    wait_until("w3's jobs were taken over", lambda: c.taken_over() > before, c, STALL + 30)
    events["c"] = {"takeover_s": round(time.monotonic() - cut_at, 1)}
    mark = time.monotonic()
    wait_until("others send on", lambda: c.count(since=mark) >= 500, c, 60)
    restored_at = time.monotonic()
    c.node("w3").restore()

    wait_until("the delivery finished", c.finished, c, 300)
    elapsed = time.monotonic() - started

    # Every recipient has exactly one log, final, and none is claimed.
    with c.root.context.sessions() as s:
        per_status = dict(
            s.execute(text("SELECT status, count(*) FROM sending_logs GROUP BY status")).all()
        )
        profiles = s.scalar(text("SELECT count(DISTINCT profile_id) FROM sending_logs"))
        ids = set(s.scalars(text("SELECT id FROM sending_logs")))
        claimed = s.scalar(text("SELECT count(*) FROM sending_logs WHERE claim_token IS NOT NULL"))
    assert per_status == {"sent": RECIPIENTS}, per_status
    assert profiles == RECIPIENTS and len(ids) == RECIPIENTS and claimed == 0

    # Lost 0: every log reached the relay; duplicates only from the three events.
    accepted = c.sink.read()
    copies = Counter(a.log_id for a in accepted)
    assert set(copies) == ids, "every log reached the relay, and nothing else did"
    twice = {log_id for log_id, n in copies.items() if n > 1}
    by_log: dict[int, list[Accepted]] = defaultdict(list)
    for a in accepted:
        if a.log_id in twice:
            by_log[a.log_id].append(a)
    at_event = {"a": 0, "b": 0, "c": 0}
    for log_id, seen in by_log.items():
        peers = {a.peer for a in seen}
        # The copy that was not recorded came from the node of an event, sent before it.
        if ip["w1"] in peers and any(a.peer == ip["w1"] and a.at <= killed_at for a in seen):
            at_event["a"] += 1
        elif ip["w2"] in peers and any(
            a.peer == ip["w2"] and a.at <= continued_at + 1 for a in seen
        ):
            at_event["b"] += 1
        elif ip["w3"] in peers:
            at_event["c"] += 1
        else:
            pytest.fail(f"log {log_id} was sent twice outside every event: {seen}")

    # After SIGCONT, w2 finished at most what was on its connections when it stopped: it
    # started no message of the jobs taken over (its fence said no).
    def resent_after(peer: str, since: float, until: float = float("inf")) -> list[Accepted]:
        """Copies `peer` completed between `since` and `until` that another node had
        already sent. `until`: the next event, whose own takeover `peer` may take part in
        (it then rightly sends again what the cut node had relayed and not recorded)."""
        return [
            a
            for a in accepted
            if a.peer == peer and since < a.at < until and a.log_id in twice
            if any(b.peer != peer and b.at < a.at for b in by_log[a.log_id])
        ]

    late = resent_after(ip["w2"], continued_at, until=cut_at)
    assert len(late) <= CONCURRENCY * POOL, late
    after_cut = resent_after(ip["w3"], restored_at)
    assert len(after_cut) <= CONCURRENCY * POOL, after_cut
    for name, n in at_event.items():
        assert n <= IN_FLIGHT_PER_NODE, (name, n, IN_FLIGHT_PER_NODE)
    # Taken over once the heartbeat stopped (its last one came at most a heartbeat
    # interval, STALL / 3, before the event), never before, and by the next recovery.
    for name, event in events.items():
        assert STALL * 2 / 3 <= event["takeover_s"] <= STALL + RECOVER_SECONDS + 5, (name, event)

    # Finished, and the KPIs the Deployment message shows equal a recount from the logs.
    shown = detail_json(c.root.context, "big")
    assert shown["state"] == "finished"
    recounted = compute_stats(c.root.context, CLI, "big").to_json()
    assert shown["kpis"] == recounted["kpis"]
    assert shown["kpis"]["sent"] == RECIPIENTS

    summary = {
        "recipients": RECIPIENTS,
        "elapsed_s": round(elapsed, 1),
        "accepted_by_relay": len(accepted),
        "duplicates": len(twice),
        "duplicates_at_event": at_event,
        "bound_per_event": IN_FLIGHT_PER_NODE,
        "late_after_sigcont": len(late),
        "late_after_restore": len(after_cut),
        "events": events,
        "jobs_taken_over": c.taken_over(),
    }
    print("cluster summary:", json.dumps(summary))
    (tmp_path / "cluster-summary.json").write_text(json.dumps(summary, indent=2))
