"""``--dane-group``: who may read the key files, checked as other users, and a
real Exim that reads them as Debian-exim through a renewal.

The dane directory lies outside pytest's 0700 temporary root (as
:mod:`tests.lab.exim` explains): a user other than root must be able to
reach it for its modes to decide anything. Reads as other users go through
``setpriv`` (user nobody, with or without a supplementary group).
"""
from __future__ import annotations

import grp
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certbot_dane import danedir
from tests.deployment import Deployment
from tests.lab import pki
from tests.lab.exim import Exim, exim_ids, reachable_directory
from tests.lab.lab import Lab
from tests.lab.probe import Prober, dane_check
from tests.lab.process import free_port

pytestmark = pytest.mark.lab

#: Two groups every Debian system has (base-passwd).
GROUP, OTHER = "mail", "news"
SECRETS = ("privkey.pem", "combined.pem")
PUBLIC = ("cert.pem", "chain.pem", "fullchain.pem")


def host_for(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"grp-{slug}.dane.test"


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory other users can reach (0755, below the system's /tmp)."""
    with reachable_directory(prefix="dane-group-") as path:
        yield path


def cat_as(path: Path, group: str | None) -> subprocess.CompletedProcess[bytes]:
    """``cat`` run as user nobody, with ``group`` as its only supplementary group."""
    groups = ["--groups", group] if group else ["--clear-groups"]
    return subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", *groups, "cat", str(path)],
        capture_output=True,
        timeout=10,
        check=False,
    )


def can_read(path: Path, group: str | None) -> bool:
    done = cat_as(path, group)
    if done.returncode == 0:
        assert done.stdout == path.read_bytes()
        return True
    assert b"Permission denied" in done.stderr, done.stderr
    return False


def modes(lineage_dir: Path) -> dict[str, tuple[str, int, str]]:
    """Every directory and file of the lineage (links aside): kind, mode, group."""
    found = {".": ("dir", *_mode_group(lineage_dir))}
    for entry in sorted(lineage_dir.rglob("*")):
        if entry.is_symlink():
            continue
        kind = "dir" if entry.is_dir() else "file"
        found[str(entry.relative_to(lineage_dir))] = (kind, *_mode_group(entry))
    return found


def _mode_group(path: Path) -> tuple[int, str]:
    info = path.lstat()
    assert info.st_uid == 0
    return stat.S_IMODE(info.st_mode), grp.getgrgid(info.st_gid).gr_name


def expected(versions: list[int], group: str | None) -> dict[str, tuple[str, int, str]]:
    """The modes ``--dane-group`` promises (``group`` None: owner only; the
    group of an entry then does not matter and is left out of the comparison)."""
    where = group or "*"
    directory = ("dir", 0o750 if group else 0o700, where)
    found = {".": directory, danedir.VERSIONS: directory}
    for number in versions:
        base = f"{danedir.VERSIONS}/{number}"
        found[base] = directory
        for name in SECRETS:
            found[f"{base}/{name}"] = ("file", 0o640 if group else 0o600, where)
        for name in PUBLIC:
            found[f"{base}/{name}"] = ("file", 0o644, "*")
    return found


def assert_modes(dep: Deployment, versions: list[int], group: str | None) -> None:
    want = expected(versions, group)
    seen = {
        path: (kind, mode, "*" if want.get(path, ("", 0, ""))[2] == "*" else name)
        for path, (kind, mode, name) in modes(dep.dane_dir()).items()
    }
    assert seen == want
    for link in (danedir.CURRENT, *(f"{kind}.pem" for kind in danedir.LINKS)):
        assert (dep.dane_dir() / link).is_symlink()


def install(dep: Deployment, *extra: str) -> None:
    """``certbot install`` again with the same settings, and ``extra``."""
    dep.certbot("install", "--cert-name", dep.host, *dep.dane_args(), *extra)


def test_group_members_read_the_keys_through_the_links_and_others_cannot(
    lab: Lab, tmp_path: Path, outside: Path, request: pytest.FixtureRequest
) -> None:
    dep = Deployment(lab, tmp_path, host_for(request), dane_root=outside / "dane")
    dep.issue("--dane-group", GROUP)
    links = dep.dane_dir()
    assert stat.S_IMODE(dep.dane_root.stat().st_mode) == 0o755
    assert_modes(dep, [1], GROUP)
    for name in SECRETS:
        assert can_read(links / name, GROUP), name
        assert not can_read(links / name, None), name
        assert not can_read(links / name, OTHER), name
    assert can_read(links / "fullchain.pem", GROUP)

    # A renewal stages the new version with the same modes.
    dep.renew()
    assert_modes(dep, [1, 2], GROUP)
    dep.check_until_switched(2)
    assert_modes(dep, [2], GROUP)
    assert can_read(links / "combined.pem", GROUP)
    assert not can_read(links / "combined.pem", None)


def test_certbot_install_applies_another_group_or_none_at_once(
    lab: Lab, tmp_path: Path, outside: Path, request: pytest.FixtureRequest
) -> None:
    dep = Deployment(lab, tmp_path, host_for(request), dane_root=outside / "dane")
    dep.issue("--dane-group", GROUP)
    links = dep.dane_dir()

    install(dep, "--dane-group", OTHER)
    assert_modes(dep, [1], OTHER)
    for name in SECRETS:
        assert can_read(links / name, OTHER), name
        assert not can_read(links / name, GROUP), name
    assert [e.detail for e in dep.lineage_file.timeline if e.what == "group"] == [OTHER]

    install(dep)
    assert_modes(dep, [1], None)
    for name in SECRETS:
        assert not can_read(links / name, OTHER), name
        assert not can_read(links / name, GROUP), name


def test_a_group_changed_by_certbot_install_lasts_until_the_next_renew_unless_reconfigured(
    lab: Lab, tmp_path: Path, outside: Path, request: pytest.FixtureRequest
) -> None:
    """``certbot install`` saves nothing in the renewal configuration: the next
    ``certbot renew`` puts its group back. ``certbot reconfigure`` makes a
    change last (it applies at the next ``certbot renew``)."""
    dep = Deployment(lab, tmp_path, host_for(request), dane_root=outside / "dane")
    dep.issue("--dane-group", GROUP)
    done = dep.certbot("install", "--cert-name", dep.host, *dep.dane_args(), "--dane-group", OTHER)
    assert_modes(dep, [1], OTHER)
    said = done.stdout + done.stderr
    assert (
        f"dane: 'certbot install' does not store options: the next 'certbot renew' of "
        f"{dep.host} goes back to the renewal configuration's --dane-group. To keep them, "
        f"run once: certbot reconfigure --cert-name {dep.host} -i dane" in " ".join(said.split())
    )
    dep.certbot("renew", "--no-random-sleep-on-renew")
    assert_modes(dep, [1], GROUP)

    dep.certbot("reconfigure", "--cert-name", dep.host, "-i", "dane", "--dane-group", OTHER)
    assert_modes(dep, [1], GROUP)
    for _ in range(2):
        dep.certbot("renew", "--no-random-sleep-on-renew")
        assert_modes(dep, [1], OTHER)

    dep.certbot("reconfigure", "--cert-name", dep.host, "-i", "dane", "--dane-group", "")
    for _ in range(2):
        dep.certbot("renew", "--no-random-sleep-on-renew")
        assert_modes(dep, [1], None)


# Exim as Debian-exim ------------------------------------------------------------


def spki_of(dep: Deployment, number: int) -> str:
    path = dep.config / "archive" / dep.host / f"cert{number}.pem"
    return pki.spki_sha256(x509.load_pem_x509_certificate(path.read_bytes()))


def wait_validated(dep: Deployment, port: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while True:
        result = dane_check(dep.host, port, dep.lab.resolver, dep.owner, starttls="smtp")
        if result.ok:
            return
        assert time.monotonic() < deadline, f"first record never validated: {result.output}"
        time.sleep(0.3)


@pytest.fixture
def exim_user() -> tuple[int, int]:
    return exim_ids()  # a clear failure when the install script has not run


def test_exim_as_debian_exim_passes_dane_through_a_renewal(
    lab: Lab,
    tmp_path: Path,
    outside: Path,
    exim_user: tuple[int, int],
    request: pytest.FixtureRequest,
) -> None:
    dep = Deployment(lab, tmp_path, host_for(request), dane_root=outside / "dane")
    port = free_port(set())
    exim = Exim(outside / "exim", dep.dane_dir(), port=port, hostname=dep.host)
    endpoint = f"127.0.0.1:{port}/smtp"
    dep.issue(
        "--dane-group",
        "Debian-exim",
        "--dane-reload",
        exim.reload_command,
        "--dane-endpoints",
        endpoint,
    )
    with exim:
        assert exim.credentials() == exim_user
        wait_validated(dep, port)
        with Prober(
            dep.host, port, lab.resolver, dep.owner, interval_ms=300, starttls="smtp"
        ) as prober:
            old = dep.authoritative_records()
            dep.renew()
            dep.check_until_switched(2)
            prober.stop()
        new = dep.authoritative_records()
        assert len(new) == 1 and not new & old
        assert (retired := dep.events("retired")) and retired[-1] > dep.events("reloaded")[-1]
        assert exim.daemon_starts() == 2, "the reload command re-executed Exim once"
        assert exim.credentials(real=True) == exim_user
        assert pki.spki_sha256(exim.presented()) == spki_of(dep, 2)
        assert "Error while reading file" not in exim.mainlog.read_text()
    assert prober.successes
    # Exim closes and re-opens its socket when it re-executes on SIGHUP: a
    # connection in that gap is refused, which a sending MTA retries. No
    # connection may ever see a certificate that the records do not match.
    mismatched = [s for s in prober.failures if "Connection refused" not in s.reason]
    assert mismatched == [], mismatched[:5]
    assert len(prober.failures) <= 1, prober.failures


def test_exim_cannot_read_the_key_without_the_group_until_certbot_install_gives_it(
    lab: Lab,
    tmp_path: Path,
    outside: Path,
    exim_user: tuple[int, int],
    request: pytest.FixtureRequest,
) -> None:
    dep = Deployment(lab, tmp_path, host_for(request), dane_root=outside / "dane")
    exim = Exim(outside / "exim", dep.dane_dir(), hostname=dep.host)
    dep.issue()
    assert_modes(dep, [1], None)
    with exim:
        refused = dane_check(dep.host, exim.port, lab.resolver, dep.owner, starttls="smtp")
        assert refused.reason == "server refused STARTTLS (no TLS after the STARTTLS reply)"

        install(dep, "--dane-group", "Debian-exim")
        assert_modes(dep, [1], "Debian-exim")
        exim.reload()
        wait_validated(dep, exim.port)
        assert os.stat(dep.dane_dir() / "combined.pem").st_gid == exim_user[1]
