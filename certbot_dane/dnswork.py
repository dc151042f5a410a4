"""The DNS steps of a check, each done for every lineage of a round at once.

Each function takes the lineages that the core sent to one kind of action
and performs it with one batched call per store or observer: one update per
zone, one burst of questions. Each lineage gets its own outcome; a failure
stops only the lineages it concerns (see :class:`.run.Run`).
"""
from __future__ import annotations

import logging

from . import tlsa
from .dns import RecordStore, StoreError
from .dns.base import RRsetView, by_owner, outcome
from .observe import Alias, AuditView, Observation, ObserveError, Observer
from .rollover import (
    Audit,
    Audited,
    Claimed,
    Look,
    Observe,
    Observed,
    Publish,
    Published,
    Resolve,
    Resolved,
    Retime,
    Retimed,
    Retire,
    Retired,
    Retiring,
    Seen,
    Unclaimed,
)
from .run import Neighbours, Run, by_observer, by_store, short, together

logger = logging.getLogger(__name__)

DEFAULT_RECORD_TTL = 3600


def resolve_all(items: list[tuple[Run, Resolve]]) -> None:
    """Find where each owner's records live (the end of its CNAME chain)."""
    for observer, group in by_observer(items):
        owners = sorted({o for _, action in group for o in action.owners})
        found = together([run for run, _ in group], observer.aliases_many, owners)
        if found is None:
            continue
        for run, action in group:
            _resolved(run, {o: found[o] for o in action.owners})


def _resolved(run: Run, found: dict[str, Alias | ObserveError]) -> None:
    error = next((a for a in found.values() if isinstance(a, ObserveError)), None)
    if error is not None:
        run.fail(error)
        return
    aliases = {o: a.target for o, a in found.items() if isinstance(a, Alias)}
    before = run.data.rollover.alias_map()
    for owner, target in sorted(aliases.items()):
        if target != owner and before.get(owner) != target:
            run.note("alias", f"{owner} -> {target}")
            logger.info("dane: lineage %s: %s is an alias of %s", run.name, owner, target)
    ttl = max((a.ttl for a in found.values() if isinstance(a, Alias)), default=0)
    run.advance(Resolved(aliases, ttl))


def publish_all(items: list[tuple[Run, Publish]]) -> None:
    """Claim, then add, the records of every lineage about to publish."""
    for store, group in by_store(items):
        records = {run: action.records for run, action in group}
        priors = _prior_ttls(records)
        ready = [run for run in records if not run.stopped]
        owners = sorted({r.owner for run in ready for r in records[run]})
        listed = together(ready, store.list_many, owners)
        if listed is None:
            continue
        views = dict(zip(owners, listed, strict=True))
        additions: list[tuple[Run, list[tlsa.Record], int]] = []
        neighbours: Neighbours | None = None
        for run in ready:
            mine = {owner: views[owner] for owner in by_owner(records[run])}
            failed = next((o for o, v in mine.items() if isinstance(v, StoreError)), None)
            if failed is not None:
                run.fail(_where(run, failed, mine[failed]))  # type: ignore[arg-type]
                continue
            present = frozenset().union(*(v.records for v in mine.values()))  # type: ignore[union-attr]
            absent = records[run] - present
            shared: frozenset[tlsa.Record] = frozenset()
            if records[run] & present:
                # Present already: added by another lineage of this host? Then
                # it is shared, and claimed by this one too (see Neighbours).
                neighbours = neighbours or run.shared.neighbours()
                shared = neighbours.owned_elsewhere(run.name, records[run] & present)
            run.advance(Claimed(absent | shared, priors.get(run), present))
            for owner, group_ in by_owner(absent).items():
                ttl = (
                    run.data.settings.record_ttl
                    or mine[owner].ttl  # type: ignore[union-attr]
                    or DEFAULT_RECORD_TTL
                )
                additions.append((run, group_, ttl))
        # Claims are durable before anything is added: a crash leaks nothing.
        if ready:
            ready[0].engine.save_all(ready)
        batch = [(group_, ttl) for _, group_, ttl in additions]
        errors = (together(ready, store.add_many, batch) if batch else None) or [None] * len(batch)
        failed = [(run, group_) for (run, group_, _), e in zip(additions, errors, strict=True) if e]
        _unclaim(store, failed)
        for (run, group_, _), error in zip(additions, errors, strict=True):
            if error is not None and not run.stopped:
                run.fail(_where(run, group_[0].owner, error))
        for run in ready:
            if not run.stopped:
                _published(run, records[run], priors.get(run))


