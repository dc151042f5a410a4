"""Example-based tests of each rule of the rollover core (decide / advance)."""
from __future__ import annotations

import pytest

from certbot_dane.rollover import (
    NOTHING_SEEN,
    Adopted,
    Audit,
    Audited,
    Claimed,
    Failed,
    Idle,
    IssuersRead,
    Look,
    Observe,
    Observed,
    Policy,
    Probe,
    Probed,
    Prove,
    Proven,
    Publish,
    Published,
    Reload,
    Reloaded,
    Renewed,
    Resolve,
    Resolved,
    Retargeted,
    Retime,
    Retimed,
    Retire,
    Retired,
    Seen,
    State,
    Switch,
    Switched,
    Unclaimed,
    Version,
    Wait,
    advance,
    decide,
    explain,
    hold_seconds,
    may_switch,
)
from certbot_dane.tlsa import Record

A = "_25._tcp.a.example."
B = "_25._tcp.b.example."
POLICY = Policy()
RELOAD = Policy(reload=True)
GATED = Policy(reload=True, endpoints=True, endpoint_timeout=3600)


def rec(owner: str, key: int, usage: int = 3) -> Record:
    return Record(owner, usage, 1, 1, f"{key:064x}")


def version(number: int, key: int, owners=(A,)) -> Version:
    return Version(number, frozenset(rec(o, key) for o in owners))


def resolved(state: State, now: float = 0, policy=POLICY, aliases=None) -> State:
    """Do what the shell does for a Resolve action: no aliases unless given."""
    action = decide(state, now, NOTHING_SEEN, policy)
    if not isinstance(action, Resolve):
        return state
    found = {o: (aliases or {}).get(o, o) for o in action.owners}
    return advance(state, Resolved(found), now, policy)


def publish(state: State, now: float, prior_ttl: int | None, present=frozenset(),
            policy=POLICY) -> State:
    """Do what the shell does for a Publish action; ``present`` is already in DNS."""
    state = resolved(state, now, policy)
    action = decide(state, now, NOTHING_SEEN, policy)
    assert isinstance(action, Publish), action
    state = advance(state, Claimed(action.records - present, prior_ttl, present), now, policy)
    return advance(state, Published(action.records, prior_ttl), now, policy)


def look(state: State, validated: bool = True, ttl: int | None = 300) -> Seen:
    """This check's look at what is being proven."""
    unproven = state.wanted() - state.live
    return Seen(Look(unproven, validated, ttl))


def observed(state: State, now: float, authoritative=True, validated=True, ttl=300,
             policy=POLICY) -> tuple[State, Seen]:
    action = decide(state, now, NOTHING_SEEN, policy)
    assert isinstance(action, Observe), action
    state = advance(state, Observed(action.records, authoritative, validated, ttl), now, policy)
    return state, Seen(Look(action.records, validated, ttl))


def deployed(v: Version, policy=POLICY) -> State:
    """A lineage whose first version is served and settled."""
    state = advance(State(), Renewed(v), 0, policy)
    state = publish(state, 0, 300, policy=policy)
    assert decide(state, 0, NOTHING_SEEN, policy) == Switch(v)
    state = advance(state, Switched(v), 0, policy)
    assert decide(state, 0, NOTHING_SEEN, policy) == Idle()
    return state


V1 = version(1, 1)
V2 = version(2, 2)
V3 = version(3, 3)


def renewed_and_published(prior_ttl=300, now=0.0, policy=POLICY) -> State:
    state = advance(deployed(V1, policy), Renewed(V2), now, policy)
    return publish(state, now, prior_ttl, policy=policy)


def proven_and_switched(state: State, now: float, policy=POLICY) -> State:
    """Observe, wait out the hold, prove, switch."""
    state, seen = observed(state, now, policy=policy)
    end = now + hold_seconds(state, seen.look, policy) + 10**5
    state, seen = observed(state, end, policy=policy)
    action = decide(state, end, seen, policy)
    assert isinstance(action, Prove), action
    state = advance(state, Proven(action.records), end, policy)
    switch = decide(state, end, seen, policy)
    assert isinstance(switch, Switch), switch
    return advance(state, Switched(switch.version), end, policy)


# First deploy --------------------------------------------------------------------


