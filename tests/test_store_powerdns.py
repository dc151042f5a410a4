"""The PowerDNS store: the conformance suite and PowerDNS specifics, against a
real PowerDNS Authoritative 4.7 (the lab's ``pdns`` authority).

What the store writes is read back over DNS from PowerDNS itself, never
through the store. Only answers that a PowerDNS server does not give (a
malformed body, a redirect) come from a small loopback HTTP server.
"""
from __future__ import annotations

import http.server
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests

from certbot_dane import dns as stores
from certbot_dane.dns.base import RecordStore, StoreConfigError, StoreError
from certbot_dane.dns.powerdns import PowerDnsStore
from certbot_dane.settings import SettingsError, from_options
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, record
from tests.lab.lab import Lab
from tests.lab.pdns import PowerDns
from tests.netfakes import closed_port, misbehaving_server

pytestmark = pytest.mark.lab

WRONG_KEY = "not-the-lab-api-key-0123456789"
INI = "/etc/letsencrypt/pdns.ini"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never be sent to a proxy from the environment."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def pdns(lab: Lab) -> PowerDns:
    assert isinstance(lab.authority, PowerDns)
    return lab.authority


def no_sleep(seconds: float) -> None:
    """Retry pauses cost no time in tests."""


def served(lab: Lab, name: str) -> tuple[set[Record], int | None]:
    """The TLSA records and TTL PowerDNS serves at ``name``, asked over DNS."""
    query = dns.message.make_query(name, dns.rdatatype.TLSA)
    response = dns.query.tcp(query, "127.0.0.1", port=lab.auth_port, timeout=5)
    found = [r for r in response.answer if r.rdtype == dns.rdatatype.TLSA]
    records = {Record.from_rdata(name, rd) for rrset in found for rd in rrset}
    return records, (found[0].ttl if found else None)


class PowerDnsHarness(Harness):
    def __init__(self, lab: Lab, stack: ExitStack) -> None:
        self.lab = lab
        self.stack = stack
        self.zone = lab.zone
        self.secrets = (pdns(lab).api_key, WRONG_KEY)

    def _store(self, url: str, key: str | None = None, timeout: float = 5.0) -> PowerDnsStore:
        return PowerDnsStore(
            url, key or pdns(self.lab).api_key, timeout=timeout, credentials=INI, sleep=no_sleep
        )

    def store(self) -> RecordStore:
        return self._store(pdns(self.lab).api_url)

    def other_host(self) -> RecordStore:
        return self._store(pdns(self.lab).api_url)

    def backend_records(self, owner: str) -> set[Record]:
        return served(self.lab, owner)[0]

    def backend_ttl(self, owner: str) -> int | None:
        return served(self.lab, owner)[1]

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        yield "auth refused", self._store(pdns(self.lab).api_url, WRONG_KEY), every
        yield "server down", self._store(f"http://127.0.0.1:{closed_port()}", timeout=1), every
        silent = self.stack.enter_context(misbehaving_server(None))
        yield "timeout", self._store(f"http://127.0.0.1:{silent}", timeout=0.5), every
        for kind in ("html", "500"):
            fake = self.stack.enter_context(fake_api({"/zones": kind}))
            yield f"answers {kind}", self._store(fake), every


@pytest.fixture
def harness(pdns_lab: Lab) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield PowerDnsHarness(pdns_lab, stack)


# A loopback HTTP server for the answers PowerDNS itself never gives ----------

ZONE_LIST = [{"name": "dane.test.", "id": "dane.test.", "kind": "Native"}]
ANSWERS: dict[str, tuple[int, dict[str, str], str]] = {
    "html": (200, {"Content-Type": "text/html"}, "<html><body>It works!</body></html>"),
    "500": (500, {"Content-Type": "application/json"}, '{"error": "database is locked"}'),
    "404": (404, {"Content-Type": "text/plain"}, "Not Found"),
    "301": (301, {"Location": "https://pdns.example.net:8443/api/v1/servers/localhost/zones"},
            ""),
    "not a list": (200, {"Content-Type": "application/json"}, '{"zones": []}'),
    "zones": (200, {"Content-Type": "application/json"}, json.dumps(ZONE_LIST)),
    "bad zone": (200, {"Content-Type": "application/json"}, '[{"name": "dane.test."}]'),
    "bad rrset": (
        200,
        {"Content-Type": "application/json"},
        json.dumps({"rrsets": [{"name": "_25._tcp.mail.dane.test.", "type": "TLSA", "ttl": 60,
                                "records": [{"content": "3 1 1 not-hex", "disabled": False}]}]}),
    ),
}


