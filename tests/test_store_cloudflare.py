"""The Cloudflare store: the conformance suite and Cloudflare specifics, on a loopback fake."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest

from certbot_dane import dns as stores
from certbot_dane.dns import cloudflare
from certbot_dane.dns.base import RecordStore, SoftStoreError, StoreConfigError, StoreError
from certbot_dane.dns.cloudflare import DEFAULT_API_URL, MAX_RETRIES, CloudflareStore
from certbot_dane.settings import from_options
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.cloudflare_fake import FakeCloudflare
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, record
from tests.netfakes import closed_port, misbehaving_server

TOKEN = "fake-token-0123456789abcdef"
WRONG_TOKEN = "wrong-token-fedcba9876543210"
EMAIL = "owner@example.com"
GLOBAL_KEY = "0123456789abcdef0123456789abcdef01234"
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
def fake() -> Iterator[FakeCloudflare]:
    with FakeCloudflare(token=TOKEN) as server:
        yield server


def no_sleep(seconds: float) -> None:
    """Retry waits cost no time in tests."""


class CloudflareHarness(Harness):
    zone = "dane.test."

    def __init__(self, fake: FakeCloudflare, stack: ExitStack) -> None:
        self.fake = fake
        self.stack = stack
        self.secrets = (TOKEN, WRONG_TOKEN)

    def _store(self, url: str, token: str = TOKEN, timeout: float = 5.0) -> CloudflareStore:
        return CloudflareStore(api_token=token, api_url=url, timeout=timeout, sleep=no_sleep)

    def store(self) -> RecordStore:
        return self._store(self.fake.url)

    def other_host(self) -> RecordStore:
        return self._store(self.fake.url)

    def backend_records(self, owner: str) -> set[Record]:
        return self.fake.tlsa(owner)

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        yield "auth refused", self._store(self.fake.url, WRONG_TOKEN), every
        down = f"http://127.0.0.1:{closed_port()}/client/v4"
        yield "server down", self._store(down, timeout=1), every
        silent = self.stack.enter_context(misbehaving_server(None))
        yield "timeout", self._store(f"http://127.0.0.1:{silent}/client/v4", timeout=0.5), every
        for kind in ("badjson", "500", "429"):
            broken = self.stack.enter_context(FakeCloudflare(token=TOKEN))
            broken.fail(kind, None, retry_after="0")
            yield f"server answers {kind}", self._store(broken.url), every


@pytest.fixture
def harness(fake: FakeCloudflare) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield CloudflareHarness(fake, stack)


def store_for(
    fake: FakeCloudflare, sleep: Callable[[float], None] = no_sleep
) -> CloudflareStore:
    return CloudflareStore(api_token=TOKEN, api_url=fake.url, timeout=5.0, sleep=sleep)


def write_ini(path: Path, mode: int = 0o600, **keys: str) -> Path:
    path.write_text("".join(f"dns_cloudflare_{k} = {v}\n" for k, v in keys.items()))
    path.chmod(mode)
    return path


def settings_for(ini: Path, url: str | None) -> Settings:
    return Settings(targets="311:25", directory="/nonexistent", store="cloudflare",
                    credentials=str(ini), api_url=url)


# Records --------------------------------------------------------------------


def test_list_follows_every_page(fake: FakeCloudflare) -> None:
    assert fake.max_per_page == 2
    name = f"_25._tcp.paged.{fake.zones[0]}."
    mine = {record(name, f"{i}a") for i in range(5)}
    store = store_for(fake)
    store.add(mine, 300)
    fake.requests.clear()
    assert store.list(name).records == mine
    pages = fake.seen("GET", "/dns_records")
    assert [r.query["page"] for r in pages] == ["1", "2", "3"]
    assert all(r.query["type"] == "TLSA" and r.query["name"] == name[:-1] for r in pages)


def test_add_sends_structured_data_without_trailing_dot(fake: FakeCloudflare) -> None:
    name = f"_25._tcp.shape.{fake.zones[0]}."
    rec = record(name, "ab")
    store_for(fake).add({rec}, 3600)
    (post,) = fake.seen("POST")
    assert post.body == {
        "type": "TLSA",
        "name": name[:-1],
        "ttl": 3600,
        "data": {"usage": 3, "selector": 1, "matching_type": 1, "certificate": rec.data},
    }
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert store_for(fake).list(name).ttl == 3600


def test_present_and_absent_records_make_no_write(fake: FakeCloudflare) -> None:
    name = f"_25._tcp.idem.{fake.zones[0]}."
    store = store_for(fake)
    store.add({record(name, "a1")}, 300)
    fake.requests.clear()
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "ff")})
    assert not fake.seen("POST") and not fake.seen("DELETE")


def test_delete_removes_exactly_the_matching_ids(fake: FakeCloudflare) -> None:
    name = f"_25._tcp.exact.{fake.zones[0]}."
    theirs = record(name, "c3")
    their_id = fake.put("dane.test", name, theirs)
    store = store_for(fake)
    store.add({record(name, "a1"), record(name, "b2")}, 300)
    fake.requests.clear()
    store.delete({record(name, "a1")})
    (delete,) = fake.seen("DELETE")
    assert their_id not in delete.path
    assert fake.tlsa(name) == {theirs, record(name, "b2")}


def test_identical_record_created_meanwhile_is_no_error(
    fake: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host may create the same record between our list and our create."""
    name = f"_25._tcp.race.{fake.zones[0]}."
    rec = record(name, "d4")
    fake.put("dane.test", name, rec)
    store = store_for(fake)
    monkeypatch.setattr(store, "_entries", lambda owner, what: [])
    store.add({rec}, 300)
    assert fake.seen("POST")
    assert fake.tlsa(name) == {rec}


