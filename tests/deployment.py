"""One certbot config directory on the lab, driven as an administrator would."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from certbot_dane import danedir, state
from tests.lab.lab import Lab


def certbot_dane_path() -> str:
    return str(Path(sys.executable).parent / "certbot-dane")


class Deployment:
    """A lineage for ``host`` under its own config dir, issued by the lab's Pebble.

    ``dane_root`` is given as ``--dane-directory`` (default: the config dir's
    ``dane``), e.g. for a service that must reach it without root; ``tlsa`` is
    the ``--dane-tlsa`` value.
    """

    def __init__(
        self,
        lab: Lab,
        root: Path,
        host: str,
        margin: int = 1,
        dane_root: Path | None = None,
        tlsa: str = "311:25",
    ) -> None:
        self.lab = lab
        self.root = root
        self.host = host
        self.tlsa = tlsa
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config"
        self.custom_dane_root = dane_root is not None
        self.dane_root = dane_root if dane_root is not None else self.config / "dane"
        self.ini = lab.rfc2136_ini(root / "rfc2136.ini")
        self.margin = margin
        self.owner = f"_25._tcp.{host}."
        self.checks: list[tuple[float, subprocess.CompletedProcess[str]]] = []

    # certbot ---------------------------------------------------------------

    def dns_args(self) -> list[str]:
        return [
            "-a",
            "dns-rfc2136",
            "--dns-rfc2136-credentials",
            str(self.ini),
            "--dns-rfc2136-propagation-seconds",
            "1",
        ]

    def dane_args(self, tlsa: str | None = None) -> list[str]:
        resolver = f"127.0.0.1:{self.lab.resolver_port}"
        return [
            "-i",
            "dane",
            "--dane-tlsa",
            tlsa or self.tlsa,
            "--dane-resolver",
            resolver,
            "--dane-nameservers",
            f"127.0.0.1:{self.lab.auth_port}",
            "--dane-record-ttl",
            str(self.lab.record_ttl),
            "--dane-hold-margin",
            str(self.margin),
            *(["--dane-directory", str(self.dane_root)] if self.custom_dane_root else []),
        ]

    def certbot(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.lab.run_certbot(self.config, *args)
        if ok:
            assert done.returncode == 0, f"certbot {args[0]} failed:\n{done.stdout}{done.stderr}"
        return done

    def issue(self, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.certbot(
            "run", *self.dns_args(), *self.dane_args(), "-d", self.host, *extra, ok=ok
        )

    def renew(self, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.certbot(
            "renew", "--cert-name", self.host, "--force-renewal", "--no-random-sleep-on-renew",
            *extra, ok=ok,
        )

    def forget_acme_account(self) -> None:
        """After :meth:`Lab.restart_pebble`: Pebble forgot the account, so drop it;
        the next certbot run registers a new one and records it in the renewal conf."""
        shutil.rmtree(self.config / "accounts", ignore_errors=True)

    # certbot-dane ------------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                certbot_dane_path(),
                "--config-dir",
                str(self.config),
                "--logs-dir",
                str(self.root / "logs"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def check(self) -> subprocess.CompletedProcess[str]:
        began = time.time()
        done = self.cli("check")
        self.checks.append((began, done))
        return done

    def status(self) -> dict:
        done = self.cli("status", "--json", "--cert-name", self.host)
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert len(rows) == 1, rows
        return rows[0]

    def check_until_switched(self, version: int, interval: float = 1.0, limit: int = 60) -> None:
        for _ in range(limit):
            done = self.check()
            assert done.returncode == 0, done.stderr
            row = self.status()
            if row["served"] == version and row["pending"] is None and "settled" in row["state"]:
                return
            time.sleep(interval)
        raise AssertionError(f"no switch to version {version}: {self.status()}")

    # Observations --------------------------------------------------------------

    @property
    def lineage_file(self) -> state.LineageFile:
        data = state.load(self.config, self.host)
        assert data is not None
        return data

    def served(self) -> int | None:
        return danedir.served_version(self.dane_root, self.host)

    def dane_dir(self) -> Path:
        return self.dane_root / self.host

    def authoritative_records(self, name: str | None = None) -> set[str]:
        """The TLSA records the authoritative server holds at ``name`` (the owner)."""
        query = dns.message.make_query(name or self.owner, dns.rdatatype.TLSA)
        response = dns.query.udp(query, "127.0.0.1", port=self.lab.auth_port, timeout=3)
        return {
            rd.to_text()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TLSA
            for rd in rrset
        }

    def events(self, what: str) -> list[float]:
        return [e.time for e in self.lineage_file.timeline if e.what == what]
