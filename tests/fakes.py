"""An in-memory DNS for engine tests: a store and an observer that share it.

Only for unit tests of the engine shell; the promise itself is proven
against BIND 9 and Unbound in the lab tests.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from certbot_dane.dns.base import RecordStore, RRsetView, StoreError
from certbot_dane.observe import Alias, AuditView, Observation, ObserveError
from certbot_dane.tlsa import Record

_T = TypeVar("_T")


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


class FakeDNS:
    def __init__(self, negative_ttl: int = 5) -> None:
        self.zone: dict[str, set[Record]] = {}
        self.ttls: dict[str, int] = {}
        self.negative_ttl = negative_ttl
        self.down = False
        self.validating = True
        self.operations: list[tuple[str, Record]] = []
        self.crash_at: int | None = None
        self.queries = 0

    def tick(self, what: str) -> None:
        """Count a mutating step; raise Crash at the chosen one."""
        if self.crash_at is not None:
            self.crash_at -= 1
            if self.crash_at < 0:
                self.crash_at = None
                raise Crash(what)

    def records(self) -> set[Record]:
        return set().union(*self.zone.values()) if self.zone else set()


class FakeStore(RecordStore):
    name = "fake"

    def __init__(self, dns: FakeDNS) -> None:
        self.dns = dns

    @classmethod
    def from_settings(cls, settings: object, config_dir: str, timeout: float = 10.0) -> FakeStore:
        raise NotImplementedError("engine tests hand the store in directly")

    def _check(self, what: str) -> None:
        if self.dns.down:
            raise StoreError(f"fake store: cannot {what}: connection refused")

    def list(self, owner: str) -> RRsetView:
        self._check(f"list {owner}")
        records = frozenset(self.dns.zone.get(owner, set()))
        return RRsetView(records, self.dns.ttls.get(owner) if records else None)

    def add(self, records: Iterable[Record], ttl: int) -> None:
        self._check("add")
        for record in records:
            self.dns.tick("add")
            self.dns.zone.setdefault(record.owner, set()).add(record)
            self.dns.ttls[record.owner] = ttl
            self.dns.operations.append(("add", record))

    def delete(self, records: Iterable[Record], keep: Iterable[Record] = ()) -> None:
        self._check("delete")
        for record in records:
            self.dns.tick("delete")
            self.dns.zone.get(record.owner, set()).discard(record)
            self.dns.operations.append(("delete", record))

    def retime(self, records: Iterable[Record], ttl: int) -> None:
        self._check("retime")
        for record in records:
            self.dns.tick("retime")
            self.dns.ttls[record.owner] = ttl
            self.dns.operations.append(("retime", record))


class FakeObserver:
    def __init__(self, dns: FakeDNS) -> None:
        self.dns = dns
        self.queries = 0

    def _check(self) -> None:
        self.queries += 1
        if self.dns.down:
            raise ObserveError("cannot ask for TLSA at 127.0.0.1:53: timed out")

    def prior_ttl(self, owners: Iterable[str]) -> int:
        self._check()
        ttls = [
            self.dns.ttls[o] if self.dns.zone.get(o) else self.dns.negative_ttl for o in owners
        ]
        return max(ttls, default=0)

    def observe(self, records: Iterable[Record]) -> Observation:
        self._check()
        wanted = set(records)
        present = wanted <= self.dns.records()
        ttl = max((self.dns.ttls.get(r.owner, 0) for r in wanted), default=0)
        return Observation(present, present and self.dns.validating, ttl)

    # The engine asks for many lineages at once; the fake answers one by one.

    def prior_ttl_many(self, groups: Sequence[Iterable[str]]) -> list[int | ObserveError]:
        return [_attempt(self.prior_ttl, group) for group in groups]

    def observe_many(
        self, groups: Sequence[Iterable[Record]], names: object = None
    ) -> list[Observation | ObserveError]:
        return [_attempt(self.observe, group) for group in groups]

    def aliases_many(self, owners: Iterable[str]) -> dict[str, Alias | ObserveError]:
        """No aliases in the fake DNS: every owner is its own place."""
        try:
            self._check()
        except ObserveError as err:
            return {o: err for o in owners}
        return {o: Alias(o) for o in owners}

    def audit(self, records: Iterable[Record]) -> AuditView:
        self._check()
        wanted = set(records)
        present = frozenset(wanted & self.dns.records())
        ttls = {r.owner: self.dns.ttls[r.owner] for r in present}
        return AuditView(present, ttls)

    def audit_many(self, groups: Sequence[Iterable[Record]]) -> list[AuditView | ObserveError]:
        return [_attempt(self.audit, group) for group in groups]


def _attempt(operation: Callable[[Any], _T], argument: object) -> _T | ObserveError:
    try:
        return operation(argument)
    except ObserveError as err:
        return err
