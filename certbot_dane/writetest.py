"""``certbot-dane verify --write-test``: do the lineage's DNS credentials work?

A renewal is the worst moment to learn that the TSIG key was rotated, the
API token expired or the update policy lost a name: the new certificate
waits, unserved, until someone notices. This test does what a rollover does
to DNS, with a record nobody uses, while nothing depends on it: it adds one
throw-away TLSA record (random data, ``3 1 1``) at the lineage's first owner
name through the lineage's own store, waits until every authoritative
server serves it signed, deletes it and waits until it is gone.

It changes nothing else. The state and the links are not touched, and the
lineage's lock is held throughout, so a ``check`` running meanwhile can
never take the test record for one of its own. The record gets the TTL of
the RRset already at that name (its other records keep theirs: on BIND and
PowerDNS an added record gives the whole RRset its TTL), else the lineage's
``--dane-record-ttl``, else 3600 as the engine would. Whatever was added is
deleted, whichever step failed.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import state
from .dns import RecordStore, StoreError, open_store
from .lookup import resolver_address
from .observe import Address, ObserveError, Observer, parse_addresses
from .state import LineageFile
from .tlsa import Record

#: How long to wait for the record to appear, and again to go (seconds).
WAIT_TIMEOUT = 60.0
#: The TTL of the test record when the lineage and the name give none (the engine's).
DEFAULT_TTL = 3600
#: The longest single DNS question while waiting (seconds).
QUERY_TIMEOUT = 3.0
FIRST_POLL = 0.1
MAX_POLL = 1.0
LOCK_TIMEOUT = 300.0

Say = Callable[[str], None]


class WriteTestFailed(Exception):
    """A step failed; the message names the step and its cause, on one line."""


@dataclass(frozen=True)
class _Wait:
    """Where the record was (or was no longer) seen, and after how long."""

    done: list[Address]
    pending: dict[Address, str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.pending

    def why(self) -> str:
        """The first server still pending and why, for the failure line."""
        _, reason = sorted(self.pending.items())[0]
        more = len(self.pending) - 1
        return reason + (f" (and {more} more)" if more else "")


@dataclass(frozen=True)
class Plan:
    """Where the test record goes, what stays there, and how to name the credentials."""

    owner: str
    keep: frozenset[Record]
    record_ttl: int | None = None
    credentials: str | None = None


def run(
    config_dir: str,
    data: LineageFile,
    say: Say,
    timeout: float = WAIT_TIMEOUT,
    resolver: str | None = None,
) -> None:
    """Add, see, delete and see gone one test record; WriteTestFailed if a step fails.

    ``resolver`` (else the lineage's, else the system's) finds the zone's
    authoritative servers, unless the lineage names them (--dane-nameservers).
    """
    settings = data.settings
    with state.locked(config_dir, data.lineage, LOCK_TIMEOUT):
        owner, keep = _first_owner(data)
        try:
            store = open_store(settings, config_dir)
        except StoreError as err:
            raise WriteTestFailed(f"write test failed opening the store: {err}") from None
        where = f" (credentials {settings.credentials})" if settings.credentials else ""
        say(f"store opened: {store.name}{where}")
        try:
            address = resolver_address(settings, resolver)
        except (ObserveError, ValueError) as err:
            raise WriteTestFailed(
                f"write test failed finding the authoritative servers of {owner}: {err}"
            ) from None
        observer = Observer(address, parse_addresses(settings.nameservers), QUERY_TIMEOUT)
        plan = Plan(owner, keep, settings.record_ttl, settings.credentials)
        exercise(plan, store, observer, say, timeout)


def exercise(
    plan: Plan, store: RecordStore, observer: Observer, say: Say, timeout: float
) -> None:
    """The test itself, on a store and an observer that are ready."""
    owner = plan.owner
    try:
        servers = observer.authorities(owner)
    except ObserveError as err:
        raise WriteTestFailed(
            f"write test failed finding the authoritative servers of {owner}: {err}"
        ) from None
    try:
        present = store.list(owner)
    except StoreError as err:
        raise WriteTestFailed(f"write test failed listing TLSA at {owner}: {err}") from None
    ttl = present.ttl or plan.record_ttl or DEFAULT_TTL
    record = Record(owner, 3, 1, 1, secrets.token_hex(32))
    line = record.zone_line(ttl)
    try:
        store.add([record], ttl)
    except StoreError as err:
        # Name the file to fix, unless the store's message already does.
        named = plan.credentials and plan.credentials in str(err)
        fix = f" (credentials {plan.credentials})" if plan.credentials and not named else ""
        raise WriteTestFailed(
            f"write test failed adding the test record: {err}{fix}"
            f"{_clean_up(store, record, plan.keep)}"
        ) from None
    say(f"added {line}")
    try:
        seen = _wait(observer, record, servers, timeout, present=True)
    except BaseException:
        # Interrupted (Ctrl-C) while waiting: still leave nothing behind.
        _clean_up(store, record, plan.keep)
        raise
    if seen.ok:
        say(f"seen on {len(servers)}/{len(servers)} authoritative servers "
            f"after {seen.seconds:.1f} s")
    try:
        store.delete([record], plan.keep)
    except StoreError as err:
        first = "" if seen.ok else f"{_not_seen(seen, servers)}; then "
        raise WriteTestFailed(
            f"write test failed {first}deleting the test record: {err}; delete '{line}' by hand"
        ) from None
    say("deleted the test record")
    # A server that never served the record has nothing to forget.
    gone = _wait(observer, record, seen.done, timeout, present=False)
    if gone.ok:
        where = (
            f"{len(servers)}/{len(servers)} authoritative servers"
            if seen.ok
            else f"the {len(seen.done)} of {len(servers)} authoritative servers that served it"
        )
        say(f"gone from {where} after {gone.seconds:.1f} s")
    if not seen.ok:
        raise WriteTestFailed(f"write test failed {_not_seen(seen, servers)}")
    if not gone.ok:
        raise WriteTestFailed(
            f"write test failed waiting for the test record to go: still on "
            f"{len(gone.pending)}/{len(servers)} authoritative servers after "
            f"{gone.seconds:.0f} s: {gone.why()}"
        )


def _first_owner(data: LineageFile) -> tuple[str, frozenset[Record]]:
    """The lineage's first owner name and the served records there (they stay)."""
    rollover = data.rollover
    version = rollover.served or rollover.pending
    if version is None or not version.records:
        raise WriteTestFailed(
            f"write test failed: lineage {data.lineage} has no TLSA records yet; run "
            "'certbot-dane check' first"
        )
    owner = min(r.owner for r in version.records)
    served = rollover.served.records if rollover.served else frozenset()
    return owner, frozenset(r for r in served if r.owner == owner)


