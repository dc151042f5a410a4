"""Durable per-lineage state: JSON written atomically, and a lock.

The state lives in ``<config-dir>/dane-state/NAME.json``, a place the
plugin owns (certbot rewrites renewal confs and prunes archives; neither may
touch what the rollover must remember). It holds settings as given on the
command line, never secrets: credentials are referenced by path only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import durable
from .rollover import Lag, State, Version
from .tlsa import Record

FORMAT = 1
STATE_DIR = "dane-state"


class StateError(Exception):
    """The state file cannot be read or written; the message says how to recover."""


class LockTimeout(StateError):
    """Another certbot-dane run holds the lineage's lock for too long."""


@dataclass
class Settings:
    """How a lineage is handled: everything a later check needs, no secrets."""

    targets: str
    directory: str
    store: str = "rfc2136"
    credentials: str | None = None
    resolver: str | None = None
    nameservers: str | None = None
    reload: str | None = None
    record_ttl: int | None = None
    hold_margin: float = 60.0
    exec_command: str | None = None
    exec_timeout: int = 60
    api_url: str | None = None
    endpoints: str | None = None
    endpoint_timeout: int = 3600
    audit_interval: int = 900
    issuers: str | None = None
    group: str | None = None
    #: the cloud project that holds the zones (the google store)
    project: str | None = None


@dataclass
class Event:
    """One line of a lineage's timeline (shown by status and the demo)."""

    time: float
    what: str
    detail: str = ""


@dataclass
class LineageFile:
    """The whole content of one state file."""

    lineage: str
    settings: Settings
    rollover: State = field(default_factory=State)
    timeline: list[Event] = field(default_factory=list)
    last_check: float | None = None
    #: the version the links are being flipped to, saved before the flip, so
    #: links found on the pending version can be told from a hand-made change
    switching: int | None = None
    #: SHA-256 of the issuer bundle the issuer records were computed from, and
    #: the versions whose names placed them
    issuers_digest: str | None = None

    def note(self, what: str, detail: str = "", now: float | None = None) -> None:
        self.timeline.append(Event(time.time() if now is None else now, what, detail))
        del self.timeline[:-200]


def state_dir(config_dir: str | Path) -> Path:
    return Path(config_dir) / STATE_DIR


def state_path(config_dir: str | Path, lineage: str) -> Path:
    return state_dir(config_dir) / f"{lineage}.json"


def list_lineages(config_dir: str | Path) -> list[str]:
    directory = state_dir(config_dir)
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json"))


# Serialisation ------------------------------------------------------------


def _records_out(records: frozenset[Record]) -> list[dict]:
    return [asdict(r) for r in sorted(records)]


def _records_in(items: list[dict]) -> frozenset[Record]:
    return frozenset(Record(**item) for item in items)


def _version_out(version: Version | None) -> dict | None:
    if version is None:
        return None
    return {"number": version.number, "records": _records_out(version.records)}


def _version_in(item: dict | None) -> Version | None:
    if item is None:
        return None
    return Version(int(item["number"]), _records_in(item["records"]))


