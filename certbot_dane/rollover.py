"""The rollover decision: a pure function of state, observations and time.

Nothing here touches DNS, files or the clock. The shells (installer, CLI)
ask :func:`decide` for the next action, perform it, report the outcome to
:func:`advance` and ask again, until the answer is :class:`Wait` or
:class:`Idle`. Each action is idempotent, and the shells persist the state
before every action whose effect the state must know of (a record is claimed
before it is added), so a crash between any two steps is repaired by
running the loop again.

The promise every rule serves: the served certificate always matches at
least one TLSA record that a validating resolver would return, including
copies of older RRsets still held in caches. Hence:

* records for a new version are added next to the old ones, never instead;
* the links move only after the new records are on every authoritative
  server, validate through the resolver, and every cache has had time to
  forget the RRset it held before (the hold);
* old records are removed only after the links moved and the service was
  reloaded, and only records this host added are ever removed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .tlsa import Record


@dataclass(frozen=True)
class Version:
    """One certificate version of a lineage and the TLSA records it needs."""

    number: int
    records: frozenset[Record]


@dataclass(frozen=True)
class State:
    """Everything the decision needs to remember about one lineage.

    ``owned`` are records this host may have added and not yet removed (a
    record is claimed *before* it is added, so a crash can leak nothing);
    ``published`` are records known to be in DNS, ours or not.
    ``hold_ttl`` is the largest TTL seen for the owner names since the last
    switch: before a publish it is the TTL of what caches may hold.
    """

    served: Version | None = None
    pending: Version | None = None
    owned: frozenset[Record] = frozenset()
    published: frozenset[Record] = frozenset()
    hold_ttl: int | None = None
    visible_since: float | None = None
    reload_due: bool = False
    last_error: str | None = None

    def wanted(self) -> frozenset[Record]:
        records: frozenset[Record] = frozenset()
        for version in (self.served, self.pending):
            if version is not None:
                records |= version.records
        return records


@dataclass(frozen=True)
class Policy:
    """Settings that shape decisions but are not state."""

    hold_margin: float = 60.0
    reload: bool = False


# Actions ------------------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    """Add these records to DNS (claiming the ones not already there)."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Observe:
    """Look at the authoritative servers and the validating resolver."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Switch:
    """Move the dane links to this version."""

    version: Version


@dataclass(frozen=True)
class Reload:
    """Run the reload command: the served certificate changed."""


@dataclass(frozen=True)
class Retire:
    """Delete these records, all owned by this host, none still wanted."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Wait:
    """Nothing to do until ``until`` (epoch seconds), or the next check if None."""

    reason: str
    until: float | None = None


@dataclass(frozen=True)
class Idle:
    """The lineage is settled: nothing pending, nothing to publish or retire."""


Action = Publish | Observe | Switch | Reload | Retire | Wait | Idle


# Outcomes -----------------------------------------------------------------


@dataclass(frozen=True)
class Renewed:
    """A version newer than the served one exists (renewal or first deploy)."""

    version: Version


@dataclass(frozen=True)
class Claimed:
    """These absent records are about to be added by this host.

    ``ttl`` is the owners' TTL seen before the add. It is kept now, before
    the add can change it: a crash after the add would otherwise leave the
    next run to see only the new TTL and compute too short a hold.
    """

    records: frozenset[Record]
    ttl: int | None = None


@dataclass(frozen=True)
class Published:
    """These records are in DNS now; ``ttl`` is the owners' TTL seen before."""

    records: frozenset[Record]
    ttl: int | None = None


@dataclass(frozen=True)
class Observed:
    """What one look at DNS showed for the pending records.

    ``authoritative``: every authoritative server serves every record, signed.
    ``validated``: the validating resolver returns them all with AD.
    ``ttl``: the largest TTL the authoritative servers give those RRsets.
    """

    authoritative: bool
    validated: bool
    ttl: int | None = None


@dataclass(frozen=True)
class Switched:
    version: Version


@dataclass(frozen=True)
class Reloaded:
    pass


@dataclass(frozen=True)
class Retired:
    records: frozenset[Record]


@dataclass(frozen=True)
class Adopted:
    """The links already serve this version but the state lost it: serve it."""

    version: Version


@dataclass(frozen=True)
class Retargeted:
    """The targets changed: the same versions now need these records."""

    served: Version | None
    pending: Version | None


@dataclass(frozen=True)
class Failed:
    """A step failed; the message is shown by status and the next check retries."""

    message: str


Outcome = (
    Renewed
    | Claimed
    | Published
    | Observed
    | Switched
    | Reloaded
    | Retired
    | Adopted
    | Retargeted
    | Failed
)


@dataclass(frozen=True)
class Seen:
    """The observation made during the current check, if any."""

    validated: bool
    ttl: int | None = None


# The decision -------------------------------------------------------------


