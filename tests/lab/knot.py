"""Knot DNS 3.2 as the lab's authoritative server.

A private ``knotd`` per lab: its configuration, run directory (pid file and
control socket), zone file, journal, KASP and timer databases all live under
the lab's ``knot/`` directory. It signs the zone itself (one ECDSA P-256 CSK
that never rolls) and accepts RFC 2136 updates signed with the lab's TSIG key.

What differs from BIND, and why the configuration looks as it does:

- The zone lives in the journal (``journal-content: all``) and the zone file
  is never rewritten (``zonefile-sync: -1``), so the file stays the lab's
  unsigned text. The file is read at the first start only: once the journal
  holds the zone, the server starts with ``zonefile-load: none`` and the
  journal alone, so a restart keeps every update. (``difference`` replays
  the file over the journal when the server was killed before it saved its
  timers, undoing the updates; ``whole`` fails a semantic check after many.)
- Knot publishes CDS/CDNSKEY and keeps the CSK "ready" until the DS is said
  to be at the parent: the lab has no parent, so it confirms the submission
  at once (``knotc zone-ksk-submitted``) and publishes no CDS at all.
- ``udp-workers: 1`` keeps one socket per port; a plain bind by another
  process (how the lab picks free ports) still sees the port taken.
- A UNIX socket path holds 108 bytes: when the lab's directory is too deep,
  the run directory moves to a short one under the system's temp directory.
"""
from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .authority import Authority
from .process import Daemon, LabError

if TYPE_CHECKING:
    from .lab import Lab

#: sun_path holds 108 bytes, the terminating NUL included.
SOCKET_PATH_MAX = 107


class Knot(Authority):
    """Knot DNS: automatic DNSSEC signing, an ``acl`` with ``action: update``."""

    kind = "knot"
    refused_update_rcode = "NOTAUTH"

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab)
        self._short_rundir: Path | None = None

    # Paths -----------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.directory / "knot.conf"

    @property
    def zone_file(self) -> Path:
        return self.directory / f"{self.lab.zone.rstrip('.')}.zone"

    @property
    def storage(self) -> Path:
        """Journal, KASP (the signing key) and timer databases."""
        return self.directory / "db"

    @property
    def rundir(self) -> Path:
        """Where the pid file and the control socket go: the lab's directory
        when the socket path fits, else a short one made for this server."""
        if len(str(self.directory / "knot.sock")) <= SOCKET_PATH_MAX:
            return self.directory
        if self._short_rundir is None:
            self._short_rundir = Path(tempfile.mkdtemp(prefix="knot-"))
            atexit.register(shutil.rmtree, self._short_rundir, ignore_errors=True)
        return self._short_rundir

    @property
    def control_socket(self) -> Path:
        return self.rundir / "knot.sock"

    @property
    def pid_file(self) -> Path:
        return self.rundir / "knot.pid"

    # Life ------------------------------------------------------------------

    def prepare(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._knot_conf(), encoding="utf-8")
        if not self.zone_file.exists():
            self.zone_file.write_text(self.lab.zone_text(), encoding="utf-8")

    def _knot_conf(self) -> str:
        from .lab import LOOPBACK

        lab = self.lab
        zone = lab.zone.rstrip(".")
        return f"""\
server:
    rundir: "{self.rundir}"
    listen: {LOOPBACK}@{lab.auth_port}
    udp-workers: 1
    tcp-workers: 2
    background-workers: 1
    version: ""

database:
    storage: "{self.storage}"
    journal-db-max-size: 200M
    kasp-db-max-size: 20M
    timer-db-max-size: 20M
    catalog-db-max-size: 20M

control:
    listen: "{self.control_socket}"

log:
  - target: stderr
    any: info

key:
  - id: {lab.tsig_name}
    algorithm: {lab.tsig_algorithm}
    secret: {lab.tsig_secret}

acl:
  - id: lab-update
    key: {lab.tsig_name}
    action: update

# One combined signing key that never rolls; no CDS/CDNSKEY (no parent).
policy:
  - id: lab
    algorithm: ecdsap256sha256
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0
    propagation-delay: 1
    dnskey-ttl: 300
    zone-max-ttl: 86400
    cds-cdnskey-publish: none

zone:
  - domain: {zone}
    storage: "{self.directory}"
    file: "{self.zone_file.name}"
    dnssec-signing: on
    dnssec-policy: lab
    acl: lab-update
    zonefile-sync: -1
    zonefile-load: {self._zonefile_load()}
    journal-content: all
"""

    def _zonefile_load(self) -> str:
        """Read the zone file until the journal holds the zone, then never."""
        return "none" if (self.storage / "journal").exists() else "whole"

    def daemon(self) -> Daemon:
        from .lab import find_tool

        # Without -d knotd stays in the foreground and logs to stderr.
        return Daemon(
            "knotd",
            [find_tool("knotd"), "-c", str(self.conf)],
            self.directory / "knotd.log",
            cwd=self.directory,
        )

    def start(self) -> None:
        # knotd refuses to start while its pid file names a live process. A
        # server killed outright leaves the file behind; once our own process
        # is gone, the file is stale. The configuration is written again: the
        # zone file is read only until the journal holds the zone.
        if not self.running:
            self.pid_file.unlink(missing_ok=True)
            self.conf.write_text(self._knot_conf(), encoding="utf-8")
        super().start()

    def after_start(self) -> None:
        # The zone may be signed before the control socket is bound.
        assert self._daemon is not None
        self._daemon.wait_until(
            self.control_socket.exists, self.lab.start_timeout, "control socket"
        )
        try:
            self.knotc("zone-ksk-submitted", self.lab.zone)
        except LabError as err:
            # Confirmed at an earlier start: the key is active already.
            if "no key ready" not in str(err):
                raise

    def knotc(self, *command: str) -> str:
        """Run ``knotc`` against this server; its output, or LabError."""
        from .lab import find_tool

        done = subprocess.run(
            [find_tool("knotc"), "-c", str(self.conf), "-s", str(self.control_socket), *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise LabError(
                f"knotc {' '.join(command)} failed ({done.returncode}): "
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout
