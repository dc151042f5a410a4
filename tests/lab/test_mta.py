"""The lab's real mail servers: a private Postfix and a private Exim serve a
dane directory over SMTP STARTTLS, and the DANE probe checks them as a
sending MTA would."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from . import Lab, LabError, Prober, dane_check, pki
from .exim import EXIM_ROOT, EXIM_USER, Exim, exim_ids, reachable_directory, unreachable
from .postfix import Postfix
from .smtp import StartTLSError

pytestmark = pytest.mark.lab

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-lab-packages.sh"


class DaneDir:
    """A lineage directory laid out as certbot-dane lays it out: versions in
    ``.versions/N/combined.pem`` (key, then certificate), ``current`` naming
    the served one, ``combined.pem -> current/combined.pem``. A switch is one
    rename of ``current``.

    ``group`` (a gid) makes the directories 0750 and the files 0640 of that
    group, for a server that reads them after dropping root.
    """

    def __init__(self, path: Path, group: int | None = None) -> None:
        self.path = path
        self.group = group
        self.versions = 0
        self._mkdir(path)
        self._mkdir(path / ".versions")
        (path / "combined.pem").symlink_to("current/combined.pem")

    def stage(self, host: str) -> tuple[int, x509.Certificate]:
        """Write a new version: a fresh key and certificate for ``host``."""
        key, cert = pki.make_leaf([host])
        self.versions += 1
        version = self.path / ".versions" / str(self.versions)
        self._mkdir(version)
        combined = pki.write_private(
            version / "combined.pem", pki.key_pem(key) + pki.cert_pem(cert)
        )
        if self.group is not None:
            os.chown(combined, 0, self.group)
            os.chmod(combined, 0o640)
        return self.versions, cert

    def switch(self, number: int) -> None:
        staged = self.path / "current.new"
        staged.symlink_to(f".versions/{number}")
        staged.replace(self.path / "current")

    def serve(self, host: str) -> x509.Certificate:
        """Stage a new version and switch to it."""
        number, cert = self.stage(host)
        self.switch(number)
        return cert

    def served_key(self) -> Path:
        return (self.path / "combined.pem").resolve()

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if self.group is not None:
            os.chown(path, 0, self.group)
            os.chmod(path, 0o750)


def new_host(lab: Lab) -> str:
    """A name of its own in the lab zone, so tests sharing the lab never see
    each other's records."""
    return f"mx-{secrets.token_hex(4)}.{lab.zone}".rstrip(".")


def owner(host: str) -> str:
    return f"_25._tcp.{host}."


def record(cert: x509.Certificate) -> str:
    return f"3 1 1 {pki.spki_sha256(cert)}"


def spki(cert: x509.Certificate) -> str:
    return pki.spki_sha256(cert)


def presented_spkis(server: Postfix | Exim, count: int) -> list[str]:
    return [spki(server.presented()) for _ in range(count)]


# ------------------------------------------------------------------ Postfix


def test_postfix_serves_combined_pem_over_starttls_and_dane_passes(
    lab: Lab, tmp_path: Path
) -> None:
    host = new_host(lab)
    dane = DaneDir(tmp_path / "dane")
    cert = dane.serve(host)
    lab.publish(owner(host), "TLSA", record(cert))
    with Postfix(tmp_path / "postfix", dane.path, hostname=host) as postfix:
        assert spki(postfix.presented()) == spki(cert)

        good = dane_check(host, postfix.port, lab.resolver, owner(host), starttls="smtp")
        assert good.ok, good.output
        assert "matched EE certificate" in good.reason

        # Without STARTTLS there is no TLS on an SMTP port at all.
        plain = dane_check(host, postfix.port, lab.resolver, owner(host))
        assert not plain.ok

        lab.publish(owner(host), "TLSA", f"3 1 1 {secrets.token_hex(32)}")
        bad = dane_check(host, postfix.port, lab.resolver, owner(host), starttls="smtp")
        assert not bad.ok
        assert bad.reason == "no matching DANE TLSA records"


def test_postfix_runs_below_a_root_only_directory(tmp_path: Path) -> None:
    # pytest's directories are 0700 root; make that explicit two levels up.
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    dane = DaneDir(hidden / "dane")
    cert = dane.serve("mail.dane.test")
    with Postfix(hidden / "postfix", dane.path) as postfix:
        assert stat.S_IMODE(hidden.stat().st_mode) == 0o700
        assert spki(postfix.presented()) == spki(cert)
        assert postfix.reload().returncode == 0
        assert spki(postfix.presented()) == spki(cert)
        assert "warning" not in postfix.maillog.read_text()
    assert not postfix.running


