"""/healthz tells the truth without telling secrets; the logs hold no tokens or clicked URLs."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from harness import LiveApp
from scenario import settings_for
from smtp_relay import free_port

from bot.bootstrap import bootstrap
from bot.context import Context
from bot.engine.tokens import TokenSigner
from bot.store.db import make_engine, make_session_factory


def get(app: LiveApp, path: str, method: str = "GET", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


@pytest.fixture
def app(ctx: Context) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False).start()
    yield live
    live.stop()


def test_healthz_answers_without_the_drivers_words(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    gone = replace(
        ctx,
        sessions=make_session_factory(
            make_engine(f"postgresql+psycopg://someone:secret@127.0.0.1:{port}/nowhere")
        ),
    )
    live = LiveApp(gone, start_sender=False).start()
    try:
        with caplog.at_level(logging.ERROR):
            status, body = get(live, "/healthz")
    finally:
        live.stop()
    answer = json.loads(body)
    assert status == 503 and answer["ok"] is False and answer["database"] == "unavailable"
    assert str(port) not in body.decode() and "127.0.0.1" not in body.decode()
    assert any(answer["error_id"] in r.getMessage() for r in caplog.records), "logged with its id"


def test_healthz_is_unhealthy_when_sqlite_cannot_write(tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make the database file read-only for root")
    root = bootstrap(settings_for(tmp_path))
    live = LiveApp(root.context, start_sender=False).start()
    database = tmp_path / "greenlight.db"
    try:
        assert get(live, "/healthz")[0] == 200
        made = subprocess.run(["chattr", "+i", str(database)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"this file system has no immutable flag: {made.stderr!r}")
        try:
            root.engine.dispose()  # fresh connections meet the read-only file
            status, body = get(live, "/healthz")
        finally:
            subprocess.run(["chattr", "-i", str(database)], check=True)
    finally:
        live.stop()
        root.close()
    assert status == 503 and json.loads(body)["database"] == "unavailable"


def test_the_access_log_holds_no_token_and_no_clicked_url(
    ctx: Context, app: LiveApp, caplog: pytest.LogCaptureFixture
) -> None:
    signer = TokenSigner.from_settings(ctx.settings)
    opened, clicked = (
        signer.open_token(7),
        signer.click_token(7, "https://shop.example/secret-offer"),
    )
    leave = signer.unsubscribe_token(7)
    with caplog.at_level(logging.DEBUG):
        get(app, f"/t/o/{opened}")
        get(app, f"/t/c/{clicked}")
        get(app, f"/u/{leave}", headers={"Referer": f"{app.url}/u/{leave}"})
        # An access line is written after its answer is sent: wait for the server thread.
        deadline = time.monotonic() + 10
        while sum(r.name == "aiohttp.access" for r in caplog.records) < 3:
            assert time.monotonic() < deadline, "the access lines never came"
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records]
    access = [
        line for r, line in zip(caplog.records, lines, strict=True) if r.name == "aiohttp.access"
    ]
    assert len(access) == 3
    assert any("/t/c/…" in line for line in access) and any("/u/…" in line for line in access)
    for token in (opened, clicked, leave):
        assert not [line for line in lines if token in line]
    assert not [line for line in lines if "secret-offer" in line]
