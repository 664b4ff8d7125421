"""The playground's drawing of Slack's mrkdwn and Block Kit, and its workspace on disk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bot.blocks.kit import actions, button, confirm_dialog, context, divider, header, section
from bot.entrypoints.playground.blockkit import message_html
from bot.entrypoints.playground.mrkdwn import mrkdwn_html, plain_html
from bot.entrypoints.playground.routes import loopback_only
from bot.entrypoints.playground.workspace import Workspace

NAMES = {"U0ALICE": "Alice", "C0KPI": "kpi"}


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("*bold* _it_ ~gone~", "<b>bold</b> <i>it</i> <s>gone</s>"),
        ("`*not bold*`", "<code>*not bold*</code>"),
        ("a*b*c", "a*b*c"),  # inside a word: not formatting, as in Slack
        ("<@U0ALICE> in <#C0KPI>", '<span class="mk-mention">@Alice</span> in '),
        ("<!here>", '<span class="mk-mention mk-broadcast">@here</span>'),
        ("<https://x.example/a?b=1&amp;c=2|the *link*>", 'href="https://x.example/a?b=1&amp;c=2"'),
        ("&lt;b&gt;not a tag&lt;/b&gt; &amp;", "&lt;b&gt;not a tag&lt;/b&gt; &amp;"),
        ("one\ntwo", "one<br>two"),
        (":white_check_mark: done", "✅ done"),
        ("```a *b*```", "<pre>a *b*</pre>"),
        ("&gt; quoted", '<span class="mk-quote">quoted</span>'),
    ],
)
def test_mrkdwn_is_drawn_as_slack_shows_it(text: str, html: str) -> None:
    assert html in mrkdwn_html(text, NAMES)


def test_a_link_keeps_only_a_web_or_mail_target() -> None:
    drawn = mrkdwn_html("<javascript:alert(1)|click>")
    assert "href" not in drawn and "javascript:alert(1)" in drawn


def test_a_date_token_shows_its_moment() -> None:
    drawn = mrkdwn_html("<!date^1764576000^{date_short_pretty} at {time}|1 Dec 2025 08:00>")
    assert "Dec 1, 2025 at 08:00 UTC" in drawn and 'datetime="2025-12-01T08:00:00+00:00"' in drawn


def test_text_never_becomes_markup_of_the_page() -> None:
    assert plain_html("<script>alert(1)</script> &lt;b&gt;") == (
        "&lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;"
    )
    assert "<img" not in mrkdwn_html('<img src=x onerror="alert(1)">')


def test_blocks_and_a_confirm_dialog_are_carried_to_the_page() -> None:
    dialog = confirm_dialog("Confirm send", "Send *Sale* now.", style="danger")
    blocks = [
        header("Sale <b>"),
        section("*State*: ready"),
        context("From news@example.com"),
        divider(),
        actions([button("Confirm send", "confirm_send", "sale", "primary", dialog)], "b1"),
        {"type": "rich_text", "elements": []},
    ]
    drawn = message_html("fallback", blocks, {})
    assert '<div class="bk-header">Sale &lt;b&gt;</div>' in drawn  # shows "Sale <b>"
    assert '<hr class="bk-divider">' in drawn
    action = drawn.split('data-action="', 1)[1].split('"', 1)[0]
    carried = json.loads(action.replace("&quot;", '"').replace("&amp;", "&"))
    assert carried["action_id"] == "confirm_send" and carried["value"] == "sale"
    assert carried["confirm"]["style"] == "danger"
    assert "unsupported block rich_text" in drawn  # shown, never dropped


def test_the_workspace_keeps_its_messages_across_a_restart(tmp_path: Path) -> None:
    first = Workspace(tmp_path, NAMES)
    posted = first.post("C0KPI", "hello", None)
    first.update(posted.ts, "hello again", [section("*updated*")])
    again = Workspace(tmp_path, NAMES)
    assert again.messages[posted.ts].edited
    assert "<b>updated</b>" in again.messages[posted.ts].html
    assert again.new_ts() > posted.ts.split(".")[0]
    assert again.post("C0KPI", "next", None).ts != posted.ts


async def _handler(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.mark.parametrize(
    ("peer", "host", "method", "headers", "status"),
    [
        ("127.0.0.1", "localhost:3000", "GET", {}, 200),
        ("::1", "[::1]:3000", "GET", {}, 200),
        ("192.0.2.7", "localhost:3000", "GET", {}, 403),  # another machine
        ("127.0.0.1", "attacker.example:3000", "GET", {}, 403),  # DNS rebinding
        ("127.0.0.1", "localhost:3000", "POST", {}, 403),  # a cross-site form
        ("127.0.0.1", "localhost:3000", "POST", {"X-Playground": "1"}, 200),
    ],
)
def test_the_playground_answers_this_machine_only(
    peer: str, host: str, method: str, headers: dict[str, str], status: int
) -> None:
    class Transport:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return (peer, 5555) if name == "peername" else default

    request = make_mocked_request(
        method, "/playground/command", headers={"Host": host, **headers}, transport=Transport()
    )
    response = asyncio.run(loopback_only(request, _handler))
    assert response.status == status
