"""The Route 53 store against moto's server mode, plus Route 53 specifics.

moto runs as a subprocess on a loopback port. A second moto server has IAM
authentication switched on (``INITIAL_NO_AUTH_ACTION_COUNT``) and yields the
credential refusals; :mod:`tests.route53_fakes` supplies the answers moto
cannot give and the change-batch checks it does not make. The process gets
fake AWS credentials and empty AWS config files, so nothing real is read and
nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import boto3.session
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import pytest

from certbot_dane import settings as settings_mod
from certbot_dane.dns import open_store, route53
from certbot_dane.dns.base import RecordStore, SoftStoreError, StoreError
from certbot_dane.dns.route53 import Route53Store
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, owner, record
from tests.lab.process import Daemon
from tests.netfakes import closed_port, misbehaving_server
from tests.route53_fakes import (
    StrictRoute53,
    action_of,
    change_xml,
    denied_xml,
    error_xml,
    fake_route53,
    invalid_batch_xml,
    one_zone,
    rrsets_xml,
    zone_then,
)

ZONE = "dane.test."
FAKE_KEY_ID = "AKIADANETESTFAKEKEY1"
FAKE_SECRET = "dane-test-fake-secret-key-not-real-00001"
WRONG_SECRET = "dane-test-wrong-secret-key-not-real-0002"


# The emulator ---------------------------------------------------------------


@dataclass
class Moto:
    """One running moto server."""

    url: str
    daemon: Daemon

    def client(self, service: str = "route53", **credentials: str) -> Any:
        """A plain boto3 client, independent of any store."""
        return boto3.session.Session(**credentials).client(
            service, endpoint_url=self.url, region_name="us-east-1"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def start_moto(workdir: Path, name: str, extra_env: dict[str, str]) -> Moto:
    """Start ``python -m moto.server`` on a free loopback port and wait for it."""
    port = _free_port()
    daemon = Daemon(
        name,
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        workdir / f"{name}.log",
        env={**os.environ, **extra_env},
        cwd=workdir,
    )
    daemon.start()
    try:
        daemon.wait_until(lambda: _answers(port), 30, "listening socket")
    except Exception:
        daemon.stop(timeout=2)
        raise
    return Moto(f"http://127.0.0.1:{port}", daemon)


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials and empty AWS config files for the whole module."""
    base = tmp_path_factory.mktemp("aws")
    (base / "config").write_text("")
    (base / "credentials").write_text("")
    with pytest.MonkeyPatch.context() as mp:
        for var in (
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_ROUTE_53",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
        ):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
        mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(base / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(base / "credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module")
def moto(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    server = start_moto(tmp_path_factory.mktemp("moto"), "moto", {})
    try:
        server.client().create_hosted_zone(Name=ZONE, CallerReference="dane-test")
        yield server
    finally:
        server.daemon.stop(timeout=5)


@dataclass
class AuthMoto:
    """A moto server that checks signatures, with one IAM user's key."""

    server: Moto
    key_id: str
    secret: str


@pytest.fixture(scope="module")
def moto_auth(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    # The first two actions (create the user and its key) are let through;
    # every later request must be signed by a key moto knows.
    server = start_moto(
        tmp_path_factory.mktemp("moto-auth"), "moto-auth", {"INITIAL_NO_AUTH_ACTION_COUNT": "2"}
    )
    try:
        iam = server.client("iam")
        iam.create_user(UserName="certbot")
        key = iam.create_access_key(UserName="certbot")["AccessKey"]
        yield AuthMoto(server, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.daemon.stop(timeout=5)


def tlsa_values(client: Any, zone_id: str, name: str) -> list[tuple[int, list[str]]]:
    """Every TLSA RRset named ``name`` in the zone as (TTL, values), via the API."""
    found = []
    paginator = client.get_paginator("list_resource_record_sets")
    pages = paginator.paginate(HostedZoneId=zone_id, StartRecordName=name, StartRecordType="TLSA")
    for page in pages:
        for item in page["ResourceRecordSets"]:
            if item["Name"].rstrip(".").lower() != name.rstrip(".").lower():
                return found
            if item["Type"] == "TLSA":
                found.append((int(item["TTL"]), [r["Value"] for r in item["ResourceRecords"]]))
    return found


def parse(name: str, value: str) -> Record:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, value)
    assert isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA)
    return Record.from_rdata(name, rdata)


def zone_id(client: Any, name: str) -> str:
    for zone in client.list_hosted_zones()["HostedZones"]:
        if zone["Name"] == name:
            return str(zone["Id"]).rsplit("/", 1)[-1]
    raise LookupError(name)


def strict_store(url: str, **kwargs: Any) -> tuple[Route53Store, StrictRoute53]:
    """A store whose own client (default credential chain) is wrapped by the
    Route 53 change-batch checks."""
    strict = StrictRoute53(Route53Store(url, timeout=5).client())
    return Route53Store(url, timeout=5, client=strict, **kwargs), strict


# The conformance suite ------------------------------------------------------


class Route53Harness(Harness):
    def __init__(self, moto: Moto, auth: AuthMoto, stack: ExitStack) -> None:
        self.moto = moto
        self.auth = auth
        self.stack = stack
        self.zone = ZONE
        self.secrets = (FAKE_SECRET, WRONG_SECRET, auth.secret, FAKE_KEY_ID, auth.key_id)
        self._backend = moto.client()
        self._zone_id = zone_id(self._backend, ZONE)

    def store(self) -> RecordStore:
        return strict_store(self.moto.url)[0]

    def other_host(self) -> RecordStore:
        return strict_store(self.moto.url)[0]

    def backend_records(self, owner: str) -> set[Record]:
        rrsets = tlsa_values(self._backend, self._zone_id, owner)
        assert len(rrsets) <= 1, f"duplicate TLSA RRsets at {owner}: {rrsets}"
        return {parse(owner, v) for _, values in rrsets for v in values}

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        quick = {"timeout": 1, "http_attempts": 1}
        auth_url = self.auth.server.url
        yield "auth refused: unknown key", Route53Store(auth_url, **quick), every
        wrong = boto3.session.Session(
            aws_access_key_id=self.auth.key_id, aws_secret_access_key=WRONG_SECRET
        )
        yield "auth refused: bad secret", Route53Store(auth_url, session=wrong, **quick), every
        denied = self.stack.enter_context(
            fake_route53(
                zone_then(
                    (200, rrsets_xml()),
                    (
                        403,
                        error_xml(
                            "AccessDenied",
                            f"User: arn:aws:iam::123456789012:user/certbot ({FAKE_KEY_ID}) is "
                            "not authorized to perform: route53:ChangeResourceRecordSets",
                        ),
                    ),
                )
            )
        )
        yield "auth refused: IAM policy", Route53Store(denied.url, **quick), ("add",)
        down = f"http://127.0.0.1:{closed_port()}"
        yield "server down", Route53Store(down, **quick), every
        silent = self.stack.enter_context(misbehaving_server(None))
        silent_store = Route53Store(f"http://127.0.0.1:{silent}", timeout=0.5, http_attempts=1)
        yield "timeout", silent_store, every
        garbage = self.stack.enter_context(misbehaving_server(b"\x00\x01garbage"))
        garbage_store = Route53Store(f"http://127.0.0.1:{garbage}", timeout=0.5, http_attempts=1)
        yield "not HTTP", garbage_store, every
        not_xml = self.stack.enter_context(fake_route53(lambda m, p, q: (200, b"not xml {")))
        yield "malformed answer", Route53Store(not_xml.url, **quick), every
        bad = self.stack.enter_context(
            fake_route53(zone_then(lambda name: (200, rrsets_xml(name, ("3 1 1 zz",)))))
        )
        yield "malformed TLSA", Route53Store(bad.url, **quick), every


@pytest.fixture
def harness(moto: Moto, moto_auth: AuthMoto) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield Route53Harness(moto, moto_auth, stack)


# Compare-and-swap -----------------------------------------------------------


@pytest.mark.parametrize("before", ["empty", "existing"])
def test_swap_retries_after_a_concurrent_change(
    harness: Route53Harness, before: str
) -> None:
    name = owner(harness)
    mine, theirs, older = record(name, "a1"), record(name, "c3"), record(name, "0f")
    if before == "existing":
        harness.other_host().add({older}, 300)
    ours, strict = strict_store(harness.moto.url)
    other = harness.other_host()
    # The other host writes after our read and before our change batch.
    strict.before_change.append(lambda: other.add({theirs}, 300))
    ours.add({mine}, 300)
    expected = {mine, theirs} | ({older} if before == "existing" else set())
    assert harness.backend_records(name) == expected
    assert strict.calls["change_resource_record_sets"] == 2

    strict.before_change.append(lambda: other.delete({theirs}))
    ours.delete({mine})
    assert harness.backend_records(name) == expected - {mine, theirs}


def test_swap_gives_up_when_always_raced(harness: Route53Harness) -> None:
    name = owner(harness)
    ours, strict = strict_store(harness.moto.url, swap_attempts=3)
    other = harness.other_host()
    strict.before_change.extend(
        (lambda i=i: other.add({record(name, f"{i}e")}, 300)) for i in range(3)
    )
    with pytest.raises(StoreError) as info:
        ours.add({record(name, "a1")}, 300)
    message = str(info.value)
    assert message.startswith(f"route53 store: cannot add 1 TLSA record(s) at {name}: ")
    assert "rejected 3 times" in message and "\n" not in message
    assert strict.calls["change_resource_record_sets"] == 3
    assert record(name, "a1") not in harness.backend_records(name)


@pytest.mark.parametrize("form", ["ErrorResponse", "InvalidChangeBatch"])
def test_both_forms_of_a_rejected_batch_are_retried(form: str) -> None:
    """Route 53 has answered InvalidChangeBatch in two XML forms; botocore
    parses only the first, so the store must recognise the second too."""
    name = "_25._tcp.mx.dane.test."
    text = f"Tried to create resource record set [name='{name}', type='TLSA'] but it already exists"
    if form == "ErrorResponse":
        rejected = error_xml("InvalidChangeBatch", text)
    else:
        rejected = invalid_batch_xml(text)
    answers = [(400, rejected), (200, change_xml())]
    with fake_route53(zone_then((200, rrsets_xml()), lambda: answers.pop(0))) as fake:
        store = Route53Store(fake.url, timeout=2, http_attempts=1)
        store.add({record(name, "a1")}, 300)
        posts = [r for r in fake.requests if r[0] == "POST"]
        assert len(posts) == 2 and not answers
        answers.extend([(400, rejected)] * 2)
        with pytest.raises(StoreError) as info:
            Route53Store(fake.url, timeout=2, http_attempts=1, swap_attempts=2).add(
                {record(name, "a1")}, 300
            )
    message = str(info.value)
    assert "Route 53 rejected the change" in message and "rejected 2 times" in message
    if form == "ErrorResponse":
        assert "already exists" in message


def test_no_change_call_when_nothing_changes(harness: Route53Harness) -> None:
    name = owner(harness)
    store, strict = strict_store(harness.moto.url)
    kept = record(name, "a1")
    store.add({kept}, 300)
    assert strict.calls["change_resource_record_sets"] == 1
    store.add({kept}, 600)
    shouting = Record(kept.owner.upper(), 3, 1, 1, kept.data.upper())
    store.add({shouting}, 300)
    store.delete({record(name, "ff")})
    store.delete({record(owner(harness), "ff")})
    assert strict.calls["change_resource_record_sets"] == 1
    # one change batch for both owner names: they are in the same hosted zone
    second = owner(harness)
    store.add({record(name, "b2"), record(second, "b2")}, 300)
    assert strict.calls["change_resource_record_sets"] == 2
    assert harness.backend_records(second) == {record(second, "b2")}
    assert strict.calls["get_change"] == 0, "moto answers INSYNC at once"


# Many lineages at once ------------------------------------------------------


def test_many_items_are_one_change_batch_per_zone(harness: Route53Harness) -> None:
    store, strict = strict_store(harness.moto.url)
    names = [owner(harness) for _ in range(5)]
    kept = record(names[0], "0e")
    harness.other_host().add({kept}, 300)
    items = [({record(n, "a1"), record(n, "b2")}, 300) for n in names]
    assert store.add_many(items) == [None] * 5
    assert strict.calls["change_resource_record_sets"] == 1
    for n in names:
        expected = {record(n, "a1"), record(n, "b2")} | ({kept} if n == names[0] else set())
        assert harness.backend_records(n) == expected
    assert store.delete_many([({record(n, "a1")}, ()) for n in names]) == [None] * 5
    assert strict.calls["change_resource_record_sets"] == 2
    assert harness.backend_records(names[0]) == {kept, record(names[0], "b2")}
    assert harness.backend_records(names[4]) == {record(names[4], "b2")}


def test_a_batch_raced_at_one_name_is_read_again_and_retried_whole(
    harness: Route53Harness,
) -> None:
    names = [owner(harness) for _ in range(3)]
    ours, strict = strict_store(harness.moto.url)
    other = harness.other_host()
    theirs = record(names[1], "c3")
    strict.before_change.append(lambda: other.add({theirs}, 300))
    assert ours.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 3
    assert strict.calls["change_resource_record_sets"] == 2
    assert harness.backend_records(names[1]) == {record(names[1], "a1"), theirs}
    assert harness.backend_records(names[2]) == {record(names[2], "a1")}


def test_an_item_outside_every_zone_fails_alone(harness: Route53Harness) -> None:
    store, strict = strict_store(harness.moto.url)
    inside = owner(harness)
    outside = "_25._tcp.mail.elsewhere.example."
    errors = store.add_many([({record(outside, "a1")}, 300), ({record(inside, "a1")}, 300)])
    assert errors[1] is None and harness.backend_records(inside) == {record(inside, "a1")}
    assert isinstance(errors[0], StoreError)
    assert "no hosted zone contains the name" in str(errors[0])


def test_batches_stay_within_route53_limits(
    harness: Route53Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route53, "BATCH_VALUES", 2)
    store, strict = strict_store(harness.moto.url)
    names = [owner(harness) for _ in range(3)]
    assert store.add_many([({record(n, "a1")}, 300) for n in names]) == [None] * 3
    # One value per owner (a CREATE), two values per batch: two batches.
    assert strict.calls["change_resource_record_sets"] == 2
    assert all(harness.backend_records(n) == {record(n, "a1")} for n in names)


def test_merged_rrset_takes_the_callers_ttl(harness: Route53Harness) -> None:
    name = owner(harness)
    store = harness.store()
    store.add({record(name, "a1")}, 300)
    store.add({record(name, "b2")}, 600)
    assert store.list(name).ttl == 600
    store.delete({record(name, "a1")})
    assert store.list(name).ttl == 600
    store.delete({record(name, "b2")})
    assert tlsa_values(harness._backend, harness._zone_id, name) == []


def test_values_are_read_as_route53_writes_them(harness: Route53Harness) -> None:
    """Upper-case hex and extra spaces parse, and a swap repeats them verbatim."""
    name = owner(harness)
    upper = record(name, "ab")
    value = f"3  1 1 {upper.data.upper()}"
    harness._backend.change_resource_record_sets(
        HostedZoneId=harness._zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": "TLSA",
                        "TTL": 120,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
            ]
        },
    )
    store = harness.store()
    assert store.list(name).records == {upper}
    store.add({upper}, 300)  # present already: nothing to do
    store.add({record(name, "cd")}, 300)
    assert harness.backend_records(name) == {upper, record(name, "cd")}
    store.delete({upper, record(name, "cd")})
    assert harness.backend_records(name) == set()


