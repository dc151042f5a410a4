"""``--dane-endpoints``: parsing, which owner names and SNI an endpoint gets,
and how what it presents is named (probed against scripted TLS servers)."""
from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509

from certbot_dane import endpoints, tlsa
from certbot_dane.endpoints import Endpoint, Known, parse_endpoint, parse_endpoints
from tests.test_settings import config, error_of, ini  # noqa: F401 - fixtures, used by name
from tests.tls_scripts import Leaf, Peer, ScriptedServer

# Parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "endpoint", "shown"),
    [
        ("127.0.0.1:25/smtp", Endpoint("127.0.0.1", 25, "smtp"), "127.0.0.1:25/smtp"),
        ("mx2.example.com:993", Endpoint("mx2.example.com", 993), "mx2.example.com:993"),
        ("MX2.Example.COM.:143/IMAP", Endpoint("mx2.example.com", 143, "imap"),
         "mx2.example.com:143/imap"),
        ("[::1]:5222/xmpp", Endpoint("::1", 5222, "xmpp"), "[::1]:5222/xmpp"),
        (" [2001:db8::25]:110/pop3 ", Endpoint("2001:db8::25", 110, "pop3"),
         "[2001:db8::25]:110/pop3"),
    ],
)
def test_parse_endpoint(text: str, endpoint: Endpoint, shown: str) -> None:
    assert parse_endpoint(text) == endpoint
    assert endpoint.text() == shown
    assert parse_endpoint(shown) == endpoint


