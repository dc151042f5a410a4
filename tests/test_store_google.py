"""The Google Cloud DNS store: the conformance suite and Google specifics, on a loopback fake.

The fake is the API, the OAuth token endpoint and a VM's metadata server
(tests/google_fake.py): google-auth really signs a JWT with the key file's
private key and trades it for an access token there.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import pytest
from google.auth import exceptions as google_auth_exceptions
from google.auth.compute_engine import _metadata

from certbot_dane import dns as stores
from certbot_dane.dns import google
from certbot_dane.dns.base import RecordStore, SoftStoreError, StoreConfigError, StoreError
from certbot_dane.dns.google import DEFAULT_API_URL, MAX_RETRIES, GoogleStore
from certbot_dane.settings import SettingsError, from_options
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, record
from tests.google_fake import AUDIENCE, FakeGoogle, pem, private_key
from tests.netfakes import closed_port, misbehaving_server

NAME = "mail.dane.test"
EMAIL = "dane@dane-project.iam.gserviceaccount.com"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy, no credentials of the machine, and no metadata server but a fake one.

    google-auth looks for ambient credentials in the environment, gcloud's
    configuration and the metadata server of a Google Cloud VM: each points
    at nothing here, so a test sees only what it sets up.
    """
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
                "GCLOUD_PROJECT", "GCE_METADATA_HOST", "GCE_METADATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    metadata_server(monkeypatch, f"127.0.0.1:{closed_port()}", check=False)


def metadata_server(monkeypatch: pytest.MonkeyPatch, host: str, check: bool) -> None:
    """Point google-auth's metadata server at ``host``; ``check``: look for it at all.

    google-auth reads these addresses when it is imported, under names that
    changed over its versions: every name that exists is set.
    """
    monkeypatch.setenv("GCE_METADATA_IP", host)
    monkeypatch.setenv("GCE_METADATA_HOST", host)
    for name, value in (("_GCE_METADATA_HOST", host), ("_NO_GCE_CHECK", not check),
                        ("_METADATA_ROOT", f"http://{host}/computeMetadata/v1/"),
                        ("_METADATA_IP_ROOT", f"http://{host}")):
        if hasattr(_metadata, name):
            monkeypatch.setattr(_metadata, name, value)


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


def no_sleep(seconds: float) -> None:
    """Retry and poll pauses cost no time in tests."""


