"""``certbot-dane verify``: DNS (AD required) against the dane directory and live endpoints."""
from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from certbot_dane import verify
from tests.cli_support import CliDeployment, host_for, one_error_line
from tests.lab import pki
from tests.lab.lab import Lab
from tests.lab.service import DaneService

pytestmark = pytest.mark.lab


class SmtpStandIn:
    """Just enough of an SMTP server to reach TLS: banner, EHLO, STARTTLS.

    It serves ``directory``/combined.pem, read at each connection like the
    lab's DaneService. ``offer_starttls`` False leaves STARTTLS out of EHLO.
    """

    def __init__(self, directory: Path, offer_starttls: bool = True) -> None:
        self.directory = directory
        self.offer_starttls = offer_starttls
        self.ehlo: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SmtpStandIn:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._session(conn)
                except (OSError, ssl.SSLError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb", buffering=0)
        conn.sendall(b"220 standin.dane.test ESMTP\r\n")
        self.ehlo.append(reader.readline().decode("ascii", "replace").strip())
        extensions = [b"PIPELINING", b"SIZE 10240000"]
        if self.offer_starttls:
            extensions.append(b"STARTTLS")
        reply = [b"250-standin.dane.test"] + [b"250-" + e for e in extensions[:-1]]
        conn.sendall(b"\r\n".join([*reply, b"250 " + extensions[-1]]) + b"\r\n")
        if reader.readline().strip().upper() != b"STARTTLS":
            return
        conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.directory / "combined.pem"))
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"250 after TLS\r\n")


