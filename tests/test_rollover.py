"""Example-based tests of each rule of the rollover core (decide / advance)."""
from __future__ import annotations

import pytest

from certbot_dane.rollover import (
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
    State,
    Switch,
    Switched,
    Version,
    Wait,
    advance,
    decide,
    describe,
    hold_seconds,
)
from certbot_dane.tlsa import Record

A = "_25._tcp.a.example."
B = "_25._tcp.b.example."
POLICY = Policy()
RELOAD = Policy(reload=True)


def rec(owner: str, key: int) -> Record:
    return Record(owner, 3, 1, 1, f"{key:064x}")


def version(number: int, key: int, owners=(A,)) -> Version:
    return Version(number, frozenset(rec(o, key) for o in owners))


def publish(state: State, now: float, prior_ttl: int | None, present=frozenset(),
            policy=POLICY) -> State:
    """Do what the shell does for a Publish action; ``present`` is already in DNS."""
    action = decide(state, now, None, policy)
    assert isinstance(action, Publish), action
    state = advance(state, Claimed(action.records - present), now, policy)
    return advance(state, Published(action.records, prior_ttl), now, policy)


def deployed(v: Version, policy=POLICY) -> State:
    """A lineage whose first version is served and settled."""
    state = advance(State(), Renewed(v), 0, policy)
    state = publish(state, 0, 300, policy=policy)
    state = advance(state, Switched(v), 0, policy)
    assert decide(state, 0, None, policy) == Idle()
    return state


V1 = version(1, 1)
V2 = version(2, 2)
V3 = version(3, 3)


def renewed_and_published(prior_ttl=300, now=0.0, policy=POLICY) -> State:
    state = advance(deployed(V1, policy), Renewed(V2), now, policy)
    return publish(state, now, prior_ttl, policy=policy)


# First deploy --------------------------------------------------------------------


@pytest.mark.parametrize("policy", [POLICY, RELOAD])
def test_first_deploy_publishes_then_switches_at_once(policy):
    state = advance(State(), Renewed(V1), 0, policy)
    assert state.pending == V1 and state.served is None
    assert decide(state, 0, None, policy) == Publish(V1.records)
    state = advance(state, Claimed(V1.records), 0, policy)
    assert state.owned == V1.records
    # Claimed alone does not count as published: the add may not have happened.
    assert decide(state, 0, None, policy) == Publish(V1.records)
    state = advance(state, Published(V1.records, None), 0, policy)
    # No observation and no hold: there is no older certificate to protect.
    assert decide(state, 0, None, policy) == Switch(V1)
    state = advance(state, Switched(V1), 0, policy)
    assert state.served == V1 and state.pending is None
    assert state.reload_due is False
    assert decide(state, 0, None, policy) == Idle()
    assert state.owned == state.published == V1.records
    assert describe(state, 0, policy) == "settled"


# Renewal -------------------------------------------------------------------------


def test_renewal_publishes_new_records_next_to_old():
    state = advance(deployed(V1), Renewed(V2), 10, POLICY)
    assert state.served == V1 and state.pending == V2
    action = decide(state, 10, None, POLICY)
    assert action == Publish(V2.records)
    state = publish(state, 10, 300)
    assert state.published == V1.records | V2.records
    assert state.owned == V1.records | V2.records
    # Nothing of the served version is retired while the new one is pending.
    assert decide(state, 10, None, POLICY) == Observe(V2.records)
    assert state.hold_ttl == 300


def test_renewal_with_new_owner_publishes_at_every_owner():
    v2 = version(2, 2, owners=(A, B))
    state = advance(deployed(V1), Renewed(v2), 0, POLICY)
    assert decide(state, 0, None, POLICY) == Publish(v2.records)


# Visibility, hold, validation ------------------------------------------------------


def test_no_switch_before_authoritative_visibility():
    state = renewed_and_published()
    for now in (0, 10_000, 10**9):
        state = advance(state, Observed(False, True, 300), now, POLICY)
        assert state.visible_since is None
        action = decide(state, now, Seen(True, 300), POLICY)
        assert isinstance(action, Wait)
        assert action.until is None
        assert "authoritative" in action.reason


