"""Publish TLSA records by running a program: alnitak's exec contract.

Some DNS setups have no API this plugin speaks, but an administrator can
script them. The program named by ``--dane-exec`` is run once per record per
operation, without a shell, in a *replaced* environment: nothing of
certbot's environment (HOME, credentials in variables, proxies) leaks into
it, and what the program sees is exactly the contract below, so a script
written for alnitak keeps working.

=================  =========================================================
Variable           Value
=================  =========================================================
TLSA_OPERATION     ``publish`` or ``delete``
TLSA_USAGE         usage (2 or 3)
TLSA_SELECTOR      selector (0 or 1)
TLSA_MATCHING      matching type (0, 1 or 2)
TLSA_PARAM         the three joined, e.g. ``311``
TLSA_PORT          port, e.g. ``25``
TLSA_PROTOCOL      protocol, e.g. ``tcp``
TLSA_DOMAIN        host name, no trailing dot
TLSA_HASH          the record's association data, lower-case hex
TLSA_TTL           publish only: the TTL to give the record (an addition to
                   alnitak's contract, so the hold the engine computes
                   matches what the program publishes)
TLSA_LIVE_HASH     delete only, when known: the record that must be up
                   before this one may go
ZONE_DOMAIN        the zone holding the record, no trailing dot
RENEWED_DOMAINS    space-separated renewed domains; empty unless the caller
                   sets :attr:`ExecStore.renewed_domains`
LETSENCRYPT_DIR    certbot's configuration directory
PATH               ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``
IFS                space, tab, newline
=================  =========================================================

Exit codes: 0 done; 1 for publish "already there" (success) and for delete
"the live record is not up yet" (a retryable :class:`ExecError`, because
deleting anyway could leave a name with no valid record); 2 to 127 an error;
128 and above (or death by a signal) a soft error, :class:`SoftExecError`
(a :class:`~.base.SoftStoreError`), which the engine retries on its next run. A program that
outlives ``--dane-exec-timeout`` is killed with its whole process group, so
no half-finished update keeps running behind the engine's back.

The contract has no way to list records, so :meth:`ExecStore.list` reports
an empty RRset: the engine then claims and publishes every record it needs
(publishing a present record is harmless, exit 1), and it deletes only
records its own state says it published. Whether a record is live is decided
by the engine's DNS observer, never by the program.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.resolver

from ..tlsa import Record
from .base import RecordStore, RRsetView, SoftStoreError, StoreConfigError, StoreError

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)

#: The only PATH the program gets; certbot's own PATH may hold user directories.
FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IFS = " \t\n"
DEFAULT_EXEC_TIMEOUT = 60
#: How much of the program's last stderr line goes into an error message.
MAX_REASON = 300


class ExecError(StoreError):
    """The program failed; ``exit_code`` is its exit status, where it had one."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SoftExecError(ExecError, SoftStoreError):
    """Transient by the program's own word (exit 128 or more, killed): retried quietly."""


def _exec_error(message: str, exit_code: int | None = None, soft: bool = False) -> ExecError:
    return (SoftExecError if soft else ExecError)(message, exit_code)


