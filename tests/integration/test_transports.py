"""Transports against real things: an aiosmtpd relay on loopback, a Maildir folder.

The relay answers per recipient as its local part says: `hard…` 550 and `soft…` 451 at
RCPT, `datahard…` 554 and `datasoft…` 452 after DATA, `closing…` 421 at RCPT,
`flaky…` drops the connection the first time it is seen, `poison…` drops it after
every DATA (the message arrived, no answer came). `closing_all` makes it answer 421
to every MAIL FROM (the relay going away). Anything else is accepted and recorded with
the session it came on.
"""

from __future__ import annotations

import asyncio
import mailbox
import shutil
import ssl
import subprocess
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from smtp_relay import Relay, free_port

from bot.config import load_settings
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import RenderedMessage
from bot.engine.tokens import TokenSigner
from bot.engine.transports import (
    Envelope,
    MaildirTransport,
    RelayResult,
    RelayUnavailable,
    TransportError,
    make_transport,
)
from bot.engine.transports.smtp import SmtpTransport, TokenBucket

SENDER = "news@acme.example"


def message(log_id: int, rcpt: str) -> bytes:
    """A small distinct message; the relay must receive exactly these bytes."""
    return (
        f"From: {SENDER}\r\nTo: {rcpt}\r\nSubject: test {log_id}\r\n"
        f"Message-ID: <gl.{log_id}@acme.example>\r\n\r\n"
        f"Hello {rcpt}\r\n.leading dot\r\n"
    ).encode()


def envelope(log_id: int, rcpt: str) -> Envelope:
    return Envelope(log_id, SENDER, rcpt, message(log_id, rcpt))


def smtp(relay: Relay, **options: Any) -> SmtpTransport:
    options.setdefault("timeout", 10.0)
    options.setdefault("local_hostname", "greenlight.test")
    return SmtpTransport("127.0.0.1", relay.port, **options)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def send_and_close(transport: SmtpTransport, batch: list[Envelope]) -> list[RelayResult]:
    try:
        return await transport.send(batch)
    finally:
        await transport.close()


def expected_wire(data: bytes) -> bytes:
    return data if data.endswith(b"\r\n") else data + b"\r\n"


# ------------------------------------------------------------------------- SMTP


def test_batch_over_a_pool_arrives_exactly_once_with_its_bytes(relay: Relay) -> None:
    recipients = [f"user{i}@example.com" for i in range(46)]
    recipients[5] = "hard5@example.com"
    recipients[17] = "soft17@example.com"
    recipients[30] = "datahard30@example.com"
    recipients[41] = "datasoft41@example.com"
    batch = [envelope(1000 + i, rcpt) for i, rcpt in enumerate(recipients)]

    results = run(send_and_close(smtp(relay, pool_size=4), batch))

    assert [r.log_id for r in results] == [e.log_id for e in batch]
    outcomes = {r.log_id: (r.outcome, r.smtp_code) for r in results}
    assert outcomes[1005] == ("hard", 550)
    assert outcomes[1017] == ("soft", 451)
    assert outcomes[1030] == ("hard", 554)
    assert outcomes[1041] == ("soft", 452)
    accepted = [e for e in batch if outcomes[e.log_id] == ("accepted", 250)]
    assert len(accepted) == 42
    assert "5.7.1 rejected as spam" in (results[30].smtp_message or "")

    received = relay.recorder.by_rcpt()
    assert set(received) == {e.rcpt_to for e in accepted}
    for env in accepted:
        [got] = received[env.rcpt_to]  # exactly once
        assert got.data == expected_wire(env.data)
        assert got.mail_from == SENDER
    # Spread over the pool: four connections, each reused for many messages.
    assert len({r.session for r in relay.recorder.received}) == 4


