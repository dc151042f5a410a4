"""One lineage's part in a check: its state, what this check saw, its result.

A check drives many lineages together (see :mod:`.engine`); each has a
:class:`Run`. A step that fails stops only its own lineage: the error is
recorded in the state (``last_error``, what kind of step failed), shown by
``status``, and retried by the next check. Stores and observers are shared by
the lineages of a check that have the same settings (:class:`Shared`), so
their work can be batched.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import danedir, rollover, state, tlsa
from .dns import RecordStore, SoftStoreError, StoreError
from .lineage import LineageError
from .observe import ObserveError, Observer
from .rollover import NOTHING_SEEN, AuditDue, Failed, Seen, Version
from .state import LineageFile, Settings

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
Records = frozenset[tlsa.Record]


class ReloadError(Exception):
    """The reload command failed."""


class EngineError(Exception):
    """A lineage cannot be handled; the message says what to do."""


#: Errors that stop a lineage cleanly, are recorded in the state and retried later.
RETRYABLE = (StoreError, ObserveError, ReloadError, danedir.DaneDirError, LineageError, OSError)


def error_kind(err: Exception) -> str | None:
    """What kind of step failed, in the terms of ``status``'s ``waiting_for``."""
    if isinstance(err, StoreError):
        return "store"
    if isinstance(err, ObserveError):
        return "dns"
    if isinstance(err, ReloadError):
        return "reload"
    if isinstance(err, (danedir.DaneDirError, LineageError, OSError)):
        return "files"
    return None


@dataclass
class Result:
    """What one run did for one lineage, and what it waits for."""

    lineage: str
    steps: list[str] = field(default_factory=list)
    waiting: str | None = None
    waiting_for: str | None = None
    until: float | None = None
    error: str | None = None
    settled: bool = False
    #: the version the links serve after the run (None: no links yet)
    served: int | None = None
    #: what the check does next, when a dry run (status) stopped before doing it
    next: str | None = None


class Mark:
    """What a save would write, last_check aside, in a form cheap to compare.

    Serialising to compare would cost as much as the write it avoids (a full
    timeline is 200 events). The rollover state is immutable and the settings
    are compared by value; the timeline only grows at its end (and drops its
    oldest events), so its length and its last event tell whether a note was
    added.
    """

    def __init__(self, data: LineageFile) -> None:
        self.lineage = data.lineage
        self.rollover = data.rollover
        self.settings = replace(data.settings)
        self.events = len(data.timeline)
        self.last_event = data.timeline[-1] if data.timeline else None
        self.switching = data.switching
        self.issuers_digest = data.issuers_digest

    def matches(self, data: LineageFile) -> bool:
        last_event = data.timeline[-1] if data.timeline else None
        return (
            self.lineage == data.lineage
            and self.rollover == data.rollover
            and self.settings == data.settings
            and self.events == len(data.timeline)
            and self.last_event is last_event
            and self.switching == data.switching
            and self.issuers_digest == data.issuers_digest
        )


