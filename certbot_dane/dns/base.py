"""The record store interface: where TLSA records are written.

A store manages individual records at one owner name. It never replaces a
whole RRset, so records published by other hosts at the same name survive.
Stores report every failure as :class:`StoreError`, whose message names the
store and the operation and never contains a secret.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..tlsa import Record

if TYPE_CHECKING:
    from ..state import Settings


class StoreError(Exception):
    """A store operation failed; the message is one line, free of secrets."""


class StoreConfigError(StoreError):
    """The store cannot be set up (bad or missing credentials, unknown store)."""


@dataclass(frozen=True)
class RRsetView:
    """The TLSA records at one owner name as the store sees them."""

    records: frozenset[Record]
    ttl: int | None


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
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> RecordStore:
        """Build the store from a lineage's settings, offline; StoreConfigError if wrong."""

    @abc.abstractmethod
    def list(self, owner: str) -> RRsetView:
        """The TLSA records currently at ``owner`` (absolute name)."""

    @abc.abstractmethod
    def add(self, records: Iterable[Record], ttl: int) -> None:
        """Add records next to whatever is there; adding a present record is a no-op."""

    @abc.abstractmethod
    def delete(self, records: Iterable[Record]) -> None:
        """Delete exactly these records; deleting an absent record is a no-op."""