@pytest.mark.parametrize("policy", [POLICY, RELOAD])
def test_first_deploy_publishes_then_switches_at_once(policy):
    state = advance(State(), Renewed(V1), 0, policy)
    assert state.pending == V1 and state.served is None
    assert decide(state, 0, NOTHING_SEEN, policy) == Resolve(frozenset({A}))
    state = advance(state, Resolved({A: A}), 0, policy)
    assert decide(state, 0, NOTHING_SEEN, policy) == Publish(V1.records)
    state = advance(state, Claimed(V1.records, None, frozenset()), 0, policy)
    assert state.owned == V1.records
    # Claimed alone does not count as published: the add may not have happened.
    assert decide(state, 0, NOTHING_SEEN, policy) == Publish(V1.records)
    state = advance(state, Published(V1.records, None), 0, policy)
    # No observation and no hold: no client can have cached a record here.
    assert decide(state, 0, NOTHING_SEEN, policy) == Switch(V1)
    state = advance(state, Switched(V1), 0, policy)
    assert state.served == V1 and state.pending is None
    assert state.reload_due is False
    assert state.live == V1.records, "a cache holds nothing here, or our records"
    assert decide(state, 0, NOTHING_SEEN, policy) == Idle()
    assert state.owned == state.published == V1.records
    assert explain(Idle()) == ("settled", None, None)


def test_first_version_next_to_foreign_records_waits_for_the_hold():
    """Records a previous tool left at the owner may be cached: the links wait."""
    old = rec(A, 99)
    state = advance(State(), Renewed(V1), 0, POLICY)
    state = publish(state, 0, 3600, present=frozenset({old}))
    assert state.foreign == {old} and old not in state.owned
    action = decide(state, 0, NOTHING_SEEN, POLICY)
    assert action == Observe(V1.records), "no links before the hold"
    state, seen = observed(state, 10)
    wait = decide(state, 10, seen, POLICY)
    assert isinstance(wait, Wait) and wait.waiting_for == "hold"
    assert wait.until == 10 + 3600 + POLICY.hold_margin
    state, seen = observed(state, 3670)
    assert decide(state, 3670, seen, POLICY) == Prove(V1.records)
    state = advance(state, Proven(V1.records), 3670, POLICY)
    assert decide(state, 3670, seen, POLICY) == Switch(V1)
    state = advance(state, Switched(V1), 3670, POLICY)
    # Foreign records are never retired; they are forgotten once served.
    assert decide(state, 3670, NOTHING_SEEN, POLICY) == Idle()
    assert state.foreign == frozenset() and old not in state.owned


def test_first_version_matching_a_present_record_is_served_at_once():
    """A record of this key already at the owner (a previous tool) is live already."""
    ours = rec(A, 1)
    other = rec(A, 99)
    state = advance(State(), Renewed(V1), 0, POLICY)
    state = publish(state, 0, 3600, present=frozenset({ours, other}))
    assert ours in state.live and ours not in state.owned
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Switch(V1)


def test_foreign_records_at_another_owner_do_not_hold_the_first_version():
    state = advance(State(), Renewed(V1), 0, POLICY)
    state = publish(state, 0, 3600, present=frozenset())
    state = advance(state, Claimed(frozenset(), 3600, frozenset({rec(B, 9)})), 0, POLICY)
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Switch(V1)


# Renewal -------------------------------------------------------------------------


def test_renewal_publishes_new_records_next_to_old():
    state = advance(deployed(V1), Renewed(V2), 10, POLICY)
    assert state.served == V1 and state.pending == V2
    action = decide(state, 10, NOTHING_SEEN, POLICY)
    assert action == Resolve(frozenset({A})) or action == Publish(V2.records)
    state = publish(state, 10, 300)
    assert state.published == V1.records | V2.records
    assert state.owned == V1.records | V2.records
    # Nothing of the served version is retired while the new one is pending.
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Observe(V2.records)
    assert state.hold_ttl == 300


def test_renewal_with_new_owner_resolves_then_publishes_at_every_owner():
    v2 = version(2, 2, owners=(A, B))
    state = advance(deployed(V1), Renewed(v2), 0, POLICY)
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Resolve(frozenset({B}))
    state = resolved(state)
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Publish(v2.records)


# Visibility, hold, validation ------------------------------------------------------


def test_no_switch_before_authoritative_visibility():
    state = renewed_and_published()
    for now in (0, 10_000, 10**9):
        state, seen = observed(state, now, authoritative=False)
        assert state.visible_since is None
        action = decide(state, now, seen, POLICY)
        assert isinstance(action, Wait)
        assert action.until is None and action.waiting_for == "authoritative"


