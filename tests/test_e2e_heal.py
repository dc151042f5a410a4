"""Records that heal, on the real lab: the audit, TTL changes, and a quiet certbot renew.

The timer's ``certbot-dane check`` audits settled lineages every
``--dane-audit-interval`` seconds and re-publishes a wanted record that went
missing from DNS; ``certbot renew`` never audits, and for a settled lineage
asks DNS nothing at all. DNS questions are counted in the query logs of the
lab's BIND (every question to the authoritative server, the record store's
included) and Unbound (every question to the validating resolver): lines
naming the lineage's host, from the byte where the logs ended before.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.rdata
import dns.rdatatype
import pytest

from tests.cli_support import CliDeployment, host_for
from tests.lab.lab import Lab
from tests.lab.probe import Prober
from tests.lab.service import DaneService
from tests.test_e2e import wait_probe_ok

pytestmark = pytest.mark.lab

AUDIT_INTERVAL = 8
FOREIGN = "3 1 1 " + "cd" * 32


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    return CliDeployment(lab, tmp_path, host_for(request, "heal"))


class QueryCount:
    """Questions about ``host`` that reached the lab's BIND and Unbound from now on."""

    def __init__(self, lab: Lab, host: str) -> None:
        self.host = host
        self.logs = {
            "bind": lab.authority.directory / "named.log",
            "unbound": lab.unbound_dir / "unbound.log",
        }
        self.start = {name: path.stat().st_size for name, path in self.logs.items()}

    def lines(self) -> dict[str, list[str]]:
        time.sleep(0.3)  # both servers log a question as they answer it
        found = {}
        for name, path in self.logs.items():
            with path.open("rb") as log:
                log.seek(self.start[name])
                text = log.read().decode(errors="replace")
            found[name] = [
                line for line in text.splitlines() if self.host in line and _is_query(name, line)
            ]
        return found


def _is_query(server: str, line: str) -> bool:
    if server == "bind":
        return " query: " in line
    return " info: 127.0.0.1 " in line


def delete_by_hand(lab: Lab, owner: str, rdata: str) -> None:
    """An RFC 2136 delete of that one record, as an administrator would send it."""
    update = lab.update()
    update.delete(owner, dns.rdata.from_text("IN", "TLSA", rdata))
    assert lab.send_update(update) == 0
    for _ in range(100):
        if rdata not in served_at(lab, owner):
            return
        time.sleep(0.02)
    raise AssertionError(f"{rdata} still served")


def served_at(lab: Lab, owner: str) -> set[str]:
    return {
        rd.to_text()
        for rrset in lab.auth_query(owner, "TLSA").answer
        if rrset.rdtype == dns.rdatatype.TLSA
        for rd in rrset
    }


def add_by_hand(lab: Lab, owner: str, rdata: str) -> None:
    """An RFC 2136 add of one record; BIND serves it once it has signed it."""
    update = lab.update()
    update.add(owner, lab.record_ttl, "TLSA", rdata)
    assert lab.send_update(update) == 0
    for _ in range(100):
        if rdata in served_at(lab, owner):
            return
        time.sleep(0.02)
    raise AssertionError(f"{rdata} not served")


def check_until_settled(dep: CliDeployment, limit: int = 30) -> None:
    for _ in range(limit):
        done = dep.check()
        assert done.returncode == 0, done.stderr
        if dep.status()["state"] == "settled":
            return
        time.sleep(1.0)
    raise AssertionError(f"not settled: {dep.status()}")


def test_a_record_deleted_by_hand_is_republished_by_the_first_audit_after_the_interval(
    dep: CliDeployment,
) -> None:
    dep.certbot(
        "run", *dep.dns_args(), *dep.dane_args("311:25,211:25"),
        "--dane-audit-interval", str(AUDIT_INTERVAL), "-d", dep.host,
    )
    add_by_hand(dep.lab, dep.owner, FOREIGN)
    everything = dep.authoritative_records()
    (ours,) = [r for r in everything if r.startswith("3 1 1 ") and r != FOREIGN]
    assert len(everything) == 3
    delete_by_hand(dep.lab, dep.owner, ours)
    snapshot = dep.snapshot()
    audited = dep.lineage_file.rollover.audited_at
    assert audited is not None and time.time() < audited + AUDIT_INTERVAL - 2

    early = dep.check()
    assert early.stdout == f"{dep.host}: nothing to do\n", "the audit is not due yet"
    assert dep.snapshot() == snapshot and ours not in dep.authoritative_records()

    time.sleep(max(0.0, audited + AUDIT_INTERVAL - time.time()) + 0.2)
    began = time.time()
    due = dep.check()
    assert due.returncode == 0, due.stderr
    assert due.stdout.startswith(f"{dep.host}: repaired 1 record(s) missing from DNS"), due.stdout
    assert dep.authoritative_records() == everything, "only the missing record came back"
    after = dep.lineage_file.rollover
    assert after.served is not None and after.served.number == 1 and after.pending is None
    assert dep.served() == 1 and dep.snapshot()[1:] == snapshot[1:], "links and versions stay"

    log = (dep.logs / "certbot-dane.log").read_text().splitlines()
    named = [line for line in log if ours.split()[3][:16] in line]
    assert len(named) == 1 and ":WARNING:" in named[0] and "repaired: re-published" in named[0]
    repaired = dep.status()["repaired"]
    assert began <= repaired["time"] <= time.time()
    assert repaired["records"] == f"{dep.owner} TLSA {ours[:6]}{ours.split()[3][:16]}..."
    # Re-published records are proven again (the hold), then the lineage is settled.
    check_until_settled(dep)
    assert dep.authoritative_records() == everything


