"""Bounds on what one render may cost: templates come from people, not from us.

The sandbox keeps templates away from Python's internals; it does not keep them from
asking for a billion characters (``{{ 'x' * 10**9 }}``), a number with a million
digits, or ten billion loop turns. Every operation that can make something large or
run long is checked here, *before* it runs where the size can be known in advance:

* ``*``, ``**``, ``+`` and ``%`` (intercepted by the sandbox), ``~`` (the code
  generator routes it here), string methods and filters that pad, repeat, join or
  replace: refused when their result would exceed `RenderLimits.max_value`
  characters (or items), or `max_int_bits` for integers;
* every loop turn (`guarded_iter`, put around each ``for`` by the code generator),
  call and filter counts against `max_steps`;
* the render's own CPU time (the thread's, so a busy server does not make an
  innocent template fail, and without the garbage collector's passes, which a large
  heap makes long whoever triggers them) is checked every few steps and at every
  output chunk;
* each rendered part is at most `max_output` characters.

A render that crosses a bound raises `LimitExceeded`; the renderer turns it into a
`RenderLimitExceeded` naming the part, the line and the bound.
"""

from __future__ import annotations

import gc
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from bot.domain.errors import DomainError


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """The documented bounds of one message's render (README, "Security")."""

    max_output: int = 1_000_000  # characters per rendered part
    max_value: int = 1_000_000  # characters or items of any value a template makes
    max_int_bits: int = 10_000  # about 3,000 decimal digits
    max_steps: int = 200_000  # loop turns, calls and filters per message
    cpu_seconds: float = 0.5  # per message, all parts


DEFAULT_LIMITS = RenderLimits()
_CHECK_EVERY = 256  # steps between two looks at the CPU clock


class LimitExceeded(DomainError):
    """A render went past one of its bounds; `reason` says which and how to fix it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _CollectorTime(threading.local):
    """The CPU time this thread has spent in the garbage collector's passes.

    A full collection of a big process's heap takes whole tenths of a second, and it
    runs in whichever thread allocates when the threshold is reached: charged to a
    render, it failed a one-line template. The budget counts it out.
    """

    total = 0.0
    started: float | None = None


_COLLECTOR = _CollectorTime()


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _COLLECTOR.started = time.thread_time()
    elif _COLLECTOR.started is not None:
        _COLLECTOR.total += time.thread_time() - _COLLECTOR.started
        _COLLECTOR.started = None


gc.callbacks.append(_on_collection)


def own_cpu_time() -> float:
    """This thread's CPU time less its garbage collections: what a render is charged."""
    return time.thread_time() - _COLLECTOR.total


class Budget:
    """What is left of one render's steps and time (one per render, one thread)."""

    __slots__ = ("deadline", "limits", "steps", "until_check")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.steps = 0
        self.until_check = _CHECK_EVERY
        self.deadline = own_cpu_time() + limits.cpu_seconds

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(
                f"the template takes more than {self.limits.max_steps:,} steps "
                "(loop turns, calls and filters) for one message; loop over less"
            )
        self.until_check -= n
        if self.until_check <= 0:
            self.until_check = _CHECK_EVERY
            self.check_time()

    def check_time(self) -> None:
        if own_cpu_time() > self.deadline:
            raise LimitExceeded(
                f"the template takes more than {self.limits.cpu_seconds:g} s to render "
                "one message; simplify its loops and expressions"
            )


_BUDGET: ContextVar[Budget | None] = ContextVar("greenlight_render_budget", default=None)


def start(limits: RenderLimits) -> object:
    """Open a budget for the render about to run; pass the token to `finish`."""
    return _BUDGET.set(Budget(limits))


def finish(token: object) -> None:
    _BUDGET.reset(token)  # type: ignore[arg-type]


def current() -> Budget | None:
    return _BUDGET.get()


def step() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.step()


def guarded_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every ``for`` loop of a template iterates through this: each turn is a step."""
    budget = _BUDGET.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.step()
        yield item


# ------------------------------------------------------------------ sizes


def _too_large(what: str, size: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"{what} would make {size:,} characters or items, more than the {limit:,} allowed"
    )


def check_size(value: object, limits: RenderLimits, what: str = "a value") -> None:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        if len(value) > limits.max_value:
            raise _too_large(what, len(value), limits.max_value)
    elif _bits(value) > limits.max_int_bits:
        raise LimitExceeded(f"{what} makes a number of more than {limits.max_int_bits:,} bits")


def _length(value: object) -> int | None:
    return len(value) if isinstance(value, Sized) and not isinstance(value, dict) else None


def _repeated(count: object) -> int | None:
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def check_binop(operator: str, left: Any, right: Any, limits: RenderLimits) -> None:
    """Refuse, before computing it, an operation whose result is too large."""
    if operator == "*":
        _check_product(left, right, limits)
    elif operator == "**":
        _check_power(left, right, limits)
    elif operator == "+":
        a, b = _length(left), _length(right)
        if a is not None and b is not None and a + b > limits.max_value:
            raise _too_large("joining two values", a + b, limits.max_value)
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right, limits)


def _check_product(left: Any, right: Any, limits: RenderLimits) -> None:
    for seq, n in ((left, right), (right, left)):
        size, times = _length(seq), _repeated(n)
        if size is not None and times is not None and size * times > limits.max_value:
            raise _too_large(f"repeating a value {times:,} times", size * times, limits.max_value)
    bits = _bits(left) + _bits(right)
    if _is_int(left) and _is_int(right) and bits > limits.max_int_bits:
        raise LimitExceeded(f"a product of more than {limits.max_int_bits:,} bits")


def _check_power(base: Any, exponent: Any, limits: RenderLimits) -> None:
    if not (_is_int(base) and _is_int(exponent)) or abs(base) <= 1 or exponent <= 0:
        return
    if exponent * _bits(base) > limits.max_int_bits:
        raise LimitExceeded(
            f"{base} ** {exponent} has more than {limits.max_int_bits:,} bits; use a smaller power"
        )


def _bits(value: Any) -> int:
    return value.bit_length() if _is_int(value) else 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")


def check_printf(fmt: str, args: Any, limits: RenderLimits) -> None:
    """`%`-formatting: no width or precision above the value limit."""
    star_args = args if isinstance(args, tuple) else (args,)
    for m in _PRINTF.finditer(fmt):
        for number in m.groups():
            if number == "*":
                if any(_is_int(a) and abs(a) > limits.max_value for a in star_args):
                    raise _too_large("a '*' width", limits.max_value + 1, limits.max_value)
            elif number is not None and int(number) > limits.max_value:
                raise _too_large(f"the format width {number}", int(number), limits.max_value)


_SPEC_NUMBER = re.compile(r"\d+")


def check_format(fmt: str, limits: RenderLimits, depth: int = 0) -> None:
    """`str.format`: no width or precision above the value limit, nested specs too."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself will say what is wrong
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        for number in _SPEC_NUMBER.findall(spec):
            if int(number) > limits.max_value:
                raise _too_large(f"the format width {number}", int(number), limits.max_value)
        if depth < 2 and "{" in spec:
            check_format(spec, limits, depth + 1)