# Many lineages at once: one listing and one batch per zone ---------------------


def test_many_items_are_one_listing_and_one_batch(fake: FakeCloudflare) -> None:
    names = [f"_25._tcp.b{i}.{fake.zones[0]}." for i in range(5)]
    theirs = record(names[0], "c3")
    fake.put("dane.test", names[0], theirs)
    kept = record(names[1], "a1")
    fake.put("dane.test", names[1], kept)  # already there: not posted again
    for i in range(3):  # elsewhere in the zone: five records, three pages of two
        fake.put("dane.test", f"_443._tcp.w{i}.{fake.zones[0]}.", record(names[0], "e5"))
    store = store_for(fake)
    fake.requests.clear()
    items = [({record(n, "a1"), record(n, "b2")}, 300) for n in names]
    assert store.add_many(items) == [None] * 5
    (batch,) = fake.seen("POST")
    assert batch.path.endswith("/dns_records/batch")
    assert len(batch.body["posts"]) == 9 and batch.body["deletes"] == []
    listings = fake.seen("GET", "/dns_records")
    assert all("name" not in r.query for r in listings)  # the zone's TLSA, all pages
    assert [r.query["page"] for r in listings] == ["1", "2", "3"]
    for n in names:
        expected = {record(n, "a1"), record(n, "b2")} | ({theirs} if n == names[0] else set())
        assert fake.tlsa(n) == expected
    fake.requests.clear()
    assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 5
    (batch,) = fake.seen("POST")
    assert len(batch.body["deletes"]) == 5 and batch.body["posts"] == []
    assert not fake.seen("DELETE")
    assert fake.tlsa(names[0]) == {theirs, record(names[0], "b2")}


