"""``certbot-dane status``: where each lineage is, as a table or as JSON.

What status says a lineage waits for is what a check would do now: it runs
the check's own steps as a dry run (:meth:`.engine.Engine.explain_many`),
with the same reads of DNS and of the endpoints and the same decision, and
stops before anything that changes DNS, the links or the service. One
validated lookup per owner name adds the "visible" count, as a DANE client
would see it now. The JSON keys are a monitoring interface: add keys, never
rename or remove them.
"""
from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import danedir, rollover, state
from .lookup import resolve_all, resolver_address
from .observe import ObserveError
from .run import Run
from .tlsa import Record, load_pem_chain

#: The keys of one ``status --json`` row; tests hold the list stable.
JSON_KEYS = (
    "lineage",
    "served",
    "served_expires",
    "links",
    "pending",
    "state",
    "waiting_for",
    "until",
    "records_wanted",
    "records_published",
    "records_visible",
    "dns_error",
    "visible_since",
    "hold_until",
    "hold_left",
    "owned_records",
    "issuer_records",
    "aliases",
    "endpoints",
    "repaired",
    "last_check",
    "last_error",
)

_UNTIL = re.compile(r" \(until \d+\)$")
#: Joins what the next check does to the error its last attempt met (JSON ``state``);
#: the table shows the error in its own column.
_FAILED_LAST = "; it failed last time: "
#: ``waiting_for`` values that mean the last attempt of the next step failed.
_ERROR_WAITS = ("store_error", "dns_error", "reload_error")


