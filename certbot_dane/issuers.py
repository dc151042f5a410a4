"""The issuer bundle: CA certificates whose usage-2 records stay published ahead of time.

A CA such as Let's Encrypt issues from several intermediates, picked at
random per certificate. With ``--dane-issuers FILE`` the record of every
intermediate in the bundle (for each usage-2 spec of ``--dane-tlsa``) is
wanted at all times, like the served version's records: published, proven
live, and never retired while the certificate is in the bundle. A renewal
that chains to a bundled intermediate then matches a record every cache
already holds, so the links move at once, new key or not.

The trade-off: a ``2 x x`` record accepts any certificate that CA issues for
the name, not only this host's.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from . import tlsa


class IssuerError(ValueError):
    """The bundle cannot be used; the message names the file and the fix."""


def read_bundle(path: str | Path) -> tuple[str, list[x509.Certificate]]:
    """(SHA-256 of the file, its CA certificates); IssuerError if it is not usable."""
    where = f"--dane-issuers {path}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise IssuerError(
            f"{where}: no such file; give the PEM bundle of the CA's intermediates"
        ) from None
    except OSError as err:
        raise IssuerError(f"{where}: cannot read it ({err.strerror})") from None
    return hashlib.sha256(data).hexdigest(), parse_bundle(data, where)


def parse_bundle(data: bytes, where: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise IssuerError(
            f"{where}: no PEM certificate in it; put the CA's intermediate certificates in "
            "it, in PEM form"
        )
    try:
        certs = tlsa.load_pem_chain(data)
    except ValueError:
        raise IssuerError(f"{where}: a PEM certificate in it is damaged") from None
    for index, cert in enumerate(certs, 1):
        if not is_ca(cert):
            raise IssuerError(
                f"{where}: certificate {index} ({cert.subject.rfc4514_string()}) is not a CA "
                "certificate; the bundle holds the CA's intermediates, not server certificates"
            )
    return certs


def is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.ca)


def records(
    targets: Iterable[tlsa.Target], names: Iterable[str], certs: Iterable[x509.Certificate]
) -> frozenset[tlsa.Record]:
    """The usage-2 records of every bundled certificate, at each usage-2 spec's owners."""
    hosts = sorted(set(names))
    found: set[tlsa.Record] = set()
    for target in targets:
        if target.usage != 2:
            continue
        for cert in certs:
            data = tlsa.association(cert, target.selector, target.mtype)
            for owner in target.owners(hosts):
                found.add(tlsa.Record(owner, 2, target.selector, target.mtype, data))
    return frozenset(found)