@contextmanager
def fake_api(routes: dict[str, str]) -> Iterator[str]:
    """An HTTP server whose API paths (after ``/servers/localhost``) answer as
    ``routes`` names in :data:`ANSWERS`; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            path = self.path.split("?")[0].removeprefix("/api/v1/servers/localhost")
            status, headers, body = ANSWERS[routes.get(path, "404")]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_PATCH = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Helpers on the real server ----------------------------------------------------


def store_for(lab: Lab, **kwargs: Any) -> PowerDnsStore:
    return PowerDnsStore(pdns(lab).api_url, pdns(lab).api_key, timeout=5, credentials=INI,
                         sleep=no_sleep, **kwargs)


def api(lab: Lab, method: str, path: str, body: Any = None) -> requests.Response:
    """A direct call to the lab's PowerDNS API, as another tool would make it."""
    url = f"{pdns(lab).api_url}/api/v1/servers/localhost{path}"
    response = requests.request(method, url, json=body, timeout=5,
                                headers={"X-API-Key": pdns(lab).api_key})
    assert response.status_code < 300, response.text
    return response


def replace(lab: Lab, name: str, records: list[tuple[str, bool]], ttl: int = 300) -> None:
    """Set ``name``'s TLSA RRset to (content, disabled) pairs, through the API."""
    rrset = {"name": name, "type": "TLSA", "ttl": ttl, "changetype": "REPLACE",
             "records": [{"content": c, "disabled": d} for c, d in records]}
    api(lab, "PATCH", f"/zones/{lab.zone}", {"rrsets": [rrset]})


def raw_rrset(lab: Lab, name: str) -> list[dict[str, Any]]:
    """The TLSA records at ``name`` as the API stores them, disabled ones included
    (which PowerDNS 4.7 leaves out of an answer filtered by name and type)."""
    rrsets = api(lab, "GET", f"/zones/{lab.zone}").json()["rrsets"]
    return [r for x in rrsets if (x["name"], x["type"]) == (name, "TLSA") for r in x["records"]]


_names = itertools.count()


def fresh(lab: Lab) -> str:
    """An owner name no other test uses."""
    return f"_25._tcp.p{next(_names)}.{lab.zone}"


def content(rec: Record) -> str:
    return f"{rec.usage} {rec.selector} {rec.mtype} {rec.data}"


@contextmanager
def requests_seen(store: PowerDnsStore) -> Iterator[list[tuple[str, str]]]:
    """(method, path) of every request the store sends."""
    seen: list[tuple[str, str]] = []
    real = store.api.session.request

    def spy(method: str, url: str, **kwargs: Any) -> requests.Response:
        seen.append((method, url.split("/servers/localhost", 1)[1]))
        return real(method, url, **kwargs)

    store.api.session.request = spy  # type: ignore[method-assign]
    yield seen


def after_each_patch(store: PowerDnsStore, action: Callable[[], None]) -> None:
    """Run ``action`` right after each PATCH the store sends: another writer."""
    real = store.api.patch

    def patched(path: str, body: dict[str, Any]) -> None:
        real(path, body)
        action()

    store.api.patch = patched  # type: ignore[method-assign]


def patches(seen: list[tuple[str, str]]) -> int:
    return sum(1 for method, _ in seen if method == "PATCH")


# Batching ----------------------------------------------------------------------


