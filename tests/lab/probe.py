"""A DANE client's view: validated TLSA records, then a real TLS handshake.

``dane_check`` does what a DANE-aware SMTP client does: it asks a validating
resolver for the TLSA RRset (an answer without AD is not usable) and
verifies the server's certificate against every record of it with
``openssl s_client -dane_tlsa_rrdata``, over plain TLS or, as a sending MTA
does, after SMTP STARTTLS (``starttls="smtp"``). ``Prober`` repeats that in
the background so a test can show that no client ever saw a mismatch.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
from dns.rdtypes.tlsabase import TLSABase

# Messages that openssl prints for the failures worth naming, most specific
# first.
_OPENSSL_REASONS = (
    "no matching DANE TLSA records",
    "DANE TLSA authentication failed",
    "Connection refused",
    "certificate has expired",
    "unable to get local issuer certificate",
)

# What openssl prints when STARTTLS itself goes wrong, and what it means.
_STARTTLS_REASONS = (
    ("Didn't find STARTTLS in server response", "server did not offer STARTTLS"),
    # The server answered STARTTLS with an error (e.g. 454) and openssl
    # started TLS anyway: the server's next reply is plain text.
    ("wrong version number", "server refused STARTTLS (no TLS after the STARTTLS reply)"),
)

# The EHLO name openssl's SMTP STARTTLS sends (its default is mail.example.com).
EHLO_NAME = "probe.dane.test"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    records: tuple[str, ...] = ()
    output: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Sample:
    time: float  # time.monotonic() when the check started
    ok: bool
    reason: str


def tlsa_rrdata(rdata: TLSABase) -> str:
    """A TLSA rdata as openssl's -dane_tlsa_rrdata wants it: "U S M HEX"."""
    return f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"


def query_tlsa(
    owner: str, resolver: tuple[str, int], *, timeout: float = 3.0
) -> tuple[tuple[str, ...] | None, str]:
    """The validated TLSA records at ``owner``, or None and the reason why not."""
    query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=True)
    query.flags |= dns.flags.RD
    address, port = resolver
    try:
        response = dns.query.udp(query, address, port=port, timeout=timeout)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, address, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError) as exc:
        return None, f"resolver unreachable: {exc!r}"
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        reason = dns.rcode.to_text(rcode)
        errors = getattr(response, "extended_errors", None)
        if callable(errors):
            reason += "".join(f" (EDE {e.code}: {e.text})" for e in errors())
        return None, reason
    if not response.flags & dns.flags.AD:
        return None, "no AD"
    rrsets = [r for r in response.answer if r.rdtype == dns.rdatatype.TLSA]
    if not rrsets or not any(len(r) for r in rrsets):
        return None, "no TLSA records"
    return tuple(sorted(tlsa_rrdata(rd) for rrset in rrsets for rd in rrset)), "ok"


def dane_check(
    host: str,
    port: int,
    resolver: tuple[str, int],
    owner: str,
    *,
    address: str = "127.0.0.1",
    timeout: float = 10.0,
    starttls: str | None = None,
) -> ProbeResult:
    """Check that the TLS service at ``address``:``port`` matches the
    validated TLSA records at ``owner`` (e.g. ``_25._tcp.mail.dane.test.``).

    ``starttls`` is a protocol of ``openssl s_client -starttls`` ("smtp"):
    the handshake then follows the protocol's STARTTLS, as a DANE sender
    talks to port 25; None is TLS from the first byte.
    """
    records, reason = query_tlsa(owner, resolver, timeout=min(timeout, 3.0))
    if records is None:
        return ProbeResult(False, reason)
    openssl = shutil.which("openssl") or "openssl"
    argv = [openssl, "s_client", "-connect", f"{address}:{port}"]
    if starttls is not None:
        argv += ["-starttls", starttls, "-name", EHLO_NAME]
    argv += ["-servername", host, "-dane_tlsa_domain", host]
    for record in records:
        argv += ["-dane_tlsa_rrdata", record]
    argv += ["-verify_return_error", "-brief"]
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"openssl timed out after {timeout} s", records)
    output = result.stdout + result.stderr
    if result.returncode == 0 and "Verification: OK" in output:
        matched = next(
            (line.strip() for line in output.splitlines() if "DANE TLSA" in line), "verified"
        )
        return ProbeResult(True, matched, records, output)
    reason = _openssl_reason(output, result.returncode, starttls=starttls is not None)
    return ProbeResult(False, reason, records, output)


def _openssl_reason(output: str, returncode: int, *, starttls: bool = False) -> str:
    if starttls:
        for known, meaning in _STARTTLS_REASONS:
            if known in output:
                return meaning
    for known in _OPENSSL_REASONS:
        if known in output:
            return known
    for line in output.splitlines():
        if "verify error" in line or "error:" in line:
            return line.strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else f"openssl exited with status {returncode}"


class Prober:
    """Run ``dane_check`` every ``interval_ms`` in a background thread
    (after STARTTLS when ``starttls`` names a protocol, e.g. "smtp")."""

    def __init__(
        self,
        host: str,
        port: int,
        resolver: tuple[str, int],
        owner: str,
        *,
        interval_ms: int = 300,
        address: str = "127.0.0.1",
        starttls: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.resolver = resolver
        self.owner = owner
        self.interval = interval_ms / 1000.0
        self.address = address
        self.starttls = starttls
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="dane-prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the check in progress (so the last sample is complete)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                result = dane_check(
                    self.host,
                    self.port,
                    self.resolver,
                    self.owner,
                    address=self.address,
                    starttls=self.starttls,
                )
                sample = Sample(began, result.ok, result.reason)
            except Exception as exc:  # a probe error is a failed sample, not a dead prober
                sample = Sample(began, False, f"probe error: {exc!r}")
            with self._lock:
                self._samples.append(sample)
            self._stopping.wait(max(0.0, self.interval - (time.monotonic() - began)))

    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def successes(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]