def key_file(path: Path, info: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text(json.dumps(info))
    path.chmod(mode)
    return path


def store_for(fake: FakeGoogle, path: Path, **kwargs: Any) -> GoogleStore:
    kwargs.setdefault("sleep", no_sleep)
    return GoogleStore(str(path), api_url=kwargs.pop("api_url", fake.url), timeout=5, **kwargs)


def key_secrets(fake: FakeGoogle) -> tuple[str, ...]:
    """What must never be shown: the private keys' lines and every token issued."""
    lines = [line for i in (0, 1) for line in pem(private_key(i)).splitlines()[1:-1]]
    return (*lines, *fake.tokens)


class GoogleHarness(Harness):
    zone = "dane.test."

    def __init__(self, fake: FakeGoogle, tmp: Path, stack: ExitStack) -> None:
        self.fake = fake
        self.tmp = tmp
        self.stack = stack
        self.key = key_file(tmp / "key.json", fake.service_account())
        other = fake.service_account("other@dane-project.iam.gserviceaccount.com", 1)
        self.other_key = key_file(tmp / "other.json", other)

    @property
    def secrets(self) -> tuple[str, ...]:  # type: ignore[override]
        return key_secrets(self.fake)

    def store(self) -> RecordStore:
        return store_for(self.fake, self.key)

    def other_host(self) -> RecordStore:
        return store_for(self.fake, self.other_key)

    def backend_records(self, owner: str) -> set[Record]:
        return self.fake.tlsa(owner)

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        wrong = dict(self.fake.service_account(), private_key=pem(private_key(1)))
        yield "token refused", store_for(self.fake, key_file(self.tmp / "w.json", wrong)), every
        no_token = dict(self.fake.service_account(),
                        token_uri=f"http://127.0.0.1:{closed_port()}/token")
        path = key_file(self.tmp / "t.json", no_token)
        yield "token endpoint down", store_for(self.fake, path), every
        down = f"http://127.0.0.1:{closed_port()}/dns/v1"
        yield "server down", store_for(self.fake, self.key, api_url=down), every
        silent = self.stack.enter_context(misbehaving_server(None))
        quiet = GoogleStore(str(self.key), api_url=f"http://127.0.0.1:{silent}/dns/v1",
                            timeout=0.5, sleep=no_sleep)
        yield "timeout", quiet, every
        denied = self.stack.enter_context(FakeGoogle())
        denied.permissions.clear()
        yield "permission denied", self._on(denied), every
        empty = self.stack.enter_context(FakeGoogle(zones=()))
        yield "zone not found", self._on(empty), every
        for kind in ("badjson", "500", "429"):
            broken = self.stack.enter_context(FakeGoogle())
            broken.fail(kind, None)
            yield f"server answers {kind}", self._on(broken), every

    def _on(self, other: FakeGoogle) -> GoogleStore:
        path = key_file(self.tmp / f"{id(other)}.json", other.service_account())
        return store_for(other, path)


@pytest.fixture
def harness(fake: FakeGoogle, tmp_path: Path) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield GoogleHarness(fake, tmp_path, stack)


@pytest.fixture
def key(fake: FakeGoogle, tmp_path: Path) -> Path:
    return key_file(tmp_path / "key.json", fake.service_account())


def owner(fake: FakeGoogle, label: str) -> str:
    return f"_25._tcp.{label}.dane.test."


# What goes over the wire ---------------------------------------------------------


def test_the_key_file_is_traded_for_one_token_used_by_every_call(
    fake: FakeGoogle, key: Path
) -> None:
    name = owner(fake, "wire")
    store = store_for(fake, key)
    store.add({record(name, "a1")}, 300)
    store.list(name)
    store.delete({record(name, "a1")})
    (grant,) = fake.seen("POST", "/token")
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in grant.body
    (token,) = fake.tokens
    assert fake.tokens[token] == EMAIL
    api = fake.seen(path_part="/dns/v1/")
    assert api and all(r.header("Authorization") == f"Bearer {token}" for r in api)


def test_add_sends_one_addition_and_no_deletion_to_an_empty_name(
    fake: FakeGoogle, key: Path
) -> None:
    name = owner(fake, "shape")
    rec = record(name, "ab")
    store_for(fake, key).add({rec}, 3600)
    (change,) = fake.seen("POST", "/changes")
    assert change.path == "/dns/v1/projects/dane-project/managedZones/dane-test/changes"
    assert change.body["deletions"] == []
    assert change.body["additions"] == [
        {"name": name, "type": "TLSA", "ttl": 3600, "rrdatas": [f"3 1 1 {rec.data}"]}
    ]
    (read,) = fake.seen("GET", "/rrsets")
    assert read.query == {"name": name, "type": "TLSA"}


def test_a_deletion_repeats_the_record_set_as_cloud_dns_holds_it(
    fake: FakeGoogle, key: Path
) -> None:
    """Cloud DNS wants the deleted set verbatim: its text, its order, its TTL."""
    name = owner(fake, "verbatim")
    theirs, mine = record(name, "c3"), record(name, "a1")
    fake.put(name, set(), 0)
    with fake._lock:
        zone = fake.state["dane-test"]
        zone.rrsets[(name, "TLSA")] = {
            "kind": "dns#resourceRecordSet", "name": name, "type": "TLSA", "ttl": 900,
            "rrdatas": [f"3 1 1 {mine.data.upper()}", f"3 1 1 {theirs.data}"]}
    store = store_for(fake, key)
    assert store.list(name).records == {mine, theirs}
    store.delete({mine})
    (change,) = fake.seen("POST", "/changes")
    assert change.body["deletions"] == [{"name": name, "type": "TLSA", "ttl": 900,
                                         "rrdatas": [f"3 1 1 {mine.data.upper()}",
                                                     f"3 1 1 {theirs.data}"]}]
    assert change.body["additions"] == [{"name": name, "type": "TLSA", "ttl": 900,
                                         "rrdatas": [f"3 1 1 {theirs.data}"]}]
    assert fake.tlsa(name) == {theirs}


def test_present_and_absent_records_send_no_change(fake: FakeGoogle, key: Path) -> None:
    name = owner(fake, "idem")
    store = store_for(fake, key)
    store.add({record(name, "a1")}, 300)
    fake.requests.clear()
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "ff")})
    store.retime({record(name, "a1")}, 300)
    assert not fake.seen("POST", "/changes")


def test_retime_is_one_change_deleting_the_set_as_read_and_adding_it_with_the_new_ttl(
    fake: FakeGoogle, key: Path
) -> None:
    name = owner(fake, "retime")
    mine, theirs = record(name, "a1"), record(name, "c3")
    fake.put(name, {mine, theirs}, ttl=3600)
    before = fake.rrset(name)
    store_for(fake, key).retime({mine}, 120)
    (change,) = fake.seen("POST", "/changes")
    assert change.body["deletions"] == [{k: before[k] for k in ("name", "type", "ttl",
                                                                 "rrdatas")}]
    (added,) = change.body["additions"]
    assert added["ttl"] == 120 and sorted(added["rrdatas"]) == sorted(before["rrdatas"])
    assert fake.tlsa(name) == {mine, theirs}


def test_the_store_waits_until_the_change_is_done(fake: FakeGoogle, key: Path) -> None:
    fake.pending_polls = 3
    waits: list[float] = []
    store_for(fake, key, sleep=waits.append).add({record(owner(fake, "wait"), "a1")}, 300)
    polls = fake.seen("GET", "/changes/")
    assert len(polls) == 4 and polls[-1].path.endswith("/changes/1")
    assert waits == [0.5, 1.0, 2.0, 4.0]