def test_many_owners_of_one_zone_are_one_patch(pdns_lab: Lab) -> None:
    names = [fresh(pdns_lab) for _ in range(5)]
    theirs = record(names[0], "c3")
    replace(pdns_lab, names[0], [(content(theirs), False)])
    store = store_for(pdns_lab)
    with requests_seen(store) as seen:
        assert store.add_many([({record(n, "a1"), record(n, "b2")}, 300) for n in names]) == [
            None
        ] * 5
    assert patches(seen) == 1
    assert served(pdns_lab, names[0])[0] == {theirs, record(names[0], "a1"),
                                              record(names[0], "b2")}
    for name in names[1:]:
        assert served(pdns_lab, name) == ({record(name, "a1"), record(name, "b2")}, 300)
    with requests_seen(store) as seen:
        assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 5
    assert patches(seen) == 1
    assert served(pdns_lab, names[0])[0] == {theirs, record(names[0], "b2")}


def test_listing_many_owners_reads_each_zone_once(pdns_lab: Lab) -> None:
    names = [fresh(pdns_lab) for _ in range(4)]
    store = store_for(pdns_lab)
    store.add({record(names[0], "a1")}, 120)
    with requests_seen(store) as seen:
        views = store.list_many([*names, "_25._tcp.mail.example.org."])
    assert seen == [("GET", f"/zones/{pdns_lab.zone}")]
    assert [(v.records, v.ttl) for v in views[:4]] == [
        ({record(names[0], "a1")}, 120), (frozenset(), None), (frozenset(), None),
        (frozenset(), None)]
    assert isinstance(views[4], StoreError) and "no zone on the PowerDNS server" in str(views[4])


def test_a_rejected_patch_is_done_again_one_owner_at_a_time(pdns_lab: Lab) -> None:
    """PowerDNS applies a PATCH whole or not at all: a CNAME at one owner makes
    it refuse the TLSA there, and only that item fails."""
    names = [fresh(pdns_lab) for _ in range(3)]
    pdns_lab.publish(names[1], "CNAME", f"mail.{pdns_lab.zone}")
    store = store_for(pdns_lab)
    with requests_seen(store) as seen:
        errors = store.add_many([({record(n, "a1")}, 300) for n in names])
    assert errors[0] is None and errors[2] is None
    message = str(errors[1])
    assert message.startswith(f"powerdns store: cannot add TLSA records at {names[1]}: "
                              "PowerDNS rejected the change: ")
    assert "Conflicts with pre-existing RRset (HTTP 422)" in message
    assert "a CNAME" in message and "remove it" in message
    assert patches(seen) == 4  # the batch, then one per owner
    assert served(pdns_lab, names[0])[0] == {record(names[0], "a1")}
    assert served(pdns_lab, names[2])[0] == {record(names[2], "a1")}


def test_nothing_to_change_sends_no_patch(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    store = store_for(pdns_lab)
    store.add({record(name, "a1")}, 300)
    with requests_seen(store) as seen:
        store.add({record(name, "a1")}, 300)
        store.delete({record(name, "ff")})
        store.retime({record(name, "a1")}, 300)
    assert patches(seen) == 0
    assert [m for m, _ in seen] == ["GET"] * 3  # the zone list is read once per store


def test_deleting_the_last_record_removes_the_rrset(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    store = store_for(pdns_lab)
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "a1")})
    assert raw_rrset(pdns_lab, name) == []
    assert store.list(name).ttl is None


# Compare-and-swap ------------------------------------------------------------


def test_a_stale_write_after_ours_is_detected_and_repaired(pdns_lab: Lab) -> None:
    """Another host read the RRset before our write and writes it back after:
    our record is gone at the read-back, so we merge and write again."""
    name = fresh(pdns_lab)
    theirs, mine = record(name, "c3"), record(name, "a1")
    replace(pdns_lab, name, [(content(theirs), False)])
    store = store_for(pdns_lab)
    stale = [lambda: replace(pdns_lab, name, [(content(theirs), False)])]
    after_each_patch(store, lambda: stale.pop()() if stale else None)
    with requests_seen(store) as seen:
        store.add({mine}, 300)
    assert patches(seen) == 2
    assert served(pdns_lab, name)[0] == {theirs, mine}


