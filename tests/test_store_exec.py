"""The exec store: the conformance suite driving docs/examples/nsupdate-tlsa.sh
against the lab's BIND, and the exec contract itself (environment, exit codes,
timeouts, secrets).

The exec contract cannot list records, so the three conformance tests that
read back through ``store.list`` are replaced here by versions that check
the backend directly and that ``list`` stays empty, as documented.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from certbot_dane.dns import open_store
from certbot_dane.dns.base import RecordStore, RRsetView, StoreConfigError
from certbot_dane.dns.exec import FIXED_PATH, ExecError, ExecStore, split_owner
from certbot_dane.state import Settings
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness, owner, record
from tests.lab.lab import Lab
from tests.netfakes import FakeDns, closed_port

pytestmark = pytest.mark.lab

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "examples" / "nsupdate-tlsa.sh"
WRONG_SECRET = base64.b64encode(b"not the lab's key, 32 bytes long").decode()
CONTRACT = {
    "TLSA_OPERATION",
    "TLSA_USAGE",
    "TLSA_SELECTOR",
    "TLSA_MATCHING",
    "TLSA_PARAM",
    "TLSA_PORT",
    "TLSA_PROTOCOL",
    "TLSA_DOMAIN",
    "TLSA_HASH",
    "ZONE_DOMAIN",
    "RENEWED_DOMAINS",
    "LETSENCRYPT_DIR",
    "PATH",
    "IFS",
}


# Setting up the sample script -----------------------------------------------------


def write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


def nsupdate_config(
    lab: Lab, root: Path, secret: str | None = None, port: int | None = None, timeout: int = 5
) -> Path:
    """The sample script's config and TSIG key file for the lab (both 0600)."""
    root.mkdir(parents=True, exist_ok=True)
    key = root / "nsupdate-tlsa.key"
    key.write_text(
        f'key "{lab.tsig_name}" {{ algorithm {lab.tsig_algorithm}; '
        f'secret "{secret or lab.tsig_secret}"; }};\n'
    )
    key.chmod(0o600)
    conf = root / "nsupdate-tlsa.conf"
    conf.write_text(
        "# written by the exec store tests\n"
        "server = 127.0.0.1\n"
        f"port = {port or lab.auth_port}\n"
        f"keyfile = {key}\n"
        f"timeout = {timeout}\n"
    )
    conf.chmod(0o600)
    return conf


def exec_settings(lab: Lab, root: Path, command: str, timeout: int = 30) -> Settings:
    return Settings(
        targets="311:25",
        directory=str(root / "config" / "dane"),
        store="exec",
        resolver=f"127.0.0.1:{lab.resolver_port}",
        exec_command=command,
        exec_timeout=timeout,
    )


def exec_store(lab: Lab, root: Path, command: str, timeout: int = 30) -> ExecStore:
    store = open_store(exec_settings(lab, root, command, timeout), str(root / "config"), timeout=5)
    assert isinstance(store, ExecStore)
    return store


def at_bind(lab: Lab, owner: str) -> tuple[set[Record], int | None]:
    query = dns.message.make_query(owner, dns.rdatatype.TLSA)
    response = dns.query.tcp(query, "127.0.0.1", port=lab.auth_port, timeout=5)
    records, ttl = set(), None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TLSA:
            records |= {Record.from_rdata(owner, rd) for rd in rrset}
            ttl = rrset.ttl
    return records, ttl


# The conformance harness ------------------------------------------------------------

_dirs = itertools.count()


