"""A local stand-in for Slack's Web API and response URLs: records calls, answers like Slack.

Modelled on slack-bolt's own `tests/mock_web_api_server`: a real HTTP server on
loopback, so the app's Slack client goes through its whole HTTP path (retries
included). Tests wait for calls with `wait_for`, on a condition, never on time.

File uploads follow Slack's external upload flow, as `files_upload_v2` drives it:
`files.getUploadURLExternal` hands out an upload URL on this server, the bytes are
POSTed there (kept in `uploads`), and `files.completeUploadExternal` shares the file.
`fail_next` makes the next calls of a method fail the way Slack or the network does.
"""

from __future__ import annotations

import itertools
import json
import socket
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


@dataclass
class Failure:
    """How a failing call answers: an HTTP status and Slack's error, or a dropped connection."""

    status: int = 200
    error: str = "fatal_error"
    drop: bool = False  # close the connection without an answer (a network failure)


class MockSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.cond = threading.Condition()
        self.rate_limit_next: dict[str, int] = {}  # method -> Retry-After seconds, once
        self.fail_next: dict[str, list[Failure]] = {}  # method -> failures, one per call
        self.usergroups: dict[str, list[str]] = {}  # group id -> member ids
        self.emails: dict[str, str | None] = {}  # user id -> profile email (`users.info`)
        self.uploads: dict[str, bytes] = {}  # file id -> bytes POSTed to its upload URL
        self.shared: list[dict[str, Any]] = []  # files shared by completeUploadExternal
        self.failed: list[str] = []  # methods answered with a failure from `fail_next`
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._filenames: dict[str, str] = {}
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                self._handle(path, {k: v[-1] for k, v in parse_qs(query).items()})

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path, _, query = self.path.partition("?")
                if path.startswith("/upload/"):
                    self._upload(path.rsplit("/", 1)[-1], data)
                    return
                raw = data.decode()
                body: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query).items()}
                if "json" in (self.headers.get("Content-Type") or ""):
                    body.update(json.loads(raw or "{}"))
                else:
                    body.update({k: v[-1] for k, v in parse_qs(raw).items()})
                self._handle(path, body)

            def _upload(self, file_id: str, data: bytes) -> None:
                if self._fail("upload"):
                    return
                with mock.cond:
                    mock.uploads[file_id] = data
                    mock.calls.append(Call(f"/upload/{file_id}", {"bytes": len(data)}, {}))
                    mock.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def _fail(self, method: str) -> bool:
                """Answer as a failing Slack if the test asked for it; True when it did."""
                with mock.cond:
                    queue = mock.fail_next.get(method) or []
                    failure = queue.pop(0) if queue else None
                    if failure is not None:
                        mock.failed.append(method)
                if failure is None:
                    return False
                if failure.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return True
                self._send(failure.status, {"ok": False, "error": failure.error})
                return True

            def _handle(self, path: str, body: dict[str, Any]) -> None:
                method = path.rsplit("/", 1)[-1]
                with mock.cond:
                    retry_after = mock.rate_limit_next.pop(method, None)
                if retry_after is not None:
                    self._send(429, {"ok": False, "error": "ratelimited"}, retry_after)
                    return
                if self._fail(method):
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
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._file_ids):08d}"
            self._filenames[file_id] = str(call.body.get("filename"))
            return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = json.loads(call.body.get("files") or "[]")
            shared = [
                {
                    "id": f["id"],
                    "title": f.get("title"),
                    "name": self._filenames.get(f["id"]),
                    "channel": call.body.get("channel_id"),
                    "initial_comment": call.body.get("initial_comment"),
                }
                for f in files
            ]
            self.shared.extend(shared)
            return {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in shared]}
        if method == "views.publish":
            view = call.body.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            if not isinstance(view, dict) or view.get("type") != "home":
                return {"ok": False, "error": "invalid_arguments"}
            if len(view.get("blocks") or []) > 100:
                return {"ok": False, "error": "invalid_blocks"}
            return {"ok": True, "view": {"id": f"V{call.body.get('user_id')}", **view}}
        if method == "users.info":
            user = call.body.get("user", "")
            if user not in self.emails:
                return {"ok": False, "error": "user_not_found"}
            email = self.emails[user]
            profile = {"real_name": user} | ({"email": email} if email else {})
            return {"ok": True, "user": {"id": user, "profile": profile}}
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

    def published(self, user: str) -> list[dict[str, Any]]:
        """The Home views published for `user` (`views.publish`), oldest first."""
        views = []
        for call in self.api_calls("views.publish"):
            if call.body.get("user_id") == user:
                view = call.body.get("view")
                views.append(json.loads(view) if isinstance(view, str) else view)
        return views

    def responses(self) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.path.startswith("/response/")]

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every recorded call)."""
        with self.cond:
            result = self.cond.wait_for(predicate, timeout)
        assert result, "the expected Slack call never came"
        return result
