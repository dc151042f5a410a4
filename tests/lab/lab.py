"""A loopback DNSSEC + ACME lab: an authoritative server, a validating Unbound and Pebble.

Everything listens on 127.0.0.1 only, on ports the kernel hands out at start,
with config files, keys, logs and state kept in one run directory, so several
labs can run side by side and nothing on the machine is touched.

- The authoritative server (BIND 9 by default; see :mod:`.authority` for the
  others) serves ``dane.test.``, signs it and accepts RFC 2136 updates signed
  with the lab's TSIG key.
- Unbound validates the zone from a trust anchor made from the served DNSKEY,
  so its answers carry AD exactly when they validate; a stub zone points it at
  the authoritative server and nothing else is reachable (``test.`` is
  otherwise one of its built-in NXDOMAIN zones).
- Pebble is the ACME CA; it checks DNS-01 challenges at the authoritative
  server directly (not via the caching resolver, where an old challenge TXT
  could linger).

A lab may serve more signed zones next to ``dane.test.`` (``extra_zones``,
BIND only), each with its own trust anchor and stub zone in Unbound: the
targets of CNAMEs that leave the lineage's zone. A zone made with
``LabZone(name, updates=False)`` grants updates to another key only (its
``update-policy``), as a zone run by another team would.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

from . import pki
from .authority import AUTHORITIES, Authority
from .process import Daemon, LabError, free_port

LOOPBACK = "127.0.0.1"

# Environment variables that could send a client's traffic to a proxy off the
# machine; the lab's clients must talk to 127.0.0.1 directly.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def find_tool(name: str) -> str:
    """Path of a system tool; named/unbound live in /usr/sbin, often not on PATH."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin"
    found = shutil.which(name, path=path)
    if found is None:
        raise LabError(f"{name} not found: run scripts/install-lab-packages.sh")
    return found


def _no_proxy_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in _PROXY_VARS:
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    return env


@dataclass(frozen=True)
class LabZone:
    """A signed zone served next to the lab's own.

    ``updates``: the lab's TSIG key may update it (else only the lab's
    other key, :attr:`Lab.other_tsig_name`, may).
    """

    name: str
    updates: bool = True


