"""The OVH store: the conformance suite and OVH specifics, on a loopback fake
driven through the official ``ovh`` client library."""
from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import ovh.exceptions
import pytest

from certbot_dane import dns as stores
from certbot_dane.dns.base import RecordStore, SoftStoreError, StoreConfigError, StoreError
from certbot_dane.dns.ovh import OvhStore
from certbot_dane.dns.webapi import MAX_RETRIES
from certbot_dane.settings import SettingsError, from_options
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, record
from tests.netfakes import closed_port, misbehaving_server
from tests.ovh_fake import APPLICATION_KEY, APPLICATION_SECRET, CONSUMER_KEY, FakeOvh

WRONG_SECRET = "wrongAppSecret0123456789abcdefZZ"
WRONG_CONSUMER = "wrongConsumerKey0123456789abcdefQQ"
SECRETS = (APPLICATION_SECRET, CONSUMER_KEY, WRONG_SECRET, WRONG_CONSUMER)
NAME = "mail.example.com"
#: what certbot-dns-ovh's docs ask for when the key is limited to one zone
ONE_ZONE = (("GET", "/domain/zone/dane.test/*"), ("POST", "/domain/zone/dane.test/*"),
            ("PUT", "/domain/zone/dane.test/*"), ("DELETE", "/domain/zone/dane.test/*"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy for loopback traffic, and no OVH settings from the environment."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "OVH_CLIENT_ID", "OVH_CLIENT_SECRET", "OVH_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeOvh]:
    with FakeOvh() as server:
        yield server


def no_sleep(seconds: float) -> None:
    """Retry waits cost no time in tests."""


def store_for(url: str, secret: str = APPLICATION_SECRET, consumer: str = CONSUMER_KEY,
              timeout: float = 5.0, sleep: Callable[[float], None] = no_sleep,
              app_key: str = APPLICATION_KEY) -> OvhStore:
    return OvhStore("ovh-eu", app_key, secret, consumer, timeout, api_url=url, sleep=sleep)


class OvhHarness(Harness):
    zone = "dane.test."

    def __init__(self, fake: FakeOvh, stack: ExitStack) -> None:
        self.fake = fake
        self.stack = stack
        self.secrets = SECRETS

    def store(self) -> RecordStore:
        return store_for(self.fake.url)

    def other_host(self) -> RecordStore:
        return store_for(self.fake.url)

    def backend_records(self, owner: str) -> set[Record]:
        """What the name servers serve: a change counts once the zone is refreshed."""
        return self.fake.served(owner)

    def backend_ttl(self, owner: str) -> int | None:
        return self.fake.served_ttl(owner)

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        url = self.fake.url
        yield "wrong application secret", store_for(url, secret=WRONG_SECRET), every
        yield "unknown consumer key", store_for(url, consumer=WRONG_CONSUMER), every
        yield "unknown application key", store_for(url, app_key="nosuchkey"), every
        down = f"http://127.0.0.1:{closed_port()}/1.0"
        yield "server down", store_for(down, timeout=1), every
        silent = self.stack.enter_context(misbehaving_server(None))
        yield "timeout", store_for(f"http://127.0.0.1:{silent}/1.0", timeout=0.5), every
        for kind in ("badjson", "500", "429"):
            broken = self.stack.enter_context(FakeOvh())
            broken.fail(kind, None, retry_after="0")
            yield f"server answers {kind}", store_for(broken.url), every
        reader = self.stack.enter_context(FakeOvh(rules=(("GET", "/*"),)))
        yield "no right to write", store_for(reader.url), ("add",)
        other = self.stack.enter_context(FakeOvh(zones=("elsewhere.test",)))
        yield "zone not in the account", store_for(other.url), every


@pytest.fixture
def harness(fake: FakeOvh) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield OvhHarness(fake, stack)


def write_ini(path: Path, mode: int = 0o600, **keys: str) -> Path:
    path.write_text("".join(f"dns_ovh_{k} = {v}\n" for k, v in keys.items()))
    path.chmod(mode)
    return path


def full_ini(path: Path, secret: str = APPLICATION_SECRET, consumer: str = CONSUMER_KEY,
             app_key: str = APPLICATION_KEY, endpoint: str = "ovh-eu") -> Path:
    return write_ini(path, endpoint=endpoint, application_key=app_key,
                     application_secret=secret, consumer_key=consumer)


def settings_for(ini: Path, url: str | None) -> Settings:
    return Settings(targets="311:25", directory="/nonexistent", store="ovh",
                    credentials=str(ini), api_url=url)


def opened(tmp_path: Path, url: str, **keys: str) -> tuple[OvhStore, Path]:
    """A store as certbot-dane builds it: from the INI, with --dane-api-url."""
    ini = full_ini(tmp_path / "ovh.ini", **keys)
    store = OvhStore.from_settings(settings_for(ini, url), "/etc/letsencrypt", timeout=5)
    store._sleep = no_sleep
    return store, ini


def failure(operation: Callable[[], object]) -> str:
    with pytest.raises(StoreError) as info:
        operation()
    message = str(info.value)
    assert "\n" not in message
    assert not [s for s in SECRETS if s in message]
    return message


# Records, refreshes -------------------------------------------------------------------


def test_a_change_is_served_only_after_one_refresh(fake: FakeOvh) -> None:
    name = "_25._tcp.refresh.dane.test."
    store = store_for(fake.url)
    store.add({record(name, "a1"), record(name, "b2")}, 300)
    assert fake.served(name) == {record(name, "a1"), record(name, "b2")}
    assert fake.refreshes["dane.test"] == 1
    posts = fake.seen("POST", "/record")
    assert [p.body for p in posts] == [
        {"fieldType": "TLSA", "subDomain": "_25._tcp.refresh",
         "target": f"3 1 1 {record(name, d).data}", "ttl": 300} for d in ("a1", "b2")]


def test_many_owners_are_one_refresh_per_zone() -> None:
    with FakeOvh(zones=("dane.test", "child.dane.test")) as fake:
        names = [f"_25._tcp.m{i}.dane.test." for i in range(4)] + [
            f"_25._tcp.m{i}.child.dane.test." for i in range(2)]
        store = store_for(fake.url)
        assert store.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 6
        assert fake.refreshes == {"dane.test": 1, "child.dane.test": 1}
        # one zone list, and per name one id listing and one creation
        assert len(fake.seen("GET", "/record")) == 6 and len(fake.seen("POST", "/record")) == 6
        assert len(fake.seen("GET", "/auth/time")) == 1
        assert len(fake.requests) == 1 + 1 + 6 + 6 + 2
        assert all(fake.served(n) == {record(n, "a1")} for n in names)
        fake.requests.clear()
        assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 6
        assert fake.refreshes == {"dane.test": 2, "child.dane.test": 2}
        assert all(fake.served(n) == set() for n in names)
        fake.requests.clear()
        for n in names[:4]:  # one by one: a refresh each
            store.add({record(n, "a1")}, 300)
        assert fake.refreshes["dane.test"] == 6


def test_nothing_to_change_means_no_refresh(fake: FakeOvh) -> None:
    name = "_25._tcp.idem.dane.test."
    store = store_for(fake.url)
    store.add({record(name, "a1")}, 300)
    fake.requests.clear()
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "ff")})
    assert not fake.seen("POST") and not fake.seen("DELETE")


