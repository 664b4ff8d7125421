"""A local stand-in for Slack's Web API and response URLs: records calls, answers like Slack.

Modelled on slack-bolt's own `tests/mock_web_api_server`: a real HTTP server on
loopback, so the app's Slack client goes through its whole HTTP path (retries
included). Tests wait for calls with `wait_for`, on a condition, never on time.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def method(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class MockSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.cond = threading.Condition()
        self.rate_limit_next: dict[str, int] = {}  # method -> Retry-After seconds, once
        self.usergroups: dict[str, list[str]] = {}  # group id -> member ids
        self._ts = itertools.count(1)
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                self._handle(path, {k: v[-1] for k, v in parse_qs(query).items()})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[-1] for k, v in parse_qs(raw).items()}
                self._handle(self.path, body)

            def _handle(self, path: str, body: dict[str, Any]) -> None:
                method = path.rsplit("/", 1)[-1]
                with mock.cond:
                    retry_after = mock.rate_limit_next.pop(method, None)
                if retry_after is not None:
                    self._send(429, {"ok": False, "error": "ratelimited"}, retry_after)
                    return
                call = Call(path, body, dict(self.headers))
                with mock.cond:
                    mock.calls.append(call)
                    mock.cond.notify_all()
                self._send(200, mock.answer(call))

            def _send(
                self, status: int, payload: dict[str, Any], retry_after: int | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, call: Call) -> dict[str, Any]:
        method = call.method
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": "UBOT",
                "bot_id": "BBOT",
                "team_id": "T1",
                "user": "greenlight",
            }
        if method == "chat.postMessage":
            return {
                "ok": True,
                "channel": call.body.get("channel"),
                "ts": f"1700000000.{next(self._ts):06d}",
            }
        if method == "chat.update":
            return {"ok": True, "channel": call.body.get("channel"), "ts": call.body.get("ts")}
        if method == "usergroups.users.list":
            group = call.body.get("usergroup", "")
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        return {"ok": True}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_calls(self, method: str) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.method == method]

    def responses(self) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.path.startswith("/response/")]

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every recorded call)."""
        with self.cond:
            result = self.cond.wait_for(predicate, timeout)
        assert result, "the expected Slack call never came"
        return result
