"""``certbot-dane verify``: does DNS vouch for what the service presents?

It checks the promise from the outside, the way a DANE client does: the
TLSA RRset must come back from a validating resolver with the AD bit, the
certificate the dane directory serves must match at least one record of it
at every owner name, and so must the chain a live endpoint presents. The
endpoint is reached with verification off: the point is to fetch the chain
the service really sends and judge it by DANE alone, not by the WebPKI.
"""
from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509

from . import danedir, tlsa
from .lookup import Answer, describe_answer, resolve_all
from .observe import Address, ObserveError
from .state import LineageFile
from .tlsa import load_pem_chain

CONNECT_TIMEOUT = 10.0
#: ``_ssl.ENCODING_DER``: the format argument of the private chain objects.
_ENCODING_DER = 2
STARTTLS_PROTOCOLS = ("smtp", "imap", "pop3", "xmpp")


class EndpointError(Exception):
    """The endpoint did not answer, or not the way the protocol says."""


class VerifyFailure(Exception):
    """The lineage does not verify; the message is the one-line reason."""


def matches(record: tlsa.Record, chain: list[x509.Certificate]) -> bool:
    """Does ``record`` match the chain (leaf first) under RFC 6698 rules?

    Usages 1 and 3 constrain the leaf; usages 0 and 2 constrain a CA
    certificate of the chain the server sends.
    """
    if record.selector not in tlsa.SELECTORS or record.mtype not in tlsa.MATCHING_TYPES:
        return False
    candidates = chain[:1] if record.usage in (1, 3) else chain[1:]
    return any(
        tlsa.association(cert, record.selector, record.mtype) == record.data
        for cert in candidates
    )


def matching(records: Iterable[tlsa.Record], chain: list[x509.Certificate]) -> list[tlsa.Record]:
    return sorted(r for r in records if matches(r, chain))


# Endpoints ----------------------------------------------------------------


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; the port is required."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--connect {text!r}: expected HOST:PORT, e.g. 127.0.0.1:25")
    return host, int(port)