def test_built_messages_cross_the_relay_byte_for_byte(relay: Relay) -> None:
    """Skeleton-built messages (dot lines, long lines, UTF-8) arrive exactly as built."""
    sk = MessageSkeleton(
        sender="Acmé <news@acme.example>",
        reply_to=None,
        delivery_ref="d-1",
        public_base_url="https://t.acme.example",
        signer=TokenSigner("secret"),
    )
    text = ".\n..two dots\nZoë " + "y" * 3000 + "\n"
    html = '<p>.</p>\n<a href="https://shop.example.com/x">x</a>\n' + "é" * 2000
    batch = [
        Envelope(i, sk.mail_from, f"r{i}@example.com", sk.build(i, f"r{i}@example.com", parts))
        for i, parts in enumerate(
            [RenderedMessage("Zoë", html, text, ()), RenderedMessage("é", None, text, ())]
        )
    ]
    results = run(send_and_close(smtp(relay, pool_size=2), batch))
    assert {r.outcome for r in results} == {"accepted"}
    received = relay.recorder.by_rcpt()
    for env in batch:
        [got] = received[env.rcpt_to]
        assert got.data == expected_wire(env.data)
        parsed = BytesParser(policy=policy.default).parsebytes(got.data)
        assert parsed["X-Greenlight-Log"] == str(env.log_id)
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text


def test_connections_persist_across_batches(relay: Relay) -> None:
    async def scenario() -> None:
        transport = smtp(relay, pool_size=2)
        try:
            for round_ in range(3):
                batch = [envelope(round_ * 10 + i, f"u{round_}-{i}@example.com") for i in range(6)]
                assert {r.outcome for r in await transport.send(batch)} == {"accepted"}
        finally:
            await transport.close()

    run(scenario())
    assert len(relay.recorder.received) == 18
    assert len({r.session for r in relay.recorder.received}) == 2


def test_connection_stays_usable_after_refusals(relay: Relay) -> None:
    """One connection: refused recipients in between do not spoil the next message."""
    rcpts = [
        "hard@example.com",
        "a@example.com",
        "soft@example.com",
        "b@example.com",
        "datahard@example.com",
        "c@example.com",
    ]
    batch = [envelope(i, rcpt) for i, rcpt in enumerate(rcpts)]
    results = run(send_and_close(smtp(relay, pool_size=1), batch))
    assert [r.outcome for r in results] == [
        "hard",
        "accepted",
        "soft",
        "accepted",
        "hard",
        "accepted",
    ]
    assert [r.rcpt_tos[0] for r in relay.recorder.received] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert len({r.session for r in relay.recorder.received}) == 1


def test_dropped_connection_is_reopened_and_the_message_sent_once(relay: Relay) -> None:
    batch = [
        envelope(1, "a@example.com"),
        envelope(2, "flaky@example.com"),
        envelope(3, "b@example.com"),
    ]
    results = run(send_and_close(smtp(relay, pool_size=1), batch))
    assert [r.outcome for r in results] == ["accepted"] * 3
    received = relay.recorder.by_rcpt()
    assert [len(received[e.rcpt_to]) for e in batch] == [1, 1, 1]
    assert len({r.session for r in relay.recorder.received}) == 2  # one reconnect


def test_relay_down_raises_relay_unavailable_and_recovers(relay: Relay) -> None:
    async def scenario() -> None:
        transport = smtp(relay, pool_size=3)
        try:
            first = [envelope(i, f"first{i}@example.com") for i in range(5)]
            assert {r.outcome for r in await transport.send(first)} == {"accepted"}

            relay.stop()
            down = [envelope(100 + i, f"down{i}@example.com") for i in range(5)]
            with pytest.raises(RelayUnavailable) as info:
                await transport.send(down)
            assert info.value.partial == []
            assert f"127.0.0.1:{relay.port}" in str(info.value)

            relay.start()  # same port: sending works again, same transport
            results = await transport.send(down)
            assert {r.outcome for r in results} == {"accepted"}
        finally:
            await transport.close()

    run(scenario())
    received = relay.recorder.by_rcpt()
    assert all(len(items) == 1 for items in received.values())
    assert len(received) == 10


