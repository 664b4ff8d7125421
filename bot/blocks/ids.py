"""Every id Slack sends back to us: slash commands, action ids, block ids, button values.

Builders put these ids in messages, handlers listen on them and `manifest.yml` declares
the commands and events; keeping them here means a rename cannot leave a button that nothing
listens to. There are no modals or shortcuts, hence no callback ids.

A button's `value` carries what the click acts on. A click is checked when it happens
(SPEC section 2), so the value names the delivery (and, for an approval, the
occurrence) and nothing else: no state, no permission, nothing a forwarded or
replayed button could abuse.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Slash commands (manifest.yml `features.slash_commands`).
CONFIRM_SEND_COMMAND = "/confirm-send"
CAMPAIGN_COMMAND = "/campaign"
COMMANDS = (CONFIRM_SEND_COMMAND, CAMPAIGN_COMMAND)

# Events the app subscribes to (manifest.yml `settings.event_subscriptions.bot_events`).
HOME_OPENED_EVENT = "app_home_opened"
EVENTS = (HOME_OPENED_EVENT,)

# Action ids of interactive elements.
CONFIRM_SEND = "confirm_send"  # the card's Confirm send button (after the OK dialog)
SEND_PROOF = "send_proof"  # the card's Send me a proof button
PICK_DELIVERY = "pick_delivery"  # the picker of ready deliveries
COMPUTE_STATS = "compute_stats"  # Deployment message
PAUSE = "pause_send"
RESUME = "resume_send"
STOP = "stop_send"
APPROVE_OCCURRENCE = "approve_occurrence"  # approval request of a recurring delivery
SKIP_OCCURRENCE = "skip_occurrence"
AUDIT_OLDER = "audit_older"  # `/campaign audit`: the next page (older entries)
AUDIT_NEWER = "audit_newer"  # and the one before it
ACTION_IDS = (
    CONFIRM_SEND,
    SEND_PROOF,
    PICK_DELIVERY,
    COMPUTE_STATS,
    PAUSE,
    RESUME,
    STOP,
    APPROVE_OCCURRENCE,
    SKIP_OCCURRENCE,
    AUDIT_OLDER,
    AUDIT_NEWER,
)

# Block ids of the blocks that hold those elements (stable across chat.update).
CARD_ACTIONS_BLOCK = "confirm_card_actions"
PICKER_BLOCK = "delivery_picker"
DEPLOYMENT_PROGRESS_BLOCK = "deployment_progress"
DEPLOYMENT_KPIS_BLOCK = "deployment_kpis"
DEPLOYMENT_WAVES_BLOCK = "deployment_waves"
DEPLOYMENT_ACTIONS_BLOCK = "deployment_actions"
GUARD_ACTIONS_BLOCK = "guard_actions"  # the send guard's alert: Resume, Stop send
APPROVAL_ACTIONS_BLOCK = "approval_actions"
APPROVAL_DECISION_BLOCK = "approval_decision"
AUDIT_PAGES_BLOCK = "audit_pages"

# Key under which an approval button carries its occurrence (the execution key).
OCCURRENCE_KEY = "occurrence"

MAX_VALUE = 2000  # Slack's limit on a button value

# A value that is a bare ref: what refs look like (services.imports.definitions), a bit wider.
_BARE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def button_value(ref: str, **extra: str | int | float | bool | None) -> str:
    """The `value` of a button acting on delivery `ref`.

    With nothing else to carry it is the bare ref ("spring-sale"), readable in logs
    and payloads; with extras (an approval's occurrence) it is compact JSON with keys
    sorted, so the same button always has the same value.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("a button value needs the delivery ref")
    if "ref" in extra:
        raise ValueError("`ref` is given once, as the first argument")
    if extra or not _BARE_REF.fullmatch(ref):
        value = json.dumps(
            {"ref": ref, **extra}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
        )
    else:
        value = ref
    if len(value) > MAX_VALUE:
        raise ValueError(
            f"a button value is at most {MAX_VALUE} characters; this one has {len(value)}"
        )
    return value


def parse_button_value(value: Any) -> dict[str, Any]:
    """What `button_value` encoded, as a dict with at least a non-empty "ref".

    A value that is not one of ours (empty, truncated JSON, no ref) raises
    ValueError saying what is wrong: the handler answers that the button is out of
    date instead of acting on a guess.
    """
    if not isinstance(value, str):
        raise ValueError(f"a button value is a string, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("the button value is empty: it names no delivery")
    if not text.startswith("{"):
        if not _BARE_REF.fullmatch(text):
            raise ValueError(
                f"{value[:100]!r} is not a delivery ref (letters, digits, - and _) "
                "nor a JSON object"
            )
        return {"ref": text}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the button value is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("the button value is not a JSON object")
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("the button value names no delivery (no `ref`)")
    return data


def audit_page_value(ref: str | None, page: int, upto: int) -> str:
    """The value of an audit pager's button: whose trail (None: all), which page, as of when.

    No permission rides on it: the page is read as the clicker, with their roles then.
    """
    return json.dumps({"audit": ref, "page": page, "upto": upto}, separators=(",", ":"))


def parse_audit_page_value(value: Any) -> tuple[str | None, int, int]:
    """What `audit_page_value` encoded; ValueError for anything else."""
    try:
        data = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ValueError("the button value is not an audit page")
    ref, page, upto = data.get("audit"), data.get("page"), data.get("upto")
    if (ref is not None and not isinstance(ref, str)) or not isinstance(page, int):
        raise ValueError("the button value is not an audit page")
    if not isinstance(upto, int) or isinstance(page, bool) or isinstance(upto, bool):
        raise ValueError("the button value is not an audit page")
    return ref, page, upto
