"""The address check (`bot.domain.addresses`) says what email_validator says, faster.

Preparation and the profiles import both rely on it: a fast path for plain ASCII
addresses, with the domain's verdict cached, and email_validator whole otherwise.
"""

from __future__ import annotations

# st.emails() imports hypothesis.provisional lazily, inside Hypothesis's own change of the
# recursion limit, where CPython 3.11's compiler can fail (SystemError): import it first.
import hypothesis.provisional  # noqa: F401
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.addresses import address_is_valid, address_problem


def _validator_says(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com",
        "Ann.O'Neil+tag@Example.co.uk",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a b@example.com",
        "a@b",
        "a@localhost",
        "a@example.test",
        "a@exa_mple.com",
        "a@-example.com",
        "a@example.com.",
        '"quoted"@example.com',
        "josé@example.com",
        "ann@exämple.com",
        "a" * 64 + "@example.com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57 + ".com",
        "a@b@example.com",
        "",
        "@example.com",
    ],
)
def test_address_check_matches_email_validator(address: str) -> None:
    assert address_is_valid(address) is _validator_says(address)


_LOCAL = st.text(alphabet="abcXYZ09.+-_'!#~@ \"é", min_size=0, max_size=12)
_DOMAIN = st.sampled_from(
    ["example.com", "EXAMPLE.org", "b", "ex_ample.com", "exämple.de", "x.test", "-a.com", "a..com"]
)


@settings(max_examples=300, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN)
def test_address_check_matches_email_validator_on_generated_addresses(
    local: str, domain: str
) -> None:
    address = f"{local}@{domain}"
    assert address_is_valid(address) is _validator_says(address)


local_part = st.text(st.sampled_from("abcXYZ09.!#+-_'~é@ \""), min_size=0, max_size=12)
domain = st.sampled_from(
    ["example.com", "EXAMPLE.org", "localhost", "x.test", "-bad.com", "a..b", "münchen.de", ""]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.emails(), st.builds("{}@{}".format, local_part, domain))))
def test_a_reason_is_given_exactly_when_email_validator_refuses(emails: list[str]) -> None:
    for email in emails:
        assert (address_problem(email) is None) is _validator_says(email)