@pytest.mark.parametrize(("prior", "seen_ttl"), [(3600, 300), (300, 3600), (600, 600)])
def test_hold_is_max_ttl_plus_margin_from_first_visibility(prior, seen_ttl):
    policy = Policy(hold_margin=45)
    state = renewed_and_published(prior_ttl=prior, now=0, policy=policy)
    state, seen = observed(state, 1000, ttl=seen_ttl, policy=policy)
    assert state.visible_since == 1000
    hold_end = 1000 + max(prior, seen_ttl) + 45
    # A later observation does not move the start of the hold.
    state, seen = observed(state, 2000, ttl=seen_ttl, policy=policy)
    assert state.visible_since == 1000
    assert hold_seconds(state, seen.look, policy) == max(prior, seen_ttl) + 45
    early = decide(state, hold_end - 1, seen, policy)
    assert isinstance(early, Wait)
    assert early.until == hold_end and early.waiting_for == "hold"
    assert decide(state, hold_end, seen, policy) == Prove(V2.records)


def test_hold_uses_this_checks_observed_ttl():
    state = renewed_and_published(prior_ttl=300)
    state, _ = observed(state, 0)
    # The RRset's TTL grew since the last look: the hold grows with it.
    assert isinstance(decide(state, 400, look(state, True, 7200), POLICY), Wait)
    assert decide(state, 400, look(state, True, 300), POLICY) == Prove(V2.records)


def test_hold_without_known_ttl_is_the_margin():
    assert hold_seconds(State(), None, Policy(hold_margin=7)) == 7
    assert hold_seconds(State(), Look(frozenset(), True), Policy(hold_margin=7)) == 7


def test_no_switch_without_ad_validation_even_after_the_hold():
    state = renewed_and_published(prior_ttl=300)
    state, _ = observed(state, 0, validated=False)
    for now in (360, 10_000, 10**9):
        action = decide(state, now, look(state, False), POLICY)
        assert isinstance(action, Wait) and action.waiting_for == "validation"
        assert "AD" in action.reason
    state, seen = observed(state, 10**9)
    assert decide(state, 10**9, seen, POLICY) == Prove(V2.records)


def test_observe_comes_first_in_each_check():
    state = renewed_and_published()
    state, _ = observed(state, 0)
    # A new check (no observation yet) looks again before deciding anything.
    assert decide(state, 10**9, NOTHING_SEEN, POLICY) == Observe(V2.records)
    # A look at other records does not count for these.
    other = Seen(Look(frozenset({rec(B, 5)}), True, 300))
    assert decide(state, 10**9, other, POLICY) == Observe(V2.records)


def test_visibility_lost_resets_visible_since():
    state = renewed_and_published()
    state, _ = observed(state, 100)
    assert state.visible_since == 100
    state, seen = observed(state, 200, authoritative=False)
    assert state.visible_since is None
    assert isinstance(decide(state, 5000, seen, POLICY), Wait)
    state, seen = observed(state, 300)
    assert state.visible_since == 300
    assert isinstance(decide(state, 300 + 359, seen, POLICY), Wait)
    assert decide(state, 300 + 360, seen, POLICY) == Prove(V2.records)


def test_proven_records_are_live_and_the_switch_follows():
    state = renewed_and_published(prior_ttl=300)
    state, seen = observed(state, 0)
    state = advance(state, Proven(V2.records), 400, POLICY)
    assert V2.records <= state.live
    assert state.visible_since is None and state.hold_ttl is None and not state.proving
    assert decide(state, 400, seen, POLICY) == Switch(V2)


# Switch, reload, retire --------------------------------------------------------------


def switched_to_v2(policy=POLICY) -> State:
    return proven_and_switched(renewed_and_published(prior_ttl=300, policy=policy), 0, policy)


def test_switch_then_reload_then_retire_old_owned_records():
    state = switched_to_v2(RELOAD)
    assert state.served == V2 and state.pending is None and state.previous == V1
    assert state.reload_due is True
    assert decide(state, 10**6, NOTHING_SEEN, RELOAD) == Reload()
    state = advance(state, Reloaded(), 10**6, RELOAD)
    assert state.reload_due is False
    assert decide(state, 10**6, NOTHING_SEEN, RELOAD) == Retire(V1.records)
    state = advance(state, Retired(V1.records), 10**6, RELOAD)
    assert state.owned == state.published == state.live == V2.records
    assert state.previous is None
    assert decide(state, 10**6, NOTHING_SEEN, RELOAD) == Idle()


