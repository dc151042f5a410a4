"""``certbot-dane reset``: put the links back on a version DNS vouches for.

After an administrator moved the dane links or edited the zone by hand, the
state and the world disagree, and the deferred check refuses to guess. Reset
settles it from the outside in: it asks the validating resolver which of
the known versions (served, pending, any other staged copy) has its records
visible, pins the links to that version and makes the state say so. It
never touches DNS: records the state now wants but DNS lacks are marked as
unpublished, so the next check publishes them through the usual path.

The served version in the state wins when its records are visible, since
caches have had time to learn them; then the pending one; then other staged
versions, newest first.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import danedir, rollover, state, tlsa
from .engine import policy_of
from .lineage import LineageError, version_records
from .lookup import Answer, resolve_all
from .observe import Address
from .rollover import Version

LOCK_TIMEOUT = 300.0


class ResetRefused(Exception):
    """No version is visible, or the lineage cannot be reset; nothing changed."""


@dataclass
class ResetOutcome:
    lineage: str
    version: int
    was: int | None
    changed: bool
    message: str


def _candidates(data: state.LineageFile) -> list[tuple[Version, str]]:
    """Known versions in order of preference, each with how it is known."""
    s = data.rollover
    directory = Path(data.settings.directory)
    targets = tlsa.parse_specs(data.settings.targets)
    found: list[tuple[Version, str]] = []
    for version, role in ((s.served, "served"), (s.pending, "pending")):
        if version is not None and danedir.staged(directory, data.lineage, version.number):
            found.append((version, role))
    known = {v.number for v, _ in found}
    versions_dir = danedir.lineage_dir(directory, data.lineage) / danedir.VERSIONS
    staged: list[int] = []
    if versions_dir.is_dir():
        staged = [int(p.name) for p in versions_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    for number in sorted(staged, reverse=True):
        if number in known:
            continue
        files = danedir.staged_files(directory, data.lineage, number)
        try:
            records = version_records(files, targets)
        except (LineageError, ValueError):
            continue
        found.append((Version(number, records), "staged"))
    return found


def _visible(version: Version, answers: dict[str, Answer]) -> bool:
    """At every owner, at least one of the version's records comes back with AD.

    That is what a DANE client needs to accept the certificate.
    """
    owners = {r.owner for r in version.records}
    if not owners:
        return False
    return all(version.records & answers[o].validated for o in owners)


def _published_after(
    s: rollover.State, wanted: frozenset[tlsa.Record], answers: dict[str, Answer]
) -> frozenset[tlsa.Record]:
    """What DNS holds now, for the owners that were asked; the rest as before."""
    asked = set(answers)
    kept = {r for r in s.published if r.owner not in asked}
    seen = {r for r in s.published | wanted if r.owner in asked and r in answers[r.owner].records}
    return frozenset(kept | seen)


def reset(
    config_dir: str | Path, name: str, resolver: Address, now: float
) -> ResetOutcome:
    """Re-pin one lineage under its lock. Raises ResetRefused, StateError."""
    with state.locked(config_dir, name, LOCK_TIMEOUT):
        data = state.load(config_dir, name)
        if data is None:
            raise state.StateError(f"lineage {name} has no state file")  # checked by the caller
        directory = Path(data.settings.directory)
        try:
            links = danedir.served_version(directory, name)
        except danedir.DaneDirError:
            links = None
        candidates = _candidates(data)
        if not candidates:
            raise ResetRefused(
                f"lineage {name}: no staged version in {danedir.lineage_dir(directory, name)}; "
                f"nothing changed. Run 'certbot install -i dane --cert-name {name}' to start over"
            )
        owners = {r.owner for v, _ in candidates for r in v.records}
        answers = resolve_all(resolver, owners)
        chosen = next(((v, role) for v, role in candidates if _visible(v, answers)), None)
        if chosen is None:
            tried = ", ".join(str(n) for n in sorted(v.number for v, _ in candidates))
            raise ResetRefused(
                f"lineage {name}: the records of none of the versions {tried} are visible "
                f"through {resolver[0]}:{resolver[1]} (AD required); nothing changed. "
                f"Publish the records ('certbot-dane print --cert-name {name}') and run "
                "reset again"
            )
        version, role = chosen
        new = _repinned(data, version, role, links, answers)
        changed = new != data.rollover or links != version.number
        if not changed:
            message = (
                f"{name}: nothing to do: the links serve version {version.number}, whose "
                "records are visible"
            )
            return ResetOutcome(name, version.number, links, False, message)
        if links != version.number:
            danedir.switch(directory, name, version.number)
        missing = len(new.wanted() - new.published)
        data.rollover = new
        was = "none" if links is None else str(links)
        where = f"{resolver[0]}:{resolver[1]}"
        if links != version.number:
            what = f"links re-pinned to version {version.number} (were {was})"
            message = (
                f"{name}: links re-pinned to version {version.number} ({role}; its records "
                f"are visible through {where}); they were on {was}"
            )
        else:
            what = f"state re-aligned with version {version.number}"
            message = (
                f"{name}: the links stay on version {version.number} ({role}; its records "
                f"are visible through {where}); the state now says so"
            )
        if missing:
            message += f"; the next check publishes {missing} missing record(s)"
        data.note("reset", what, now)
        state.save(config_dir, data)
        return ResetOutcome(name, version.number, links, True, message)


def _repinned(
    data: state.LineageFile,
    version: Version,
    role: str,
    links: int | None,
    answers: dict[str, Answer],
) -> rollover.State:
    """The state that says ``version`` is served; never touches DNS itself."""
    s = data.rollover
    policy = policy_of(data.settings)
    if role == "served":
        new = replace(s, last_error=None)
    else:
        pending = s.pending if s.pending and s.pending.number > version.number else None
        new = replace(
            s,
            served=version,
            pending=pending,
            visible_since=None,
            last_error=None,
        )
    if links != version.number or role != "served":
        # The service may hold another certificate: reload before any retire.
        new = replace(new, reload_due=new.reload_due or (policy.reload and s.served is not None))
    return replace(new, published=_published_after(s, new.wanted(), answers))
