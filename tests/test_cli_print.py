"""``certbot-dane print``: zone-file lines checked against digests computed here."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certbot_dane.tlsa import load_pem_chain
from tests.certs import TinyCA, new_key, pem
from tests.cli_support import CliDeployment, host_for, one_error_line, run, spki_sha256
from tests.lab import pki
from tests.lab.lab import Lab


def records(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line and not line.startswith(";")]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """cert.pem, chain.pem and fullchain.pem for mx.example.org and smtp.example.org."""
    ca = TinyCA()
    leaf = ca.issue(["mx.example.org", "smtp.example.org"], new_key())
    (tmp_path / "cert.pem").write_bytes(pem(leaf))
    (tmp_path / "chain.pem").write_bytes(pem(ca.cert))
    (tmp_path / "fullchain.pem").write_bytes(pem(leaf) + pem(ca.cert))
    return tmp_path


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path / "config", tmp_path / "logs", "print", *args)


def der_sha256(path: Path, index: int = 0) -> str:
    cert = load_pem_chain(path.read_bytes())[index]
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def der_sha512(path: Path) -> str:
    cert = load_pem_chain(path.read_bytes())[0]
    return hashlib.sha512(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def openssl_spki_sha256(path: Path) -> str:
    pubkey = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-pubkey", "-noout"],
        capture_output=True, check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pubkey, capture_output=True, check=True,
    ).stdout
    return hashlib.sha256(der).hexdigest()


def test_certificate_file_with_default_spec(files: Path) -> None:
    done = cli(files, str(files / "cert.pem"))
    assert done.returncode == 0, done.stderr
    digest = spki_sha256(files / "cert.pem")
    assert digest == openssl_spki_sha256(files / "cert.pem")
    assert records(done.stdout) == [
        f"_25._tcp.mx.example.org. 3600 IN TLSA 3 1 1 {digest}",
        f"_25._tcp.smtp.example.org. 3600 IN TLSA 3 1 1 {digest}",
    ]
    assert done.stdout.splitlines()[0] == f"; {files / 'cert.pem'}"


def test_ust_items(files: Path) -> None:
    done = cli(
        files, "--ttl", "300",
        f"301:{files / 'cert.pem'}",
        f"211:443:{files / 'fullchain.pem'}",
        f"212:465:{files / 'cert.pem'}",  # the issuer comes from chain.pem beside it
    )
    assert done.returncode == 0, done.stderr
    leaf = der_sha256(files / "cert.pem")
    issuer_spki = spki_sha256(files / "chain.pem")
    chain = x509.load_pem_x509_certificate((files / "chain.pem").read_bytes())
    issuer_512 = hashlib.sha512(
        chain.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()
    assert records(done.stdout) == [
        f"_25._tcp.mx.example.org. 300 IN TLSA 3 0 1 {leaf}",
        f"_25._tcp.smtp.example.org. 300 IN TLSA 3 0 1 {leaf}",
        f"_443._tcp.mx.example.org. 300 IN TLSA 2 1 1 {issuer_spki}",
        f"_443._tcp.smtp.example.org. 300 IN TLSA 2 1 1 {issuer_spki}",
        f"_465._tcp.mx.example.org. 300 IN TLSA 2 1 2 {issuer_512}",
        f"_465._tcp.smtp.example.org. 300 IN TLSA 2 1 2 {issuer_512}",
    ]


def test_tlsa_option_with_a_host(files: Path) -> None:
    done = cli(files, "--tlsa", "311:25@mx.example.org,300:993", str(files / "fullchain.pem"))
    assert done.returncode == 0, done.stderr
    lines = records(done.stdout)
    assert f"_25._tcp.mx.example.org. 3600 IN TLSA 3 1 1 {spki_sha256(files / 'cert.pem')}" in lines
    assert not any(line.startswith("_25._tcp.smtp.") for line in lines)
    full = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
    raw = full.public_bytes(serialization.Encoding.DER).hex()
    assert f"_993._tcp.smtp.example.org. 3600 IN TLSA 3 0 0 {raw}" in lines


def test_json(files: Path) -> None:
    done = cli(files, "--json", str(files / "cert.pem"))
    items = json.loads(done.stdout)
    assert [i["owner"] for i in items] == ["_25._tcp.mx.example.org.", "_25._tcp.smtp.example.org."]
    assert items[0]["data"] == spki_sha256(files / "cert.pem")
    assert items[0]["line"] == records(cli(files, str(files / "cert.pem")).stdout)[0]


def ldns_dane(chain: Path, host: str, ust: str) -> str:
    """The record ldns-dane computes for the first certificate of ``chain``.

    ``-n``: the file is a CA certificate, whose name is not ``host``; ``-o 0``:
    the last certificate of the path it builds from the file, which is the
    first when the file holds one CA certificate.
    """
    done = subprocess.run(
        ["ldns-dane", "-n", "-o", "0", "-c", str(chain), "create", host, "25", *ust],
        capture_output=True, text=True, check=True,
    )
    return " ".join(done.stdout.split())


@pytest.mark.parametrize("ust", ["200", "201", "202", "210", "211", "212"])
def test_chain_file_hashes_the_ca_itself_as_ldns_dane_does(files: Path, ust: str) -> None:
    done = cli(files, f"{ust}:{files / 'chain.pem'}")
    assert done.returncode == 0, done.stderr
    # The owner names are those of the cert.pem beside chain.pem.
    assert records(done.stdout) == [
        ldns_dane(files / "chain.pem", host, ust)
        for host in ("mx.example.org", "smtp.example.org")
    ]


def test_chain_file_record_is_the_issuer_record_of_fullchain(files: Path) -> None:
    """chain.pem, fullchain.pem and cert.pem (chain.pem beside) give one usage 2 record."""
    outputs = [
        records(cli(files, f"211:{files / name}").stdout)
        for name in ("chain.pem", "fullchain.pem", "cert.pem")
    ]
    assert outputs[0] == outputs[1] == outputs[2]
    digest = openssl_spki_sha256(files / "chain.pem")
    assert outputs[0][0] == f"_25._tcp.mx.example.org. 3600 IN TLSA 2 1 1 {digest}"


def test_usage_3_on_a_ca_certificate_hashes_it(files: Path) -> None:
    done = cli(files, f"311:{files / 'chain.pem'}")
    assert done.returncode == 0, done.stderr
    digest = openssl_spki_sha256(files / "chain.pem")
    assert records(done.stdout) == [
        f"_25._tcp.mx.example.org. 3600 IN TLSA 3 1 1 {digest}",
        f"_25._tcp.smtp.example.org. 3600 IN TLSA 3 1 1 {digest}",
    ]
    assert done.stderr == ""


def test_ca_certificate_alone_needs_a_host(files: Path) -> None:
    (files / "alone").mkdir()
    ca = files / "alone" / "chain.pem"
    ca.write_bytes((files / "chain.pem").read_bytes())
    done = cli(files, f"211:{ca}")
    assert done.returncode == 2
    line = one_error_line(done)
    assert f"{ca}: its first certificate is a CA certificate, which names no host for 211:25" in (
        line
    )
    assert "name one with --tlsa 211:25@HOST and the bare file" in line
    assert done.stdout == ""
    done = cli(files, "--tlsa", "211:25@mx.example.org", str(ca))
    assert done.returncode == 0, done.stderr
    digest = openssl_spki_sha256(ca)
    assert records(done.stdout) == [f"_25._tcp.mx.example.org. 3600 IN TLSA 2 1 1 {digest}"]


def test_pki_ca_with_key_usage(tmp_path: Path) -> None:
    """The lab's CA (KeyUsage, SubjectKeyIdentifier, path length 0), by a host in the spec."""
    _, ca = pki.make_ca("print test CA")
    path = tmp_path / "ca.pem"
    path.write_bytes(pki.cert_pem(ca))
    done = cli(tmp_path, "--tlsa", "211:443@www.example.org,302:25@mx.example.org", str(path))
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == [
        f"_25._tcp.mx.example.org. 3600 IN TLSA 3 0 2 {der_sha512(path)}",
        f"_443._tcp.www.example.org. 3600 IN TLSA 2 1 1 {openssl_spki_sha256(path)}",
    ]