class ExecHarness(Harness):
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.zone = lab.zone
        self.secrets = (lab.tsig_secret, WRONG_SECRET)
        self.conf = nsupdate_config(lab, root / "good")

    def _store(self, command: str, timeout: int = 30) -> ExecStore:
        return exec_store(self.lab, self.root / f"s{next(_dirs)}", command, timeout)

    def store(self) -> RecordStore:
        return self._store(f"{SCRIPT} {self.conf}")

    def other_host(self) -> RecordStore:
        # Another host: its own copy of the config, the same server and key.
        return self._store(f"{SCRIPT} {nsupdate_config(self.lab, self.root / 'other')}")

    def backend_records(self, owner: str) -> set[Record]:
        return at_bind(self.lab, owner)[0]

    def backend_ttl(self, owner: str) -> int | None:
        return at_bind(self.lab, owner)[1]

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        both = ("add", "delete")
        exit2 = write_script(
            self.root / "exit2.sh", "#!/bin/sh\necho 'refused by policy' >&2\nexit 2\n"
        )
        yield "program exits 2", self._store(str(exit2)), both
        hangs = write_script(self.root / "hangs.sh", "#!/bin/sh\nsleep 600 &\nwait\n")
        yield "program hangs", self._store(str(hangs), timeout=1), both
        yield "program not found", self._store(str(self.root / "no-such-program")), both
        down = nsupdate_config(self.lab, self.root / "down", port=closed_port(), timeout=1)
        yield "server down", self._store(f"{SCRIPT} {down}"), both
        wrong = nsupdate_config(self.lab, self.root / "wrong", secret=WRONG_SECRET)
        yield "auth refused", self._store(f"{SCRIPT} {wrong}"), ("add",)


@pytest.fixture
def harness(lab: Lab, tmp_path: Path) -> Harness:
    return ExecHarness(lab, tmp_path)


# The suite's tests that read back through list(), adapted --------------------------


def test_add_then_list(harness: Harness) -> None:
    assert isinstance(harness, ExecHarness)
    name = owner(harness)
    store = harness.store()
    mine = {record(name, "a1"), record(name, "b2")}
    store.add(mine, 300)
    assert at_bind(harness.lab, name) == (mine, 300)
    assert store.list(name) == RRsetView(frozenset(), None), "the contract cannot list"


def test_delete_one_of_two(harness: Harness) -> None:
    name = owner(harness)
    store = harness.store()
    first, second = record(name, "a1"), record(name, "b2")
    store.add({first, second}, 300)
    store.delete({first})
    assert harness.backend_records(name) == {second}


@pytest.mark.parametrize(
    ("usage", "selector", "mtype"), list(itertools.product((2, 3), (0, 1), (0, 1, 2)))
)
def test_every_usage_selector_and_matching_type(
    harness: Harness, usage: int, selector: int, mtype: int
) -> None:
    name = owner(harness)
    data = "30820122300d06092a864886f70d01010105000382010f00" * (6 if mtype == 0 else 1)
    rec = record(name, data, usage, selector, mtype)
    store = harness.store()
    store.add({rec}, 300)
    assert harness.backend_records(name) == {rec}
    store.delete({rec})
    assert harness.backend_records(name) == set()


# The environment contract ---------------------------------------------------------


@pytest.fixture
def dump(tmp_path: Path) -> tuple[Path, Path]:
    """A program that writes the environment it was started with (as the
    kernel passed it, before any interpreter adds to it), its arguments and
    its working directory to a file, one run after another."""
    out = tmp_path / "dump.txt"
    program = write_script(
        tmp_path / "dump.py",
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "raw = open('/proc/self/environ', 'rb').read().split(b'\\0')\n"
        "env = dict(i.decode().split('=', 1) for i in raw if i)\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps([env, sys.argv[1:], os.getcwd()]) + '\\n')\n",
    )
    return program, out


def runs(out: Path) -> list[tuple[dict[str, str], list[str], str]]:
    return [tuple(json.loads(line)) for line in out.read_text().splitlines()]  # type: ignore[misc]