class ExecStore(RecordStore):
    """Runs an administrator's program per record (alnitak's exec contract)."""

    name = "exec"

    def __init__(
        self,
        command: str,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
        resolver: tuple[str, int] | None = None,
        letsencrypt_dir: str = "/etc/letsencrypt",
        dns_timeout: float = 10.0,
    ) -> None:
        try:
            argv = shlex.split(command)
        except ValueError as err:
            raise StoreConfigError(f"exec store: cannot split --dane-exec: {err}") from None
        if not argv:
            raise StoreConfigError("exec store: --dane-exec is empty; give the program to run")
        self.argv = argv
        self.timeout = timeout
        self.resolver = resolver
        self.letsencrypt_dir = letsencrypt_dir
        self.dns_timeout = dns_timeout
        #: Domains certbot just renewed, passed on as RENEWED_DOMAINS. The
        #: store cannot know them; the engine may set them before a run.
        self.renewed_domains: tuple[str, ...] = ()
        self._zones: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, config_dir: str, timeout: float = 10.0) -> ExecStore:
        """Build from settings; certbot's ``config_dir`` is the program's LETSENCRYPT_DIR."""
        if not settings.exec_command:
            raise StoreConfigError('exec store: no program given; pass --dane-exec "PROGRAM ARGS"')
        resolver = None
        if settings.resolver:
            from ..observe import parse_address

            try:
                resolver = parse_address(settings.resolver)
            except ValueError as err:
                raise StoreConfigError(f"exec store: --dane-resolver: {err}") from None
        return cls(
            settings.exec_command,
            timeout=settings.exec_timeout or DEFAULT_EXEC_TIMEOUT,
            resolver=resolver,
            letsencrypt_dir=str(config_dir),
            dns_timeout=timeout,
        )

    # The store interface ----------------------------------------------------

    def list(self, owner: str) -> RRsetView:
        """Always empty: the contract cannot list (see the module docstring)."""
        return RRsetView(frozenset(), None)

    def add(self, records: Iterable[Record], ttl: int) -> None:
        for record in sorted(records):
            self._run("publish", record, {"TLSA_TTL": str(ttl)})

    def delete(self, records: Iterable[Record], keep: Iterable[Record] = ()) -> None:
        """Delete ``records``; ``keep`` are the records that replace them.

        For each deleted record, the kept record at the same owner with the
        same usage, selector and matching type (the first one in sort order,
        if several) is passed as TLSA_LIVE_HASH, so a program may refuse
        (exit 1) until it is up. Without one the variable is absent and the
        program deletes unconditionally.
        """
        replacements = sorted(keep)
        for record in sorted(records):
            extra: dict[str, str] = {}
            for candidate in replacements:
                if _same_slot(candidate, record) and candidate.data != record.data:
                    extra["TLSA_LIVE_HASH"] = candidate.data.lower()
                    break
            self._run("delete", record, extra)

    def retime(self, records: Iterable[Record], ttl: int) -> None:
        """Publish the records again with the new TLSA_TTL.

        The contract has no operation for a TTL; a program that updates the
        TTL of a present record on publish makes this work, one that answers
        "already there" (exit 1) leaves the TTL as it was, and the next audit
        tries again.
        """
        self.add(records, ttl)

    # Running the program ------------------------------------------------------

    def environment(
        self, operation: str, record: Record, extra: Mapping[str, str]
    ) -> dict[str, str]:
        """The complete environment of one run: the contract, and nothing else."""
        port, proto, host = split_owner(record.owner)
        env = {
            "TLSA_OPERATION": operation,
            "TLSA_USAGE": str(record.usage),
            "TLSA_SELECTOR": str(record.selector),
            "TLSA_MATCHING": str(record.mtype),
            "TLSA_PARAM": f"{record.usage}{record.selector}{record.mtype}",
            "TLSA_PORT": port,
            "TLSA_PROTOCOL": proto,
            "TLSA_DOMAIN": host,
            "TLSA_HASH": record.data.lower(),
            "ZONE_DOMAIN": self.zone_of(record.owner),
            "RENEWED_DOMAINS": " ".join(self.renewed_domains),
            "LETSENCRYPT_DIR": self.letsencrypt_dir,
            "PATH": FIXED_PATH,
            "IFS": IFS,
        }
        env.update(extra)
        return env

    def _run(self, operation: str, record: Record, extra: Mapping[str, str]) -> None:
        """One run of the program. Every failure is one line: the program (never
        its arguments, which may hold a secret), how it ended, what that means
        in the contract, and what to do."""
        env = self.environment(operation, record, extra)
        what = f"cannot {operation} {record.short()}"
        proc = self._start(env, what)
        program = repr(self.argv[0])
        try:
            out, err_out = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            last = _last_words(*_kill_group(proc))
            raise _exec_error(
                f"exec store: {what}: program {program} did not finish within "
                f"{self.timeout:g} s and was killed with every process it started"
                f"{f' (its last words: {last})' if last else ''}; a soft error, retried at "
                "the next check: find out why it hangs (a server that does not answer?) or "
                "raise --dane-exec-timeout",
                soft=True,
            ) from None
        code = proc.returncode
        if code == 0:
            return
        if code == 1 and operation == "publish":
            logger.debug("exec store: %s: already present", what)
            return
        said = _said(out, err_out)
        if code < 0:
            raise _exec_error(
                f"exec store: {what}: program {program} was killed by signal {-code} "
                f"({_signal_name(-code)}) and {said}; a soft error, retried at the next "
                "check: if it recurs, find what kills it (the kernel's out-of-memory killer, "
                "a service manager, an administrator)",
                exit_code=128 - code,
                soft=True,
            )
        live = "TLSA_LIVE_HASH" in extra
        yet = " yet" if code == 1 and live else ""
        raise _exec_error(
            f"exec store: {what}{yet}: program {program} exited {code} and {said}; "
            f"{_meaning(code, live)}",
            exit_code=code,
            soft=code >= 128,
        )

    def _start(self, env: dict[str, str], what: str) -> subprocess.Popen[bytes]:
        """Start the program in its own session (so that a timeout can kill
        everything it started); a program that cannot start says why."""
        try:
            return subprocess.Popen(
                self.argv,
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            raise _exec_error(f"exec store: {what}: {_cannot_start(self.argv[0], err)}") from None

    # Zones ----------------------------------------------------------------------

    def zone_of(self, owner: str) -> str:
        """The zone holding ``owner``, found by SOA lookups through the resolver.

        Guessing the last two labels (as alnitak did) breaks ``co.uk``-style
        zones and delegated subzones, so that guess is only the fallback when
        DNS gives no answer, and it is logged.
        """
        if owner in self._zones:
            return self._zones[owner]
        try:
            zone = dns.resolver.zone_for_name(
                owner, resolver=self._resolver(), lifetime=self.dns_timeout
            )
            text = zone.to_text(omit_final_dot=True).lower()
        except (dns.exception.DNSException, OSError) as err:
            _, _, host = split_owner(owner)
            text = ".".join(host.split(".")[-2:])
            where = (
                f"{self.resolver[0]}:{self.resolver[1]}" if self.resolver else "the system resolver"
            )
            logger.warning(
                "exec store: cannot find the zone of %s via %s (%s); guessing %s from its "
                "last two labels",
                owner,
                where,
                type(err).__name__,
                text,
            )
        self._zones[owner] = text
        return text

    def _resolver(self) -> dns.resolver.Resolver:
        if self.resolver is None:
            return dns.resolver.Resolver()
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.resolver[0]]
        resolver.port = self.resolver[1]
        resolver.lifetime = self.dns_timeout
        return resolver


