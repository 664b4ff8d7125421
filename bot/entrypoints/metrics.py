"""`/metrics` in Prometheus' text format: every metric with its HELP and TYPE.

Counters live in the server's memory (`Server.metrics`: a name, or a name with labels
made by `labelled`); gauges are read from the database at each scrape, so every
server of a fleet shows the same queue, and so are the counters every process adds to
(`FROM_DATABASE`: the failed Slack calls, most of them made by the sender's process).
"""

from __future__ import annotations

from collections import defaultdict

from bot.services.metrics import labelled as labelled  # the keys of labelled counters

HELP = {
    "slack_requests_total": ("counter", "Slack requests received on /slack/events."),
    "sender_rounds_total": ("counter", "Rounds of due work this server's sender ran."),
    "feedback_events_total": (
        "counter",
        "Feedback events received, by source (provider, mailbox, tracking) and result "
        "(applied, duplicate, unmatched, held).",
    ),
    "feedback_refused_total": (
        "counter",
        "Feedback requests refused for a missing, invalid or replayed signature, by source.",
    ),
    "tracking_forged_total": ("counter", "Open or click hits whose token did not verify."),
    "queued_recipients": (
        "gauge",
        "Recipients queued in executions that are sending (all servers and workers).",
    ),
    "executions_in_progress": ("gauge", "Executions in progress."),
    "relay_rate": ("gauge", "Messages relayed per second over the last minute (the fleet)."),
    "slack_api_errors_total": (
        "counter",
        "Slack Web API calls that failed (an error answer, a 5xx, the network), by method, "
        "in every process of this database.",
    ),
}
# Read from the database with the gauges: left out when it could not be read, rather
# than shown as 0 (a counter that drops to 0 reads as a reset).
FROM_DATABASE = frozenset({"slack_api_errors_total"})


def render(counters: dict[str, int], database: dict[str, float]) -> str:
    """The exposition: each family once, HELP and TYPE first, then its samples.

    `counters` are this server's (named without `_total`); `database` the numbers read
    from the database, named as shown, labels included (`services.metrics.gauges`).
    """
    samples: dict[str, list[str]] = defaultdict(list)
    for key, value in counters.items():
        name, brace, labels = key.partition("{")
        samples[f"{name}_total"].append(f"greenlight_{name}_total{brace}{labels} {value}")
    for key, number in database.items():
        name = key.partition("{")[0]
        counted = HELP.get(name, ("gauge", ""))[0] == "counter"
        samples[name].append(
            f"greenlight_{key} {number:.0f}" if counted else f"greenlight_{key} {number:g}"
        )
    lines: list[str] = []
    for family, (kind, text) in HELP.items():
        lines += [f"# HELP greenlight_{family} {text}", f"# TYPE greenlight_{family} {kind}"]
        # A counter not counted yet is 0; what the database did not give is left out.
        zero = kind == "counter" and family not in FROM_DATABASE
        lines += samples.get(family) or ([f"greenlight_{family} 0"] if zero else [])
    return "\n".join(lines) + "\n"
