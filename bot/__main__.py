"""`python -m bot` (also installed as `greenlight`): the command line.

Each command parses its arguments, calls one service and prints the result, as
text for people or as stable JSON with `--json` (README documents the shapes).
Exit codes: 0 done, 1 refused (the message says why and what to do), 2 bad usage or
settings, 3 an error of ours (logged with an id to quote).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.bootstrap import Root, bootstrap
from bot.config import SettingsError, get_settings
from bot.domain.errors import DomainError
from bot.domain.roles import Role

log = logging.getLogger("greenlight")

Handler = Callable[[Root, argparse.Namespace], int]


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


def _as_dict(value: Any) -> dict[str, Any]:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)


# -- commands ---------------------------------------------------------------------------


def cmd_db_upgrade(root: Root, args: argparse.Namespace) -> int:
    from bot.store.db import current_revision, upgrade

    upgrade(root.engine)
    print(f"database is at revision {current_revision(root.engine)}")
    return 0


def _print_report(report: Any) -> None:
    """An import report as `key: value` lines, then each warning as a sentence."""
    for field in dataclasses.fields(report):
        if field.name == "warnings":
            continue
        value = getattr(report, field.name)
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value)) or "-"
        print(f"{field.name.replace('_', ' ')}: {value}")
    for warning in getattr(report, "warnings", []):
        print(f"  warning: {warning}")


def cmd_profiles_import(root: Root, args: argparse.Namespace) -> int:
    from bot.services.profiles_import import import_profiles

    report = import_profiles(root.context, Path(args.file), args.audience, actor="cli")
    _print_json(report) if args.json else _print_report(report)
    return 0


def cmd_deliveries_import(root: Root, args: argparse.Namespace) -> int:
    from bot.services.deliveries_import import import_deliveries

    report = import_deliveries(root.context, Path(args.file), actor="cli")
    _print_json(report) if args.json else _print_report(report)
    return 0


def cmd_deliveries_list(root: Root, args: argparse.Namespace) -> int:
    from bot.services.reporting import list_deliveries

    rows = list_deliveries(root.context)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no deliveries yet: `python -m bot deliveries import FILE.yml` adds some")
        return 0
    print(f"{'REF':<20} {'STATE':<14} {'AUDIENCE':<16} {'SCHEDULE':<12} {'TO DELIVER':>10} SENT")
    for r in rows:
        state = r["state"] if r["prepared"] or r["state"] != "ready" else "ready (stale)"
        print(
            f"{r['ref']:<20} {state:<14} {r['audience']:<16} {r['schedule']['mode']:<12} "
            f"{r['to_deliver']:>10} {r['sent']}"
        )
    return 0


def cmd_deliveries_prepare(root: Root, args: argparse.Namespace) -> int:
    from bot.services.prepare import prepare_delivery
    from bot.textviews import error_text, warning_text

    result = prepare_delivery(root.context, args.ref, actor="cli")
    data = _as_dict(result)
    if args.json:
        _print_json(data)
        return 0 if not data.get("errors") else 1
    print(
        f"{data['ref']}: {data['state']} — targeted {data['targeted']}, "
        f"excluded {data['excluded']}, to deliver {data['to_deliver']}"
    )
    for reason, count in sorted(data.get("exclusions", {}).items()):
        if count:
            print(f"  excluded, {reason}: {count}")
    for w in data.get("warnings", []):
        print(f"  warning: {warning_text(w)}")
    for e in data.get("errors", []):
        print(f"  error: {error_text(e)}")
    if data.get("errors"):
        print("the delivery cannot be confirmed until these errors are fixed and it is prepared")
        return 1
    return 0


def cmd_deliveries_show(root: Root, args: argparse.Namespace) -> int:
    from bot.services.reporting import delivery_detail
    from bot.textviews import delivery_text

    detail = delivery_detail(root.context, args.ref)
    if args.json:
        _print_json(detail)
    else:
        print(delivery_text(detail))
    return 0


def cmd_roles_grant(root: Root, args: argparse.Namespace) -> int:
    from bot.services.roles import grant

    changed = grant(root.context, args.user, args.role, actor="cli")
    print(f"granted {args.role} to {args.user}" if changed else f"{args.user} already had it")
    return 0


def cmd_roles_revoke(root: Root, args: argparse.Namespace) -> int:
    from bot.services.roles import revoke

    changed = revoke(root.context, args.user, args.role, actor="cli")
    print(f"revoked {args.role} from {args.user}" if changed else f"{args.user} did not have it")
    return 0


def cmd_roles_list(root: Root, args: argparse.Namespace) -> int:
    from bot.services.roles import list_grants

    grants = list_grants(root.context)
    if args.json:
        _print_json([g.as_dict() for g in grants])
        return 0
    if not grants:
        print("no roles granted yet: `python -m bot roles grant U012AB3CD administration`")
    for g in grants:
        print(f"{g.subject_id:<14} {g.subject_kind:<10} {g.role.value:<20} by {g.granted_by}")
    return 0


def cmd_serve(root: Root, args: argparse.Namespace) -> int:
    from bot.web import serve

    serve(root, socket_mode=False)
    return 0


def cmd_socket(root: Root, args: argparse.Namespace) -> int:
    from bot.web import serve

    serve(root, socket_mode=True)
    return 0


def cmd_jobs_run_due(root: Root, args: argparse.Namespace) -> int:
    import asyncio

    from bot.services.due_work import run_due
    from bot.slack_api import make_client

    ctx = root.context.at(_parse_instant(args.at)) if args.at else root.context

    slack = make_client(ctx.settings) if ctx.settings.slack_bot_token else None
    report = asyncio.run(run_due(ctx, slack=slack))
    if args.json:
        _print_json(report)
    else:
        print(f"due at {ctx.clock.now().isoformat()}:")
        print(f"  started: {', '.join(report.started) or '-'}")
        for run in report.occurrences:
            print(
                f"  occurrence {run.ref}@{run.key}: {run.outcome} "
                f"({run.added} added, {run.to_deliver} to deliver)"
            )
        print(f"  approval requests expired: {report.approvals_expired}")
        print(f"  approval messages posted or updated in Slack: {report.approval_messages}")
        for ref, state in report.sent.items():
            print(f"  sent {ref}: now {state}")
        print(f"  soft bounces retried: {report.retried}")
        print(f"  logs resolved at the end of their validity: {report.expired_logs}")
        if ctx.settings.feedback_mailbox is not None:
            box = report.mailbox
            print(
                f"  feedback mailbox: {box.read} messages read, {box.applied} events applied, "
                f"{box.set_aside} set aside" + (f", stopped: {box.error}" if box.error else "")
            )
        print(f"  KPI digest: {_digest_line(report.digest)}")
    return 0


def _digest_line(digest: Any) -> str:
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
    if digest.status == "failed":
        return f"Slack failed{slot} ({digest.error}); the rest goes at the next run"
    if digest.status == "off":
        return f"off ({digest.error})"
    if digest.status == "empty":
        return f"nothing active{slot}, nothing posted"
    if digest.status == "busy":
        return f"another process is posting the digest{slot}"
    return f"already done{slot}"


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
    return parser


def main(argv: Sequence[str] | None = None, root: Root | None = None) -> int:
    """Run one command; tests pass their own `root` (which the caller then closes)."""
    args = build_parser().parse_args(argv)
    owned = root is None
    if root is None:
        try:
            settings = get_settings()
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # A line per 15-second tick would drown everything else at INFO.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        root = bootstrap(settings, migrate=args.handler is not cmd_db_upgrade)
    try:
        return args.handler(root, args)
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error; keep Python from complaining on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:
        error_id = uuid.uuid4().hex[:8]
        log.exception("unexpected error %s in %s", error_id, " ".join(argv or sys.argv[1:]))
        print(
            f"error: something went wrong on our side (error id {error_id}); "
            "the log above has the details",
            file=sys.stderr,
        )
        return 3
    finally:
        if owned:
            root.close()


if __name__ == "__main__":
    sys.exit(main())