def test_a_failed_batch_is_done_again_one_record_at_a_time(
    fake: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record another host created between the listing and the batch fails
    the whole batch; each item is then settled on its own."""
    names = [f"_25._tcp.raced{i}.{fake.zones[0]}." for i in range(3)]
    store = store_for(fake)
    real = store._zone_entries

    def stale(zone: str):  # type: ignore[no-untyped-def]
        listed = real(zone)
        fake.put("dane.test", names[1], record(names[1], "a1"))
        return listed

    monkeypatch.setattr(store, "_zone_entries", stale)
    assert store.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 3
    assert [r.path.endswith("/batch") for r in fake.seen("POST")] == [True, False, False]
    assert all(fake.tlsa(n) == {record(n, "a1")} for n in names)


def test_without_the_batch_endpoint_records_go_one_by_one() -> None:
    with FakeCloudflare(token=TOKEN, batch=False) as fake:
        names = [f"_25._tcp.old{i}.{fake.zones[0]}." for i in range(3)]
        store = store_for(fake)
        assert store.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 3
        assert all(fake.tlsa(n) == {record(n, "a1")} for n in names)
        assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 3
        assert all(fake.tlsa(n) == set() for n in names)


def test_batches_hold_at_most_the_change_limit(
    fake: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloudflare, "BATCH_CHANGES", 2)
    fake.max_batch = 2
    names = [f"_25._tcp.lim{i}.{fake.zones[0]}." for i in range(5)]
    assert store_for(fake).add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 5
    assert [len(r.body["posts"]) for r in fake.seen("POST")] == [2, 2, 1]
    assert all(fake.tlsa(n) == {record(n, "a1")} for n in names)


def test_an_item_without_a_zone_fails_alone(fake: FakeCloudflare) -> None:
    inside = f"_25._tcp.in.{fake.zones[0]}."
    errors = store_for(fake).add_many(
        [({record("_25._tcp.mail.elsewhere.example.", "a1")}, 300), ({record(inside, "a1")}, 300)]
    )
    assert isinstance(errors[0], StoreError) and "no Cloudflare zone" in str(errors[0])
    assert errors[1] is None and fake.tlsa(inside) == {record(inside, "a1")}


def test_automatic_ttl_is_reported_as_300(fake: FakeCloudflare) -> None:
    name = f"_25._tcp.auto.{fake.zones[0]}."
    fake.put("dane.test", name, record(name, "e5"), ttl=1)
    assert store_for(fake).list(name).ttl == 300


def test_upper_case_hex_from_the_api_is_lowered(fake: FakeCloudflare) -> None:
    name = f"_25._tcp.upper.{fake.zones[0]}."
    rec = record(name, "ab")
    fake.put("dane.test", name, Record(rec.owner, 3, 1, 1, rec.data.upper()))
    assert store_for(fake).list(name).records == {rec}


# Zones ----------------------------------------------------------------------


def test_zone_of_a_deep_owner_is_found_walking_up_and_cached(fake: FakeCloudflare) -> None:
    store = store_for(fake)
    name = "_25._tcp.a.b.c.host.dane.test."
    store.list(name)
    asked = [r.query["name"] for r in fake.seen("GET", "/zones") if r.path.endswith("/zones")]
    assert asked == [
        "_tcp.a.b.c.host.dane.test",
        "a.b.c.host.dane.test",
        "b.c.host.dane.test",
        "c.host.dane.test",
        "host.dane.test",
        "dane.test",
    ]
    fake.requests.clear()
    store.list("_443._tcp.a.b.c.host.dane.test.")
    assert not [r for r in fake.seen("GET") if r.path.endswith("/zones")]


def test_nested_zones_the_child_wins() -> None:
    with FakeCloudflare(zones=("dane.test", "child.dane.test"), token=TOKEN) as fake:
        store = store_for(fake)
        deep, shallow = "_25._tcp.mail.child.dane.test.", "_25._tcp.mail.dane.test."
        store.add({record(deep, "a1")}, 300)
        store.add({record(shallow, "b2")}, 300)
        child, parent = fake.zone_ids["child.dane.test"], fake.zone_ids["dane.test"]
        assert [r["name"] for r in fake.records[child].values()] == [deep[:-1]]
        assert [r["name"] for r in fake.records[parent].values()] == [shallow[:-1]]


def test_no_zone_is_one_clear_error(fake: FakeCloudflare) -> None:
    with pytest.raises(StoreError, match=r"^cloudflare store: cannot list TLSA records at "
                       r"_25\._tcp\.mail\.example\.org\.: no Cloudflare zone"):
        store_for(fake).list("_25._tcp.mail.example.org.")


# Rate limits and errors -------------------------------------------------------


def test_429_waits_retry_after_then_succeeds(fake: FakeCloudflare) -> None:
    waits: list[float] = []
    store = store_for(fake, sleep=waits.append)
    name = f"_25._tcp.busy.{fake.zones[0]}."
    store.list(name)  # the zone is now cached: one request per list
    fake.requests.clear()
    fake.fail("429", 2, retry_after="7")
    assert store.list(name).records == frozenset()
    assert waits == [7.0, 7.0]
    assert len(fake.requests) == 3


RATE_LIMIT = (
    "the next check retries (Cloudflare allows 1200 API requests per five minutes per user, "
    "shared by every tool using the account)"
)


def test_429_beyond_the_retry_budget_is_a_soft_error(fake: FakeCloudflare) -> None:
    waits: list[float] = []
    store = store_for(fake, sleep=waits.append)
    name = f"_25._tcp.busy.{fake.zones[0]}."
    store.list(name)
    fake.requests.clear()
    fake.fail("429", None, retry_after="2")
    error = failure(lambda: store.list(name))
    assert isinstance(error, SoftStoreError)
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {name}: Cloudflare answered 429 Too "
        f"Many Requests and still did after {MAX_RETRIES} retries; {RATE_LIMIT}"
    )
    assert len(fake.requests) == MAX_RETRIES + 1 and waits == [2.0] * MAX_RETRIES


def test_429_asking_for_a_long_wait_is_a_soft_error_at_once(fake: FakeCloudflare) -> None:
    waits: list[float] = []
    fake.fail("429", 1, retry_after="3600")
    name = f"_25._tcp.x.{fake.zones[0]}."
    error = failure(lambda: store_for(fake, sleep=waits.append).list(name))
    assert isinstance(error, SoftStoreError)
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {name}: Cloudflare answered 429 Too "
        f"Many Requests and asks to wait 3600 s, longer than the 30 s a run waits; {RATE_LIMIT}"
    )
    assert waits == []


def test_after_a_429_beyond_the_budget_the_run_sends_nothing_more(fake: FakeCloudflare) -> None:
    """The limit is the account's: more requests would only extend it."""
    names = [f"_25._tcp.r{i}.{fake.zones[0]}." for i in range(3)]
    store = store_for(fake)
    store.list(names[0])  # the zone is known: the next request is the zone's listing
    fake.requests.clear()
    fake.fail("429", None, retry_after="0")
    errors = store.add_many([({record(n, "a1")}, 300) for n in names])
    assert all(isinstance(e, SoftStoreError) for e in errors)
    assert len(fake.requests) == MAX_RETRIES + 1
    why = (
        f"Cloudflare answered 429 Too Many Requests and still did after {MAX_RETRIES} "
        f"retries; {RATE_LIMIT}"
    )
    assert [str(e) for e in errors] == [
        f"cloudflare store: cannot list the TLSA records of zone dane.test: {why}",
        f"cloudflare store: cannot change TLSA records at {names[1]}: {why}",
        f"cloudflare store: cannot change TLSA records at {names[2]}: {why}",
    ]


def test_429_on_a_batch_fails_its_items_softly_without_one_by_one(fake: FakeCloudflare) -> None:
    names = [f"_25._tcp.r{i}.{fake.zones[0]}." for i in range(3)]
    store = store_for(fake)
    for name in names:
        store.list(name)  # every zone lookup is done
    real = store._zone_entries

    def then_limited(zone: str):  # type: ignore[no-untyped-def]
        found = real(zone)
        fake.fail("429", None, retry_after="0")
        return found

    store._zone_entries = then_limited  # type: ignore[method-assign]
    fake.requests.clear()
    errors = store.add_many([({record(n, "a1")}, 300) for n in names])
    assert [str(e) for e in errors] == [
        "cloudflare store: cannot change TLSA records in zone dane.test: Cloudflare answered "
        f"429 Too Many Requests and still did after {MAX_RETRIES} retries; {RATE_LIMIT}"
    ] * 3
    assert all(isinstance(e, SoftStoreError) for e in errors)
    assert [r.path.endswith("/batch") for r in fake.seen("POST")] == [True] * (MAX_RETRIES + 1)
    assert fake.tlsa(names[0]) == set()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("500", r"Internal error \(HTTP 500, code 10001\)"), ("badjson", "malformed answer")],
)
def test_server_failures_name_the_operation_and_reason(
    fake: FakeCloudflare, kind: str, reason: str
) -> None:
    name = f"_25._tcp.fail.{fake.zones[0]}."
    fake.fail(kind, None)
    with pytest.raises(StoreError, match=rf"^cloudflare store: cannot add TLSA records at "
                       rf"{name.replace('.', '[.]')}: {reason}"):
        store_for(fake).add({record(name)}, 300)


