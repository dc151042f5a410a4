"""The shell around the rollover core: it performs the actions the core decides.

One run for one or many lineages: take their locks, load their states,
notice renewals the plugin did not see (drift) and changes of the issuer
bundle, then loop ``decide`` -> act -> ``advance`` until the core says wait
or idle for each, and save. Every action is idempotent, and the state is
saved before each action whose effect the next run could not otherwise
account for: records are claimed before they are added, and the version
being switched to is recorded before the links flip. A crash anywhere is
repaired by the next run.

Lineages are driven in rounds: each round asks the core for every lineage's
next action and performs each kind of action for all lineages at once (see
:mod:`.dnswork`), so a check of hundreds of pending lineages sends one update
per zone and one burst of queries per round instead of one round trip per
lineage. A reload command shared by lineages that switched runs once, after
all their links moved.

A run that changes nothing writes no state: certbot calls the plugin for
every lineage on every ``certbot renew``, and a settled lineage needs no DNS
and no disk write. When a check ran is recorded by touching the lineage's
lock file (:func:`.state.stamp`). Only the timer's check (``audit=True``)
audits settled lineages in DNS.

A *dry* run (``status``) reads everything a check would read (DNS, the
endpoints) and asks the same decision, but stops before anything that would
change DNS, the links or the service, and saves nothing: what it reports is
what a check would do now, and why.
"""
from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import danedir, dnsio, dnswork, durable, endpoints, issuers, rollover, state, tlsa
from .dns import RecordStore, open_store
from .lineage import live_version, version_files, version_records
from .observe import Observer, parse_address, parse_addresses, system_resolver
from .rollover import (
    Adopted,
    Audit,
    Failed,
    Idle,
    IssuersRead,
    Observe,
    Policy,
    Probe,
    Probed,
    Prove,
    Proven,
    Publish,
    Reload,
    Reloaded,
    Renewed,
    Resolve,
    Retargeted,
    Retime,
    Retire,
    Seen,
    Switch,
    Switched,
    Version,
    Wait,
)
from .run import EngineError, Mark, ReloadError, Result, Run, Shared, jointly, together
from .state import LineageFile, Settings

logger = logging.getLogger(__name__)

MAX_STEPS = 64
#: Lineages whose lock another run holds are waited for this many at a time.
CHECK_WORKERS = 16
#: Most lineages checked together in one run (see :func:`batch_size`).
MAX_BATCH = 256
#: Lineages whose files (state, staged copies, links) are written at once.
FILE_WORKERS = 8
#: Actions a dry run (status) does not perform: they change DNS, links or the service.
CHANGES = (Publish, Switch, Reload, Retire, Retime)
#: Actions that read DNS or the endpoints: not performed by an offline dry run.
READS = (Resolve, Observe, Probe, Audit)

StoreFactory = Callable[[Settings, str], RecordStore]
ObserverFactory = Callable[[Settings], Observer]

__all__ = ["Engine", "EngineError", "ReloadError", "Result", "policy_of"]


def batch_size() -> int:
    """Lineages checked together: each holds its lock (a file descriptor) for the
    whole run, next to the sockets of the DNS questions."""
    return dnsio.descriptor_share(MAX_BATCH)


def default_store(settings: Settings, config_dir: str) -> RecordStore:
    return open_store(settings, config_dir)


def default_observer(settings: Settings) -> Observer:
    resolver = parse_address(settings.resolver) if settings.resolver else system_resolver()
    return Observer(resolver, parse_addresses(settings.nameservers))


def policy_of(settings: Settings, audit: bool = False) -> Policy:
    """The decision's policy from a lineage's settings; ``audit`` for the timer's check."""
    return Policy(
        hold_margin=float(settings.hold_margin),
        reload=bool(settings.reload),
        endpoints=bool(settings.endpoints),
        endpoint_timeout=float(settings.endpoint_timeout),
        audit_interval=float(settings.audit_interval) if audit else 0.0,
        record_ttl=settings.record_ttl,
    )