@pytest.fixture
def dep(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> CliDeployment:
    dep = CliDeployment(lab, tmp_path, host_for(request, "vfy"))
    dep.issue()
    return dep


@pytest.fixture
def stranger(tmp_path: Path, dep: CliDeployment) -> Iterator[Path]:
    """A directory serving another certificate for the same name."""
    directory = tmp_path / "stranger"
    directory.mkdir()
    key, cert = pki.make_leaf([dep.host])
    (directory / "fullchain.pem").write_bytes(pki.cert_pem(cert))
    pki.write_private(directory / "privkey.pem", pki.key_pem(key))
    pki.write_private(directory / "combined.pem", pki.key_pem(key) + pki.cert_pem(cert))
    yield directory


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_match(dep: CliDeployment) -> None:
    done = dep.cli("verify")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{dep.host}: ok: {dep.owner} 1 record(s) with AD")
    assert "served version 1 matches 1" in done.stdout
    done = dep.cli("verify", "--cert-name", dep.host, "--json")
    (verdict,) = json.loads(done.stdout)
    assert verdict["ok"] and verdict["reason"] is None and verdict["served"] == 1
    assert verdict["owners"][dep.owner]["ad"] is True


def test_records_of_others_at_the_owner_are_reported_not_failed(
    dep: CliDeployment, lab: Lab
) -> None:
    (ours,) = dep.authoritative_records()
    other = "3 1 1 " + "cd" * 32
    lab.publish(dep.owner, "TLSA", ours, other)
    done = dep.cli("verify", "--cert-name", dep.host)
    assert done.returncode == 0, done.stderr
    assert (
        f"{dep.host}: note: {dep.owner} also holds 1 record(s) this lineage does not publish"
        in done.stdout
    )
    done = dep.cli("verify", "--cert-name", dep.host, "--json")
    (verdict,) = json.loads(done.stdout)
    assert verdict["owners"][dep.owner]["other_records"] == [other]


def test_wrong_record_in_dns(dep: CliDeployment, lab: Lab) -> None:
    lab.publish(dep.owner, "TLSA", "3 1 1 " + "ab" * 32)
    done = dep.cli("verify", "--cert-name", dep.host)
    assert done.returncode == 1
    line = one_error_line(done)
    assert "the served certificate (version 1" in line
    assert f"matches none of the 1 TLSA record(s) at {dep.owner}" in line


def test_no_records(dep: CliDeployment, lab: Lab) -> None:
    lab.unpublish(dep.owner, "TLSA")
    done = dep.cli("verify")
    assert done.returncode == 1
    assert f"no TLSA records at {dep.owner}" in one_error_line(done)


def test_no_ad_from_a_non_validating_server(dep: CliDeployment, lab: Lab) -> None:
    # BIND is authoritative and never sets AD: exactly a non-validating resolver.
    done = dep.cli("verify", "--resolver", f"127.0.0.1:{lab.auth_port}")
    assert done.returncode == 1
    line = one_error_line(done)
    assert "no AD:" in line and dep.owner in line


def test_endpoint_serving_the_dane_directory(dep: CliDeployment) -> None:
    with DaneService(dep.dane_dir()) as service:
        done = dep.cli("verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{service.port}")
        assert service.handshakes >= 1
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{service.port} matches 1" in done.stdout
    assert "note:" not in done.stdout


def test_endpoint_with_another_certificate(dep: CliDeployment, stranger: Path) -> None:
    with DaneService(stranger) as service:
        done = dep.cli("verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{service.port}")
    assert done.returncode == 1
    line = one_error_line(done)
    assert f"the certificate 127.0.0.1:{service.port} presents matches none" in line


def test_smtp_starttls(dep: CliDeployment) -> None:
    with SmtpStandIn(dep.dane_dir()) as smtp:
        done = dep.cli(
            "verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{smtp.port}",
            "--starttls", "smtp",
        )
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{smtp.port} (STARTTLS smtp) matches 1" in done.stdout
    assert smtp.ehlo == ["EHLO [127.0.0.1]"]


def test_smtp_starttls_mismatch(dep: CliDeployment, stranger: Path) -> None:
    with SmtpStandIn(stranger) as smtp:
        done = dep.cli(
            "verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{smtp.port}",
            "--starttls", "smtp",
        )
    assert done.returncode == 1
    assert "(STARTTLS smtp) presents matches none" in one_error_line(done)


def test_smtp_without_starttls(dep: CliDeployment) -> None:
    with SmtpStandIn(dep.dane_dir(), offer_starttls=False) as smtp:
        done = dep.cli(
            "verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{smtp.port}",
            "--starttls", "smtp",
        )
    assert done.returncode == 1
    assert "does not offer STARTTLS" in one_error_line(done)


def test_endpoint_that_does_not_answer(dep: CliDeployment) -> None:
    before = dep.snapshot()
    port = closed_port()
    done = dep.cli("verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{port}")
    assert done.returncode == 1
    line = one_error_line(done)
    assert f"endpoint 127.0.0.1:{port} does not answer" in line
    assert dep.snapshot() == before


def test_plain_tls_to_an_smtp_port_fails_cleanly(dep: CliDeployment) -> None:
    with SmtpStandIn(dep.dane_dir()) as smtp:
        done = dep.cli(
            "verify", "--cert-name", dep.host, "--connect", f"127.0.0.1:{smtp.port}",
            "--timeout", "3",
        )
    assert done.returncode == 1
    assert "TLS handshake failed" in one_error_line(done)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connect", "127.0.0.1"], "expected HOST:PORT"),
        (["--starttls", "smtp"], "--starttls needs --connect"),
        (["--resolver", "resolver.example"], "--resolver: bad address"),
    ],
)
def test_bad_usage(dep: CliDeployment, args: list[str], message: str) -> None:
    done = dep.cli("verify", "--cert-name", dep.host, *args)
    assert done.returncode == 2
    assert message in one_error_line(done)


def test_matching_rules() -> None:
    ca = pki.make_ca("verify test CA")
    _, leaf = pki.make_leaf(["mx.example"], ca)
    chain = [leaf, ca[1]]
    from certbot_dane import tlsa

    for usage, subject in ((3, leaf), (2, ca[1])):
        for selector in (0, 1):
            for mtype in (0, 1, 2):
                data = tlsa.association(subject, selector, mtype)
                record = tlsa.Record("_25._tcp.mx.example.", usage, selector, mtype, data)
                assert verify.matches(record, chain)
    # Usage 3 never matches a CA certificate, usage 2 never the leaf.
    leaf_data = tlsa.association(leaf, 1, 1)
    assert not verify.matches(tlsa.Record("o.", 2, 1, 1, leaf_data), chain)
    assert not verify.matches(tlsa.Record("o.", 3, 1, 1, tlsa.association(ca[1], 1, 1)), chain)
    assert not verify.matches(tlsa.Record("o.", 3, 1, 7, leaf_data), chain)
