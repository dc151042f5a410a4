"""The shell around the rollover core: it performs the actions the core decides.

One run for one or many lineages: take their locks, load their states,
notice renewals the plugin did not see (drift), then loop ``decide`` -> act
-> ``advance`` until the core says wait or idle for each, and save. Every
action is idempotent, and the state is saved before each action whose
effect the next run could not otherwise account for: records are claimed
before they are added, and the version being switched to is recorded
before the links flip. A crash anywhere is repaired by the next run.

Lineages are driven in rounds: each round asks the core for every lineage's
next action and performs each kind of action for all lineages at once, so a
check of hundreds of pending lineages sends one update per zone and one
burst of queries per round instead of one round trip per lineage. Lineages
that share a store configuration share the store (and its zone cache);
lineages that share a resolver share the observer; a reload command shared
by lineages that switched runs once, after all their links moved.

A run that changes nothing writes nothing: certbot calls the plugin for every
lineage on every ``certbot renew``, and a settled lineage needs no DNS and no
disk write. ``last_check`` is written with every save, and otherwise at most
once per :data:`LAST_CHECK_REFRESH` seconds, so it can lag the last check by
up to that much.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from . import danedir, dnsio, durable, rollover, state, tlsa
from .dns import RecordStore, SoftStoreError, StoreError, open_store
from .dns.base import by_owner
from .lineage import LineageError, live_version, version_files, version_records
from .observe import (
    Observation,
    ObserveError,
    Observer,
    parse_address,
    parse_addresses,
    system_resolver,
)
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
#: Lineages whose lock another run holds are waited for this many at a time.
CHECK_WORKERS = 16
#: Most lineages checked together in one run (see :func:`batch_size`).
MAX_BATCH = 256
#: Lineages whose files (state, staged copies, links) are written at once:
#: each write is fsynced, and fsync lets other threads run.
FILE_WORKERS = 8


def batch_size() -> int:
    """Lineages checked together: each holds its lock (a file descriptor) for the
    whole run, next to the sockets of the DNS questions."""
    return dnsio.descriptor_share(MAX_BATCH)


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


_T = TypeVar("_T")
_A = TypeVar("_A", Publish, Retire)
#: Builds a lineage's store from its settings and certbot's config directory.
StoreFactory = Callable[[Settings, str], RecordStore]
ObserverFactory = Callable[[Settings], Observer]


def default_store(settings: Settings, config_dir: str) -> RecordStore:
    return open_store(settings, config_dir)


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
            return self._run([ctx])[0]

    def check(self, name: str) -> Result:
        """The deferred step for one managed lineage."""
        with state.locked(self.config_dir, name, self.lock_timeout):
            return self._run([self._open(name)])[0]

    def check_many(
        self, names: list[str], workers: int = CHECK_WORKERS
    ) -> dict[str, Result | Exception]:
        """The deferred step for several lineages, driven together.

        Every lineage whose lock is free joins one run (see the module
        docstring); the ones another run holds are checked afterwards, each
        waiting for its lock, up to ``workers`` at a time. A failure of one
        lineage never stops another. The results are in the order of ``names``.
        """
        outcomes: dict[str, Result | Exception] = {}
        busy: list[str] = []
        unique = list(dict.fromkeys(names))
        size = batch_size()
        for start in range(0, len(unique), size):
            busy += self._check_batch(unique[start : start + size], outcomes)

        def waited(name: str) -> Result | Exception:
            try:
                return self.check(name)
            except (state.StateError, EngineError) as err:
                return err

        if busy:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(busy)))) as pool:
                outcomes.update(zip(busy, pool.map(waited, busy), strict=True))
        return {name: outcomes[name] for name in names}

    def _check_batch(self, names: list[str], outcomes: dict[str, Result | Exception]) -> list[str]:
        """Check the lineages whose locks are free together; return the busy ones."""
        busy: list[str] = []
        with contextlib.ExitStack() as locks:
            contexts: list[_Context] = []
            for name in names:
                try:
                    locks.enter_context(state.locked(self.config_dir, name, 0))
                except state.LockTimeout:
                    busy.append(name)
                    continue
                except (state.StateError, OSError) as err:
                    outcomes[name] = err
                    continue
                try:
                    contexts.append(self._open(name))
                except (state.StateError, EngineError) as err:
                    outcomes[name] = err
            for ctx, result in zip(contexts, self._run(contexts), strict=True):
                outcomes[ctx.data.lineage] = result
        return busy

    def _open(self, name: str) -> _Context:
        data = state.load(self.config_dir, name)
        if data is None:
            raise EngineError(
                f"lineage {name} is not managed by certbot-dane; run "
                f"'certbot install -i dane --cert-name {name} --dane-tlsa ...' first"
            )
        return _Context(self, data, _Mark(data))

    # The run --------------------------------------------------------------

    def _run(self, contexts: list[_Context]) -> list[Result]:
        """Drive lineages (each locked by the caller) until each waits or is idle."""
        shared = _Shared(self)
        for ctx in contexts:
            ctx.shared = shared
        self._each(contexts, self._reconcile_links, self._find_renewal)
        self._stage_renewals([c for c in contexts if not c.stopped and c.renewal])
        self._drive([c for c in contexts if not c.stopped])
        now = self.clock()
        for ctx in contexts:
            last = ctx.data.last_check
            ctx.refresh = last is None or not 0 <= now - last < LAST_CHECK_REFRESH
        self._save_all(contexts)
        return [ctx.result for ctx in contexts]

    def _attempt(self, ctx: _Context, *steps: Callable[[_Context], None]) -> bool:
        """Run steps for one lineage; an error stops it (recorded), never the others."""
        try:
            for step in steps:
                step(ctx)
        except (*RETRYABLE, EngineError) as err:
            self._stop(ctx, err)
            return False
        return True

    def _stop(self, ctx: _Context, err: Exception) -> None:
        message = str(err) if not isinstance(err, OSError) else f"{err.strerror}: {err}"
        ctx.stopped = True
        ctx.advance(Failed(message))
        if isinstance(err, SoftStoreError):
            # Transient by the backend's own word: retried next run,
            # shown by status, but it does not fail this run.
            ctx.data.note("retry", message, self.clock())
            ctx.result.waiting = f"retrying after a soft error: {message}"
            return
        ctx.data.note("error", message, self.clock())
        ctx.result.error = message
        logger.error("dane: lineage %s: %s", ctx.data.lineage, message)

    def _each(self, contexts: list[_Context], *steps: Callable[[_Context], None]) -> None:
        """:meth:`_attempt` the steps for each lineage, several lineages at once.

        For file work only (copies, links, state): lineages share no files.
        """
        if len(contexts) <= 1:
            for ctx in contexts:
                self._attempt(ctx, *steps)
            return
        with ThreadPoolExecutor(max_workers=min(FILE_WORKERS, len(contexts))) as pool:
            list(pool.map(lambda ctx: self._attempt(ctx, *steps), contexts))

    def _save_all(self, contexts: list[_Context]) -> None:
        """Write every changed state, made durable together."""
        changed = [ctx for ctx in contexts if ctx.unsaved()]
        if len(changed) <= 1:
            for ctx in changed:
                ctx.save()
            return
        now = self.clock()
        for ctx in changed:
            ctx.data.last_check = now
        state.save_many(self.config_dir, [ctx.data for ctx in changed])
        for ctx in changed:
            ctx.written()

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

    def _find_renewal(self, ctx: _Context) -> None:
        """Note the version live/ shows if it is newer than any we know."""
        number, archive = live_version(self.config_dir, ctx.data.lineage)
        s = ctx.data.rollover
        known = [v.number for v in (s.served, s.pending) if v is not None]
        if known and number <= max(known):
            return
        files = version_files(archive, number)
        ctx.renewal = (Version(number, version_records(files, ctx.targets)), files)

    def _stage_renewals(self, contexts: list[_Context]) -> None:
        """Copy the new versions into the dane directory, then register them."""
        items: list[danedir.Staging] = []
        for ctx in contexts:
            assert ctx.renewal is not None
            items.append((ctx.directory, ctx.data.lineage, ctx.renewal[0].number, ctx.renewal[1]))
        errors = self._together(contexts, danedir.stage_many, items)
        for ctx, error in zip(contexts, errors or (), strict=errors is not None):
            if error is not None:
                self._stop(ctx, error)
                continue
            assert ctx.renewal is not None
            version = ctx.renewal[0]
            ctx.advance(Renewed(version))
            detail = f"version {version.number}, {len(version.records)} record(s)"
            ctx.data.note("renewed", detail, self.clock())
            ctx.result.steps.append(f"new version {version.number}")

    def _drive(self, contexts: list[_Context]) -> None:
        """Rounds of decide -> act (all lineages' actions of a kind at once) -> advance."""
        active = contexts
        for _ in range(MAX_STEPS):
            if not active:
                return
            now = self.clock()
            todo = _Round()
            for ctx in active:
                match rollover.decide(ctx.data.rollover, now, ctx.seen, ctx.policy):
                    case Idle():
                        ctx.result.settled = True
                    case Wait(reason, until):
                        ctx.result.waiting, ctx.result.until = reason, until
                    case Publish() as publish:
                        todo.publish.append((ctx, publish))
                    case Observe() as observe:
                        todo.observe.append((ctx, observe))
                    case Switch() as switch:
                        todo.switch.append((ctx, switch))
                    case Reload():
                        todo.reload.append(ctx)
                    case Retire() as retire:
                        todo.retire.append((ctx, retire))
            self._publish_all(todo.publish)
            self._observe_all(todo.observe)
            self._switch_all(todo.switch)
            self._reload_all(todo.reload)
            self._retire_all(todo.retire)
            active = [ctx for ctx in todo.contexts() if not ctx.stopped]
        for ctx in active:
            self._stop(ctx, EngineError(
                f"lineage {ctx.data.lineage}: no progress after {MAX_STEPS} steps"
            ))

    def _publish_all(self, items: list[tuple[_Context, Publish]]) -> None:
        """Claim, then add, the records of every lineage about to publish."""
        for store, group in _by_store(items):
            records = {ctx: action.records for ctx, action in group}
            priors = self._prior_ttls(records)
            ready = [ctx for ctx in records if not ctx.stopped]
            owners = sorted({r.owner for ctx in ready for r in records[ctx]})
            listed = self._together(ready, store.list_many, owners)
            if listed is None:
                continue
            views = dict(zip(owners, listed, strict=True))
            additions: list[tuple[_Context, list[tlsa.Record], int]] = []
            for ctx in ready:
                mine = {owner: views[owner] for owner in by_owner(records[ctx])}
                error = next((v for v in mine.values() if isinstance(v, StoreError)), None)
                if error is not None:
                    self._stop(ctx, error)
                    continue
                present = frozenset().union(*(v.records for v in mine.values()))  # type: ignore[union-attr]
                absent = records[ctx] - present
                ctx.advance(Claimed(absent, priors.get(ctx)))
                for owner, group_ in by_owner(absent).items():
                    ttl = ctx.data.settings.record_ttl or mine[owner].ttl or DEFAULT_RECORD_TTL  # type: ignore[union-attr]
                    additions.append((ctx, group_, ttl))
            # Claims are durable before anything is added: a crash leaks nothing.
            self._save_all(ready)
            batch = [(group_, ttl) for _, group_, ttl in additions]
            errors = (self._together(ready, store.add_many, batch) if batch else None) or [
                None
            ] * len(batch)
            for (ctx, _, _), error in zip(additions, errors, strict=True):
                if error is not None and not ctx.stopped:
                    self._stop(ctx, error)
            for ctx in ready:
                if not ctx.stopped:
                    ctx.advance(Published(records[ctx], priors.get(ctx)))
                    ctx.data.note("published", _list(records[ctx]), self.clock())
                    ctx.result.steps.append(f"published {len(records[ctx])} record(s)")

    def _prior_ttls(self, records: dict[_Context, frozenset[tlsa.Record]]) -> dict[_Context, int]:
        """What caches may hold now, for lineages that already serve something."""
        asking = [ctx for ctx in records if ctx.data.rollover.served is not None]
        priors: dict[_Context, int] = {}
        for observer, group in _by_observer(asking):
            owners = [[r.owner for r in records[ctx]] for ctx in group]
            ttls = self._together(group, observer.prior_ttl_many, owners)
            for ctx, ttl in zip(group, ttls or (), strict=ttls is not None):
                if isinstance(ttl, ObserveError):
                    self._stop(ctx, ttl)
                else:
                    priors[ctx] = ttl
        return priors

    def _observe_all(self, items: list[tuple[_Context, Observe]]) -> None:
        contexts = [ctx for ctx, _ in items]
        wanted = {ctx: action.records for ctx, action in items}
        for observer, group in _by_observer(contexts):
            asked = [wanted[ctx] for ctx in group]
            seen = self._together(group, observer.observe_many, asked)
            for ctx, observation in zip(group, seen or (), strict=seen is not None):
                if isinstance(observation, ObserveError):
                    self._stop(ctx, observation)
                else:
                    self._observed(ctx, observation)

    def _observed(self, ctx: _Context, seen: Observation) -> None:
        before = ctx.data.rollover.visible_since
        ctx.advance(Observed(seen.authoritative, seen.validated, seen.ttl))
        after = ctx.data.rollover.visible_since
        if before is None and after is not None:
            ctx.data.note("visible", "on every authoritative server", self.clock())
        elif before is not None and after is None:
            ctx.data.note("invisible", seen.detail, self.clock())
        ctx.seen = Seen(seen.validated, seen.ttl)

    def _retire_all(self, items: list[tuple[_Context, Retire]]) -> None:
        for store, group in _by_store(items):
            records = [action.records for _, action in group]
            contexts = [ctx for ctx, _ in group]
            # The records that stay: a store may wait for them to be up.
            deletions = [
                (gone, ctx.data.rollover.wanted())
                for ctx, gone in zip(contexts, records, strict=True)
            ]
            errors = self._together(contexts, store.delete_many, deletions)
            if errors is None:
                continue
            for ctx, gone, error in zip(contexts, records, errors, strict=True):
                if error is not None:
                    self._stop(ctx, error)
                    continue
                ctx.advance(Retired(gone))
                ctx.data.note("retired", _list(gone), self.clock())
                ctx.result.steps.append(f"retired {len(gone)} record(s)")

    def _jointly(
        self, contexts: list[_Context], call: Callable[..., object], *args: object
    ) -> bool:
        """:meth:`_together` for a call that returns nothing: did it succeed?"""
        return self._together(contexts, lambda: call(*args) or True) is not None

    def _together(
        self, contexts: list[_Context], call: Callable[..., _T], *args: object
    ) -> _T | None:
        """A call made for several lineages; an error it raises stops each of them."""
        try:
            return call(*args)
        except (*RETRYABLE, EngineError) as err:
            for ctx in contexts:
                if not ctx.stopped:
                    self._stop(ctx, err)
            return None

    def _switch_all(self, items: list[tuple[_Context, Switch]]) -> None:
        """Flip the links of every lineage due to switch.

        The version each is switched to is saved first, so a crash after a
        flip is recognised (see :meth:`_reconcile_links`); the flips are made
        durable together before anything relies on them.
        """
        versions = {ctx: action.version for ctx, action in items}
        for ctx, version in versions.items():
            ctx.data.switching = version.number
        if not self._jointly(list(versions), self._save_all, list(versions)):
            return
        flipped: dict[_Context, Path] = {}
        for ctx, version in versions.items():
            try:
                flipped[ctx] = danedir.switch(
                    ctx.directory, ctx.data.lineage, version.number, sync=len(versions) == 1
                )
            except RETRYABLE as err:
                self._stop(ctx, err)
        if len(flipped) > 1 and not self._jointly(
            list(flipped), durable.flush, list(flipped.values())
        ):
            return
        for ctx in flipped:
            version = versions[ctx]
            ctx.data.switching = None
            ctx.advance(Switched(version))
            ctx.data.note("switched", f"version {version.number}", self.clock())
            ctx.result.steps.append(f"switched to version {version.number}")
        self._each(list(flipped), self._prune)

    @staticmethod
    def _prune(ctx: _Context) -> None:
        s = ctx.data.rollover
        keep = {v.number for v in (s.served, s.pending) if v is not None}
        danedir.prune(ctx.directory, ctx.data.lineage, keep)

    def _reload_all(self, contexts: list[_Context]) -> None:
        """One run of each reload command, after every lineage using it switched."""
        commands: dict[str, list[_Context]] = {}
        for ctx in contexts:
            commands.setdefault(ctx.data.settings.reload or "", []).append(ctx)
        for command, group in commands.items():
            try:
                self._reload(command)
            except ReloadError as err:
                for ctx in group:
                    self._stop(ctx, err)
                continue
            for ctx in group:
                ctx.advance(Reloaded())
                ctx.data.note("reloaded", shlex.split(command)[0], self.clock())
                ctx.result.steps.append("reloaded")

    @staticmethod
    def _reload(command: str) -> None:
        argv = shlex.split(command)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired, IndexError) as err:
            name = argv[0] if argv else command
            raise ReloadError(f"reload command {name!r} could not run: {err}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise ReloadError(
                f"reload command {argv[0]!r} exited {done.returncode}"
                + (f": {tail[-1]}" if tail else "")
            )


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
    """One lineage's run: its state file, result, and this check's observation.

    ``saved`` marks what the state file holds (None: nothing yet).
    """

    def __init__(self, engine: Engine, data: LineageFile, saved: _Mark | None) -> None:
        self.engine = engine
        self.data = data
        self.saved = saved
        self.directory = Path(data.settings.directory)
        self.policy = policy_of(data.settings)
        self.result = Result(data.lineage)
        self.shared = _Shared(engine)
        self.seen: Seen | None = None
        #: a version newer than any known, found in live/ but not staged yet
        self.renewal: tuple[Version, dict[str, Path]] | None = None
        self.stopped = False
        self.refresh = False

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

    def advance(self, outcome: rollover.Outcome) -> None:
        """Apply an outcome in memory; the run saves it (see :meth:`save`)."""
        self.data.rollover = rollover.advance(
            self.data.rollover, outcome, self.engine.clock(), self.policy
        )

    def unsaved(self) -> bool:
        return self.refresh or self.saved is None or not self.saved.matches(self.data)

    def save(self) -> None:
        """Write the state if it differs from the file (or a refresh is due)."""
        if not self.unsaved():
            return
        self.data.last_check = self.engine.clock()
        state.save(self.engine.config_dir, self.data)
        self.written()

    def written(self) -> None:
        """The state file now holds :attr:`data`."""
        self.saved = _Mark(self.data)
        self.refresh = False