def test_switch_without_reload_policy_retires_at_once():
    state = switched_to_v2(POLICY)
    assert state.reload_due is False
    assert decide(state, 10**6, NOTHING_SEEN, POLICY) == Retire(V1.records)


def test_never_retire_while_reload_due():
    state = switched_to_v2(RELOAD)
    for now in (10**6, 10**9):
        assert decide(state, now, NOTHING_SEEN, RELOAD) == Reload()
    # A failed reload keeps it due; retiring still waits.
    state = advance(state, Failed("reload command exited 1", "reload"), 10**6, RELOAD)
    assert state.reload_due is True and state.last_error_kind == "reload"
    assert decide(state, 10**6, NOTHING_SEEN, RELOAD) == Reload()
    assert explain(Reload())[0] == "reload command due"


def test_reload_due_survives_a_renewal():
    state = switched_to_v2(RELOAD)
    state = advance(state, Renewed(V3), 10**6, RELOAD)
    assert state.reload_due is True
    state = publish(state, 10**6, 300, policy=RELOAD)
    assert decide(state, 10**6, NOTHING_SEEN, RELOAD) == Reload()


def test_never_retire_a_record_present_before_publish():
    # The new version's record at A already existed (published by another host).
    foreign = rec(A, 2)
    v2 = version(2, 2, owners=(A, B))
    state = advance(deployed(V1), Renewed(v2), 0, POLICY)
    state = publish(state, 0, 300, present=frozenset({foreign}))
    assert foreign not in state.owned
    assert rec(B, 2) in state.owned
    # A third version replaces v2 before it went live: only our own record goes.
    state = advance(state, Renewed(V3), 10, POLICY)
    state = publish(state, 10, 300)
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Retire(frozenset({rec(B, 2)}))


def test_a_record_whose_add_failed_is_unclaimed_and_published_again():
    state = advance(deployed(V1), Renewed(V2), 0, POLICY)
    action = decide(state, 0, NOTHING_SEEN, POLICY)
    assert action == Publish(V2.records)
    state = advance(state, Claimed(V2.records, 300), 0, POLICY)
    assert V2.records <= state.owned
    state = advance(state, Unclaimed(V2.records | V1.records), 0, POLICY)
    assert state.owned == V1.records, "a published record stays claimed"
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Publish(V2.records)


def test_never_retire_a_foreign_record_of_the_old_version():
    foreign = rec(A, 1)
    state = advance(State(), Renewed(V1), 0, POLICY)
    state = publish(state, 0, None, present=frozenset({foreign}))
    state = advance(state, Switched(V1), 0, POLICY)
    assert state.owned == frozenset()
    state = advance(state, Renewed(V2), 0, POLICY)
    state = publish(state, 0, 300)
    state = proven_and_switched(state, 0)
    assert foreign not in state.published
    assert decide(state, 10**6, NOTHING_SEEN, POLICY) == Idle()


def test_key_reuse_switches_without_observing():
    v2 = Version(2, V1.records)
    for policy in (POLICY, RELOAD):
        state = advance(deployed(V1, policy), Renewed(v2), 0, policy)
        assert decide(state, 0, NOTHING_SEEN, policy) == Switch(v2)
        state = advance(state, Switched(v2), 0, policy)
        assert state.served == v2
        assert state.owned == state.published == V1.records
        expected = Reload() if policy.reload else Idle()
        assert decide(state, 0, NOTHING_SEEN, policy) == expected


def test_second_renewal_before_switch_replaces_pending_and_retires_skipped():
    state = renewed_and_published(prior_ttl=3600)
    state, _ = observed(state, 5)
    state = advance(state, Renewed(V3), 100, POLICY)
    assert state.pending == V3 and state.served == V1
    assert decide(state, 100, NOTHING_SEEN, POLICY) == Publish(V3.records)
    state = publish(state, 100, 300)
    # The skipped version's records go; the served version's stay.
    assert decide(state, 100, NOTHING_SEEN, POLICY) == Retire(V2.records)
    state = advance(state, Retired(V2.records), 100, POLICY)
    assert state.owned == V1.records | V3.records
    assert decide(state, 100, NOTHING_SEEN, POLICY) == Observe(V3.records)
    # The hold restarts for the new records and covers the largest TTL seen.
    state, seen = observed(state, 100)
    assert state.visible_since == 100
    assert isinstance(decide(state, 100 + 360, seen, POLICY), Wait)
    assert decide(state, 100 + 3660, seen, POLICY) == Prove(V3.records)


