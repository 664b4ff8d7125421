"""Personalising a delivery's subject, HTML and text for one profile, in a sandbox.

Templates are written by marketing people and rendered with profile data, so they
run in Jinja2's immutable sandbox: no access to private attributes, no mutation of
the data handed in. Each part is compiled once per delivery (`MessageTemplates`),
because rendering is the hot loop of preparation and of sending.

Two kinds of trouble, kept apart on purpose (SPEC section 3):

* a variable a profile lacks renders as empty and is reported as a *warning*
  (the name is recorded), so an optional field never blocks a send;
* anything else that goes wrong while rendering (a division by zero, a type
  error, a sandbox violation, a failing filter) is a critical `RenderError` that
  names the part, the template line and the reason.

Syntax errors are found when the templates are compiled: `TemplateSyntaxProblem`.

A third kind, `RenderLimitExceeded` (a `RenderError`), is a template that asks for
more than a message may cost (`bot.engine.render_limits`): too large a value or
output, too many loop turns, too much CPU time. The preparation stops at the first
one: the same template would cost as much for every profile.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from itertools import islice
from typing import Any, NamedTuple

from jinja2 import BaseLoader, ChainableUndefined, Environment, Template, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.debug import rewrite_traceback_stack
from jinja2.exceptions import (
    SecurityError,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from bot.domain.errors import DomainError
from bot.engine import render_limits
from bot.engine.render_limits import DEFAULT_LIMITS, LimitExceeded, RenderLimits

PARTS = ("subject", "html", "text")

# The names of missing variables used by the render in progress (None: not rendering).
_MISSING: ContextVar[list[str] | None] = ContextVar("greenlight_missing_variables", default=None)


class RenderError(DomainError):
    """A message could not be rendered for one profile: a critical preparation error."""

    def __init__(self, part: str, line: int | None, reason: str) -> None:
        self.part = part
        self.line = line
        self.reason = reason
        where = f"{part}, line {line}" if line else part
        super().__init__(f"{where}: {reason}")


class RenderLimitExceeded(RenderError):
    """A render went past a bound of `RenderLimits`: the template, not the profile, is at fault."""


class TemplateSyntaxProblem(DomainError):
    """A part does not compile; every broken part is listed with its line."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        first = problems[0]
        self.part: str = first["part"]
        self.line: int | None = first["line"]
        self.reason: str = first["reason"]
        text = "; ".join(f"{p['part']}, line {p['line']}: {p['reason']}" for p in problems)
        super().__init__(f"template syntax error: {text}")


class RenderedMessage(NamedTuple):
    """One personalised message; `warnings` holds the missing variables it used."""

    subject: str
    html: str | None
    text: str | None
    warnings: tuple[str, ...]


