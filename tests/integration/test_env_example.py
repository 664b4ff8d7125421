"""README's own step, `cp .env.example .env`, changes nothing: `KEY=` means unset.

Before, each empty line became an empty setting: `serve` died on an empty
SLACK_BOT_TOKEN, then found TRACKING_SECRET "not set", then answered Slack with 500s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scenario import as_user, due_now
from smtp_relay import free_port

from bot.bootstrap import bootstrap
from bot.config import Settings, load_settings
from bot.domain.roles import Role
from bot.services.deliveries.lifecycle import confirm_send

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_file_reads_as_the_defaults() -> None:
    example = load_settings(_env_file=ROOT / ".env.example")
    defaults = load_settings(_env_file=None)
    differing = {
        name for name in Settings.model_fields if getattr(example, name) != getattr(defaults, name)
    }
    assert differing == set(), f"{differing}: .env.example must only repeat the defaults"


def _env(port: int) -> dict[str, str]:
    """The user's shell: no Greenlight variable, only what the `.env` file says."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PORT": str(port)}


def test_serve_and_run_due_start_with_env_copied_from_the_example(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    port = free_port()
    due = subprocess.run(
        [sys.executable, "-m", "bot", "jobs", "run-due"],
        cwd=tmp_path,
        env=_env(port),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert due.returncode == 0, due.stderr
    assert "KPI digest: off (KPI_CHANNEL is not set)" in due.stdout
    assert "KPI digest off" not in due.stderr, "said once, in the report, not in the log too"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        cwd=tmp_path,
        env=_env(port),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # polling a real process until it answers
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(30)
    output = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in output, output


def test_make_run_loads_the_examples_again_after_spring_sale_was_sent(tmp_path: Path) -> None:
    """`make run`'s loading step (`make seed`) twice, with spring-sale sent in between:
    before, every later `make run` stopped at "cannot prepare a delivery that is
    finished"."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'greenlight.db'}",
        "MAIL_URL": f"maildir://{tmp_path / 'outbox'}",
        "TRACKING_SECRET": "seed-test",
    }

    def seed() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "-C", str(ROOT), "seed"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = seed()
    assert first.returncode == 0, first.stdout + first.stderr
    ours = {k.lower(): v for k, v in env.items() if k not in ("PATH", "HOME")}
    settings = load_settings(_env_file=None, **ours)
    root = bootstrap(settings)
    try:
        confirm_send(root.context, as_user("U0ALICE", [Role.START_DELIVERIES]), "spring-sale")
        assert due_now(root.context).sent == {"spring-sale": "finished"}
    finally:
        root.close()
    again = seed()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "spring-sale was confirmed or sent already (make reset" in again.stdout