def test_postfix_presents_new_certificate_after_reload(lab: Lab, tmp_path: Path) -> None:
    host = new_host(lab)
    dane = DaneDir(tmp_path / "dane")
    old = dane.serve(host)
    # One smtpd at a time: only the reload can make a new one load the files.
    with Postfix(tmp_path / "postfix", dane.path, hostname=host, process_limit=1) as postfix:
        assert spki(postfix.presented()) == spki(old)
        assert postfix.reload_command == (
            f"/usr/sbin/postfix -c {tmp_path / 'postfix' / 'etc'} reload"
        )
        # Both records are live for the switch, as during a rollover.
        number, new = dane.stage(host)
        lab.publish(owner(host), "TLSA", record(old), record(new))
        with Prober(
            host, postfix.port, lab.resolver, owner(host), interval_ms=50, starttls="smtp"
        ) as prober:
            dane.switch(number)
            done = postfix.reload()
            assert done.returncode == 0
            # Old smtpd processes may still serve a session or two.
            seen = presented_spkis(postfix, 20)
            time.sleep(0.2)
        assert spki(new) in seen
        switched = seen.index(spki(new))
        assert set(seen[switched:]) == {spki(new)}
        assert len(prober.successes) >= 1
        assert prober.failures == []

        lab.publish(owner(host), "TLSA", record(new))
        check = dane_check(host, postfix.port, lab.resolver, owner(host), starttls="smtp")
        assert check.ok, check.output


def test_postfix_without_reload_keeps_presenting_old_certificate(lab: Lab, tmp_path: Path) -> None:
    host = new_host(lab)
    dane = DaneDir(tmp_path / "dane")
    old = dane.serve(host)
    # One smtpd that serves many sessions: nothing replaces it by itself.
    with Postfix(
        tmp_path / "postfix", dane.path, hostname=host, max_use=100, process_limit=1
    ) as postfix:
        assert spki(postfix.presented()) == spki(old)
        serving = postfix.smtpd_pids()
        assert len(serving) == 1

        new = dane.serve(host)
        lab.publish(owner(host), "TLSA", record(new))
        assert set(presented_spkis(postfix, 10)) == {spki(old)}
        assert postfix.smtpd_pids() == serving
        stale = dane_check(host, postfix.port, lab.resolver, owner(host), starttls="smtp")
        assert stale.reason == "no matching DANE TLSA records"

        postfix.stop()
        postfix.start()
        assert spki(postfix.presented()) == spki(new)


def test_postfix_max_use_one_loads_the_files_per_session(lab: Lab, tmp_path: Path) -> None:
    host = new_host(lab)
    dane = DaneDir(tmp_path / "dane")
    dane.serve(host)
    with Postfix(tmp_path / "postfix", dane.path, hostname=host, max_use=1) as postfix:
        postfix.presented()
        new = dane.serve(host)
        assert spki(postfix.presented()) == spki(new)


# --------------------------------------------------------------------- Exim


@pytest.fixture(scope="module")
def exim_home() -> Iterator[Path]:
    """A directory Debian-exim can reach (pytest's own are root-only)."""
    exim_ids()  # a clear failure when the install script has not run
    with reachable_directory() as path:
        yield path


@pytest.fixture
def exim_dir(exim_home: Path, request: pytest.FixtureRequest) -> Path:
    path = exim_home / request.node.name
    path.mkdir(mode=0o755)
    return path


def test_exim_as_debian_exim_passes_dane_with_group_readable_key(lab: Lab, exim_dir: Path) -> None:
    host = new_host(lab)
    uid, gid = exim_ids()
    dane = DaneDir(exim_dir / "dane", group=gid)
    cert = dane.serve(host)
    lab.publish(owner(host), "TLSA", record(cert))
    key = dane.served_key()
    assert stat.S_IMODE(key.stat().st_mode) == 0o640 and key.stat().st_gid == gid
    assert stat.S_IMODE(dane.path.stat().st_mode) == 0o750
    assert unreachable(dane.path) is None

    with Exim(exim_dir / "exim", dane.path, hostname=host) as exim:
        assert exim.credentials() == (uid, gid)
        check = dane_check(host, exim.port, lab.resolver, owner(host), starttls="smtp")
        assert check.ok, check.output + exim.diagnostics()
        assert "matched EE certificate" in check.reason
        assert exim.credentials() == (uid, gid)


