"""The shell around the rollover core: it performs the actions the core decides.

One run for one lineage: take the lock, load the state, notice renewals the
plugin did not see (drift), then loop ``decide`` -> act -> ``advance`` ->
save until the core says wait or idle. The state is saved after every
step that changed it, and every action is idempotent, so a crash anywhere is
repaired by the next run.

A run that changes nothing writes nothing: certbot calls the plugin for every
lineage on every ``certbot renew``, and a settled lineage needs no DNS and no
disk write. ``last_check`` is written with every save, and otherwise at most
once per :data:`LAST_CHECK_REFRESH` seconds, so it can lag the last check by
up to that much.
"""
from __future__ import annotations

import functools
import logging
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import danedir, rollover, state, tlsa
from .dns import RecordStore, StoreError, open_store
from .dns.base import by_owner
from .lineage import LineageError, live_version, version_files, version_records
from .observe import ObserveError, Observer, parse_address, parse_addresses, system_resolver
from .rollover import (
    Adopted,
    Claimed,
    Failed,
    Idle,
    Observe,
    Observed,
    Policy,
    Publish,
    Published,
    Reload,
    Reloaded,
    Renewed,
    Retargeted,
    Retire,
    Retired,
    Seen,
    Switch,
    Switched,
    Version,
    Wait,
)
from .state import LineageFile, Settings

logger = logging.getLogger(__name__)

DEFAULT_RECORD_TTL = 3600
MAX_STEPS = 64
#: A run that changes nothing still records its time when the recorded
#: ``last_check`` is older than this (seconds); otherwise it writes nothing.
LAST_CHECK_REFRESH = 3600.0
#: Lineages checked at once by :meth:`Engine.check_many`.
CHECK_WORKERS = 16


class ReloadError(Exception):
    """The reload command failed."""


class EngineError(Exception):
    """A lineage cannot be handled; the message says what to do."""


#: Errors that stop a run cleanly, are recorded in the state and retried later.
RETRYABLE = (StoreError, ObserveError, ReloadError, danedir.DaneDirError, LineageError, OSError)


@dataclass
class Result:
    """What one run did for one lineage."""

    lineage: str
    steps: list[str] = field(default_factory=list)
    waiting: str | None = None
    until: float | None = None
    error: str | None = None
    settled: bool = False


StoreFactory = Callable[[Settings], RecordStore]
ObserverFactory = Callable[[Settings], Observer]


def default_store(settings: Settings) -> RecordStore:
    return open_store(settings)


def default_observer(settings: Settings) -> Observer:
    resolver = parse_address(settings.resolver) if settings.resolver else system_resolver()
    return Observer(resolver, parse_addresses(settings.nameservers))


def policy_of(settings: Settings) -> Policy:
    return Policy(hold_margin=float(settings.hold_margin), reload=bool(settings.reload))