def test_an_rrset_changed_at_every_write_fails_after_the_attempts(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    theirs = record(name, "c3")
    store = store_for(pdns_lab, swap_attempts=3)
    after_each_patch(store, lambda: replace(pdns_lab, name, [(content(theirs), False)]))
    with requests_seen(store) as seen, pytest.raises(StoreError) as info:
        store.add({record(name, "a1")}, 300)
    assert str(info.value) == (
        f"powerdns store: cannot add TLSA records at {name}: another writer changed the "
        "RRset each of 3 times it was written; try again"
    )
    assert patches(seen) == 3
    assert served(pdns_lab, name)[0] == {theirs}


def test_disabled_records_of_others_stay_as_they_are(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    parked, mine = record(name, "c3"), record(name, "a1")
    replace(pdns_lab, name, [(content(parked), True)])
    store = store_for(pdns_lab)
    assert store.list(name).records == frozenset()  # stored, not served
    store.add({mine}, 300)
    assert sorted(raw_rrset(pdns_lab, name), key=lambda r: r["disabled"]) == [
        {"content": content(mine), "disabled": False},
        {"content": content(parked), "disabled": True},
    ]
    assert store.list(name).records == {mine}
    assert served(pdns_lab, name)[0] == {mine}


def test_the_filtered_read_of_pdns_hides_disabled_records(pdns_lab: Lab) -> None:
    """Why the store reads whole zones: a REPLACE built from this answer would
    delete the disabled record."""
    name = fresh(pdns_lab)
    replace(pdns_lab, name, [(content(record(name, "c3")), True)])
    filtered = api(pdns_lab, "GET", f"/zones/{pdns_lab.zone}?rrset_name={name}&rrset_type=TLSA")
    assert filtered.json()["rrsets"] == []
    assert len(raw_rrset(pdns_lab, name)) == 1


def test_adding_a_disabled_record_enables_it(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    mine = record(name, "a1")
    replace(pdns_lab, name, [(content(mine), True)])
    store_for(pdns_lab).add({mine}, 300)
    assert raw_rrset(pdns_lab, name) == [{"content": content(mine), "disabled": False}]
    assert served(pdns_lab, name)[0] == {mine}


def test_upper_case_data_written_by_others_matches_ours(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    mine = record(name, "ab")
    replace(pdns_lab, name, [(content(mine).upper(), False)])
    store = store_for(pdns_lab)
    assert store.list(name).records == {mine}
    store.delete({mine})
    assert served(pdns_lab, name)[0] == set()


# Zones -------------------------------------------------------------------------


@contextmanager
def extra_zone(lab: Lab, name: str, kind: str = "Native") -> Iterator[None]:
    body: dict[str, Any] = {"name": name, "kind": kind, "nameservers": [f"ns1.{lab.zone}"]}
    if kind == "Slave":
        # Never transferred: this server does not run as a secondary.
        body.update(nameservers=[], masters=["127.0.0.1"])
    api(lab, "POST", "/zones", body)
    try:
        yield
    finally:
        api(lab, "DELETE", f"/zones/{name}")


def test_the_longest_zone_is_used(pdns_lab: Lab) -> None:
    child = f"nested.{pdns_lab.zone}"
    with extra_zone(pdns_lab, child):
        deep, shallow = f"_25._tcp.mail.{child}", f"_25._tcp.nested-not.{pdns_lab.zone}"
        store = store_for(pdns_lab)
        store.add({record(deep, "a1")}, 300)
        store.add({record(shallow, "b2")}, 300)
        in_child = api(pdns_lab, "GET", f"/zones/{child}").json()["rrsets"]
        assert [r["name"] for r in in_child if r["type"] == "TLSA"] == [deep]
        assert raw_rrset(pdns_lab, shallow) == [{"content": content(record(shallow, "b2")),
                                                 "disabled": False}]
        store.delete({record(shallow, "b2")})


def test_a_name_in_no_zone_is_one_clear_error(pdns_lab: Lab) -> None:
    with pytest.raises(StoreError) as info:
        store_for(pdns_lab).add({record("_25._tcp.mail.example.org.", "a1")}, 300)
    assert str(info.value) == (
        "powerdns store: cannot add TLSA records at _25._tcp.mail.example.org.: no zone on "
        f"the PowerDNS server at {pdns(pdns_lab).api_url} contains the name (it has "
        f"dane.test.); create the zone there, or set dns_powerdns_api_url in {INI} to the "
        "server that has it"
    )


def test_a_secondary_zone_is_refused(pdns_lab: Lab) -> None:
    zone = "secondary.example."
    with extra_zone(pdns_lab, zone, kind="Slave"):
        with pytest.raises(StoreError) as info:
            store_for(pdns_lab).list(f"_25._tcp.mail.{zone}")
    assert str(info.value) == (
        f"powerdns store: cannot list TLSA records at _25._tcp.mail.{zone}: the zone {zone} "
        f"is a Slave zone on {pdns(pdns_lab).api_url}; set dns_powerdns_api_url in {INI} to "
        "the API of its primary"
    )


def test_a_zone_deleted_meanwhile_is_named(pdns_lab: Lab) -> None:
    zone = f"gone.{pdns_lab.zone}"
    store = store_for(pdns_lab)
    with extra_zone(pdns_lab, zone):
        assert store.list(f"_25._tcp.mail.{zone}").records == frozenset()
    with pytest.raises(StoreError) as info:
        store.add({record(f"_25._tcp.mail.{zone}", "a1")}, 300)
    assert str(info.value) == (
        f"powerdns store: cannot add TLSA records at _25._tcp.mail.{zone}: the PowerDNS "
        f"server no longer has the zone {zone} (deleted meanwhile); the next run looks the "
        "zone up again"
    )


def test_api_url_with_api_v1_and_trailing_slash(pdns_lab: Lab) -> None:
    name = fresh(pdns_lab)
    for suffix in ("/", "/api/v1", "/api/v1/"):
        store = PowerDnsStore(pdns(pdns_lab).api_url + suffix, pdns(pdns_lab).api_key)
        assert store.list(name).records == frozenset()


# Errors: one line each, the cause and the fix, never the key ------------------


def message_of(store: PowerDnsStore, name: str = "_25._tcp.mail.dane.test.") -> str:
    with pytest.raises(StoreError) as info:
        store.add({record(name, "a1")}, 300)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_refused_api_key_names_the_ini_and_key(pdns_lab: Lab) -> None:
    store = PowerDnsStore(pdns(pdns_lab).api_url, WRONG_KEY, credentials=INI)
    assert message_of(store) == (
        "powerdns store: cannot add TLSA records at _25._tcp.mail.dane.test.: PowerDNS refused "
        f"the API key (HTTP 401); set dns_powerdns_api_key in {INI} to the api-key of the "
        "server's pdns.conf"
    )


def test_unreachable_api_names_the_url_key_and_pdns_conf() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert message_of(PowerDnsStore(url, WRONG_KEY, credentials=INI)) == (
        "powerdns store: cannot add TLSA records at _25._tcp.mail.dane.test.: cannot connect "
        f"to the PowerDNS API at {url} (Connection refused); check dns_powerdns_api_url in "
        f"{INI}, and api=yes, webserver=yes and webserver-allow-from in pdns.conf"
    )


@contextmanager
def closing_server() -> Iterator[int]:
    """A port that accepts connections and closes them unanswered, as PowerDNS
    does for a client outside webserver-allow-from."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def test_a_client_outside_webserver_allow_from_is_told_so() -> None:
    with closing_server() as port:
        text = message_of(PowerDnsStore(f"http://127.0.0.1:{port}", WRONG_KEY, credentials=INI))
    assert text.endswith(
        f": cannot connect to the PowerDNS API at http://127.0.0.1:{port} (the server closed "
        f"the connection without answering); check dns_powerdns_api_url in {INI}, and api=yes, "
        "webserver=yes and webserver-allow-from in pdns.conf"
    )


def test_silent_api_is_a_timeout() -> None:
    with misbehaving_server(None) as port:
        store = PowerDnsStore(f"http://127.0.0.1:{port}", WRONG_KEY, timeout=0.3,
                              credentials=INI)
        assert message_of(store).endswith(
            f": no answer from the PowerDNS API at http://127.0.0.1:{port} within 0.3 s; "
            f"check dns_powerdns_api_url in {INI}"
        )


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        ({"/zones": "html"}, "malformed answer from {url} (not JSON); check that "
         "dns_powerdns_api_url in {ini} is the PowerDNS webserver's URL"),
        ({"/zones": "not a list"}, "malformed answer from {url} (the zone list is not a list); "
         "check that dns_powerdns_api_url in {ini} is the PowerDNS webserver's URL"),
        ({"/zones": "bad zone"}, "malformed answer from {url} (a zone without name, id or "
         "kind); check that dns_powerdns_api_url in {ini} is the PowerDNS webserver's URL"),
        ({"/zones": "zones", "/zones/dane.test.": "bad rrset"}, "malformed answer from {url} "
         "(a TLSA RRset without usable records); check that dns_powerdns_api_url in {ini} is "
         "the PowerDNS webserver's URL"),
        ({}, "{url} has no PowerDNS API (HTTP 404 for the zone list); set dns_powerdns_api_url "
         "in {ini} to the webserver's URL, e.g. http://127.0.0.1:8081"),
        ({"/zones": "500"}, "the PowerDNS API failed (HTTP 500: database is locked); see the "
         "server's log"),
        ({"/zones": "301"}, "{url} redirects to https://pdns.example.net:8443/api/v1/servers/"
         "localhost/zones (HTTP 301); set dns_powerdns_api_url in {ini} to the URL it "
         "redirects to"),
    ],
    ids=["not json", "not a list", "bad zone", "bad rrset", "not an api", "server error",
         "redirect"],
)
def test_answers_pdns_never_gives_are_named(routes: dict[str, str], reason: str) -> None:
    with fake_api(routes) as url:
        text = message_of(PowerDnsStore(url, WRONG_KEY, credentials=INI))
    prefix = "powerdns store: cannot add TLSA records at _25._tcp.mail.dane.test.: "
    assert text == prefix + reason.format(url=url, ini=INI)


def test_a_proxy_password_in_the_url_is_not_shown() -> None:
    url = f"http://admin:hunter2@127.0.0.1:{closed_port()}"
    text = message_of(PowerDnsStore(url, WRONG_KEY, credentials=INI))
    assert "hunter2" not in text and "admin" not in text
    assert "cannot connect to the PowerDNS API at http://127.0.0.1:" in text


def test_the_api_key_is_never_in_messages_or_logs(
    pdns_lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = fresh(pdns_lab)
    store = store_for(pdns_lab)
    store.add({record(name, "a1")}, 300)
    store.retime({record(name, "a1")}, 60)
    store.delete({record(name, "a1")})
    wrong = PowerDnsStore(pdns(pdns_lab).api_url, WRONG_KEY, credentials=INI)
    texts = [message_of(wrong, name)]
    for secret in (pdns(pdns_lab).api_key, WRONG_KEY):
        assert secret not in caplog.text
        assert all(secret not in t for t in texts)


# Credentials and settings ------------------------------------------------------


def write_ini(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def settings_for(ini: Path | None, url: str | None = None) -> Settings:
    return Settings(targets="311:25", directory="/nonexistent", store="powerdns",
                    credentials=str(ini) if ini else None, api_url=url)


def test_credentials_from_certbot_dns_powerdns_ini(pdns_lab: Lab, tmp_path: Path) -> None:
    ini = pdns(pdns_lab).ini(tmp_path / "pdns.ini")
    store = PowerDnsStore.from_settings(settings_for(ini), "/etc/letsencrypt", timeout=5)
    name = fresh(pdns_lab)
    store.add({record(name, "a1")}, 300)
    assert served(pdns_lab, name)[0] == {record(name, "a1")}
    wrong = write_ini(tmp_path / "wrong.ini", f"dns_powerdns_api_url = {pdns(pdns_lab).api_url}"
                      f"\ndns_powerdns_api_key = {WRONG_KEY}\n")
    text = message_of(PowerDnsStore.from_settings(settings_for(wrong), "/etc/letsencrypt"))
    assert f"set dns_powerdns_api_key in {wrong} to the api-key" in text


def test_prefixed_keys_of_old_certbot_are_read(pdns_lab: Lab, tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "old.ini",
                    f"certbot_dns_powerdns:dns_powerdns_api_url = {pdns(pdns_lab).api_url}\n"
                    f"certbot_dns_powerdns:dns_powerdns_api_key = {pdns(pdns_lab).api_key}\n")
    store = PowerDnsStore.from_settings(settings_for(ini), "/etc/letsencrypt")
    assert store.list(f"_25._tcp.old.{pdns_lab.zone}").records == frozenset()


def test_dane_api_url_replaces_the_ini_url(pdns_lab: Lab, tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "key-only.ini", f"dns_powerdns_api_key = {pdns(pdns_lab).api_key}\n")
    store = PowerDnsStore.from_settings(settings_for(ini, pdns(pdns_lab).api_url), "/etc/le")
    assert store.list(f"_25._tcp.url.{pdns_lab.zone}").records == frozenset()


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("dns_powerdns_api_key = k\n", "dns_powerdns_api_url"),
        ("dns_powerdns_api_url = http://127.0.0.1:8081\n", "dns_powerdns_api_key"),
        ("dns_powerdns_api_url = http://127.0.0.1:8081\ndns_powerdns_api_key =\n",
         "dns_powerdns_api_key"),
        ("", "dns_powerdns_api_url and no dns_powerdns_api_key"),
    ],
)
def test_missing_keys_are_named(tmp_path: Path, text: str, missing: str) -> None:
    ini = write_ini(tmp_path / "pdns.ini", text)
    with pytest.raises(StoreConfigError) as info:
        PowerDnsStore.from_settings(settings_for(ini), "/etc/letsencrypt")
    assert str(info.value) == (
        f"powerdns store: {ini} has no {missing}; add dns_powerdns_api_url = "
        "http://127.0.0.1:8081 (the PowerDNS webserver) and dns_powerdns_api_key = the "
        "api-key of its pdns.conf"
    )


def test_a_url_without_scheme_is_refused(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "pdns.ini",
                    "dns_powerdns_api_url = pdns.example.org:8081\ndns_powerdns_api_key = k\n")
    with pytest.raises(StoreConfigError) as info:
        PowerDnsStore.from_settings(settings_for(ini), "/etc/letsencrypt")
    assert str(info.value) == (
        f"powerdns store: dns_powerdns_api_url in {ini} is not an http(s) URL; give the "
        "webserver's URL, e.g. http://127.0.0.1:8081"
    )


def test_no_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match=r"^powerdns store: no credentials file; pass "
                       r"--dane-credentials PATH \(the INI used by certbot-dns-powerdns\)"):
        PowerDnsStore.from_settings(settings_for(None), "/etc/letsencrypt")


def test_world_readable_ini_gets_certbots_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini = write_ini(tmp_path / "pdns.ini", "dns_powerdns_api_url = http://127.0.0.1:8081\n"
                    f"dns_powerdns_api_key = {WRONG_KEY}\n", mode=0o644)
    with caplog.at_level(logging.WARNING):
        PowerDnsStore.from_settings(settings_for(ini), "/etc/letsencrypt")
    assert f"Unsafe permissions on credentials configuration file: {ini}" in caplog.text
    assert WRONG_KEY not in caplog.text


def test_store_follows_the_dns_powerdns_authenticator(pdns_lab: Lab, tmp_path: Path) -> None:
    ini = pdns(pdns_lab).ini(tmp_path / "pdns.ini")
    (tmp_path / "config").mkdir()
    config = SimpleNamespace(config_dir=str(tmp_path / "config"), authenticator="dns-powerdns",
                             dns_powerdns_credentials=str(ini))
    settings = from_options({"tlsa": "311:25"}, config, "mail.dane.test")
    assert (settings.store, settings.credentials) == ("powerdns", str(ini))
    assert isinstance(stores.open_store(settings, str(tmp_path / "config")), PowerDnsStore)


def test_explicit_store_checks_the_ini_offline(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "pdns.ini", "dns_powerdns_api_key = k\n")
    (tmp_path / "config").mkdir()
    config = SimpleNamespace(config_dir=str(tmp_path / "config"), authenticator="dns-rfc2136")
    with pytest.raises(SettingsError, match=r"^powerdns store: .* has no dns_powerdns_api_url"):
        from_options({"tlsa": "311:25", "dns": "powerdns", "credentials": str(ini)}, config,
                     "mail.dane.test")