def test_certbot_renew_of_a_settled_lineage_asks_dns_nothing(dep: CliDeployment) -> None:
    dep.issue()
    check_until_settled(dep)
    count = QueryCount(dep.lab, dep.host)
    done = dep.certbot("renew", "--no-random-sleep-on-renew")
    assert "No renewals were attempted" in done.stdout
    assert count.lines() == {"bind": [], "unbound": []}
    # The count sees what a command asks: status asks the resolver, which asks
    # BIND once its cached copy is gone.
    dep.lab.flush_resolver(dep.owner)
    count = QueryCount(dep.lab, dep.host)
    dep.status()
    seen = count.lines()
    assert seen["bind"] and seen["unbound"], seen


OLD_TTL = 20
NEW_TTL = 2


@contextmanager
def served_and_probed(dep: CliDeployment) -> Iterator[Prober]:
    with DaneService(dep.dane_dir()) as service:
        wait_probe_ok(dep, service)
        with Prober(dep.host, service.port, dep.lab.resolver, dep.owner) as prober:
            yield prober


def rrset_ttl(lab: Lab, owner: str) -> int:
    (rrset,) = [r for r in lab.auth_query(owner, "TLSA").answer if r.rdtype == dns.rdatatype.TLSA]
    return rrset.ttl


def test_a_lowered_record_ttl_is_applied_by_the_next_renew_and_the_hold_counts_the_old_one(
    dep: CliDeployment,
) -> None:
    """certbot reconfigure --dane-record-ttl lowers the TTL; the next certbot renew
    changes it in DNS; a new-key renewal right after waits until caches holding the
    RRset under the old TTL have forgotten it, and a DANE client never fails."""
    args = dep.dane_args()
    args[args.index("--dane-record-ttl") + 1] = str(OLD_TTL)
    dep.certbot("run", *dep.dns_args(), *args, "-d", dep.host)
    assert rrset_ttl(dep.lab, dep.owner) == OLD_TTL
    records = dep.authoritative_records()
    dep.certbot("reconfigure", "--cert-name", dep.host, "--dane-record-ttl", str(NEW_TTL))
    conf = (dep.config / "renewal" / f"{dep.host}.conf").read_text()
    assert f"dane_record_ttl = {NEW_TTL}" in conf.splitlines()
    with served_and_probed(dep) as prober:
        # A cache that has the RRset under the old TTL, fresh.
        dep.lab.flush_resolver(dep.owner)
        dep.lab.resolver_query(dep.owner, "TLSA")
        cached = time.time()
        dep.certbot("renew", "--no-random-sleep-on-renew")
        data = dep.lineage_file
        assert data.settings.record_ttl == NEW_TTL
        assert rrset_ttl(dep.lab, dep.owner) == NEW_TTL, "changed by the same run"
        assert dep.authoritative_records() == records
        assert data.timeline[-1].what == "ttl"
        assert data.timeline[-1].detail == f"{dep.owner} {OLD_TTL} s -> {NEW_TTL} s"
        retimed = data.timeline[-1].time

        dep.renew()
        row = dep.status()
        assert row["waiting_for"] == "hold", row
        assert row["until"] >= retimed + OLD_TTL + dep.margin - 0.01, "the hold counts the old TTL"
        dep.check_until_switched(2)
        switched = max(dep.events("switched"))
        assert switched >= retimed + OLD_TTL + dep.margin - 0.01
        assert switched >= cached + OLD_TTL
        prober.stop()
        assert prober.successes and prober.failures == [], prober.failures[:3]