class MissingVariable(ChainableUndefined):
    """Renders as empty and records its name; a sandbox refusal still raises.

    Chainable, so `{{ profile.nickname.title() }}` is as lenient as
    `{{ nickname }}`. Output, loops and `==` record the name; truth tests
    (`{% if nickname %}`), `is defined` and `default` do not: the template already
    handles the missing value there. Arithmetic and comparisons of order still fail
    (there is no sensible result) and are critical errors.
    """

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is SecurityError:
            # The sandbox reports unsafe attribute access as an Undefined that only
            # fails when used; stop at once so it can never render silently.
            raise SecurityError(hint or f"access to {name!r} is unsafe")
        super().__init__(hint, obj, name, exc)

    def _note(self) -> None:
        sink = _MISSING.get()
        if sink is not None:
            name = self._undefined_name
            sink.append(str(name) if name is not None else "?")

    def __str__(self) -> str:
        self._note()
        return ""

    def __html__(self) -> str:
        self._note()
        return ""

    def __iter__(self) -> Iterator[Any]:
        self._note()
        return iter(())

    def __len__(self) -> int:
        self._note()
        return 0

    # Undefined's own call raises; this one stays lenient, so a method called on a
    # missing value (`{{ nickname.title() }}`) renders empty too.
    def __call__(self, *args: Any, **kwargs: Any) -> MissingVariable:  # type: ignore[override]
        return self

    def __eq__(self, other: object) -> bool:
        self._note()
        return type(self) is type(other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return id(type(self))


class _GuardedCodeGenerator(CodeGenerator):
    """Puts every ``for`` loop's iterable through `render_limits.guarded_iter`, and every
    ``~`` through `_GuardedEnvironment.checked_concat`, where they can be counted."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        original = node.iter
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("guarded_iter"), [original], [], None, None
        )
        node.iter.set_lineno(original.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = original

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GuardedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every costly operation measured first."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limits: RenderLimits, **options: Any) -> None:
        # No constant folding: it would run template expressions at compile time,
        # outside any budget.
        super().__init__(optimized=False, **options)
        self.limits = limits
        self.filters = {
            name: render_limits.guard_filter(name, func, limits)
            for name, func in self.filters.items()
        }
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: nothing for emails

    def guarded_iter(self, iterable: Any) -> Iterator[Any]:
        return render_limits.guarded_iter(iterable)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        render_limits.step()
        render_limits.check_binop(operator, left, right, self.limits)
        result = super().call_binop(context, operator, left, right)
        render_limits.check_size(result, self.limits, f"'{operator}'")
        return result

    def call(
        __self,  # the sandbox's spelling: no clash with the call's own keywords
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        render_limits.step()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            render_limits.check_str_method(owner, name, args, kwargs, __self.limits)
        result = super().call(__context, __obj, *args, **kwargs)
        render_limits.check_size(result, __self.limits, "a call")
        return result

    def checked_concat(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        render_limits.step()
        size = sum(len(p) for p in parts if isinstance(p, str))
        if size > self.limits.max_value:
            raise LimitExceeded(
                f"joining with '~' would make {size:,} characters, more than the "
                f"{self.limits.max_value:,} allowed"
            )
        result = join(parts)
        render_limits.check_size(result, self.limits, "'~'")
        return result


class _PartLoader(BaseLoader):
    """The parts of one delivery by name; the "filename" is the part's name, so that
    tracebacks (and the lines a RenderError names) say which part failed."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self.sources:
            raise TemplateNotFound(template)
        source = self.sources[template]
        return source, template, lambda: self.sources.get(template) == source


def _autoescape(name: str | None) -> bool:
    return name == "html"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LimitExceeded):
        return f"over the rendering limits: {exc.reason}"
    if isinstance(exc, MemoryError):
        return "over the rendering limits: out of memory"
    if isinstance(exc, RecursionError):
        return "over the rendering limits: macros or loops nested too deeply"
    if isinstance(exc, SecurityError):
        return f"not allowed in templates: {exc}"
    if isinstance(exc, UndefinedError):
        return f"{exc}: this profile has no value for it and the expression needs one"
    if isinstance(exc, TemplateError):
        return str(exc) or type(exc).__name__
    text = str(exc)
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


