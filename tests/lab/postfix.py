"""A private Postfix instance serving a dane directory over SMTP STARTTLS.

Debian's ``postfix`` package (3.7) is run with a configuration directory,
queue and data directory of its own (``postfix -c DIR/etc start``), smtpd on
a free loopback port, and ``smtpd_tls_chain_files`` pointing at the dane
directory's ``combined.pem`` (key first, then the chain): what an operator
configures, on a port of the test's choosing. It accepts no mail.

Facts this relies on (Postfix 3.7, Debian 12, run as root):

- smtpd loads the key and chain when it starts (as root, before it drops
  privileges), so a root-only ``combined.pem`` in a 0700 directory is fine,
  and a running smtpd keeps presenting what it loaded.
- ``postfix reload`` returns once it has sent SIGHUP to the master (about
  50 ms): the master re-reads its configuration and tells its children to
  go; an idle smtpd exits within milliseconds, possibly after the command
  returned, and one busy with a session finishes that session first. New
  sessions get a new smtpd, which loads the files anew.
- An smtpd also exits after ``max_use`` sessions or ``max_idle`` seconds
  idle; its successor loads the files anew, reload or not.
- The daemons run as ``postfix`` with the queue directory as their working
  directory (entered as root): a relative ``data_directory`` lies below it and
  is reached without searching the parents, which may be 0700 root (pytest's
  temporary directories are). ``postfix start`` creates the queue
  directories with their owners (``maildrop`` and ``public`` group
  ``postdrop``) itself; nothing here uses the set-group-id ``postdrop`` or
  ``postqueue``, and the start logs no warning.
- Every Postfix program re-reads a main.cf changed within the last second
  until it is older: written just before ``postfix start``, it costs 2 s.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from cryptography import x509

from .lab import find_tool
from .process import LabError, free_port, tail
from .smtp import starttls_certificate

LOOPBACK = "127.0.0.1"

# The services smtpd needs, none chrooted (the queue directory holds no
# copies of the system files a chroot needs). No pickup, no smtp/lmtp/local:
# nothing is submitted locally and nothing is delivered.
_MASTER_SERVICES = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """Postfix in ``directory`` (``etc/``, ``queue/``, ``maillog``) presenting
    ``dane_dir``/combined.pem on 127.0.0.1:``port`` (0: a free port, see
    ``.port`` after :meth:`start`).

    ``max_use`` is the number of sessions an smtpd serves before it exits
    (Postfix's default 100); ``process_limit`` caps the smtpd processes (1
    makes every session go to the same smtpd while it lives).
    """

    def __init__(
        self,
        directory: Path,
        dane_dir: Path,
        *,
        port: int = 0,
        hostname: str = "mail.dane.test",
        max_use: int = 100,
        process_limit: int = 100,
        timeout: float = 30.0,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.dane_dir = Path(dane_dir).resolve()
        self.port = port
        self.hostname = hostname
        self.max_use = max_use
        self.process_limit = process_limit
        self.timeout = timeout
        self.config_dir = self.directory / "etc"
        self.queue_dir = self.directory / "queue"
        self.maillog = self.directory / "maillog"
        self.postfix = find_tool("postfix")
        self.start_seconds: float | None = None

    def __enter__(self) -> Postfix:
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
    def chain_files(self) -> Path:
        return self.dane_dir / "combined.pem"

    @property
    def reload_argv(self) -> list[str]:
        """``postfix -c CONFIG_DIR reload``, full path: what certbot-dane runs."""
        return [self.postfix, "-c", str(self.config_dir), "reload"]

    @property
    def reload_command(self) -> str:
        """:attr:`reload_argv` as one ``--dane-reload`` string."""
        return shlex.join(self.reload_argv)

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """Write the configuration and ``postfix start``; return once smtpd
        answers on the port."""
        began = time.monotonic()
        if not self.port:
            self.port = free_port(set())
        self._write_config()
        done = self._postfix("start")
        if done.returncode != 0:
            raise LabError(f"postfix start failed ({done.returncode}):\n{self.diagnostics(done)}")
        atexit.register(self.stop)
        try:
            self._wait_greeting()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def reload(self) -> subprocess.CompletedProcess[str]:
        """Run the operator's reload command; it returns as ``postfix reload``
        does, before the old smtpd processes have exited."""
        done = subprocess.run(
            self.reload_argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if done.returncode != 0:
            raise LabError(f"postfix reload failed ({done.returncode}):\n{self.diagnostics(done)}")
        return done

    def stop(self) -> None:
        """Stop the master and every Postfix process; safe to call twice.

        SIGTERM to the master, which takes its children with it, then wait for
        it to go: ``postfix stop`` does the same but polls once a second.
        """
        atexit.unregister(self.stop)
        pid = self.master_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10.0
        while _alive(pid):
            if time.monotonic() >= deadline:
                _kill_group(pid)
                break
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        pid = self.master_pid()
        return pid is not None and _alive(pid)

    def master_pid(self) -> int | None:
        """The master's PID from its pid file, or None when there is none."""
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def smtpd_pids(self) -> list[int]:
        """The smtpd processes of this instance (children of its master)."""
        master = self.master_pid()
        if master is None:
            return []
        return [pid for pid, name in _children(master) if name == "smtpd"]

    def presented(self) -> x509.Certificate:
        """The certificate a client gets after STARTTLS right now."""
        return starttls_certificate(self.port, server_name=self.hostname)

    def diagnostics(self, done: subprocess.CompletedProcess[str] | None = None) -> str:
        parts = []
        if done is not None:
            parts.append((done.stdout + done.stderr).strip())
        parts += [f"--- {self.maillog} ---", tail(self.maillog)]
        return "\n".join(parts)

    # ------------------------------------------------------------ internals

    def _postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.postfix, "-c", str(self.config_dir), *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        # Root-owned and not group/world writable, or postfix-script warns.
        for path in (self.config_dir, self.queue_dir):
            os.chmod(path, 0o755)
        _write_cool(self.config_dir / "main.cf", self._main_cf())
        _write_cool(self.config_dir / "master.cf", self._master_cf())

    def _main_cf(self) -> str:
        label = f"postfix-lab-{self.port}"
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
# Relative: below the queue directory, the daemons' working directory.
data_directory = data
mail_owner = postfix
setgid_group = postdrop
syslog_name = {label}
maillog_file = {self.maillog}
maillog_file_prefixes = {self.directory}
myhostname = {self.hostname}
mydomain = {self.hostname.partition(".")[2] or self.hostname}
myorigin = $myhostname
inet_interfaces = {LOOPBACK}
inet_protocols = ipv4
smtp_bind_address = {LOOPBACK}
# Nothing is accepted and nothing leaves.
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = reject
smtpd_recipient_restrictions = reject
default_transport = error:this lab server delivers no mail
relay_transport = error:this lab server delivers no mail
local_transport = error:this lab server delivers no mail
biff = no
smtputf8_enable = no
smtpd_banner = $myhostname ESMTP lab
max_use = {self.max_use}
smtpd_tls_security_level = may
smtpd_tls_chain_files = {self.chain_files}
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
"""

    def _master_cf(self) -> str:
        smtpd = f"{LOOPBACK}:{self.port} inet n - n - {self.process_limit} smtpd\n"
        return smtpd + _MASTER_SERVICES

    def _wait_greeting(self) -> None:
        """Wait until smtpd says 220 (the master listens from the start; the
        first smtpd starts with the first connection)."""
        deadline = time.monotonic() + self.timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=2.0) as sock:
                    greeting = sock.recv(512)
                    sock.sendall(b"QUIT\r\n")
                if greeting.startswith(b"220"):
                    return
                last = LabError(f"greeting {greeting!r}")
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise LabError(
            f"postfix on port {self.port}: no 220 greeting within {self.timeout:.0f} s "
            f"(last: {last!r})\n{self.diagnostics()}"
        )


def _write_cool(path: Path, text: str) -> None:
    """Write a configuration file dated 10 s back.

    Every Postfix program re-reads a main.cf changed within the last second,
    every 0.3 s, until it "cools down" (the file might be half written): a
    ``postfix start`` right after writing it takes 2 s instead of 0.3 s. The
    file is complete when this returns, so it may as well be cool.
    """
    path.write_text(text, encoding="utf-8")
    then = time.time() - 10
    os.utime(path, (then, then))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; count it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(parent: int) -> list[tuple[int, str]]:
    """(pid, name) of the processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent:
            found.append((int(entry.name), name))
    return found
