"""``certbot-dane status``: where each lineage is, as a table or as JSON.

Everything comes from the state file and the dane directory, plus one
validated lookup per owner name so the "visible" count is what a DANE client
would see now rather than what the last check remembered. The JSON keys are
a monitoring interface: add keys, never rename or remove them.
"""
from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import danedir, rollover, state
from .engine import policy_of
from .lookup import resolve_all, resolver_address
from .observe import ObserveError
from .tlsa import load_pem_chain

#: The keys of one ``status --json`` row; tests hold the list stable.
JSON_KEYS = (
    "lineage",
    "served",
    "served_expires",
    "links",
    "pending",
    "state",
    "records_wanted",
    "records_published",
    "records_visible",
    "dns_error",
    "visible_since",
    "hold_until",
    "hold_left",
    "owned_records",
    "last_check",
    "last_error",
)

_UNTIL = re.compile(r" \(until \d+\)$")


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


def status_row(data: state.LineageFile, now: float, dns: bool = True) -> dict[str, Any]:
    """One lineage's row; ``dns`` False skips the lookup (visible is then None)."""
    s = data.rollover
    policy = policy_of(data.settings)
    directory = Path(data.settings.directory)
    hold_until = None
    if s.pending is not None and s.visible_since is not None:
        hold_until = s.visible_since + rollover.hold_seconds(s, None, policy)
    served_expires = None
    if s.served is not None:
        cert = danedir.staged_files(directory, data.lineage, s.served.number)["cert"]
        served_expires = not_after(cert)
    try:
        links = danedir.served_version(directory, data.lineage)
    except danedir.DaneDirError:
        links = None
    wanted = s.wanted()
    visible: int | None = None
    dns_error: str | None = None
    if dns and wanted:
        try:
            resolver = resolver_address(data.settings, None)
            answers = resolve_all(resolver, {r.owner for r in wanted}, timeout=3.0)
            seen = frozenset().union(*(a.validated for a in answers.values()))
            visible = len(wanted & seen)
        except (ObserveError, ValueError) as err:
            dns_error = str(err)
    return {
        "lineage": data.lineage,
        "served": s.served.number if s.served else None,
        "served_expires": served_expires,
        "links": links,
        "pending": s.pending.number if s.pending else None,
        "state": rollover.describe(s, now, policy),
        "records_wanted": len(wanted),
        "records_published": len(s.published & wanted),
        "records_visible": visible,
        "dns_error": dns_error,
        "visible_since": s.visible_since,
        "hold_until": hold_until,
        "hold_left": max(0.0, hold_until - now) if hold_until is not None else None,
        "owned_records": [r.zone_line(0).replace(" 0 IN ", " IN ") for r in sorted(s.owned)],
        "last_check": data.last_check,
        "last_error": s.last_error,
    }


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
    """Aligned columns, one row per lineage; the free-text columns come last."""
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
                _UNTIL.sub("", row["state"]),
                row["last_error"] or row["dns_error"] or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)

