"""The STARTTLS dialects of :mod:`certbot_dane.verify` against scripted servers.

Each dialect must say exactly what its RFC says before the handshake, get
to TLS with the name it was given (SNI), return the chain the server sent,
and fail with one line that says what the server did when it does not
follow the protocol.
"""
from __future__ import annotations

import socket
import struct

import pytest

from certbot_dane.verify import STARTTLS_PROTOCOLS, EndpointError, fetch_chain
from tests.tls_scripts import Peer, ScriptedServer

NAME = "mail.example.com"
XMPP_TLS = "urn:ietf:params:xml:ns:xmpp-tls"


def fetch(server: ScriptedServer, protocol: str | None, timeout: float = 5.0) -> list:
    return fetch_chain("127.0.0.1", server.port, NAME, protocol, timeout)


def failure(server: ScriptedServer, protocol: str, timeout: float = 5.0) -> str:
    with pytest.raises(EndpointError) as info:
        fetch(server, protocol, timeout)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"127.0.0.1:{server.port}")
    return message


def test_the_dialects_are_smtp_imap_pop3_and_xmpp() -> None:
    assert STARTTLS_PROTOCOLS == ("smtp", "imap", "pop3", "xmpp")


def test_plain_tls_returns_the_chain_as_sent_leaf_first() -> None:
    with ScriptedServer(lambda peer: True) as server:
        chain = fetch(server, None)
    assert chain == [server.cert, server.leaf.ca.cert]
    assert server.server_names == [NAME]


# IMAP (RFC 9051 section 6.2.1) ---------------------------------------------------


def imap(answer: str, *untagged: str, greeting: str = "* OK [CAPABILITY IMAP4rev1] ready"):
    def script(peer: Peer) -> bool:
        peer.send(greeting)
        if peer.line() != "a1 STARTTLS":
            return False
        peer.send(*untagged, answer)
        return answer.startswith("a1 OK")

    return script


def test_imap_starttls() -> None:
    with ScriptedServer(imap("a1 OK Begin TLS negotiation now")) as server:
        chain = fetch(server, "imap")
    assert chain[0] == server.cert
    assert server.heard == ["a1 STARTTLS"]
    assert server.server_names == [NAME]


def test_imap_untagged_lines_before_the_tagged_answer_are_skipped() -> None:
    script = imap("a1 OK done", "* CAPABILITY IMAP4rev1 STARTTLS", "* OK still here")
    with ScriptedServer(script) as server:
        assert fetch(server, "imap")[0] == server.cert


@pytest.mark.parametrize("answer", ["a1 NO STARTTLS is disabled", "a1 BAD unknown command"])
def test_imap_refusal(answer: str) -> None:
    with ScriptedServer(imap(answer)) as server:
        message = failure(server, "imap")
    assert message == f"127.0.0.1:{server.port} refused STARTTLS: {answer[3:]!r}"


def test_imap_greeting_of_another_protocol() -> None:
    script = imap("a1 OK", greeting="220 mail.example.com ESMTP")
    with ScriptedServer(script) as server:
        message = failure(server, "imap")
    assert "does not greet like an IMAP server ('220 mail.example.com ESMTP')" in message


def test_imap_server_that_closes_after_the_command() -> None:
    def script(peer: Peer) -> bool:
        peer.send("* OK ready")
        peer.line()
        return False

    with ScriptedServer(script) as server:
        message = failure(server, "imap")
    assert message.endswith("closed the connection during the IMAP dialogue")


# POP3 (RFC 2595 section 4) --------------------------------------------------------


def pop3(answer: str, greeting: str = "+OK POP3 server ready"):
    def script(peer: Peer) -> bool:
        peer.send(greeting)
        if peer.line() != "STLS":
            return False
        peer.send(answer)
        return answer.startswith("+OK")

    return script


def test_pop3_stls() -> None:
    with ScriptedServer(pop3("+OK Begin TLS negotiation")) as server:
        chain = fetch(server, "pop3")
    assert chain[0] == server.cert
    assert server.heard == ["STLS"]
    assert server.server_names == [NAME]


def test_pop3_refusal() -> None:
    with ScriptedServer(pop3("-ERR Command not permitted when TLS active")) as server:
        message = failure(server, "pop3")
    assert message == (
        f"127.0.0.1:{server.port} refused STLS: '-ERR Command not permitted when TLS active'"
    )


def test_pop3_greeting_of_another_protocol() -> None:
    with ScriptedServer(pop3("+OK", greeting="* OK IMAP4rev1")) as server:
        message = failure(server, "pop3")
    assert "does not greet like a POP3 server ('* OK IMAP4rev1')" in message