def test_waits_until_the_change_is_insync(harness: Route53Harness) -> None:
    store, strict = strict_store(harness.moto.url)
    store.poll_interval = (0.01, 0.02)
    strict.pending = 3  # the change answer and two GetChange answers
    store.add({record(owner(harness), "a1")}, 300)
    assert strict.calls["get_change"] == 3


def test_not_insync_in_time_is_no_error(harness: Route53Harness) -> None:
    store, strict = strict_store(harness.moto.url, sync_timeout=0.1)
    store.poll_interval = (0.02, 0.02)
    strict.pending = 1000
    name = owner(harness)
    store.add({record(name, "a1")}, 300)
    assert harness.backend_records(name) == {record(name, "a1")}
    assert 1 <= strict.calls["get_change"] <= 10


def test_routing_policy_rrset_is_left_alone() -> None:
    name = "_25._tcp.mx.dane.test."
    weighted = rrsets_xml(
        name,
        (f"3 1 1 {'ab' * 32}",),
        "<SetIdentifier>blue</SetIdentifier><Weight>10</Weight>",
    )
    with fake_route53(zone_then((200, weighted))) as fake:
        store = Route53Store(fake.url, timeout=2, http_attempts=1)
        with pytest.raises(StoreError, match="routing policy"):
            store.add({record(name, "cd")}, 300)
        assert not [r for r in fake.requests if r[0] == "POST"]


