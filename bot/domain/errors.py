"""Errors of the domain: each message is written for the person who caused it."""


class DomainError(Exception):
    """A rule of Greenlight refused an action; the message says what is allowed instead."""


class IllegalTransition(DomainError):
    """An action was asked of a delivery in a state that does not allow it."""

    def __init__(self, action: str, state: str, allowed_from: tuple[str, ...]) -> None:
        self.action = action
        self.state = state
        self.allowed_from = allowed_from
        where = ", ".join(allowed_from) if allowed_from else "no state"
        super().__init__(
            f"cannot {action} a delivery that is {state}; {action} is allowed from: {where}"
        )


class PermissionDenied(DomainError):
    """The person does not hold a role that allows the action."""


class NotFound(DomainError):
    """An unknown ref, email or id; the message says how to list the known ones."""