def test_delete_removes_exactly_our_ids(fake: FakeOvh) -> None:
    name = "_25._tcp.exact.dane.test."
    theirs = record(name, "c3")
    their_id = fake.put(name, theirs)
    store = store_for(fake.url)
    store.add({record(name, "a1"), record(name, "b2")}, 300)
    fake.requests.clear()
    store.delete({record(name, "a1")})
    (delete,) = fake.seen("DELETE")
    assert str(their_id) not in delete.path
    assert fake.served(name) == {theirs, record(name, "b2")}


def test_retime_puts_the_ttl_in_place(fake: FakeOvh) -> None:
    name = "_25._tcp.ttl.dane.test."
    theirs = record(name, "c3")
    fake.put(name, theirs, 3600)
    store = store_for(fake.url)
    store.add({record(name, "a1")}, 3600)
    fake.requests.clear()
    store.retime({record(name, "a1")}, 300)
    (put,) = fake.seen("PUT")
    assert put.body == {"ttl": 300}
    assert not fake.seen("DELETE") and len(fake.seen("POST")) == 1  # the refresh
    assert store.list(name).ttl == 300
    assert fake.served(name) == {theirs, record(name, "a1")}


def test_ttl_zero_is_the_zones_default(fake: FakeOvh) -> None:
    name = "_25._tcp.default.dane.test."
    fake.put(name, record(name, "a1"), ttl=0)
    store = store_for(fake.url)
    assert store.list(name).ttl == 3600
    assert store.list(name).ttl == 3600
    assert len(fake.seen("GET", "/soa")) == 1