class Lab:
    """The lab's three daemons, started in ``run_dir``.

    ``authority`` names the authoritative server software (a key of
    :data:`.authority.AUTHORITIES`: ``bind`` by default).

    ``ttl`` is the zone's default TTL (and SOA TTL and negative TTL), so
    records such as TLSA published without an explicit TTL expire from the
    resolver's cache after that many seconds. ``cert_validity`` (seconds) is
    the lifetime of the certificates Pebble issues; Pebble's default (5 years)
    when None. ``extra_zones`` are more signed zones on the same server
    (names or :class:`LabZone`); none by default.
    """

    zone = "dane.test."
    tsig_name = "dane-lab-key"
    #: a key the lab's credentials do not hold: the only one a zone with
    #: ``updates=False`` grants updates to
    other_tsig_name = "dane-lab-other-key"
    tsig_algorithm = "hmac-sha256"
    email = "admin@dane.test"

    def __init__(
        self,
        run_dir: Path,
        *,
        ttl: int = 2,
        cert_validity: int | None = None,
        start_timeout: float = 30.0,
        authority: str = "bind",
        extra_zones: Sequence[str | LabZone] = (),
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.extra_zones = tuple(
            z if isinstance(z, LabZone) else LabZone(z) for z in extra_zones
        )
        self.record_ttl = ttl
        self.cert_validity = cert_validity
        self.start_timeout = start_timeout
        self.tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.other_tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")

        self.unbound_dir = self.run_dir / "unbound"
        self.pebble_dir = self.run_dir / "pebble"
        self.unbound_conf = self.unbound_dir / "unbound.conf"
        self.trust_anchor_file = self.unbound_dir / "dane.test.ds"
        self.pebble_conf = self.pebble_dir / "pebble-config.json"
        # CA that signs Pebble's HTTPS certificate (REQUESTS_CA_BUNDLE for
        # certbot); not the CA that issues the ACME certificates.
        self.ca_bundle = self.pebble_dir / "api-ca.pem"
        self.state_file = self.run_dir / "lab.json"

        self.auth_port = 0
        self.resolver_port = 0
        self.acme_port = 0
        self.pebble_management_port = 0
        self.pebble_http_port = 0
        self.pebble_tls_port = 0
        self.unbound_control: str = ""
        self.start_seconds: float | None = None

        if authority not in AUTHORITIES:
            raise LabError(f"unknown authoritative server {authority!r}: {sorted(AUTHORITIES)}")
        self.authority: Authority = AUTHORITIES[authority](self)
        if self.extra_zones and not self.authority.extra_zones:
            raise LabError(f"the {authority} lab serves one zone: no extra_zones")
        self._unbound: Daemon | None = None
        self._pebble: Daemon | None = None

    # ------------------------------------------------------------------ life

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def zones(self) -> tuple[str, ...]:
        """Every zone the lab serves: its own first, then the extra ones."""
        return (self.zone, *(z.name for z in self.extra_zones))

    def zone_for(self, name: str) -> str:
        """The lab zone that holds ``name`` (the longest matching apex)."""
        owner = dns.name.from_text(name)
        found = [z for z in self.zones if owner.is_subdomain(dns.name.from_text(z))]
        if not found:
            raise LabError(f"{name} is in no zone of the lab ({', '.join(self.zones)})")
        return max(found, key=len)

    def updatable(self, zone: str) -> bool:
        """May the lab's TSIG key (the credentials certbot gets) update ``zone``?"""
        return all(z.updates for z in self.extra_zones if z.name == zone)

    @property
    def acme_url(self) -> str:
        return f"https://{LOOPBACK}:{self.acme_port}/dir"

    @property
    def pebble_management_url(self) -> str:
        return f"https://{LOOPBACK}:{self.pebble_management_port}"

    @property
    def resolver(self) -> tuple[str, int]:
        """(address, port) of the validating resolver."""
        return (LOOPBACK, self.resolver_port)

    @property
    def auth_address(self) -> tuple[str, int]:
        """(address, port) of the authoritative server."""
        return (LOOPBACK, self.auth_port)

    @property
    def running(self) -> bool:
        """True while all three daemons run."""
        daemons = (self._unbound, self._pebble)
        return self.authority.running and all(d is not None and d.running for d in daemons)

    def start(self) -> None:
        """Start the authoritative server, Unbound and Pebble; return once each answers."""
        began = time.monotonic()
        try:
            self._prepare()
            # Pebble needs nothing from the others to come up: start it first
            # so that it boots while the authoritative server signs the zone.
            self._pebble = self._pebble_daemon()
            self._pebble.start()
            self.start_authority()
            self._write_trust_anchor()
            self._write_unbound_conf()
            self._unbound = self._unbound_daemon()
            self._unbound.start()
            self._unbound.wait_until(
                self._resolver_validates, self.start_timeout, "validated (AD) SOA answer"
            )
            self._pebble.wait_until(self._pebble_answers, self.start_timeout, "ACME directory")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        self.state_file.write_text(json.dumps(self.describe(), indent=2) + "\n", encoding="utf-8")

    def stop(self) -> None:
        """Stop every daemon; safe to call more than once."""
        for daemon in (self._unbound, self._pebble):
            if daemon is not None:
                daemon.stop()
        self.authority.stop()

    def start_authority(self) -> None:
        """(Re)start the authoritative server on the same port with the same
        keys and zone."""
        self.authority.start()
        if self._unbound is not None and self._unbound.running:
            # Unbound backs off from a server that stopped answering; forget
            # that so it asks again at once.
            self._unbound_control("flush_infra", "all")

    def stop_authority(self, *, hard: bool = False) -> None:
        """Stop the authoritative server (SIGKILL when ``hard``); its zone stays on disk."""
        self.authority.stop(hard=hard)

    def describe(self) -> dict[str, object]:
        """What a client needs to use the lab, as written to ``lab.json``."""
        return {
            "run_dir": str(self.run_dir),
            "zone": self.zone,
            "zones": list(self.zones),
            "authority": self.authority.kind,
            "auth": [LOOPBACK, self.auth_port],
            "resolver": [LOOPBACK, self.resolver_port],
            "acme_url": self.acme_url,
            "pebble_management_url": self.pebble_management_url,
            "ca_bundle": str(self.ca_bundle),
            "tsig_name": self.tsig_name,
            "tsig_secret": self.tsig_secret,
            "tsig_algorithm": self.tsig_algorithm,
            "record_ttl": self.record_ttl,
            "unbound_conf": str(self.unbound_conf),
        }

    # ------------------------------------------------------------- DNS tools

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        return dns.tsigkeyring.from_text({self.tsig_name: (self.tsig_algorithm, self.tsig_secret)})

    def update(self, *, signed: bool = True, zone: str | None = None) -> dns.update.UpdateMessage:
        """An empty RFC 2136 update for ``zone`` (the lab's own by default),
        TSIG-signed unless told not: with the lab's key, or with the other key
        for a zone the lab's key may not update."""
        zone = zone or self.zone
        if not signed:
            return dns.update.UpdateMessage(zone)
        name, secret = (
            (self.tsig_name, self.tsig_secret)
            if self.updatable(zone)
            else (self.other_tsig_name, self.other_tsig_secret)
        )
        return dns.update.UpdateMessage(
            zone,
            keyring=dns.tsigkeyring.from_text({name: (self.tsig_algorithm, secret)}),
            keyname=dns.name.from_text(name),
            keyalgorithm=dns.tsig.HMAC_SHA256,
        )

    def send_update(
        self, message: dns.update.UpdateMessage, timeout: float = 5.0
    ) -> dns.rcode.Rcode:
        """Send an update to the authoritative server over TCP; return the rcode."""
        response = dns.query.tcp(message, LOOPBACK, port=self.auth_port, timeout=timeout)
        return response.rcode()

    def auth_query(
        self, name: str, rdtype: str = "A", *, timeout: float = 2.0
    ) -> dns.message.Message:
        """Ask the authoritative server directly (DO bit set, so RRSIGs come along)."""
        return _query(name, rdtype, LOOPBACK, self.auth_port, timeout)

    def resolver_query(
        self, name: str, rdtype: str = "A", *, timeout: float = 3.0
    ) -> dns.message.Message:
        """Ask the validating resolver (RD and DO set); check ``.flags`` for AD."""
        return _query(name, rdtype, LOOPBACK, self.resolver_port, timeout)

    def wait_signed(
        self,
        name: str,
        rdtype: str,
        *,
        present: bool = True,
        expect: Collection[str] | None = None,
        timeout: float = 10.0,
    ) -> dns.rrset.RRset | None:
        """Wait until the authoritative server serves ``name``/``rdtype`` with
        its RRSIG (exactly the rdata in ``expect`` when given), or no longer
        serves it when ``present`` is False; return the RRset.

        Servers that sign inline serve an update a moment after accepting it.
        """
        want = dns.rdatatype.from_text(rdtype)
        wanted = (
            None
            if expect is None
            else {dns.rdata.from_text(dns.rdataclass.IN, want, text) for text in expect}
        )
        deadline = time.monotonic() + timeout
        while True:
            response = self.auth_query(name, rdtype)
            rrset = _find(response, name, want)
            signed = _find(response, name, dns.rdatatype.RRSIG, covers=want) is not None
            if not present and rrset is None:
                return None
            if present and rrset is not None and signed:
                if wanted is None or set(rrset) == wanted:
                    return rrset
            if time.monotonic() >= deadline:
                state = "signed as expected" if present else "gone"
                raise LabError(
                    f"{name} {rdtype} not {state} at {self.authority.kind} within {timeout} s"
                )
            time.sleep(0.02)

    def publish(self, name: str, rdtype: str, *rdatas: str, ttl: int | None = None) -> None:
        """Replace ``name``/``rdtype`` with ``rdatas`` (TSIG-signed update),
        wait until it is served signed, and flush it from the resolver."""
        update = self.update(zone=self.zone_for(name))
        update.replace(name, self.record_ttl if ttl is None else ttl, rdtype, *rdatas)
        rcode = self.send_update(update)
        if rcode != dns.rcode.NOERROR:
            raise LabError(f"update of {name} {rdtype} failed: {dns.rcode.to_text(rcode)}")
        self.wait_signed(name, rdtype, expect=rdatas)
        self.flush_resolver(name, rdtype)

    def unpublish(self, name: str, rdtype: str) -> None:
        """Delete ``name``/``rdtype``, wait until it is no longer served, flush it."""
        update = self.update(zone=self.zone_for(name))
        update.delete(name, rdtype)
        rcode = self.send_update(update)
        if rcode != dns.rcode.NOERROR:
            raise LabError(f"delete of {name} {rdtype} failed: {dns.rcode.to_text(rcode)}")
        self.wait_signed(name, rdtype, present=False)
        self.flush_resolver(name, rdtype)

    def flush_resolver(self, name: str, rdtype: str = "TLSA") -> None:
        """Drop ``name``/``rdtype`` from Unbound's cache (``flush`` alone does
        not flush TLSA or TXT; ``flush_type`` does)."""
        self._unbound_control("flush_type", name, rdtype)

    def flush_resolver_zone(self) -> None:
        """Drop everything Unbound cached for the zone, bogus and negative
        answers included."""
        self._unbound_control("flush_zone", self.zone)
        self._unbound_control("flush_bogus")
        self._unbound_control("flush_negative")

    # ---------------------------------------------------------- ACME tools

    def pebble_roots(self) -> str:
        """PEM of Pebble's current issuing root and intermediate (they change
        at every Pebble start)."""
        return self._management_get("/roots/0") + self._management_get("/intermediates/0")

    def pebble_intermediate(self) -> str:
        """PEM of the intermediate that signs every certificate Pebble issues now.

        Pebble's alternate roots (``PEBBLE_ALTERNATE_ROOTS``) cross-sign this
        same intermediate key, so they give no second ``2 1 1`` record; only a
        new start (:meth:`restart_pebble`) makes a new intermediate key.
        """
        return self._management_get("/intermediates/0")

    def restart_pebble(self) -> str:
        """Restart Pebble on the same ports; return its new intermediate (PEM).

        Pebble keeps everything in memory: after a restart its root and
        intermediate are new, and every ACME account it knew is gone: certbot
        then fails with ``accountDoesNotExist`` until the account is removed
        from its config directory, after which it registers a new one by
        itself (``Deployment.forget_acme_account``).
        """
        assert self._pebble is not None, "the lab is not running"
        self._pebble.stop()
        self._pebble.start()
        self._pebble.wait_until(self._pebble_answers, self.start_timeout, "ACME directory")
        return self.pebble_intermediate()

    def rfc2136_ini(self, path: Path) -> Path:
        """Write certbot-dns-rfc2136 credentials for the lab (mode 0600)."""
        text = (
            f"dns_rfc2136_server = {LOOPBACK}\n"
            f"dns_rfc2136_port = {self.auth_port}\n"
            f"dns_rfc2136_name = {self.tsig_name}\n"
            f"dns_rfc2136_secret = {self.tsig_secret}\n"
            "dns_rfc2136_algorithm = HMAC-SHA256\n"
        )
        return pki.write_private(Path(path), text.encode("ascii"))

    @staticmethod
    def certbot_path() -> str:
        # The certbot of the running interpreter's environment (a venv's bin/).
        # sys.executable is not resolved: that would leave the venv.
        beside = Path(sys.executable).parent / "certbot"
        if beside.exists():
            return str(beside)
        found = shutil.which("certbot")
        if found is None:
            raise LabError(f"certbot not found beside {sys.executable} nor on PATH")
        return found

    def certbot_cmd(self, config_dir: Path, *args: str) -> list[str]:
        """A certbot command line against Pebble, with its config, work and
        logs directories side by side (``work`` and ``logs`` next to
        ``config_dir``). Add ``--no-random-sleep-on-renew`` for ``renew``."""
        config_dir = Path(config_dir)
        base = config_dir.parent
        return [
            self.certbot_path(),
            *args,
            "--config-dir",
            str(config_dir),
            "--work-dir",
            str(base / "work"),
            "--logs-dir",
            str(base / "logs"),
            "--server",
            self.acme_url,
            "--non-interactive",
            "--agree-tos",
            "--email",
            self.email,
            "--no-eff-email",
        ]

    def certbot_env(self) -> dict[str, str]:
        """Environment for certbot: trusts Pebble's HTTPS API, no proxies."""
        env = _no_proxy_env()
        env["REQUESTS_CA_BUNDLE"] = str(self.ca_bundle)
        return env

    def run_certbot(
        self, config_dir: Path, *args: str, timeout: float = 180.0
    ) -> subprocess.CompletedProcess[str]:
        """Run certbot_cmd(config_dir, *args) with certbot_env(); output captured."""
        return subprocess.run(
            self.certbot_cmd(config_dir, *args),
            env=self.certbot_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # ------------------------------------------------------------ internals

    def _prepare(self) -> None:
        for directory in (self.authority.directory, self.unbound_dir, self.pebble_dir):
            directory.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        if not self.auth_port:
            self.auth_port = free_port(taken, udp=True)
            self.resolver_port = free_port(taken, udp=True)
            self.acme_port = free_port(taken)
            self.pebble_management_port = free_port(taken)
            self.pebble_http_port = free_port(taken)
            self.pebble_tls_port = free_port(taken)
        self.authority.prepare()
        self._write_pebble_files()

    def zone_text(self, zone: str | None = None) -> str:
        """The zone every authoritative server starts from (unsigned): the
        lab's own, or an extra one (its apex and name server only)."""
        ttl = self.record_ttl
        zone = zone or self.zone
        hosts = f"mail    IN A    {LOOPBACK}\nwww     IN A    {LOOPBACK}\n"
        # SOA TTL and minimum equal to the record TTL: negative answers (a TLSA
        # not yet published) are cached no longer than positive ones.
        return f"""\
$ORIGIN {zone}
$TTL {ttl}
@       {ttl} IN SOA ns1.{zone} hostmaster.{zone} ( 1 60 10 3600 {ttl} )
@       IN NS   ns1.{zone}
ns1     IN A    {LOOPBACK}
{hosts if zone == self.zone else ""}"""

    def zone_signed(self) -> bool:
        """Does the authoritative server serve every zone's DNSKEY set, signed?"""
        return all(self._signed(zone) for zone in self.zones)

    def _signed(self, zone: str) -> bool:
        response = self.auth_query(zone, "DNSKEY", timeout=0.5)
        if response.rcode() != dns.rcode.NOERROR:
            return False
        dnskey = dns.rdatatype.DNSKEY
        return (
            _find(response, zone, dnskey) is not None
            and _find(response, zone, dns.rdatatype.RRSIG, covers=dnskey) is not None
        )

    def _write_trust_anchor(self) -> None:
        lines: list[str] = []
        for zone in self.zones:
            response = self.auth_query(zone, "DNSKEY")
            keys = _find(response, zone, dns.rdatatype.DNSKEY)
            if keys is None:
                raise LabError(f"{self.authority.kind} served no DNSKEY of {zone}")
            origin = dns.name.from_text(zone)
            anchors = [
                f"{zone} IN DS {dns.dnssec.make_ds(origin, key, 'SHA256')}"
                for key in keys
                if key.flags & 0x0001  # SEP: the key (CSK/KSK) a DS points at
            ]
            if not anchors:
                raise LabError(f"{self.authority.kind}'s DNSKEY set of {zone} has no SEP key")
            lines += anchors
        self.trust_anchor_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_unbound_conf(self) -> None:
        d = self.unbound_dir
        control_socket = d / "control.sock"
        if len(str(control_socket)) < 100:  # sun_path holds 108 bytes
            self.unbound_control = str(control_socket)
        else:
            taken = {self.auth_port, self.resolver_port, self.acme_port}
            self.unbound_control = f"{LOOPBACK}@{free_port(taken)}"
        stubs = "\n".join(
            f'stub-zone:\n    name: "{zone}"\n    stub-addr: {LOOPBACK}@{self.auth_port}\n'
            for zone in self.zones
        )
        control = (
            f'    control-interface: "{self.unbound_control}"'
            if self.unbound_control.startswith("/")
            else "    control-interface: {}\n    control-port: {}".format(
                *self.unbound_control.split("@")
            )
        )
        conf = f"""\
server:
    verbosity: 1
    val-log-level: 2
    # Every query is logged: tests count the questions a command sends.
    log-queries: yes
    use-syslog: no
    logfile: "{d}/unbound.log"
    log-time-ascii: yes
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    num-threads: 1
    interface: {LOOPBACK}
    port: {self.resolver_port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    # Queries leave from 127.0.0.1 only: the kernel cannot route them off
    # the machine even if a name outside the lab were asked.
    outgoing-interface: {LOOPBACK}
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor-file: "{self.trust_anchor_file}"
    # test. is a built-in NXDOMAIN zone of Unbound's.
    local-zone: "test." nodefault
    cache-max-ttl: 86400
    # Deterministic caching for the tests: no answers synthesised from
    # cached NSEC, no expired or prefetched answers, and a server that
    # stopped answering (stop_authority) is tried again at once after restart.
    aggressive-nsec: no
    prefetch: no
    serve-expired: no
    val-bogus-ttl: {self.record_ttl}
    infra-host-ttl: 5
    infra-keep-probing: yes
    qname-minimisation: no
    trust-anchor-signaling: no
    ede: yes

# The lab's zones are served by the lab's authoritative server ...
{stubs}
# ... and so is everything else, instead of the Internet's roots: the server
# refuses it and the resolver answers SERVFAIL, without a packet leaving the
# machine.
stub-zone:
    name: "."
    stub-addr: {LOOPBACK}@{self.auth_port}
    stub-prime: no

remote-control:
    control-enable: yes
{control}
    control-use-cert: no
"""
        self.unbound_conf.write_text(conf, encoding="utf-8")

    def _unbound_daemon(self) -> Daemon:
        return Daemon(
            "unbound",
            [find_tool("unbound"), "-d", "-c", str(self.unbound_conf)],
            self.unbound_dir / "unbound.out",
            logs=[self.unbound_dir / "unbound.log"],
            cwd=self.unbound_dir,
        )

    def _resolver_validates(self) -> bool:
        response = self.resolver_query(self.zone, "SOA", timeout=0.5)
        return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AD)

    def _unbound_control(self, *command: str) -> str:
        result = subprocess.run(
            [find_tool("unbound-control"), "-c", str(self.unbound_conf), *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0 or result.stdout.startswith("error"):
            raise LabError(
                f"unbound-control {' '.join(command)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _write_pebble_files(self) -> None:
        ca_key, ca_cert = pki.make_ca("dane lab Pebble API CA")
        key, cert = pki.make_leaf(["localhost", LOOPBACK], (ca_key, ca_cert))
        self.ca_bundle.write_bytes(pki.cert_pem(ca_cert))
        cert_file = self.pebble_dir / "api-cert.pem"
        key_file = self.pebble_dir / "api-key.pem"
        cert_file.write_bytes(pki.cert_pem(cert))
        pki.write_private(key_file, pki.key_pem(key))
        config: dict[str, object] = {
            "listenAddress": f"{LOOPBACK}:{self.acme_port}",
            "managementListenAddress": f"{LOOPBACK}:{self.pebble_management_port}",
            "certificate": str(cert_file),
            "privateKey": str(key_file),
            # Only used by HTTP-01 / TLS-ALPN-01 checks; the lab uses DNS-01.
            "httpPort": self.pebble_http_port,
            "tlsPort": self.pebble_tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.cert_validity is not None:
            config["certificateValidityPeriod"] = self.cert_validity
        self.pebble_conf.write_text(json.dumps({"pebble": config}, indent=2), encoding="utf-8")

    def _pebble_daemon(self) -> Daemon:
        env = _no_proxy_env()
        env.update(
            PEBBLE_VA_NOSLEEP="1",  # no random 0-15 s pause per validation
            PEBBLE_WFE_NONCEREJECT="0",  # no random badNonce errors
            PEBBLE_AUTHZREUSE="0",  # every order really does its DNS-01 challenge
        )
        return Daemon(
            "pebble",
            [
                find_tool("pebble"),
                "-config",
                str(self.pebble_conf),
                "-dnsserver",
                f"{LOOPBACK}:{self.auth_port}",
            ],
            self.pebble_dir / "pebble.log",
            env=env,
            cwd=self.pebble_dir,
        )

    def _https_get(self, url: str, timeout: float) -> bytes:
        # No proxies from the environment: Pebble is on 127.0.0.1.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=str(self.ca_bundle))
            ),
        )
        with opener.open(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body

    def _pebble_answers(self) -> bool:
        return b"newOrder" in self._https_get(self.acme_url, timeout=1)

    def _management_get(self, path: str) -> str:
        return self._https_get(self.pebble_management_url + path, timeout=5).decode("ascii")


def _query(name: str, rdtype: str, address: str, port: int, timeout: float) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    response = dns.query.udp(query, address, port=port, timeout=timeout)
    if response.flags & dns.flags.TC:
        response = dns.query.tcp(query, address, port=port, timeout=timeout)
    return response


def _find(
    response: dns.message.Message,
    name: str,
    rdtype: dns.rdatatype.RdataType,
    covers: dns.rdatatype.RdataType = dns.rdatatype.NONE,
) -> dns.rrset.RRset | None:
    owner = dns.name.from_text(name)
    for rrset in response.answer:
        if rrset.name == owner and rrset.rdtype == rdtype and rrset.covers == covers:
            return rrset
    return None
