"""`register(app, deps)`: every listener on its command, action id or event, and the middleware."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.blocks import ids
from bot.handlers import approval, campaign, confirm, deployment, home, proof
from bot.handlers.deps import Caller, HandlerDeps


def register(app: AsyncApp, deps: HandlerDeps) -> None:
    app.use(Caller(deps))
    app.command(ids.CONFIRM_SEND_COMMAND)(confirm.confirm_send_command)
    app.action(ids.PICK_DELIVERY)(confirm.delivery_picked)
    app.action(ids.CONFIRM_SEND)(confirm.confirm_clicked)
    app.action(ids.SEND_PROOF)(proof.proof_clicked)
    app.command(ids.CAMPAIGN_COMMAND)(campaign.campaign_command)
    app.action(ids.COMPUTE_STATS)(deployment.compute_stats_clicked)
    app.action(ids.PAUSE)(deployment.pause_clicked)
    app.action(ids.RESUME)(deployment.resume_clicked)
    app.action(ids.STOP)(deployment.stop_clicked)
    app.action(ids.APPROVE_OCCURRENCE)(approval.approve_clicked)
    app.action(ids.SKIP_OCCURRENCE)(approval.skip_clicked)
    app.action(ids.AUDIT_OLDER)(campaign.audit_page_clicked)
    app.action(ids.AUDIT_NEWER)(campaign.audit_page_clicked)
    app.event(ids.HOME_OPENED_EVENT)(home.home_opened)
