"""Foreground daemons of the lab: start, watch, stop, and kill on exit."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class LabError(RuntimeError):
    """A lab daemon failed to start or to answer in time."""


# Every daemon still running, so that an interpreter exit (a crashed test
# session, a forgotten stop()) never leaves named/unbound/pebble behind.
_LIVE: set[Daemon] = set()
_LIVE_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for daemon in live:
        daemon.stop(timeout=2.0)


atexit.register(_kill_leftovers)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class Daemon:
    """One daemon run in the foreground as a child process.

    Its stdout/stderr go to ``output``; ``logs`` are extra files (the daemon's
    own log) shown in error messages.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        output: Path,
        *,
        logs: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.output = output
        self.logs = list(logs)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        if self.running:
            return
        with open(self.output, "ab") as out:
            # A session of its own lets stop() signal the daemon and anything
            # it forks without touching the test process.
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def stop(self, timeout: float = 10.0, *, hard: bool = False) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``)."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self._signal(proc, signal.SIGKILL if hard else signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait(timeout=5.0)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def diagnostics(self, lines: int = 30) -> str:
        parts = [f"--- {self.name} output ({self.output}) ---", tail(self.output, lines)]
        for log in self.logs:
            parts += [f"--- {self.name} log ({log}) ---", tail(log, lines)]
        return "\n".join(parts)

    def wait_until(
        self, check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll ``check`` until it is true; fail early if the daemon died."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(
                    f"{self.name} exited with status {self.proc.returncode} before {what}\n"
                    + self.diagnostics()
                )
            try:
                if check():
                    return
            except Exception as exc:  # any failure means "not yet"
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error!r})" if last_error else ""
                raise LabError(
                    f"{self.name}: no {what} within {timeout:.0f} s{detail}\n" + self.diagnostics()
                )
            time.sleep(interval)


def free_port(taken: set[int], *, udp: bool = False) -> int:
    """A loopback port that is free now (TCP, and UDP too when ``udp``).

    The kernel picks it (bind to port 0); ``taken`` keeps one lab from using a
    port twice and is updated.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if port in taken:
                continue
            if udp:
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
                        dgram.bind(("127.0.0.1", port))
                except OSError:
                    continue
        taken.add(port)
        return port
    raise LabError("no free loopback port found")