def decide(state: State, now: float, seen: Seen | None, policy: Policy) -> Action:
    """The next step for one lineage. ``seen`` is this check's observation."""
    to_publish = state.wanted() - state.published
    if to_publish:
        return Publish(frozenset(to_publish))
    if state.reload_due:
        return Reload()
    to_retire = state.owned - state.wanted()
    if to_retire:
        return Retire(frozenset(to_retire))
    pending = state.pending
    if pending is None:
        return Idle()
    if state.served is None or _covered(pending, state.served):
        # Nothing to protect yet, or key reuse: at every owner name, a record
        # the new version matches is one the served version is live with.
        return Switch(pending)
    if seen is None:
        return Observe(pending.records)
    if state.visible_since is None:
        return Wait("new records are not yet on every authoritative server")
    hold_end = state.visible_since + hold_seconds(state, seen, policy)
    if now < hold_end:
        return Wait("hold: caches may still have the old RRset", hold_end)
    if not seen.validated:
        return Wait("the validating resolver does not yet return the new records with AD")
    return Switch(pending)


def _covered(pending: Version, served: Version) -> bool:
    """Does every owner name of ``pending`` already carry a live record it matches?

    With ``311,211`` and key reuse, a new intermediate changes the 211 record
    but not the 311 one: every cache already holds a record (3 1 1) that the
    new certificate matches, so no hold is needed.
    """
    owners = {r.owner for r in pending.records}
    shared = {r.owner for r in pending.records & served.records}
    return bool(owners) and owners <= shared


def hold_seconds(state: State, seen: Seen | None, policy: Policy) -> float:
    ttls = [t for t in (state.hold_ttl, seen.ttl if seen else None) if t is not None]
    return float(max(ttls, default=0)) + policy.hold_margin


def advance(state: State, outcome: Outcome, now: float, policy: Policy) -> State:
    """The state after an outcome. Pure; unknown or stale outcomes change nothing."""
    match outcome:
        case Renewed(version):
            return _renewed(state, version)
        case Claimed(records, ttl):
            return replace(state, owned=state.owned | records, hold_ttl=_max(state.hold_ttl, ttl))
        case Published(records, ttl):
            return replace(
                state,
                published=state.published | records,
                hold_ttl=_max(state.hold_ttl, ttl),
                last_error=None,
            )
        case Observed(authoritative, _validated, ttl):
            since = state.visible_since if authoritative else None
            if authoritative and since is None:
                since = now
            return replace(
                state, visible_since=since, hold_ttl=_max(state.hold_ttl, ttl), last_error=None
            )
        case Switched(version):
            if state.pending is None or version.number != state.pending.number:
                return state
            # Only a switch that waited out a hold proves that caches forgot
            # the RRsets behind hold_ttl; an immediate one (key reuse) keeps it.
            waited = state.visible_since is not None
            return replace(
                state,
                served=version,
                pending=None,
                visible_since=None,
                hold_ttl=None if waited else state.hold_ttl,
                reload_due=policy.reload and state.served is not None,
                published=state.published & (version.records | state.owned),
                last_error=None,
            )
        case Reloaded():
            return replace(state, reload_due=False, last_error=None)
        case Retired(records):
            return replace(
                state,
                owned=state.owned - records,
                published=state.published - records,
                last_error=None,
            )
        case Adopted(version):
            if state.served is not None:
                return state
            pending = state.pending
            if pending is not None and pending.number <= version.number:
                pending = None
            return replace(state, served=version, pending=pending, visible_since=None)
        case Retargeted(served, pending):
            same = [
                (a.number if a else None) == (b.number if b else None)
                for a, b in ((served, state.served), (pending, state.pending))
            ]
            if not all(same):
                return state
            return replace(state, served=served, pending=pending, visible_since=None)
        case Failed(message):
            return replace(state, last_error=message)
    raise TypeError(f"unknown outcome {outcome!r}")


def _renewed(state: State, version: Version) -> State:
    known = [v.number for v in (state.served, state.pending) if v is not None]
    if known and version.number <= max(known):
        return state
    return replace(state, pending=version, visible_since=None)


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def describe(state: State, now: float, policy: Policy) -> str:
    """A one-line account of what the lineage waits for, without any I/O."""
    action = decide(state, now, Seen(validated=True), policy)
    match action:
        case Idle():
            return "settled"
        case Publish(records):
            return f"publishing {len(records)} record(s)"
        case Reload():
            return "reload command due"
        case Retire(records):
            return f"retiring {len(records)} record(s)"
        case Switch(version):
            return f"ready to switch to version {version.number}"
        case Wait(reason, until):
            return reason if until is None else f"{reason} (until {until:.0f})"
    return type(action).__name__.lower()


__all__ = [
    "Action",
    "Adopted",
    "Retargeted",
    "Claimed",
    "Failed",
    "Idle",
    "Observe",
    "Observed",
    "Outcome",
    "Policy",
    "Publish",
    "Published",
    "Reload",
    "Reloaded",
    "Renewed",
    "Retire",
    "Retired",
    "Seen",
    "State",
    "Switch",
    "Switched",
    "Version",
    "Wait",
    "advance",
    "decide",
    "describe",
]
