"""The deSEC store: the conformance suite and deSEC specifics, on a loopback fake."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest

from certbot_dane import dns as stores
from certbot_dane.dns import desec
from certbot_dane.dns.base import RecordStore, SoftStoreError, StoreConfigError, StoreError
from certbot_dane.dns.desec import DEFAULT_API_URL, SWAP_ATTEMPTS, DesecStore
from certbot_dane.dns.webapi import MAX_RETRIES
from certbot_dane.settings import from_options
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, record
from tests.desec_fake import TOKEN, FakeDesec
from tests.netfakes import closed_port, misbehaving_server

WRONG_TOKEN = "desec-wrong-token-XyZ0123456789ab"
NAME = "mail.example.com"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never be sent to a proxy from the environment."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeDesec]:
    # Accounts may get a minimum TTL below deSEC's default of 3600 s on request;
    # the shared suite uses 300 and 120.
    with FakeDesec(minimum_ttl=60, page_size=2) as server:
        yield server


def no_sleep(seconds: float) -> None:
    """Retry waits cost no time in tests."""


def store_for(fake: FakeDesec, sleep: Callable[[float], None] = no_sleep,
              token: str = TOKEN, **kwargs: object) -> DesecStore:
    return DesecStore(token, fake.url, 5.0, sleep=sleep, **kwargs)  # type: ignore[arg-type]


class DesecHarness(Harness):
    zone = "dane.test."

    def __init__(self, fake: FakeDesec, stack: ExitStack) -> None:
        self.fake = fake
        self.stack = stack
        self.secrets = (TOKEN, WRONG_TOKEN)

    def store(self) -> RecordStore:
        return store_for(self.fake)

    def other_host(self) -> RecordStore:
        return store_for(self.fake)

    def backend_records(self, owner: str) -> set[Record]:
        return self.fake.tlsa(owner)

    def backend_ttl(self, owner: str) -> int | None:
        return self.fake.ttl(owner)

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        yield "auth refused", store_for(self.fake, token=WRONG_TOKEN), every
        down = f"http://127.0.0.1:{closed_port()}/api/v1"
        yield "server down", DesecStore(TOKEN, down, 1.0, sleep=no_sleep), every
        silent = self.stack.enter_context(misbehaving_server(None))
        yield "timeout", DesecStore(TOKEN, f"http://127.0.0.1:{silent}/api/v1", 0.5), every
        for kind in ("badjson", "500", "429"):
            broken = self.stack.enter_context(FakeDesec(minimum_ttl=60))
            broken.fail(kind, None, retry_after="0")
            yield f"server answers {kind}", store_for(broken), every
        locked = self.stack.enter_context(FakeDesec(minimum_ttl=60))
        locked.policy(None, None, None, perm_write=False)
        # Every token may read every RRset: a policy only restricts writes, and
        # deleting an absent record writes nothing.
        yield "no write permission", store_for(locked), ("add",)
        other = self.stack.enter_context(FakeDesec(domains=("elsewhere.test",)))
        yield "domain not in the account", store_for(other), every


@pytest.fixture
def harness(fake: FakeDesec) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield DesecHarness(fake, stack)


def write_ini(path: Path, mode: int = 0o600, **keys: str) -> Path:
    path.write_text("".join(f"dns_desec_{k} = {v}\n" for k, v in keys.items()))
    path.chmod(mode)
    return path


def settings_for(ini: Path, url: str | None = None) -> Settings:
    return Settings(targets="311:25", directory="/nonexistent", store="desec",
                    credentials=str(ini), api_url=url)


def opened(tmp_path: Path, fake: FakeDesec | None, token: str = TOKEN,
           url: str | None = None) -> tuple[DesecStore, Path]:
    """A store built as certbot-dane builds it: from the INI, with --dane-api-url."""
    ini = write_ini(tmp_path / "desec.ini", token=token)
    target = url or (fake.url if fake else None)
    store = DesecStore.from_settings(settings_for(ini, target), "/etc/letsencrypt", timeout=5)
    store.api._sleep = no_sleep
    return store, ini


def failure(operation: Callable[[], object]) -> str:
    with pytest.raises(StoreError) as info:
        operation()
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message and WRONG_TOKEN not in message
    return message


# The compare-and-swap -----------------------------------------------------------


def test_a_record_lost_to_another_writer_is_written_again(fake: FakeDesec) -> None:
    """Another writer, working from an RRset read before our write, puts back
    only its own record: the read after our write sees ours missing and merges again."""
    name = "_25._tcp.race.dane.test."
    theirs, mine = record(name, "c3"), record(name, "a1")
    fake.put(name, {theirs}, 300)
    raced = []

    def stale_writer(server: FakeDesec, zone: str, subname: str) -> None:
        if not raced:
            raced.append(subname)
            server.put(name, {theirs})

    fake.after_write = stale_writer
    store_for(fake).add({mine}, 300)
    assert raced == ["_25._tcp.race"]
    assert fake.tlsa(name) == {theirs, mine}
    assert len(fake.seen("PATCH")) == 2
    assert len(fake.seen("GET", "/rrsets/")) == 3  # read, check (lost), check (there)


def test_a_record_added_by_another_writer_after_ours_needs_no_second_write(
    fake: FakeDesec,
) -> None:
    name = "_25._tcp.after.dane.test."
    theirs, mine = record(name, "c3"), record(name, "a1")

    def other_adds(server: FakeDesec, zone: str, subname: str) -> None:
        if theirs not in server.tlsa(name):
            server.put(name, server.tlsa(name) | {theirs})

    fake.after_write = other_adds
    store_for(fake).add({mine}, 300)
    assert fake.tlsa(name) == {theirs, mine}
    assert len(fake.seen("PATCH")) == 1


def test_a_name_that_keeps_changing_fails_after_a_bounded_number_of_writes(
    fake: FakeDesec,
) -> None:
    name = "_25._tcp.busy.dane.test."
    theirs = record(name, "c3")
    fake.put(name, {theirs}, 300)
    fake.after_write = lambda server, zone, subname: server.put(name, {theirs})
    message = failure(lambda: store_for(fake).add({record(name, "a1")}, 300))
    assert message == (
        f"desec store: cannot add 1 TLSA record(s) at {name}: the RRset changed again after "
        f"each of {SWAP_ATTEMPTS} writes (another writer at work?); the next check tries again"
    )
    assert len(fake.seen("PATCH")) == SWAP_ATTEMPTS
    assert fake.tlsa(name) == {theirs}


def test_delete_writes_back_the_rest_of_the_rrset_as_read(fake: FakeDesec) -> None:
    name = "_25._tcp.rest.dane.test."
    theirs, mine = record(name, "c3"), record(name, "a1")
    fake.put(name, {theirs, mine}, 600)
    store_for(fake).delete({mine})
    (patch,) = fake.seen("PATCH")
    assert patch.body == [{"subname": "_25._tcp.rest", "type": "TLSA", "ttl": 600,
                           "records": [f"3 1 1 {theirs.data}"]}]
    assert fake.tlsa(name) == {theirs} and fake.ttl(name) == 600


def test_deleting_the_last_record_removes_the_rrset(fake: FakeDesec) -> None:
    name = "_25._tcp.last.dane.test."
    store = store_for(fake)
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "a1")})
    assert fake.seen("PATCH")[-1].body == [
        {"subname": "_25._tcp.last", "type": "TLSA", "records": []}]
    assert fake.tlsa(name) == set() and fake.ttl(name) is None


def test_retime_sends_the_ttl_alone(fake: FakeDesec) -> None:
    """A TTL change names no records, so it cannot overwrite another writer's."""
    name = "_25._tcp.ttl.dane.test."
    mine, theirs = record(name, "a1"), record(name, "c3")
    fake.put(name, {mine, theirs}, 3600)
    fake.requests.clear()
    store_for(fake).retime({mine}, 300)
    (patch,) = fake.seen("PATCH")
    assert patch.body == [{"subname": "_25._tcp.ttl", "type": "TLSA", "ttl": 300}]
    assert fake.ttl(name) == 300 and fake.tlsa(name) == {mine, theirs}
    fake.requests.clear()
    store_for(fake).retime({mine}, 300)
    assert not fake.seen("PATCH")