@dataclass
class _Round:
    """The actions of one round, by kind, each with its lineage."""

    publish: list[tuple[_Context, Publish]] = field(default_factory=list)
    observe: list[tuple[_Context, Observe]] = field(default_factory=list)
    switch: list[tuple[_Context, Switch]] = field(default_factory=list)
    reload: list[_Context] = field(default_factory=list)
    retire: list[tuple[_Context, Retire]] = field(default_factory=list)

    def contexts(self) -> list[_Context]:
        return [
            *(ctx for ctx, _ in self.publish),
            *(ctx for ctx, _ in self.observe),
            *(ctx for ctx, _ in self.switch),
            *self.reload,
            *(ctx for ctx, _ in self.retire),
        ]


class _Shared:
    """Stores and observers of one run: one per distinct configuration.

    Lineages with the same store settings share a store, so its zone cache
    and its batched updates span them all.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stores: dict[tuple, RecordStore] = {}
        self._observers: dict[tuple, Observer] = {}

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


def _store_key(settings: Settings) -> tuple:
    """Settings that may shape a store; the rest only concern the lineage."""
    return astuple(replace(settings, targets="", reload=None, hold_margin=0.0, record_ttl=None))


def _by_store(
    items: list[tuple[_Context, _A]],
) -> list[tuple[RecordStore, list[tuple[_Context, _A]]]]:
    """Items grouped by their lineage's store; a store that cannot open stops its lineages."""
    groups: dict[int, tuple[RecordStore, list[tuple[_Context, _A]]]] = {}
    for ctx, action in items:
        try:
            store = ctx.store
        except StoreError as err:
            ctx.engine._stop(ctx, err)
            continue
        groups.setdefault(id(store), (store, []))[1].append((ctx, action))
    return list(groups.values())


def _by_observer(contexts: list[_Context]) -> list[tuple[Observer, list[_Context]]]:
    groups: dict[int, tuple[Observer, list[_Context]]] = {}
    for ctx in contexts:
        try:
            observer = ctx.observer
        except (ObserveError, ValueError) as err:
            ctx.engine._stop(ctx, ObserveError(str(err)))
            continue
        groups.setdefault(id(observer), (observer, []))[1].append(ctx)
    return list(groups.values())


def _list(records: frozenset[tlsa.Record]) -> str:
    return "; ".join(r.short() for r in sorted(records))


__all__ = ["Engine", "EngineError", "Result"]