def _reply(reader: BinaryIO, where: str) -> tuple[int, list[str]]:
    """One SMTP reply (possibly multi-line): its code and the text lines."""
    lines: list[str] = []
    while True:
        raw = reader.readline(4096)
        if not raw:
            raise EndpointError(f"{where} closed the connection during the SMTP dialogue")
        line = raw.decode("ascii", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit():
            raise EndpointError(f"{where} does not speak SMTP (got {line[:40]!r})")
        lines.append(line[4:])
        if len(line) == 3 or line[3] != "-":
            return int(line[:3]), lines


def _smtp_starttls(sock: socket.socket, where: str) -> None:
    """Banner, EHLO, STARTTLS: leave the socket ready for the TLS handshake."""
    reader = sock.makefile("rb", buffering=0)
    try:
        code, _ = _reply(reader, where)
        if code != 220:
            raise EndpointError(f"{where} greeted with {code}, not 220")
        local = sock.getsockname()[0]
        literal = f"[IPv6:{local}]" if ":" in local else f"[{local}]"
        sock.sendall(f"EHLO {literal}\r\n".encode("ascii"))
        code, lines = _reply(reader, where)
        if code != 250:
            raise EndpointError(f"{where} answered EHLO with {code}")
        if not any(line.upper().split(" ")[0] == "STARTTLS" for line in lines[1:]):
            raise EndpointError(f"{where} does not offer STARTTLS")
        sock.sendall(b"STARTTLS\r\n")
        code, _ = _reply(reader, where)
        if code != 220:
            raise EndpointError(f"{where} answered STARTTLS with {code}")
    finally:
        reader.close()


def _line(reader: BinaryIO, where: str, protocol: str) -> str:
    raw = reader.readline(4096)
    if not raw:
        raise EndpointError(f"{where} closed the connection during the {protocol} dialogue")
    return raw.decode("ascii", "replace").rstrip("\r\n")


def _imap_starttls(sock: socket.socket, where: str) -> None:
    """Greeting, ``a1 STARTTLS`` (RFC 9051 section 6.2.1)."""
    reader = sock.makefile("rb", buffering=0)
    try:
        greeting = _line(reader, where, "IMAP")
        if not greeting.startswith("* OK"):
            raise EndpointError(f"{where} does not greet like an IMAP server ({greeting[:40]!r})")
        sock.sendall(b"a1 STARTTLS\r\n")
        while True:
            line = _line(reader, where, "IMAP")
            if line.startswith("a1 "):
                break
        if not line.upper().startswith("A1 OK"):
            raise EndpointError(f"{where} refused STARTTLS: {line[3:60]!r}")
    finally:
        reader.close()


def _pop3_starttls(sock: socket.socket, where: str) -> None:
    """Greeting, ``STLS`` (RFC 2595 section 4)."""
    reader = sock.makefile("rb", buffering=0)
    try:
        greeting = _line(reader, where, "POP3")
        if not greeting.startswith("+OK"):
            raise EndpointError(f"{where} does not greet like a POP3 server ({greeting[:40]!r})")
        sock.sendall(b"STLS\r\n")
        answer = _line(reader, where, "POP3")
        if not answer.startswith("+OK"):
            raise EndpointError(f"{where} refused STLS: {answer[:60]!r}")
    finally:
        reader.close()


def _xmpp_starttls(sock: socket.socket, where: str, domain: str | None) -> None:
    """Stream header, ``<starttls/>``, ``<proceed/>`` (RFC 6120 section 5.4)."""
    to = f" to='{domain}'" if domain else ""
    sock.sendall(
        (
            f"<?xml version='1.0'?><stream:stream{to} version='1.0' xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams'>"
        ).encode()
    )
    received = b""
    while b"</stream:features>" not in received:
        chunk = sock.recv(4096)
        if not chunk or len(received) > 65536:
            raise EndpointError(f"{where} sent no XMPP stream features")
        received += chunk
    if b"urn:ietf:params:xml:ns:xmpp-tls" not in received:
        raise EndpointError(f"{where} does not offer STARTTLS")
    sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    answer = b""
    while b">" not in answer:
        chunk = sock.recv(1)
        if not chunk:
            raise EndpointError(f"{where} closed the connection during the XMPP dialogue")
        answer += chunk
    if b"proceed" not in answer:
        raise EndpointError(f"{where} refused STARTTLS ({answer[:60]!r})")


def _starttls(sock: socket.socket, where: str, protocol: str, domain: str | None) -> None:
    if protocol == "smtp":
        _smtp_starttls(sock, where)
    elif protocol == "imap":
        _imap_starttls(sock, where)
    elif protocol == "pop3":
        _pop3_starttls(sock, where)
    elif protocol == "xmpp":
        _xmpp_starttls(sock, where, domain)
    else:
        raise EndpointError(f"STARTTLS for {protocol!r} is not supported")


def _dialogue(
    sock: socket.socket, where: str, protocol: str, domain: str | None, timeout: float
) -> None:
    """The STARTTLS dialogue; a server that stalls or drops it is named as such,
    not as a failed handshake (none has started yet)."""
    try:
        _starttls(sock, where, protocol, domain)
    except TimeoutError:
        raise EndpointError(
            f"{where}: no answer within {timeout:g} s during the {protocol.upper()} "
            "STARTTLS dialogue"
        ) from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise EndpointError(
            f"{where}: the {protocol.upper()} STARTTLS dialogue failed: {reason}"
        ) from None


def _peer_chain(tls: ssl.SSLSocket) -> list[x509.Certificate]:
    """The chain as sent by the server, leaf first.

    Python 3.13 has ``get_unverified_chain``; 3.10 to 3.12 have it on the
    underlying ``_sslobj`` only. Without either, the leaf alone is returned.
    """
    getter = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        items: Any = getter() or []
        ders = [i if isinstance(i, bytes) else i.public_bytes(_ENCODING_DER) for i in items]
        if ders:
            return [x509.load_der_x509_certificate(d) for d in ders]
    leaf = tls.getpeercert(binary_form=True)
    if not leaf:
        raise EndpointError("the server sent no certificate")
    return [x509.load_der_x509_certificate(leaf)]


def fetch_chain(
    host: str,
    port: int,
    server_name: str | None,
    starttls: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> list[x509.Certificate]:
    """Connect, optionally negotiate STARTTLS, hand-shake and return the chain."""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise EndpointError(f"{where} does not answer: {reason}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        if starttls:
            _dialogue(sock, where, starttls, server_name, timeout)
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            return _peer_chain(tls)
    except (OSError, ssl.SSLError, ValueError) as err:
        reason = "timed out" if isinstance(err, TimeoutError) else str(err)
        raise EndpointError(f"{where}: TLS handshake failed: {reason}") from None
    finally:
        sock.close()


# One lineage --------------------------------------------------------------


@dataclass
class Verdict:
    """The outcome for one lineage; ``reason`` is set exactly when it failed."""

    lineage: str
    resolver: str
    served: int | None = None
    owners: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoint: str | None = None
    endpoint_same_as_served: bool | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None

    def as_json(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "ok": self.ok,
            "reason": self.reason,
            "resolver": self.resolver,
            "served": self.served,
            "owners": self.owners,
            "endpoint": self.endpoint,
            "endpoint_same_as_served": self.endpoint_same_as_served,
            "notes": self.notes,
        }


def served_chain(data: LineageFile) -> tuple[int | None, Path, list[x509.Certificate]]:
    """The version the links serve and its chain, read through the links."""
    directory = Path(data.settings.directory)
    try:
        number = danedir.served_version(directory, data.lineage)
    except danedir.DaneDirError as err:
        raise VerifyFailure(str(err)) from None
    path = danedir.lineage_dir(directory, data.lineage) / "fullchain.pem"
    try:
        chain = load_pem_chain(path.read_bytes())
    except OSError as err:
        raise VerifyFailure(f"cannot read the served certificate {path}: {err.strerror}") from None
    except ValueError as err:
        raise VerifyFailure(f"cannot read the served certificate {path}: {err}") from None
    return number, path, chain


def _short(records: Iterable[tlsa.Record]) -> list[str]:
    return [f"{r.usage} {r.selector} {r.mtype} {r.data}" for r in sorted(records)]


def verify_lineage(
    data: LineageFile,
    resolver: Address,
    connect: tuple[str, int] | None = None,
    starttls: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Verdict:
    """Check one lineage; never raises for a mismatch, only sets ``reason``."""
    verdict = Verdict(data.lineage, f"{resolver[0]}:{resolver[1]}")
    try:
        _verify(verdict, data, resolver, connect, starttls, timeout)
    except VerifyFailure as failure:
        verdict.reason = str(failure)
    return verdict


def _verify(
    verdict: Verdict,
    data: LineageFile,
    resolver: Address,
    connect: tuple[str, int] | None,
    starttls: str | None,
    timeout: float,
) -> None:
    number, path, chain = served_chain(data)
    verdict.served = number
    targets = tlsa.parse_specs(data.settings.targets)
    try:
        expected = tlsa.records_for(targets, chain[0], chain[1] if len(chain) > 1 else None)
    except ValueError as err:
        raise VerifyFailure(f"served certificate {path}: {err}") from None
    owners = sorted({r.owner for r in expected})
    if not owners:
        raise VerifyFailure(f"served certificate {path} has no DNS name to look TLSA up for")
    try:
        answers = resolve_all(resolver, owners)
    except ObserveError as err:
        raise VerifyFailure(str(err)) from None
    for owner in owners:
        answer = answers[owner]
        verdict.owners[owner] = {
            "rcode": answer.rcode,
            "ad": answer.ad,
            "records": _short(answer.records),
            "served_matches": _short(matching(answer.validated, chain)),
        }
    _note_others(verdict, data, answers)
    for owner in owners:
        problem = describe_answer(answers[owner], resolver)
        if problem:
            raise VerifyFailure(problem)
    for owner in owners:
        if not verdict.owners[owner]["served_matches"]:
            count = len(answers[owner].records)
            raise VerifyFailure(
                f"the served certificate (version {number}, {path}) matches none of the "
                f"{count} TLSA record(s) at {owner}"
            )
    if connect is not None:
        _verify_endpoint(verdict, answers, chain, connect, starttls, timeout)


def _note_others(verdict: Verdict, data: LineageFile, answers: dict[str, Answer]) -> None:
    """Records at the owners that this lineage does not publish: never touched, but said.

    They are another host's, published by hand, or left by an earlier tool;
    a client accepts the certificate if any record matches, so they are no
    error, but an operator cleaning up wants to see them.
    """
    s = data.rollover
    where = s.alias_map()
    ours = {(r.owner, r.usage, r.selector, r.mtype, r.data) for r in s.wanted() | s.owned}
    for owner, answer in answers.items():
        target = where.get(owner, owner)
        others = [
            r for r in answer.records
            if (target, r.usage, r.selector, r.mtype, r.data) not in ours
        ]
        if others:
            verdict.owners[owner]["other_records"] = _short(others)
            verdict.notes.append(
                f"{owner} also holds {len(others)} record(s) this lineage does not publish "
                "(another host's, or published by hand); certbot-dane never deletes them"
            )


def _endpoint_owners(answers: dict[str, Answer], port: int) -> list[str]:
    """The owners for the endpoint's port, or all when none has that port.

    A service reached on a port that differs from the TLSA port (a port
    forward, a test instance) still has to match the lineage's records.
    """
    same = [o for o in answers if o.split(".", 1)[0] == f"_{port}"]
    return same or sorted(answers)


def _verify_endpoint(
    verdict: Verdict,
    answers: dict[str, Answer],
    served: list[x509.Certificate],
    connect: tuple[str, int],
    starttls: str | None,
    timeout: float,
) -> None:
    host, port = connect
    where = f"{host}:{port}" + (f" (STARTTLS {starttls})" if starttls else "")
    verdict.endpoint = where
    names = tlsa.cert_names(served[0])
    server_name = names[0] if names else None
    try:
        chain = fetch_chain(host, port, server_name, starttls, timeout)
    except EndpointError as err:
        raise VerifyFailure(f"endpoint {err}") from None
    verdict.endpoint_same_as_served = chain[0] == served[0]
    if not verdict.endpoint_same_as_served:
        verdict.notes.append(
            f"{where} presents a certificate other than the dane directory's "
            "(a reload may be due)"
        )
    for owner in _endpoint_owners(answers, port):
        found = matching(answers[owner].validated, chain)
        verdict.owners[owner]["endpoint_matches"] = _short(found)
        if not found:
            raise VerifyFailure(
                f"the certificate {where} presents matches none of the "
                f"{len(answers[owner].records)} TLSA record(s) at {owner}"
            )


def summary(verdict: Verdict) -> str:
    """The one line printed for a lineage that verified."""
    parts = []
    for owner, info in verdict.owners.items():
        text = f"{owner} {len(info['records'])} record(s) with AD"
        text += f", served version {verdict.served} matches {len(info['served_matches'])}"
        if "endpoint_matches" in info:
            text += f", {verdict.endpoint} matches {len(info['endpoint_matches'])}"
        parts.append(text)
    return f"{verdict.lineage}: ok: " + "; ".join(parts)