def _unclaim(store: RecordStore, failed: list[tuple[Run, list[tlsa.Record]]]) -> None:
    """Claims of records whose add failed and that DNS does not have: let them go.

    A claim is made before the add so that a crash after the add leaks
    nothing; after a failed add, the store is asked again, and a record it
    does not have was never added (a refusal, a zone these credentials may
    not update). One that is there after all (a late apply) stays claimed,
    as does everything when the store cannot be asked.
    """
    if not failed:
        return
    owners = sorted({r.owner for _, group in failed for r in group})
    views = outcome(store.list_many, owners)
    if isinstance(views, StoreError):
        return
    present = {o: v.records for o, v in zip(owners, views, strict=True) if isinstance(v, RRsetView)}
    for run, group in failed:
        gone = frozenset(r for r in group if r.owner in present and r not in present[r.owner])
        if gone:
            run.advance(Unclaimed(gone))


def _published(run: Run, records: frozenset[tlsa.Record], prior: int | None) -> None:
    run.advance(Published(records, prior))
    repaired = records & run.repairing
    if repaired:
        run.note("repaired", short(repaired))
        run.step(f"repaired {len(repaired)} record(s) missing from DNS")
        logger.warning(
            "dane: lineage %s: repaired: re-published %d record(s) missing from DNS: %s",
            run.name,
            len(repaired),
            short(repaired),
        )
    fresh = records - repaired
    if fresh:
        run.note("published", short(fresh))
        run.step(f"published {len(fresh)} record(s)")


def _where(run: Run, target: str, error: StoreError) -> StoreError:
    """A store error at the target of an alias also names the alias, and the
    target's zone, which the lineage's credentials must be allowed to update."""
    aliases = sorted(o for o, t in run.data.rollover.aliases if t == target and o != target)
    if not aliases:
        return error
    owners = ", ".join(aliases)
    zone = _zone_of(run, target)
    if zone is None:
        return type(error)(
            f"TLSA owner {owners} is an alias (CNAME) of {target}, so its records go "
            f"there: {error}"
        )
    return type(error)(
        f"TLSA owner {owners} is an alias (CNAME) of {target}, in zone {zone}: its "
        f"records are written there, so the lineage's DNS credentials must be allowed "
        f"to update {zone} (or point the CNAME into a zone they may update): {error}"
    )


def _zone_of(run: Run, name: str) -> str | None:
    """The zone of ``name`` as the resolver sees it, for a message; None if unknown."""
    try:
        return run.observer.zone_of(name)
    except (ObserveError, ValueError):
        return None


def _prior_ttls(records: dict[Run, frozenset[tlsa.Record]]) -> dict[Run, int]:
    """What caches may hold now at the owners about to get records."""
    priors: dict[Run, int] = {}
    for observer, group in by_observer(list(records.items())):
        owners = [[r.owner for r in rs] for _, rs in group]
        runs = [run for run, _ in group]
        ttls = together(runs, observer.prior_ttl_many, owners)
        for run, ttl in zip(runs, ttls or (), strict=ttls is not None):
            if isinstance(ttl, ObserveError):
                run.fail(ttl)
            else:
                priors[run] = ttl
    return priors


def observe_all(items: list[tuple[Run, Observe]]) -> None:
    """Are the records being proven on every authoritative server, validated?"""
    for observer, group in by_observer(items):
        runs = [run for run, _ in group]
        names = _names([run for run, _ in group])
        seen = together(runs, observer.observe_many, [a.records for _, a in group], names)
        for (run, action), observation in zip(group, seen or (), strict=seen is not None):
            if isinstance(observation, ObserveError):
                run.fail(observation)
            else:
                _observed(run, action, observation)


def _names(runs: list[Run]) -> dict[str, list[str]]:
    """Where the resolver is asked for records kept at an alias's target: the alias."""
    names: dict[str, set[str]] = {}
    for run in runs:
        for owner, target in run.data.rollover.aliases:
            names.setdefault(target, set()).add(owner)
    return {target: sorted(owners) for target, owners in names.items()}


def _observed(run: Run, action: Observe, seen: Observation) -> None:
    before = run.data.rollover.visible_since
    run.advance(Observed(action.records, seen.authoritative, seen.validated, seen.ttl))
    after = run.data.rollover.visible_since
    if before is None and after is not None:
        run.note("visible", "on every authoritative server")
    elif before is not None and after is None:
        run.note("invisible", seen.detail)
    look = Look(action.records, seen.validated, seen.ttl, seen.detail)
    run.seen = Seen(look, run.seen.probed)