FORM = "expected HOST:PORT[/STARTTLS], e.g. 127.0.0.1:25/smtp or mx2.example.com:993"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mx.example.com", FORM),
        ("mx.example.com:", FORM),
        (":25", FORM),
        ("mx.example.com:smtp", FORM),
        ("mx.example.com:0", FORM),
        ("mx.example.com:65536", FORM),
        ("[::1]25", FORM),
        ("[::1]", FORM),
        ("fe80::25", "write an IPv6 address as [ADDR]:PORT"),
        ("mx.example.com:25/ftp", "STARTTLS 'ftp' is not one of smtp, imap, pop3, xmpp"),
    ],
)
def test_bad_endpoint_is_one_line_naming_it(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_endpoint(text)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"bad endpoint {text.strip()!r}: {reason}"


def test_a_trailing_slash_names_no_starttls() -> None:
    assert parse_endpoint("mx.example.com:25/") == Endpoint("mx.example.com", 25)


def test_parse_endpoints_keeps_order_and_collapses_duplicates() -> None:
    listed = parse_endpoints("127.0.0.1:25/smtp, mx2.example.com:25/SMTP,,127.0.0.1:25/smtp")
    assert listed == (
        Endpoint("127.0.0.1", 25, "smtp"),
        Endpoint("mx2.example.com", 25, "smtp"),
    )
    assert endpoints.format_endpoints(listed) == "127.0.0.1:25/smtp,mx2.example.com:25/smtp"
    assert parse_endpoints(None) == parse_endpoints("") == ()


def test_options_name_the_option_to_fix(config: SimpleNamespace) -> None:  # noqa: F811
    message = error_of({"endpoints": "127.0.0.1:25/smtp,mx:25/ftp"}, config)
    assert message == (
        "--dane-endpoints: bad endpoint 'mx:25/ftp': STARTTLS 'ftp' is not one of "
        "smtp, imap, pop3, xmpp"
    )
    message = error_of({"endpoint_timeout": 0}, config)
    assert message == "--dane-endpoint-timeout: 0 is out of range (1 to 2147483647)"
    message = error_of({"endpoint_timeout": "an hour"}, config)
    assert message == "--dane-endpoint-timeout: 'an hour' is not a whole number of seconds"
    message = error_of({"group": "no-such-group-for-dane"}, config)
    assert message == (
        "--dane-group no-such-group-for-dane: no such group; create it or name an existing one"
    )


def test_options_are_kept_in_canonical_form(config: SimpleNamespace) -> None:  # noqa: F811
    from certbot_dane.settings import DEFAULT_ENDPOINT_TIMEOUT, from_options

    options: dict[str, Any] = {"tlsa": "311:25", "endpoints": " MX.example.com.:25/SMTP "}
    settings = from_options(options, config, "mail.example.com")
    assert settings.endpoints == "mx.example.com:25/smtp"
    assert settings.endpoint_timeout == DEFAULT_ENDPOINT_TIMEOUT == 3600
    assert settings.group is None


# Owner names and SNI ---------------------------------------------------------------

OWNERS = ["_25._tcp.mx.example.com.", "_25._tcp.mx2.example.com.", "_443._tcp.www.example.com."]


@pytest.mark.parametrize(
    ("endpoint", "owners"),
    [
        # The endpoint's own host and port: that owner only.
        ("mx2.example.com:25/smtp", ["_25._tcp.mx2.example.com."]),
        # An address: every owner with the endpoint's port.
        ("127.0.0.1:25/smtp", ["_25._tcp.mx.example.com.", "_25._tcp.mx2.example.com."]),
        ("www.example.com:25/smtp", ["_25._tcp.mx.example.com.", "_25._tcp.mx2.example.com."]),
        # A port no owner has (a test instance, a port forward): every owner.
        ("127.0.0.1:2525/smtp", sorted(OWNERS)),
    ],
)
def test_owners_for(endpoint: str, owners: list[str]) -> None:
    assert endpoints.owners_for(parse_endpoint(endpoint), OWNERS) == owners


def test_host_of_owner() -> None:
    assert endpoints.host_of("_25._tcp.mx.example.com.") == "mx.example.com"


# What an endpoint presents ---------------------------------------------------------


def spki_record(owner: str, cert: x509.Certificate) -> tlsa.Record:
    return tlsa.Record(owner, 3, 1, 1, tlsa.association(cert, 1, 1))


@pytest.fixture
def leaves(tmp_path: Path) -> list[Leaf]:
    """Version 1 and version 2 of a lineage for mx.example.com and mx2.example.com."""
    found = []
    for n in (1, 2):
        (tmp_path / str(n)).mkdir()
        found.append(Leaf(["mx.example.com", "mx2.example.com"], tmp_path / str(n)))
    return found


def known(leaves: list[Leaf], owners: list[str], with_leaf: bool = True) -> list[Known]:
    roles = {1: "old", 2: "served"}
    return [
        Known(
            n,
            roles[n],
            leaf.cert if with_leaf else None,
            frozenset(spki_record(o, leaf.cert) for o in owners),
        )
        for n, leaf in zip((1, 2), leaves, strict=True)
    ]


def remaining(owners: list[str], cert: x509.Certificate) -> dict[str, frozenset[tlsa.Record]]:
    return {o: frozenset({spki_record(o, cert)}) for o in owners}


def serving(leaf: Leaf) -> ScriptedServer:
    return ScriptedServer(lambda peer: True, leaf)


MX = ["_25._tcp.mx.example.com.", "_25._tcp.mx2.example.com."]


def test_an_endpoint_presenting_the_served_version_matches(leaves: list[Leaf]) -> None:
    with serving(leaves[1]) as server:
        endpoint = Endpoint("127.0.0.1", server.port)
        seen = endpoints.probe(endpoint, remaining(MX, leaves[1].cert), known(leaves, MX))
    assert seen == endpoints.Presented(endpoint, True, "version 2 (served)")
    # No owner has its port: every owner applies, the first names the SNI.
    assert server.server_names == ["mx.example.com"]


def test_an_endpoint_presenting_the_old_version_is_behind(leaves: list[Leaf]) -> None:
    with serving(leaves[0]) as server:
        endpoint = Endpoint("127.0.0.1", server.port)
        seen = endpoints.probe(endpoint, remaining(MX, leaves[1].cert), known(leaves, MX))
    assert seen == endpoints.Presented(endpoint, False, "version 1 (old)")


def test_a_version_whose_files_are_gone_is_named_by_its_records(leaves: list[Leaf]) -> None:
    with serving(leaves[0]) as server:
        endpoint = Endpoint("127.0.0.1", server.port)
        seen = endpoints.probe(
            endpoint, remaining(MX, leaves[1].cert), known(leaves, MX, with_leaf=False)
        )
    assert seen.presents == "version 1 (old)" and not seen.ok


def test_a_certificate_of_no_known_version(leaves: list[Leaf], tmp_path: Path) -> None:
    stranger = Leaf(["mx.example.com"], tmp_path)
    with serving(stranger) as server:
        endpoint = Endpoint("127.0.0.1", server.port)
        seen = endpoints.probe(endpoint, remaining(MX, leaves[1].cert), known(leaves, MX))
    assert not seen.ok
    digest = tlsa.association(stranger.cert, 0, 1)
    assert seen.presents == (
        f"a certificate of no version this lineage knows (SHA-256 {digest[:16]}...)"
    )


def test_every_owner_must_match(leaves: list[Leaf]) -> None:
    """Records that remain at one owner name only do not let the old ones go."""
    partial = remaining(MX, leaves[1].cert)
    partial[MX[1]] = frozenset({spki_record(MX[1], leaves[0].cert)})
    with serving(leaves[1]) as server:
        seen = endpoints.probe(Endpoint("127.0.0.1", server.port), partial, known(leaves, MX))
    assert seen.presents == "version 2 (served)" and not seen.ok


def test_an_endpoint_listed_by_name_gets_its_own_owner_and_that_sni(leaves: list[Leaf]) -> None:
    with serving(leaves[1]) as server:
        owners = [f"_{server.port}._tcp.localhost.", f"_{server.port}._tcp.a.example.com."]
        endpoint = Endpoint("localhost", server.port)
        assert endpoints.owners_for(endpoint, owners) == [owners[0]]
        endpoints.probe(endpoint, remaining(owners, leaves[1].cert), known(leaves, owners))
    assert server.server_names == ["localhost"]


def test_an_endpoint_that_does_not_answer_presents_nothing(leaves: list[Leaf]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = Endpoint("127.0.0.1", port, "smtp")
    seen = endpoints.probe(endpoint, remaining(MX, leaves[1].cert), known(leaves, MX))
    assert seen == endpoints.Presented(
        endpoint, False, f"nothing (127.0.0.1:{port} does not answer: Connection refused)"
    )


def test_an_endpoint_that_refuses_starttls_presents_nothing(leaves: list[Leaf]) -> None:
    def refuse(peer: Peer) -> bool:
        peer.send("* OK ready")
        peer.line()
        peer.send("a1 NO not now")
        return False

    with ScriptedServer(refuse, leaves[1]) as server:
        endpoint = Endpoint("127.0.0.1", server.port, "imap")
        seen = endpoints.probe(endpoint, remaining(MX, leaves[1].cert), known(leaves, MX))
    assert seen.presents == f"nothing (127.0.0.1:{server.port} refused STARTTLS: 'NO not now')"


def test_a_lineage_without_owner_names() -> None:
    seen = endpoints.probe(Endpoint("127.0.0.1", 25), {}, [])
    assert seen.presents == "nothing: the lineage has no TLSA owner name" and not seen.ok


def test_probe_all_keeps_the_order_of_the_endpoints(leaves: list[Leaf]) -> None:
    with serving(leaves[0]) as old, serving(leaves[1]) as new:
        listed = [Endpoint("127.0.0.1", new.port), Endpoint("127.0.0.1", old.port)]
        seen = endpoints.probe_all(listed, remaining(MX, leaves[1].cert), known(leaves, MX))
    assert [(s.endpoint, s.ok, s.presents) for s in seen] == [
        (listed[0], True, "version 2 (served)"),
        (listed[1], False, "version 1 (old)"),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # An address and a port, or an address alone? Only brackets tell.
        ("2001:db8::1:25", "write an IPv6 address as [ADDR]:PORT"),
        ("::1:25", "write an IPv6 address as [ADDR]:PORT"),
        ("[mx.example.com]:25", "brackets hold an IPv6 address; write a name or an IPv4 "
         "address without them"),
        ("[127.0.0.1]:25", "brackets hold an IPv6 address; write a name or an IPv4 "
         "address without them"),
    ],
)
def test_an_ipv6_address_needs_brackets_and_brackets_need_one(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_endpoint(text)
    assert str(info.value) == f"bad endpoint {text!r}: {reason}"