def test_a_421_at_one_recipient_is_that_recipients_soft_failure(relay: Relay) -> None:
    """421 to RCPT twice, on fresh connections that took MAIL FROM: the recipient's
    temporary failure, not an outage; the rest of the batch goes through."""
    rcpts = [f"u{i}@example.com" for i in range(8)]
    rcpts[3] = "hard3@example.com"
    rcpts[5] = "closing5@example.com"
    batch = [envelope(i, rcpt) for i, rcpt in enumerate(rcpts)]
    results = run(send_and_close(smtp(relay, pool_size=1), batch))
    assert [(r.outcome, r.smtp_code) for r in results] == [
        ("accepted", 250),
        ("accepted", 250),
        ("accepted", 250),
        ("hard", 550),
        ("accepted", 250),
        ("soft", 421),
        ("accepted", 250),
        ("accepted", 250),
    ]
    received = relay.recorder.by_rcpt()
    assert sorted(received) == [f"u{i}@example.com" for i in (0, 1, 2, 4, 6, 7)]


def test_a_message_after_which_the_relay_drops_us_is_sent_twice_then_soft(relay: Relay) -> None:
    batch = [envelope(i, f"u{i}@example.com") for i in range(6)]
    batch[2] = envelope(2, "poison2@example.com")
    results = run(send_and_close(smtp(relay, pool_size=2), batch))
    assert [r.outcome for r in results] == ["accepted", "accepted", "soft"] + ["accepted"] * 3
    assert relay.recorder.transmissions == {"poison2@example.com": 2}
    assert "fresh connections" in (results[2].smtp_message or "")


def test_a_relay_going_away_is_an_outage_with_the_answers_obtained_before(relay: Relay) -> None:
    """421 to MAIL FROM is the relay's, whoever the recipient: RelayUnavailable with
    the answers so far; resending the rest delivers every message exactly once."""
    batch = [envelope(i, f"u{i}@example.com") for i in range(8)]

    async def scenario() -> list[RelayResult]:
        transport = smtp(relay, pool_size=1)
        try:
            assert {r.outcome for r in await transport.send(batch[:3])} == {"accepted"}
            relay.recorder.closing_all = True
            with pytest.raises(RelayUnavailable) as info:
                await transport.send(batch[3:])
            assert info.value.partial == []
            assert "421" in str(info.value)
            relay.recorder.closing_all = False
            return await transport.send(batch[3:])
        finally:
            await transport.close()

    later = run(scenario())
    assert [r.outcome for r in later] == ["accepted"] * 5
    received = relay.recorder.by_rcpt()
    assert sorted(received) == sorted(e.rcpt_to for e in batch)
    assert all(len(items) == 1 for items in received.values())


def test_nothing_listening_is_relay_unavailable() -> None:
    transport = SmtpTransport("127.0.0.1", free_port(), local_hostname="x.test", timeout=5)
    with pytest.raises(RelayUnavailable) as info:
        run(send_and_close(transport, [envelope(1, "a@example.com")]))
    assert info.value.partial == []


def test_invalid_recipient_address_is_a_hard_result(relay: Relay) -> None:
    batch = [
        envelope(1, "a@example.com"),
        envelope(2, "bad\x01@example.com"),
        envelope(3, "b@example.com"),
    ]
    results = run(send_and_close(smtp(relay, pool_size=1), batch))
    assert [(r.outcome, r.smtp_code) for r in results] == [
        ("accepted", 250),
        ("hard", None),
        ("accepted", 250),
    ]
    assert len({r.session for r in relay.recorder.received}) == 1  # no reconnect needed


def test_invalid_sender_is_our_error_not_a_bounce(relay: Relay) -> None:
    bad = Envelope(1, "news\x01@acme.example", "a@example.com", message(1, "a@example.com"))
    with pytest.raises(TransportError) as info:
        run(send_and_close(smtp(relay, pool_size=1), [bad]))
    assert not isinstance(info.value, RelayUnavailable)
    assert info.value.partial == []


