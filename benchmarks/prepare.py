"""Benchmark: preparing a delivery to a large audience on SQLite.

Builds a fresh SQLite database in a temporary folder, fills an audience with N
profiles (default 100,000; a few % quarantined, denylisted, invalid or duplicate),
creates a delivery with a ~3 KB HTML template, and times `prepare_delivery`.
For reference it also times plain (non-sandboxed) Jinja2 rendering the same three
parts for the same contexts without any database, and prints the ratio.

    .venv/bin/python benchmarks/prepare.py [--profiles N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.bootstrap import bootstrap
from bot.clock import FixedClock
from bot.config import load_settings
from bot.domain.roles import COMMAND_LINE
from bot.engine.rendering import MessageTemplates, profile_context
from bot.services.deliveries.prepare import prepare_delivery
from bot.store.models import Audience, AudienceMember, Delivery, Profile

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Lisbon", "Rome", "Oslo", "Dublin"]
PLANS = ["free", "pro", "team", "enterprise"]
PRODUCTS = ["Trail shoes", "Rain jacket", "Daypack", "Headlamp", "Water filter", "Tent"]

SUBJECT = "{{ first_name }}, your {{ plan }} picks for the spring sale"

TEXT = """Hello {{ first_name }} {{ last_name }},

Spring is here in {{ city }}. As a {{ plan }} member you have {{ points }} points.
{% for item in products %}
- {{ item }}
{% endfor %}
{% if vip %}You get early access: the sale opens for you 24 hours before everyone else.
{% endif %}
Unsubscribe: https://example.com/u?e={{ email | urlencode }}
"""

HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ delivery.name }}</title>
<style>
  body { margin: 0; padding: 0; background: #f4f4f7; font-family: Helvetica, Arial, sans-serif; }
  .wrap { max-width: 600px; margin: 0 auto; background: #ffffff; }
  .hero { padding: 32px 24px; background: #0b6e4f; color: #ffffff; }
  .hero h1 { margin: 0 0 8px 0; font-size: 26px; line-height: 32px; }
  .body { padding: 24px; color: #333333; font-size: 16px; line-height: 24px; }
  .item { padding: 12px 0; border-bottom: 1px solid #eeeeee; }
  .cta { display: inline-block; padding: 12px 20px; background: #0b6e4f; color: #ffffff;
         text-decoration: none; border-radius: 4px; }
  .vip { padding: 16px; background: #fff4d6; border: 1px solid #f0c36d; margin: 16px 0; }
  .foot { padding: 24px; color: #888888; font-size: 12px; line-height: 18px; }
</style>
</head>
<body>
<table class="wrap" role="presentation" width="100%" cellpadding="0" cellspacing="0">
  <tr>
    <td class="hero">
      <h1>Hello {{ first_name }}, spring is here in {{ city }}</h1>
      <p>Our spring sale starts on Monday. Here is what we picked for you.</p>
    </td>
  </tr>
  <tr>
    <td class="body">
      <p>Dear {{ first_name }} {{ last_name }},</p>
      <p>As a <strong>{{ plan | title }}</strong> member you have collected
         <strong>{{ points }}</strong> points so far. Spend them before the end of
         the month and get up to 30 % off the items below.</p>
      {% if vip %}
      <div class="vip">
        <strong>Early access:</strong> as one of our best customers you can shop the
        sale 24 hours before everyone else. Your personal code is
        <code>VIP-{{ profile.email | truncate(6, True, '') | upper }}-{{ points }}</code>.
      </div>
      {% endif %}
      <table role="presentation" width="100%" cellpadding="0" cellspacing="0">
        {% for item in products %}
        <tr>
          <td class="item">
            <strong>{{ loop.index }}. {{ item }}</strong><br>
            {% set slug = item | lower | replace(' ', '-') %}
            <a href="https://shop.example.com/p/{{ slug }}?u={{ email | urlencode }}">
              See the {{ item | lower }}</a>
          </td>
        </tr>
        {% endfor %}
      </table>
      <p style="margin-top: 24px;">
        <a class="cta" href="https://shop.example.com/sale?u={{ email | urlencode }}">
          Shop the sale</a>
      </p>
      <p>See you soon,<br>The Example Outdoor team</p>
    </td>
  </tr>
  <tr>
    <td class="foot">
      You receive this message because {{ email }} subscribed to our newsletter.
      Your time zone is {{ timezone }}.
      <a href="https://example.com/u?e={{ email | urlencode }}">Unsubscribe</a> ·
      <a href="https://example.com/prefs">Preferences</a> ·
      Example Outdoor, 1 rue de l'Exemple, 75001 Paris, France.
    </td>
  </tr>
</table>
</body>
</html>
"""


