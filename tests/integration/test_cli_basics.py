"""The command line as a person uses it: exit codes, messages and stable JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scenario import as_user, detail_json, prepare_one, settings_for
from sqlalchemy import func, select

from bot.bootstrap import Root, bootstrap
from bot.domain.roles import Role
from bot.entrypoints.cli import main
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import SendingLog

ROOT = Path(__file__).resolve().parents[2]


def run(root: Root, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), root=root)
    out, err = capsys.readouterr()
    return code, out, err


def test_roles_grant_list_revoke(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(root, capsys, "roles", "grant", "U0ALICE1", "start-deliveries")[0] == 0
    assert "already had" in run(root, capsys, "roles", "grant", "U0ALICE1", "start-deliveries")[1]
    assert run(root, capsys, "roles", "grant", "<!subteam^S0OPS|ops>", "administration")[0] == 0
    code, out, _ = run(root, capsys, "roles", "list", "--json")
    assert code == 0
    grants = json.loads(out)
    assert [(g["subject_kind"], g["subject_id"], g["role"]) for g in grants] == [
        ("user", "U0ALICE1", "start-deliveries"),
        ("usergroup", "S0OPS", "administration"),
    ]
    assert run(root, capsys, "roles", "revoke", "U0ALICE1", "start-deliveries")[0] == 0
    assert "did not have" in run(root, capsys, "roles", "revoke", "U0ALICE1", "start-deliveries")[1]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("roles", "grant", "U0ALICE1", "boss"), "the roles are: prepare-deliveries"),
        (("roles", "grant", "alice", "administration"), "not a Slack user or user group id"),
        (("deliveries", "show", "nope"), "no delivery with ref 'nope'"),
        (("jobs", "run-due", "--at", "tomorrow"), "not an ISO-8601 date-time"),
        (("jobs", "run-due", "--at", "2026-11-23T09:00:00"), "has no time zone"),
    ],
)
def test_refusals_exit_1_with_a_message_that_says_what_to_do(
    root: Root, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    code, _, err = run(root, capsys, *argv)
    assert code == 1
    assert needle in err


def test_deliveries_list_when_empty(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(root, capsys, "deliveries", "list", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_help_lists_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("db", "profiles", "deliveries", "roles"):
        assert name in out


def test_malformed_setting_stops_at_start_with_its_name(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "deliveries", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "MAIL_URL": "ftp://mail.example"},
    )
    assert proc.returncode == 2
    assert "MAIL_URL" in proc.stderr and "unknown scheme 'ftp'" in proc.stderr
    assert not (tmp_path / "data").exists(), "nothing is created when settings are bad"


def _bot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TRACKING_SECRET": "t", **env},
        timeout=60,
    )


def test_an_unreachable_database_is_one_line_that_says_what_to_check(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://greenlight:hunter2@127.0.0.1:{port}/greenlight"
    proc = _bot(tmp_path, "jobs", "run-due", DATABASE_URL=url)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
    assert "check DATABASE_URL" in proc.stderr and "Connection refused" in proc.stderr
    assert "hunter2" not in proc.stderr and "greenlight:***@" in proc.stderr


def test_an_sqlite_url_without_three_slashes_says_how_to_write_one(tmp_path: Path) -> None:
    proc = _bot(tmp_path, "deliveries", "list", DATABASE_URL="sqlite://greenlight.db")
    assert proc.returncode == 2
    assert "DATABASE_URL" in proc.stderr and "sqlite:///relative/path.db" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_port_in_use_is_one_line_that_says_set_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _bot(tmp_path, "serve", PORT=str(port))
    assert proc.returncode == 2, proc.stderr
    assert f"error: port {port} is in use" in proc.stderr and "set PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_due_with_nothing_to_do(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(root, capsys, "jobs", "run-due", "--at", "2026-11-24T09:00:00+01:00")
    assert code == 0
    assert json.loads(run(root, capsys, "jobs", "run-due", "--json")[1]) == {
        "started": [],
        "occurrences": [],
        "approvals_expired": 0,
        "approval_messages": 0,
        "sent": {},
        "retried": 0,
        "expired_logs": 0,
        "indicators_refreshed": 0,
        "digest": {
            "status": "off",
            "slot": None,
            "deliveries": 0,
            "messages": 0,
            "chart": False,
            "error": "KPI_CHANNEL is not set",
            "parts_posted": [],
        },
        "mailbox": {
            "read": 0,
            "events": 0,
            "applied": 0,
            "duplicates": 0,
            "unmatched": 0,
            "set_aside": 0,
            "waiting": 0,
            "error": None,
        },
        "deployments_reposted": 0,
        "failed": {},
        "failures": [],
        "deferred": [],
        "relay_unavailable": None,
    }
    assert "2026-11-24T08:00:00+00:00" in out
    assert "KPI digest: off (KPI_CHANNEL is not set)" in out


def test_run_due_against_a_dead_relay_gives_up_after_its_wait_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Before, `jobs run-due` retried a relay that never answers for ever."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'greenlight.db'}",
        "MAIL_URL": f"smtp://127.0.0.1:{port}",
    }
    settings = settings_for(tmp_path, **{k.lower(): v for k, v in env.items()})
    root = bootstrap(settings)
    try:
        emails = [f"user{i}@x.example" for i in range(30)]
        prepare_one(root.context, tmp_path, emails)
        confirm_send(root.context, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")
        # Without the bound this never returns (`_bot` gives it 60 s).
        proc = _bot(tmp_path, "jobs", "run-due", "--relay-wait", "3", **env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "sending stopped, the relay is unavailable" in proc.stdout
        assert "check MAIL_URL" in proc.stdout
        detail = detail_json(root.context, "big")
        assert detail["state"] == "in-progress"
        with root.context.sessions() as s:
            queued = s.scalar(
                select(func.count()).where(
                    SendingLog.status == "queued", SendingLog.claim_token.is_(None)
                )
            )
        assert queued == 30, "every recipient is queued again, unclaimed, for the next run"
    finally:
        root.close()


def test_a_json_failure_is_json_on_stdout_and_text_on_stderr(
    root: Root, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(root, capsys, "deliveries", "show", "no-such-ref", "--json")
    assert code == 1
    failure = json.loads(out)["error"]
    assert failure["code"] == 1 and "no-such-ref" in failure["message"]
    assert err.startswith("error: ") and "no-such-ref" in err
    code, out, err = run(root, capsys, "deliveries", "show", "no-such-ref")
    assert code == 1 and out == "" and "no-such-ref" in err


def test_the_audit_trail_is_readable_by_ref_and_since(
    root: Root, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The audit log was written and never readable: `audit list` reads it back."""
    prepare_one(root.context, tmp_path, ["a@x.example", "b@x.example"])
    assert run(root, capsys, "roles", "grant", "U0ALICE1", "start-deliveries")[0] == 0
    code, out, _ = run(root, capsys, "audit", "list", "--json")
    assert code == 0
    trail = json.loads(out)
    actions = [(e["action"], e["subject"]["ref"]) for e in trail]
    assert ("profiles.import", "all") in actions
    assert any(r == "big" for _, r in actions), actions
    assert any(r == "U0ALICE1" for _, r in actions), actions
    assert [e["at"] for e in trail] == sorted(e["at"] for e in trail), "oldest first"
    code, out, _ = run(root, capsys, "audit", "list", "--ref", "big", "--json")
    assert {e["subject"]["ref"] for e in json.loads(out)} == {"big"}
    later = "2999-01-01T00:00:00+00:00"
    assert json.loads(run(root, capsys, "audit", "list", "--since", later, "--json")[1]) == []
    code, out, _ = run(root, capsys, "audit", "list", "--ref", "big")
    assert code == 0 and " big" in out