def _not_seen(seen: _Wait, servers: list[Address]) -> str:
    return (
        f"waiting for the test record: seen on {len(seen.done)}/{len(servers)} "
        f"authoritative servers after {seen.seconds:.0f} s: {seen.why()}"
    )


def _clean_up(store: RecordStore, record: Record, keep: frozenset[Record]) -> str:
    """Delete a record whose add failed (a timed-out add may have landed).

    Returns '' when nothing is left, else a note for the failure line.
    """
    try:
        store.delete([record], keep)
        return ""
    except StoreError:
        pass
    try:
        view = store.list(record.owner)
    except StoreError:
        return ""
    if record not in view.records:
        return ""
    line = record.zone_line(view.ttl or 0)
    return f"; the test record was added after all: delete '{line}' by hand"


def _wait(
    observer: Observer, record: Record, servers: list[Address], timeout: float, present: bool
) -> _Wait:
    """Poll the servers until each serves the record signed (``present``) or not at all."""
    start = time.monotonic()
    deadline = start + timeout
    pending = {server: "not asked yet" for server in servers}
    done: list[Address] = []
    delay = FIRST_POLL
    while True:
        for server in sorted(pending):
            observer.timeout = max(0.1, min(QUERY_TIMEOUT, deadline - time.monotonic()))
            reason = _look(observer, record, server, present)
            if reason:
                pending[server] = reason
            else:
                del pending[server]
                done.append(server)
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            return _Wait(sorted(done), pending, time.monotonic() - start)
        time.sleep(min(delay, left))
        delay = min(delay * 2, MAX_POLL)


def _look(observer: Observer, record: Record, server: Address, present: bool) -> str:
    """'' when the server is as wanted, else what it does instead."""
    where = f"{server[0]}:{server[1]}"
    try:
        found, signed, _ = observer.authoritative_view(record.owner, server)
    except ObserveError as err:
        return str(err)
    if not present:
        return f"{where} still serves it" if record in found else ""
    if record not in found:
        return f"{where} does not serve it"
    if not signed:
        return f"{where} serves it without a signature (is the zone signed?)"
    return ""