def test_second_renewal_sharing_records_with_served_keeps_them():
    # v3 goes back to the served key at A but adds a new owner B.
    v3 = Version(3, V1.records | {rec(B, 3)})
    state = renewed_and_published()
    state = advance(state, Renewed(v3), 10, POLICY)
    state = resolved(state, 10)
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Publish(frozenset({rec(B, 3)}))
    state = publish(state, 10, 300)
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Retire(V2.records)


def test_key_reuse_with_a_new_intermediate_switches_at_once():
    # 311 (same key) and 211 (new intermediate): the 3 1 1 record is live.
    ee = rec(A, 1)
    old_ta = rec(A, 0xA, usage=2)
    new_ta = rec(A, 0xB, usage=2)
    v1 = Version(1, frozenset({ee, old_ta}))
    v2 = Version(2, frozenset({ee, new_ta}))
    state = advance(deployed(v1), Renewed(v2), 10, POLICY)
    state = publish(state, 10, 300)
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Switch(v2), "no hold: 311 matches"
    state = advance(state, Switched(v2), 10, POLICY)
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Retire(frozenset({old_ta}))
    state = advance(state, Retired(frozenset({old_ta})), 10, POLICY)
    # The new 211 record is served but not yet proven live: it is proven next.
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Observe(frozenset({new_ta}))


def test_a_new_owner_name_needs_the_hold_even_with_key_reuse():
    # Same key, but the new certificate has a second name: B has no live record.
    v2 = version(2, 1, owners=(A, B))
    state = advance(deployed(V1), Renewed(v2), 10, POLICY)
    state = publish(state, 10, 300)
    assert isinstance(decide(state, 10, NOTHING_SEEN, POLICY), Observe)


# Issuer records ---------------------------------------------------------------------


def test_issuer_records_are_wanted_published_and_proven_ahead_of_a_renewal():
    ta = rec(A, 0xCA, usage=2)
    state = advance(deployed(V1), IssuersRead(frozenset({ta})), 0, POLICY)
    assert state.wanted() == V1.records | {ta}
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Publish(frozenset({ta}))
    state = publish(state, 0, 300)
    state, seen = observed(state, 0)
    state, seen = observed(state, 400)
    assert decide(state, 400, seen, POLICY) == Prove(frozenset({ta}))
    state = advance(state, Proven(frozenset({ta})), 400, POLICY)
    assert decide(state, 400, seen, POLICY) == Idle()
    # A new-key renewal chaining to the bundled intermediate switches at once.
    v2 = Version(2, frozenset({rec(A, 2), ta}))
    state = advance(state, Renewed(v2), 500, POLICY)
    state = publish(state, 500, 300)
    assert decide(state, 500, NOTHING_SEEN, POLICY) == Switch(v2)
    # One chaining to an intermediate outside the bundle goes through the hold.
    v3 = Version(3, frozenset({rec(A, 3), rec(A, 0xBB, usage=2)}))
    later = advance(state, Renewed(v3), 500, POLICY)
    later = publish(later, 500, 300)
    assert not may_switch(later, v3)
    assert decide(later, 500, NOTHING_SEEN, POLICY) == Retire(frozenset({rec(A, 2)}))
    later = advance(later, Retired(frozenset({rec(A, 2)})), 500, POLICY)
    assert isinstance(decide(later, 500, NOTHING_SEEN, POLICY), Observe)