def test_mail_from_declares_the_message_size(relay: Relay) -> None:
    """The relay advertises SIZE; MAIL FROM carries the exact length it then receives."""
    sent = envelope(1, "a@example.com")
    assert run(send_and_close(smtp(relay), [sent]))[0].outcome == "accepted"
    (got,) = relay.recorder.received
    assert got.mail_options == [f"SIZE={len(sent.data)}"]
    assert got.data == expected_wire(sent.data)


def test_sender_refused_at_mail_from_is_the_relays_fault(relay: Relay) -> None:
    """553 to MAIL FROM is about us or the relay, never the recipient: no bounce recorded."""
    refused = Envelope(1, "refused@acme.example", "a@example.com", message(1, "a@example.com"))
    with pytest.raises(RelayUnavailable) as info:
        run(send_and_close(smtp(relay, pool_size=1), [refused]))
    assert "553" in str(info.value)
    assert info.value.partial == []
    assert relay.recorder.received == []


def test_non_ascii_recipient_needs_smtputf8() -> None:
    """A relay without SMTPUTF8 cannot take zoë@…: hard, no code; with it, it is sent."""
    without = Relay(enable_SMTPUTF8=False)
    without.start()
    try:
        results = run(send_and_close(smtp(without), [envelope(1, "zoë@example.com")]))
    finally:
        without.stop()
    assert (results[0].outcome, results[0].smtp_code) == ("hard", None)
    assert without.recorder.received == []

    with_utf8 = Relay(enable_SMTPUTF8=True)
    with_utf8.start()
    try:
        results = run(send_and_close(smtp(with_utf8), [envelope(1, "zoë@example.com")]))
    finally:
        with_utf8.stop()
    assert results[0].outcome == "accepted"
    assert with_utf8.recorder.received[0].rcpt_tos == ["zoë@example.com"]


def test_rate_limit_paces_the_pool_without_waiting(relay: Relay) -> None:
    """5 msg/s on a fake clock: 20 messages take 19 × 0.2 s of (simulated) time."""
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    transport = smtp(relay, pool_size=4, rate_limit=5, monotonic=lambda: now[0], sleep=fake_sleep)
    batch = [envelope(i, f"r{i}@example.com") for i in range(20)]
    results = run(send_and_close(transport, batch))
    assert {r.outcome for r in results} == {"accepted"}
    assert now[0] == pytest.approx(19 / 5, abs=0.01)
    assert len(relay.recorder.received) == 20


def test_empty_batch_and_closed_transport(relay: Relay) -> None:
    async def scenario() -> None:
        transport = smtp(relay)
        assert await transport.send([]) == []
        await transport.close()
        with pytest.raises(RuntimeError):
            await transport.send([envelope(1, "a@example.com")])

    run(scenario())
    assert relay.recorder.received == []


def test_unexpected_error_is_a_transport_error_with_partial_results(relay: Relay) -> None:
    batch = [envelope(1, "a@example.com"), Envelope(2, SENDER, "b@example.com", None)]  # type: ignore[arg-type]
    with pytest.raises(TransportError) as info:
        run(send_and_close(smtp(relay, pool_size=1), batch))
    assert not isinstance(info.value, RelayUnavailable)
    assert [r.log_id for r in info.value.partial] == [1]


# --------------------------------------------------------------- token bucket


def test_token_bucket_paces_after_its_burst() -> None:
    now = [0.0]
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    bucket = TokenBucket(100, monotonic=lambda: now[0], sleep=fake_sleep)
    assert bucket.capacity == 10
    run(take(10))
    assert waits == []  # the burst
    run(take(90))
    assert now[0] == pytest.approx(0.9)  # then 100 per second


def test_unlimited_bucket_never_sleeps() -> None:
    async def no_sleep(seconds: float) -> None:
        raise AssertionError("slept")

    bucket = TokenBucket(0, sleep=no_sleep)

    async def take() -> None:
        for _ in range(1000):
            await bucket.acquire()

    run(take())


# ---------------------------------------------------------------- TLS and AUTH


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


