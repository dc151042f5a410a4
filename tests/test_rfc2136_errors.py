"""RFC 2136 failures in the operator's terms: one line that says what failed,
the likely cause, and what to change (the credentials file and its keys, the
clock, or the server's update-policy / acl), never dnspython's words and
never a secret.

Each message is produced by a real server where one produces it: the lab's
BIND 9 and Knot DNS, and a small BIND whose update-policy allows TXT only.
What neither does (SERVFAIL to an update, PowerDNS's unsigned REFUSED, an
answer signed with another secret) comes from the scripted server in
tests/netfakes.py.
"""
from __future__ import annotations

import base64
import re
import secrets
import time
import types
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.version
import pytest

from certbot_dane.dns.base import StoreError
from certbot_dane.dns.rfc2136 import Rfc2136Store
from certbot_dane.tlsa import Record
from tests.lab.lab import Lab
from tests.lab.plain_bind import plain_bind
from tests.netfakes import FakeDns, ScriptedDns

pytestmark = pytest.mark.lab

#: dnspython 2.7 and later can read an answer without verifying its TSIG,
#: and so the server's clock in a BADTIME answer.
READS_SERVER_CLOCK = (dns.version.MAJOR, dns.version.MINOR) >= (2, 7)

FAKE_KEY = "fake-key."
FAKE_SECRET = base64.b64encode(b"the scripted server's own secret").decode()


@pytest.fixture(params=["bind", "knot"])
def server(request: pytest.FixtureRequest) -> Lab:
    """The lab's BIND 9, then the Knot lab."""
    return request.getfixturevalue("lab" if request.param == "bind" else "knot_lab")


def random_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def owner() -> str:
    return f"_25._tcp.e{secrets.token_hex(4)}.dane.test."


def record(name: str) -> Record:
    return Record(name, 3, 1, 1, secrets.token_hex(32))