def test_present_and_absent_records_make_no_write(fake: FakeDesec) -> None:
    name = "_25._tcp.idem.dane.test."
    store = store_for(fake)
    store.add({record(name, "a1")}, 300)
    fake.requests.clear()
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "ff")})
    assert not fake.seen("PATCH")
    assert len(fake.requests) == 2  # one read each; the domain list is cached


def test_records_are_sent_in_presentation_format_and_read_back_lowercase(
    fake: FakeDesec,
) -> None:
    name = "_25._tcp.case.dane.test."
    upper = Record(name, 3, 1, 1, record(name, "ab").data.upper())
    store = store_for(fake)
    store.add({upper}, 300)
    (patch,) = fake.seen("PATCH")
    assert patch.body[0]["records"] == [f"3 1 1 {upper.data.lower()}"]
    assert patch.headers["Authorization"] == f"Token {TOKEN}"
    assert store.list(name).records == {record(name, "ab")}


def test_an_owner_at_the_domain_apex(fake: FakeDesec) -> None:
    name = "dane.test."
    store = store_for(fake)
    store.add({record(name, "a1")}, 300)
    assert fake.seen("PATCH")[0].body[0]["subname"] == ""
    assert store.list(name).records == {record(name, "a1")}
    assert fake.seen("GET", "/rrsets/@/TLSA/")