def _width(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> int | None:
    value = args[index] if len(args) > index else kwargs.get(name)
    return value if _is_int(value) else None


def _joined_size(items: Any, separator: object) -> int | None:
    if not isinstance(items, list | tuple):
        return None
    sep = len(separator) if isinstance(separator, str) else 0
    return sum(len(x) if isinstance(x, str) else 0 for x in items) + sep * max(len(items) - 1, 0)


def _replaced_size(text: str, old: object, new: object) -> int | None:
    if not (isinstance(old, str) and isinstance(new, str)) or len(new) <= len(old):
        return None
    return len(text) + text.count(old) * (len(new) - len(old))


def check_str_method(
    text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limits: RenderLimits
) -> None:
    """The string methods whose result can be much larger than the string."""
    size: int | None = None
    if name in ("center", "ljust", "rjust", "zfill"):
        size = _width(args, kwargs, 0, "width")
    elif name == "expandtabs":
        tab = _width(args, kwargs, 0, "tabsize")
        size = len(text) * tab if tab else None
    elif name == "join" and args:
        size = _joined_size(args[0], text)
    elif name == "replace" and len(args) >= 2:
        size = _replaced_size(text, args[0], args[1])
    elif name in ("format", "format_map"):
        check_format(text, limits)
    if size is not None and size > limits.max_value:
        raise _too_large(f"str.{name}", size, limits.max_value)


# Filters written in Python that take long over a large text: a smaller input bound.
_SLOW_FILTERS = {"wordwrap": 100_000, "urlize": 100_000}


def check_filter(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limits: RenderLimits
) -> None:
    """The filters whose result can be much larger than their input (value is args[0])."""
    value = args[0] if args else None
    rest = args[1:]
    size: int | None = None
    if name in ("center", "indent"):
        width = _width(rest, kwargs, 0, "width")
        if width is not None and isinstance(value, str):
            lines = value.count("\n") + 1 if name == "indent" else 1
            size = width * lines
    elif name in ("batch", "slice"):
        size = _width(rest, kwargs, 0, "linecount" if name == "batch" else "slices")
    elif name == "join":
        sep = rest[0] if rest else kwargs.get("d", "")
        size = _joined_size(value, sep)
    elif name == "replace" and len(rest) >= 2 and isinstance(value, str):
        size = _replaced_size(value, rest[0], rest[1])
    elif name == "format" and isinstance(value, str):
        check_printf(value, tuple(rest), limits)
    elif name in _SLOW_FILTERS and isinstance(value, str) and len(value) > _SLOW_FILTERS[name]:
        raise LimitExceeded(
            f"the {name} filter reads at most {_SLOW_FILTERS[name]:,} characters, "
            f"not {len(value):,}"
        )
    if size is not None and size > limits.max_value:
        raise _too_large(f"the {name} filter", size, limits.max_value)


# The filters whose result can be much larger than their input, or that take long:
# their arguments are checked before they run. Every other filter only has its
# result measured.
_AMPLIFYING = frozenset(
    {"center", "indent", "batch", "slice", "join", "replace", "format", "wordwrap", "urlize"}
)


def guard_filter(name: str, func: Callable[..., Any], limits: RenderLimits) -> Callable[..., Any]:
    """`func` with its step counted, its result measured and, for the filters that can
    amplify, its arguments checked first. Filters run once per use in the template's
    hot path, so the wrapper does as little as it can."""
    # A filter receives (context | eval_ctx | environment,) value, args...: the checks
    # want the value first.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    max_value = limits.max_value
    amplifying = name in _AMPLIFYING

    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.step()
        if amplifying:
            check_filter(name, args[skip:], kwargs, limits)
        result = func(*args, **kwargs)
        if isinstance(result, str):  # the common case (Markup too), checked at once
            if len(result) > max_value:
                raise _too_large(f"the {name} filter", len(result), max_value)
        else:
            check_size(result, limits, f"the {name} filter")
        return result

    guarded.__dict__.update(getattr(func, "__dict__", {}))  # keeps jinja_pass_arg
    guarded.__name__ = getattr(func, "__name__", name)
    guarded.__doc__ = func.__doc__
    return guarded
