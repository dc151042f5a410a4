"""The record store interface: where TLSA records are written.

A store manages individual records at one owner name. It never replaces a
whole RRset, so records published by other hosts at the same name survive.
Stores report every failure as :class:`StoreError`, whose message names the
store and the operation and never contains a secret.

A check of many lineages hands a store all their work at once through the
``*_many`` methods. By default they do one item after another; a store whose
protocol can do better (one RFC 2136 update per zone, all queries at once)
overrides them. Each item gets its own result, so one bad item fails alone.

The interface is the whole contract: the engine never asks which store it
has. What only some stores use is still part of every call (the records
that stay when others are deleted, certbot's configuration directory), and
a failure worth retrying quietly is a kind of error (:class:`SoftStoreError`),
not a flag.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ..tlsa import Record

if TYPE_CHECKING:
    from certbot.plugins.dns_common import CredentialsConfiguration

    from ..state import Settings

_T = TypeVar("_T")


class StoreError(Exception):
    """A store operation failed; the message is one line, free of secrets."""


class StoreConfigError(StoreError):
    """The store cannot be set up (bad or missing credentials, unknown store)."""


class SoftStoreError(StoreError):
    """A transient failure by the backend's own word (the exec program's exit
    128 or more, a rate limit beyond the store's retry budget): the next check
    retries it, and this one does not fail because of it."""


@dataclass(frozen=True)
class RRsetView:
    """The TLSA records at one owner name as the store sees them."""

    records: frozenset[Record]
    ttl: int | None


#: One result per item of a ``*_many`` call: its error, or None where it succeeded.
Outcomes = list[StoreError | None]
#: One result per owner of :meth:`RecordStore.list_many`: its records, or the error.
Views = list[RRsetView | StoreError]


def by_owner(records: Iterable[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {}
    for record in sorted(records):
        grouped.setdefault(record.owner, []).append(record)
    return grouped


class RecordStore(abc.ABC):
    """Add, delete and list TLSA records at owner names."""

    name = "store"

    @classmethod
    @abc.abstractmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> RecordStore:
        """Build the store from a lineage's settings, offline; StoreConfigError if wrong.

        ``config_dir`` is certbot's configuration directory (the exec contract
        hands it to the program as LETSENCRYPT_DIR).
        """

    @abc.abstractmethod
    def list(self, owner: str) -> RRsetView:
        """The TLSA records currently at ``owner`` (absolute name)."""

    @abc.abstractmethod
    def add(self, records: Iterable[Record], ttl: int) -> None:
        """Add records next to whatever is there; adding a present record is a no-op."""

    @abc.abstractmethod
    def delete(self, records: Iterable[Record], keep: Iterable[Record] = ()) -> None:
        """Delete exactly these records; deleting an absent record is a no-op.

        ``keep`` are the records that stay at those owner names (the served
        version's): a store may refuse to delete until they are up (the exec
        contract's TLSA_LIVE_HASH). It never deletes them.
        """

    @abc.abstractmethod
    def retime(self, records: Iterable[Record], ttl: int) -> None:
        """Give these present records the TTL ``ttl``, with no moment in which
        any of them is absent (a delete and an add in one atomic change, where
        the backend keeps the old TTL on a plain add)."""

    def list_many(self, owners: Sequence[str]) -> Views:
        """:meth:`list` for each owner."""
        return [outcome(self.list, owner) for owner in owners]

    def add_many(self, items: Sequence[tuple[Iterable[Record], int]]) -> Outcomes:
        """:meth:`add` for each (records, ttl) item; None where it succeeded."""
        return [outcome(self.add, records, ttl) for records, ttl in items]

    def delete_many(self, items: Sequence[tuple[Iterable[Record], Iterable[Record]]]) -> Outcomes:
        """:meth:`delete` for each (records, keep) item; None where it succeeded."""
        return [outcome(self.delete, records, keep) for records, keep in items]

    def retime_many(self, items: Sequence[tuple[Iterable[Record], int]]) -> Outcomes:
        """:meth:`retime` for each (records, ttl) item; None where it succeeded."""
        return [outcome(self.retime, records, ttl) for records, ttl in items]


#: One item of a batched change: its records and, to add or re-time them, the TTL.
Change = tuple[list[Record], int | None]


class BatchStore(RecordStore):
    """A store that works in batches: a single call is a batch of one, and
    every batch is one :meth:`change_many` call that says what to do."""

    def add(self, records: Iterable[Record], ttl: int) -> None:
        raise_first(self.add_many([(records, ttl)]))

    def delete(self, records: Iterable[Record], keep: Iterable[Record] = ()) -> None:
        raise_first(self.delete_many([(records, keep)]))

    def retime(self, records: Iterable[Record], ttl: int) -> None:
        raise_first(self.retime_many([(records, ttl)]))

    def add_many(self, items: Sequence[tuple[Iterable[Record], int]]) -> Outcomes:
        return self.change_many("add", [(list(rs), ttl) for rs, ttl in items])

    def delete_many(self, items: Sequence[tuple[Iterable[Record], Iterable[Record]]]) -> Outcomes:
        return self.change_many("delete", [(list(rs), None) for rs, _keep in items])

    def retime_many(self, items: Sequence[tuple[Iterable[Record], int]]) -> Outcomes:
        return self.change_many("retime", [(list(rs), ttl) for rs, ttl in items])

    @abc.abstractmethod
    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Do ``verb`` (add, delete, retime) for every item; one result per item."""


@dataclass
class OwnerEdit:
    """What a batch wants at one owner name: records in, records out, the TTL.

    A store that changes whole RRsets subclasses it with how it writes one.
    """

    verb: str
    plus: set[Record] = field(default_factory=set)
    minus: set[Record] = field(default_factory=set)
    ttl: int | None = None

    @property
    def what(self) -> str:
        count = len(self.plus) + len(self.minus)
        if self.verb == "retime":
            return f"change the TTL of {count} TLSA record(s)"
        return f"{self.verb} {count} TLSA record(s)"


_E = TypeVar("_E", bound=OwnerEdit)


def owner_edits(verb: str, items: Sequence[Change], edit: Callable[[str], _E]) -> dict[str, _E]:
    """A batch's items merged per owner name (records compared as reading them back gives)."""
    edits: dict[str, _E] = {}
    for records, ttl in items:
        for record in normal(records):
            here = edits.setdefault(record.owner, edit(verb))
            if verb == "delete":
                here.minus.add(record)
            else:
                here.plus.add(record)
                here.ttl = ttl
    return edits


def normal(records: Iterable[Record]) -> list[Record]:
    """Records with the lower-case owner and data that reading produces, so
    that merging compares like with like."""
    return [
        Record(r.owner.lower(), r.usage, r.selector, r.mtype, r.data.lower()) for r in records
    ]


def per_item(items: Sequence[Change], failed: dict[str, StoreError]) -> Outcomes:
    """One result per item: the error of the first of its owner names that failed."""
    return [
        next((failed[o] for o in (r.owner.lower() for r in records) if o in failed), None)
        for records, _ in items
    ]


def outcome(operation: Callable[..., _T], *args: object) -> _T | StoreError:
    """The operation's result, or the StoreError it raised: one result per item."""
    try:
        return operation(*args)
    except StoreError as err:
        return err


def raise_first(errors: Iterable[StoreError | None]) -> None:
    """Raise the first error of a ``*_many`` result (a single item's call)."""
    for error in errors:
        if error is not None:
            raise error


def plugin_credentials(path: str, store: str, prefix: str = "") -> CredentialsConfiguration:
    """A certbot DNS plugin's credentials INI, read with certbot's own reader
    (so the same permission warnings as certbot's); ``prefix`` is the plugin's
    key prefix (``dns_rfc2136_``), which ``conf(key)`` then leaves out.

    A file certbot cannot read is one line naming the store and the file.
    """
    from certbot import errors
    from certbot.plugins import dns_common

    def mapper(key: str) -> str:
        return prefix + key.replace("-", "_") if prefix else key

    try:
        return dns_common.CredentialsConfiguration(path, mapper)
    except errors.PluginError as err:
        raise StoreConfigError(f"{store} store: {' '.join(str(err).split())}") from None