def test_exim_fails_starttls_when_key_is_root_only(lab: Lab, exim_dir: Path) -> None:
    host = new_host(lab)
    _, gid = exim_ids()
    dane = DaneDir(exim_dir / "dane", group=gid)
    cert = dane.serve(host)
    key = dane.served_key()
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    lab.publish(owner(host), "TLSA", record(cert))

    with Exim(exim_dir / "exim", dane.path, hostname=host) as exim:
        check = dane_check(host, exim.port, lab.resolver, owner(host), starttls="smtp")
        assert not check.ok
        assert check.reason == "server refused STARTTLS (no TLS after the STARTTLS reply)"
        with pytest.raises(StartTLSError, match="454"):
            exim.presented()
        assert "Error while reading file" in exim.mainlog.read_text()

        # Readable again: a reload serves it (a change of mode is no event
        # Exim watches, and the file lies below the watched directory).
        os.chown(key, 0, gid)
        os.chmod(key, 0o640)
        exim.reload()
        check = dane_check(host, exim.port, lab.resolver, owner(host), starttls="smtp")
        assert check.ok, check.output + exim.diagnostics()


def test_exim_serves_a_switch_from_its_cache_after_a_delay(lab: Lab, exim_dir: Path) -> None:
    host = new_host(lab)
    _, gid = exim_ids()
    dane = DaneDir(exim_dir / "dane", group=gid)
    old = dane.serve(host)
    with Exim(exim_dir / "exim", dane.path, hostname=host) as exim:
        assert spki(exim.presented()) == spki(old)
        new = dane.serve(host)
        # Cached in the daemon: the very next connection still gets the old one.
        assert spki(exim.presented()) == spki(old)
        # The watch on the lineage directory fired; a connection 5 s or more
        # later reloads the cache. Poll (each poll wakes the daemon) until then.
        seen = []
        for _ in range(100):
            seen.append(spki(exim.presented()))
            if seen[-1] == spki(new):
                break
            time.sleep(0.2)
        assert seen[-1] == spki(new)
        assert exim.daemon_starts() == 1  # no restart, no re-exec


def test_exim_reload_re_execs_without_root_and_loads_at_once(lab: Lab, exim_dir: Path) -> None:
    host = new_host(lab)
    uid, gid = exim_ids()
    dane = DaneDir(exim_dir / "dane", group=gid)
    dane.serve(host)
    with Exim(exim_dir / "exim", dane.path, hostname=host) as exim:
        pid = exim.pid
        assert exim.reload_command == f"/usr/bin/pkill -HUP -F {exim.pid_file}"
        new = dane.serve(host)
        exim.reload()
        assert spki(exim.presented()) == spki(new)
        assert exim.pid == pid and exim.daemon_starts() == 2
        assert exim.credentials() == (uid, gid)
        # Root is gone for good after the re-exec: not even the real uid.
        assert exim.credentials(real=True) == (uid, gid)
        assert "lost privilege for using -C option" in exim.mainlog.read_text()


def test_exim_without_preload_reads_the_files_per_connection(lab: Lab, exim_dir: Path) -> None:
    host = new_host(lab)
    _, gid = exim_ids()
    dane = DaneDir(exim_dir / "dane", group=gid)
    dane.serve(host)
    with Exim(exim_dir / "exim", dane.path, hostname=host, preload=False) as exim:
        exim.presented()
        new = dane.serve(host)
        assert spki(exim.presented()) == spki(new)


def test_exim_refuses_a_directory_debian_exim_cannot_reach(exim_dir: Path) -> None:
    hidden = exim_dir / "hidden"
    hidden.mkdir(mode=0o700)
    exim = Exim(hidden / "exim", hidden / "dane")
    with pytest.raises(LabError, match=f"{EXIM_USER}, which cannot search {hidden}"):
        exim.start()
    assert not exim.running


# ---------------------------------------------------------- install script


def _exim_install_state() -> list[tuple[object, ...]]:
    """Everything the script's Exim part makes: the unpacked tree (names,
    modes, owners, sizes, times) and the Debian-exim user and group."""
    state: list[tuple[object, ...]] = []
    for root, dirs, files in os.walk(EXIM_ROOT):
        for name in sorted(dirs + files):
            info = os.lstat(os.path.join(root, name))
            state.append(
                (
                    os.path.join(root, name),
                    info.st_mode,
                    info.st_uid,
                    info.st_gid,
                    info.st_size,
                    info.st_mtime_ns,
                    info.st_ino,
                )
            )
    state.append(("user", tuple(pwd.getpwnam(EXIM_USER))))
    state.append(("group", tuple(grp.getgrnam(EXIM_USER))))
    return sorted(state, key=repr)


def test_install_script_exim_part_is_idempotent() -> None:
    if os.geteuid() != 0:
        pytest.skip("the install script installs as root only")
    first = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    before = _exim_install_state()

    second = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"exim: present in {EXIM_ROOT}" in second.stdout
    assert "Get:" not in second.stdout  # nothing downloaded
    assert _exim_install_state() == before
