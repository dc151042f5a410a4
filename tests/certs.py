"""Certificates and certbot-shaped lineages on disk, for tests without ACME."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KINDS = ("cert", "chain", "fullchain", "privkey")


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TinyCA:
    """A root that signs leaf certificates directly (the chain is the root)."""

    def __init__(self) -> None:
        self.key = new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("tiny test CA"))
            .issuer_name(_name("tiny test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, names: list[str], key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class FakeLineage:
    """archive/NAME/*N.pem and live/NAME/*.pem links, laid out as certbot does."""

    def __init__(self, config_dir: Path, name: str, names: list[str]) -> None:
        self.config_dir = Path(config_dir)
        self.name = name
        self.names = names
        self.ca = TinyCA()
        self.archive = self.config_dir / "archive" / name
        self.live = self.config_dir / "live" / name
        self.version = 0
        self.key: ec.EllipticCurvePrivateKey | None = None

    def renew(self, reuse_key: bool = False, point_live: bool = True) -> int:
        """Write version N+1 (a new key unless reused) and move live/ to it."""
        if self.key is None or not reuse_key:
            self.key = new_key()
        self.version += 1
        n = self.version
        cert = self.ca.issue(self.names, self.key)
        self.archive.mkdir(parents=True, exist_ok=True)
        files = {
            "cert": pem(cert),
            "chain": pem(self.ca.cert),
            "fullchain": pem(cert) + pem(self.ca.cert),
            "privkey": key_pem(self.key),
        }
        for kind, data in files.items():
            path = self.archive / f"{kind}{n}.pem"
            path.write_bytes(data)
            if kind == "privkey":
                path.chmod(0o600)
        if point_live:
            self.point_live(n)
        return n

    def point_live(self, n: int) -> None:
        self.live.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            link = self.live / f"{kind}.pem"
            tmp = self.live / f".{kind}.tmp"
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(os.path.relpath(self.archive / f"{kind}{n}.pem", self.live), tmp)
            os.replace(tmp, link)

    def prune(self, keep_from: int) -> None:
        """Delete archive versions older than ``keep_from`` (certbot's truncate)."""
        for n in range(1, keep_from):
            for kind in KINDS:
                (self.archive / f"{kind}{n}.pem").unlink(missing_ok=True)