# Many names at once ---------------------------------------------------------------


def test_many_names_in_one_domain_are_one_listing_and_one_bulk_write(fake: FakeDesec) -> None:
    names = [f"_25._tcp.m{i}.dane.test." for i in range(6)]
    theirs = record(names[0], "c3")
    fake.put(names[0], {theirs}, 300)
    fake.put(names[1], {record(names[1], "a1")}, 300)  # already there: no change
    store = store_for(fake)
    store.list("_25._tcp.warm.dane.test.")  # the domain list is read once per store
    fake.requests.clear()
    items = [({record(n, "a1")}, 300) for n in names]
    assert store.add_many(items) == [None] * 6
    (patch,) = fake.seen("PATCH")
    assert sorted(r["subname"] for r in patch.body) == [f"_25._tcp.m{i}" for i in (0, 2, 3, 4, 5)]
    listings = fake.seen("GET", "/rrsets/")
    # a listing before the write (two RRsets: one page), one after (six: three pages)
    assert [r.query["cursor"] != "" for r in listings] == [False, False, True, True]
    assert all(r.query["type"] == "TLSA" for r in listings)
    assert len(fake.requests) == 5
    assert fake.tlsa(names[0]) == {theirs, record(names[0], "a1")}
    assert all(fake.tlsa(n) >= {record(n, "a1")} for n in names)
    fake.requests.clear()
    assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 6
    assert len(fake.seen("PATCH")) == 1
    assert fake.tlsa(names[0]) == {theirs} and fake.tlsa(names[3]) == set()


def test_a_bulk_write_counts_once_against_the_per_domain_write_limit() -> None:
    """One write per hour: six names in one bulk PATCH pass, six PATCHes do not."""
    with FakeDesec(minimum_ttl=60, write_limits=((1, 3600.0),)) as fake:
        names = [f"_25._tcp.w{i}.dane.test." for i in range(6)]
        assert store_for(fake).add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 6
        errors = [outcome for n in names
                  for outcome in store_for(fake).delete_many([({record(n, "a1")}, ())])]
        assert isinstance(errors[0], SoftStoreError)
        assert "rate limited by deSEC (HTTP 429, retry after 3600 s)" in str(errors[0])
        assert str(errors[0]).endswith("; the next check tries again")