def split_owner(owner: str) -> tuple[str, str, str]:
    """``_25._tcp.mx.example.com.`` -> (``25``, ``tcp``, ``mx.example.com``)."""
    labels = dns.name.from_text(owner).to_text(omit_final_dot=True).lower().split(".")
    if (
        len(labels) < 3
        or not labels[0].startswith("_")
        or not labels[0][1:].isdigit()
        or not labels[1].startswith("_")
    ):
        raise _exec_error(f"exec store: {owner!r} is not a TLSA owner name (_PORT._PROTO.HOST)")
    return labels[0][1:], labels[1][1:], ".".join(labels[2:])


def _same_slot(a: Record, b: Record) -> bool:
    return (a.owner, a.usage, a.selector, a.mtype) == (b.owner, b.usage, b.selector, b.mtype)


def _kill_group(proc: subprocess.Popen[bytes]) -> tuple[bytes | None, bytes | None]:
    """Kill the program's process group, then reap the program; what it wrote.

    The group is killed before the leader is reaped, so its id cannot have
    been reused by an unrelated process.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # A descendant left the group (setsid) and still holds the pipes.
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return None, None


def _meaning(code: int, live: bool) -> str:
    """What an exit code other than 0 means in the exec contract, and what to do."""
    if code == 1 and live:
        return (
            "by the exec contract, exit 1 on delete means the live record (TLSA_LIVE_HASH) is "
            "not up yet: the next check asks again; if this persists, make the program see "
            "the record TLSA_LIVE_HASH names, which certbot-dane's own checks already see"
        )
    if code == 1:
        return (
            "by the exec contract, exit 1 on delete means the live record (TLSA_LIVE_HASH) is "
            "not up yet, but none was given: make the program exit 0 when the record is "
            "deleted or absent, and 2 to 127 on an error"
        )
    if code >= 128:
        return (
            "by the exec contract, 128 and above is a soft error (a passing problem, such as "
            "an unreachable server): the next check retries"
        )
    if code == 127:
        return (
            "by the exec contract, 2 to 127 is an error, and 127 is also a shell's 'command "
            f"not found': the program's PATH is only {FIXED_PATH}, so give the command it "
            "runs its full path, or install it"
        )
    if code == 126:
        return (
            "by the exec contract, 2 to 127 is an error, and 126 is also a shell's 'command "
            "not executable': make the command the program runs executable"
        )
    return (
        "by the exec contract, 2 to 127 is an error: fix what the program reports, then run "
        "'certbot-dane check'"
    )


def _cannot_start(program: str, err: OSError) -> str:
    """Why the program did not start, and what to change in --dane-exec or the file."""
    shown = repr(program)
    path = os.path.join("/", program)  # it runs in /, so a relative path starts there
    if isinstance(err, FileNotFoundError):
        if "/" not in program:
            return (
                f"program {shown} is not in the PATH programs get ({FIXED_PATH}); give "
                "--dane-exec the program's full path"
            )
        if os.path.exists(path):
            return (
                f"the interpreter {_interpreter(path)!r} on the #! line of {shown} does not "
                "exist; fix that line or install the interpreter"
            )
        return f"program {shown} does not exist; give --dane-exec the program's full path"
    if err.errno == errno.EACCES:
        if os.path.isdir(path):
            return (
                f"{shown} is a directory, not a program; give --dane-exec the program's "
                "full path"
            )
        return (
            f"program {shown} is not executable (permission denied); make it executable "
            "(chmod 755), on a file system not mounted noexec"
        )
    if err.errno == errno.ENOEXEC:
        return (
            f"{shown} is not a program this system can run (exec format error): a script "
            "needs a #! line, a binary must be built for this machine"
        )
    return f"cannot run program {shown}: {err.strerror or err}"


def _interpreter(path: str) -> str:
    """The program named on a script's #! line (never more of the file)."""
    try:
        with open(path, "rb") as script:
            first = script.readline(256)
    except OSError:
        return "?"
    words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
    return words[0] if words else "?"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _said(out: bytes | None, err: bytes | None) -> str:
    """What the program said, for the middle of a message."""
    last = _last_words(out, err)
    return f"said {last}" if last else "wrote nothing to stderr"


def _last_words(out: bytes | None, err: bytes | None) -> str:
    """The program's last line on stderr (else stdout), quoted, or ''."""
    line = _last_line(err) or _last_line(out)
    return f'"{line}"' if line else ""


def _last_line(data: bytes | None) -> str:
    """The last non-empty line, printable characters only, bounded in length."""
    if not data:
        return ""
    lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    text = "".join(c if c.isprintable() else "?" for c in lines[-1])
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


__all__ = ["FIXED_PATH", "ExecError", "ExecStore", "SoftExecError", "split_owner"]
