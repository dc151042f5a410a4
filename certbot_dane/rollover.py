"""The rollover decision: a pure function of state, observations and time.

Nothing here touches DNS, files, services or the clock. The shells (installer,
CLI) ask :func:`decide` for the next action, perform it, report the outcome
to :func:`advance` and ask again, until the answer is :class:`Wait` or
:class:`Idle`. Each action is idempotent, and the shells persist the state
before every action whose effect the state must know of (a record is claimed
before it is added), so a crash between any two steps is repaired by
running the loop again.

The promise every rule serves: the certificate a service presents always
matches at least one TLSA record that a validating resolver would return,
including copies of older RRsets still held in caches. Hence:

* a record is *live* only once it is on every authoritative server, validates
  through the resolver, and every cache has had time to forget the RRset it
  held before (the hold); records are added next to the old ones, never
  instead;
* the links move to a version only when, at every owner name, a live record
  matches it (its own records once proven, a record of the served key, or an
  issuer record kept published ahead of time);
* the first version is served at once only where the owner names had no
  records a client could have cached; otherwise it waits like a rollover;
* old records are removed only after the links moved, the service was
  reloaded, and every listed endpoint presents a certificate that the
  remaining records match; only records this host added are ever removed;
* a record that goes missing from DNS (found by the periodic audit) is no
  longer live: it is published and proven again.

Records live where DNS keeps them: a TLSA owner name that is an alias (a
CNAME chain) has its records at the chain's target. Versions and issuer
records name the owners certificates ask for; everything the state says of
DNS (published, owned, live) names where the records are.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .tlsa import Record


@dataclass(frozen=True)
class Version:
    """One certificate version of a lineage and the TLSA records it needs."""

    number: int
    records: frozenset[Record]


@dataclass(frozen=True)
class Lag:
    """An endpoint seen presenting a chain the remaining records do not match."""

    endpoint: str
    since: float
    presents: str


@dataclass(frozen=True)
class State:
    """Everything the decision needs to remember about one lineage.

    ``issuers`` are the records of the issuer bundle (wanted at all times).
    ``aliases`` maps each owner name to where its records live (itself, or
    the target of its CNAME chain). ``owned`` are records this host may have
    added and not yet removed (claimed *before* the add, so a crash leaks
    nothing); ``published`` are records known to be in DNS, ours or not;
    ``live`` are records proven live (see the module docstring); ``proving``
    is the set whose visibility ``visible_since`` dates. ``foreign`` are
    records found at the owners, not wanted, before a first version was
    served. ``hold_ttl`` is the largest TTL seen for the owner names since
    records were last proven: before a publish it is the TTL of what caches
    may hold. ``hold_floor`` is the moment until which caches may hold an
    RRset under a TTL since lowered. ``previous`` is the version served before
    the last switch, until its records are retired. ``stale_ttl`` lists owners
    whose RRset TTL the audit found differing from the setting.
    """

    served: Version | None = None
    pending: Version | None = None
    issuers: frozenset[Record] = frozenset()
    aliases: tuple[tuple[str, str], ...] = ()
    owned: frozenset[Record] = frozenset()
    published: frozenset[Record] = frozenset()
    live: frozenset[Record] = frozenset()
    proving: frozenset[Record] = frozenset()
    foreign: frozenset[Record] = frozenset()
    hold_ttl: int | None = None
    hold_floor: float | None = None
    visible_since: float | None = None
    reload_due: bool = False
    previous: Version | None = None
    lagging: tuple[Lag, ...] = ()
    audited_at: float | None = None
    stale_ttl: tuple[tuple[str, int], ...] = ()
    last_error: str | None = None
    last_error_kind: str | None = None

    def alias_map(self) -> dict[str, str]:
        return dict(self.aliases)

    def place(self, records: Iterable[Record]) -> frozenset[Record]:
        """The records where DNS keeps them: at the target of an aliased owner."""
        where = self.alias_map()
        return frozenset(
            replace(r, owner=where[r.owner]) if where.get(r.owner, r.owner) != r.owner else r
            for r in records
        )

    def owners(self) -> frozenset[str]:
        """Every owner name the versions and issuer records ask for."""
        return frozenset(r.owner for r in self._asked())

    def _asked(self) -> frozenset[Record]:
        records = self.issuers
        for version in (self.served, self.pending):
            if version is not None:
                records |= version.records
        return records

    def wanted(self) -> frozenset[Record]:
        """Records that must be in DNS: the served and pending versions' and the issuers'."""
        return self.place(self._asked())

    def unresolved(self) -> frozenset[str]:
        where = self.alias_map()
        return frozenset(o for o in self.owners() if o not in where)


@dataclass(frozen=True)
class Policy:
    """Settings that shape decisions but are not state.

    ``endpoints``: endpoints are listed, so records are retired only once
    every one of them presents a chain the remaining records match, and an
    endpoint still behind after ``endpoint_timeout`` seconds fails the check.
    ``audit_interval``: seconds between audits of the authoritative servers
    (0: never; only the timer's check audits). ``record_ttl``: the TTL the
    settings ask for, if any, which the audit brings DNS in line with.
    """

    hold_margin: float = 60.0
    reload: bool = False
    endpoints: bool = False
    endpoint_timeout: float = 3600.0
    audit_interval: float = 0.0
    record_ttl: int | None = None


# Actions ------------------------------------------------------------------


@dataclass(frozen=True)
class Resolve:
    """Find where the records of these owner names live (follow CNAME chains)."""

    owners: frozenset[str]


@dataclass(frozen=True)
class Publish:
    """Add these records to DNS (claiming the ones not already there)."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Observe:
    """Look at the authoritative servers and the validating resolver."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Prove:
    """These records are live now: record it (no I/O)."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Switch:
    """Move the dane links to this version."""

    version: Version


@dataclass(frozen=True)
class Reload:
    """Run the reload command: the served certificate changed."""


@dataclass(frozen=True)
class Probe:
    """Look at what each listed endpoint presents, against the records that will remain."""

    remaining: frozenset[Record]


@dataclass(frozen=True)
class Retire:
    """Delete these records, all owned by this host, none still wanted."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Retime:
    """Give these records (owned, wanted) the TTL the settings ask for."""

    records: frozenset[Record]
    ttl: int


@dataclass(frozen=True)
class Audit:
    """Read the authoritative servers for these records: are they all still there?"""

    records: frozenset[Record]


@dataclass(frozen=True)
class Wait:
    """Nothing to do until ``until`` (epoch seconds), or the next check if None.

    ``waiting_for`` is the machine-readable reason (see :data:`WAITING_FOR`).
    An ``alarm`` wait fails the check: something needs the operator.
    """

    reason: str
    until: float | None = None
    waiting_for: str | None = None
    alarm: bool = False


@dataclass(frozen=True)
class Idle:
    """The lineage is settled: nothing pending, nothing to publish, prove or retire."""


Action = (
    Resolve | Publish | Observe | Prove | Switch | Reload | Probe | Retire | Retime | Audit
    | Wait | Idle
)

#: What a lineage may wait for: the ``waiting_for`` values of :class:`Wait`,
#: and (from the shells) why the last attempt of an action failed.
WAITING_FOR = (
    "authoritative",  # the new records are not yet on every authoritative server, signed
    "hold",  # caches may still hold the RRset from before the new records
    "validation",  # the validating resolver does not return them with AD
    "endpoint",  # an endpoint still presents a chain only the old records match
    "store_error",  # the record store refused or failed; retried at each check
    "dns_error",  # DNS could not be asked
    "reload_error",  # the reload command failed
)


# Outcomes -----------------------------------------------------------------


@dataclass(frozen=True)
class Renewed:
    """A version newer than the served one exists (renewal or first deploy)."""

    version: Version


@dataclass(frozen=True)
class Resolved:
    """Where the records of these owner names live (an owner maps to itself
    unless it is an alias); ``ttl`` is the largest CNAME TTL on the way, which
    a cache may hold the chain for."""

    aliases: Mapping[str, str]
    ttl: int | None = None


@dataclass(frozen=True)
class IssuersRead:
    """The issuer bundle now asks for these records (at the owners' names)."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Claimed:
    """These absent records are about to be added by this host.

    ``ttl`` is the owners' TTL seen before the add. It is kept now, before
    the add can change it: a crash after the add would otherwise leave the
    next run to see only the new TTL and compute too short a hold.
    ``present`` are all the records found at those owners before the add.
    An add that fails and leaves a record out of DNS gives it back
    (:class:`Unclaimed`).
    """

    records: frozenset[Record]
    ttl: int | None = None
    present: frozenset[Record] = frozenset()


@dataclass(frozen=True)
class Unclaimed:
    """These claimed records were never added: the add failed and DNS does not
    have them. This host does not own them (an identical record someone else
    adds later is theirs)."""

    records: frozenset[Record]


@dataclass(frozen=True)
class Published:
    """These records are in DNS now; ``ttl`` is the owners' TTL seen before."""

    records: frozenset[Record]
    ttl: int | None = None


@dataclass(frozen=True)
class Observed:
    """What one look at DNS showed for ``records``.

    ``authoritative``: every authoritative server serves every record, signed.
    ``validated``: the validating resolver returns them all with AD.
    ``ttl``: the largest TTL the authoritative servers give those RRsets.
    """

    records: frozenset[Record]
    authoritative: bool
    validated: bool
    ttl: int | None = None


@dataclass(frozen=True)
class Proven:
    records: frozenset[Record]


@dataclass(frozen=True)
class Switched:
    version: Version


@dataclass(frozen=True)
class Reloaded:
    pass


@dataclass(frozen=True)
class Probed:
    """What each endpoint presents: (endpoint, matches the remaining records, what it is)."""

    endpoints: tuple[tuple[str, bool, str], ...]


@dataclass(frozen=True)
class Retiring:
    """These records are about to be deleted: no longer published, nor live.

    Saved before the delete, as a claim is before an add: after a crash
    between the delete and :class:`Retired`, a record wanted again (a
    version back on an old key, an issuer back in the bundle) is published
    again instead of being taken for present.
    """

    records: frozenset[Record]


@dataclass(frozen=True)
class Retired:
    records: frozenset[Record]


@dataclass(frozen=True)
class Audited:
    """What every authoritative server serves for the audited records.

    ``present``: the records every server serves. ``ttls``: each owner's
    largest RRset TTL (owners without records are left out).
    """

    records: frozenset[Record]
    present: frozenset[Record]
    ttls: Mapping[str, int]


@dataclass(frozen=True)
class AuditDue:
    """The settings now ask for another record TTL: audit at the next decision,
    whatever the interval, so the TTL in DNS follows the setting at once."""


@dataclass(frozen=True)
class Retimed:
    """These owners' RRsets now carry the setting's TTL; ``ttls`` is what they had."""

    ttls: Mapping[str, int]


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
    """A step failed; the message is shown by status and the next check retries.

    ``kind`` says what failed (``store``, ``dns``, ``reload``, ``files``).
    """

    message: str
    kind: str | None = None


Outcome = (
    Renewed
    | Resolved
    | IssuersRead
    | Claimed
    | Unclaimed
    | Published
    | Observed
    | Proven
    | Switched
    | Reloaded
    | Probed
    | Retiring
    | Retired
    | Audited
    | AuditDue
    | Retimed
    | Adopted
    | Retargeted
    | Failed
)


@dataclass(frozen=True)
class Look:
    """This check's look at ``records`` (the records being proven)."""

    records: frozenset[Record]
    validated: bool
    ttl: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Seen:
    """What the current check has looked at so far."""

    look: Look | None = None
    probed: bool = False


NOTHING_SEEN = Seen()


# The decision -------------------------------------------------------------


def decide(state: State, now: float, seen: Seen, policy: Policy) -> Action:
    """The next step for one lineage; ``seen`` is what this check looked at."""
    unresolved = state.unresolved()
    if unresolved:
        return Resolve(unresolved)
    wanted = state.wanted()
    to_publish = wanted - state.published
    if to_publish:
        return Publish(to_publish)
    if state.reload_due:
        return Reload()
    pending = state.pending
    if pending is not None and may_switch(state, pending):
        return Switch(pending)
    to_retire = _retirable(state, wanted)
    if to_retire:
        return _gate(state, now, seen, policy, wanted) or Retire(to_retire)
    retime = _to_retime(state, policy)
    if retime is not None:
        return retime
    unproven = wanted - state.live
    if unproven:
        action = _prove(state, now, seen, policy, unproven)
        if isinstance(action, Wait) and action.waiting_for == "authoritative":
            # A record that vanished while it was being proven (deleted by
            # hand, a zone restored) would be waited for forever: the audit
            # finds it missing, and it is published again.
            if _audit_due(state, now, policy):
                return Audit(wanted)
        return action
    if _audit_due(state, now, policy):
        return Audit(wanted)
    return Idle()


def may_switch(state: State, version: Version) -> bool:
    """May the links move to ``version`` now?

    Yes when, at every owner name of the version, a live record matches it;
    and for a first version also when no record a client could have cached
    was at its owner names.
    """
    placed = state.place(version.records)
    if state.served is None and not {r.owner for r in state.foreign} & {
        r.owner for r in placed
    }:
        return True
    return _covered(state, version)


def _covered(state: State, version: Version) -> bool:
    """Does every owner name of ``version`` already carry a live record it matches?

    With ``311,211`` and key reuse, a new intermediate changes the 211 record
    but not the 311 one: every cache already holds a record (3 1 1) that the
    new certificate matches. With an issuer bundle, the 211 record of every
    bundled intermediate is live before the renewal happens.
    """
    owners = {r.owner for r in version.records}
    covered = {r.owner for r in version.records if state.place([r]) <= state.live}
    return bool(owners) and owners <= covered


def _prove(
    state: State, now: float, seen: Seen, policy: Policy, unproven: frozenset[Record]
) -> Action:
    unproven = _first_to_prove(state, now, policy, unproven)
    if seen.look is None or seen.look.records != unproven:
        return Observe(unproven)
    if state.proving != unproven or state.visible_since is None:
        detail = f" ({seen.look.detail})" if seen.look.detail else ""
        return Wait(
            f"the new records are not yet on every authoritative server{detail}",
            waiting_for="authoritative",
        )
    end = hold_end(state, seen.look, policy)
    if now < end:
        return Wait("hold: caches may still have the old RRset", end, "hold")
    if not seen.look.validated:
        detail = f" ({seen.look.detail})" if seen.look.detail else ""
        return Wait(
            f"the validating resolver does not yet return the new records with AD{detail}",
            waiting_for="validation",
        )
    return Prove(unproven)


def _first_to_prove(
    state: State, now: float, policy: Policy, unproven: frozenset[Record]
) -> frozenset[Record]:
    """Records that joined the proof late must not restart the hold of those
    that were already visible: when the earlier set's hold is over (a bundled
    intermediate published hours ago, a renewal that adds its 3 x x record
    now), that set is proven on its own first, so a version it covers can
    switch at once."""
    earlier = state.proving
    started = earlier < unproven and state.visible_since is not None
    if earlier and started and now >= hold_end(state, None, policy):
        return earlier
    return unproven


def hold_end(state: State, look: Look | None, policy: Policy) -> float:
    """When caches have forgotten every RRset from before ``visible_since``."""
    assert state.visible_since is not None
    end = state.visible_since + hold_seconds(state, look, policy)
    if state.hold_floor is not None:
        end = max(end, state.hold_floor + policy.hold_margin)
    return end


def hold_seconds(state: State, look: Look | None, policy: Policy) -> float:
    ttls = [t for t in (state.hold_ttl, look.ttl if look else None) if t is not None]
    return float(max(ttls, default=0)) + policy.hold_margin


def _gate(
    state: State, now: float, seen: Seen, policy: Policy, remaining: frozenset[Record]
) -> Action | None:
    """The endpoint gate before a retirement: None when the records may go."""
    if not policy.endpoints:
        return None
    if not seen.probed:
        return Probe(remaining)
    if not state.lagging:
        return None
    behind = "; ".join(f"{lag.endpoint} presents {lag.presents}" for lag in state.lagging)
    oldest = min(lag.since for lag in state.lagging)
    if now - oldest >= policy.endpoint_timeout:
        return Wait(
            f"endpoint not caught up after {now - oldest:.0f} s: {behind}; the old records "
            "stay until it presents the served certificate (reload or fix that service)",
            waiting_for="endpoint",
            alarm=True,
        )
    return Wait(f"endpoint behind: {behind}; the old records stay", waiting_for="endpoint")


def _retirable(state: State, wanted: frozenset[Record]) -> frozenset[Record]:
    """Owned records no longer wanted, but those at a place an alias left: they
    stay until the records at its new target are live, since a cache holding
    the old CNAME still sends clients there."""
    unwanted = state.owned - wanted
    if not unwanted or wanted <= state.live:
        return unwanted
    places = {r.owner for r in wanted} | {t for _, t in state.aliases}
    return frozenset(r for r in unwanted if r.owner in places)


def _to_retime(state: State, policy: Policy) -> Retime | None:
    if policy.record_ttl is None or not state.stale_ttl:
        return None
    stale = {owner for owner, ttl in state.stale_ttl if ttl != policy.record_ttl}
    records = frozenset(r for r in state.owned & state.wanted() if r.owner in stale)
    return Retime(records, policy.record_ttl) if records else None


def _audit_due(state: State, now: float, policy: Policy) -> bool:
    if policy.audit_interval <= 0:
        return False
    return state.audited_at is None or not 0 <= now - state.audited_at < policy.audit_interval


# Outcomes -----------------------------------------------------------------


def advance(state: State, outcome: Outcome, now: float, policy: Policy) -> State:
    """The state after an outcome. Pure; unknown or stale outcomes change nothing."""
    match outcome:
        case Renewed(version):
            return _renewed(state, version)
        case Resolved(aliases, ttl):
            merged = {**state.alias_map(), **{o.lower(): t.lower() for o, t in aliases.items()}}
            return replace(
                state,
                aliases=tuple(sorted(merged.items())),
                hold_ttl=_max(state.hold_ttl, ttl or None),
                last_error=None,
                last_error_kind=None,
            )
        case IssuersRead(records):
            return replace(state, issuers=records)
        case Claimed(records, ttl, present):
            return _claimed(state, records, ttl, present)
        case Unclaimed(records):
            return replace(state, owned=state.owned - (records - state.published))
        case Published(records, ttl):
            return replace(
                state,
                published=state.published | records,
                hold_ttl=_max(state.hold_ttl, ttl),
                # The first publish starts the audit's cadence: DNS was just written.
                audited_at=now if state.audited_at is None else state.audited_at,
                last_error=None,
                last_error_kind=None,
            )
        case Observed(records, authoritative, _validated, ttl):
            return _observed(state, records, authoritative, ttl, now)
        case Proven(records):
            floor = state.hold_floor
            return replace(
                state,
                live=state.live | (records & state.published),
                proving=frozenset(),
                visible_since=None,
                hold_ttl=None,
                hold_floor=floor if floor is not None and now < floor else None,
                audited_at=now,
                last_error=None,
                last_error_kind=None,
            )
        case Switched(version):
            return _switched(state, version, policy)
        case Reloaded():
            return replace(state, reload_due=False, last_error=None, last_error_kind=None)
        case Probed(endpoints):
            return _probed(state, endpoints, now)
        case Retiring(records):
            return replace(
                state, published=state.published - records, live=state.live - records
            )
        case Retired(records):
            return replace(
                state,
                owned=state.owned - records,
                published=state.published - records,
                live=state.live - records,
                previous=None,
                lagging=(),
                last_error=None,
                last_error_kind=None,
            )
        case Audited(records, present, ttls):
            return _audited(state, records, present, ttls, now, policy)
        case AuditDue():
            return replace(state, audited_at=None)
        case Retimed(ttls):
            longest = max(ttls.values(), default=0)
            floor = now + longest
            return replace(
                state,
                stale_ttl=(),
                hold_floor=floor if state.hold_floor is None else max(state.hold_floor, floor),
                last_error=None,
                last_error_kind=None,
            )
        case Adopted(version):
            if state.served is not None:
                return state
            pending = state.pending
            if pending is not None and pending.number <= version.number:
                pending = None
            return replace(state, served=version, pending=pending)
        case Retargeted(served, pending):
            same = [
                (a.number if a else None) == (b.number if b else None)
                for a, b in ((served, state.served), (pending, state.pending))
            ]
            if not all(same):
                return state
            return replace(state, served=served, pending=pending)
        case Failed(message, kind):
            return replace(state, last_error=message, last_error_kind=kind)
    raise TypeError(f"unknown outcome {outcome!r}")


def _renewed(state: State, version: Version) -> State:
    known = [v.number for v in (state.served, state.pending) if v is not None]
    if known and version.number <= max(known):
        return state
    return replace(state, pending=version)


def _claimed(
    state: State, records: frozenset[Record], ttl: int | None, present: frozenset[Record]
) -> State:
    claimed = replace(state, owned=state.owned | records, hold_ttl=_max(state.hold_ttl, ttl))
    if state.served is not None:
        return claimed
    # Before a first version is served: what was there already is what
    # clients may have cached. Records of ours among it are live (they were
    # there before this host did anything); the others are foreign.
    wanted = state.wanted()
    return replace(
        claimed,
        foreign=state.foreign | (present - wanted),
        live=state.live | (present & wanted),
    )


def _observed(
    state: State, records: frozenset[Record], authoritative: bool, ttl: int | None, now: float
) -> State:
    # A subset of what was visible has been visible since then too.
    same = records <= state.proving and state.visible_since is not None
    since = (state.visible_since if same else now) if authoritative else None
    return replace(
        state,
        proving=records,
        visible_since=since,
        hold_ttl=_max(state.hold_ttl, ttl),
        last_error=None,
        last_error_kind=None,
    )


def _switched(state: State, version: Version, policy: Policy) -> State:
    if state.pending is None or version.number != state.pending.number:
        return state
    after = replace(state, served=version, pending=None)
    keep = after.wanted() | state.owned
    live = state.live
    placed = state.place(version.records)
    if state.served is None and not {r.owner for r in state.foreign} & {r.owner for r in placed}:
        # A first version where no client could have cached a record: a
        # cache holds nothing for these names, or an RRset with its records.
        live |= placed & state.published
    return replace(
        after,
        previous=state.served,
        reload_due=policy.reload and state.served is not None,
        published=state.published & keep,
        live=live & keep,
        foreign=frozenset(),
        lagging=(),
        last_error=None,
        last_error_kind=None,
    )


def _probed(state: State, endpoints: tuple[tuple[str, bool, str], ...], now: float) -> State:
    before = {lag.endpoint: lag for lag in state.lagging}
    lagging = tuple(
        Lag(name, before[name].since if name in before else now, presents)
        for name, ok, presents in endpoints
        if not ok
    )
    return replace(state, lagging=lagging, last_error=None, last_error_kind=None)


def _audited(
    state: State,
    records: frozenset[Record],
    present: frozenset[Record],
    ttls: Mapping[str, int],
    now: float,
    policy: Policy,
) -> State:
    missing = (records & state.published) - present
    stale: tuple[tuple[str, int], ...] = ()
    if policy.record_ttl is not None:
        ours = {r.owner for r in state.owned & present}
        stale = tuple(
            sorted((o, t) for o, t in ttls.items() if o in ours and t != policy.record_ttl)
        )
    return replace(
        state,
        published=state.published - missing,
        live=state.live - missing,
        audited_at=now,
        stale_ttl=stale,
        last_error=None,
        last_error_kind=None,
    )


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def explain(action: Action) -> tuple[str, str | None, float | None]:
    """(human text, waiting_for, until) for what a check would do next."""
    match action:
        case Idle():
            return "settled", None, None
        case Resolve(owners):
            return f"resolving {len(owners)} owner name(s)", None, None
        case Publish(records):
            return f"publishing {len(records)} record(s)", None, None
        case Observe(records):
            return f"looking at {len(records)} new record(s) in DNS", None, None
        case Prove(records):
            return f"{len(records)} new record(s) are live", None, None
        case Reload():
            return "reload command due", None, None
        case Probe():
            return "looking at the endpoints", None, None
        case Retire(records):
            return f"retiring {len(records)} record(s)", None, None
        case Retime(records, ttl):
            return f"changing the TTL of {len(records)} record(s) to {ttl} s", None, None
        case Audit(records):
            return f"auditing {len(records)} record(s)", None, None
        case Switch(version):
            return f"ready to switch to version {version.number}", None, None
        case Wait(reason, until, waiting_for):
            return reason, waiting_for, until
    return type(action).__name__.lower(), None, None