def test_names_in_two_domains_are_two_bulk_writes() -> None:
    with FakeDesec(domains=("dane.test", "child.dane.test"), minimum_ttl=60) as fake:
        names = ["_25._tcp.a.dane.test.", "_25._tcp.b.child.dane.test.",
                 "_25._tcp.c.child.dane.test."]
        assert store_for(fake).add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 3
        paths = sorted((p.path, len(p.body)) for p in fake.seen("PATCH"))
        assert paths == [("/api/v1/domains/child.dane.test/rrsets/", 2),
                         ("/api/v1/domains/dane.test/rrsets/", 1)]
        assert fake.zones["child.dane.test"]["rrsets"].keys() == {
            ("_25._tcp.b", "TLSA"), ("_25._tcp.c", "TLSA")}


def test_a_refused_bulk_write_is_done_again_one_rrset_at_a_time(fake: FakeDesec) -> None:
    """A token policy that refuses one name fails the atomic bulk request;
    the other names then succeed alone, and the refused one fails alone."""
    fake.policy(None, None, None, perm_write=True)
    fake.policy("dane.test", "_25._tcp.shut", "TLSA", perm_write=False)
    names = ["_25._tcp.open1.dane.test.", "_25._tcp.shut.dane.test.",
             "_25._tcp.open2.dane.test."]
    errors = store_for(fake).add_many([({record(n, "a1")}, 300) for n in names])
    assert errors[0] is None and errors[2] is None
    assert "Insufficient token permissions. (HTTP 403)" in str(errors[1])
    assert [len(p.body) for p in fake.seen("PATCH")] == [3, 1, 1, 1]
    assert fake.tlsa(names[1]) == set() and fake.tlsa(names[2]) == {record(names[2], "a1")}


def test_list_many_reads_each_domain_once(fake: FakeDesec) -> None:
    names = [f"_25._tcp.l{i}.dane.test." for i in range(3)]
    for n in names:
        fake.put(n, {record(n, "a1")}, 300)
    views = store_for(fake).list_many([*names, "_25._tcp.x.nowhere.example."])
    assert [v.records for v in views[:3]] == [{record(n, "a1")} for n in names]  # type: ignore[union-attr]
    assert isinstance(views[3], StoreError)
    assert len(fake.seen("GET", "/rrsets/")) == 2  # one listing, two pages


# Domains and TTLs ----------------------------------------------------------------


def test_nested_domains_the_longest_wins_and_the_list_is_read_once() -> None:
    with FakeDesec(domains=("dane.test", "child.dane.test", "other.test"),
                   minimum_ttl=60, page_size=1) as fake:
        store = store_for(fake)
        store.add({record("_25._tcp.mail.child.dane.test.", "a1")}, 300)
        store.add({record("_25._tcp.mail.dane.test.", "b2")}, 300)
        assert ("_25._tcp.mail", "TLSA") in fake.zones["child.dane.test"]["rrsets"]
        assert ("_25._tcp.mail", "TLSA") in fake.zones["dane.test"]["rrsets"]
        domain_pages = [r for r in fake.seen("GET") if r.path == "/api/v1/domains/"]
        assert len(domain_pages) == 3  # one listing of three pages of one


def test_a_ttl_below_the_domain_minimum_is_refused_before_any_write() -> None:
    with FakeDesec() as fake:  # deSEC's default minimum: 3600 s
        name = "_25._tcp.short.dane.test."
        message = failure(lambda: store_for(fake).add({record(name, "a1")}, 300))
        assert message == (
            f"desec store: cannot add 1 TLSA record(s) at {name}: deSEC refuses the TTL "
            "300 s, below the minimum of 3600 s for dane.test; set --dane-record-ttl 3600 or "
            "more (or ask deSEC support for a lower minimum)"
        )
        assert not fake.seen("PATCH")
        store_for(fake).add({record(name, "a1")}, 3600)
        assert fake.ttl(name) == 3600