# Zones ------------------------------------------------------------------------


def _zone(moto: Moto, name: str, **kwargs: Any) -> str:
    answer = moto.client().create_hosted_zone(
        Name=name, CallerReference=str(uuid.uuid4()), **kwargs
    )
    return str(answer["HostedZone"]["Id"]).rsplit("/", 1)[-1]


def test_longest_zone_suffix_wins(moto: Moto) -> None:
    parent = f"p{uuid.uuid4().hex[:8]}.test."
    parent_id = _zone(moto, parent)
    child_id = _zone(moto, f"child.{parent}")
    store, strict = strict_store(moto.url)
    backend = moto.client()
    cases = {
        f"_25._tcp.mx.child.{parent}": child_id,
        f"_25._tcp.a.b.c.mx.child.{parent}": child_id,
        f"_25._tcp.mx.{parent}": parent_id,
        # "xchild" ends in "child" as a string, not as a label
        f"_25._tcp.mx.xchild.{parent}": parent_id,
    }
    for name, expected in cases.items():
        store.add({record(name, "a1")}, 300)
        other = child_id if expected == parent_id else parent_id
        assert tlsa_values(backend, expected, name), name
        assert not tlsa_values(backend, other, name), name
    assert strict.calls["list_hosted_zones"] == 1, "the zone list is read once per store"


