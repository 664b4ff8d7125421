"""The first Deployment message is posted once, however many processes follow the send.

The server's follower posts it when the send starts; the due work's reconcile step
posts it when Slack missed it. Both can find it missing at the same moment: the one
that claims it in the database posts it, the other leaves it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from scenario import as_user, prepare_one

from bot.context import Context
from bot.domain.roles import Role
from bot.notify.fake import FakeNotifications
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.views import DeploymentView
from bot.services.messages.deployment import DeploymentFollower
from bot.services.notifications import Posted


class SlowSlack(FakeNotifications):
    """A chat service that takes its time to answer a post: long enough for a second
    follower to look meanwhile."""

    async def deployment(self, view: DeploymentView, channel: str, ts: str | None) -> Posted:
        await asyncio.sleep(0)  # let the other follower run up to its own post
        await asyncio.sleep(0)
        return await super().deployment(view, channel, ts)


def started(ctx: Context, tmp_path: Path) -> None:
    prepare_one(ctx, tmp_path, ["a@x.example", "b@x.example"], slack_channel="C0DEPLOY")
    confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "big")


def test_two_followers_finding_no_message_post_one(ctx: Context, tmp_path: Path) -> None:
    started(ctx, tmp_path)
    slack = SlowSlack()
    server, reconcile = DeploymentFollower(ctx, slack), DeploymentFollower(ctx, slack)

    async def both() -> list[DeploymentView | None]:
        return list(await asyncio.gather(server.refresh("big"), reconcile.refresh("big")))

    shown = asyncio.run(both())
    posts = [s for s in slack.of_kind("deployment") if not s.update]
    assert len(posts) == 1, slack.said
    assert sum(1 for v in shown if v is not None) == 1
    asyncio.run(reconcile.refresh("big", force=True))  # then both update that one message
    assert [s.update for s in slack.of_kind("deployment")] == [False, True]


def test_a_failed_first_post_is_tried_again_at_once(ctx: Context, tmp_path: Path) -> None:
    started(ctx, tmp_path)
    slack = FakeNotifications(fail_next=1)
    follower = DeploymentFollower(ctx, slack)
    assert asyncio.run(follower.refresh("big", force=True)) is None
    assert asyncio.run(DeploymentFollower(ctx, slack).refresh("big", force=True)) is not None
    assert len(slack.of_kind("deployment")) == 1
