"""Hostile templates cost bounded time and memory, and say which bound they crossed.

Each bomb below took tens of seconds or gigabytes without the bounds; here each
render stops at its first bound (the test would hang or run out of memory
otherwise). The import refuses what is over the bounds without any profile data;
the preparation stops at the first profile whose render crosses one.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import yaml
from scenario import CLI, detail_json

from bot.context import Context
from bot.domain.errors import DomainError
from bot.engine.render_limits import RenderLimits
from bot.engine.rendering import MessageTemplates, RenderLimitExceeded, profile_context
from bot.handlers.deps import RenderPool
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.problems import InputRejected
from bot.services.imports.profiles import import_profiles

CONTEXT = profile_context(
    email="a@x.example",
    first_name="Ann",
    last_name=None,
    timezone=None,
    attributes={"n": "1000000000"},
    delivery={"ref": "r", "name": "R"},
)

BOMBS = {
    "repeat": "{{ 'x' * 10**9 }}",
    "power": "{{ 10**1000000 }}",
    "product": "{% set a = 10**3000 %}{{ a * a * a * a }}",
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "concat doubling": "{% set a = 'x' * 1000 %}"
    + "{% set a = a~a~a~a~a~a~a~a~a~a %}" * 6
    + "{{ a }}",
    "quadratic concat": (
        "{% set ns = namespace(a='') %}{% for i in range(100000) %}"
        "{% set ns.a = ns.a ~ 'xxxxxxxxxx' %}{% endfor %}"
    ),
    "center filter": "{{ 'x'|center(1000000000) }}",
    "center method": "{{ 'x'.center(1000000000) }}",
    "format width": "{{ '{:>1000000000}'.format('x') }}",
    "printf width": "{{ '%1000000000s' % 'x' }}",
    "printf star": "{{ '%*s' % (1000000000, 'x') }}",
    "join": "{{ (['x' * 1000] * 2000)|join }}",
    "replace": "{{ ('x' * 900000).replace('x', 'yy') }}",
    "batch fill": "{{ [1]|batch(1000000000, 0)|list }}",
    "wordwrap": "{{ ('x ' * 400000)|wordwrap(5) }}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "from profile data": "{{ 'x' * (n|int) }}",
}


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_each_bomb_stops_at_a_bound_with_its_line(source: str) -> None:
    output = source == BOMBS["output"]
    # The output bomb gets CPU enough to reach its own bound on a loaded machine (which
    # bound fires first is what the test checks there).
    limits = RenderLimits(cpu_seconds=10.0 if output else 0.2)
    templates = MessageTemplates("Hi", source, None, limits)
    with pytest.raises(RenderLimitExceeded) as caught:
        templates.render(CONTEXT)
    # The output bound is checked between chunks, outside any template line.
    assert caught.value.part == "html"
    assert caught.value.line == (None if output else 1)
    assert caught.value.reason.startswith("over the rendering limits: ")


def test_templates_within_the_bounds_render_as_before() -> None:
    html = (
        "<p>{% for i in range(3) %}{{ i }}{% endfor %} {{ '%05d' % 7 }} {{ 'a' ~ first_name }}"
        " {{ 2 ** 10 }} {{ ('ab' * 3)|upper }} {{ [1, 2]|join(', ') }} {{ nickname }}</p>"
    )
    message = MessageTemplates("Hi {{ first_name }}", html, "{{ 'x'|center(9) }}").render(CONTEXT)
    assert message.html == "<p>012 00007 aAnn 1024 ABABAB 1, 2 </p>"
    assert message.text == "    x    " and message.subject == "Hi Ann"
    assert message.warnings == ("nickname",)


def test_lipsum_is_not_offered() -> None:
    message = MessageTemplates("Hi", "[{{ lipsum(1000000) }}]", None).render(CONTEXT)
    assert message.html == "[]" and message.warnings == ("lipsum",)


@pytest.fixture
def audience(ctx: Context, tmp_path: Path) -> str:
    rows = "".join(f"p{i}@x.example,Ann,{10**9}\n" for i in range(50))
    (tmp_path / "p.csv").write_text("email,first_name,n\n" + rows)
    import_profiles(ctx, CLI, tmp_path / "p.csv", "all")
    return "all"


def delivery(html: str) -> dict[str, str]:
    return {
        "ref": "bomb",
        "name": "Bomb",
        "audience": "all",
        "from": "news@shop.example",
        "subject": "Hi",
        "html": html,
    }


def test_the_import_refuses_a_template_over_the_bounds_without_data(
    ctx: Context, tmp_path: Path, audience: str
) -> None:
    (tmp_path / "d.yml").write_text(yaml.safe_dump([delivery(BOMBS["repeat"])]))
    with pytest.raises(InputRejected) as caught:
        import_deliveries(ctx, CLI, tmp_path / "d.yml")
    (problem,) = caught.value.problems
    assert problem.field == "html"
    assert "over the rendering limits" in problem.reason and "1,000,000,000" in problem.reason


def test_the_preparation_stops_at_the_first_profile_over_the_bounds(
    ctx: Context, tmp_path: Path, audience: str
) -> None:
    (tmp_path / "d.yml").write_text(yaml.safe_dump([delivery(BOMBS["from profile data"])]))
    import_deliveries(ctx, CLI, tmp_path / "d.yml")  # nothing to see without data
    result = prepare_delivery(ctx, CLI, "bomb")
    assert result.state == "editing"
    detail = detail_json(ctx, "bomb")
    errors = detail["preparation"]["errors"]
    assert len(errors) == 1, "one error, not one per profile: the rest were not rendered"
    assert errors[0]["part"] == "html" and "over the rendering limits" in errors[0]["reason"]


def test_the_render_pool_is_bounded_and_leaves_the_default_threads_free() -> None:
    async def scenario() -> None:
        pool = RenderPool(workers=1, waiting=1)
        release = threading.Event()
        busy = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(2)]
        await asyncio.sleep(0)  # let both take their slots
        with pytest.raises(DomainError, match="try again"):
            await pool.run(lambda: None)
        # The server's own threads still answer while every render slot is taken.
        assert await asyncio.to_thread(lambda: "healthz") == "healthz"
        release.set()
        assert await asyncio.gather(*busy) == [True, True]
        assert await pool.run(lambda: 42) == 42

    asyncio.run(scenario())