def test_a_renewal_does_not_restart_the_hold_of_an_issuer_record_already_visible():
    """The bundled intermediate's record was visible for a whole hold, but no
    check ran since to record it live; a renewal then adds its new 3 1 1 record.
    The issuer record is proven on its own, and the version it covers switches."""
    ta = rec(A, 0xCA, usage=2)
    state = advance(deployed(V1), IssuersRead(frozenset({ta})), 0, POLICY)
    state = publish(state, 0, 300)
    state, _ = observed(state, 0)
    assert state.proving == {ta} and state.visible_since == 0
    v2 = Version(2, frozenset({rec(A, 2), ta}))
    state = advance(state, Renewed(v2), 1000, POLICY)
    state = publish(state, 1000, 300)
    state, seen = observed(state, 1000)
    assert seen.look.records == {ta}, "the earlier set alone"
    assert decide(state, 1000, seen, POLICY) == Prove(frozenset({ta}))
    state = advance(state, Proven(frozenset({ta})), 1000, POLICY)
    assert decide(state, 1000, seen, POLICY) == Switch(v2)

    # Within the earlier set's hold, the new record joins it: one proof, one hold.
    early = advance(deployed(V1), IssuersRead(frozenset({ta})), 0, POLICY)
    early = publish(early, 0, 300)
    early, _ = observed(early, 0)
    early = advance(early, Renewed(v2), 100, POLICY)
    early = publish(early, 100, 300)
    assert decide(early, 100, NOTHING_SEEN, POLICY) == Observe(frozenset({ta, rec(A, 2)}))


def test_an_issuer_removed_from_the_bundle_is_retired_unless_a_version_needs_it():
    ta, tb = rec(A, 0xCA, usage=2), rec(A, 0xCB, usage=2)
    v1 = Version(1, frozenset({rec(A, 1), ta}))
    state = advance(deployed(v1), IssuersRead(frozenset({ta, tb})), 0, POLICY)
    state = publish(state, 0, 300)
    state = advance(state, IssuersRead(frozenset()), 10, POLICY)
    # ta is the served version's issuer: it stays; tb goes.
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Retire(frozenset({tb}))


# The endpoint gate --------------------------------------------------------------------


def test_no_retire_before_every_endpoint_presents_a_matching_chain():
    state = advance(switched_to_v2(GATED), Reloaded(), 10**6, GATED)
    now = 10**6
    assert decide(state, now, NOTHING_SEEN, GATED) == Probe(V2.records)
    state = advance(state, Probed((("127.0.0.1:25/smtp", False, "version 1 (old)"),)), now, GATED)
    wait = decide(state, now, Seen(probed=True), GATED)
    assert isinstance(wait, Wait) and wait.waiting_for == "endpoint" and not wait.alarm
    assert "127.0.0.1:25/smtp presents version 1" in wait.reason
    # Still behind a little later: since when stays the first time it was seen.
    state = advance(
        state, Probed((("127.0.0.1:25/smtp", False, "version 1 (old)"),)), now + 60, GATED
    )
    assert state.lagging[0].since == now
    # Caught up: the old records go.
    state = advance(state, Probed((("127.0.0.1:25/smtp", True, "version 2 (served)"),)),
                    now + 120, GATED)
    assert decide(state, now + 120, Seen(probed=True), GATED) == Retire(V1.records)
    state = advance(state, Retired(V1.records), now + 120, GATED)
    assert state.lagging == ()


def test_an_endpoint_behind_past_the_timeout_fails_the_check_and_keeps_the_records():
    state = advance(switched_to_v2(GATED), Reloaded(), 10**6, GATED)
    state = advance(state, Probed((("mx2:25/smtp", False, "version 1 (old)"),)), 10**6, GATED)
    late = 10**6 + 3600
    wait = decide(state, late, Seen(probed=True), GATED)
    assert isinstance(wait, Wait) and wait.alarm and wait.waiting_for == "endpoint"
    assert "mx2:25/smtp" in wait.reason


def test_without_endpoints_the_old_records_go_after_the_reload():
    state = advance(switched_to_v2(RELOAD), Reloaded(), 10**6, RELOAD)
    assert decide(state, 10**6, NOTHING_SEEN, RELOAD) == Retire(V1.records)


# Audit and TTL --------------------------------------------------------------------------

AUDITED = Policy(audit_interval=900, record_ttl=60)


def test_an_audit_is_due_at_its_interval_only():
    state = deployed(V1, AUDITED)
    assert state.audited_at == 0, "the first publish starts the cadence"
    assert decide(state, 899, NOTHING_SEEN, AUDITED) == Idle()
    assert decide(state, 900, NOTHING_SEEN, AUDITED) == Audit(V1.records)
    state = advance(state, Audited(V1.records, V1.records, {A: 60}), 900, AUDITED)
    assert decide(state, 1799, NOTHING_SEEN, AUDITED) == Idle()
    assert decide(state, 1800, NOTHING_SEEN, AUDITED) == Audit(V1.records)
    assert decide(state, 10**6, NOTHING_SEEN, POLICY) == Idle(), "certbot renew never audits"