def test_public_zone_preferred_to_a_private_one(moto: Moto) -> None:
    parent = f"v{uuid.uuid4().hex[:8]}.test."
    public_id = _zone(moto, parent)
    vpc = moto.client("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    private_id = _zone(
        moto,
        f"mx.{parent}",
        HostedZoneConfig={"PrivateZone": True, "Comment": "split horizon"},
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
    )
    name = f"_25._tcp.mx.{parent}"
    Route53Store(moto.url, timeout=5).add({record(name, "a1")}, 300)
    assert tlsa_values(moto.client(), public_id, name)
    assert not tlsa_values(moto.client(), private_id, name)
    # With no public zone around, the private zone is used.
    alone = f"w{uuid.uuid4().hex[:8]}.test."
    alone_id = _zone(
        moto,
        alone,
        HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
    )
    name = f"_25._tcp.mx.{alone}"
    Route53Store(moto.url, timeout=5).add({record(name, "a1")}, 300)
    assert tlsa_values(moto.client(), alone_id, name)


def test_owner_outside_every_zone(moto: Moto) -> None:
    store = Route53Store(moto.url, timeout=5)
    with pytest.raises(StoreError) as info:
        store.list("_25._tcp.mx.example.invalid.")
    count = len(moto.client().list_hosted_zones()["HostedZones"])
    assert str(info.value) == (
        "route53 store: cannot list TLSA records at _25._tcp.mx.example.invalid.: no hosted "
        f"zone contains the name ({count} listed with the credentials from the environment "
        "(AWS_ACCESS_KEY_ID)); create the zone in Route 53, or use the credentials of the AWS "
        "account that holds it"
    )