def test_a_failed_refresh_undoes_the_changes_for_the_next_check(fake: FakeOvh) -> None:
    """Records created but never served must not look published: they are
    deleted again, so that the next check creates and refreshes them."""
    name = "_25._tcp.undo.dane.test."
    store = store_for(fake.url)
    fake.fail("500", 1, path_part="/refresh")
    message = failure(lambda: store.add({record(name, "a1"), record(name, "b2")}, 300))
    assert message == (
        "ovh store: cannot publish the changes in zone dane.test (refresh): HTTP 500 from OVH; "
        "OVH has a problem, try again later; the changes were undone")
    assert fake.pending(name) == set() and fake.served(name) == set()
    store.add({record(name, "a1"), record(name, "b2")}, 300)
    assert fake.served(name) == {record(name, "a1"), record(name, "b2")}


def test_a_failed_refresh_after_a_delete_puts_the_record_back(fake: FakeOvh) -> None:
    name = "_25._tcp.back.dane.test."
    store = store_for(fake.url)
    store.add({record(name, "a1")}, 600)
    fake.fail("500", 1, path_part="/refresh")
    failure(lambda: store.delete({record(name, "a1")}))
    assert fake.pending(name) == {record(name, "a1")} == fake.served(name)
    assert store.list(name).ttl == 600
    store.delete({record(name, "a1")})
    assert fake.served(name) == set()


# Zones ------------------------------------------------------------------------


def test_nested_zones_the_longest_wins(fake: FakeOvh) -> None:
    fake.add_zone("child.dane.test")
    store = store_for(fake.url)
    store.add({record("_25._tcp.mail.child.dane.test.", "a1")}, 300)
    store.add({record("_25._tcp.mail.dane.test.", "b2")}, 300)
    assert [r["subDomain"] for r in fake.records["child.dane.test"].values()] == ["_25._tcp.mail"]
    assert [r["subDomain"] for r in fake.records["dane.test"].values()] == ["_25._tcp.mail"]
    assert len([r for r in fake.seen("GET") if r.path == "/1.0/domain/zone"]) == 1


def test_a_key_limited_to_one_zone_finds_it_without_listing_zones() -> None:
    with FakeOvh(rules=ONE_ZONE) as fake:
        name = "_25._tcp.mail.dane.test."
        store = store_for(fake.url)
        store.add({record(name, "a1")}, 300)
        assert fake.served(name) == {record(name, "a1")}
        probes = [r.path for r in fake.seen("GET", "/status")]
        assert probes == [f"/1.0/domain/zone/{z}/status" for z in (
            "_25._tcp.mail.dane.test", "_tcp.mail.dane.test", "mail.dane.test", "dane.test")]
        fake.requests.clear()
        store.add({record("_443._tcp.www.dane.test.", "b2")}, 300)
        assert not [r for r in fake.seen("GET") if r.path == "/1.0/domain/zone"]
        assert len(fake.seen("GET", "/status")) == 4  # a new name: its candidates only


def test_a_zone_outside_the_account_names_the_zones(tmp_path: Path, fake: FakeOvh) -> None:
    store, ini = opened(tmp_path, fake.url)
    name = "_25._tcp.mail.example.org."
    assert failure(lambda: store.add({record(name)}, 300)) == (
        f"ovh store: cannot add 1 TLSA record(s) at {name}: no DNS zone of this OVH account "
        f"contains it (the account has dane.test); use the keys of the account that holds the "
        f"zone in {ini}")