def test_a_minimum_raised_meanwhile_is_named_from_deSECs_answer(fake: FakeDesec) -> None:
    store = store_for(fake)
    name = "_25._tcp.raised.dane.test."
    store.list(name)  # the domain list says 60
    fake.zones["dane.test"]["minimum_ttl"] = 7200
    message = failure(lambda: store.add({record(name, "a1")}, 300))
    assert "Ensure this value is greater than or equal to 7200." in message
    assert message.endswith("set --dane-record-ttl 7200 or more (or ask deSEC support for a "
                            "lower minimum)")


def test_a_ttl_above_a_day_is_refused(fake: FakeDesec) -> None:
    message = failure(lambda: store_for(fake).add({record("_25._tcp.t.dane.test.")}, 90000))
    assert message.endswith("deSEC accepts TTLs up to 86400 s, not 90000; set "
                            "--dane-record-ttl 86400 or less")


# Rate limits ------------------------------------------------------------------------


def test_429_waits_retry_after_then_succeeds(fake: FakeDesec) -> None:
    waits: list[float] = []
    store = store_for(fake, sleep=waits.append)
    name = "_25._tcp.busy.dane.test."
    store.list(name)
    fake.requests.clear()
    fake.fail("429", 2, retry_after="7")
    assert store.list(name).records == frozenset()
    assert waits == [7.0, 7.0]
    assert len(fake.requests) == 3


def test_429_gives_up_softly_after_a_few_waits(fake: FakeDesec) -> None:
    waits: list[float] = []
    store = store_for(fake, sleep=waits.append)
    name = "_25._tcp.busy.dane.test."
    store.list(name)
    fake.requests.clear()
    fake.fail("429", None, retry_after="2")
    with pytest.raises(SoftStoreError):
        store.add({record(name)}, 300)
    assert waits == [2.0] * MAX_RETRIES
    assert len(fake.requests) == MAX_RETRIES + 1


def test_429_asking_for_a_long_wait_fails_softly_at_once(fake: FakeDesec) -> None:
    waits: list[float] = []
    fake.fail("429", 1, retry_after="600")
    with pytest.raises(SoftStoreError, match=r"retry after 600 s\); the next check tries"):
        store_for(fake, sleep=waits.append).list("_25._tcp.x.dane.test.")
    assert waits == []


# One line per failure: cause and fix, never the token ------------------------------------


def test_auth_refused_names_the_token_key_and_file(tmp_path: Path, fake: FakeDesec) -> None:
    store, ini = opened(tmp_path, fake, token=WRONG_TOKEN)
    name = "_25._tcp.auth.dane.test."
    assert failure(lambda: store.list(name)) == (
        f"desec store: cannot list TLSA records at {name}: Invalid token. (HTTP 401); put a "
        f"valid deSEC token in dns_desec_token of {ini}"
    )


def test_permission_refused_names_the_token_policy(tmp_path: Path, fake: FakeDesec) -> None:
    fake.policy(None, None, None, perm_write=False)
    store, ini = opened(tmp_path, fake)
    name = "_25._tcp.perm.dane.test."
    assert store.list(name).records == frozenset()  # reading is always allowed
    assert failure(lambda: store.add({record(name)}, 300)) == (
        f"desec store: cannot add 1 TLSA record(s) at {name}: Insufficient token permissions. "
        f"(HTTP 403); the token in dns_desec_token of {ini} needs write access to this "
        "domain's TLSA RRsets (its scoping policies) from this host's address"
    )


def test_a_name_outside_the_account_names_its_domains(tmp_path: Path, fake: FakeDesec) -> None:
    store, ini = opened(tmp_path, fake)
    name = "_25._tcp.mail.example.org."
    assert failure(lambda: store.add({record(name)}, 300)) == (
        f"desec store: cannot add 1 TLSA record(s) at {name}: no domain of this deSEC account "
        "contains it (the account has dane.test); add the domain at deSEC, or put a token of "
        f"the account that holds it in dns_desec_token of {ini}"
    )