def test_network_failures_name_the_reason() -> None:
    down = CloudflareStore(api_token=TOKEN, api_url=f"http://127.0.0.1:{closed_port()}", timeout=1)
    with pytest.raises(StoreError, match="Connection refused"):
        down.list("_25._tcp.mail.dane.test.")
    with misbehaving_server(None) as port:
        silent = CloudflareStore(api_token=TOKEN, api_url=f"http://127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(StoreError, match=r"no answer from the API within 0\.3 s"):
            silent.list("_25._tcp.mail.dane.test.")


def test_secrets_never_in_messages_or_logs(
    fake: FakeCloudflare, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = f"_25._tcp.secret.{fake.zones[0]}."
    store = store_for(fake)
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "a1")})
    wrong = CloudflareStore(api_token=WRONG_TOKEN, api_url=fake.url, timeout=5)
    messages = [str(failure(lambda: wrong.list(name), WRONG_TOKEN))]
    messages.append(str(failure(lambda: wrong.add({record(name)}, 300), WRONG_TOKEN)))
    assert messages[0] == (
        f"cloudflare store: cannot list TLSA records at {name}: Cloudflare refused the API "
        "token (HTTP 403, code 9109: Invalid access token): it is mistyped, revoked or "
        "expired; put a valid token with the Zone:DNS:Edit permission in the store's api_token"
    )
    keyed = CloudflareStore(email=EMAIL, api_key=GLOBAL_KEY, api_url=fake.url, timeout=5)
    messages.append(str(failure(lambda: keyed.list(name), GLOBAL_KEY)))
    assert "code 9103: Unknown X-Auth-Key or X-Auth-Email" in messages[-1]
    for secret in (TOKEN, WRONG_TOKEN, GLOBAL_KEY):
        assert secret not in caplog.text
        assert all(secret not in m for m in messages)