# XMPP (RFC 6120 section 5.4) ------------------------------------------------------

STREAM = (
    "<?xml version='1.0'?><stream:stream from='example.com' id='s1' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def xmpp(features: str, answer: str, split: bool = False):
    """Read the client's stream header, send ``features`` (in two pieces when
    ``split``), read ``<starttls/>`` and answer."""

    def script(peer: Peer) -> bool:
        peer.until(b"streams'>")
        text = STREAM + f"<stream:features>{features}</stream:features>"
        if split:
            half = len(text) // 2
            peer.send_raw(text[:half])
            peer.send_raw(text[half:])
        else:
            peer.send_raw(text)
        if "starttls" not in peer.until(b"/>"):
            return False
        peer.send_raw(answer)
        return "proceed" in answer

    return script


OFFER = f"<starttls xmlns='{XMPP_TLS}'><required/></starttls>"
PROCEED = f"<proceed xmlns='{XMPP_TLS}'/>"


@pytest.mark.parametrize("split", [False, True])
def test_xmpp_starttls(split: bool) -> None:
    with ScriptedServer(xmpp(OFFER, PROCEED, split)) as server:
        chain = fetch(server, "xmpp")
    assert chain[0] == server.cert
    header, starttls = server.heard
    assert f"to='{NAME}'" in header and "xmlns='jabber:client'" in header
    assert starttls == f"<starttls xmlns='{XMPP_TLS}'/>"
    assert server.server_names == [NAME]


def test_xmpp_without_starttls_in_the_features() -> None:
    features = "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    with ScriptedServer(xmpp(features, PROCEED)) as server:
        message = failure(server, "xmpp")
    assert message == f"127.0.0.1:{server.port} does not offer STARTTLS"


def test_xmpp_failure_instead_of_proceed() -> None:
    with ScriptedServer(xmpp(OFFER, f"<failure xmlns='{XMPP_TLS}'/>")) as server:
        message = failure(server, "xmpp")
    assert message.startswith(f"127.0.0.1:{server.port} refused STARTTLS (b\"<failure")


def test_xmpp_server_that_sends_no_features() -> None:
    def script(peer: Peer) -> bool:
        peer.until(b"streams'>")
        peer.send_raw(STREAM)
        return False

    with ScriptedServer(script) as server:
        message = failure(server, "xmpp")
    assert message == f"127.0.0.1:{server.port} sent no XMPP stream features"


# SMTP and the rest ----------------------------------------------------------------


def test_smtp_sends_ehlo_with_its_address_literal() -> None:
    def script(peer: Peer) -> bool:
        peer.send("220 mail.example.com ESMTP")
        peer.line()
        peer.send("250-mail.example.com", "250-PIPELINING", "250 STARTTLS")
        if peer.line() != "STARTTLS":
            return False
        peer.send("220 2.0.0 Ready")
        return True

    with ScriptedServer(script) as server:
        assert fetch(server, "smtp")[0] == server.cert
    assert server.heard == ["EHLO [127.0.0.1]", "STARTTLS"]


def test_smtp_greeting_other_than_220() -> None:
    def script(peer: Peer) -> bool:
        peer.send("554 no service for you")
        return False

    with ScriptedServer(script) as server:
        message = failure(server, "smtp")
    assert message == f"127.0.0.1:{server.port} greeted with 554, not 220"


@pytest.mark.parametrize("protocol", ["imap", "pop3", "xmpp", "smtp"])
def test_a_server_that_never_speaks_times_out_in_the_dialogue(protocol: str) -> None:
    def script(peer: Peer) -> bool:
        peer.conn.recv(4096)  # whatever the client says first, if anything
        peer.reader.read(1)  # then silence until the client gives up
        return False

    with ScriptedServer(script) as server:
        message = failure(server, protocol, timeout=0.5)
    assert "TLS handshake" not in message
    assert message == (
        f"127.0.0.1:{server.port}: no answer within 0.5 s during the "
        f"{protocol.upper()} STARTTLS dialogue"
    )


def test_a_connection_reset_in_the_dialogue_is_named_as_such() -> None:
    def script(peer: Peer) -> bool:
        peer.send("* OK ready")
        peer.line()
        # Close with a reset (RST) instead of a FIN.
        peer.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    with ScriptedServer(script) as server:
        message = failure(server, "imap")
    assert message == (
        f"127.0.0.1:{server.port}: the IMAP STARTTLS dialogue failed: Connection reset by peer"
    )