def test_server_down_names_the_endpoint_and_where_it_came_from(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{closed_port()}/api/v1"
    store, _ = opened(tmp_path, None, url=down)
    message = failure(lambda: store.list("_25._tcp.mail.dane.test."))
    assert message.endswith(f"cannot connect to {down}: Connection refused; check the network, "
                            "and --dane-api-url")
    ini = write_ini(tmp_path / "endpoint.ini", token=TOKEN, endpoint=down)
    store = DesecStore.from_settings(settings_for(ini), "/etc/letsencrypt", timeout=1)
    message = failure(lambda: store.list("_25._tcp.mail.dane.test."))
    assert message.endswith(f"check the network, and dns_desec_endpoint in {ini}")


def test_timeout_is_one_line() -> None:
    with misbehaving_server(None) as port:
        url = f"http://127.0.0.1:{port}/api/v1"
        store = DesecStore(TOKEN, url, 0.3)
        assert failure(lambda: store.list("_25._tcp.mail.dane.test.")).endswith(
            f"no answer from {url} within 0.3 s; check the network")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("500", "HTTP 500 from deSEC; deSEC has a problem, try again later"),
     ("badjson", "malformed answer: HTTP 200 without JSON")],
)
def test_server_failures_name_the_reason(fake: FakeDesec, kind: str, reason: str) -> None:
    fake.fail(kind, None)
    name = "_25._tcp.fail.dane.test."
    assert failure(lambda: store_for(fake).add({record(name)}, 300)) == (
        f"desec store: cannot add 1 TLSA record(s) at {name}: {reason}")


def test_a_malformed_rrset_is_one_line(fake: FakeDesec) -> None:
    name = "_25._tcp.bad.dane.test."
    fake.zones["dane.test"]["rrsets"][("_25._tcp.bad", "TLSA")] = {
        "subname": "_25._tcp.bad", "type": "TLSA", "records": ["3 1 1 zz"], "ttl": 300,
        "created": "", "touched": "", "serial": 0}
    assert failure(lambda: store_for(fake).list(name)).endswith(
        "malformed answer: a TLSA RRset without usable records and TTL")


def test_secrets_never_in_logs(fake: FakeDesec, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    name = "_25._tcp.secret.dane.test."
    store = store_for(fake)
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "a1")})
    failure(lambda: store_for(fake, token=WRONG_TOKEN).add({record(name)}, 300))
    assert "desec: PATCH" in caplog.text
    assert TOKEN not in caplog.text and WRONG_TOKEN not in caplog.text


def test_pagination_links_are_followed_by_cursor_only(fake: FakeDesec) -> None:
    """The token goes to our own base URL, never to a host a Link header names."""
    names = [f"_25._tcp.p{i}.dane.test." for i in range(5)]
    for n in names:
        fake.put(n, {record(n, "a1")}, 300)
    store = store_for(fake)
    real = store.api.session.request
    asked: list[str] = []

    def spy(method: str, url: str, **kwargs: object):  # type: ignore[no-untyped-def]
        asked.append(url)
        return real(method, url, **kwargs)  # type: ignore[arg-type]

    store.api.session.request = spy  # type: ignore[method-assign]
    views = store.list_many(names)
    assert all(v.records == {record(n, "a1")} for v, n in zip(views, names, strict=True))  # type: ignore[union-attr]
    assert all(url.startswith(fake.url) for url in asked)
    assert len([u for u in asked if u.endswith("/rrsets/")]) == 3


# Credentials and settings --------------------------------------------------------------