# Signing and the clock --------------------------------------------------------------


def test_requests_are_signed_against_the_servers_clock() -> None:
    """The server's clock is 20 minutes ahead: the library reads it once and
    signs with it, and every request passes the fake's signature check."""
    with FakeOvh(skew=1200) as fake:
        name = "_25._tcp.clock.dane.test."
        store = store_for(fake.url)
        store.add({record(name, "a1")}, 300)
        assert store.list(name).records == {record(name, "a1")}
        assert len(fake.seen("GET", "/auth/time")) == 1
        signed = [r for r in fake.requests if not r.path.endswith("/auth/time")]
        assert all(r.headers["X-Ovh-Signature"].startswith("$1$") for r in signed)
        assert all(r.headers["X-Ovh-Consumer"] == CONSUMER_KEY for r in signed)


def test_a_clock_jump_names_the_clock(tmp_path: Path, fake: FakeOvh) -> None:
    store, _ = opened(tmp_path, fake.url)
    name = "_25._tcp.jump.dane.test."
    store.list(name)
    fake.skew = 3600
    assert failure(lambda: store.list(name)) == (
        f"ovh store: cannot list TLSA records at {name}: Query out of time (HTTP 400, "
        "QUERY_TIME_OUT); check this host's clock")


# One line per failure: cause and fix, never a secret --------------------------------------


def test_wrong_secret_names_the_secret_key(tmp_path: Path, fake: FakeOvh) -> None:
    store, ini = opened(tmp_path, fake.url, secret=WRONG_SECRET)
    name = "_25._tcp.sig.dane.test."
    assert failure(lambda: store.list(name)) == (
        f"ovh store: cannot list TLSA records at {name}: Invalid signature (HTTP 400, "
        f"INVALID_SIGNATURE); check dns_ovh_application_secret in {ini}")


def test_unknown_application_key(tmp_path: Path, fake: FakeOvh) -> None:
    store, ini = opened(tmp_path, fake.url, app_key="nosuchkey")
    assert failure(lambda: store.list("_25._tcp.k.dane.test.")).endswith(
        f"Invalid application key (HTTP 403, INVALID_KEY); check dns_ovh_application_key in "
        f"{ini} (keys belong to one endpoint: check dns_ovh_endpoint too)")


@pytest.mark.parametrize(("expired", "said"), [
    (False, "This credential does not exist (HTTP 403, NOT_CREDENTIAL)"),
    (True, "This credential is not valid (HTTP 403, INVALID_CREDENTIAL)"),
])
def test_refused_consumer_key(tmp_path: Path, fake: FakeOvh, expired: bool, said: str) -> None:
    fake.expired = expired
    consumer = CONSUMER_KEY if expired else WRONG_CONSUMER
    store, ini = opened(tmp_path, fake.url, consumer=consumer)
    assert failure(lambda: store.add({record("_25._tcp.ck.dane.test.")}, 300)).endswith(
        f"{said}; the consumer key in dns_ovh_consumer_key of {ini} is unknown, expired or "
        "revoked: create a new one with GET, POST, PUT and DELETE on /domain/zone/*")


def test_a_call_not_granted_names_the_rights(tmp_path: Path) -> None:
    with FakeOvh(rules=(("GET", "/*"),)) as fake:
        store, ini = opened(tmp_path, fake.url)
        name = "_25._tcp.ro.dane.test."
        assert store.list(name).records == frozenset()
        assert failure(lambda: store.add({record(name)}, 300)) == (
            f"ovh store: cannot add 1 TLSA record(s) at {name}: This call has not been granted "
            f"(HTTP 403, NOT_GRANTED_CALL); the consumer key in dns_ovh_consumer_key of {ini} "
            "lacks this right: create one with GET, POST, PUT and DELETE on /domain/zone/*")