# Refused credentials and permissions: one line naming the cause and the fix ----


def failure(operation: Callable[[], object], *secrets: str) -> StoreError:
    """The StoreError ``operation`` raises, checked to be one line without a secret."""
    with pytest.raises(StoreError) as info:
        operation()
    message = str(info.value)
    assert "\n" not in message and message.startswith("cloudflare store: cannot "), message
    for secret in (TOKEN, WRONG_TOKEN, GLOBAL_KEY, *secrets):
        assert secret not in message
    return info.value


def ini_store(fake: FakeCloudflare, ini: Path) -> CloudflareStore:
    return CloudflareStore.from_settings(settings_for(ini, fake.url), "/etc/letsencrypt", 5)


MX = "_25._tcp.mx.dane.test."


def test_unknown_token_names_the_file_and_key(fake: FakeCloudflare, tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "cf.ini", api_token=WRONG_TOKEN)
    error = failure(lambda: ini_store(fake, ini).list(MX))
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {MX}: Cloudflare refused the API token "
        "(HTTP 403, code 9109: Invalid access token): it is mistyped, revoked or expired; put "
        f"a valid token with the Zone:DNS:Edit permission in dns_cloudflare_api_token in {ini}"
    )


def test_token_of_the_wrong_form(fake: FakeCloudflare, tmp_path: Path) -> None:
    cut = "fake-token-0123 456789"
    ini = write_ini(tmp_path / "cf.ini", api_token=cut)
    error = failure(lambda: ini_store(fake, ini).list(MX), cut)
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {MX}: Cloudflare refused the API token "
        "(HTTP 400, code 6003: Invalid request headers; 6111: Invalid format for Authorization "
        "header): it is not a whole API token (cut short, or copied with spaces or quotes); put "
        f"a valid token with the Zone:DNS:Edit permission in dns_cloudflare_api_token in {ini}"
    )