@pytest.mark.parametrize(("prior", "observed"), [(3600, 300), (300, 3600), (600, 600)])
def test_hold_is_max_ttl_plus_margin_from_first_visibility(prior, observed):
    policy = Policy(hold_margin=45)
    state = renewed_and_published(prior_ttl=prior, now=0, policy=policy)
    state = advance(state, Observed(True, True, observed), 1000, policy)
    assert state.visible_since == 1000
    hold_end = 1000 + max(prior, observed) + 45
    # A later observation does not move the start of the hold.
    state = advance(state, Observed(True, True, observed), 2000, policy)
    assert state.visible_since == 1000
    seen = Seen(True, observed)
    assert hold_seconds(state, seen, policy) == max(prior, observed) + 45
    early = decide(state, hold_end - 1, seen, policy)
    assert isinstance(early, Wait)
    assert early.until == hold_end
    assert "hold" in early.reason
    assert decide(state, hold_end, seen, policy) == Switch(V2)


def test_hold_uses_this_checks_observed_ttl():
    state = renewed_and_published(prior_ttl=300)
    state = advance(state, Observed(True, True, 300), 0, POLICY)
    # The RRset's TTL grew since the last look: the hold grows with it.
    assert isinstance(decide(state, 400, Seen(True, 7200), POLICY), Wait)
    assert decide(state, 400, Seen(True, 300), POLICY) == Switch(V2)


def test_hold_without_known_ttl_is_the_margin():
    assert hold_seconds(State(), None, Policy(hold_margin=7)) == 7
    assert hold_seconds(State(), Seen(True), Policy(hold_margin=7)) == 7


def test_no_switch_without_ad_validation_even_after_the_hold():
    state = renewed_and_published(prior_ttl=300)
    state = advance(state, Observed(True, False, 300), 0, POLICY)
    for now in (360, 10_000, 10**9):
        action = decide(state, now, Seen(False, 300), POLICY)
        assert isinstance(action, Wait)
        assert "AD" in action.reason
    state = advance(state, Observed(True, True, 300), 10**9, POLICY)
    assert decide(state, 10**9, Seen(True, 300), POLICY) == Switch(V2)


def test_observe_comes_first_in_each_check():
    state = renewed_and_published()
    state = advance(state, Observed(True, True, 300), 0, POLICY)
    # A new check (no observation yet) looks again before deciding anything.
    assert decide(state, 10**9, None, POLICY) == Observe(V2.records)


def test_visibility_lost_resets_visible_since():
    state = renewed_and_published()
    state = advance(state, Observed(True, True, 300), 100, POLICY)
    assert state.visible_since == 100
    state = advance(state, Observed(False, True, 300), 200, POLICY)
    assert state.visible_since is None
    assert isinstance(decide(state, 5000, Seen(True, 300), POLICY), Wait)
    state = advance(state, Observed(True, True, 300), 300, POLICY)
    assert state.visible_since == 300
    assert isinstance(decide(state, 300 + 359, Seen(True, 300), POLICY), Wait)
    assert decide(state, 300 + 360, Seen(True, 300), POLICY) == Switch(V2)


# Switch, reload, retire --------------------------------------------------------------


def switched_to_v2(policy=POLICY) -> State:
    state = renewed_and_published(prior_ttl=300, policy=policy)
    state = advance(state, Observed(True, True, 300), 0, policy)
    assert decide(state, 360, Seen(True, 300), policy) == Switch(V2)
    return advance(state, Switched(V2), 360, policy)


def test_switch_then_reload_then_retire_old_owned_records():
    state = switched_to_v2(RELOAD)
    assert state.served == V2 and state.pending is None
    assert state.visible_since is None and state.hold_ttl is None
    assert state.reload_due is True
    assert decide(state, 360, None, RELOAD) == Reload()
    state = advance(state, Reloaded(), 360, RELOAD)
    assert state.reload_due is False
    assert decide(state, 360, None, RELOAD) == Retire(V1.records)
    state = advance(state, Retired(V1.records), 360, RELOAD)
    assert state.owned == state.published == V2.records
    assert decide(state, 360, None, RELOAD) == Idle()


def test_switch_without_reload_policy_retires_at_once():
    state = switched_to_v2(POLICY)
    assert state.reload_due is False
    assert decide(state, 360, None, POLICY) == Retire(V1.records)


def test_never_retire_while_reload_due():
    state = switched_to_v2(RELOAD)
    for now in (360, 10**9):
        assert decide(state, now, None, RELOAD) == Reload()
        assert decide(state, now, Seen(True, 300), RELOAD) == Reload()
    # A failed reload keeps it due; retiring still waits.
    state = advance(state, Failed("reload command exited 1"), 400, RELOAD)
    assert state.reload_due is True
    assert decide(state, 400, None, RELOAD) == Reload()
    assert describe(state, 400, RELOAD) == "reload command due"


