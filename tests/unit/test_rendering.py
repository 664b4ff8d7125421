"""Sandboxed rendering: what a profile sees, what is a warning, what is critical."""

from __future__ import annotations

from typing import Any

import pytest

from bot.engine.rendering import (
    MessageTemplates,
    RenderError,
    TemplateSyntaxProblem,
    profile_context,
)

ABOUT = {"ref": "spring-sale", "name": "Spring sale"}


def ctx(**attributes: Any) -> dict[str, Any]:
    known = {
        "email": attributes.pop("email", "ann@example.com"),
        "first_name": attributes.pop("first_name", "Ann"),
        "last_name": attributes.pop("last_name", "Smith"),
        "timezone": attributes.pop("timezone", "Europe/Paris"),
    }
    return profile_context(**known, attributes=attributes, delivery=ABOUT)


def render_text(source: str, **attributes: Any) -> Any:
    return MessageTemplates("subject", None, source).render(ctx(**attributes))


def test_known_fields_attributes_profile_and_delivery_are_variables() -> None:
    t = MessageTemplates(
        "{{ first_name }}, {{ delivery.name }}",
        "<p>{{ profile.last_name }} {{ plan }} {{ profile.plan }}</p>",
        "{{ email }} {{ timezone }} {{ delivery.ref }} {{ points + 1 }}",
    )
    msg = t.render(ctx(plan="pro", points=41))
    assert msg.subject == "Ann, Spring sale"
    assert msg.html == "<p>Smith pro pro</p>"
    assert msg.text == "ann@example.com Europe/Paris spring-sale 42"
    assert msg.warnings == ()


def test_known_fields_win_over_attributes_of_the_same_name() -> None:
    context = profile_context(
        email="ann@example.com",
        first_name="Ann",
        last_name=None,
        timezone=None,
        attributes={"email": "spoof@example.com", "first_name": "Eve"},
        delivery=ABOUT,
    )
    msg = MessageTemplates("{{ email }} {{ first_name }}", None, None).render(context)
    assert msg.subject == "ann@example.com Ann"


def test_missing_attribute_renders_empty_and_is_a_warning() -> None:
    msg = MessageTemplates(
        "Hi {{ nickname }}", "<p>{{ profile.city }}!</p>", "{{ nickname }}{{ nickname }}"
    ).render(ctx())
    assert msg.subject == "Hi"
    assert msg.html == "<p>!</p>"
    assert msg.text == ""
    assert msg.warnings == ("nickname", "city")  # each name once, in order of use


def test_a_none_field_counts_as_missing() -> None:
    msg = render_text("Dear {{ first_name }}.", first_name=None)
    assert msg.text == "Dear ."
    assert msg.warnings == ("first_name",)


def test_missing_attribute_in_if_default_and_chains_is_not_an_error() -> None:
    source = (
        "{% if vip %}VIP{% else %}regular{% endif %}|"
        "{{ nickname | default('friend') }}|"
        "{% if nickname is defined %}x{% endif %}|"
        "{{ address.city.title() }}|"
        "{% for p in products %}{{ p }}{% endfor %}"
    )
    msg = render_text(source)
    assert msg.text == "regular|friend|||"
    # Only actual uses are reported: the tests and `default` handle the gap already.
    assert msg.warnings == ("address", "products")


def test_warnings_do_not_leak_from_one_render_to_the_next() -> None:
    t = MessageTemplates("{{ city }}", None, None)
    assert t.render(ctx()).warnings == ("city",)
    assert t.render(ctx(city="Lyon")).warnings == ()


def test_a_set_in_one_part_does_not_leak_into_another() -> None:
    t = MessageTemplates("{% set code = 'A1' %}{{ code }}", "<p>{{ code }}</p>", "{{ code }}")
    msg = t.render(ctx())
    assert (msg.subject, msg.html, msg.text) == ("A1", "<p></p>", "")
    assert msg.warnings == ("code",)


def test_html_autoescapes_profile_values_but_subject_and_text_do_not() -> None:
    t = MessageTemplates("{{ company }}", "<p>{{ company }}</p>", "{{ company }}")
    msg = t.render(ctx(company="<b>O'Neil & Sons</b>"))
    assert msg.html == "<p>&lt;b&gt;O&#39;Neil &amp; Sons&lt;/b&gt;</p>"
    assert msg.text == "<b>O'Neil & Sons</b>"
    assert msg.subject == "<b>O'Neil & Sons</b>"


