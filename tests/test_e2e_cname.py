"""TLSA owner names that are CNAMEs, end to end on the lab.

The lineage's owner ``_25._tcp.HOST.dane.test.`` is an alias of a shared
target name, in ``dane.test.`` itself or in a second signed zone on the same
BIND (``alias.test.``). The records go to the target; the DANE probe asks
Unbound at the original owner name and follows the CNAME, as a DANE client
does. A watcher asks BIND about every aliased owner name throughout: no TLSA
record may ever be written at a name that holds a CNAME.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest

from tests.deployment import Deployment
from tests.lab.fixtures import running_lab
from tests.lab.lab import Lab, LabZone
from tests.test_e2e import CHECK_INTERVAL, assert_no_probe_failures, issued_served_probed

pytestmark = pytest.mark.lab

LOCKED = "locked.test."


@pytest.fixture(scope="module")
def cname_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``dane.test.``, ``alias.test.`` and ``locked.test.`` (which the lab's key
    may not update) on one BIND, each trusted by Unbound."""
    zones = ("alias.test.", LabZone(LOCKED, updates=False))
    yield from running_lab(tmp_path_factory.mktemp("cname_lab"), extra_zones=zones)


def slug(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")


class NoTlsaAtAliases:
    """Asks BIND every 50 ms for TLSA at names that hold a CNAME; keeps any
    answer with a TLSA RRset at such a name itself."""

    def __init__(self, lab: Lab, names: list[str]) -> None:
        self.lab = lab
        self.names = names
        self.asked = 0
        self.found: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> NoTlsaAtAliases:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.names:
                query = dns.message.make_query(name, dns.rdatatype.TLSA)
                try:
                    answer = dns.query.udp(query, "127.0.0.1", port=self.lab.auth_port, timeout=2)
                except Exception:  # noqa: BLE001 - a lost sample, not a lost watch
                    continue
                self.asked += 1
                owner = dns.name.from_text(name)
                if not any(r.name == owner and r.rdtype == dns.rdatatype.CNAME
                           for r in answer.answer):
                    self.found.append(f"{name} holds no CNAME any more")
                for rrset in answer.answer:
                    if rrset.name == owner and rrset.rdtype == dns.rdatatype.TLSA:
                        self.found.append(rrset.to_text())
            self._stop.wait(0.05)

    def assert_clean(self) -> None:
        assert self.asked > 10, "the watcher hardly ran"
        assert self.found == [], self.found[:5]


def aliased(lab: Lab, root: Path, host: str, target: str, tlsa: str = "311:25") -> Deployment:
    """A deployment whose TLSA owner name is a CNAME to ``target``."""
    dep = Deployment(lab, root, host, tlsa=tlsa)
    lab.publish(dep.owner, "CNAME", target)
    return dep


def updates_at(lab: Lab, name: str) -> list[str]:
    """BIND's log lines of dynamic updates of TLSA records at ``name``."""
    log = lab.authority.directory / "named.log"
    bare = name.rstrip(".")
    return [
        line for line in log.read_text(errors="replace").splitlines()
        if "updating zone" in line and f"'{bare}' TLSA" in line
    ]


def served_records(dep: Deployment) -> set[str]:
    """The served version's records where DNS keeps them, as dig prints them."""
    data = dep.lineage_file.rollover
    assert data.served is not None
    return {
        f"{r.usage} {r.selector} {r.mtype} {r.data}" for r in data.place(data.served.records)
    }


def roll_over_at(dep: Deployment, target: str) -> None:
    """A new-key renewal: the new record goes next to the old at the target,
    the links stay until it is live, the old one goes after the switch."""
    old = dep.authoritative_records(target)
    assert len(old) == 1
    dep.renew()
    assert dep.served() == 1, "the links stay until the new record is live"
    both = dep.authoritative_records(target)
    assert old < both and len(both) == 2, both
    dep.check_until_switched(2, interval=CHECK_INTERVAL)
    new = dep.authoritative_records(target)
    assert len(new) == 1 and not new & old, new


@pytest.mark.parametrize("zone", ["dane.test.", "alias.test."], ids=["same-zone", "other-zone"])
def test_new_key_renewal_through_a_cname(
    cname_lab: Lab, tmp_path: Path, request: pytest.FixtureRequest, zone: str
) -> None:
    name = slug(request)
    target = f"_tlsa.{name}.{zone}"
    dep = aliased(cname_lab, tmp_path, f"{name}.dane.test", target)
    with NoTlsaAtAliases(cname_lab, [dep.owner]) as watch:
        with issued_served_probed(dep):
            assert len(dep.authoritative_records(target)) == 1
            roll_over_at(dep, target)
            assert_no_probe_failures(dep)
    watch.assert_clean()
    assert updates_at(cname_lab, dep.owner) == [], "an update touched the CNAME's name"
    assert updates_at(cname_lab, target), "BIND's log shows no update at the target"
    assert dep.lineage_file.rollover.aliases == ((dep.owner, target),)


def test_status_and_print_show_owner_and_target(
    cname_lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = slug(request)
    target = f"_tlsa.{name}.alias.test."
    dep = aliased(cname_lab, tmp_path, f"{name}.dane.test", target)
    dep.issue()
    row = dep.status()
    assert row["aliases"] == {dep.owner: target}
    assert row["records_visible"] == row["records_wanted"] == 1, row
    table = dep.cli("status").stdout
    assert f"  alias: {dep.owner} -> {target}" in table.splitlines(), table
    (record,) = dep.authoritative_records(target)
    printed = dep.cli("print", "--cert-name", dep.host)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [
        f"; {dep.host} version 1 (served)",
        f"; {dep.owner} is an alias (CNAME) of {target}: its records live there",
        f"{target} 3600 IN TLSA {record}",
    ]
    items = json.loads(dep.cli("print", "--json", "--cert-name", dep.host).stdout)
    assert [(i["owner"], i["aliases"]) for i in items] == [(target, [dep.owner])]


def test_second_lineage_on_the_same_target_keeps_its_records(
    cname_lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two lineages of one host (one config dir) whose owners both point at one
    target, with ``311:25,211:25``: they share the ``2 1 1`` record of Pebble's
    intermediate. The first one rolls over twice (a new key, then a new
    intermediate after a Pebble restart); the second one's records stay at
    the target throughout."""
    name = slug(request)
    target = f"_tlsa.{name}.alias.test."
    deps = [
        aliased(cname_lab, tmp_path, f"{name}-{i}.dane.test", target, "311:25,211:25")
        for i in (1, 2)
    ]
    first, second = deps
    with NoTlsaAtAliases(cname_lab, [d.owner for d in deps]) as watch, ExitStack() as stack:
        for dep in deps:
            stack.enter_context(issued_served_probed(dep))
        theirs = served_records(second)
        assert len(theirs) == 2 and len(second.authoritative_records(target)) == 3, (
            "one 3 1 1 each, one shared 2 1 1"
        )
        first.renew()
        first.check_until_switched(2, interval=CHECK_INTERVAL)
        assert theirs <= first.authoritative_records(target)
        cname_lab.restart_pebble()
        first.forget_acme_account()
        first.renew()
        first.check_until_switched(3, interval=CHECK_INTERVAL)
        records = first.authoritative_records(target)
        assert theirs <= records, f"the second lineage lost {theirs - records}"
        assert len(records) == 4, records
        for dep in deps:
            assert_no_probe_failures(dep)
        data = second.lineage_file.rollover
        assert data.served is not None and data.place(data.served.records) <= data.live
    watch.assert_clean()


def test_target_in_a_zone_the_key_may_not_update(
    cname_lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = slug(request)
    target = f"_tlsa.{name}.{LOCKED}"
    dep = aliased(cname_lab, tmp_path, f"{name}.dane.test", target)
    done = dep.issue(ok=False)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "dane:" in line]
    assert len(lines) == 1, done.stderr
    for part in (dep.owner, target, f"zone {LOCKED}", "REFUSED"):
        assert part in lines[0], lines[0]
    data = dep.lineage_file
    assert data.rollover.owned == frozenset(), "a record was claimed"
    assert data.rollover.published == frozenset()
    assert dep.authoritative_records(target) == set()
    assert dep.served() is None, "no links without records"
    check = dep.check()
    assert check.returncode == 1
    assert check.stderr.count("\n") == 1 and f"zone {LOCKED}" in check.stderr, check.stderr
    assert dep.lineage_file.rollover.owned == frozenset()
    assert updates_at(cname_lab, dep.owner) == []