def _profiles(n: int) -> list[dict[str, Any]]:
    """N profiles: ~2 % quarantined, ~1 % denylisted, ~1 % invalid, ~1 % duplicates."""
    rows = []
    for i in range(1, n + 1):
        email = f"user.{i}@example{i % 97}.com"
        if i % 100 == 7:
            email = f"user {i}@example.com"  # invalid: a space
        elif i % 100 == 11 and i > 11:
            email = f"User.{i - 1}@Example{(i - 1) % 97}.com"  # duplicate of the previous one
        status = "valid"
        if i % 50 == 3:
            status = "quarantine"
        elif i % 100 == 5:
            status = "denylisted"
        attributes: dict[str, Any] = {
            "plan": PLANS[i % len(PLANS)],
            "points": (i * 37) % 5000,
            "vip": i % 10 == 0,
            "products": [PRODUCTS[(i + k) % len(PRODUCTS)] for k in range(3)],
        }
        if i % 20:
            attributes["city"] = CITIES[i % len(CITIES)]  # 5 % lack it: a warning
        rows.append(
            {
                "id": i,
                "email": email,
                "email_key": email.lower(),
                "first_name": f"Ann{i}",
                "last_name": "O'Neil & Sons" if i % 13 == 0 else f"Smith{i}",
                "timezone": "Europe/Paris",
                "attributes": attributes,
                "email_status": status,
                "error_count": 0,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    return rows


def _seed(ctx: Any, n: int) -> None:
    profiles = _profiles(n)
    with ctx.sessions.begin() as s:
        s.add(Audience(id=1, name="everyone", version=1, created_at=NOW, updated_at=NOW))
        s.flush()
        for start in range(0, n, 10_000):
            s.execute(insert(Profile), profiles[start : start + 10_000])
        members = [{"audience_id": 1, "profile_id": p["id"]} for p in profiles]
        for start in range(0, n, 10_000):
            s.execute(insert(AudienceMember), members[start : start + 10_000])
        s.add(
            Delivery(
                ref="spring-sale",
                name="Spring sale",
                audience_id=1,
                sender="Example Outdoor <news@example.com>",
                subject=SUBJECT,
                html=HTML,
                text=TEXT,
                validity_seconds=302_400,
                definition_hash="bench",
                created_at=NOW,
                updated_at=NOW,
            )
        )


def _contexts(n: int) -> list[dict[str, Any]]:
    about = {"ref": "spring-sale", "name": "Spring sale"}
    return [
        profile_context(
            email=p["email"],
            first_name=p["first_name"],
            last_name=p["last_name"],
            timezone=p["timezone"],
            attributes=p["attributes"],
            delivery=about,
        )
        for p in _profiles(n)
    ]


def _reference(contexts: list[dict[str, Any]]) -> float:
    """Plain Jinja2, no sandbox, no database: the same parts for the same contexts."""
    options: dict[str, Any] = {"trim_blocks": True, "lstrip_blocks": True}
    env = Environment(autoescape=False, keep_trailing_newline=True, **options)
    html_env = Environment(autoescape=True, keep_trailing_newline=True, **options)
    subject, text = env.from_string(SUBJECT), env.from_string(TEXT)
    html = html_env.from_string(HTML)
    started = time.perf_counter()
    for ctx in contexts:
        subject.render(ctx)
        html.render(ctx)
        text.render(ctx)
    return time.perf_counter() - started


def _sandboxed(contexts: list[dict[str, Any]]) -> float:
    """Greenlight's sandboxed MessageTemplates alone, no database."""
    templates = MessageTemplates(SUBJECT, HTML, TEXT)
    started = time.perf_counter()
    for ctx in contexts:
        templates.render(ctx)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    args = parser.parse_args()
    n = args.profiles
    print(f"python {platform.python_version()} on {platform.machine()}, {n:,} profiles")
    print(f"HTML template: {len(HTML.encode()):,} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(_env_file=None, database_url=f"sqlite:///{Path(tmp) / 'bench.db'}")
        root = bootstrap(settings, FixedClock(NOW))
        ctx = root.context
        started = time.perf_counter()
        _seed(ctx, n)
        print(f"seed: {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        result = prepare_delivery(ctx, COMMAND_LINE, "spring-sale")
        elapsed = time.perf_counter() - started
        again = time.perf_counter()
        prepare_delivery(ctx, COMMAND_LINE, "spring-sale")
        elapsed_again = time.perf_counter() - again
        root.close()
    print(
        f"prepare: {elapsed:.2f} s, {n / elapsed:,.0f} profiles/s "
        f"(state {result.state}, targeted {result.targeted:,}, excluded {result.excluded:,}, "
        f"to deliver {result.to_deliver:,})"
    )
    print(f"  exclusions: {result.to_json()['exclusions']}")
    print(f"  warnings: {[(w.name, w.count) for w in result.warnings]}")
    print(f"re-prepare (replaces the logs): {elapsed_again:.2f} s")
    contexts = _contexts(n)
    reference = _reference(contexts)
    sandboxed = _sandboxed(contexts)
    print(f"plain Jinja2, no DB: {reference:.2f} s, {n / reference:,.0f} profiles/s")
    print(f"sandboxed MessageTemplates, no DB: {sandboxed:.2f} s, {n / sandboxed:,.0f} profiles/s")
    print(f"ratio sandboxed / plain rendering: {sandboxed / reference:.2f}")
    print(f"ratio prepare (DB, exclusions, logs) / plain rendering: {elapsed / reference:.2f}")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