def test_two_zones_of_the_same_name_are_refused(moto: Moto) -> None:
    twin = f"t{uuid.uuid4().hex[:8]}.test."
    first, second = _zone(moto, twin), _zone(moto, twin)
    with pytest.raises(StoreError) as info:
        Route53Store(moto.url, timeout=5).add({record(f"_25._tcp.mx.{twin}", "a1")}, 300)
    message = str(info.value)
    assert first in message and second in message and "delete the unused one" in message


# Errors and secrets -------------------------------------------------------------
#
# Each failure an operator can meet is one line naming the cause and the fix.
# moto gives the refusals of the credentials themselves; the loopback fake
# gives AWS's error answers that moto cannot (IAM policies on its REST APIs,
# throttling, expired session tokens, clock skew).

NAME = "_25._tcp.mx.dane.test."
NEEDS = (
    "the store needs route53:ListHostedZones, route53:ListResourceRecordSets, "
    "route53:ChangeResourceRecordSets, route53:GetChange"
)


def failure(operation: Any, *secrets: str) -> StoreError:
    """The StoreError ``operation`` raises, checked to be one line free of secrets."""
    with pytest.raises(StoreError) as info:
        operation()
    message = str(info.value)
    assert "\n" not in message and message.startswith("route53 store: cannot "), message
    for secret in (FAKE_KEY_ID, FAKE_SECRET, WRONG_SECRET, *secrets):
        assert secret not in message
    return info.value


def fake_store(url: str, **kwargs: Any) -> Route53Store:
    store = Route53Store(url, timeout=2, **{"http_attempts": 1, **kwargs})
    store.poll_interval = (0.01, 0.01)
    return store