def to_json(data: LineageFile) -> str:
    state = data.rollover
    doc = {
        "format": FORMAT,
        "lineage": data.lineage,
        "settings": asdict(data.settings),
        "rollover": {
            "served": _version_out(state.served),
            "pending": _version_out(state.pending),
            "issuers": _records_out(state.issuers),
            "aliases": dict(state.aliases),
            "owned": _records_out(state.owned),
            "published": _records_out(state.published),
            "live": _records_out(state.live),
            "proving": _records_out(state.proving),
            "foreign": _records_out(state.foreign),
            "hold_ttl": state.hold_ttl,
            "hold_floor": state.hold_floor,
            "visible_since": state.visible_since,
            "reload_due": state.reload_due,
            "previous": _version_out(state.previous),
            "lagging": [asdict(lag) for lag in state.lagging],
            "audited_at": state.audited_at,
            "stale_ttl": dict(state.stale_ttl),
            "last_error": state.last_error,
            "last_error_kind": state.last_error_kind,
        },
        "timeline": [asdict(e) for e in data.timeline],
        "last_check": data.last_check,
        "switching": data.switching,
        "issuers_digest": data.issuers_digest,
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def from_json(text: str) -> LineageFile:
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise ValueError(f"unknown state format {doc.get('format')!r}")
    return LineageFile(
        lineage=doc["lineage"],
        settings=Settings(**doc["settings"]),
        rollover=_state_in(doc["rollover"]),
        timeline=[Event(**e) for e in doc.get("timeline", [])],
        last_check=doc.get("last_check"),
        switching=doc.get("switching"),
        issuers_digest=doc.get("issuers_digest"),
    )


def _state_in(r: dict) -> State:
    """The rollover state; files written before live records, aliases and the
    endpoint gate existed read as they were meant: the served records live,
    every owner its own place, the pending records proving since they became
    visible."""
    served = _version_in(r["served"])
    pending = _version_in(r["pending"])
    state = State(
        served=served,
        pending=pending,
        issuers=_records_in(r.get("issuers", [])),
        owned=_records_in(r["owned"]),
        published=_records_in(r["published"]),
        hold_ttl=r["hold_ttl"],
        hold_floor=r.get("hold_floor"),
        visible_since=r["visible_since"],
        reload_due=bool(r["reload_due"]),
        previous=_version_in(r.get("previous")),
        lagging=tuple(Lag(**lag) for lag in r.get("lagging", [])),
        audited_at=r.get("audited_at"),
        stale_ttl=tuple(sorted((str(o), int(t)) for o, t in r.get("stale_ttl", {}).items())),
        foreign=_records_in(r.get("foreign", [])),
        last_error=r["last_error"],
        last_error_kind=r.get("last_error_kind"),
    )
    if "aliases" in r:
        aliases = tuple(sorted((str(o), str(t)) for o, t in r["aliases"].items()))
    else:
        aliases = tuple(sorted((o, o) for o in state.owners()))
    state = dataclasses.replace(state, aliases=aliases)
    if "live" in r:
        live, proving = _records_in(r["live"]), _records_in(r.get("proving", []))
    else:
        live = state.place(served.records) if served else frozenset()
        proving = state.place(pending.records) if pending and state.visible_since else frozenset()
    return dataclasses.replace(state, live=live, proving=proving)


# Files --------------------------------------------------------------------


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync dir."""
    atomic_write_many([(path, data)], mode)


def atomic_write_many(items: Sequence[tuple[Path, bytes]], mode: int = 0o600) -> None:
    """:func:`atomic_write` for several files, made durable together.

    Every file is written to a temporary file beside it; only once all of
    them are durable (:func:`durable.flush`) are they renamed into place, and
    the renames are made durable in turn.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            temps.append((Path(name), path))
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
        durable.flush(tmp for tmp, _ in temps)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    durable.flush({path.parent for _, path in temps})


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_many(config_dir: str | Path, datas: list[LineageFile]) -> None:
    """:func:`save` for many lineages: written, then made durable together."""
    atomic_write_many(
        [(state_path(config_dir, d.lineage), to_json(d).encode("utf-8")) for d in datas]
    )


def load(config_dir: str | Path, lineage: str) -> LineageFile | None:
    path = state_path(config_dir, lineage)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(f"cannot read state file {path}: {err.strerror}") from None
    try:
        data = from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise StateError(
            f"state file {path} is damaged ({err}); move it aside and run "
            f"'certbot install -i dane --cert-name {lineage}' to start this lineage afresh"
        ) from None
    if data.lineage != lineage:
        raise StateError(f"state file {path} belongs to lineage {data.lineage!r}, not {lineage!r}")
    return data


def save(config_dir: str | Path, data: LineageFile) -> None:
    atomic_write(state_path(config_dir, data.lineage), to_json(data).encode("utf-8"))


@contextlib.contextmanager
def locked(config_dir: str | Path, lineage: str, timeout: float = 300.0) -> Iterator[int]:
    """Hold the lineage's lock; concurrent runs wait (bounded) instead of interleaving.

    Yields the lock file's descriptor, for :func:`stamp`.
    """
    directory = state_dir(config_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{lineage}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"lineage {lineage}: another certbot-dane run has held {path} for "
                        f"{timeout:.0f} s; wait for it to finish, then run the command again"
                    ) from None
                time.sleep(0.1)
        yield fd
    finally:
        os.close(fd)


def stamp(lock: int) -> None:
    """Record that a check ran: the lock file's modification time.

    A check that changes nothing writes no state (certbot runs one for every
    lineage on every ``certbot renew``); touching the open lock file costs
    no write and no sync, and tells status when the lineage was last checked.
    """
    os.utime(lock)


def checked_at(config_dir: str | Path, lineage: str) -> float | None:
    """When a check last ran for the lineage (see :func:`stamp`), or None."""
    try:
        return (state_dir(config_dir) / f"{lineage}.lock").stat().st_mtime
    except FileNotFoundError:
        return None