def test_waiting_is_bounded_and_running_out_is_no_error(
    fake: FakeGoogle, key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.pending_polls = 1000
    name = owner(fake, "slow")
    store = store_for(fake, key, sync_timeout=0.0)
    with caplog.at_level(logging.INFO):
        store.add({record(name, "a1")}, 300)
    assert not fake.seen("GET", "/changes/")
    assert "still pending" in caplog.text
    assert fake.tlsa(name) == {record(name, "a1")}


# Many names at once: one change per zone -----------------------------------------


def test_many_names_of_one_zone_are_one_change(fake: FakeGoogle, key: Path) -> None:
    names = [owner(fake, f"b{i}") for i in range(5)]
    theirs = record(names[0], "c3")
    fake.put(names[0], {theirs})
    store = store_for(fake, key)
    fake.requests.clear()
    assert store.add_many([({record(n, "a1"), record(n, "b2")}, 300) for n in names]) == [
        None] * 5
    (change,) = fake.seen("POST", "/changes")
    assert len(change.body["additions"]) == 5 and len(change.body["deletions"]) == 1
    assert len(fake.seen("GET", "/rrsets")) == 5
    for n in names:
        assert fake.tlsa(n) == {record(n, "a1"), record(n, "b2")} | (
            {theirs} if n == names[0] else set())
    fake.requests.clear()
    assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 5
    (change,) = fake.seen("POST", "/changes")
    assert len(change.body["deletions"]) == 5 and len(change.body["additions"]) == 5
    fake.requests.clear()
    assert store.retime_many([({record(n, "b2")}, 60) for n in names]) == [None] * 5
    assert len(fake.seen("POST", "/changes")) == 1
    assert all(fake.rrset(n)["ttl"] == 60 for n in names)


def test_many_names_are_read_with_one_paged_listing_of_the_zone(
    fake: FakeGoogle, key: Path
) -> None:
    names = [owner(fake, f"z{i:02}") for i in range(google.ZONE_LISTING_MIN)]
    store = store_for(fake, key)
    store.list(names[0])  # the zone list is cached from here on
    fake.requests.clear()
    assert store.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * len(names)
    listings = fake.seen("GET", "/rrsets")
    assert all("name" not in r.query for r in listings)
    # SOA and NS at the apex: two record sets, two per page
    assert len(listings) == 1 and "pageToken" not in listings[0].query
    assert len(fake.seen("POST", "/changes")) == 1
    fake.requests.clear()
    views = store.list_many(names)
    assert [v.records for v in views] == [{record(n, "a1")} for n in names]
    pages = fake.seen("GET", "/rrsets")
    assert len(pages) == 6  # 12 record sets, two per page
    assert ["pageToken" in r.query for r in pages] == [False] + [True] * 5


def test_changes_stay_within_the_batch_limit(
    fake: FakeGoogle, key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(google, "BATCH_RRSETS", 2)
    names = [owner(fake, f"lim{i}") for i in range(5)]
    assert store_for(fake, key).add_many([({record(n, "a1")}, 300) for n in names]) == [
        None] * 5
    assert [len(c.body["additions"]) for c in fake.seen("POST", "/changes")] == [2, 2, 1]
    assert all(fake.tlsa(n) == {record(n, "a1")} for n in names)


def test_an_item_without_a_zone_fails_alone(fake: FakeGoogle, key: Path) -> None:
    inside = owner(fake, "in")
    errors = store_for(fake, key).add_many(
        [({record("_25._tcp.mail.elsewhere.example.", "a1")}, 300),
         ({record(inside, "a1")}, 300)])
    assert isinstance(errors[0], StoreError) and "no managed zone" in str(errors[0])
    assert errors[1] is None and fake.tlsa(inside) == {record(inside, "a1")}


# Another host changes the set between our read and our change ------------------------


@pytest.mark.parametrize(
    ("race", "status"),
    [("grows", 412), ("retimed", 412), ("appears", 409), ("vanishes", 404)],
)
def test_a_change_refused_because_the_set_changed_is_read_again_and_retried(
    fake: FakeGoogle, key: Path, race: str, status: int
) -> None:
    name = owner(fake, f"race-{race}")
    first, theirs = record(name, "c3"), record(name, "d4")
    if race != "appears":
        fake.put(name, {first})

    def other_host(server: FakeGoogle) -> None:
        if race == "retimed":
            server.put(name, {first}, ttl=600)
            return
        server.put(name, {first, theirs} if race == "grows" else
                   {theirs} if race == "appears" else set())

    fake.before_change.append(other_host)
    mine = record(name, "a1")
    store = store_for(fake, key)
    if race == "vanishes":
        store.delete({first})
        assert fake.tlsa(name) == set()
    elif race == "retimed":
        store.add({mine}, 300)
        assert fake.tlsa(name) == {mine, first}
    else:
        store.add({mine}, 300)
        assert fake.tlsa(name) == {mine, theirs} | ({first} if race == "grows" else set())
    refused, *retried = fake.seen("POST", "/changes")
    assert refused.status == status
    # read, refused, read again; then the retry (none when the set vanished as wanted)
    assert [r.status for r in retried] == ([] if race == "vanishes" else [200])
    assert len(fake.seen("GET", "/rrsets")) == 2


def test_a_refused_change_of_many_names_is_read_again_with_one_listing_and_resent_whole(
    fake: FakeGoogle, key: Path
) -> None:
    names = [owner(fake, f"r{i:02}") for i in range(google.ZONE_LISTING_MIN)]
    theirs = record(names[3], "d4")
    fake.before_change.append(lambda server: server.put(names[3], {theirs}))
    store = store_for(fake, key)
    assert store.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * len(names)
    refused, retried = fake.seen("POST", "/changes")
    assert (refused.status, retried.status) == (409, 200)
    assert len(retried.body["additions"]) == len(names) == len(refused.body["additions"])
    assert refused.body["deletions"] == []
    assert retried.body["deletions"] == [
        {"name": names[3], "type": "TLSA", "ttl": 300, "rrdatas": [f"3 1 1 {theirs.data}"]}]
    listings = fake.seen("GET", "/rrsets")
    assert all("name" not in r.query for r in listings)
    assert fake.tlsa(names[3]) == {record(names[3], "a1"), theirs}
    assert all(fake.tlsa(n) == {record(n, "a1")} for n in names if n != names[3])


def test_a_set_that_keeps_changing_gives_up_softly(fake: FakeGoogle, key: Path) -> None:
    name = owner(fake, "busy")
    fake.put(name, {record(name, "c3")})
    rounds = iter(range(100))

    def churn(server: FakeGoogle) -> None:
        server.put(name, {record(name, "c3"), record(name, f"{next(rounds):02}")})
        server.before_change.append(churn)

    fake.before_change.append(churn)
    with pytest.raises(SoftStoreError) as info:
        store_for(fake, key, swap_attempts=3).add({record(name, "a1")}, 300)
    message = str(info.value)
    assert message.startswith(f"google store: cannot add 1 TLSA record(s) at {name}: ")
    assert "HTTP 412" in message and "refused 3 times" in message
    assert [r.status for r in fake.seen("POST", "/changes")] == [412] * 3
    assert record(name, "a1") not in fake.tlsa(name)


# Zones --------------------------------------------------------------------------------


def test_longest_public_zone_wins_over_a_longer_private_one(tmp_path: Path) -> None:
    zones = (("parent", "dane.test.", "public"), ("child", "child.dane.test.", "public"),
             ("inside", "deep.child.dane.test.", "private"))
    with FakeGoogle(zones=zones) as fake:
        store = store_for(fake, key_file(tmp_path / "k.json", fake.service_account()))
        deep, shallow = "_25._tcp.mail.deep.child.dane.test.", "_25._tcp.mail.dane.test."
        store.add({record(deep, "a1")}, 300)
        store.add({record(shallow, "b2")}, 300)
        assert (deep, "TLSA") in fake.state["child"].rrsets
        assert (shallow, "TLSA") in fake.state["parent"].rrsets
        assert not [k for k in fake.state["inside"].rrsets if k[1] == "TLSA"]
        listings = fake.seen("GET", "/managedZones")
        assert len([r for r in listings if r.path.endswith("/managedZones")]) == 2  # 3 zones


def test_a_private_zone_is_used_when_no_public_one_holds_the_name(tmp_path: Path) -> None:
    with FakeGoogle(zones=(("corp", "corp.test.", "private"),)) as fake:
        store = store_for(fake, key_file(tmp_path / "k.json", fake.service_account()))
        name = "_25._tcp.mail.corp.test."
        store.add({record(name, "a1")}, 300)
        assert fake.tlsa(name) == {record(name, "a1")}


def test_two_public_zones_of_one_name_are_refused(tmp_path: Path) -> None:
    zones = (("one", "dane.test.", "public"), ("two", "dane.test.", "public"))
    with FakeGoogle(zones=zones) as fake:
        store = store_for(fake, key_file(tmp_path / "k.json", fake.service_account()))
        with pytest.raises(StoreError, match=r"2 managed zones of project dane-project are "
                           r"named dane\.test\. \(one, two\); delete the one that is not "
                           r"delegated$"):
            store.list("_25._tcp.mail.dane.test.")


# Errors: one line, the cause and the fix, no secret ------------------------------------


def one_line(err: pytest.ExceptionInfo[StoreError], fake: FakeGoogle | None = None) -> str:
    message = str(err.value)
    assert "\n" not in message and message.startswith("google store: ")
    for secret in key_secrets(fake) if fake else ():
        assert secret not in message
    return message


def test_token_refused_names_the_key_file_and_the_fix(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    key = key_file(tmp_path / "k.json", fake.service_account())
    fake.refuse_tokens = True
    with pytest.raises(StoreError) as info:
        store_for(fake, key).list(owner(fake, "x"))
    assert one_line(info, fake) == (
        f"google store: cannot list TLSA records at {owner(fake, 'x')}: Google refused the "
        f"key of {EMAIL} in {key} (invalid_grant: Invalid JWT Signature.); the key may be "
        "deleted or disabled: create a new JSON key for the service account and save it there")


def test_a_key_google_does_not_know_is_refused(fake: FakeGoogle, tmp_path: Path) -> None:
    info_ = fake.service_account("gone@dane-project.iam.gserviceaccount.com", register=False)
    key = key_file(tmp_path / "k.json", info_)
    with pytest.raises(StoreError) as info:
        store_for(fake, key).add({record(owner(fake, "x"))}, 300)
    assert "(invalid_grant: Invalid grant: account not found)" in one_line(info, fake)


def test_permission_denied_names_the_role_and_the_permission(
    fake: FakeGoogle, key: Path
) -> None:
    name = owner(fake, "denied")
    fake.permissions.discard("dns.changes.create")
    store = store_for(fake, key)
    assert store.list(name).records == frozenset()  # reading is still allowed
    with pytest.raises(StoreError) as info:
        store.add({record(name, "a1")}, 300)
    assert one_line(info, fake) == (
        f"google store: cannot add 1 TLSA record(s) at {name}: permission denied in project "
        f"dane-project (HTTP 403); grant the service account {EMAIL} the role "
        "roles/dns.admin, or a role with dns.changes.create (with "
        "dns.resourceRecordSets.create, .delete and .update)")
    fake.permissions.discard("dns.managedZones.list")
    with pytest.raises(StoreError) as info:
        store_for(fake, key).list(name)
    assert one_line(info).endswith("or a role with dns.managedZones.list")


def test_a_disabled_api_says_how_to_enable_it(fake: FakeGoogle, key: Path) -> None:
    fake.api_disabled = True
    with pytest.raises(StoreError) as info:
        store_for(fake, key).list(owner(fake, "x"))
    assert one_line(info).endswith(
        "the Cloud DNS API is not enabled in project dane-project: enable it with 'gcloud "
        "services enable dns.googleapis.com --project dane-project'")


def test_no_zone_names_the_project_and_the_fix(fake: FakeGoogle, key: Path) -> None:
    name = "_25._tcp.mail.example.org."
    with pytest.raises(StoreError) as info:
        store_for(fake, key).add({record(name)}, 300)
    assert one_line(info) == (
        f"google store: cannot add 1 TLSA record(s) at {name}: no managed zone of project "
        "dane-project contains the name; create one, or set --dns-google-project (or "
        "--dane-google-project) to the project that holds it")


def test_an_unknown_project_says_which_option_sets_it(fake: FakeGoogle, key: Path) -> None:
    store = store_for(fake, key, project="other-project")
    with pytest.raises(StoreError) as info:
        store.list(owner(fake, "x"))
    assert one_line(info).endswith(
        f"project other-project does not exist or is hidden from the service account {EMAIL} "
        "(HTTP 404); set --dns-google-project (or --dane-google-project) to the project of "
        "the zone")


def test_429_is_retried_with_growing_pauses(fake: FakeGoogle, key: Path) -> None:
    waits: list[float] = []
    store = store_for(fake, key, sleep=waits.append)
    name = owner(fake, "busy")
    store.list(name)
    fake.requests.clear()
    fake.fail("429", 2)
    assert store.list(name).records == frozenset()
    assert waits == [1.0, 2.0]
    assert len(fake.seen("GET")) == 3


def test_429_beyond_the_retries_is_a_soft_error(fake: FakeGoogle, key: Path) -> None:
    store = store_for(fake, key)
    name = owner(fake, "busy")
    store.list(name)
    fake.requests.clear()
    fake.fail("429", None)
    with pytest.raises(SoftStoreError) as info:
        store.add({record(name)}, 300)
    assert one_line(info).endswith(
        "Cloud DNS rate limit reached (HTTP 429) after 4 tries; the next check tries again "
        "(if it persists, raise the project's Cloud DNS API quota)")
    assert len(fake.seen("GET")) == MAX_RETRIES + 1
    assert not fake.seen("POST", "/changes")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("500", "Cloud DNS failed with HTTP 500 (Backend Error) after 4 tries; try again later"),
     ("503", "Cloud DNS failed with HTTP 503 (Backend Error) after 4 tries; try again later"),
     ("badjson", "malformed answer from Cloud DNS (HTTP 200, not a JSON object); try again "
                 "later, or check --dane-api-url")],
)
def test_server_failures_name_the_operation_and_reason(
    fake: FakeGoogle, key: Path, kind: str, reason: str
) -> None:
    name = owner(fake, "fail")
    fake.fail(kind, None)
    with pytest.raises(StoreError) as info:
        store_for(fake, key).add({record(name)}, 300)
    assert one_line(info) == f"google store: cannot add 1 TLSA record(s) at {name}: {reason}"


def test_a_malformed_record_set_is_one_clear_error(fake: FakeGoogle, key: Path) -> None:
    name = owner(fake, "garbled")
    with fake._lock:
        fake.state["dane-test"].rrsets[(name, "TLSA")] = {
            "name": name, "type": "TLSA", "ttl": 300, "rrdatas": ["not tlsa"]}
    with pytest.raises(StoreError) as info:
        store_for(fake, key).list(name)
    assert one_line(info).endswith(
        "malformed answer from Cloud DNS (a TLSA record set without usable data)")


def test_network_failures_name_the_address(fake: FakeGoogle, key: Path) -> None:
    port = closed_port()
    down = store_for(fake, key, api_url=f"http://127.0.0.1:{port}/dns/v1")
    with pytest.raises(StoreError) as info:
        down.list(owner(fake, "x"))
    assert one_line(info).endswith(
        f"cannot connect to Cloud DNS at http://127.0.0.1:{port}/dns/v1 (Connection refused); "
        "check the network, or --dane-api-url")
    with misbehaving_server(None) as silent:
        url = f"http://127.0.0.1:{silent}/dns/v1"
        quiet = GoogleStore(str(key), api_url=url, timeout=0.3, sleep=no_sleep)
        with pytest.raises(StoreError) as info:
            quiet.list(owner(fake, "x"))
    assert one_line(info).endswith(
        f"no answer from Cloud DNS at {url} within 0.3 s; try again later")


def test_token_endpoint_down_names_it(fake: FakeGoogle, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}/token"
    key = key_file(tmp_path / "k.json", dict(fake.service_account(), token_uri=uri))
    with pytest.raises(StoreError) as info:
        store_for(fake, key).list(owner(fake, "x"))
    assert one_line(info, fake).endswith(
        f"cannot reach the token endpoint {uri} (Connection refused); try again later")


def test_a_revoked_token_is_replaced_once(fake: FakeGoogle, key: Path) -> None:
    name = owner(fake, "revoked")
    store = store_for(fake, key)
    store.list(name)
    fake.tokens.clear()
    assert store.list(name).records == frozenset()
    assert len(fake.seen("POST", "/token")) == 2


def test_secrets_never_in_messages_or_logs(
    fake: FakeGoogle, key: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = owner(fake, "secret")
    store = store_for(fake, key)
    store.add({record(name, "a1")}, 300)
    store.delete({record(name, "a1")})
    messages = []
    wrong = dict(fake.service_account(), private_key=pem(private_key(1)))
    for broken in (store_for(fake, key_file(tmp_path / "w.json", wrong)),
                   store_for(fake, key, api_url=f"http://127.0.0.1:{closed_port()}/dns/v1")):
        with pytest.raises(StoreError) as info:
            broken.add({record(name)}, 300)
        messages.append(str(info.value))
    assert fake.tokens
    for secret in key_secrets(fake):
        assert secret not in caplog.text
        assert all(secret not in m for m in messages)


# The key file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("dns_google_credentials = x\n", "is not JSON; give the service-account key file "
         "(JSON) downloaded from the Google Cloud console (IAM > Service accounts > Keys), not "
         "an INI file"),
        ("[1, 2]", "is not JSON"),
        ('{"type": "service_account", "client_email": "a@b"}', "has no private_key, token_uri; "
         "download a new JSON key for the service account and save it there"),
        ('{"type": "external_account"}', "is not a service-account key file (its \"type\" is "
         "'external_account', not \"service_account\")"),
        ('{"type": "authorized_user", "client_id": "x"}', "the login in"),
        ('{"client_email": "a@b"}', "is not a service-account key file (its \"type\" is None, "
         "not \"service_account\"); create a JSON key for the service account and give that "
         "file"),
    ],
)
def test_a_bad_key_file_is_one_line_naming_it(
    fake: FakeGoogle, tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(StoreConfigError) as info:
        GoogleStore(str(path))
    message = one_line(info)  # type: ignore[arg-type]
    assert str(path) in message and expected in message


def test_a_refused_gcloud_login_says_to_log_in_again(
    fake: FakeGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gcloud login always asks Google's own token endpoint: refused here without asking."""
    login = {"type": "authorized_user", "client_id": "1.apps.googleusercontent.com",
             "client_secret": "d-secret", "refresh_token": "1//refresh-secret"}
    path = key_file(tmp_path / "adc.json", login)
    store = store_for(fake, path, project="dane-project")

    def refused(*args: object) -> None:
        raise google_auth_exceptions.RefreshError(
            "invalid_grant: Token has been expired or revoked.", {"error": "invalid_grant"})

    monkeypatch.setattr(store.auth.credentials, "before_request", refused)
    with pytest.raises(StoreError) as info:
        store.list(owner(fake, "x"))
    message = one_line(info)
    assert message.endswith(
        f"Google refused the gcloud login in {path} (invalid_grant: Token has been expired or "
        "revoked.); run 'gcloud auth application-default login' again, or give a "
        "service-account key file (JSON)")
    assert "d-secret" not in message and "refresh-secret" not in message
    assert fake.requests == []


def test_a_broken_private_key_is_named_without_showing_it(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    broken = pem(private_key(0)).replace("A", "B", 40)
    path = key_file(tmp_path / "k.json", dict(fake.service_account(), private_key=broken))
    with pytest.raises(StoreConfigError) as info:
        GoogleStore(str(path))
    message = one_line(info, fake)  # type: ignore[arg-type]
    assert message == (f"google store: the private_key in {path} is not a usable key; download "
                       f"a new JSON key for {EMAIL} and save it there")
    assert "B" * 5 not in message


def test_an_unreadable_key_file_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(StoreConfigError) as info:
        GoogleStore(str(folder))
    assert one_line(info) == (  # type: ignore[arg-type]
        f"google store: cannot read the credentials file {folder} (Is a directory); give the "
        "path of the service-account key file (JSON), readable by the user running certbot")
    with pytest.raises(StoreConfigError, match=r"\(No such file or directory\)"):
        GoogleStore(str(tmp_path / "absent.json"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_key_file_without_read_permission_is_one_line(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    path = key_file(tmp_path / "k.json", fake.service_account(), mode=0)
    with pytest.raises(StoreConfigError, match=r"\(Permission denied\); give the path"):
        GoogleStore(str(path))


def test_a_key_file_others_can_read_gets_certbots_warning(
    fake: FakeGoogle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file(tmp_path / "k.json", fake.service_account(), mode=0o644)
    with caplog.at_level(logging.WARNING):
        GoogleStore(str(path))
    assert f"Unsafe permissions on credentials configuration file: {path}" in caplog.text


def test_building_the_store_contacts_nothing(fake: FakeGoogle, key: Path) -> None:
    GoogleStore(str(key), api_url=fake.url)
    GoogleStore(None, api_url=fake.url)
    assert fake.requests == []


def test_default_api_url(key: Path) -> None:
    assert GoogleStore(str(key)).api.base_url == DEFAULT_API_URL == (
        "https://dns.googleapis.com/dns/v1")


# Ambient credentials ----------------------------------------------------------------------


def test_ambient_credentials_from_google_application_credentials(
    fake: FakeGoogle, key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    store = GoogleStore(None, api_url=fake.url, timeout=5, sleep=no_sleep)
    name = owner(fake, "adc")
    store.add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}
    assert set(fake.tokens.values()) == {EMAIL}
    assert fake.seen("GET", "/projects/dane-project/managedZones")


@pytest.mark.skipif(not hasattr(_metadata, "_GCE_METADATA_HOST"),
                    reason="this google-auth reads the metadata address only when imported")
def test_ambient_credentials_from_the_metadata_server(
    fake: FakeGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Google Cloud VM: the VM's service account and project, no file at all."""
    metadata_server(monkeypatch, fake.host, check=True)
    fake.vm_project = "dane-project"
    store = GoogleStore(None, api_url=fake.url, timeout=5, sleep=no_sleep)
    name = owner(fake, "vm")
    store.add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}
    assert set(fake.tokens.values()) == {fake.vm_account}
    assert fake.seen("GET", "/computeMetadata/v1/project/project-id")
    assert fake.seen("GET", "/computeMetadata/v1/instance/service-accounts/default/token")
    assert not fake.seen("POST", "/token")
    fake.permissions.clear()
    with pytest.raises(StoreError) as info:
        store.list(name)
    assert f"grant the service account {fake.vm_account} the role" in one_line(info, fake)


def test_no_credentials_anywhere_says_where_to_put_them(fake: FakeGoogle) -> None:
    store = GoogleStore(None, project="dane-project", api_url=fake.url, timeout=2)
    with pytest.raises(StoreError) as info:
        store.list(owner(fake, "x"))
    message = one_line(info)
    assert message.startswith(f"google store: cannot list TLSA records at {owner(fake, 'x')}: "
                              "no usable Google credentials (")
    assert message.endswith("pass the service-account key file with --dns-google-credentials "
                            "or --dane-credentials, or set GOOGLE_APPLICATION_CREDENTIALS for "
                            "the user running certbot")
    assert fake.requests == []


def test_ambient_credentials_without_a_project_ask_for_one(
    fake: FakeGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info_ = fake.service_account()
    del info_["project_id"]
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file(tmp_path / "k.json",
                                                                       info_)))
    with pytest.raises(StoreError) as info:
        GoogleStore(None, api_url=fake.url, timeout=5).list(owner(fake, "x"))
    assert one_line(info).endswith(
        "cannot tell which Google Cloud project holds the zone; set --dns-google-project (or "
        "--dane-google-project) to its project id")


# Settings: certbot-dns-google's renewal conf, --dane-credentials over it --------------------


def renewal_conf(config_dir: Path, **params: str) -> None:
    (config_dir / "renewal").mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{k} = {v}\n" for k, v in params.items())
    (config_dir / "renewal" / f"{NAME}.conf").write_text(
        f"version = 5.8.0\n[renewalparams]\n{lines}")


def test_credentials_and_project_from_the_renewal_conf(
    fake: FakeGoogle, key: Path, tmp_path: Path
) -> None:
    config_dir = tmp_path / "config"
    renewal_conf(config_dir, authenticator="dns-google", dns_google_credentials=str(key),
                 dns_google_project="dane-project")
    config = SimpleNamespace(config_dir=str(config_dir))
    settings = from_options({"tlsa": "311:25", "api_url": fake.url}, config, NAME)
    assert (settings.store, settings.credentials, settings.project) == (
        "google", str(key), "dane-project")
    store = stores.open_store(settings, str(config_dir), timeout=5)
    assert isinstance(store, GoogleStore)
    name = owner(fake, "conf")
    store.add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}


def test_dane_credentials_and_project_override_the_renewal_conf(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    stale = fake.service_account("old@dane-project.iam.gserviceaccount.com", 1, register=False)
    old = key_file(tmp_path / "old.json", stale)
    new = key_file(tmp_path / "new.json", fake.service_account())
    config_dir = tmp_path / "config"
    renewal_conf(config_dir, authenticator="dns-google", dns_google_credentials=str(old),
                 dns_google_project="old-project")
    config = SimpleNamespace(config_dir=str(config_dir))
    options = {"tlsa": "311:25", "credentials": str(new), "google_project": "dane-project",
               "api_url": fake.url}
    settings = from_options(options, config, NAME)
    assert (settings.credentials, settings.project) == (str(new), "dane-project")
    name = owner(fake, "override")
    stores.open_store(settings, str(config_dir), timeout=5).add({record(name, "a1")}, 300)
    assert fake.tlsa(name) == {record(name, "a1")}
    assert set(fake.tokens.values()) == {EMAIL}


def test_the_dns_google_authenticator_needs_no_file(tmp_path: Path) -> None:
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-google")
    settings = from_options({"tlsa": "311:25"}, config, NAME)
    assert (settings.store, settings.credentials, settings.project) == ("google", None, None)


@pytest.mark.parametrize(
    ("options", "params", "expected"),
    [
        ({"google_project": "Bad_Project"}, {}, "--dane-google-project: 'Bad_Project' is not "
         "a Google Cloud project id"),
        ({}, {"dns_google_project": "x"}, "dns_google_project of the renewal configuration "
         "(--dns-google-project): 'x' is not a Google Cloud project id"),
        ({"google_project": "dane-project", "dns": "route53"}, {}, "--dane-google-project "
         "applies to --dane-dns google only, not to route53; remove it"),
    ],
)
def test_a_bad_project_is_refused_when_the_options_are_checked(
    tmp_path: Path, options: dict[str, str], params: dict[str, str], expected: str
) -> None:
    renewal_conf(tmp_path, authenticator="dns-google", **params)
    config = SimpleNamespace(config_dir=str(tmp_path))
    with pytest.raises(SettingsError) as info:
        from_options({"tlsa": "311:25", **options}, config, NAME)
    assert str(info.value).startswith(expected)


def test_a_bad_key_file_is_refused_when_the_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "google.ini"
    path.write_text("dns_google_credentials = nope\n")
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-google",
                             dns_google_credentials=str(path))
    with pytest.raises(SettingsError, match=rf"^google store: the credentials file {path} is "
                       "not JSON"):
        from_options({"tlsa": "311:25"}, config, NAME)


def test_the_project_is_kept_in_the_lineage_settings() -> None:
    settings = Settings(targets="311:25", directory="/d", store="google", project="p-123456")
    assert GoogleStore.from_settings(settings, "/etc/letsencrypt").explicit_project == "p-123456"


def test_a_missing_google_auth_is_one_line_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "certbot_dane.dns.google")
    monkeypatch.setitem(sys.modules, "google.auth", None)
    with pytest.raises(StoreConfigError) as info:
        stores.store_class("google")
    assert str(info.value) == (
        "google store: the Python package 'google-auth' is not installed; install it into "
        "certbot's environment (pip install google-auth)")


def test_the_audience_is_googles_token_endpoint(fake: FakeGoogle, key: Path) -> None:
    """The assertion is signed for the token endpoint, by the account, for Cloud DNS."""
    store_for(fake, key).list(owner(fake, "aud"))
    (grant,) = fake.seen("POST", "/token")
    (assertion,) = parse_qs(grant.body.decode())["assertion"]
    claims_b64 = assertion.split(".")[1].rstrip("=")
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    assert claims["aud"] in (AUDIENCE, fake.token_uri) and claims["iss"] == EMAIL
    assert "ndev.clouddns.readwrite" in claims["scope"]
