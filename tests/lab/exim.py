"""A private Exim 4 serving a dane directory over SMTP STARTTLS.

Debian's ``exim4-daemon-light`` (4.96, GnuTLS) cannot be installed next to
Postfix, so ``scripts/install-lab-packages.sh`` unpacks it into
:data:`EXIM_ROOT` and creates the ``Debian-exim`` user and group. This runs
it as ``exim4 -C FILE -bdf``: its own configuration file, spool and log in
the directory it is given, listening on a free loopback port, accepting no
mail, with ``tls_certificate`` pointing at the dane directory.

Facts this relies on (Exim 4.96 as Debian builds it, measured and read in
its source):

- ``-C`` keeps root privilege when the caller is root (any other caller
  loses it unless the file is in the TRUSTED_CONFIG_LIST). The daemon binds
  its sockets as root, then becomes ``Debian-exim`` for good (setuid, with
  initgroups), and only then loads the certificate and key: a key that
  ``Debian-exim`` may not read makes STARTTLS answer ``454 TLS currently
  unavailable``. The spool and log must be writable by ``Debian-exim`` and
  every directory above them searchable by it (absolute paths are used).
- ``tls_certificate`` naming one file that holds the key and then the chain
  (``combined.pem``) works: with ``tls_privatekey`` unset GnuTLS reads the
  key from the same file.
- The certificate is not read per connection: when ``tls_certificate`` and
  ``tls_privatekey`` contain no ``$`` expansion, the daemon loads them once
  and hands them to every connection. An inotify watch on the directory
  holding each named file (not on a symlink's target) marks the cache stale
  on a write, rename or delete there; the daemon reloads at its next wake-up
  (a connection or a child exiting) at least 5 seconds after the event. A
  switch of the dane directory (a rename in the lineage directory) is thus
  served from the first connection 5 s or more after it, without a reload.
  With an expansion in the option (``preload=False``) each connection reads
  the files itself.
- ``SIGHUP`` makes the daemon re-exec itself with the same arguments: the
  listening socket is closed and opened again (a connection in between is
  refused), and since the re-exec'd process is called by Debian-exim with
  ``-C`` it runs without root from then on ("exim user lost privilege for
  using -C option"); it loads the certificate at once.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from cryptography import x509

from .process import Daemon, LabError, free_port
from .smtp import starttls_certificate

LOOPBACK = "127.0.0.1"
EXIM_ROOT = Path(os.environ.get("CERTBOT_DANE_EXIM_ROOT", "/opt/certbot-dane-lab/exim4"))
EXIM_USER = "Debian-exim"
PKILL = "/usr/bin/pkill"

_INSTALL_HINT = "run scripts/install-lab-packages.sh as root"


def exim_binary() -> Path:
    """The unpacked ``exim4``; a LabError naming the fix when it is missing."""
    binary = EXIM_ROOT / "usr" / "sbin" / "exim4"
    if not os.access(binary, os.X_OK):
        raise LabError(f"Exim is not unpacked in {EXIM_ROOT}: {_INSTALL_HINT}")
    return binary


def exim_ids() -> tuple[int, int]:
    """(uid, gid) of Debian-exim; a LabError naming the fix when missing."""
    try:
        return pwd.getpwnam(EXIM_USER).pw_uid, grp.getgrnam(EXIM_USER).gr_gid
    except KeyError:
        raise LabError(f"no {EXIM_USER} user or group: {_INSTALL_HINT}") from None


def unreachable(path: Path) -> Path | None:
    """The first directory on the way to ``path`` (itself included) that
    Debian-exim may not search, or None when it can reach ``path``."""
    uid, gid = exim_ids()
    groups = {gid} | {g.gr_gid for g in grp.getgrall() if EXIM_USER in g.gr_mem}
    for directory in (*reversed(Path(path).resolve().parents), Path(path).resolve()):
        info = directory.stat()
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


@contextlib.contextmanager
def reachable_directory(prefix: str = "dane-exim-") -> Iterator[Path]:
    """A fresh directory that Debian-exim can reach (0755, under the system
    temporary directory), removed afterwards.

    pytest's temporary directories sit below a 0700 directory of root's,
    where Exim, once it is Debian-exim, finds nothing.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Exim:
    """Exim in ``directory`` (``exim.conf``, ``spool/``, logs in
    ``spool/log/``) presenting the dane directory's ``certificate`` (and
    ``privkey``; None: the key is in the certificate file, as in
    ``combined.pem``) on 127.0.0.1:``port`` (0: a free port).

    ``directory`` must be reachable by Debian-exim (see
    :func:`reachable_directory`). ``preload=False`` writes the certificate
    option with an expansion, so that every connection reads the files.
    """

    def __init__(
        self,
        directory: Path,
        dane_dir: Path,
        *,
        port: int = 0,
        hostname: str = "mail.dane.test",
        certificate: str = "combined.pem",
        privkey: str | None = None,
        preload: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.dane_dir = Path(dane_dir).resolve()
        self.port = port
        self.hostname = hostname
        self.certificate = self.dane_dir / certificate
        self.privkey = None if privkey is None else self.dane_dir / privkey
        self.preload = preload
        self.timeout = timeout
        self.config = self.directory / "exim.conf"
        self.spool = self.directory / "spool"
        self.pid_file = self.spool / "exim-daemon.pid"
        self.mainlog = self.spool / "log" / "mainlog"
        self.paniclog = self.spool / "log" / "paniclog"
        self.start_seconds: float | None = None
        self._daemon: Daemon | None = None

    def __enter__(self) -> Exim:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ operator

    @property
    def reload_argv(self) -> list[str]:
        """SIGHUP to the daemon named in its pid file (it re-execs and loads
        the certificate anew): valid across restarts."""
        return [PKILL, "-HUP", "-F", str(self.pid_file)]

    @property
    def reload_command(self) -> str:
        """:attr:`reload_argv` as one ``--dane-reload`` string."""
        return shlex.join(self.reload_argv)

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """Write the configuration, start the daemon in the foreground and
        return once it greets on the port."""
        began = time.monotonic()
        binary = exim_binary()
        self._prepare()
        self._daemon = Daemon(
            "exim",
            [str(binary), "-C", str(self.config), "-bdf"],
            self.directory / "exim.out",
            logs=[self.mainlog, self.paniclog],
            cwd=self.directory,
        )
        self._daemon.start()
        try:
            self._daemon.wait_until(self._greets, self.timeout, "220 greeting")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()

    def reload(self) -> subprocess.CompletedProcess[str]:
        """Run :attr:`reload_argv` and return once the re-exec'd daemon
        greets again."""
        started = self.daemon_starts()
        done = subprocess.run(
            self.reload_argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if done.returncode != 0:
            raise LabError(f"{self.reload_command} failed ({done.returncode}): {done.stderr}")
        assert self._daemon is not None
        self._daemon.wait_until(
            lambda: self.daemon_starts() > started and self._greets(),
            self.timeout,
            "re-exec after SIGHUP",
        )
        return done

    @property
    def running(self) -> bool:
        return self._daemon is not None and self._daemon.running

    @property
    def pid(self) -> int:
        if self._daemon is None or self._daemon.pid is None:
            raise LabError("exim is not running")
        return self._daemon.pid

    def credentials(self, *, real: bool = False) -> tuple[int, int]:
        """(uid, gid) the daemon runs with now: effective ones, or the real
        ones when ``real`` (root as real uid could still regain root)."""
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        column = 1 if real else 2
        ids = {
            line.split(":")[0]: int(line.split()[column])
            for line in status.splitlines()
            if line.startswith(("Uid:", "Gid:"))
        }
        return ids["Uid"], ids["Gid"]

    def daemon_starts(self) -> int:
        """How often the daemon logged its start (HUP re-execs included)."""
        try:
            text = self.mainlog.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return 0
        return text.count(" daemon started: ")

    def presented(self) -> x509.Certificate:
        """The certificate a client gets after STARTTLS right now."""
        return starttls_certificate(self.port, server_name=self.hostname)

    def diagnostics(self) -> str:
        return self._daemon.diagnostics() if self._daemon is not None else "(not started)"

    # ------------------------------------------------------------ internals

    def _prepare(self) -> None:
        uid, gid = exim_ids()
        self.directory.mkdir(parents=True, exist_ok=True)
        blocked = unreachable(self.directory)
        if blocked is not None:
            raise LabError(
                f"Exim runs as {EXIM_USER}, which cannot search {blocked} (mode "
                f"{stat.S_IMODE(blocked.stat().st_mode):04o}): give Exim a directory it can "
                "reach (tests.lab.exim.reachable_directory)"
            )
        # As exim4-base's postinst makes /var/spool/exim4 and its log.
        for path in (self.spool, self.spool / "log"):
            path.mkdir(exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, 0o750)
        if not self.port:
            self.port = free_port(set())
        # Root-owned and not writable by others, or Exim refuses it as root.
        self.config.write_text(self._config_text(), encoding="utf-8")
        os.chmod(self.config, 0o644)

    def _tls_option(self, path: Path) -> str:
        # Any "$" makes Exim read the file per connection instead of caching it.
        return str(path) if self.preload else f"${{if eq{{}}{{}}{{{path}}}}}"

    def _config_text(self) -> str:
        privkey = (
            "" if self.privkey is None else f"tls_privatekey = {self._tls_option(self.privkey)}\n"
        )
        return f"""\
exim_path = {exim_binary()}
spool_directory = {self.spool}
log_file_path = {self.spool}/log/%slog
pid_file_path = {self.pid_file}
primary_hostname = {self.hostname}
local_interfaces = <; {LOOPBACK}
daemon_smtp_ports = {self.port}
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts = *
tls_certificate = {self._tls_option(self.certificate)}
{privkey}acl_smtp_rcpt = refuse_all

begin acl

refuse_all:
  deny message = this lab server accepts no mail
"""

    def _greets(self) -> bool:
        with socket.create_connection((LOOPBACK, self.port), timeout=2.0) as sock:
            greeting = sock.recv(512)
            sock.sendall(b"QUIT\r\n")
        return greeting.startswith(b"220")