def test_a_served_record_missing_from_dns_is_published_and_proven_again():
    state = deployed(V1, AUDITED)
    state = advance(state, Audited(V1.records, frozenset(), {}), 1000, AUDITED)
    assert not V1.records & state.live and not V1.records & state.published
    assert decide(state, 1000, NOTHING_SEEN, AUDITED) == Publish(V1.records)
    state = publish(state, 1000, 5, policy=AUDITED)
    assert decide(state, 1000, NOTHING_SEEN, AUDITED) == Observe(V1.records)
    # A key-reuse renewal meanwhile waits too: the record it matches is not live.
    v2 = Version(2, V1.records)
    renewed = advance(state, Renewed(v2), 1000, AUDITED)
    assert isinstance(decide(renewed, 1000, NOTHING_SEEN, AUDITED), Observe)


def test_a_ttl_differing_from_the_setting_is_changed_and_the_hold_counts_the_old_one():
    state = deployed(V1, AUDITED)
    state = advance(state, Audited(V1.records, V1.records, {A: 3600}), 1000, AUDITED)
    assert state.stale_ttl == ((A, 3600),)
    assert decide(state, 1000, NOTHING_SEEN, AUDITED) == Retime(V1.records, 60)
    state = advance(state, Retimed({A: 3600}), 1000, AUDITED)
    assert state.stale_ttl == () and state.hold_floor == 1000 + 3600
    # A renewal right after: caches may hold the RRset under the old TTL.
    state = advance(state, Renewed(V2), 1100, AUDITED)
    state = publish(state, 1100, 60, policy=AUDITED)
    state, seen = observed(state, 1100, ttl=60, policy=AUDITED)
    wait = decide(state, 1300, seen, AUDITED)
    assert isinstance(wait, Wait) and wait.until == 1000 + 3600 + AUDITED.hold_margin


def test_a_ttl_of_records_not_ours_is_left_alone():
    foreign = rec(A, 1)
    state = advance(State(), Renewed(V1), 0, AUDITED)
    state = publish(state, 0, None, present=frozenset({foreign}), policy=AUDITED)
    state = advance(state, Switched(V1), 0, AUDITED)
    state = advance(state, Audited(V1.records, V1.records, {A: 3600}), 1000, AUDITED)
    assert state.stale_ttl == ()


# Aliases -------------------------------------------------------------------------------


def test_records_of_an_aliased_owner_live_at_the_target():
    target = "_25._tcp.shared.example.net."
    state = advance(State(), Renewed(V1), 0, POLICY)
    state = resolved(state, aliases={A: target})
    placed = frozenset(Record(target, r.usage, r.selector, r.mtype, r.data) for r in V1.records)
    assert state.wanted() == placed
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Publish(placed)
    state = advance(state, Claimed(placed, 60, frozenset()), 0, POLICY)
    state = advance(state, Published(placed, 60), 0, POLICY)
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Switch(V1)


def test_a_cname_ttl_counts_in_the_hold():
    state = renewed_and_published(prior_ttl=60)
    state = advance(state, Resolved({A: A}, ttl=7200), 0, POLICY)
    assert state.hold_ttl == 7200


# Errors and stale outcomes ------------------------------------------------------------


@pytest.mark.parametrize(
    "success",
    [
        Published(V2.records, 300),
        Observed(V2.records, False, False, None),
        Observed(V2.records, True, True, 300),
        Reloaded(),
        Retired(frozenset()),
    ],
)
def test_failed_sets_last_error_and_success_clears_it(success):
    state = renewed_and_published()
    failed = advance(state, Failed("SERVFAIL from ns1", "dns"), 10, POLICY)
    assert failed.last_error == "SERVFAIL from ns1" and failed.last_error_kind == "dns"
    # Nothing but the error changes.
    expected = {**state.__dict__, "last_error": "SERVFAIL from ns1", "last_error_kind": "dns"}
    assert failed == State(**expected)
    assert decide(failed, 10, NOTHING_SEEN, POLICY) == decide(state, 10, NOTHING_SEEN, POLICY)
    cleared = advance(failed, success, 20, POLICY)
    assert cleared.last_error is None and cleared.last_error_kind is None