class Engine:
    """Runs the rollover for lineages under one certbot config directory."""

    def __init__(
        self,
        config_dir: str | Path,
        clock: Callable[[], float] = time.time,
        store_factory: StoreFactory = default_store,
        observer_factory: ObserverFactory = default_observer,
        lock_timeout: float = 300.0,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.clock = clock
        self.store_factory = store_factory
        self.observer_factory = observer_factory
        self.lock_timeout = lock_timeout
        self.observers: list[Observer] = []

    # Entry points ---------------------------------------------------------

    def install(self, name: str, settings: Settings) -> Result:
        """Take a lineage under management (or update its settings) and run it."""
        with state.locked(self.config_dir, name, self.lock_timeout):
            data = state.load(self.config_dir, name)
            saved = None
            if data is None:
                data = LineageFile(lineage=name, settings=settings)
                data.note("installed", f"targets {settings.targets}", self.clock())
            else:
                saved = _Mark(data)
                retarget = data.settings.targets != settings.targets
                data.settings = settings
                if retarget:
                    self._retarget(data)
            ctx = _Context(self, data, saved)
            ctx.save()
            return self._run(ctx)

    def check_many(
        self, names: list[str], workers: int = CHECK_WORKERS
    ) -> dict[str, Result | Exception]:
        """The deferred step for several lineages, up to ``workers`` at a time.

        Each lineage keeps its own lock; a failure of one never stops another.
        The results are in the order of ``names``.
        """

        def one(name: str) -> Result | Exception:
            try:
                return self.check(name)
            except (state.StateError, EngineError) as err:
                return err

        if workers <= 1 or len(names) <= 1:
            outcomes = [one(name) for name in names]
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(names))) as pool:
                outcomes = list(pool.map(one, names))
        return dict(zip(names, outcomes, strict=True))

    def check(self, name: str) -> Result:
        """The deferred step for one managed lineage."""
        with state.locked(self.config_dir, name, self.lock_timeout):
            data = state.load(self.config_dir, name)
            if data is None:
                raise EngineError(
                    f"lineage {name} is not managed by certbot-dane; run "
                    f"'certbot install -i dane --cert-name {name} --dane-tlsa ...' first"
                )
            return self._run(_Context(self, data, _Mark(data)))

    # The run --------------------------------------------------------------

    def _run(self, ctx: _Context) -> Result:
        data = ctx.data
        result = Result(data.lineage)
        try:
            self._reconcile_links(ctx)
            self._notice_renewal(ctx, result)
            self._drive(ctx, result)
        except (*RETRYABLE, EngineError) as err:
            message = str(err) if not isinstance(err, OSError) else f"{err.strerror}: {err}"
            if getattr(err, "soft", False):
                # A soft error by the program's own word: retried next run,
                # shown by status, but it does not fail this run.
                ctx.advance(Failed(message))
                ctx.data.note("retry", message, self.clock())
                result.waiting = f"retrying after a soft error: {message}"
            else:
                self._fail(ctx, result, message)
        last = data.last_check
        now = self.clock()
        ctx.save(refresh=last is None or not 0 <= now - last < LAST_CHECK_REFRESH)
        return result

    def _fail(self, ctx: _Context, result: Result, message: str) -> None:
        ctx.advance(Failed(message))
        ctx.data.note("error", message, self.clock())
        result.error = message
        logger.error("dane: lineage %s: %s", ctx.data.lineage, message)

    def _retarget(self, data: LineageFile) -> None:
        """New targets: recompute the records of the versions already known."""
        targets = tlsa.parse_specs(data.settings.targets)
        directory = Path(data.settings.directory)

        def again(version: Version | None) -> Version | None:
            if version is None:
                return None
            files = danedir.staged_files(directory, data.lineage, version.number)
            return Version(version.number, version_records(files, targets))

        s = data.rollover
        outcome = Retargeted(again(s.served), again(s.pending))
        data.rollover = rollover.advance(s, outcome, self.clock(), policy_of(data.settings))
        data.note("retargeted", data.settings.targets, self.clock())

    def _reconcile_links(self, ctx: _Context) -> None:
        """Repair what a crash between the link flip and the state save left."""
        name = ctx.data.lineage
        current = danedir.served_version(ctx.directory, name)
        s = ctx.data.rollover
        flipping = ctx.data.switching
        if s.pending is not None and current == s.pending.number and flipping == current:
            ctx.advance(Switched(s.pending))
            ctx.data.switching = None
            ctx.save()
        elif s.served is None and current is not None:
            # The state was lost but the links serve a version: keep serving
            # it and roll over from there rather than jump to live/.
            files = danedir.staged_files(ctx.directory, name, current)
            ctx.advance(Adopted(Version(current, version_records(files, ctx.targets))))
            ctx.data.note("adopted", f"version {current} from the existing links", self.clock())
        elif s.served is not None and current is None:
            danedir.switch(ctx.directory, ctx.data.lineage, s.served.number)
        elif s.served is not None and current != s.served.number:
            raise EngineError(
                f"lineage {ctx.data.lineage}: the dane links point at version {current}, but "
                f"version {s.served.number} is the one whose records are live; the links "
                f"were changed by hand. Put them back: ln -sfn {danedir.VERSIONS}/"
                f"{s.served.number} {ctx.directory / ctx.data.lineage / danedir.CURRENT}"
            )

    def _notice_renewal(self, ctx: _Context, result: Result) -> None:
        """Register the version live/ shows if it is newer than any we know."""
        number, archive = live_version(self.config_dir, ctx.data.lineage)
        s = ctx.data.rollover
        known = [v.number for v in (s.served, s.pending) if v is not None]
        if known and number <= max(known):
            return
        files = version_files(archive, number)
        records = version_records(files, ctx.targets)
        danedir.stage(ctx.directory, ctx.data.lineage, number, files)
        ctx.advance(Renewed(Version(number, records)))
        ctx.data.note("renewed", f"version {number}, {len(records)} record(s)", self.clock())
        result.steps.append(f"new version {number}")

    def _drive(self, ctx: _Context, result: Result) -> None:
        seen: Seen | None = None
        for _ in range(MAX_STEPS):
            action = rollover.decide(ctx.data.rollover, self.clock(), seen, ctx.policy)
            match action:
                case Idle():
                    result.settled = True
                    return
                case Wait(reason, until):
                    result.waiting, result.until = reason, until
                    return
                case Publish(records):
                    self._publish(ctx, records)
                    result.steps.append(f"published {len(records)} record(s)")
                case Observe(records):
                    seen = self._observe(ctx, records)
                case Switch(version):
                    self._switch(ctx, version)
                    result.steps.append(f"switched to version {version.number}")
                case Reload():
                    self._reload(ctx)
                    result.steps.append("reloaded")
                case Retire(records):
                    self._retire(ctx, records)
                    ctx.advance(Retired(records))
                    ctx.data.note("retired", _list(records), self.clock())
                    result.steps.append(f"retired {len(records)} record(s)")
        raise EngineError(f"lineage {ctx.data.lineage}: no progress after {MAX_STEPS} steps")

    def _publish(self, ctx: _Context, records: frozenset[tlsa.Record]) -> None:
        s = ctx.data.rollover
        prior = None
        if s.served is not None:
            prior = ctx.observer.prior_ttl(r.owner for r in records)
        views = {owner: ctx.store.list(owner) for owner in by_owner(records)}
        present = frozenset().union(*(v.records for v in views.values()))
        absent = records - present
        ctx.advance(Claimed(absent, prior))
        for owner, group in by_owner(absent).items():
            ttl = ctx.data.settings.record_ttl or views[owner].ttl or DEFAULT_RECORD_TTL
            ctx.store.add(group, ttl)
        ctx.advance(Published(records, prior))
        ctx.data.note("published", _list(records), self.clock())

    def _retire(self, ctx: _Context, records: frozenset[tlsa.Record]) -> None:
        store = ctx.store
        if getattr(store, "wants_live", False):
            # The exec contract tells the program which record must stay up.
            served = ctx.data.rollover.served
            store.delete(records, live=served.records if served else ())  # type: ignore[call-arg]
        else:
            store.delete(records)

    def _observe(self, ctx: _Context, records: frozenset[tlsa.Record]) -> Seen:
        seen = ctx.observer.observe(records)
        before = ctx.data.rollover.visible_since
        ctx.advance(Observed(seen.authoritative, seen.validated, seen.ttl))
        after = ctx.data.rollover.visible_since
        if before is None and after is not None:
            ctx.data.note("visible", "on every authoritative server", self.clock())
        elif before is not None and after is None:
            ctx.data.note("invisible", seen.detail, self.clock())
        return Seen(seen.validated, seen.ttl)

    def _switch(self, ctx: _Context, version: Version) -> None:
        name = ctx.data.lineage
        ctx.data.switching = version.number
        ctx.save()
        danedir.switch(ctx.directory, name, version.number)
        ctx.data.switching = None
        ctx.advance(Switched(version))
        ctx.data.note("switched", f"version {version.number}", self.clock())
        s = ctx.data.rollover
        keep = {v.number for v in (s.served, s.pending) if v is not None}
        danedir.prune(ctx.directory, name, keep)

    def _reload(self, ctx: _Context) -> None:
        command = ctx.data.settings.reload or ""
        argv = shlex.split(command)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ReloadError(f"reload command {argv[0]!r} could not run: {err}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise ReloadError(
                f"reload command {argv[0]!r} exited {done.returncode}"
                + (f": {tail[-1]}" if tail else "")
            )
        ctx.advance(Reloaded())
        ctx.data.note("reloaded", argv[0], self.clock())


