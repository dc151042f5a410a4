"""Tests for certbot_dane.state: JSON round trip, atomic writes, loading, locking."""
from __future__ import annotations

import itertools
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from certbot_dane.rollover import State, Version
from certbot_dane.state import (
    Event,
    LineageFile,
    LockTimeout,
    Settings,
    StateError,
    atomic_write,
    from_json,
    list_lineages,
    load,
    locked,
    save,
    state_dir,
    state_path,
    to_json,
)
from certbot_dane.tlsa import Record

OWNER = "_25._tcp.mail.example.com."


def record(n: int, owner: str = OWNER) -> Record:
    return Record(owner, 3, 1, 1, f"{n:064x}")


def full_file(lineage: str = "mail.example.com") -> LineageFile:
    served = Version(3, frozenset({record(3), record(3, "_465._tcp.mail.example.com.")}))
    pending = Version(4, frozenset({record(4)}))
    data = LineageFile(
        lineage=lineage,
        settings=Settings(
            targets="311:25,311:465",
            directory="/etc/letsencrypt/dane",
            credentials="/etc/letsencrypt/rfc2136.ini",
            resolver="127.0.0.1:5353",
            nameservers="192.0.2.1,[2001:db8::1]:53",
            reload="systemctl reload postfix",
            record_ttl=300,
            hold_margin=30.5,
        ),
        rollover=State(
            served=served,
            pending=pending,
            owned=frozenset({record(4), record(9, "_25._tcp.other.example.com.")}),
            published=served.records | {record(5)},
            hold_ttl=3600,
            visible_since=1700000000.25,
            reload_due=True,
            last_error="rfc2136 store: timed out",
        ),
        last_check=1700000100.5,
    )
    data.note("published", "2 records", now=1700000000.0)
    data.note("visible", now=1700000050.0)
    return data


# Serialisation ------------------------------------------------------------------


def test_round_trip_full() -> None:
    data = full_file()
    text = to_json(data)
    again = from_json(text)
    assert again == data
    assert again.rollover.served is not None
    assert again.rollover.served.records == data.rollover.served.records  # type: ignore[union-attr]
    assert again.timeline == [
        Event(1700000000.0, "published", "2 records"),
        Event(1700000050.0, "visible", ""),
    ]
    assert to_json(again) == text  # stable output


def test_round_trip_empty() -> None:
    data = LineageFile("a", Settings(targets="311:25", directory="/d"))
    again = from_json(to_json(data))
    assert again == data
    assert again.rollover == State()
    assert again.settings.hold_margin == 60.0
    assert again.timeline == [] and again.last_check is None


def test_json_is_readable_and_secret_free() -> None:
    doc = json.loads(to_json(full_file()))
    assert doc["format"] == 1
    assert doc["lineage"] == "mail.example.com"
    assert doc["settings"]["credentials"] == "/etc/letsencrypt/rfc2136.ini"
    assert doc["rollover"]["served"]["number"] == 3
    assert doc["rollover"]["pending"]["records"] == [
        {"owner": OWNER, "usage": 3, "selector": 1, "mtype": 1, "data": f"{4:064x}"}
    ]
    # record lists are sorted, so equal states give equal files
    owned = doc["rollover"]["owned"]
    assert owned == sorted(owned, key=lambda r: (r["owner"], r["data"]))


def test_note_keeps_the_last_200() -> None:
    data = LineageFile("a", Settings(targets="311:25", directory="/d"))
    for i in range(250):
        data.note("step", str(i), now=float(i))
    assert len(data.timeline) == 200
    assert data.timeline[0] == Event(50.0, "step", "50")
    assert data.timeline[-1] == Event(249.0, "step", "249")
    before = time.time()
    data.note("now")
    assert before <= data.timeline[-1].time <= time.time()


def test_unknown_format_is_rejected() -> None:
    doc = json.loads(to_json(full_file()))
    doc["format"] = 2
    with pytest.raises(ValueError, match="unknown state format 2"):
        from_json(json.dumps(doc))


# Files --------------------------------------------------------------------------


def test_atomic_write_mode_and_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    atomic_write(target, b"one")
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert os.listdir(target.parent) == ["x.json"]

    target.chmod(0o644)
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["x.json"]

    atomic_write(target, b"three", mode=0o640)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_atomic_write_replaces_the_inode(tmp_path: Path) -> None:
    """Readers holding the old file keep its old content: a rename, not a rewrite."""
    target = tmp_path / "x.json"
    atomic_write(target, b"old")
    with open(target, "rb") as reader:
        atomic_write(target, b"new")
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"


def test_atomic_write_failure_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write(target, b"good")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["x.json"]


def test_save_and_load(tmp_path: Path) -> None:
    data = full_file()
    save(tmp_path, data)
    path = state_path(tmp_path, data.lineage)
    assert path == tmp_path / "dane-state" / "mail.example.com.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir(tmp_path).stat().st_mode) == 0o700
    assert load(tmp_path, data.lineage) == data
    assert load(tmp_path, "other") is None
    assert sorted(os.listdir(state_dir(tmp_path))) == ["mail.example.com.json"]