def test_server_down_names_the_endpoint_key(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{closed_port()}/1.0"
    ini = full_ini(tmp_path / "ovh.ini")
    store = OvhStore.from_settings(settings_for(ini, down), "/etc/letsencrypt", timeout=1)
    assert failure(lambda: store.list("_25._tcp.d.dane.test.")) == (
        "ovh store: cannot list TLSA records at _25._tcp.d.dane.test.: cannot connect to "
        f"{down}: Connection refused; check the network and --dane-api-url")


def test_timeout_is_one_line() -> None:
    with misbehaving_server(None) as port:
        url = f"http://127.0.0.1:{port}/1.0"
        store = store_for(url, timeout=0.3)
        assert failure(lambda: store.list("_25._tcp.t.dane.test.")).endswith(
            f"no answer from {url} within 0.3 s; check the network and --dane-api-url")


@pytest.mark.parametrize(("kind", "reason"), [
    ("500", "HTTP 500 from OVH; OVH has a problem, try again later"),
    ("badjson", "malformed answer: HTTP 200 without JSON"),
])
def test_server_failures_name_the_reason(fake: FakeOvh, kind: str, reason: str) -> None:
    store = store_for(fake.url)
    name = "_25._tcp.fail.dane.test."
    store.list(name)
    fake.fail(kind, None)
    assert failure(lambda: store.add({record(name)}, 300)) == (
        f"ovh store: cannot add 1 TLSA record(s) at {name}: {reason}")


def test_a_malformed_record_list_is_one_line(fake: FakeOvh) -> None:
    store = store_for(fake.url)
    name = "_25._tcp.bad.dane.test."
    fake.put(name, record(name, "a1"))
    next(iter(fake.records["dane.test"].values()))["target"] = "3 1 1 zz"
    assert failure(lambda: store.list(name)).endswith(
        "malformed answer: a TLSA record without usable id, subDomain, target and TTL")


def test_429_waits_retry_after_then_succeeds(fake: FakeOvh) -> None:
    waits: list[float] = []
    store = store_for(fake.url, sleep=waits.append)
    name = "_25._tcp.busy.dane.test."
    store.list(name)
    fake.requests.clear()
    fake.fail("429", 2, retry_after="7")
    assert store.list(name).records == frozenset()
    assert waits == [7.0, 7.0] and len(fake.requests) == 3


def test_429_gives_up_softly(fake: FakeOvh) -> None:
    waits: list[float] = []
    store = store_for(fake.url, sleep=waits.append)
    name = "_25._tcp.busy.dane.test."
    store.list(name)
    fake.requests.clear()
    fake.fail("429", None, retry_after="2")
    with pytest.raises(SoftStoreError, match=r"rate limited by OVH \(HTTP 429, retry after 2 s\);"
                       " the next check tries again"):
        store.add({record(name)}, 300)
    assert waits == [2.0] * MAX_RETRIES and len(fake.requests) == MAX_RETRIES + 1


def test_secrets_never_in_logs(fake: FakeOvh, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    name = "_25._tcp.secret.dane.test."
    store = store_for(fake.url)
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "a1")})
    failure(lambda: store_for(fake.url, secret=WRONG_SECRET).add({record(name)}, 300))
    assert "ovh: POST /domain/zone/dane.test/record" in caplog.text
    assert not [s for s in SECRETS if s in caplog.text]


# Credentials, endpoints, the package --------------------------------------------------


def test_keys_from_the_renewal_conf(tmp_path: Path, fake: FakeOvh) -> None:
    ini = full_ini(tmp_path / "ovh.ini")
    config_dir = tmp_path / "config"
    (config_dir / "renewal").mkdir(parents=True)
    (config_dir / "renewal" / f"{NAME}.conf").write_text(
        "[renewalparams]\nauthenticator = dns-ovh\n"
        f"dns_ovh_credentials = {ini}\ninstaller = dane\n")
    config = SimpleNamespace(config_dir=str(config_dir))
    settings = from_options({"tlsa": "311:25", "api_url": fake.url}, config, NAME)
    assert (settings.store, settings.credentials) == ("ovh", str(ini))
    store = stores.open_store(settings, str(config_dir), timeout=5)
    assert isinstance(store, OvhStore)
    name = "_25._tcp.mail.dane.test."
    store.add({record(name, "a1")}, 300)
    assert fake.served(name) == {record(name, "a1")}