def test_refusals_say_what_and_hide_the_keys(harness: Route53Harness) -> None:
    name = owner(harness)
    reasons = {}
    for kind, store, operations in harness.failing():
        with pytest.raises(StoreError) as info:
            if "add" in operations and len(operations) == 1:
                store.add({record(name, "a1")}, 300)
            else:
                store.list(name)
        reasons[kind] = str(info.value)
    for message in reasons.values():
        assert message.startswith("route53 store: cannot "), message
        for secret in harness.secrets:
            assert secret not in message
    assert "AWS does not know the access key" in reasons["auth refused: unknown key"]
    assert "the secret access key from" in reasons["auth refused: bad secret"]
    assert "AWS denied route53:ChangeResourceRecordSets" in reasons["auth refused: IAM policy"]
    assert "cannot connect to http://127.0.0.1:" in reasons["server down"]
    assert "timed out" in reasons["timeout"]
    assert "malformed answer" in reasons["malformed answer"]
    assert "malformed answer" in reasons["malformed TLSA"]


ZONE_ARN = "arn:aws:route53:::hostedzone/ZFAKE"


@pytest.mark.parametrize(
    ("action", "resource", "on"),
    [
        ("ListHostedZones", "*", ""),
        ("ListResourceRecordSets", ZONE_ARN, " on hosted zone dane.test. (ZFAKE)"),
        ("ChangeResourceRecordSets", ZONE_ARN, " on hosted zone dane.test. (ZFAKE)"),
        ("GetChange", "arn:aws:route53:::change/CFAKE", ""),
    ],
)
def test_access_denied_names_the_denied_action_and_all_the_store_needs(
    aws_env: None, action: str, resource: str, on: str
) -> None:
    denied = (403, denied_xml(action, resource))
    with fake_route53(one_zone({action: denied})) as fake:
        error = failure(lambda: fake_store(fake.url).add({record(NAME, "a1")}, 300))
        asked = [action_of(*r) for r in fake.requests]
    assert str(error) == (
        f"route53 store: cannot add 1 TLSA record(s) at {NAME}: AWS denied route53:{action}"
        f"{on} to arn:aws:iam::123456789012:user/certbot (AccessDenied); allow it in the IAM "
        f"policy of that user or role ({NEEDS})"
    )
    assert asked[-1] == action and asked.count(action) == 1, "a refusal is not retried"


def test_access_denied_without_an_identity_names_the_credentials(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = (403, error_xml("AccessDenied", "Access Denied"))
    with fake_route53(one_zone({"ListHostedZones": denied})) as fake:
        error = failure(lambda: fake_store(fake.url).list(NAME))
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: AWS denied "
        "route53:ListHostedZones to the credentials from the environment (AWS_ACCESS_KEY_ID) "
        f"(AccessDenied); allow it in the IAM policy of that user or role ({NEEDS})"
    )


def test_unknown_access_key(moto_auth: AuthMoto) -> None:
    """moto knows only the IAM user's key; the environment holds another."""
    store = Route53Store(moto_auth.server.url, timeout=2, http_attempts=1)
    error = failure(lambda: store.list(NAME), moto_auth.secret)
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: AWS does not know the access "
        "key from the environment (AWS_ACCESS_KEY_ID) (InvalidClientTokenId): it was deleted, "
        "deactivated or mistyped; put a current access key of the IAM user there"
    )


def test_wrong_secret_in_the_credentials_file(
    moto_auth: AuthMoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    before = credentials.read_text()
    credentials.write_text(
        f"[default]\naws_access_key_id = {moto_auth.key_id}\n"
        f"aws_secret_access_key = {WRONG_SECRET}\n"
    )
    try:
        store = Route53Store(moto_auth.server.url, timeout=2, http_attempts=1)
        error = failure(lambda: store.list(NAME), moto_auth.key_id, moto_auth.secret)
    finally:
        credentials.write_text(before)
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: AWS rejected the request "
        f"signature (SignatureDoesNotMatch): the secret access key from {credentials} "
        "(profile default) does not belong to its access key id; copy both from the same "
        "IAM access key"
    )