def test_starttls_with_auth(certificate: tuple[Path, Path]) -> None:
    server = Relay(
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    server.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(certificate[0]))
        transport = smtp(
            server, starttls=True, username="mailer", password="s3cret", tls_context=client_tls
        )
        results = run(send_and_close(transport, [envelope(1, "a@example.com")]))
        assert results[0].outcome == "accepted"

        wrong = smtp(
            server, starttls=True, username="mailer", password="nope", tls_context=client_tls
        )
        with pytest.raises(RelayUnavailable):
            run(send_and_close(wrong, [envelope(2, "b@example.com")]))
    finally:
        server.stop()
    assert [r.rcpt_tos for r in server.recorder.received] == [["a@example.com"]]


def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    server = Relay(ssl_context=server_context(certificate))
    server.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(certificate[0]))
        transport = smtp(server, implicit_tls=True, tls_context=client_tls)
        results = run(send_and_close(transport, [envelope(1, "a@example.com")]))
        assert results[0].outcome == "accepted"

        untrusted = smtp(server, implicit_tls=True)  # system CAs do not know this cert
        with pytest.raises(RelayUnavailable):
            run(send_and_close(untrusted, [envelope(2, "b@example.com")]))
    finally:
        server.stop()
    assert len(server.recorder.received) == 1


# ---------------------------------------------------------------------- Maildir


def test_maildir_writes_one_readable_file_per_message(tmp_path: Path) -> None:
    folder = tmp_path / "outbox" / "nested"
    transport = MaildirTransport(folder)
    batch = [envelope(7000 + i, f"m{i}@example.com") for i in range(5)]

    results = run(transport.send(batch))

    assert results == [RelayResult(e.log_id, "accepted") for e in batch]
    assert sorted(p.name for p in folder.iterdir()) == ["cur", "new", "tmp"]
    assert list((folder / "tmp").iterdir()) == []
    files = sorted((folder / "new").iterdir())
    assert len(files) == 5
    for env in batch:
        [path] = (folder / "new").glob(f"*.gl-{env.log_id}.*")
        raw = path.read_bytes()
        assert b"\r\n" not in raw  # a local mailbox file: LF line ends
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert parsed["To"] == env.rcpt_to
        assert parsed["Message-ID"] == f"<gl.{env.log_id}@acme.example>"
        assert raw.replace(b"\n", b"\r\n") == env.data
    # The standard library reads it as a Maildir.
    box = mailbox.Maildir(folder, create=False)
    assert sorted(m["To"] for m in box) == sorted(e.rcpt_to for e in batch)


def test_maildir_write_failure_is_relay_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the maildir should be")
    transport = MaildirTransport(blocker / "outbox")
    with pytest.raises(RelayUnavailable) as info:
        run(transport.send([envelope(1, "a@example.com")]))
    assert info.value.partial == []


# ---------------------------------------------------------------------- factory


def test_make_transport_follows_mail_url(tmp_path: Path) -> None:
    maildir = make_transport(load_settings(_env_file=None, mail_url=f"maildir://{tmp_path}/box"))
    assert isinstance(maildir, MaildirTransport)
    assert maildir.path == tmp_path / "box"

    settings = load_settings(
        _env_file=None,
        mail_url="smtp://mailer:s%40cret@relay.example:2525?starttls=true",
        smtp_pool_size=3,
        send_rate_limit=250,
        smtp_timeout=12,
    )
    transport = make_transport(settings)
    assert isinstance(transport, SmtpTransport)
    assert (transport.host, transport.port, transport.username) == ("relay.example", 2525, "mailer")
    assert transport.starttls and not transport.implicit_tls
    assert (transport.pool_size, transport.limiter.rate, transport.timeout) == (3, 250, 12)

    tls = make_transport(load_settings(_env_file=None, mail_url="smtps://relay.example"))
    assert isinstance(tls, SmtpTransport)
    assert tls.implicit_tls and tls.port == 465 and tls.limiter.rate == 0