def audit_all(items: list[tuple[Run, Audit]]) -> None:
    """Is every wanted record still on every authoritative server? With what TTL?

    One question per owner name and authoritative server. Where a name is
    an alias, or the audit finds it has become one, its CNAME chain is
    followed again: a lineage whose records now belong elsewhere takes the new
    place (they are published there, proven, and the old ones retired) and is
    audited at the next audit.
    """
    for observer, group in by_observer(items):
        aliased = {o for run, _ in group for o, t in run.data.rollover.aliases if o != t}
        group = _settled_aliases(observer, group, aliased)
        runs = [run for run, _ in group]
        views = together(runs, observer.audit_many, [a.records for _, a in group])
        if views is None:
            continue
        audited = list(zip(group, views, strict=True))
        new = {o for _, view in audited if isinstance(view, AuditView) for o in view.aliased}
        still = {run for run, _ in _settled_aliases(observer, group, new)}
        for (run, action), view in audited:
            if isinstance(view, ObserveError):
                run.fail(view)
            elif run in still:
                _audited(run, action, view)


def _settled_aliases(
    observer: Observer, group: list[tuple[Run, Audit]], names: set[str]
) -> list[tuple[Run, Audit]]:
    """Follow these names' chains again; the lineages whose records did not move."""
    if not names:
        return group
    found = together([run for run, _ in group], observer.aliases_many, sorted(names))
    if found is None:
        return []
    return [(run, a) for run, a in group if not _moved(run, found)]


def _moved(run: Run, found: dict[str, Alias | ObserveError]) -> bool:
    """Did an owner's alias change (or fail to resolve)? Then it is recorded, not audited."""
    s = run.data.rollover
    mine = {o: found[o] for o in s.owners() if o in found}
    where = s.alias_map()
    if all(isinstance(a, Alias) and where.get(o) == a.target for o, a in mine.items()):
        return False
    _resolved(run, mine)
    return True


def _audited(run: Run, action: Audit, view: AuditView) -> None:
    missing = (action.records & run.data.rollover.published) - view.present
    run.advance(Audited(action.records, view.present, view.ttls))
    if missing:
        # Logged once, when re-published (see _published); a failed publish
        # logs its own error.
        run.repairing |= missing
        run.note("missing", short(missing))


def retime_all(items: list[tuple[Run, Retime]]) -> None:
    """Bring the TTL of the lineages' RRsets in line with the settings."""
    for store, group in by_store(items):
        runs = [run for run, _ in group]
        errors = together(runs, store.retime_many, [(a.records, a.ttl) for _, a in group])
        for (run, action), error in zip(group, errors or (), strict=errors is not None):
            if error is not None:
                run.fail(error)
                continue
            old = {o: t for o, t in run.data.rollover.stale_ttl}
            owners = {r.owner for r in action.records}
            run.advance(Retimed({o: old[o] for o in owners if o in old}))
            text = ", ".join(f"{o} {old.get(o, '?')} s -> {action.ttl} s" for o in sorted(owners))
            run.note("ttl", text)
            run.step(f"changed the TTL at {len(owners)} owner name(s) to {action.ttl} s")


def retire_all(items: list[tuple[Run, Retire]]) -> None:
    """Delete the records no version wants, once marked as going (see ``Retiring``)."""
    for store, group in by_store(items):
        runs = [run for run, _ in group]
        for run, action in group:
            run.advance(Retiring(action.records))
        runs[0].engine.save_all(runs)
        neighbours = runs[0].shared.neighbours()
        # The records that stay: a store may wait for them to be up. A record
        # another lineage still wants stays too; this one lets go of it.
        kept = {run: neighbours.wanted_elsewhere(run.name, a.records) for run, a in group}
        deletions = [
            (action.records - kept[run], run.data.rollover.wanted() | kept[run])
            for run, action in group
        ]
        errors = together(runs, store.delete_many, deletions)
        for (run, action), error in zip(group, errors or (), strict=errors is not None):
            if error is not None:
                run.fail(error)
                continue
            run.advance(Retired(action.records))
            gone = action.records - kept[run]
            if gone:
                run.note("retired", short(gone))
                run.step(f"retired {len(gone)} record(s)")
            if kept[run]:
                run.note("shared", f"left for the other lineages that want it: {short(kept[run])}")
