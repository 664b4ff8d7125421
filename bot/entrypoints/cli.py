"""`python -m bot` (also installed as `greenlight`): the command line.

Each command parses its arguments, calls one service and prints the result, as
text for people or as stable JSON with `--json` (README documents the shapes).
Exit codes: 0 done, 1 refused (the message says why and what to do), 2 bad usage or
settings, 3 an error of ours (logged with an id to quote).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.bootstrap import Root, bootstrap
from bot.config import Settings, SettingsError, get_settings
from bot.domain.approval import Choice
from bot.domain.errors import DomainError
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import COMMAND_LINE, Actor, Role
from bot.entrypoints.cli_text import delivery_text
from bot.entrypoints.worker import run_workers
from bot.jobs.due_work import DueReport, run_due
from bot.services import roles
from bot.services.audit import audit_trail
from bot.services.deliveries import views
from bot.services.deliveries.lifecycle import (
    confirm_send,
    pause_delivery,
    resume_delivery,
    stop_delivery,
)
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.deliveries.preview import preview
from bot.services.digest import DigestReport
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.progress import Progress
from bot.services.recurring.approvals import decide, open_requests
from bot.store.db import current_revision, database_problem, upgrade
from bot.store.send_lock import SendLockBusy

log = logging.getLogger("greenlight")

Handler = Callable[[Root, argparse.Namespace], int]

# The command line is run by whoever runs Greenlight, on its machine: it holds every role.
ME = COMMAND_LINE


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


# -- commands ---------------------------------------------------------------------------


def cmd_db_upgrade(root: Root, args: argparse.Namespace) -> int:
    upgrade(root.engine)
    print(f"database is at revision {current_revision(root.engine)}")
    return 0


def _print_report(report: Any) -> None:
    """An import report as `key: value` lines, then each warning as a sentence."""
    for item in dataclasses.fields(report):
        if item.name == "warnings":
            continue
        value = getattr(report, item.name)
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value)) or "-"
        print(f"{item.name.replace('_', ' ')}: {value}")
    for warning in getattr(report, "warnings", []):
        print(f"  warning: {warning}")


def cmd_profiles_import(root: Root, args: argparse.Namespace) -> int:
    path = Path(args.file)
    with _progress_bar(args, f"importing {path.name}") as progress:
        report = import_profiles(root.context, ME, path, args.audience, progress)
    _print_json(report) if args.json else _print_report(report)
    return 0


def cmd_deliveries_import(root: Root, args: argparse.Namespace) -> int:
    report = import_deliveries(root.context, ME, Path(args.file))
    _print_json(report) if args.json else _print_report(report)
    return 0


def cmd_deliveries_list(root: Root, args: argparse.Namespace) -> int:
    rows = views.list_deliveries(root.context, ME)
    if args.json:
        _print_json([r.to_json() for r in rows])
        return 0
    if not rows:
        print("no deliveries yet: `python -m bot deliveries import FILE.yml` adds some")
        return 0
    print(f"{'REF':<20} {'STATE':<14} {'AUDIENCE':<16} {'SCHEDULE':<12} {'TO DELIVER':>10} SENT")
    for r in rows:
        state = (
            r.state.value if r.prepared or r.state is not DeliveryState.READY else "ready (stale)"
        )
        print(
            f"{r.ref:<20} {state:<14} {r.audience:<16} {r.schedule.mode.value:<12} "
            f"{r.to_deliver:>10} {r.sent}"
        )
    return 0


def _acting(root: Root, args: argparse.Namespace) -> Actor:
    """`--as USER_ID`: that user, with the roles granted to them (their user groups'
    are Slack's to tell and are not counted here); else the command line, every role."""
    if not args.as_user:
        return ME
    return Actor(args.as_user, roles.roles_of(root.context, args.as_user))


def cmd_deliveries_act(root: Root, args: argparse.Namespace) -> int:
    act = {
        "confirm": confirm_send,
        "pause": pause_delivery,
        "resume": resume_delivery,
        "stop": stop_delivery,
    }[args.cmd]
    done = act(root.context, _acting(root, args), args.ref)
    if args.json:
        _print_json({"ref": done.ref, "before": done.before.value, "after": done.after.value})
        return 0
    print(f"{done.ref}: {done.before.value} → {done.after.value}")
    if done.after is DeliveryState.IN_PROGRESS:
        print("  a running server sends it at its next tick (15 s); without one: jobs run-due")
    return 0


def cmd_approvals_list(root: Root, args: argparse.Namespace) -> int:
    waiting = open_requests(root.context, _acting(root, args))
    if args.json:
        _print_json([r.to_json() for r in waiting])
        return 0
    if not waiting:
        print("no approval request is waiting")
    for r in waiting:
        print(
            f"{r.ref}@{r.key}  {r.approvals}/{r.required} approvals, "
            f"decide before {r.expires_at.isoformat()}"
        )
    return 0


def cmd_approvals_decide(root: Root, args: argparse.Namespace) -> int:
    choice = Choice.APPROVE if args.cmd == "approve" else Choice.SKIP
    ref, _, key = args.occurrence.partition("@")
    if not key:
        raise DomainError(f"write the occurrence as REF@KEY (see `approvals list`), not {ref!r}")
    decision = decide(root.context, _acting(root, args), ref, key, choice)
    if args.json:
        _print_json(
            {
                "ref": decision.ref,
                "key": decision.key,
                "outcome": decision.outcome.value,
                "state": decision.state.value,
                "approvals": decision.approvals,
                "required": decision.required,
            }
        )
        return 0
    print(
        f"{decision.ref}@{decision.key}: {decision.outcome.value}; the request is "
        f"{decision.state.value} ({decision.approvals}/{decision.required} approvals)"
    )
    return 0


def cmd_deliveries_preview(root: Root, args: argparse.Namespace) -> int:
    shown = preview(root.context, ME, args.ref, args.profile)
    if args.json:
        _print_json(shown.to_json())
        return 0
    print(f"To: {shown.email}\nSubject: {shown.subject}")
    for warning in shown.warnings:
        print(f"warning: {warning}")
    for part, body in (("text", shown.text), ("html", shown.html)):
        if body is not None:
            print(f"\n--- {part} ---\n{body.rstrip()}")
    return 0


@contextmanager
def _progress_bar(args: argparse.Namespace, what: str) -> Iterator[Progress | None]:
    """A bar on stderr while a long command runs, only for a person at a terminal: none
    with --json, in a pipe or a log (the output stays what scripts read). A use case
    that works in steps names each one, and the bar says it in place of `what`."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # only when a bar is drawn: a second off each start
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def advance(done: int, total: int | None, step: str | None = None) -> None:
            if step is not None:
                bar.update(task, description=step)
            bar.update(task, total=total, completed=done)

        yield advance


def cmd_deliveries_prepare(root: Root, args: argparse.Namespace) -> int:
    with _progress_bar(args, f"preparing {args.ref}") as progress:
        result = prepare_delivery(root.context, ME, args.ref, progress)
    if args.json:
        _print_json(result.to_json())
        return 0 if not result.errors else 1
    print(
        f"{result.ref}: {result.state.value} — targeted {result.targeted}, "
        f"excluded {result.excluded}, to deliver {result.to_deliver}"
    )
    for reason, count in sorted(result.exclusions.items()):
        if count:
            print(f"  excluded, {reason.value}: {count}")
    for w in result.warnings:
        print(f"  warning: {w.describe()}")
    for e in result.errors:
        print(f"  error: {e.describe()}")
    if result.errors:
        print("the delivery cannot be confirmed until these errors are fixed and it is prepared")
        return 1
    return 0


def cmd_deliveries_show(root: Root, args: argparse.Namespace) -> int:
    detail = views.delivery_detail(root.context, ME, args.ref)
    if args.json:
        _print_json(detail.to_json())
    else:
        print(delivery_text(detail))
    return 0


def cmd_roles_grant(root: Root, args: argparse.Namespace) -> int:
    changed = roles.grant(root.context, ME, args.user, args.role)
    print(f"granted {args.role} to {args.user}" if changed else f"{args.user} already had it")
    return 0


def cmd_roles_revoke(root: Root, args: argparse.Namespace) -> int:
    changed = roles.revoke(root.context, ME, args.user, args.role)
    print(f"revoked {args.role} from {args.user}" if changed else f"{args.user} did not have it")
    return 0


def cmd_roles_list(root: Root, args: argparse.Namespace) -> int:
    grants = roles.list_grants(root.context, ME)
    if args.json:
        _print_json([g.to_json() for g in grants])
        return 0
    if not grants:
        print("no roles granted yet: `python -m bot roles grant U012AB3CD administration`")
    for g in grants:
        print(f"{g.subject_id:<14} {g.subject_kind.value:<10} {g.role.value:<20} by {g.granted_by}")
    return 0


def cmd_audit_list(root: Root, args: argparse.Namespace) -> int:
    since = _parse_instant(args.since) if args.since else None
    records = audit_trail(root.context, ME, ref=args.ref, since=since, limit=args.limit)
    if args.json:
        _print_json([r.to_json() for r in records])
        return 0
    if not records:
        print("no audit entries" + (f" for {args.ref}" if args.ref else ""))
    for r in records:
        detail = " ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))
        print(
            f"{r.at.isoformat()}  {r.actor:<12} {r.action:<18} "
            f"{r.subject_kind} {r.subject_ref}  {detail}".rstrip()
        )
    return 0


def cmd_serve(root: Root, args: argparse.Namespace) -> int:
    from bot.entrypoints.web import serve

    serve(root, socket_mode=False)
    return 0


def cmd_socket(root: Root, args: argparse.Namespace) -> int:
    from bot.entrypoints.web import serve

    serve(root, socket_mode=True)
    return 0


def cmd_worker(root: Root, args: argparse.Namespace) -> int:
    concurrency = args.concurrency or root.settings.worker_concurrency
    if concurrency < 1 or args.processes < 1:
        raise DomainError("--concurrency and --processes are at least 1")
    root.close()  # each worker process builds its own
    run_workers(root.settings, concurrency, args.processes)
    return 0


def cmd_jobs_run_due(root: Root, args: argparse.Namespace) -> int:
    # Its report says whether the digest is off and why; the log need not say it again
    # at every run (its warnings, a post that failed, still show).
    digest_log = logging.getLogger("bot.services.digest")
    level = digest_log.level
    digest_log.setLevel(max(level, logging.WARNING))
    try:
        return _run_due(root, args)
    finally:
        digest_log.setLevel(level)


def _run_due(root: Root, args: argparse.Namespace) -> int:
    ctx = root.context.at(_parse_instant(args.at)) if args.at else root.context
    try:
        with root.send_lock(wait=False), _progress_bar(args, "due work") as progress:
            report = asyncio.run(
                run_due(
                    ctx,
                    transports=root.transport,
                    notifications=root.notifications(),
                    relay_wait=args.relay_wait,
                    progress=progress,
                )
            )
    except SendLockBusy as exc:
        raise DomainError(
            f"{exc}: a running server does the due work itself; stop it to run this by hand"
        ) from exc
    code = 2 if report.relay_unavailable else 0  # the setup's fault: the relay is down
    if args.json:
        _print_json(report)
        return code
    print(f"due at {ctx.clock.now().isoformat()}:")
    for line in _due_lines(report, mailbox=ctx.settings.feedback_mailbox is not None):
        print(f"  {line}")
    return code


def _due_lines(report: DueReport, mailbox: bool) -> list[str]:
    lines = [f"started: {', '.join(report.started) or '-'}"]
    lines += [
        f"occurrence {run.ref}@{run.key}: {run.outcome.value} "
        f"({run.added} added, {run.to_deliver} to deliver)"
        for run in report.occurrences
    ]
    lines.append(f"approval requests expired: {report.approvals_expired}")
    lines.append(f"approval messages posted or updated in Slack: {report.approval_messages}")
    lines += [f"sent {ref}: now {state.value}" for ref, state in report.sent.items()]
    lines += [f"FAILED {ref}: {why}" for ref, why in report.failed.items()]
    if report.relay_unavailable:
        lines.append(
            f"sending stopped, the relay is unavailable: {report.relay_unavailable}; "
            "the rest is queued for the next run (check MAIL_URL)"
        )
    lines.append(f"soft bounces retried: {report.retried}")
    lines.append(f"logs resolved at the end of their validity: {report.expired_logs}")
    if mailbox:
        box = report.mailbox
        lines.append(
            f"feedback mailbox: {box.read} messages read, {box.applied} events applied, "
            f"{box.set_aside} set aside" + (f", stopped: {box.error}" if box.error else "")
        )
    lines.append(f"KPI digest: {_digest_line(report.digest)}")
    if report.deployments_reposted:
        lines.append(f"Deployment messages posted again: {report.deployments_reposted}")
    lines += [f"step failed, the others ran: {failure}" for failure in report.failures]
    return lines


def _digest_line(digest: DigestReport | None) -> str:
    if digest is None:
        return "-"
    slot = f" for {digest.slot.isoformat()}" if digest.slot else ""
    if digest.status == "posted":
        chart = ", chart" if digest.chart else ""
        deliveries = "delivery" if digest.deliveries == 1 else "deliveries"
        messages = "message" if digest.messages == 1 else "messages"
        return (
            f"posted{slot}: {digest.deliveries} {deliveries}, {digest.messages} {messages}{chart}"
        )
    words = {
        "failed": f"Slack failed{slot} ({digest.error}); the rest goes at the next run",
        "off": f"off ({digest.error})",
        "empty": f"nothing active{slot}, nothing posted",
        "busy": f"another process is posting the digest{slot}",
    }
    return words.get(digest.status, f"already done{slot}")


def _parse_instant(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise DomainError(
            f"{text!r} is not an ISO-8601 date-time; write it like 2026-11-23T09:00:00+01:00"
        ) from None
    if at.tzinfo is None:
        raise DomainError(f"{text!r} has no time zone; add one, e.g. {text}+00:00")
    return at


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Greenlight: confirm email sends from Slack and follow them to their KPIs.",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(
        sub: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: Handler,
        help_text: str,
        json_flag: bool = False,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print stable JSON")
        return p

    p = groups.add_parser(
        "serve", help="HTTP mode: Slack endpoint, webhooks, tracking, scheduler, sender"
    )
    p.set_defaults(handler=cmd_serve)
    p = groups.add_parser(
        "socket", help="Socket Mode for Slack, plus the same HTTP server and workers"
    )
    p.set_defaults(handler=cmd_socket)
    p = groups.add_parser(
        "worker",
        help="a job worker (PostgreSQL): sends and runs the due work with the others",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs at once per process (WORKER_CONCURRENCY)",
    )
    p.add_argument(
        "--processes", type=int, default=1, help="worker processes to start (one per core)"
    )
    p.set_defaults(handler=cmd_worker)

    db = groups.add_parser("db", help="database schema").add_subparsers(
        dest="cmd", required=True, metavar="ACTION"
    )
    command(db, "upgrade", cmd_db_upgrade, "create or migrate the database to the latest schema")

    profiles = groups.add_parser("profiles", help="recipients").add_subparsers(
        dest="cmd", required=True, metavar="ACTION"
    )
    p = command(
        profiles,
        "import",
        cmd_profiles_import,
        "create or update profiles from a CSV file (email column required)",
        json_flag=True,
    )
    p.add_argument("file", help="CSV with a header row")
    p.add_argument("--audience", help="also add every profile of the file to this audience")

    deliveries = groups.add_parser("deliveries", help="email deliveries").add_subparsers(
        dest="cmd", required=True, metavar="ACTION"
    )
    p = command(
        deliveries,
        "import",
        cmd_deliveries_import,
        "create or update deliveries by ref from a YAML file",
        json_flag=True,
    )
    p.add_argument("file", help="YAML list of deliveries")
    command(deliveries, "list", cmd_deliveries_list, "every delivery, its state and counts", True)
    p = command(
        deliveries,
        "prepare",
        cmd_deliveries_prepare,
        "target the audience, write exclusions and check every message renders",
        json_flag=True,
    )
    p.add_argument("ref")
    p = command(deliveries, "show", cmd_deliveries_show, "state, counts and KPIs", True)
    p.add_argument("ref")

    p = command(
        deliveries,
        "preview",
        cmd_deliveries_preview,
        "the subject, text and HTML of one message, rendered for a profile",
        json_flag=True,
    )
    p.add_argument("ref", help="the delivery's ref")
    p.add_argument("--profile", metavar="EMAIL", help="whose message (default: the first)")
    for name, verb in (
        ("confirm", "confirm the send (as Confirm send and OK in Slack)"),
        ("pause", "pause the send after the batch in flight"),
        ("resume", "resume a paused send"),
        ("stop", "stop the send: what is still queued is never sent"),
    ):
        p = command(deliveries, name, cmd_deliveries_act, verb, json_flag=True)
        p.add_argument("ref", help="the delivery's ref")
        p.add_argument(
            "--as",
            dest="as_user",
            metavar="USER_ID",
            help="act as this Slack user, with their roles and in the audit under their id "
            "(default: the command line, every role)",
        )

    approvals = groups.add_parser(
        "approvals", help="the occurrences of recurring deliveries waiting for approval"
    ).add_subparsers(dest="cmd", required=True, metavar="ACTION")
    actions: list[tuple[str, Handler, str]] = [
        ("list", cmd_approvals_list, "the requests waiting, the soonest deadline first"),
        ("approve", cmd_approvals_decide, "approve an occurrence (as its Approve button)"),
        ("skip", cmd_approvals_decide, "skip an occurrence: it is never sent"),
    ]
    for name, handler, text in actions:
        p = command(approvals, name, handler, text, json_flag=True)
        if name != "list":
            p.add_argument("occurrence", help="REF@KEY, as `approvals list` shows it")
        p.add_argument(
            "--as",
            dest="as_user",
            metavar="USER_ID",
            help="act as this Slack user, with their roles (a quorum counts people)",
        )

    roles = groups.add_parser("roles", help="who may prepare, send and administer").add_subparsers(
        dest="cmd", required=True, metavar="ACTION"
    )
    role_names = ", ".join(r.value for r in Role)
    for name, handler, verb in (
        ("grant", cmd_roles_grant, "give"),
        ("revoke", cmd_roles_revoke, "take back"),
    ):
        p = command(roles, name, handler, f"{verb} a role ({role_names})")
        p.add_argument("user", help="Slack user id (U…) or user group id (S…)")
        p.add_argument("role", help=role_names)
    command(roles, "list", cmd_roles_list, "every role granted", json_flag=True)

    audit = groups.add_parser("audit", help="who did what, and when").add_subparsers(
        dest="cmd", required=True, metavar="ACTION"
    )
    p = command(
        audit,
        "list",
        cmd_audit_list,
        "the audit trail, oldest first: imports, preparations, confirms, pauses, approvals, roles",
        json_flag=True,
    )
    p.add_argument("--ref", help="only entries about this delivery (or audience, user)")
    p.add_argument("--since", help="only entries from this ISO-8601 instant (with a zone)")
    p.add_argument(
        "--limit", type=int, default=200, help="the latest N entries (default 200, at most 10,000)"
    )

    jobs = groups.add_parser("jobs", help="scheduled work").add_subparsers(
        dest="cmd", required=True, metavar="ACTION"
    )
    p = command(
        jobs,
        "run-due",
        cmd_jobs_run_due,
        "run every piece of scheduled work due now (or at --at): start, send, retry, expire",
        json_flag=True,
    )
    p.add_argument("--at", help="ISO-8601 instant with a time zone; default: now")
    p.add_argument(
        "--relay-wait",
        type=float,
        default=RELAY_WAIT_SECONDS,
        metavar="SECONDS",
        help="give up sending after this much retrying while the relay is down; what was "
        f"not sent waits for the next run (default {RELAY_WAIT_SECONDS:.0f})",
    )
    return parser


RELAY_WAIT_SECONDS = 60.0  # `jobs run-due --relay-wait`


def environment_problem(exc: BaseException, settings: Settings) -> str | None:
    """One line for a fault of the machine's setup rather than ours: the user can fix it
    (exit 2), and a traceback would only hide the line that says how."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"port {settings.port} is in use (another Greenlight, or another server); "
            "stop it or set PORT to a free port"
        )
    return database_problem(exc, settings.database_url)