@pytest.mark.parametrize("status", ["401", "403"])
def test_authentication_error_on_the_zone_lookup(
    fake: FakeCloudflare, tmp_path: Path, status: str
) -> None:
    """Code 10000 before any zone is known: the token itself is not accepted."""
    ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
    fake.fail(status, None)
    error = failure(lambda: ini_store(fake, ini).list(MX))
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {MX}: Cloudflare refused the API token "
        f"(HTTP {status}, code 10000: Authentication error): it is mistyped, revoked or "
        "expired; put a valid token with the Zone:DNS:Edit permission in "
        f"dns_cloudflare_api_token in {ini}"
    )


@pytest.mark.parametrize("operation", ["add", "delete", "retime"])
def test_token_that_may_only_read(tmp_path: Path, operation: str) -> None:
    with FakeCloudflare(token=TOKEN, token_dns="read") as fake:
        ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
        store = ini_store(fake, ini)
        rec = record(MX, "a1")
        fake.put("dane.test", MX, rec)
        assert store.list(MX).records == {rec}, "reading is allowed"
        act = {
            "add": lambda: store.add({record(MX, "b2")}, 300),
            "delete": lambda: store.delete({rec}),
            "retime": lambda: store.retime({rec}, 600),
        }[operation]
        error = failure(act)
        assert fake.tlsa(MX) == {rec}
    what = {"add": "add", "delete": "delete", "retime": "change the TTL of"}[operation]
    assert str(error) == (
        f"cloudflare store: cannot {what} TLSA records at {MX}: the API token may not change "
        "the DNS records of zone dane.test (HTTP 403, code 10000: Authentication error); give "
        "it the Zone:DNS:Edit permission on dane.test, not only Zone:DNS:Read "
        f"(dns_cloudflare_api_token in {ini})"
    )


def test_token_without_a_dns_permission(tmp_path: Path) -> None:
    with FakeCloudflare(token=TOKEN, token_dns=None) as fake:
        ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
        error = failure(lambda: ini_store(fake, ini).add({record(MX)}, 300))
    assert str(error) == (
        f"cloudflare store: cannot add TLSA records at {MX}: the API token may not read the "
        "DNS records of zone dane.test (HTTP 403, code 10000: Authentication error); give it "
        f"the Zone:DNS:Edit permission on dane.test (dns_cloudflare_api_token in {ini})"
    )


def test_token_scoped_to_another_zone(tmp_path: Path) -> None:
    """A token limited to other zones sees an empty zone listing, not an error."""
    with FakeCloudflare(zones=("dane.test", "other.test"), token=TOKEN,
                        token_zones=("other.test",)) as fake:
        ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
        error = failure(lambda: ini_store(fake, ini).add({record(MX)}, 300))
        assert not fake.seen("POST")
    assert str(error) == (
        f"cloudflare store: cannot add TLSA records at {MX}: no Cloudflare zone for it is "
        "visible to the API token (tried _tcp.mx.dane.test, mx.dane.test, dane.test, test); "
        "give the token Zone:DNS:Edit with the zone among its Zone Resources, or add the zone "
        f"to the token's account (dns_cloudflare_api_token in {ini})"
    )