def not_after(path: Path) -> float | None:
    """Expiry (epoch seconds) of the first certificate in a PEM file, or None."""
    try:
        cert = load_pem_chain(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    when = getattr(cert, "not_valid_after_utc", None)
    if when is None:  # cryptography < 42: a naive datetime in UTC
        when = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _line(record: Record) -> str:
    return record.zone_line(0).replace(" 0 IN ", " IN ")


def status_row(
    run: Run, config_dir: str | Path, now: float, dns: bool = True
) -> dict[str, Any]:
    """One lineage's row from its dry run; ``dns`` False: no lookup (visible is None)."""
    data = run.data
    s = data.rollover
    result = run.result
    directory = Path(data.settings.directory)
    served_expires = None
    if s.served is not None:
        cert = danedir.staged_files(directory, data.lineage, s.served.number)["cert"]
        served_expires = not_after(cert)
    try:
        links = danedir.served_version(directory, data.lineage)
    except danedir.DaneDirError:
        links = None
    wanted = s.wanted()
    visible: frozenset[Record] | None = None
    dns_error: str | None = None
    if dns and wanted:
        visible, dns_error = _visible(data, s)
    hold_until = result.until if result.waiting_for == "hold" else None
    checked = [t for t in (data.last_check, state.checked_at(config_dir, data.lineage)) if t]
    lags = {lag.endpoint: lag.since for lag in s.lagging}
    return {
        "lineage": data.lineage,
        "served": s.served.number if s.served else None,
        "served_expires": served_expires,
        "links": links,
        "pending": s.pending.number if s.pending else None,
        "state": _state(result, s.last_error),
        "waiting_for": result.waiting_for,
        "until": result.until,
        "records_wanted": len(wanted),
        "records_published": len(s.published & wanted),
        "records_visible": None if visible is None else len(wanted & visible),
        "dns_error": dns_error,
        "visible_since": s.visible_since,
        "hold_until": hold_until,
        "hold_left": max(0.0, hold_until - now) if hold_until is not None else None,
        "owned_records": [_line(r) for r in sorted(s.owned)],
        "issuer_records": [
            {
                "record": _line(r),
                "published": r in s.published,
                "live": r in s.live,
                "visible": None if visible is None else r in visible,
            }
            for r in sorted(s.place(s.issuers))
        ],
        "aliases": {o: t for o, t in s.aliases if o != t},
        "endpoints": [
            {
                "endpoint": name,
                "ok": ok,
                "presents": presents,
                "behind_since": None if ok else lags.get(name),
            }
            for name, ok, presents in run.presented
        ],
        "repaired": _repaired(data),
        "last_check": max(checked) if checked else None,
        "last_error": s.last_error,
    }


def _state(result: Any, last_error: str | None = None) -> str:
    """The human text of what a check would do now, or why it waits.

    A step the dry run stops before (it would change DNS, the links or the
    service) whose last attempt failed is named with that failure: the check
    tries it again and, until something is fixed, says the same.
    """
    if result.error:
        return result.error
    if result.next:
        text = f"next check: {result.next}"
        if result.waiting_for in _ERROR_WAITS and last_error:
            text += f" again{_FAILED_LAST}{last_error}"
        return text
    if result.waiting:
        return result.waiting
    return "settled" if result.settled else "unknown"


def _visible(
    data: state.LineageFile, s: rollover.State
) -> tuple[frozenset[Record] | None, str | None]:
    """Every wanted record the validating resolver returns with AD, asked at the owner
    names certificates ask for (following their aliases, as clients do)."""
    where = s.alias_map()
    try:
        resolver = resolver_address(data.settings, None)
        answers = resolve_all(resolver, s.owners(), timeout=3.0)
    except (ObserveError, ValueError) as err:
        return None, str(err)
    seen: set[Record] = set()
    for owner, answer in answers.items():
        target = where.get(owner, owner)
        seen |= {Record(target, r.usage, r.selector, r.mtype, r.data) for r in answer.validated}
    return frozenset(seen), None


def _repaired(data: state.LineageFile) -> dict[str, Any] | None:
    """The last repair of records found missing from DNS, from the timeline."""
    for event in reversed(data.timeline):
        if event.what == "repaired":
            return {"time": event.time, "records": event.detail}
    return None


# Human output -------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d"


def _expiry(when: float | None, now: float) -> str:
    if when is None:
        return "?"
    day = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d")
    left = when - now
    return f"{day} (expired)" if left <= 0 else f"{day} ({int(left // 86400)} d)"


def _served(row: dict[str, Any]) -> str:
    served = "-" if row["served"] is None else str(row["served"])
    if row["links"] != row["served"]:
        served += f" (links: {'none' if row['links'] is None else row['links']})"
    return served


def _count(row: dict[str, Any], key: str) -> str:
    value = "?" if row[key] is None else row[key]
    return f"{value}/{row['records_wanted']}"


def table(rows: Sequence[dict[str, Any]], now: float) -> str:
    """Aligned columns, one row per lineage; the free-text columns come last.

    Below a lineage's row, one indented line per endpoint that is behind,
    per alias, per issuer record and for the last repair.
    """
    header = (
        "LINEAGE",
        "SERVED",
        "EXPIRES",
        "PENDING",
        "PUBLISHED",
        "VISIBLE",
        "HOLD LEFT",
        "LAST CHECK",
        "STATE",
        "LAST ERROR",
    )
    lines: list[tuple[str, ...]] = [header]
    details: dict[int, list[str]] = {}
    for row in rows:
        hold = "-" if row["hold_left"] is None else _duration(row["hold_left"])
        checked = "never" if row["last_check"] is None else _duration(now - row["last_check"])
        if row["last_check"] is not None:
            checked += " ago"
        lines.append(
            (
                row["lineage"],
                _served(row),
                _expiry(row["served_expires"], now),
                "-" if row["pending"] is None else str(row["pending"]),
                _count(row, "records_published"),
                _count(row, "records_visible"),
                hold,
                checked,
                _UNTIL.sub("", row["state"].split(_FAILED_LAST)[0]),
                row["last_error"] or row["dns_error"] or "-",
            )
        )
        details[len(lines) - 1] = _details(row, now)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for index, line in enumerate(lines):
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
        out.extend(f"  {text}" for text in details.get(index, []))
    return "\n".join(out)


def _details(row: dict[str, Any], now: float) -> list[str]:
    lines = []
    for owner, target in sorted(row["aliases"].items()):
        lines.append(f"alias: {owner} -> {target}")
    for item in row["issuer_records"]:
        shown = {True: "visible", False: "not visible", None: "?"}[item["visible"]]
        lines.append(f"issuer record: {item['record']} ({shown})")
    for item in row["endpoints"]:
        if item["ok"]:
            lines.append(f"endpoint {item['endpoint']}: presents {item['presents']}")
            continue
        since = item["behind_since"]
        behind = f" for {_duration(now - since)}" if since is not None else ""
        lines.append(f"endpoint {item['endpoint']}: BEHIND{behind}: presents {item['presents']}")
    if row["repaired"]:
        when = _duration(now - row["repaired"]["time"])
        lines.append(f"repaired {when} ago: {row['repaired']['records']}")
    return lines