def test_environment_is_exactly_the_contract(
    lab: Lab, tmp_path: Path, dump: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    program, out = dump
    monkeypatch.setenv("CERTBOT_DANE_CANARY", "must not leak")
    monkeypatch.setenv("HOME", "/root/must-not-leak")
    store = exec_store(lab, tmp_path, f"{program} 'two words' '$HOME' \"a;b\"")
    owner = "_25._tcp.mx.dane.test."
    old, new = record(owner, "a1"), record(owner, "b2")
    store.add([new], 120)
    store.delete([old])
    store.delete([old], keep=[new, record("_443._tcp.mx.dane.test.", "c3")])
    (publish, argv, cwd), (delete, _, _), (guarded, _, _) = runs(out)

    assert set(publish) == CONTRACT | {"TLSA_TTL"}
    assert set(delete) == CONTRACT
    assert set(guarded) == CONTRACT | {"TLSA_LIVE_HASH"}
    assert argv == ["two words", "$HOME", "a;b"], "no shell: arguments arrive verbatim"
    assert cwd == "/"
    assert publish == {
        "TLSA_OPERATION": "publish",
        "TLSA_USAGE": "3",
        "TLSA_SELECTOR": "1",
        "TLSA_MATCHING": "1",
        "TLSA_PARAM": "311",
        "TLSA_PORT": "25",
        "TLSA_PROTOCOL": "tcp",
        "TLSA_DOMAIN": "mx.dane.test",
        "TLSA_HASH": new.data,
        "TLSA_TTL": "120",
        "ZONE_DOMAIN": "dane.test",
        "RENEWED_DOMAINS": "",
        "LETSENCRYPT_DIR": str(tmp_path / "config"),
        "PATH": FIXED_PATH,
        "IFS": " \t\n",
    }
    assert delete["TLSA_OPERATION"] == "delete" and delete["TLSA_HASH"] == old.data
    assert guarded["TLSA_LIVE_HASH"] == new.data


def test_values_for_other_records(lab: Lab, tmp_path: Path, dump: tuple[Path, Path]) -> None:
    program, out = dump
    store = exec_store(lab, tmp_path, str(program))
    store.renewed_domains = ("mail.dane.test", "mx.dane.test")
    upper = Record("_443._udp.Deep.Sub.dane.test.", 2, 0, 2, "AB" * 64)
    store.add([upper], 60)
    ((env, _, _),) = runs(out)
    assert (env["TLSA_PARAM"], env["TLSA_PORT"], env["TLSA_PROTOCOL"]) == ("202", "443", "udp")
    assert env["TLSA_DOMAIN"] == "deep.sub.dane.test"
    assert env["TLSA_HASH"] == "ab" * 64, "lower-case hex"
    assert env["ZONE_DOMAIN"] == "dane.test"
    assert env["RENEWED_DOMAINS"] == "mail.dane.test mx.dane.test"


def test_one_run_per_record(lab: Lab, tmp_path: Path, dump: tuple[Path, Path]) -> None:
    program, out = dump
    store = exec_store(lab, tmp_path, str(program))
    records = [record("_25._tcp.a.dane.test.", "a1"), record("_25._tcp.b.dane.test.", "b2")]
    records.append(record("_25._tcp.a.dane.test.", "c3", mtype=2))
    store.add(records, 60)
    store.delete(records)
    seen = [
        (env["TLSA_OPERATION"], env["TLSA_DOMAIN"], env["TLSA_HASH"]) for env, _, _ in runs(out)
    ]
    expected = [(r.owner.split(".", 2)[2].rstrip("."), r.data) for r in sorted(records)]
    assert seen == [("publish", *e) for e in expected] + [("delete", *e) for e in expected]


def test_zone_is_looked_up_not_guessed(tmp_path: Path, dump: tuple[Path, Path]) -> None:
    """A co.uk-style zone: the last two labels would name the registry."""
    program, out = dump
    with FakeDns(zone="example.co.uk.") as resolver:
        store = ExecStore(str(program), resolver=("127.0.0.1", resolver.port), dns_timeout=2)
        store.add([record("_25._tcp.mx.example.co.uk.", "a1")], 60)
        store.add([record("_25._tcp.mx.example.co.uk.", "b2")], 60)
        soa_queries = [m for m in resolver.received if m.question[0].rdtype == dns.rdatatype.SOA]
    assert [env["ZONE_DOMAIN"] for env, _, _ in runs(out)] == ["example.co.uk"] * 2
    assert len(soa_queries) == 1, "one lookup per owner name, then cached"


def test_zone_falls_back_to_two_labels_with_a_warning(
    tmp_path: Path, dump: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    program, out = dump
    store = ExecStore(str(program), resolver=("127.0.0.1", closed_port()), dns_timeout=1)
    with caplog.at_level(logging.WARNING, logger="certbot_dane.dns.exec"):
        store.add([record("_25._tcp.mx.example.co.uk.", "a1")], 60)
    ((env, _, _),) = runs(out)
    assert env["ZONE_DOMAIN"] == "co.uk"
    assert "guessing co.uk" in caplog.text and "_25._tcp.mx.example.co.uk." in caplog.text


def test_split_owner() -> None:
    assert split_owner("_25._tcp.MX.Example.COM.") == ("25", "tcp", "mx.example.com")
    with pytest.raises(ExecError):
        split_owner("www.example.com.")


# Exit codes: every one, and its message, in tests/test_store_exec_messages.py ----------


@pytest.mark.parametrize("command", [None, "", "   ", "'unbalanced"])
def test_bad_commands_are_config_errors(tmp_path: Path, command: str | None) -> None:
    settings = Settings(
        targets="311:25", directory=str(tmp_path), store="exec", exec_command=command
    )
    with pytest.raises(StoreConfigError) as info:
        open_store(settings, "/etc/letsencrypt")
    assert "exec store" in str(info.value)


def test_list_is_always_empty() -> None:
    assert ExecStore("/bin/true").list("_25._tcp.mx.dane.test.") == RRsetView(frozenset(), None)


# Secrets ------------------------------------------------------------------------------


def test_tsig_secret_never_appears_in_errors(lab: Lab, tmp_path: Path) -> None:
    name = "_25._tcp.secret.dane.test."
    wrong = nsupdate_config(lab, tmp_path / "wrong", secret=WRONG_SECRET)
    with pytest.raises(ExecError) as info:
        exec_store(lab, tmp_path, f"{SCRIPT} {wrong}").add([record(name)], 60)
    assert "BADSIG" in str(info.value) or "NOTAUTH" in str(info.value), str(info.value)
    # A zone the key may not update: the server refuses, the key stays hidden.
    good = nsupdate_config(lab, tmp_path / "good")
    store = exec_store(lab, tmp_path, f"{SCRIPT} {good}")
    store._zones["_25._tcp.secret.dane.test."] = "secret.dane.test"
    with pytest.raises(ExecError) as refused:
        store.add([record(name)], 60)
    # Arguments may carry secrets too: only the program is named.
    echo = write_script(tmp_path / "echo.sh", "#!/bin/sh\nexit 3\n")
    with pytest.raises(ExecError) as argv:
        exec_store(lab, tmp_path, f"{echo} --secret {lab.tsig_secret}").add([record(name)], 60)
    for err in (info.value, refused.value, argv.value):
        for secret in (lab.tsig_secret, WRONG_SECRET):
            assert secret not in str(err)
    assert at_bind(lab, name)[0] == set()


def test_sample_script_exit_codes(lab: Lab, tmp_path: Path) -> None:
    """The sample keeps the contract: 1 for a present record (publish) and for
    a live record not yet up (delete); 0 for deleting an absent record."""
    conf = nsupdate_config(lab, tmp_path / "conf")
    store = exec_store(lab, tmp_path, f"{SCRIPT} {conf}")
    name = "_25._tcp.sample.dane.test."
    old, new = record(name, "a1"), record(name, "b2")
    store.add([old], 60)
    store.add([old], 60)  # exit 1: already there, a success
    with pytest.raises(ExecError) as info:
        store.delete([old], keep=[new])
    assert info.value.exit_code == 1 and "not served" in str(info.value)
    assert at_bind(lab, name)[0] == {old}
    store.add([new], 60)
    store.delete([old], keep=[new])
    assert at_bind(lab, name)[0] == {new}
    store.delete([old], keep=[new])  # absent already: done
    store.delete([new])
    assert at_bind(lab, name)[0] == set()


def test_sample_script_refuses_bad_config(lab: Lab, tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("server = 127.0.0.1\nport = 53\nkeyfile = /nonexistent\nfrobnicate = 1\n")
    with pytest.raises(ExecError) as info:
        exec_store(lab, tmp_path, f"{SCRIPT} {conf}").add([record("_25._tcp.c.dane.test.")], 60)
    assert info.value.exit_code == 2 and "unknown setting 'frobnicate'" in str(info.value)


def test_nothing_inherited_even_for_the_sample(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample works in the bare environment; certbot's does not matter."""
    monkeypatch.setenv("PATH", "/nonexistent")
    conf = nsupdate_config(lab, tmp_path / "conf")
    name = "_25._tcp.bare.dane.test."
    store = exec_store(lab, tmp_path, f"{SCRIPT} {conf}")
    store.add([record(name)], 60)
    assert at_bind(lab, name)[0] == {record(name)}
    store.delete([record(name)])
    assert os.environ["PATH"] == "/nonexistent"