class _Mark:
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

    def matches(self, data: LineageFile) -> bool:
        last_event = data.timeline[-1] if data.timeline else None
        return (
            self.lineage == data.lineage
            and self.rollover == data.rollover
            and self.settings == data.settings
            and self.events == len(data.timeline)
            and self.last_event is last_event
            and self.switching == data.switching
        )


class _Context:
    """One lineage's run: its state file, lazily opened store and observer.

    ``saved`` marks what the state file holds (None: nothing yet).
    """

    def __init__(self, engine: Engine, data: LineageFile, saved: _Mark | None) -> None:
        self.engine = engine
        self.data = data
        self.saved = saved
        self.directory = Path(data.settings.directory)
        self.policy = policy_of(data.settings)
        self._store: RecordStore | None = None
        self._observer: Observer | None = None

    @functools.cached_property
    def targets(self) -> tuple[tlsa.Target, ...]:
        """Parsed only when a version's records are computed (rarely)."""
        return tlsa.parse_specs(self.data.settings.targets)

    @property
    def store(self) -> RecordStore:
        if self._store is None:
            self._store = self.engine.store_factory(self.data.settings)
            if hasattr(self._store, "letsencrypt_dir"):
                # The exec contract's LETSENCRYPT_DIR is certbot's config dir.
                self._store.letsencrypt_dir = str(self.engine.config_dir)
        return self._store

    @property
    def observer(self) -> Observer:
        if self._observer is None:
            self._observer = self.engine.observer_factory(self.data.settings)
            self.engine.observers.append(self._observer)
        return self._observer

    def advance(self, outcome: rollover.Outcome) -> None:
        new = rollover.advance(self.data.rollover, outcome, self.engine.clock(), self.policy)
        self.data.rollover = new
        self.save()

    def save(self, refresh: bool = False) -> None:
        """Write the state if it differs from the file (or ``refresh``: always)."""
        if not refresh and self.saved is not None and self.saved.matches(self.data):
            return
        self.data.last_check = self.engine.clock()
        state.save(self.engine.config_dir, self.data)
        self.saved = _Mark(self.data)


def _list(records: frozenset[tlsa.Record]) -> str:
    return "; ".join(r.short() for r in sorted(records))


__all__ = ["Engine", "EngineError", "Result"]
