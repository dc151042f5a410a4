"""The lab's authoritative server: one interface, one class per server software.

The lab needs the same things from BIND 9, Knot or PowerDNS: serve the lab's
zone signed (DNSSEC, online signing), accept RFC 2136 updates signed with the
lab's TSIG key, listen on 127.0.0.1 on the lab's port, keep everything under
its own directory, and survive a stop and start with its zone intact. Each
server is a subclass of :class:`Authority` registered in :data:`AUTHORITIES`;
``Lab(run_dir, authority="knot")`` picks one.

The zone text comes from the lab (:meth:`Lab.zone_text`), so every server
starts from the same records and TTLs.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING

from .process import Daemon

if TYPE_CHECKING:
    from .lab import Lab


class Authority(abc.ABC):
    """One authoritative server software, run privately for one lab."""

    #: the name used in ``Lab(..., authority=NAME)`` and in messages
    kind: str = "authority"
    #: the rcode it answers to an update signed with an unknown or wrong key
    refused_update_rcode: str = "REFUSED"
    #: can it serve the lab's extra zones (``Lab(extra_zones=...)``)?
    extra_zones: bool = False

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.directory = lab.run_dir / self.kind
        self._daemon: Daemon | None = None

    @abc.abstractmethod
    def prepare(self) -> None:
        """Write configuration and zone files (the zone only if not there yet)."""

    @abc.abstractmethod
    def daemon(self) -> Daemon:
        """The server process, ready to start in the foreground."""

    def after_start(self) -> None:  # noqa: B027 - a hook most servers do not need
        """Anything to do once the server answers with a signed zone."""

    @property
    def running(self) -> bool:
        return self._daemon is not None and self._daemon.running

    @property
    def pid_file(self) -> Path | None:
        """Where the server writes its pid, if it does (a deploy hook can kill it)."""
        return None

    def start(self) -> None:
        if self._daemon is None:
            self._daemon = self.daemon()
        self._daemon.start()
        self._daemon.wait_until(self.lab.zone_signed, self.lab.start_timeout, "signed zone")
        self.after_start()

    def stop(self, *, hard: bool = False) -> None:
        if self._daemon is not None:
            self._daemon.stop(hard=hard)


class Bind(Authority):
    """BIND 9: ``dnssec-policy`` with inline signing, ``update-policy`` for the key.

    Every zone of the lab (its own and the extra ones) is one ``zone``
    statement, signed the same way; a zone the lab's key may not update
    grants updates to the lab's other key only.
    """

    kind = "bind"
    extra_zones = True

    @property
    def named_conf(self) -> Path:
        return self.directory / "named.conf"

    @property
    def zone_file(self) -> Path:
        return self.file_of(self.lab.zone)

    def file_of(self, zone: str) -> Path:
        return self.directory / f"{zone.rstrip('.')}.zone"

    @property
    def pid_file(self) -> Path:
        return self.directory / "named.pid"

    def prepare(self) -> None:
        (self.directory / "keys").mkdir(parents=True, exist_ok=True)
        self.named_conf.write_text(self._named_conf(), encoding="utf-8")
        for zone in self.lab.zones:
            if not self.file_of(zone).exists():
                self.file_of(zone).write_text(self.lab.zone_text(zone), encoding="utf-8")

    def _named_conf(self) -> str:
        from .lab import LOOPBACK

        d = self.directory
        lab = self.lab
        zones = "\n".join(self._zone(zone) for zone in lab.zones)
        return f"""\
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    key-directory "{d}/keys";
    listen-on port {lab.auth_port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
    version none;
    // Every query is logged (to named.log): tests count the questions a
    // command sends.
    querylog yes;
}};

// No rndc channel: it would need the system's rndc.key and port 953.
controls {{ }};

key "{lab.tsig_name}" {{
    algorithm {lab.tsig_algorithm};
    secret "{lab.tsig_secret}";
}};

// The key of whoever else runs a zone the lab's key may not update.
key "{lab.other_tsig_name}" {{
    algorithm {lab.tsig_algorithm};
    secret "{lab.other_tsig_secret}";
}};

// One combined signing key that never rolls; short safety margins keep the
// key states from holding anything up in a lab that lives for minutes.
dnssec-policy "lab" {{
    keys {{ csk key-directory lifetime unlimited algorithm ecdsap256sha256; }};
    dnskey-ttl 300;
    max-zone-ttl 86400;
    zone-propagation-delay 1;
    publish-safety 1;
    retire-safety 1;
    parent-ds-ttl 300;
    parent-propagation-delay 1;
}};

{zones}"""

    def _zone(self, zone: str) -> str:
        key = self.lab.tsig_name if self.lab.updatable(zone) else self.lab.other_tsig_name
        return f"""\
zone "{zone.rstrip('.')}" {{
    type primary;
    file "{self.file_of(zone)}";
    dnssec-policy "lab";
    inline-signing yes;
    update-policy {{ grant {key} zonesub ANY; }};
}};
"""

    def daemon(self) -> Daemon:
        from .lab import find_tool

        return Daemon(
            "named",
            # -g: foreground, and everything logged to stderr (the log file),
            # config errors included, which -f would send to syslog.
            [find_tool("named"), "-g", "-4", "-c", str(self.named_conf)],
            self.directory / "named.log",
            cwd=self.directory,
        )


# One module per server beyond BIND, below Authority, which each subclasses.
from .knot import Knot  # noqa: E402
from .pdns import PowerDns  # noqa: E402

#: Every authoritative server the lab can run, by ``Lab(authority=...)`` name.
AUTHORITIES: dict[str, type[Authority]] = {
    "bind": Bind,
    "knot": Knot,
    "pdns": PowerDns,
}