def test_global_key_with_the_wrong_email(tmp_path: Path) -> None:
    with FakeCloudflare(token=None, email=EMAIL, api_key=GLOBAL_KEY) as fake:
        ini = write_ini(tmp_path / "cf.ini", email="other@example.com", api_key=GLOBAL_KEY)
        error = failure(lambda: ini_store(fake, ini).list(MX))
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {MX}: Cloudflare refused the email and "
        "Global API Key (HTTP 403, code 9103: Unknown X-Auth-Key or X-Auth-Email): the email "
        "must be the Cloudflare account's login and the key its Global API Key; fix "
        f"dns_cloudflare_email and dns_cloudflare_api_key in {ini}"
    )


def test_a_token_given_as_the_global_key(tmp_path: Path) -> None:
    with FakeCloudflare(token=TOKEN, email=EMAIL, api_key=GLOBAL_KEY) as fake:
        ini = write_ini(tmp_path / "cf.ini", email=EMAIL, api_key=TOKEN)
        error = failure(lambda: ini_store(fake, ini).list(MX))
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {MX}: Cloudflare refused the email and "
        "Global API Key (HTTP 400, code 6003: Invalid request headers; 6103: Invalid format for "
        "X-Auth-Key header): dns_cloudflare_api_key is not a Global API Key (37 hexadecimal "
        "digits); an API token belongs in dns_cloudflare_api_token, without "
        f"dns_cloudflare_email (dns_cloudflare_email and dns_cloudflare_api_key in {ini})"
    )


def test_global_key_account_without_the_zone(tmp_path: Path) -> None:
    with FakeCloudflare(zones=("other.test",), token=None, email=EMAIL,
                        api_key=GLOBAL_KEY) as fake:
        ini = write_ini(tmp_path / "cf.ini", email=EMAIL, api_key=GLOBAL_KEY)
        error = failure(lambda: ini_store(fake, ini).list(MX))
    assert str(error) == (
        f"cloudflare store: cannot list TLSA records at {MX}: no Cloudflare zone for it is in "
        f"the account of dns_cloudflare_email and dns_cloudflare_api_key in {ini} (tried "
        "_tcp.mx.dane.test, mx.dane.test, dane.test, test); add the zone to that account, or "
        "use the credentials of the account that has it"
    )


def test_global_key_account_refused_on_the_zone(tmp_path: Path) -> None:
    with FakeCloudflare(token=None, email=EMAIL, api_key=GLOBAL_KEY) as fake:
        ini = write_ini(tmp_path / "cf.ini", email=EMAIL, api_key=GLOBAL_KEY)
        store = ini_store(fake, ini)
        store.list(MX)  # the zone is known
        fake.fail("403", None)
        error = failure(lambda: store.add({record(MX)}, 300))
    assert str(error) == (
        f"cloudflare store: cannot add TLSA records at {MX}: the Cloudflare account of "
        f"dns_cloudflare_email and dns_cloudflare_api_key in {ini} may not read the DNS "
        "records of zone dane.test (HTTP 403, code 10000: Authentication error); use the "
        "credentials of an account that manages dane.test"
    )


# Credentials ----------------------------------------------------------------


def test_email_and_global_key(tmp_path: Path) -> None:
    with FakeCloudflare(token=None, email=EMAIL, api_key=GLOBAL_KEY) as fake:
        ini = write_ini(tmp_path / "cf.ini", email=EMAIL, api_key=GLOBAL_KEY)
        store = CloudflareStore.from_settings(
            settings_for(ini, fake.url), "/etc/letsencrypt", timeout=5
        )
        name = f"_25._tcp.keyed.{fake.zones[0]}."
        store.add({record(name, "a1")}, 300)
        assert store.list(name).records == {record(name, "a1")}
        for seen in fake.requests:
            assert seen.headers["X-Auth-Email"] == EMAIL
            assert seen.headers["X-Auth-Key"] == GLOBAL_KEY
            assert "Authorization" not in seen.headers