def test_switched_clears_last_error():
    state = renewed_and_published()
    state = advance(state, Failed("boom"), 10, POLICY)
    assert advance(state, Switched(V2), 20, POLICY).last_error is None


def test_claimed_and_renewed_keep_last_error():
    state = advance(deployed(V1), Failed("boom"), 0, POLICY)
    state = advance(state, Renewed(V2), 0, POLICY)
    assert state.last_error == "boom"
    state = advance(state, Claimed(V2.records), 0, POLICY)
    assert state.last_error == "boom"


def test_stale_switched_is_ignored():
    state = advance(renewed_and_published(), Renewed(V3), 0, POLICY)
    assert advance(state, Switched(V2), 0, POLICY) == state
    assert advance(state, Switched(V1), 0, POLICY) == state
    settled = deployed(V1)
    assert advance(settled, Switched(V2), 0, POLICY) == settled


def test_older_or_known_version_renewed_is_ignored():
    state = switched_to_v2()
    assert advance(state, Renewed(V1), 400, POLICY) == state
    assert advance(state, Renewed(version(2, 9)), 400, POLICY) == state
    pending, _ = observed(renewed_and_published(), 50)
    # Renewed for the pending version (e.g. a repeated renew_deploy) keeps the hold.
    assert advance(pending, Renewed(V2), 60, POLICY) == pending
    assert pending.visible_since == 50


def test_renewed_older_than_pending_is_ignored():
    state = advance(deployed(V1), Renewed(V3), 0, POLICY)
    state = publish(state, 0, 300)
    assert advance(state, Renewed(V2), 10, POLICY) == state


# Adopted and Retargeted -----------------------------------------------------------------


def test_adopted_serves_the_version_the_links_already_name():
    state = advance(State(), Renewed(V2), 0, POLICY)
    state = advance(state, Adopted(V2), 0, POLICY)
    assert state.served == V2 and state.pending is None
    # Its records still have to be published and proven; nothing is switched.
    state = resolved(state)
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Publish(V2.records)
    state = publish(state, 0, 300)
    assert decide(state, 0, NOTHING_SEEN, POLICY) == Observe(V2.records)


def test_adopted_keeps_a_newer_pending_version():
    state = advance(State(), Renewed(V3), 0, POLICY)
    state = advance(state, Adopted(V2), 0, POLICY)
    assert state.served == V2 and state.pending == V3


def test_adopted_is_ignored_when_something_is_served():
    state = deployed(V1)
    assert advance(state, Adopted(V2), 0, POLICY) == state


def test_retargeted_replaces_records_of_the_same_versions():
    state = renewed_and_published()
    state, _ = observed(state, 5)
    served = Version(1, frozenset({Record(A, 3, 1, 2, "11" * 64)}))
    pending = Version(2, frozenset({Record(A, 3, 1, 2, "22" * 64)}))
    state = advance(state, Retargeted(served, pending), 10, POLICY)
    assert state.served == served and state.pending == pending
    # New records first, then the records of the old targets go.
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Publish(served.records | pending.records)
    state = publish(state, 10, 300)
    assert decide(state, 10, NOTHING_SEEN, POLICY) == Retire(V1.records | V2.records)


def test_retargeted_for_other_versions_is_ignored():
    state = renewed_and_published()
    assert advance(state, Retargeted(V1, V3), 0, POLICY) == state
    assert advance(state, Retargeted(None, V2), 0, POLICY) == state


def test_unknown_outcome_is_rejected():
    with pytest.raises(TypeError):
        advance(State(), object(), 0, POLICY)  # type: ignore[arg-type]


def test_explain_names_what_is_awaited():
    state = renewed_and_published(prior_ttl=300)
    state, seen = observed(state, 0, authoritative=False)
    text, waiting_for, until = explain(decide(state, 0, seen, POLICY))
    assert waiting_for == "authoritative" and until is None
    state, seen = observed(state, 0)
    text, waiting_for, until = explain(decide(state, 10, seen, POLICY))
    assert (waiting_for, until) == ("hold", 360) and text.startswith("hold")
    fresh = advance(deployed(V1), Renewed(V2), 0, POLICY)
    fresh = resolved(fresh)
    assert explain(decide(fresh, 0, NOTHING_SEEN, POLICY))[0] == "publishing 1 record(s)"