def test_subject_stays_on_one_line_whatever_the_data() -> None:
    msg = MessageTemplates("Hi {{ first_name }}", None, None).render(
        ctx(first_name="Ann\r\nBcc: victim@example.com")
    )
    assert msg.subject == "Hi Ann Bcc: victim@example.com"


def test_division_by_zero_is_critical_with_part_and_line() -> None:
    t = MessageTemplates("s", "<p>line 1</p>\n<p>line 2</p>\n{{ 100 / divisor }}", "ok")
    assert t.render(ctx(divisor=4)).html.endswith("25.0")
    with pytest.raises(RenderError) as caught:
        t.render(ctx(divisor=0))
    err = caught.value
    assert (err.part, err.line) == ("html", 3)
    assert "division by zero" in err.reason
    assert "html, line 3" in str(err)


def test_type_error_in_text_part_is_critical() -> None:
    with pytest.raises(RenderError) as caught:
        render_text("one\ntwo {{ first_name + points }}", points=3)
    assert (caught.value.part, caught.value.line) == ("text", 2)
    assert "TypeError" in caught.value.reason


def test_arithmetic_on_a_missing_attribute_is_critical() -> None:
    with pytest.raises(RenderError) as caught:
        render_text("{{ 1 / divisor }}")
    assert "'divisor' is undefined" in caught.value.reason


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ email.__class__.__subclasses__() }}",
        "{{ profile.update({'email': 'x'}) }}",  # the data is immutable
        "{{ products.append(1) }}",
        "{{ nickname.__class__ }}",
    ],
)
def test_sandbox_escapes_are_critical_errors_never_silent(source: str) -> None:
    with pytest.raises(RenderError) as caught:
        MessageTemplates("s", f"<p>ok</p>\n{source}", None).render(ctx(products=[1]))
    assert caught.value.part == "html"
    assert caught.value.line == 2
    assert "not allowed" in caught.value.reason


def test_sandbox_limits_huge_ranges() -> None:
    with pytest.raises(RenderError) as caught:
        render_text("{% for i in range(10**9) %}x{% endfor %}")
    assert "OverflowError" in caught.value.reason


def test_failing_filter_is_critical() -> None:
    with pytest.raises(RenderError) as caught:
        render_text("{{ points | round(precision='x') }}", points=1.5)
    assert caught.value.part == "text"
    assert caught.value.line == 1


def test_syntax_errors_name_every_broken_part_and_line() -> None:
    with pytest.raises(TemplateSyntaxProblem) as caught:
        MessageTemplates("ok {{ first_name }}", "<p>\n{% if vip %}\n</p>", "a\nb\n{{ x ")
    problems = caught.value.problems
    assert [(p["part"], p["line"]) for p in problems] == [("html", 3), ("text", 3)]
    assert "endif" in problems[0]["reason"] or "end of template" in problems[0]["reason"]
    assert (caught.value.part, caught.value.line) == ("html", 3)


def test_unknown_filter_is_a_syntax_problem() -> None:
    with pytest.raises(TemplateSyntaxProblem) as caught:
        MessageTemplates("{{ first_name | shout }}", None, None)
    assert caught.value.part == "subject"
    assert "shout" in caught.value.reason


def test_absent_parts_render_as_none() -> None:
    msg = MessageTemplates("only a subject", None, None).render(ctx())
    assert (msg.subject, msg.html, msg.text) == ("only a subject", None, None)


def test_loops_and_conditions_render_cleanly_in_text() -> None:
    source = (
        "Your picks:\n{% for p in products %}\n- {{ p }}\n{% endfor %}\n"
        "{% if vip %}VIP\n{% endif %}"
    )
    msg = render_text(source, products=["tent", "lamp"], vip=True)
    assert msg.text == "Your picks:\n- tent\n- lamp\nVIP\n"


def test_template_globals_and_set_work() -> None:
    msg = render_text("{% set n = points * 2 %}{{ n }} {{ range(3) | join(',') }}", points=2)
    assert msg.text == "4 0,1,2"