def test_api_token_from_the_ini(tmp_path: Path, fake: FakeCloudflare) -> None:
    ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
    store = CloudflareStore.from_settings(
        settings_for(ini, fake.url), "/etc/letsencrypt", timeout=5
    )
    name = f"_25._tcp.token.{fake.zones[0]}."
    store.add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"api_token": TOKEN, "email": EMAIL, "api_key": GLOBAL_KEY}, "sets both"),
        ({"api_token": TOKEN, "api_key": GLOBAL_KEY}, "sets both"),
        ({}, "has neither"),
        ({"email": EMAIL}, "has neither"),
        ({"api_key": GLOBAL_KEY}, "has neither"),
    ],
)
def test_both_or_neither_credentials(
    tmp_path: Path, keys: dict[str, str], expected: str
) -> None:
    ini = write_ini(tmp_path / "cf.ini", **keys)
    with pytest.raises(StoreConfigError) as info:
        CloudflareStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    message = str(info.value)
    assert message.startswith(f"cloudflare store: {ini} {expected}")
    assert "dns_cloudflare_api_token" in message and "dns_cloudflare_email" in message
    assert "\n" not in message
    assert TOKEN not in message and GLOBAL_KEY not in message


def test_missing_or_unreadable_credentials(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="no credentials file"):
        CloudflareStore.from_settings(
            Settings(targets="311:25", directory="/x", store="cloudflare"), "/etc/letsencrypt"
        )
    with pytest.raises(StoreConfigError, match="^cloudflare store: "):
        CloudflareStore.from_settings(
            settings_for(tmp_path / "absent.ini", None), "/etc/letsencrypt"
        )


def test_world_readable_ini_gets_certbots_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini = write_ini(tmp_path / "cf.ini", mode=0o644, api_token=TOKEN)
    with caplog.at_level(logging.WARNING):
        CloudflareStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    assert f"Unsafe permissions on credentials configuration file: {ini}" in caplog.text
    assert TOKEN not in caplog.text


def test_default_api_url(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
    store = CloudflareStore.from_settings(settings_for(ini, None), "/etc/letsencrypt")
    assert store.api.base_url == DEFAULT_API_URL == "https://api.cloudflare.com/client/v4"


# Settings -------------------------------------------------------------------


def test_from_options_with_explicit_store(tmp_path: Path, fake: FakeCloudflare) -> None:
    ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
    (tmp_path / "config").mkdir()
    config = SimpleNamespace(config_dir=str(tmp_path / "config"), authenticator="standalone")
    options = {"tlsa": "311:25", "dns": "cloudflare", "credentials": str(ini),
               "api_url": fake.url}
    settings = from_options(options, config, NAME)
    assert (settings.store, settings.credentials, settings.api_url) == (
        "cloudflare", str(ini), fake.url)
    store = stores.open_store(settings, "/etc/letsencrypt", timeout=5)
    assert isinstance(store, CloudflareStore)
    name = "_25._tcp.mail.dane.test."
    store.add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}


def test_store_inferred_from_the_dns_cloudflare_authenticator(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "cf.ini", api_token=TOKEN)
    (tmp_path / "config").mkdir()
    config = SimpleNamespace(config_dir=str(tmp_path / "config"),
                             authenticator="dns-cloudflare", dns_cloudflare_credentials=str(ini))
    settings = from_options({"tlsa": "311:25"}, config, NAME)
    assert (settings.store, settings.credentials, settings.api_url) == (
        "cloudflare", str(ini), None)
    assert isinstance(stores.open_store(settings, "/etc/letsencrypt"), CloudflareStore)