def test_self_signed_ca_true_server_certificate(tmp_path: Path) -> None:
    """``openssl req -x509`` marks its certificate CA:TRUE: it names its own hosts."""
    path = tmp_path / "selfsigned.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(path), "-days", "2",
         "-subj", "/CN=mx.example.org", "-addext", "subjectAltName=DNS:mx.example.org",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        capture_output=True, check=True,
    )
    done = cli(tmp_path, "--tlsa", "211:25,311:25", str(path))
    assert done.returncode == 0, done.stderr
    digest = openssl_spki_sha256(path)
    assert records(done.stdout) == [
        f"_25._tcp.mx.example.org. 3600 IN TLSA 2 1 1 {digest}",
        f"_25._tcp.mx.example.org. 3600 IN TLSA 3 1 1 {digest}",
    ]
    assert ldns_dane(path, "mx.example.org", "211").endswith(f"2 1 1 {digest}")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("{d}/missing.pem", "cannot read certificate {d}/missing.pem: no such file"),
        ("311:{d}/missing.pem", "cannot read certificate {d}/missing.pem: no such file"),
        ("{d}/garbage.pem", "a PEM certificate in it is damaged"),
        ("{d}/empty.pem", "no PEM certificate in it"),
        ("{d}", "it is a directory"),
        ("411:{d}/cert.pem", "usage 4 is not 2 (DANE-TA) or 3 (DANE-EE)"),
        ("211:{d}/lonely/cert.pem", "usage 2 needs the issuing certificate"),
        ("nope.example.org", "no lineage 'nope.example.org' is managed"),
    ],
)
def test_unreadable_input(files: Path, item: str, message: str) -> None:
    (files / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    (files / "empty.pem").write_text("")
    (files / "lonely").mkdir()
    (files / "lonely" / "cert.pem").write_bytes((files / "cert.pem").read_bytes())
    done = cli(files, item.format(d=files))
    assert done.returncode == 2
    assert message.format(d=files) in one_error_line(done)
    assert done.stdout == ""


@pytest.mark.lab
def test_managed_lineage_and_all_versions(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dep = CliDeployment(lab, tmp_path, host_for(request, "prt"))
    dep.issue()
    dep.renew()
    archive = dep.config / "archive" / dep.host
    one, two = (spki_sha256(archive / f"cert{n}.pem") for n in (1, 2))
    assert one != two
    owner = f"_25._tcp.{dep.host}."
    for args in ([dep.host], ["--cert-name", dep.host], []):
        done = dep.cli("print", *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"; {dep.host} version 1 (served)",
            f"{owner} 3600 IN TLSA 3 1 1 {one}",
            f"; {dep.host} version 2 (pending)",
            f"{owner} 3600 IN TLSA 3 1 1 {two}",
        ]
    dep.renew()
    done = dep.cli("print", "--all-versions", dep.host, "--ttl", "60")
    assert done.returncode == 0, done.stderr
    three = spki_sha256(archive / "cert3.pem")
    assert records(done.stdout) == [f"{owner} 60 IN TLSA 3 1 1 {d}" for d in (one, two, three)]
    assert done.stdout.count("; ") == 3
    bad = dep.cli("print", "--all-versions", "nope.dane.test")
    assert bad.returncode == 2
    assert "no archive for lineage 'nope.dane.test'" in one_error_line(bad)
    unknown = dep.cli("print", "--cert-name", "nope.dane.test")
    assert unknown.returncode == 2
    assert "'nope.dane.test' is not managed" in one_error_line(unknown)


@pytest.mark.lab
def test_chain_pem_of_a_lineage_from_the_acme_ca(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The documented case: live/NAME/chain.pem, Pebble's intermediate, for usage 2."""
    dep = CliDeployment(lab, tmp_path, host_for(request, "prt"))
    dep.issue()
    live = dep.config / "live" / dep.host
    chain, full = (dep.cli("print", f"211:{live / n}") for n in ("chain.pem", "fullchain.pem"))
    assert chain.returncode == 0, chain.stderr
    digest = openssl_spki_sha256(live / "chain.pem")
    assert records(chain.stdout) == [f"{dep.owner} 3600 IN TLSA 2 1 1 {digest}"]
    assert records(full.stdout) == records(chain.stdout)
    assert ldns_dane(live / "chain.pem", dep.host, "211").endswith(f"2 1 1 {digest}")


def test_lineage_records_print_at_the_alias_target_with_the_issuer_records() -> None:
    from certbot_dane import state, zonefile
    from certbot_dane.rollover import State, Version
    from certbot_dane.tlsa import Record

    owner, target = "_25._tcp.mx.example.org.", "_25._tcp.tlsa.example.net."
    leaf, ca, other_ca = ("11" * 32, "22" * 32, "33" * 32)
    served = Version(4, frozenset({Record(owner, 3, 1, 1, leaf), Record(owner, 2, 1, 1, ca)}))
    issuers = frozenset({Record(owner, 2, 1, 1, ca), Record(owner, 2, 1, 1, other_ca)})
    data = state.LineageFile(
        lineage="mx.example.org",
        settings=state.Settings(targets="311:25,211:25", directory="/d", issuers="/etc/b.pem"),
        rollover=State(served=served, issuers=issuers, aliases=((owner, target),)),
    )
    groups = zonefile.lineage_groups(data)
    assert zonefile.render(groups, 60).splitlines() == [
        "; mx.example.org version 4 (served)",
        f"; {owner} is an alias (CNAME) of {target}: its records live there",
        f"{target} 60 IN TLSA 2 1 1 {ca}",
        f"{target} 60 IN TLSA 3 1 1 {leaf}",
        "; mx.example.org issuer records (--dane-issuers /etc/b.pem)",
        f"{target} 60 IN TLSA 2 1 1 {other_ca}",
    ]
    items = zonefile.as_json(groups, 60)
    assert {(i["owner"], tuple(i["aliases"])) for i in items} == {(target, (owner,))}
    assert len(items) == 4, "the JSON lists each group's records, shared ones included"
