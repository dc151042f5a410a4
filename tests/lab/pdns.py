"""PowerDNS Authoritative 4.7 as the lab's authoritative server.

A private ``pdns_server`` with the gsqlite3 backend, everything under the
lab's directory: the configuration, the SQLite database, the control socket
and the log. The zone is loaded from the lab's zone text with ``pdnsutil``,
signed (``secure-zone``, one ECDSA P-256 CSK, then ``rectify-zone``) and
opened to RFC 2136 updates signed with the lab's TSIG key, so the lab's
``publish()`` and certbot-dns-rfc2136 work as against BIND. The HTTP API is
on as well (``api_url``, ``api_key``): that is what the PowerDNS record
store talks to.

PowerDNS signs answers when it sends them, so a change is served signed at
the next query; it purges its packet cache for the zone on every API or
RFC 2136 change. Nothing is asked of the outside world: the security poll
(a DNS query to powerdns.com) is switched off.
"""
from __future__ import annotations

import secrets
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import pki
from .authority import Authority
from .process import Daemon, LabError, free_port

if TYPE_CHECKING:
    from .lab import Lab

#: Debian's schema for a fresh gsqlite3 database (pdns-backend-sqlite3)
SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
#: the longest control socket path that fits ``sun_path`` (108 bytes) with room
MAX_SOCKET_PATH = 100


class PowerDns(Authority):
    """PowerDNS Authoritative with gsqlite3: online signing, RFC 2136 and the HTTP API."""

    kind = "pdns"

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self.api_key = secrets.token_urlsafe(24)
        self.api_port = 0
        self._socket_dir: Path | None = None

    # Files ------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.directory / "pdns.conf"

    @property
    def database(self) -> Path:
        return self.directory / "pdns.sqlite3"

    @property
    def zone_file(self) -> Path:
        return self.directory / f"{self.lab.zone.rstrip('.')}.zone"

    @property
    def socket_dir(self) -> Path:
        """The control socket's directory: the lab's, unless its path is too long."""
        if self._socket_dir is None:
            if len(str(self.directory / "pdns.controlsocket")) <= MAX_SOCKET_PATH:
                self._socket_dir = self.directory
            else:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="pdns-"))
        return self._socket_dir

    @property
    def pid_file(self) -> Path:
        return self.socket_dir / "pdns.pid"

    # The HTTP API -------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The webserver's base URL, as certbot-dns-powerdns's ``dns_powerdns_api_url``."""
        from .lab import LOOPBACK

        return f"http://{LOOPBACK}:{self.api_port}"

    def ini(self, path: Path) -> Path:
        """Write certbot-dns-powerdns credentials for this server (mode 0600)."""
        text = f"dns_powerdns_api_url = {self.api_url}\ndns_powerdns_api_key = {self.api_key}\n"
        return pki.write_private(Path(path), text.encode("ascii"))

    def api_requests(self) -> list[str]:
        """The API requests PowerDNS logged, as ``METHOD PATH STATUS``, oldest first."""
        found = []
        for line in (self.directory / "pdns.log").read_text(errors="replace").splitlines():
            if "[webserver]" in line and ' HTTP/1.1" ' in line:
                request, status = line.split('"')[1:3]
                method, path, _ = request.split(" ")
                found.append(f"{method} {path} {status.split()[0]}")
        return found

    # Authority --------------------------------------------------------------

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.api_port:
            lab = self.lab
            taken = {lab.auth_port, lab.resolver_port, lab.acme_port, lab.pebble_management_port,
                     lab.pebble_http_port, lab.pebble_tls_port}
            self.api_port = free_port(taken)
        self.conf.write_text(self._conf(), encoding="utf-8")
        if not self.database.exists():
            self._create_zone()

    def _conf(self) -> str:
        from .lab import LOOPBACK

        lab = self.lab
        return f"""\
launch=gsqlite3
gsqlite3-database={self.database}
gsqlite3-dnssec=yes
local-address={LOOPBACK}
local-port={lab.auth_port}
socket-dir={self.socket_dir}
disable-syslog=yes
# Info: one line per API request and per RFC 2136 update, in pdns.log.
loglevel=6
# No query to secpoll.powerdns.com: nothing leaves the machine.
security-poll-suffix=
# RFC 2136, for the zones and addresses the zone metadata allows.
dnsupdate=yes
allow-dnsupdate-from={LOOPBACK}/32
# The HTTP API; changes through it rectify the zone (NSEC chain, empty
# non-terminals) as they are made.
api=yes
api-key={self.api_key}
webserver=yes
webserver-address={LOOPBACK}
webserver-port={self.api_port}
webserver-allow-from={LOOPBACK}/32
default-api-rectify=yes
"""

    def _create_zone(self) -> None:
        """A fresh database with the lab's zone, signed and open to TSIG updates."""
        if not SCHEMA.is_file():
            raise LabError(f"{SCHEMA} not found: run scripts/install-lab-packages.sh")
        with sqlite3.connect(self.database) as db:
            db.executescript(SCHEMA.read_text(encoding="utf-8"))
        db.close()
        zone = self.lab.zone.rstrip(".")
        self.zone_file.write_text(self.lab.zone_text(), encoding="utf-8")
        lab = self.lab
        for command in (
            ["load-zone", zone, str(self.zone_file)],
            ["secure-zone", zone],
            ["rectify-zone", zone],
            ["import-tsig-key", lab.tsig_name, lab.tsig_algorithm, lab.tsig_secret],
            ["set-meta", zone, "TSIG-ALLOW-DNSUPDATE", lab.tsig_name],
            ["set-meta", zone, "ALLOW-DNSUPDATE-FROM", "127.0.0.1/32"],
            # As for a zone created through the API: each API change moves the serial.
            ["set-meta", zone, "SOA-EDIT-API", "DEFAULT"],
        ):
            self.pdnsutil(*command)

    def pdnsutil(self, *args: str) -> str:
        """Run ``pdnsutil`` on this server's configuration; its output, or LabError."""
        from .lab import find_tool

        done = subprocess.run(
            [find_tool("pdnsutil"), f"--config-dir={self.directory}", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            # The TSIG secret is an argument of import-tsig-key: never repeat it.
            shown = args[0] if args[0] == "import-tsig-key" else " ".join(args)
            raise LabError(f"pdnsutil {shown} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def daemon(self) -> Daemon:
        from .lab import find_tool

        return Daemon(
            "pdns_server",
            [
                find_tool("pdns_server"),
                f"--config-dir={self.directory}",
                f"--socket-dir={self.socket_dir}",
                "--daemon=no",
                "--guardian=no",
            ],
            self.directory / "pdns.log",
            cwd=self.directory,
        )