def test_reload_due_survives_a_renewal():
    state = switched_to_v2(RELOAD)
    state = advance(state, Renewed(V3), 400, RELOAD)
    assert state.reload_due is True
    state = publish(state, 400, 300, policy=RELOAD)
    assert decide(state, 400, None, RELOAD) == Reload()


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
    assert decide(state, 10, None, POLICY) == Retire(frozenset({rec(B, 2)}))


def test_never_retire_a_foreign_record_of_the_old_version():
    foreign = rec(A, 1)
    state = advance(State(), Renewed(V1), 0, POLICY)
    state = publish(state, 0, None, present=frozenset({foreign}))
    state = advance(state, Switched(V1), 0, POLICY)
    assert state.owned == frozenset()
    state = advance(state, Renewed(V2), 0, POLICY)
    state = publish(state, 0, 300)
    state = advance(state, Observed(True, True, 300), 0, POLICY)
    state = advance(state, Switched(V2), 360, POLICY)
    assert foreign not in state.published
    assert decide(state, 360, None, POLICY) == Idle()


def test_key_reuse_switches_without_observing():
    v2 = Version(2, V1.records)
    for policy in (POLICY, RELOAD):
        state = advance(deployed(V1, policy), Renewed(v2), 0, policy)
        assert decide(state, 0, None, policy) == Switch(v2)
        state = advance(state, Switched(v2), 0, policy)
        assert state.served == v2
        assert state.owned == state.published == V1.records
        expected = Reload() if policy.reload else Idle()
        assert decide(state, 0, None, policy) == expected


def test_second_renewal_before_switch_replaces_pending_and_retires_skipped():
    state = renewed_and_published(prior_ttl=3600)
    state = advance(state, Observed(True, True, 300), 5, POLICY)
    state = advance(state, Renewed(V3), 100, POLICY)
    assert state.pending == V3 and state.served == V1
    assert state.visible_since is None
    assert decide(state, 100, None, POLICY) == Publish(V3.records)
    state = publish(state, 100, 300)
    # The skipped version's records go; the served version's stay.
    assert decide(state, 100, None, POLICY) == Retire(V2.records)
    state = advance(state, Retired(V2.records), 100, POLICY)
    assert state.owned == V1.records | V3.records
    assert decide(state, 100, None, POLICY) == Observe(V3.records)
    # The hold still covers the largest TTL seen since the last switch.
    state = advance(state, Observed(True, True, 300), 100, POLICY)
    assert isinstance(decide(state, 100 + 360, Seen(True, 300), POLICY), Wait)
    assert decide(state, 100 + 3660, Seen(True, 300), POLICY) == Switch(V3)


def test_second_renewal_sharing_records_with_served_keeps_them():
    # v3 goes back to the served key at A but adds a new owner B.
    v3 = Version(3, V1.records | {rec(B, 3)})
    state = renewed_and_published()
    state = advance(state, Renewed(v3), 10, POLICY)
    assert decide(state, 10, None, POLICY) == Publish(frozenset({rec(B, 3)}))
    state = publish(state, 10, 300)
    assert decide(state, 10, None, POLICY) == Retire(V2.records)


# Errors and stale outcomes ------------------------------------------------------------


@pytest.mark.parametrize(
    "success",
    [
        Published(V2.records, 300),
        Observed(False, False, None),
        Observed(True, True, 300),
        Reloaded(),
        Retired(frozenset()),
    ],
)
def test_failed_sets_last_error_and_success_clears_it(success):
    state = renewed_and_published()
    failed = advance(state, Failed("SERVFAIL from ns1"), 10, POLICY)
    assert failed.last_error == "SERVFAIL from ns1"
    # Nothing but the error changes.
    assert failed == State(**{**state.__dict__, "last_error": "SERVFAIL from ns1"})
    assert decide(failed, 10, None, POLICY) == decide(state, 10, None, POLICY)
    assert advance(failed, success, 20, POLICY).last_error is None


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
    pending = advance(renewed_and_published(), Observed(True, True, 300), 50, POLICY)
    # Renewed for the pending version (e.g. a repeated renew_deploy) keeps the hold.
    assert advance(pending, Renewed(V2), 60, POLICY) == pending
    assert pending.visible_since == 50