class Engine:
    """Runs the rollover for lineages under one certbot config directory.

    ``audit``: audit settled lineages in DNS at their interval (the timer's
    ``certbot-dane check`` does; ``certbot renew`` does not, so that it stays
    free of DNS queries for lineages with nothing to do). ``offline``: a dry
    run reads neither DNS nor the endpoints.
    """

    def __init__(
        self,
        config_dir: str | Path,
        clock: Callable[[], float] = time.time,
        store_factory: StoreFactory = default_store,
        observer_factory: ObserverFactory = default_observer,
        lock_timeout: float = 300.0,
        audit: bool = False,
        offline: bool = False,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.clock = clock
        self.store_factory = store_factory
        self.observer_factory = observer_factory
        self.lock_timeout = lock_timeout
        self.audit = audit
        self.offline = offline
        self.observers: list[Observer] = []

    def policy(self, settings: Settings) -> Policy:
        return policy_of(settings, self.audit)

    # Entry points ---------------------------------------------------------

    def install(self, name: str, settings: Settings) -> Result:
        """Take a lineage under management (or update its settings) and run it."""
        with state.locked(self.config_dir, name, self.lock_timeout) as lock:
            data = state.load(self.config_dir, name)
            saved = None
            retime = False
            if data is None:
                data = LineageFile(lineage=name, settings=settings)
                data.note("installed", f"targets {settings.targets}", self.clock())
            else:
                saved = Mark(data)
                retarget = data.settings.targets != settings.targets
                regroup = data.settings.group != settings.group
                retime = settings.record_ttl not in (None, data.settings.record_ttl)
                data.settings = settings
                if retarget:
                    self._retarget(data)
                if regroup:
                    danedir.permit(settings.directory, name, settings.group)
                    data.note("group", settings.group or "none: owner only")
            run = Run(self, data, saved)
            if retime:
                # Not a whole audit interval later: the TTL a renewal will hold
                # for is the one in DNS, so DNS follows the setting now.
                run.audit_now()
            run.lock = lock
            run.save()
            return self._run([run])[0]

    def check(self, name: str) -> Result:
        """The deferred step for one managed lineage."""
        with state.locked(self.config_dir, name, self.lock_timeout) as lock:
            run = self._open(name)
            run.lock = lock
            return self._run([run])[0]

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

    def explain_many(self, names: list[str]) -> dict[str, Run | Exception]:
        """What a check would do now for each lineage, and why: a dry run.

        The same reads (DNS, endpoints) and the same decision as a check,
        without its lock and without changing anything.
        """
        runs: dict[str, Run | Exception] = {}
        for name in names:
            try:
                runs[name] = self._open(name, dry=True)
            except (state.StateError, EngineError) as err:
                runs[name] = err
        self._run([r for r in runs.values() if isinstance(r, Run)])
        return runs

    def _check_batch(self, names: list[str], outcomes: dict[str, Result | Exception]) -> list[str]:
        """Check the lineages whose locks are free together; return the busy ones."""
        busy: list[str] = []
        with contextlib.ExitStack() as locks:
            runs: list[Run] = []
            for name in names:
                try:
                    lock = locks.enter_context(state.locked(self.config_dir, name, 0))
                except state.LockTimeout:
                    busy.append(name)
                    continue
                except (state.StateError, OSError) as err:
                    outcomes[name] = err
                    continue
                try:
                    run = self._open(name)
                except (state.StateError, EngineError) as err:
                    outcomes[name] = err
                    continue
                run.lock = lock
                runs.append(run)
            for run, result in zip(runs, self._run(runs), strict=True):
                outcomes[run.name] = result
        return busy

    def _open(self, name: str, dry: bool = False) -> Run:
        data = state.load(self.config_dir, name)
        if data is None:
            raise EngineError(
                f"lineage {name} is not managed by certbot-dane; run "
                f"'certbot install -i dane --cert-name {name} --dane-tlsa ...' first"
            )
        return Run(self, data, Mark(data), dry=dry)

    # The run --------------------------------------------------------------

    def _run(self, runs: list[Run]) -> list[Result]:
        """Drive lineages (each locked by the caller, unless dry) until each waits or is idle."""
        shared = Shared(self, runs)
        for run in runs:
            run.shared = shared
        self._each(runs, self._reconcile_links, self._find_renewal, self._read_issuers)
        for run in runs:
            if run.dry and run.renewal is not None and not run.stopped:
                run.stopped = True
                run.result.next = (
                    f"a check takes version {run.renewal[0].number} found in live/ and "
                    "publishes its records"
                )
        self._stage_renewals([r for r in runs if not r.stopped and r.renewal])
        self._drive([r for r in runs if not r.stopped])
        self.save_all(runs)
        for run in runs:
            served = run.data.rollover.served
            run.result.served = served.number if served else None
            if run.lock is not None and not run.dry:
                state.stamp(run.lock)
        return [run.result for run in runs]

    def _each(self, runs: list[Run], *steps: Callable[[Run], None]) -> None:
        """:meth:`Run.attempt` the steps for each lineage, several lineages at once.

        For file work only (copies, links, state): lineages share no files.
        """
        if len(runs) <= 1:
            for run in runs:
                run.attempt(*steps)
            return
        with ThreadPoolExecutor(max_workers=min(FILE_WORKERS, len(runs))) as pool:
            list(pool.map(lambda run: run.attempt(*steps), runs))

    def save_all(self, runs: list[Run]) -> None:
        """Write every changed state, made durable together."""
        changed = [run for run in runs if not run.dry and run.unsaved()]
        if len(changed) <= 1:
            for run in changed:
                run.save()
            return
        now = self.clock()
        for run in changed:
            run.data.last_check = now
        state.save_many(self.config_dir, [run.data for run in changed])
        for run in changed:
            run.written()

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
        data.rollover = rollover.advance(s, outcome, self.clock(), self.policy(data.settings))
        data.note("retargeted", data.settings.targets, self.clock())

    # File steps -----------------------------------------------------------

    def _reconcile_links(self, run: Run) -> None:
        """Repair what a crash between the link flip and the state save left."""
        name = run.name
        current = danedir.served_version(run.directory, name)
        s = run.data.rollover
        flipping = run.data.switching
        if s.pending is not None and current == s.pending.number and flipping == current:
            run.advance(Switched(s.pending))
            run.data.switching = None
            run.save()
        elif s.served is None and current is not None:
            # The state was lost but the links serve a version: keep serving
            # it and roll over from there rather than jump to live/.
            files = danedir.staged_files(run.directory, name, current)
            run.advance(Adopted(Version(current, version_records(files, run.targets))))
            run.note("adopted", f"version {current} from the existing links")
        elif s.served is not None and current is None and not run.dry:
            danedir.switch(run.directory, name, s.served.number)
        elif s.served is not None and current is not None and current != s.served.number:
            raise EngineError(
                f"lineage {name}: the dane links point at version {current}, but "
                f"version {s.served.number} is the one whose records are live; the links "
                f"were changed by hand. Put them back: ln -sfn {danedir.VERSIONS}/"
                f"{s.served.number} {run.directory / name / danedir.CURRENT}"
            )

    def _find_renewal(self, run: Run) -> None:
        """Note the version live/ shows if it is newer than any we know."""
        number, archive = live_version(self.config_dir, run.name)
        s = run.data.rollover
        known = [v.number for v in (s.served, s.pending) if v is not None]
        if known and number <= max(known):
            return
        files = version_files(archive, number)
        run.renewal = (Version(number, version_records(files, run.targets)), files)

    def _read_issuers(self, run: Run) -> None:
        """Records of the issuer bundle: computed again when the file or the versions
        changed (their certificates' names say at which owners the records go)."""
        settings = run.data.settings
        s = run.data.rollover
        if not settings.issuers:
            if s.issuers:
                run.advance(IssuersRead(frozenset()))
                run.data.issuers_digest = None
                run.note("issuers", "no bundle: its records are retired")
            return
        try:
            digest, certs = issuers.read_bundle(settings.issuers)
        except issuers.IssuerError as err:
            raise EngineError(str(err)) from None
        numbers = [v.number for v in (s.served, s.pending) if v is not None]
        if run.renewal is not None:
            numbers.append(run.renewal[0].number)
        digest += " " + ",".join(map(str, numbers))
        if digest == run.data.issuers_digest:
            return
        names = self._cert_names(run)
        records = issuers.records(run.targets, names, certs)
        run.data.issuers_digest = digest
        if records != s.issuers:
            run.advance(IssuersRead(records))
            run.note("issuers", f"{len(certs)} CA certificate(s), {len(records)} record(s)")

    @staticmethod
    def _cert_names(run: Run) -> set[str]:
        """The DNS names of the served, pending and newly found versions' certificates."""
        s = run.data.rollover
        paths = [
            danedir.staged_files(run.directory, run.name, v.number)["cert"]
            for v in (s.served, s.pending)
            if v is not None
        ]
        if run.renewal is not None:
            paths.append(run.renewal[1]["cert"])
        names: set[str] = set()
        for path in paths:
            try:
                names.update(tlsa.cert_names(tlsa.load_pem_chain(path.read_bytes())[0]))
            except (OSError, ValueError, IndexError):
                continue
        return names

    def _stage_renewals(self, runs: list[Run]) -> None:
        """Copy the new versions into the dane directory, then register them."""
        items: list[danedir.Staging] = []
        for run in runs:
            assert run.renewal is not None
            items.append((run.directory, run.name, run.renewal[0].number, run.renewal[1]))
        groups = [run.data.settings.group for run in runs]
        errors = together(runs, danedir.stage_many, items, groups)
        for run, error in zip(runs, errors or (), strict=errors is not None):
            if error is not None:
                run.fail(error)
                continue
            assert run.renewal is not None
            version = run.renewal[0]
            run.advance(Renewed(version))
            run.note("renewed", f"version {version.number}, {len(version.records)} record(s)")
            run.step(f"new version {version.number}")

    # Rounds ----------------------------------------------------------------

    def _drive(self, runs: list[Run]) -> None:
        """Rounds of decide -> act (all lineages' actions of a kind at once) -> advance."""
        active = runs
        for _ in range(MAX_STEPS):
            if not active:
                return
            now = self.clock()
            todo = _Round()
            for run in active:
                action = rollover.decide(run.data.rollover, now, run.seen, run.policy)
                self._take(run, action, todo)
            dnswork.resolve_all(todo.resolve)
            dnswork.publish_all(todo.publish)
            dnswork.observe_all(todo.observe)
            self._switch_all(todo.switch)
            self._reload_all(todo.reload)
            self._probe_all(todo.probe)
            dnswork.retire_all(todo.retire)
            dnswork.retime_all(todo.retime)
            dnswork.audit_all(todo.audit)
            active = [run for run in todo.runs if not run.stopped]
        for run in active:
            run.fail(EngineError(f"lineage {run.name}: no progress after {MAX_STEPS} steps"))

    def _take(self, run: Run, action: rollover.Action, todo: _Round) -> None:
        """File an action for this round, or end the lineage's run (wait, idle, dry)."""
        result = run.result
        if isinstance(action, Idle):
            result.settled = True
        elif isinstance(action, Wait):
            result.waiting, result.until = action.reason, action.until
            result.waiting_for = action.waiting_for
            if action.alarm:
                self._alarm(run, action.reason)
        elif isinstance(action, Prove):
            # Bookkeeping only: the proof was this check's look at DNS.
            run.advance(Proven(action.records))
            run.note("live", rollover.explain(action)[0])
            todo.runs.append(run)
        elif run.dry and self.offline and isinstance(action, READS):
            result.next = f"{rollover.explain(action)[0]} (not looked at: --offline)"
        elif run.dry and isinstance(action, CHANGES):
            result.next = rollover.explain(action)[0]
            kind = run.data.rollover.last_error_kind
            if kind in ("store", "reload", "dns"):
                result.waiting_for = f"{kind}_error"
        else:
            todo.add(run, action)

    def _alarm(self, run: Run, reason: str) -> None:
        """A wait the operator must hear of: the check fails with this one line."""
        run.result.error = reason
        if not run.dry and run.data.rollover.last_error != reason:
            run.note("error", reason)
            logger.info("dane: lineage %s: %s", run.name, reason)
        # A dry run too (it saves nothing): its probe cleared the recorded
        # error, and status must show the one the check records.
        run.advance(Failed(reason, "endpoint"))

    def _switch_all(self, items: list[tuple[Run, Switch]]) -> None:
        """Flip the links of every lineage due to switch.

        The version each is switched to is saved first, so a crash after a
        flip is recognised (see :meth:`_reconcile_links`); the flips are made
        durable together before anything relies on them.
        """
        versions = {run: action.version for run, action in items}
        for run, version in versions.items():
            run.data.switching = version.number
        runs = list(versions)
        if not jointly(runs, self.save_all, runs):
            return
        flipped: dict[Run, Path] = {}
        for run, version in versions.items():
            try:
                flipped[run] = danedir.switch(
                    run.directory, run.name, version.number, sync=len(versions) == 1
                )
            except (danedir.DaneDirError, OSError) as err:
                run.fail(err)
        if len(flipped) > 1 and not jointly(list(flipped), durable.flush, list(flipped.values())):
            return
        for run in flipped:
            version = versions[run]
            run.data.switching = None
            run.advance(Switched(version))
            run.note("switched", f"version {version.number}")
            run.step(f"switched to version {version.number}")
        self._each(list(flipped), self._prune)

    @staticmethod
    def _prune(run: Run) -> None:
        s = run.data.rollover
        keep = {v.number for v in (s.served, s.pending) if v is not None}
        danedir.prune(run.directory, run.name, keep)

    def _reload_all(self, runs: list[Run]) -> None:
        """One run of each reload command, after every lineage using it switched."""
        commands: dict[str, list[Run]] = {}
        for run in runs:
            commands.setdefault(run.data.settings.reload or "", []).append(run)
        for command, group in commands.items():
            try:
                self._reload(command)
            except ReloadError as err:
                for run in group:
                    run.fail(err)
                continue
            for run in group:
                run.advance(Reloaded())
                run.note("reloaded", shlex.split(command)[0])
                run.step("reloaded")

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

    def _probe_all(self, items: list[tuple[Run, Probe]]) -> None:
        """What every listed endpoint presents, judged against the records that remain."""
        jobs: list[tuple[Run, endpoints.Endpoint, dict, list]] = []
        for run, action in items:
            try:
                listed = endpoints.parse_endpoints(run.data.settings.endpoints)
            except ValueError as err:
                run.fail(EngineError(f"--dane-endpoints: {err}"))
                continue
            remaining = self._remaining(run, action.remaining)
            known = self._known(run)
            jobs += [(run, endpoint, remaining, known) for endpoint in listed]

        def one(job: tuple[Run, endpoints.Endpoint, dict, list]) -> endpoints.Presented:
            _, endpoint, remaining, known = job
            return endpoints.probe(endpoint, remaining, known)

        workers = max(1, min(endpoints.PROBE_WORKERS, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            presented = list(pool.map(one, jobs))
        found: dict[Run, list[tuple[str, bool, str]]] = {run: [] for run, _ in items}
        for (run, *_), seen in zip(jobs, presented, strict=True):
            found[run].append((seen.endpoint.text(), seen.ok, seen.presents))
        for run, results in found.items():
            if run.stopped:
                continue
            run.advance(Probed(tuple(results)))
            run.presented = results
            run.seen = Seen(run.seen.look, probed=True)
            for name, ok, presents in results:
                if not ok and not run.dry:
                    logger.info(
                        "dane: lineage %s: endpoint %s presents %s; the old records stay",
                        run.name,
                        name,
                        presents,
                    )

    @staticmethod
    def _remaining(
        run: Run, remaining: frozenset[tlsa.Record]
    ) -> dict[str, frozenset[tlsa.Record]]:
        """For each owner name certificates ask for, the remaining records where DNS keeps them."""
        s = run.data.rollover
        where = s.alias_map()
        return {
            owner: frozenset(r for r in remaining if r.owner == where.get(owner, owner))
            for owner in s.owners()
        }

    @staticmethod
    def _known(run: Run) -> list[endpoints.Known]:
        """The versions an endpoint may present, to name what it presents."""
        s = run.data.rollover
        known = []
        for version, role in ((s.served, "served"), (s.pending, "pending"), (s.previous, "old")):
            if version is None:
                continue
            leaf = None
            cert = danedir.staged_files(run.directory, run.name, version.number)["cert"]
            with contextlib.suppress(OSError, ValueError, IndexError):
                leaf = tlsa.load_pem_chain(cert.read_bytes())[0]
            known.append(endpoints.Known(version.number, role, leaf, version.records))
        return known


@dataclass
class _Round:
    """The actions of one round, by kind, each with its lineage."""

    resolve: list[tuple[Run, rollover.Resolve]] = field(default_factory=list)
    publish: list[tuple[Run, Publish]] = field(default_factory=list)
    observe: list[tuple[Run, Observe]] = field(default_factory=list)
    switch: list[tuple[Run, Switch]] = field(default_factory=list)
    reload: list[Run] = field(default_factory=list)
    probe: list[tuple[Run, Probe]] = field(default_factory=list)
    retire: list[tuple[Run, Retire]] = field(default_factory=list)
    retime: list[tuple[Run, Retime]] = field(default_factory=list)
    audit: list[tuple[Run, Audit]] = field(default_factory=list)
    #: every lineage that had something done this round
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run, action: rollover.Action) -> None:
        self.runs.append(run)
        match action:
            case Resolve():
                self.resolve.append((run, action))
            case Publish():
                self.publish.append((run, action))
            case Observe():
                self.observe.append((run, action))
            case Switch():
                self.switch.append((run, action))
            case Reload():
                self.reload.append(run)
            case Probe():
                self.probe.append((run, action))
            case Retire():
                self.retire.append((run, action))
            case Retime():
                self.retime.append((run, action))
            case Audit():
                self.audit.append((run, action))
            case _:
                raise TypeError(f"no round for {action!r}")
