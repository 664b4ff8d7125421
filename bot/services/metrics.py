"""The numbers `/metrics` shows that live in the database: the gauges, and the counts
every process adds to (failed Slack Web API calls, by method)."""

from __future__ import annotations

from bot.context import Context
from bot.store import metrics

SLACK_FAILURES = "slack_api_errors_total"


def gauges(ctx: Context) -> dict[str, float]:
    """Gauges by name, and the failed Slack calls as `slack_api_errors_total{method="…"}`
    (the unlabelled name at 0 while none failed)."""
    with ctx.sessions() as s:
        numbers = metrics.gauges(s, ctx.clock.now())
        failures = metrics.slack_failures(s)
    for method, count in sorted(failures.items()):
        numbers[labelled(SLACK_FAILURES, method=method)] = float(count)
    if not failures:
        numbers[SLACK_FAILURES] = 0.0
    return numbers


def labelled(name: str, **labels: str) -> str:
    """The key of a counter with labels: `name{a="x",b="y"}` (values escaped)."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