def test_expired_session_token(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "FwoGZXIvYXdzEXAMPLEdanetestsessiontokenNOTREAL"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    expired = (403, error_xml("ExpiredToken", "The security token included in the request "
                              "is expired"))
    with fake_route53(one_zone({"ListHostedZones": expired})) as fake:
        error = failure(lambda: fake_store(fake.url).list(NAME), token)
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: the temporary AWS credentials "
        "from the environment (AWS_ACCESS_KEY_ID) have expired (ExpiredToken); renew them, or "
        "use an access key or an instance role, which renew themselves"
    )


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("RequestExpired", "Request has expired."),
        ("SignatureDoesNotMatch", "Signature expired: 20260101T000000Z is now earlier than "
         "20260101T001000Z (20260101T001500Z - 5 min.)"),
    ],
)
def test_a_wrong_clock(aws_env: None, code: str, text: str) -> None:
    with fake_route53(one_zone({"ListHostedZones": (403, error_xml(code, text))})) as fake:
        error = failure(lambda: fake_store(fake.url).list(NAME))
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: AWS refused the request as "
        f"signed at the wrong time ({code}): this host's clock is off; synchronise it "
        "(chrony, systemd-timesyncd)"
    )


def test_an_incomplete_signature(aws_env: None) -> None:
    refused = (403, error_xml("IncompleteSignature", "Authorization header requires "
                              "'Credential' parameter."))
    with fake_route53(one_zone({"ListHostedZones": refused})) as fake:
        error = failure(lambda: fake_store(fake.url).list(NAME))
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: AWS rejected the request "
        "signature (IncompleteSignature); check the keys in the environment (AWS_ACCESS_KEY_ID)"
    )


@pytest.mark.parametrize("body", [b"", b"<html><body>403 Forbidden</body></html>"])
def test_a_refusal_without_an_aws_error_code(aws_env: None, body: bytes) -> None:
    """A proxy or gateway in front of the endpoint refuses in its own words."""
    with fake_route53(one_zone({"ListHostedZones": (403, body)})) as fake:
        error = failure(lambda: fake_store(fake.url).list(NAME))
    assert str(error) == (
        f"route53 store: cannot list TLSA records at {NAME}: AWS refused the request (HTTP "
        "403); check the credentials from the environment (AWS_ACCESS_KEY_ID) and the IAM "
        "policy of their user or role"
    )


THROTTLED = (400, error_xml("Throttling", "Rate exceeded"))
BUSY = (400, error_xml("PriorRequestNotComplete", "The request was rejected because Route 53 "
                       "was still processing a prior request."))


@pytest.mark.parametrize("action", ["ListHostedZones", "ChangeResourceRecordSets"])
def test_throttling_is_retried_then_a_soft_error(aws_env: None, action: str) -> None:
    with fake_route53(one_zone({action: THROTTLED})) as fake:
        error = failure(lambda: fake_store(fake.url, http_attempts=2).add({record(NAME)}, 300))
        asked = [action_of(*r) for r in fake.requests]
    assert isinstance(error, SoftStoreError)
    assert asked.count(action) == 2, "botocore retried once"
    assert str(error) == (
        f"route53 store: cannot add 1 TLSA record(s) at {NAME}: Route 53 throttled the "
        "requests (Throttling) after 2 attempts; the next check retries (Route 53 allows "
        "five requests a second per AWS account, shared by every tool that uses the account)"
    )


def test_throttling_once_is_retried_quietly(aws_env: None) -> None:
    answers = [THROTTLED, (200, change_xml())]
    with fake_route53(one_zone({"ChangeResourceRecordSets": answers})) as fake:
        fake_store(fake.url, http_attempts=2).add({record(NAME)}, 300)
        asked = [action_of(*r) for r in fake.requests]
    assert asked.count("ChangeResourceRecordSets") == 2


def test_a_prior_change_still_in_progress_is_a_soft_error(aws_env: None) -> None:
    with fake_route53(one_zone({"ChangeResourceRecordSets": BUSY})) as fake:
        error = failure(lambda: fake_store(fake.url, http_attempts=2).add({record(NAME)}, 300))
    assert isinstance(error, SoftStoreError)
    assert str(error) == (
        f"route53 store: cannot add 1 TLSA record(s) at {NAME}: Route 53 was still applying "
        "an earlier change to hosted zone dane.test. (ZFAKE) (PriorRequestNotComplete) after "
        "2 attempts; the next check retries"
    )