@pytest.mark.parametrize(
    "content",
    ["", "{", '{"format": 1}', '{"format": 7, "lineage": "a"}', "\x00\x01garbage",
     '{"format": 1, "lineage": "a", "settings": {}, "rollover": null}'],
    ids=["empty", "truncated", "incomplete", "format", "binary", "null-rollover"],
)
def test_load_damaged(tmp_path: Path, content: str) -> None:
    path = state_path(tmp_path, "a")
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(StateError) as info:
        load(tmp_path, "a")
    message = str(info.value)
    assert str(path) in message
    assert "damaged" in message
    assert "move it aside" in message
    assert "certbot install -i dane --cert-name a" in message
    assert "\n" not in message
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize("content", ["null", "[]", "1"])
def test_load_non_object_json(tmp_path: Path, content: str) -> None:
    path = state_path(tmp_path, "a")
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StateError, match="damaged"):
        load(tmp_path, "a")


def test_load_of_another_lineage(tmp_path: Path) -> None:
    save(tmp_path, full_file("a.example"))
    os.replace(state_path(tmp_path, "a.example"), state_path(tmp_path, "b.example"))
    before = state_path(tmp_path, "b.example").read_bytes()
    with pytest.raises(StateError) as info:
        load(tmp_path, "b.example")
    message = str(info.value)
    assert str(state_path(tmp_path, "b.example")) in message
    assert "'a.example'" in message and "'b.example'" in message
    assert state_path(tmp_path, "b.example").read_bytes() == before


def test_load_unreadable(tmp_path: Path) -> None:
    path = state_path(tmp_path, "a")
    path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(StateError, match=f"cannot read state file {path}"):
        load(tmp_path, "a")


def test_list_lineages(tmp_path: Path) -> None:
    assert list_lineages(tmp_path) == []
    for name in ("b.example", "a.example"):
        save(tmp_path, full_file(name))
    with locked(tmp_path, "c.example", timeout=1):
        pass
    (state_dir(tmp_path) / "notes.txt").write_text("x")
    assert list_lineages(tmp_path) == ["a.example", "b.example"]


# Locking ------------------------------------------------------------------------


def test_locked_serialises_threads(tmp_path: Path) -> None:
    spans: list[tuple[str, float, float]] = []
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def worker(tag: str) -> None:
        try:
            start.wait()
            with locked(tmp_path, "a", timeout=10):
                began = time.monotonic()
                time.sleep(0.3)
                spans.append((tag, began, time.monotonic()))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("x", "y", "z")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(tag for tag, _, _ in spans) == ["x", "y", "z"]
    spans.sort(key=lambda span: span[1])
    for (_, _, end), (_, began, _) in itertools.pairwise(spans):
        assert began >= end  # no two holders at once


def test_locks_are_per_lineage(tmp_path: Path) -> None:
    with locked(tmp_path, "a", timeout=1):
        began = time.monotonic()
        with locked(tmp_path, "b", timeout=1):
            pass
        assert time.monotonic() - began < 0.5


def test_lock_timeout(tmp_path: Path) -> None:
    with locked(tmp_path, "mail.example.com", timeout=1):
        began = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with locked(tmp_path, "mail.example.com", timeout=0.5):
                pytest.fail("entered a held lock")  # pragma: no cover
        waited = time.monotonic() - began
    assert 0.5 <= waited < 2
    assert isinstance(info.value, StateError)
    message = str(info.value)
    assert message.startswith("lineage mail.example.com: another certbot-dane run has held ")
    assert str(state_dir(tmp_path) / "mail.example.com.lock") in message
    assert "wait for it to finish, then run the command again" in message
    assert "\n" not in message
    # released when the holder leaves, and the failed waiter left nothing behind
    with locked(tmp_path, "mail.example.com", timeout=0.5):
        pass


def test_lock_released_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with locked(tmp_path, "a", timeout=1):
            raise RuntimeError("boom")
    with locked(tmp_path, "a", timeout=0.2):
        pass


def test_lock_waits_for_release(tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with locked(tmp_path, "a", timeout=1):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    threading.Timer(0.3, release.set).start()
    began = time.monotonic()
    with locked(tmp_path, "a", timeout=5):
        waited = time.monotonic() - began
    thread.join(5)
    assert 0.2 <= waited < 3


def test_a_state_file_written_before_live_records_reads_as_it_was_meant() -> None:
    """Files from before live records, aliases and the endpoint gate: the served
    records are live (the old rule took them so), every owner is its own place,
    and pending records visible since before keep their hold running."""
    served = Version(1, frozenset({record(1)}))
    pending = Version(2, frozenset({record(2)}))
    old = {
        "format": 1,
        "lineage": "mail.example.com",
        "settings": {"targets": "311:25", "directory": "/etc/letsencrypt/dane"},
        "rollover": {
            "served": {"number": 1, "records": [vars(r) for r in served.records]},
            "pending": {"number": 2, "records": [vars(r) for r in pending.records]},
            "owned": [vars(record(1)), vars(record(2))],
            "published": [vars(record(1)), vars(record(2))],
            "hold_ttl": 300,
            "visible_since": 1700000000.0,
            "reload_due": False,
            "last_error": None,
        },
        "timeline": [],
        "last_check": None,
        "switching": None,
    }
    data = from_json(json.dumps(old))
    s = data.rollover
    assert s.live == served.records
    assert s.proving == pending.records and s.visible_since == 1700000000.0
    assert s.aliases == ((OWNER, OWNER),)
    assert s.unresolved() == frozenset()
    assert s.issuers == frozenset() and s.lagging == () and s.foreign == frozenset()
    assert data.settings.audit_interval == 900 and data.settings.endpoints is None
    assert from_json(to_json(data)).rollover == s