class Run:
    """One lineage's run: its state file, result, and what this check looked at.

    ``saved`` marks what the state file holds (None: nothing yet). A ``dry``
    run (status) performs only what reads: it stops before anything that
    would change DNS, the links or the service, and never saves.
    """

    def __init__(
        self, engine: Engine, data: LineageFile, saved: Mark | None, dry: bool = False
    ) -> None:
        self.engine = engine
        self.data = data
        self.saved = saved
        self.dry = dry
        self.directory = Path(data.settings.directory)
        self.policy = engine.policy(data.settings)
        self.result = Result(data.lineage)
        self.shared = Shared(engine)
        self.seen: Seen = NOTHING_SEEN
        #: a version newer than any known, found in live/ but not staged yet
        self.renewal: tuple[Version, dict[str, Path]] | None = None
        #: records the audit found missing, re-published by this run
        self.repairing: frozenset[tlsa.Record] = frozenset()
        #: what the endpoints presented in this run (for status)
        self.presented: list[tuple[str, bool, str]] = []
        self.lock: int | None = None
        self.stopped = False

    @property
    def name(self) -> str:
        return self.data.lineage

    @functools.cached_property
    def targets(self) -> tuple[tlsa.Target, ...]:
        """Parsed only when a version's records are computed (rarely)."""
        return tlsa.parse_specs(self.data.settings.targets)

    @property
    def store(self) -> RecordStore:
        return self.shared.store(self.data.settings)

    @property
    def observer(self) -> Observer:
        return self.shared.observer(self.data.settings)

    @property
    def clock(self) -> Callable[[], float]:
        return self.engine.clock

    def advance(self, outcome: rollover.Outcome) -> None:
        """Apply an outcome in memory; the run saves it (see :meth:`save`)."""
        self.data.rollover = rollover.advance(
            self.data.rollover, outcome, self.clock(), self.policy
        )

    def audit_now(self) -> None:
        """Audit in this run, even where runs do not audit (``certbot renew``): the
        settings ask for another record TTL, which the audit finds differing and the
        core then changes in DNS."""
        self.advance(AuditDue())
        if self.policy.audit_interval <= 0:
            # Due once (the state has no audit time now), then not again this run.
            self.policy = replace(self.policy, audit_interval=math.inf)

    def note(self, what: str, detail: str = "") -> None:
        self.data.note(what, detail, self.clock())

    def step(self, text: str) -> None:
        self.result.steps.append(text)

    def fail(self, err: Exception) -> None:
        """Stop this lineage for this run; the error is recorded and retried later."""
        message = str(err) if not isinstance(err, OSError) else f"{err.strerror}: {err}"
        self.stopped = True
        kind = error_kind(err)
        self.advance(Failed(message, kind))
        self.result.waiting_for = f"{kind}_error" if kind in ("store", "dns", "reload") else None
        if isinstance(err, SoftStoreError):
            # Transient by the backend's own word: retried next run,
            # shown by status, but it does not fail this run.
            self.note("retry", message)
            self.result.waiting = f"retrying after a soft error: {message}"
            return
        self.note("error", message)
        self.result.error = message
        if not self.dry:
            # The caller reports the error (certbot through the PluginError,
            # certbot-dane on stderr): logged here for the log file only.
            logger.info("dane: lineage %s: %s", self.name, message)

    def attempt(self, *steps: Callable[[Run], None]) -> bool:
        """Run steps for this lineage; an error stops it (recorded), never the others."""
        try:
            for step in steps:
                step(self)
        except (*RETRYABLE, EngineError) as err:
            self.fail(err)
            return False
        return True

    def unsaved(self) -> bool:
        return self.saved is None or not self.saved.matches(self.data)

    def save(self) -> None:
        """Write the state if it differs from the file."""
        if self.dry or not self.unsaved():
            return
        self.data.last_check = self.clock()
        state.save(self.engine.config_dir, self.data)
        self.written()

    def written(self) -> None:
        """The state file now holds :attr:`data`."""
        self.saved = Mark(self.data)


def together(runs: list[Run], call: Callable[..., _T], *args: object) -> _T | None:
    """A call made for several lineages; an error it raises stops each of them."""
    try:
        return call(*args)
    except (*RETRYABLE, EngineError) as err:
        for run in runs:
            if not run.stopped:
                run.fail(err)
        return None


def jointly(runs: list[Run], call: Callable[..., object], *args: object) -> bool:
    """:func:`together` for a call that returns nothing: did it succeed?"""
    return together(runs, lambda: call(*args) or True) is not None


@dataclass(frozen=True)
class Neighbours:
    """Which lineages of the config dir want and own each record (where DNS keeps it).

    Lineages can share an owner name's RRset: two certificates for one host
    (RSA and ECDSA), owners that are aliases of one target. Records both need
    (one CA's ``2 x x`` record) are then shared: each lineage claims them, and
    a record is deleted only when no other lineage wants it.
    """

    wanted_by: dict[tlsa.Record, frozenset[str]]
    owned_by: dict[tlsa.Record, frozenset[str]]

    def wanted_elsewhere(self, name: str, records: Records) -> Records:
        """The records another lineage than ``name`` still wants."""
        return frozenset(r for r in records if self.wanted_by.get(r, frozenset()) - {name})

    def owned_elsewhere(self, name: str, records: Records) -> Records:
        """The records another lineage than ``name`` claimed."""
        return frozenset(r for r in records if self.owned_by.get(r, frozenset()) - {name})