def _line_of(exc: BaseException, part: str) -> int | None:
    """The template line of the innermost frame that ran the part's code."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == part:
            line = frame.lineno
    if line is None:
        line = getattr(exc, "lineno", None)
    return line


def _one_line(subject: str) -> str:
    """A subject is a header: no line breaks may come from the data."""
    if "\n" in subject or "\r" in subject or "\t" in subject:
        return " ".join(subject.split())
    return subject.strip()


class MessageTemplates:
    """A delivery's subject, HTML and text compiled once, rendered per profile.

    `html` and `text` may be None (a delivery has one or both); they render as None.
    Autoescaping is on for the HTML part only: a profile value containing `<` is
    text in HTML, and stays as typed in the subject and the text part.
    """

    def __init__(
        self,
        subject: str,
        html: str | None,
        text: str | None,
        limits: RenderLimits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        sources = {"subject": subject or ""}
        if html is not None:
            sources["html"] = html
        if text is not None:
            sources["text"] = text
        self.environment = _GuardedEnvironment(
            limits,
            loader=_PartLoader(sources),
            autoescape=_autoescape,
            undefined=MissingVariable,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        compiled: dict[str, Template] = {}
        problems: list[dict[str, Any]] = []
        for part in PARTS:
            if part not in sources:
                continue
            try:
                compiled[part] = self.environment.get_template(part)
            except TemplateSyntaxError as exc:
                problems.append(
                    {"part": part, "line": exc.lineno, "reason": exc.message or str(exc)}
                )
        if problems:
            raise TemplateSyntaxProblem(problems)
        self._subject = compiled["subject"]
        self._html = compiled.get("html")
        self._text = compiled.get("text")
        self._globals = dict(self._subject.globals)

    def render(self, context: Mapping[str, Any]) -> RenderedMessage:
        """Render every part; RenderError on the first part that fails.

        The three parts share one context dict (the environment's globals plus the
        profile's variables) instead of each copying it, as `Template.render` would:
        a quarter of the cost of a render, over a hundred thousand profiles.
        """
        parent = {**self._globals, **context}
        used: list[str] = []
        token = _MISSING.set(used)
        budget = render_limits.start(self.limits)
        part = "subject"
        limit = self.limits.max_output
        try:
            subject = _run(self._subject, parent, limit)
            html = text = None
            if self._html is not None:
                part = "html"
                html = _run(self._html, parent, limit)
            if self._text is not None:
                part = "text"
                text = _run(self._text, parent, limit)
        except (Exception, MemoryError, RecursionError):
            # Map the frames of compiled template code back to template lines.
            exc = rewrite_traceback_stack()
            kind = (
                RenderLimitExceeded
                if isinstance(exc, LimitExceeded | MemoryError | RecursionError)
                else RenderError
            )
            raise kind(part, _line_of(exc, part), _reason(exc)) from exc
        finally:
            render_limits.finish(budget)
            _MISSING.reset(token)
        warnings = tuple(dict.fromkeys(used)) if used else ()
        return RenderedMessage(_one_line(subject), html, text, warnings)


_BLOCK = 32  # chunks taken between two checks of the output's size


def _run(template: Template, parent: dict[str, Any], limit: int) -> str:
    """The part's output, stopped soon after it grows past `limit` characters.

    The chunks are taken in blocks (`islice` runs the generator in C): checking each
    one cost a third of a render. A block of values each within the value bound keeps
    what is held before the check bounded too.
    """
    chunks: list[str] = []
    size = 0
    budget = render_limits.current()
    produced = template.root_render_func(template.new_context(parent, shared=True))
    while block := list(islice(produced, _BLOCK)):
        size += sum(map(len, block))
        if size > limit:
            raise LimitExceeded(
                f"the rendered text is longer than {limit:,} characters; shorten the template"
            )
        chunks += block
        if budget is not None:
            budget.step(len(block))
    if budget is not None:
        budget.check_time()
    return "".join(chunks)


# The signed links of one message a template may place (`MessageSkeleton.links`).
LINK_VARIABLES = ("unsubscribe_url", "view_online_url")
# What they are before a message exists (preparation, preview, the import's check):
# addresses under `.invalid` (RFC 2606), which can never reach anything.
PLACEHOLDER_LINKS: Mapping[str, str] = {
    "unsubscribe_url": "https://unsubscribe.invalid/",
    "view_online_url": "https://view-online.invalid/",
}


def profile_context(
    *,
    email: str,
    first_name: str | None,
    last_name: str | None,
    timezone: str | None,
    attributes: Mapping[str, Any] | None,
    delivery: Mapping[str, Any],
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The variables a template sees for one profile.

    Each attribute is a top-level variable; the known fields win over attributes of
    the same name. `profile` holds all of them, `delivery` the delivery's ref and
    name. A value that is None counts as missing (empty, with a warning).
    `unsubscribe_url` and `view_online_url` are the message's signed `links` (the
    sender's and the web version's), or placeholders where no message exists yet, so
    that a template using them never gets a missing-variable warning.
    """
    profile: dict[str, Any] = {}
    if attributes:
        for key, value in attributes.items():
            if value is not None:
                profile[key] = value
    profile["email"] = email
    if first_name is not None:
        profile["first_name"] = first_name
    if last_name is not None:
        profile["last_name"] = last_name
    if timezone is not None:
        profile["timezone"] = timezone
    context = dict(profile)
    context.update(PLACEHOLDER_LINKS if links is None else links)
    context["profile"] = profile
    context["delivery"] = delivery
    return context