def test_the_whole_trail_is_an_administrators(root: Root) -> None:
    from bot.domain.errors import DomainError
    from bot.services.audit import audit_trail

    starter = as_user("U0BOB", [Role.START_DELIVERIES])
    with pytest.raises(DomainError):
        audit_trail(root.context, starter)
    assert audit_trail(root.context, starter, ref="big") == []


def test_confirm_pause_resume_stop_from_the_command_line_with_the_users_roles(
    root: Root, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prepare_one(root.context, tmp_path, ["a@x.example", "b@x.example"])
    code, _, err = run(root, capsys, "deliveries", "confirm", "big", "--as", "U0NOBODY")
    assert code == 1 and "confirm" in err, "a user without the role is refused"
    assert run(root, capsys, "roles", "grant", "U0ALICE1", "start-deliveries")[0] == 0
    code, out, _ = run(root, capsys, "deliveries", "confirm", "big", "--as", "U0ALICE1")
    assert code == 0 and "→ in-progress" in out
    code, out, _ = run(root, capsys, "deliveries", "pause", "big", "--as", "U0ALICE1", "--json")
    assert code == 0 and json.loads(out) == {
        "ref": "big",
        "before": "in-progress",
        "after": "paused",
    }
    assert run(root, capsys, "deliveries", "resume", "big", "--as", "U0ALICE1")[0] == 0
    code, out, _ = run(root, capsys, "deliveries", "stop", "big")
    assert code == 0 and "in-progress → stopped" in out
    trail = json.loads(run(root, capsys, "audit", "list", "--ref", "big", "--json")[1])
    acts = [(e["actor"], e["action"]) for e in trail]
    for act in ("confirm", "pause", "resume"):
        assert ("U0ALICE1", f"delivery.{act}") in acts, acts
    assert ("cli", "delivery.stop") in acts, acts


def test_preview_renders_one_message_for_a_profile(
    root: Root, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.csv").write_text("email,first_name\nann@x.example,Ann\nbob@x.example,Bob\n")
    assert (
        run(root, capsys, "profiles", "import", str(tmp_path / "p.csv"), "--audience", "all")[0]
        == 0
    )
    entry = (
        "- ref: big\n  name: Big\n  audience: all\n  from: news@shop.example\n"
        '  subject: "Hi {{ first_name }}"\n  text: "Hello {{ first_name }} <{{ email }}>"\n'
        '  html: "<p>Hello {{ first_name }}</p>"\n'
    )
    (tmp_path / "d.yml").write_text(entry)
    assert run(root, capsys, "deliveries", "import", str(tmp_path / "d.yml"))[0] == 0
    code, out, _ = run(root, capsys, "deliveries", "preview", "big")
    assert code == 0 and "To: ann@x.example\nSubject: Hi Ann" in out
    assert "Hello Ann <ann@x.example>" in out and "<p>Hello Ann</p>" in out
    code, out, _ = run(
        root, capsys, "deliveries", "preview", "big", "--profile", "BOB@x.example", "--json"
    )
    shown = json.loads(out)
    assert code == 0 and (shown["profile"], shown["subject"]) == ("bob@x.example", "Hi Bob")
    code, _, err = run(root, capsys, "deliveries", "preview", "big", "--profile", "eve@x.example")
    assert code == 1 and "no profile 'eve@x.example'" in err


def _terminal_env(tmp_path: Path) -> tuple[dict[str, str], Root]:
    """The environment of a command run as a person would, and a root on its database."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACKING_SECRET": "t",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'greenlight.db'}",
        "MAIL_URL": f"maildir://{tmp_path / 'outbox'}",
        "COLUMNS": "100",
    }
    settings = settings_for(
        tmp_path,
        **{k.lower(): v for k, v in env.items() if k.isupper() and k not in ("PATH", "COLUMNS")},
    )
    return env, bootstrap(settings)


def _on_a_terminal(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, bytes]:
    """Run `python -m bot ARGS` with stderr a pseudo-terminal: exit code, stdout, and
    what was drawn on the terminal."""
    import pty

    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    ) as proc:
        os.close(follower)
        out, _ = proc.communicate(timeout=120)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    os.close(leader)
    return proc.returncode, out, drawn


def test_prepare_draws_a_progress_bar_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    """A bar for a person at a terminal (stderr a tty); scripts read the same output."""
    env, root = _terminal_env(tmp_path)
    try:
        prepare_one(root.context, tmp_path, [f"u{i}@x.example" for i in range(3_000)])
    finally:
        root.close()
    piped = _bot(tmp_path, "deliveries", "prepare", "big", **env)
    assert piped.returncode == 0 and "big: ready" in piped.stdout
    assert "preparing big" not in piped.stdout + piped.stderr
    code, out, drawn = _on_a_terminal(tmp_path, env, "deliveries", "prepare", "big")
    assert code == 0 and "big: ready" in out
    assert b"preparing big" in drawn, drawn[-500:]


def test_profiles_import_draws_a_progress_bar_on_a_terminal_and_nothing_in_a_pipe(
    tmp_path: Path,
) -> None:
    """The bar names the step: checking the file, then importing it."""
    env, root = _terminal_env(tmp_path)
    root.close()
    rows = "".join(f"u{i}@x.example,U{i}\n" for i in range(20_000))
    (tmp_path / "people.csv").write_text("email,first_name\n" + rows)
    command = ("profiles", "import", "people.csv", "--audience", "all")
    piped = _bot(tmp_path, *command, **env)
    assert piped.returncode == 0 and "created: 20000" in piped.stdout, piped.stderr
    assert "people.csv" not in piped.stderr and "importing" not in piped.stdout
    code, out, drawn = _on_a_terminal(tmp_path, env, *command)
    assert code == 0 and "unchanged: 20000" in out
    assert b"importing people.csv" in drawn, drawn[-500:]
    code, out, drawn = _on_a_terminal(tmp_path, env, *command, "--json")
    assert code == 0 and json.loads(out)["unchanged"] == 20_000
    assert b"people.csv" not in drawn, drawn[-500:]


def test_run_due_draws_a_progress_bar_while_it_sends_and_nothing_in_a_pipe(
    tmp_path: Path,
) -> None:
    def confirmed(ref: str) -> None:
        root = _terminal_env(tmp_path)[1]
        try:
            prepare_one(root.context, tmp_path, [f"{ref}{i}@x.example" for i in range(1_500)], ref)
            confirm_send(root.context, as_user("U1", [Role.START_DELIVERIES]), ref)
        finally:
            root.close()

    env, root = _terminal_env(tmp_path)
    root.close()
    confirmed("first")
    code, out, drawn = _on_a_terminal(tmp_path, env, "jobs", "run-due")
    assert code == 0 and "sent first: now finished" in out, out
    assert b"sending first" in drawn, drawn[-500:]
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 1_500

    confirmed("second")
    piped = _bot(tmp_path, "jobs", "run-due", **env)
    assert piped.returncode == 0 and "sent second: now finished" in piped.stdout, piped.stderr
    assert "sending" not in piped.stderr