class Shared:
    """Stores and observers of one run: one per distinct configuration.

    Lineages with the same store settings share a store, so its zone cache
    and its batched updates span them all. ``runs`` are the lineages of the
    run; the other lineages of the config dir are read from their state
    files when a record may be shared with them (see :class:`Neighbours`).
    """

    def __init__(self, engine: Engine, runs: list[Run] | None = None) -> None:
        self.engine = engine
        self.runs = runs or []
        self._stores: dict[tuple, RecordStore] = {}
        self._observers: dict[tuple, Observer] = {}
        self._stored: dict[str, rollover.State] | None = None

    def neighbours(self) -> Neighbours:
        """Who wants and owns what: the run's lineages as they are now, the others
        as their state files say (read once per run, without their locks)."""
        states = dict(self._others())
        states.update((run.name, run.data.rollover) for run in self.runs)
        wanted: dict[tlsa.Record, set[str]] = {}
        owned: dict[tlsa.Record, set[str]] = {}
        for name, s in states.items():
            for record in s.wanted():
                wanted.setdefault(record, set()).add(name)
            for record in s.owned:
                owned.setdefault(record, set()).add(name)
        return Neighbours(
            {r: frozenset(n) for r, n in wanted.items()},
            {r: frozenset(n) for r, n in owned.items()},
        )

    def _others(self) -> dict[str, rollover.State]:
        if self._stored is None:
            ours = {run.name for run in self.runs}
            self._stored = {}
            for name in state.list_lineages(self.engine.config_dir):
                if name in ours:
                    continue
                try:
                    data = state.load(self.engine.config_dir, name)
                except state.StateError as err:
                    # Its own check reports it; it cannot be managed meanwhile.
                    logger.debug("dane: lineage %s: not read as a neighbour: %s", name, err)
                    continue
                if data is not None:
                    self._stored[name] = data.rollover
        return self._stored

    def store(self, settings: Settings) -> RecordStore:
        key = _store_key(settings)
        if key not in self._stores:
            self._stores[key] = self.engine.store_factory(settings, str(self.engine.config_dir))
        return self._stores[key]

    def observer(self, settings: Settings) -> Observer:
        key = (settings.resolver, settings.nameservers)
        if key not in self._observers:
            observer = self.engine.observer_factory(settings)
            self.engine.observers.append(observer)
            self._observers[key] = observer
        return self._observers[key]


_LINEAGE_ONLY = {
    "targets": "",
    "reload": None,
    "hold_margin": 0.0,
    "record_ttl": None,
    "endpoints": None,
    "endpoint_timeout": 0,
    "audit_interval": 0,
    "issuers": None,
    "group": None,
}


def _store_key(settings: Settings) -> tuple:
    """Settings that may shape a store; the rest only concern the lineage."""
    return astuple(replace(settings, **_LINEAGE_ONLY))


def by_store(
    items: list[tuple[Run, _T]],
) -> list[tuple[RecordStore, list[tuple[Run, _T]]]]:
    """Items grouped by their lineage's store; a store that cannot open stops its lineages."""
    groups: dict[int, tuple[RecordStore, list[tuple[Run, _T]]]] = {}
    for run, item in items:
        try:
            store = run.store
        except StoreError as err:
            run.fail(err)
            continue
        groups.setdefault(id(store), (store, []))[1].append((run, item))
    return list(groups.values())


def by_observer(items: list[tuple[Run, _T]]) -> list[tuple[Observer, list[tuple[Run, _T]]]]:
    groups: dict[int, tuple[Observer, list[tuple[Run, _T]]]] = {}
    for run, item in items:
        try:
            observer = run.observer
        except (ObserveError, ValueError) as err:
            run.fail(ObserveError(str(err)))
            continue
        groups.setdefault(id(observer), (observer, []))[1].append((run, item))
    return list(groups.values())


def short(records: frozenset[tlsa.Record]) -> str:
    return "; ".join(r.short() for r in sorted(records))