def _fail(args: argparse.Namespace, code: int, message: str, **more: str) -> int:
    """The error on stderr; with `--json` also as JSON on stdout, for the script reading
    it: `{"error": {"code": N, "message": "…"}}`."""
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message, **more}}))
    return code


def main(argv: Sequence[str] | None = None, root: Root | None = None) -> int:
    """Run one command; tests pass their own `root` (which the caller then closes)."""
    args = build_parser().parse_args(argv)
    owned = root is None
    if root is None:
        try:
            settings = get_settings()
        except SettingsError as exc:
            return _fail(args, 2, str(exc))
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # A line per 15-second tick would drown everything else at INFO.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        try:
            root = bootstrap(settings, migrate=args.handler is not cmd_db_upgrade)
        except Exception as exc:
            problem = database_problem(exc, settings.database_url)
            if problem is None:
                raise
            return _fail(args, 2, problem)
    handler: Handler = args.handler
    try:
        return handler(root, args)
    except DomainError as exc:
        return _fail(args, 1, str(exc))
    except SettingsError as exc:
        return _fail(args, 2, str(exc))
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error; keep Python from complaining on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        problem = environment_problem(exc, root.settings)
        if problem is not None:
            return _fail(args, 2, problem)
        error_id = uuid.uuid4().hex[:8]
        log.exception("unexpected error %s in %s", error_id, " ".join(argv or sys.argv[1:]))
        return _fail(
            args,
            3,
            f"something went wrong on our side (error id {error_id}); "
            "the log above has the details",
            error_id=error_id,
        )
    finally:
        if owned:
            root.close()