def test_token_from_the_renewal_conf(tmp_path: Path, fake: FakeDesec) -> None:
    """A lineage issued with -a dns-desec: the store and its INI come from the
    renewal configuration, and the INI's endpoint is used."""
    ini = write_ini(tmp_path / "desec.ini", token=TOKEN, endpoint=fake.url)
    config_dir = tmp_path / "config"
    (config_dir / "renewal").mkdir(parents=True)
    (config_dir / "renewal" / f"{NAME}.conf").write_text(
        "[renewalparams]\nauthenticator = dns-desec\n"
        f"dns_desec_credentials = {ini}\ninstaller = dane\n"
    )
    config = SimpleNamespace(config_dir=str(config_dir))
    settings = from_options({"tlsa": "311:25"}, config, NAME)
    assert (settings.store, settings.credentials) == ("desec", str(ini))
    store = stores.open_store(settings, str(config_dir), timeout=5)
    assert isinstance(store, DesecStore) and store.api.base_url == fake.url
    name = "_25._tcp.mail.dane.test."
    store.add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}


def test_dane_credentials_overrides_the_renewal_conf(tmp_path: Path, fake: FakeDesec) -> None:
    stale = write_ini(tmp_path / "stale.ini", token=WRONG_TOKEN)
    fresh = write_ini(tmp_path / "fresh.ini", token=TOKEN)
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-desec",
                             dns_desec_credentials=str(stale))
    options = {"tlsa": "311:25", "credentials": str(fresh), "api_url": fake.url}
    settings = from_options(options, config, NAME)
    assert (settings.store, settings.credentials) == ("desec", str(fresh))
    store = stores.open_store(settings, str(tmp_path), timeout=5)
    store.add({record("_25._tcp.mail.dane.test.", "a1")}, 300)
    assert {r.headers["Authorization"] for r in fake.requests} == {f"Token {TOKEN}"}


def test_explicit_store_with_credentials(tmp_path: Path, fake: FakeDesec) -> None:
    ini = write_ini(tmp_path / "desec.ini", token=TOKEN)
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="standalone")
    settings = from_options({"tlsa": "311:25", "dns": "desec", "credentials": str(ini)},
                            config, NAME)
    store = stores.open_store(settings, str(tmp_path))
    assert isinstance(store, DesecStore)
    assert store.api.base_url == DEFAULT_API_URL == "https://desec.io/api/v1"


def test_missing_token_names_the_key_and_file(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "desec.ini", endpoint="https://desec.io/api/v1")
    with pytest.raises(StoreConfigError) as info:
        DesecStore.from_settings(settings_for(ini), "/etc/letsencrypt")
    assert str(info.value) == (f"desec store: {ini} has no dns_desec_token; add the deSEC API "
                               "token as dns_desec_token = TOKEN")


def test_a_bad_endpoint_names_the_key(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "desec.ini", token=TOKEN, endpoint="desec.io")
    with pytest.raises(StoreConfigError, match=f"dns_desec_endpoint in {ini} is not an http"):
        DesecStore.from_settings(settings_for(ini), "/etc/letsencrypt")


def test_no_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="no credentials file; pass --dane-credentials"):
        DesecStore.from_settings(
            Settings(targets="311:25", directory="/x", store="desec"), "/etc/letsencrypt")
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-desec")
    with pytest.raises(Exception, match="desec store: no credentials file"):
        from_options({"tlsa": "311:25"}, config, NAME)


def test_world_readable_ini_gets_certbots_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini = write_ini(tmp_path / "desec.ini", mode=0o644, token=TOKEN)
    with caplog.at_level(logging.WARNING):
        DesecStore.from_settings(settings_for(ini), "/etc/letsencrypt")
    assert f"Unsafe permissions on credentials configuration file: {ini}" in caplog.text
    assert TOKEN not in caplog.text


def test_the_registry_row() -> None:
    spec = stores.STORE_SPECS["desec"]
    assert (spec.authenticator, spec.credentials_key) == ("dns-desec", "dns_desec_credentials")
    assert stores.store_class("desec") is desec.DesecStore