def credentials(path: Path, lab: Lab, **change: str) -> str:
    values = {
        "server": "127.0.0.1",
        "port": str(lab.auth_port),
        "name": lab.tsig_name,
        "secret": lab.tsig_secret,
        "algorithm": "HMAC-SHA256",
    } | change
    path.write_text("".join(f"dns_rfc2136_{k} = {v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return str(path)


def failure(call: object, *secrets_: str) -> str:
    """The StoreError message of ``call()``, checked for what every message keeps to."""
    with pytest.raises(StoreError) as info:
        call()  # type: ignore[operator]
    message = str(info.value)
    assert message.startswith("rfc2136 store: cannot "), message
    assert "\n" not in message
    assert "peer" not in message.lower() and "didn't" not in message, message
    for secret in secrets_:
        assert secret not in message
    return message


def at_server(lab: Lab, name: str) -> dns.rcode.Rcode:
    return lab.auth_query(name, "TLSA").rcode()


# TSIG: the server rejects the key ------------------------------------------------


def test_wrong_secret_names_the_secret_in_the_credentials_file(server: Lab, tmp_path: Path) -> None:
    wrong = random_secret()
    ini = credentials(tmp_path / "rfc2136.ini", server, secret=wrong)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    name = owner()
    message = failure(lambda: store.add([record(name)], 60), wrong, server.tsig_secret)
    assert message == (
        f"rfc2136 store: cannot add 1 TLSA record(s) at {name}: "
        f"127.0.0.1:{server.auth_port} rejected the TSIG signature (BADSIG): the secret for "
        f"key '{server.tsig_name}.' differs from the server's; set dns_rfc2136_secret in "
        f"{ini} to the server's secret for that key"
    )
    assert at_server(server, name) == dns.rcode.NXDOMAIN


def test_store_built_from_arguments_speaks_of_the_tsig_key(server: Lab) -> None:
    wrong = random_secret()
    store = Rfc2136Store(
        "127.0.0.1", server.auth_port, server.tsig_name, wrong, "HMAC-SHA256", timeout=5
    )
    message = failure(lambda: store.delete([record(owner())]), wrong, server.tsig_secret)
    assert "(BADSIG)" in message
    assert message.endswith("set the TSIG key to the server's secret for that key")
    assert "dns_rfc2136" not in message


@pytest.mark.parametrize(
    ("change", "shown"),
    [({"name": "stranger-key"}, "'stranger-key.' (HMAC-SHA256)"),
     ({"algorithm": "HMAC-SHA512"}, "'dane-lab-key.' (HMAC-SHA512)")],
    ids=["unknown-name", "other-algorithm"],
)
def test_unknown_key_names_the_key_and_algorithm_to_change(
    server: Lab, tmp_path: Path, change: dict[str, str], shown: str
) -> None:
    ini = credentials(tmp_path / "rfc2136.ini", server, **change)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    name = owner()
    message = failure(lambda: store.add([record(name)], 60), server.tsig_secret)
    assert (
        f"127.0.0.1:{server.auth_port} does not accept TSIG key {shown} for zone dane.test. "
        "(BADKEY)"
    ) in message
    assert f"set dns_rfc2136_name and dns_rfc2136_algorithm in {ini} to a key" in message
    assert "update-policy or acl" in message
    assert at_server(server, name) == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(("offset", "side"), [(3600, "ahead of"), (-5400, "behind")])
def test_clock_skew_is_named_with_how_far_off(
    server: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int, side: str
) -> None:
    ini = credentials(tmp_path / "rfc2136.ini", server)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    store.zone_of(owner())  # asked with the right clock: the zone is known
    skewed = types.SimpleNamespace(time=lambda: time.time() + offset)
    monkeypatch.setattr(dns.message, "time", skewed)  # dnspython signs with this clock
    name = owner()
    message = failure(lambda: store.add([record(name)], 60), server.tsig_secret)
    assert f"127.0.0.1:{server.auth_port} rejected the TSIG time (BADTIME): " in message
    assert message.endswith("; set both clocks right (NTP)")
    if READS_SERVER_CLOCK:
        # The server's clock, from its answer, against the time this host signed.
        gap = re.search(r"this host's clock is (\d+) s (ahead of|behind) the server's", message)
        assert gap is not None, message
        assert abs(int(gap[1]) - abs(offset)) <= 2 and gap[2] == side, message
    else:
        assert "the clocks of this host and the server differ" in message
    monkeypatch.undo()
    assert at_server(server, name) == dns.rcode.NXDOMAIN


def test_signed_query_with_an_unknown_key_fails_at_once(server: Lab, tmp_path: Path) -> None:
    """With dns_rfc2136_sign_query, a refused key is named, not waited out."""
    ini = credentials(tmp_path / "rfc2136.ini", server, name="stranger-key", sign_query="true")
    store = Rfc2136Store.from_credentials(ini, timeout=30)
    name = owner()
    message = failure(lambda: store.list(name), server.tsig_secret)
    assert message == (
        f"rfc2136 store: cannot list TLSA at {name}: 127.0.0.1:{server.auth_port} does not "
        "accept TSIG key 'stranger-key.' (HMAC-SHA256) (BADKEY): it has no key of that name "
        f"and algorithm; set dns_rfc2136_name and dns_rfc2136_algorithm in {ini} to a key the "
        "server has"
    )


# The server does not serve the zone, or not the name ---------------------------------


def test_zone_the_server_does_not_serve(
    server: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BIND answers a signed NOTAUTH; Knot an unsigned one (dnspython: a missing
    TSIG). Both say: send updates to the zone's primary."""
    ini = credentials(tmp_path / "rfc2136.ini", server)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    foreign = dns.name.from_text("example.org.")
    # The zone as a stale or wrong SOA answer would have named it.
    monkeypatch.setattr(store, "zones_of", lambda owners: {o: foreign for o in owners})
    message = failure(lambda: store.add([record(owner())], 60), server.tsig_secret)
    what = {
        "bind": "is not authoritative for zone example.org. (NOTAUTH)",
        "knot": "does not serve zone example.org. as a primary (an unsigned NOTAUTH)",
    }[server.authority.kind]
    assert f"127.0.0.1:{server.auth_port} {what}; " in message
    assert message.endswith(f"set dns_rfc2136_server and dns_rfc2136_port in {ini} to the "
                            "zone's primary")


def test_name_outside_the_zone_is_notzone(
    server: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = credentials(tmp_path / "rfc2136.ini", server)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    zone = dns.name.from_text(server.zone)
    monkeypatch.setattr(store, "zones_of", lambda owners: {o: zone for o in owners})
    message = failure(
        lambda: store.add([record("_25._tcp.mx.example.org.")], 60), server.tsig_secret
    )
    assert "says a name of the update is outside zone dane.test. (NOTZONE)" in message
    assert "run again" in message


def test_name_in_no_zone_of_the_server(server: Lab, tmp_path: Path) -> None:
    ini = credentials(tmp_path / "rfc2136.ini", server)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    message = failure(lambda: store.add([record("_25._tcp.mx.example.org.")], 60))
    assert message == (
        "rfc2136 store: cannot find the zone of _25._tcp.mx.example.org.: "
        f"127.0.0.1:{server.auth_port} is not authoritative for _25._tcp.mx.example.org. (no "
        f"SOA in its answer, rcode REFUSED); set dns_rfc2136_server and dns_rfc2136_port in "
        f"{ini} to the primary of the zone that holds the name"
    )


def test_listing_a_name_the_server_does_not_serve(server: Lab, tmp_path: Path) -> None:
    ini = credentials(tmp_path / "rfc2136.ini", server)
    store = Rfc2136Store.from_credentials(ini, timeout=5)
    message = failure(lambda: store.list("_25._tcp.mx.example.org."))
    assert message == (
        "rfc2136 store: cannot list TLSA at _25._tcp.mx.example.org.: "
        f"127.0.0.1:{server.auth_port} answered REFUSED; check that dns_rfc2136_server and "
        f"dns_rfc2136_port in {ini} name the zone's primary and that it answers this host"
    )


# The update-policy does not allow TLSA -----------------------------------------------


@pytest.fixture(scope="module")
def txt_only_bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """BIND for ``policy.test.`` whose update-policy lets the key change TXT only,
    as a zone set up for certbot's challenges alone would."""
    keys = {FAKE_KEY: ("hmac-sha256", FAKE_SECRET)}
    root = tmp_path_factory.mktemp("bind-policy")
    with plain_bind(root, "policy.test", keys, f"grant {FAKE_KEY} zonesub TXT;") as port:
        yield port


def test_update_policy_without_tlsa_is_refused(txt_only_bind: int, tmp_path: Path) -> None:
    ini = tmp_path / "rfc2136.ini"
    ini.write_text(
        f"dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_port = {txt_only_bind}\n"
        f"dns_rfc2136_name = {FAKE_KEY}\ndns_rfc2136_secret = {FAKE_SECRET}\n"
        "dns_rfc2136_algorithm = HMAC-SHA256\n"
    )
    ini.chmod(0o600)
    store = Rfc2136Store.from_credentials(str(ini), timeout=5)
    name = "_25._tcp.mx.policy.test."
    message = failure(lambda: store.add([record(name)], 60), FAKE_SECRET)
    assert message == (
        f"rfc2136 store: cannot add 1 TLSA record(s) at {name}: 127.0.0.1:{txt_only_bind} "
        "refused the update (REFUSED): the update-policy or acl of zone policy.test. does not "
        f"let key '{FAKE_KEY}' change TLSA records; allow it on the server (BIND: grant "
        f"{FAKE_KEY} zonesub TLSA), or set dns_rfc2136_name in {ini} to a key that may"
    )


# What only a scripted server shows ---------------------------------------------------


def fake_store(server: FakeDns, secret: str = FAKE_SECRET) -> Rfc2136Store:
    return Rfc2136Store("127.0.0.1", server.port, FAKE_KEY, secret, "HMAC-SHA256", timeout=2)


def fake_keyring() -> dict[dns.name.Name, bytes]:
    return {dns.name.from_text(FAKE_KEY): base64.b64decode(FAKE_SECRET)}


def test_servfail_points_at_the_servers_log() -> None:
    with FakeDns(keyring=fake_keyring()) as server:
        server.update_rcode = dns.rcode.SERVFAIL
        message = failure(lambda: fake_store(server).add([record("a.example.test.")], 60))
    assert f"127.0.0.1:{server.port} failed to apply the update (SERVFAIL)" in message
    assert message.endswith("its log says which")


def test_unsigned_refusal_names_every_key_of_the_tsig_key() -> None:
    """PowerDNS refuses a key it does not take with an unsigned REFUSED."""
    with FakeDns(keyring=fake_keyring()) as server:
        server.update_rcode = dns.rcode.REFUSED
        server.sign_answers = False
        message = failure(lambda: fake_store(server).add([record("a.example.test.")], 60))
    assert message == (
        "rfc2136 store: cannot add 1 TLSA record(s) at a.example.test.: "
        f"127.0.0.1:{server.port} answered REFUSED without a TSIG signature: it does not "
        f"take TSIG key '{FAKE_KEY}' (HMAC-SHA256) for zone example.test.; check the TSIG key "
        "against the server's key, and the zone's update ACL on the server"
    )


def test_unsigned_success_is_not_trusted() -> None:
    with FakeDns(keyring=fake_keyring()) as server:
        server.sign_answers = False
        message = failure(lambda: fake_store(server).add([record("a.example.test.")], 60))
    assert (
        f"127.0.0.1:{server.port} answered without a TSIG signature, so the answer cannot be "
        "trusted; check that the server address and port name the primary itself"
    ) in message


def test_servfail_to_a_query_points_at_the_servers_log() -> None:
    def servfail(query: dns.message.Message) -> list[tuple[float, dns.message.Message]]:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return [(0.0, response)]

    server = ScriptedDns(servfail)
    try:
        store = Rfc2136Store("127.0.0.1", server.address[1], FAKE_KEY, FAKE_SECRET, timeout=2)
        message = failure(lambda: store.list("_25._tcp.mx.example.test."))
    finally:
        server.close()
    assert message == (
        "rfc2136 store: cannot list TLSA at _25._tcp.mx.example.test.: "
        f"127.0.0.1:{server.address[1]} answered SERVFAIL, a problem on the server (zone not "
        "loaded?); its log says which"
    )


def test_answer_signed_with_another_secret_is_not_trusted() -> None:
    with FakeDns(keyring=fake_keyring()) as server:
        server.answer_secret = b"another secret, not the store's!"
        message = failure(
            lambda: fake_store(server).add([record("a.example.test.")], 60), FAKE_SECRET
        )
    assert (
        f"the answer from 127.0.0.1:{server.port} does not verify with TSIG key "
        f"'{FAKE_KEY}' (HMAC-SHA256): another server answered"
    ) in message
    assert message.endswith("check that the server address and port name the primary itself")


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (dns.tsig.BadTime, "is signed at a time too far from this host's clock for TSIG; set "
         "both clocks right (NTP)"),
        (dns.tsig.PeerBadTruncation, "rejected the TSIG signature with another error than "
         "BADSIG, BADKEY or BADTIME; check the TSIG key against the server's key"),
    ],
    ids=["answer-time", "other-tsig-error"],
)
def test_tsig_errors_no_server_here_produces(
    monkeypatch: pytest.MonkeyPatch, raised: type[Exception], said: str
) -> None:
    """dnspython's own BadTime (the answer's time, not the question's, is off)
    and a TSIG error other than the three named ones."""
    def fail(*args: object, **kwargs: object) -> dns.message.Message:
        raise raised

    with FakeDns(keyring=fake_keyring()) as server:
        store = fake_store(server)
        store.zone_of("a.example.test.")
        monkeypatch.setattr(dns.query, "tcp", fail)
        message = failure(lambda: store.add([record("a.example.test.")], 60))
    assert message.endswith(said), message