def test_renewed_older_than_pending_is_ignored():
    state = advance(deployed(V1), Renewed(V3), 0, POLICY)
    state = publish(state, 0, 300)
    assert advance(state, Renewed(V2), 10, POLICY) == state


def test_renewed_older_than_pending_keeps_the_hold():
    state = advance(deployed(V1), Renewed(V3), 0, POLICY)
    state = advance(publish(state, 0, 300), Observed(True, True, 300), 5, POLICY)
    assert advance(state, Renewed(V2), 10, POLICY).visible_since == 5


# Adopted and Retargeted -----------------------------------------------------------------


def test_adopted_serves_the_version_the_links_already_name():
    state = advance(State(), Renewed(V2), 0, POLICY)
    state = advance(state, Adopted(V2), 0, POLICY)
    assert state.served == V2 and state.pending is None
    assert state.visible_since is None
    # Its records still have to be published; nothing is switched.
    assert decide(state, 0, None, POLICY) == Publish(V2.records)


def test_adopted_keeps_a_newer_pending_version():
    state = advance(State(), Renewed(V3), 0, POLICY)
    state = advance(state, Adopted(V2), 0, POLICY)
    assert state.served == V2 and state.pending == V3


def test_adopted_is_ignored_when_something_is_served():
    state = deployed(V1)
    assert advance(state, Adopted(V2), 0, POLICY) == state


def test_retargeted_replaces_records_of_the_same_versions():
    state = renewed_and_published()
    state = advance(state, Observed(True, True, 300), 5, POLICY)
    served = Version(1, frozenset({Record(A, 3, 1, 2, "11" * 64)}))
    pending = Version(2, frozenset({Record(A, 3, 1, 2, "22" * 64)}))
    state = advance(state, Retargeted(served, pending), 10, POLICY)
    assert state.served == served and state.pending == pending
    assert state.visible_since is None
    # New records first, then the records of the old targets go.
    assert decide(state, 10, None, POLICY) == Publish(served.records | pending.records)
    state = publish(state, 10, 300)
    assert decide(state, 10, None, POLICY) == Retire(V1.records | V2.records)


def test_retargeted_for_other_versions_is_ignored():
    state = renewed_and_published()
    assert advance(state, Retargeted(V1, V3), 0, POLICY) == state
    assert advance(state, Retargeted(None, V2), 0, POLICY) == state


def test_unknown_outcome_is_rejected():
    with pytest.raises(TypeError):
        advance(State(), object(), 0, POLICY)  # type: ignore[arg-type]


def test_describe_names_what_is_awaited():
    state = renewed_and_published(prior_ttl=300)
    assert describe(state, 0, POLICY) == "new records are not yet on every authoritative server"
    state = advance(state, Observed(True, True, 300), 0, POLICY)
    assert describe(state, 10, POLICY) == (
        "hold: caches may still have the old RRset (until 360)"
    )
    assert describe(state, 360, POLICY) == "ready to switch to version 2"
    fresh = advance(deployed(V1), Renewed(V2), 0, POLICY)
    assert describe(fresh, 0, POLICY) == "publishing 1 record(s)"


def test_key_reuse_with_a_new_intermediate_switches_at_once():
    # 311 (same key) and 211 (new intermediate): the 3 1 1 record is live.
    ee = rec(A, 1)
    old_ta = Record(A, 2, 1, 1, f"{0xA:064x}")
    new_ta = Record(A, 2, 1, 1, f"{0xB:064x}")
    v1 = Version(1, frozenset({ee, old_ta}))
    v2 = Version(2, frozenset({ee, new_ta}))
    state = advance(deployed(v1), Renewed(v2), 10, POLICY)
    state = publish(state, 10, 300)
    assert decide(state, 10, None, POLICY) == Switch(v2), "no hold: 3 1 1 already matches"
    state = advance(state, Switched(v2), 10, POLICY)
    assert decide(state, 10, None, POLICY) == Retire(frozenset({old_ta}))


def test_a_new_owner_name_needs_the_hold_even_with_key_reuse():
    # Same key, but the new certificate has a second name: B has no live record.
    v2 = version(2, 1, owners=(A, B))
    state = advance(deployed(V1), Renewed(v2), 10, POLICY)
    state = publish(state, 10, 300)
    assert isinstance(decide(state, 10, None, POLICY), Observe)