def test_a_denied_getchange_fails_only_the_owners_of_that_change(aws_env: None) -> None:
    """The change was applied; the missing permission is still reported, per item."""
    denied = (403, denied_xml("GetChange", "arn:aws:route53:::change/CFAKE"))
    with fake_route53(one_zone({"GetChange": denied})) as fake:
        errors = fake_store(fake.url).add_many(
            [({record(NAME)}, 300), ({record("_25._tcp.mail.example.invalid.")}, 300)]
        )
    assert [type(e) for e in errors] == [StoreError, StoreError]
    assert "AWS denied route53:GetChange" in str(errors[0])
    assert "no hosted zone contains the name" in str(errors[1])


def test_hosted_zone_deleted_meanwhile(moto: Moto) -> None:
    gone = f"g{uuid.uuid4().hex[:8]}.test."
    gone_id = _zone(moto, gone)
    name = f"_25._tcp.mx.{gone}"
    store = Route53Store(moto.url, timeout=5)
    assert store.list(name).records == frozenset()
    moto.client().delete_hosted_zone(Id=gone_id)
    error = failure(lambda: store.add({record(name)}, 300))
    assert str(error) == (
        f"route53 store: cannot add 1 TLSA record(s) at {name}: hosted zone {gone} "
        f"({gone_id}) no longer exists (NoSuchHostedZone); it was deleted while certbot-dane "
        "ran: check the account's hosted zones, then run again"
    )


def test_no_credentials(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = Route53Store(moto.url, timeout=2)
    error = failure(lambda: store.list(f"_25._tcp.mx.{ZONE}"))
    credentials = os.environ["AWS_SHARED_CREDENTIALS_FILE"]
    config = os.environ["AWS_CONFIG_FILE"]
    assert str(error) == (
        f"route53 store: cannot list TLSA records at _25._tcp.mx.{ZONE}: no AWS credentials "
        f"found: boto3 looked in the environment (AWS_ACCESS_KEY_ID), {credentials}, {config} "
        f"and for an instance or container role; put an access key in {credentials} or give "
        "the host a role"
    )


def test_no_credentials_names_the_running_users_home(
    moto: Moto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without AWS_SHARED_CREDENTIALS_FILE boto3 reads ~/.aws of the user running
    certbot; a sudo or systemd HOME other than expected shows in the message."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    error = failure(lambda: Route53Store(moto.url, timeout=2).list(NAME))
    assert f"{tmp_path}/.aws/credentials, {tmp_path}/.aws/config" in str(error)
    assert str(error).endswith(f"put an access key in {tmp_path}/.aws/credentials or give the "
                               "host a role")


def test_partial_credentials(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = Route53Store(moto.url, timeout=2)
    error = failure(lambda: store.list(f"_25._tcp.mx.{ZONE}"))
    assert str(error) == (
        f"route53 store: cannot list TLSA records at _25._tcp.mx.{ZONE}: incomplete AWS "
        "credentials (Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY); "
        "give both the access key id and the secret access key"
    )


# Settings ---------------------------------------------------------------------


def test_settings_with_api_url(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No region configured: the store must still sign for the explicit endpoint.
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator=None)
    options = {"tlsa": "311:25", "dns": "route53", "api_url": moto.url + "/"}
    settings = settings_mod.from_options(options, config, "mail.example.com")
    assert settings.store == "route53"
    assert settings.api_url == moto.url
    assert settings.credentials is None
    store = open_store(settings, "/etc/letsencrypt", timeout=5)
    assert isinstance(store, Route53Store)
    name = f"_25._tcp.settings-{uuid.uuid4().hex[:8]}.{ZONE}"
    store.add({record(name, "a1")}, 300)
    assert store.list(name).records == {record(name, "a1")}


def test_settings_follow_the_route53_authenticator(aws_env: None, tmp_path: Path) -> None:
    config = SimpleNamespace(config_dir=str(tmp_path), authenticator="dns-route53")
    settings = settings_mod.from_options({"tlsa": "311:25"}, config, "mail.example.com")
    assert settings.store == "route53" and settings.api_url is None


def test_opening_the_store_sends_nothing(aws_env: None, tmp_path: Path) -> None:
    with fake_route53(lambda m, p, q: (500, b"")) as fake:
        config = SimpleNamespace(config_dir=str(tmp_path), authenticator=None)
        options = {"tlsa": "311:25", "dns": "route53", "api_url": fake.url}
        settings = settings_mod.from_options(options, config, "mail.example.com")
        store = open_store(settings, "/etc/letsencrypt")
        assert isinstance(store, Route53Store) and store.endpoint_url == fake.url
        assert fake.requests == []