def test_dane_credentials_overrides_the_renewal_conf(tmp_path: Path, fake: FakeOvh) -> None:
    stale = full_ini(tmp_path / "stale.ini", consumer=WRONG_CONSUMER)
    fresh = full_ini(tmp_path / "fresh.ini")
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-ovh",
                             dns_ovh_credentials=str(stale))
    settings = from_options({"tlsa": "311:25", "credentials": str(fresh), "api_url": fake.url},
                            config, NAME)
    assert settings.credentials == str(fresh)
    stores.open_store(settings, str(tmp_path), timeout=5).add(
        {record("_25._tcp.mail.dane.test.", "a1")}, 300)
    signed = [r for r in fake.requests if "X-Ovh-Consumer" in r.headers]
    assert signed and {r.headers["X-Ovh-Consumer"] for r in signed} == {CONSUMER_KEY}


@pytest.mark.parametrize(("endpoint", "url"), [
    ("ovh-eu", "https://eu.api.ovh.com/1.0"),
    ("ovh-ca", "https://ca.api.ovh.com/1.0"),
    ("ovh-us", "https://api.us.ovhcloud.com/1.0"),
])
def test_the_endpoint_key_picks_the_api(tmp_path: Path, endpoint: str, url: str) -> None:
    ini = full_ini(tmp_path / "ovh.ini", endpoint=endpoint)
    store = OvhStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    assert store.base_url == url


def test_an_unknown_endpoint_names_the_known_ones(tmp_path: Path) -> None:
    ini = full_ini(tmp_path / "ovh.ini", endpoint="ovh-mars")
    with pytest.raises(StoreConfigError) as info:
        OvhStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    message = str(info.value)
    assert message.startswith(f"ovh store: dns_ovh_endpoint 'ovh-mars' in {ini} is not an OVH "
                              "API; use one of ")
    assert "ovh-ca" in message and "ovh-eu" in message


def test_missing_keys_are_named(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "ovh.ini", endpoint="ovh-eu", application_key=APPLICATION_KEY)
    with pytest.raises(StoreConfigError) as info:
        OvhStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    assert str(info.value).startswith(
        f"ovh store: {ini} has no dns_ovh_application_secret or dns_ovh_consumer_key; add ")


def test_no_credentials_file(tmp_path: Path) -> None:
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-ovh")
    with pytest.raises(SettingsError, match="^ovh store: no credentials file; pass "
                       "--dane-credentials PATH"):
        from_options({"tlsa": "311:25"}, config, NAME)


@pytest.mark.skipif(not hasattr(ovh.exceptions, "InvalidConfiguration"),
                    reason="this ovh package predates OAuth2 (1.1)")
def test_oauth2_settings_in_the_environment_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVH_CLIENT_ID", "some-client")
    monkeypatch.setenv("OVH_CLIENT_SECRET", "some-client-secret")
    ini = full_ini(tmp_path / "ovh.ini")
    with pytest.raises(StoreConfigError, match="OVH_CLIENT_ID/OVH_CLIENT_SECRET in the "
                       "environment .* conflict with the application key of"):
        OvhStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")


def test_world_readable_ini_gets_certbots_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini = full_ini(tmp_path / "ovh.ini")
    ini.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        OvhStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    assert f"Unsafe permissions on credentials configuration file: {ini}" in caplog.text


def test_without_the_ovh_package_one_line_names_pip_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ovh", None)  # import ovh now fails
    monkeypatch.delitem(sys.modules, "certbot_dane.dns.ovh", raising=False)
    with pytest.raises(StoreConfigError) as info:
        stores.store_class("ovh")
    assert str(info.value) == (
        "ovh store: the Python package 'ovh' is not installed; install it into certbot's "
        "environment (pip install ovh)")
    monkeypatch.undo()
    importlib.import_module("certbot_dane.dns.ovh")


def test_the_registry_row() -> None:
    spec = stores.STORE_SPECS["ovh"]
    assert (spec.authenticator, spec.credentials_key, spec.package) == (
        "dns-ovh", "dns_ovh_credentials", "ovh")
    assert stores.store_class("ovh") is OvhStore
