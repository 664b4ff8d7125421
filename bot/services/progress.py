"""How a long use case tells its caller how far it is, without knowing who listens.

The command line draws a bar with it on a terminal; everywhere else nobody is told.
The use cases call it every so often (a block of a file, a chunk of rows, a batch of
messages), never per row: a call costs something even when nothing is drawn.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """`done` out of `total` (None while unknown) in the step named `step`."""

    def __call__(self, done: int, total: int | None, step: str | None = None) -> None: ...
