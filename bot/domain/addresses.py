"""Whether an address is one a message can be sent to: email_validator's syntax verdict.

No DNS: a domain that exists today may not tomorrow, and preparation must not depend
on the network. A full check costs ~30 µs, which is seconds over a large audience or
file, so the common case (a plain ASCII dot-atom local part) is checked with one
regular expression and the domain's verdict is cached (domains repeat); anything else
(quoted or internationalised addresses, odd characters) goes through email_validator
whole. The answer is the same either way: email_validator accepts a dot-atom local
part whenever it accepts the domain.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# RFC 5322 dot-atom: the plain ASCII local parts that email_validator accepts as they are.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _full_check(address: str) -> str | None:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=4096)
def _domain_problem(domain: str) -> str | None:
    return _full_check(f"a@{domain}")


def address_problem(address: str) -> str | None:
    """Why `address` cannot be sent to, or None when it can."""
    local, at, domain = address.rpartition("@")
    if (
        at
        and address.isascii()
        and len(local) <= 64
        and len(address) <= 254
        and _DOT_ATOM.fullmatch(local)
    ):
        return _domain_problem(domain.lower())
    return _full_check(address)


def address_is_valid(address: str) -> bool:
    return address_problem(address) is None
