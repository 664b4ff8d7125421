"""What a person's App Home tab shows: typed views, read for that person's roles.

The Home tab is one view per person (`views.publish`), drawn by `bot.blocks.home`
from this view and nothing else. A section a person may not see is None, not empty:
the builder says "nothing waits" for an empty one and leaves a None one out, so a
person without a role sees no delivery at all, and is told which role to ask for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.domain.roles import Role
from bot.services.deliveries.views import DeliverySummary, DeploymentView
from bot.services.recurring.views import ApprovalRequestView

MAX_READY = 10  # deliveries ready to confirm listed on the Home tab
MAX_APPROVALS = 10  # approval requests, the soonest deadline first
MAX_SENDING = 10  # sends in progress (or paused)
MAX_FINISHED = 5  # the latest finished sends


@dataclass(frozen=True)
class HomeView:
    """`None`: the viewer may not see that section; a sequence: what it holds now.

    `more_*` count what did not fit (each section is bounded: a Home view holds at
    most 100 blocks). Two views are equal when the tab would show the same thing, so
    an unchanged tab is not published again.
    """

    user: str
    roles: frozenset[Role]
    ready: Sequence[DeliverySummary] | None = None
    approvals: Sequence[ApprovalRequestView] | None = None
    sending: Sequence[DeploymentView] | None = None
    finished: Sequence[DeploymentView] | None = None
    more_ready: int = 0
    more_approvals: int = 0
    more_sending: int = 0
    notice: str | None = None  # what the viewer's last click on the tab did (mrkdwn, escaped)
