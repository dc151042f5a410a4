"""What the benchmark scripts share: the lab, lineages cloned from one issued
certificate, a counting DNS forwarder, process measurements and tables.

Everything talks to 127.0.0.1 only (the lab of ``tests/lab``).
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import configobj  # noqa: E402
import dns.update  # noqa: E402

from certbot_dane import danedir, state, tlsa  # noqa: E402
from certbot_dane import settings as dane_settings  # noqa: E402
from certbot_dane.lineage import version_files, version_records  # noqa: E402
from certbot_dane.rollover import State, Version  # noqa: E402
from certbot_dane.state import LineageFile, Settings  # noqa: E402
from tests.deployment import Deployment, certbot_dane_path  # noqa: E402
from tests.lab.lab import LOOPBACK, Lab  # noqa: E402

__all__ = [
    "ROOT",
    "CountingForwarder",
    "ForwarderProcess",
    "Deployment",
    "Lab",
    "Measured",
    "certbot_dane_cmd",
    "clone_lineage",
    "dane_settings_for",
    "manage_clone",
    "load_average",
    "median",
    "publish_records",
    "run_measured",
    "set_audited",
    "scratch_dir",
    "table",
]


# Output -----------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (pasted as is into docs/benchmarks.md)."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def load_average() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def scratch_dir(
    prefix: str, keep: str | None
) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """``keep`` (a path) for a run directory that stays, else a temporary one."""
    if keep:
        path = Path(keep).resolve()
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path, None
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(tmp.name), tmp


# Processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds
    cpu: float  # user + system seconds of the process
    max_rss_kib: int  # peak resident set of the process (ru_maxrss, KiB on Linux)
    returncode: int
    output: str


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command; its wall time and its own peak memory (wait4's rusage)."""
    with tempfile.TemporaryFile() as out:
        began = time.monotonic()
        proc = subprocess.Popen(
            list(argv), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(wall, cpu, int(usage.ru_maxrss), proc.returncode, text)


@functools.cache
def _cli_takes_logs_dir() -> bool:
    done = subprocess.run(
        [certbot_dane_path(), "--help"], capture_output=True, text=True, check=False
    )
    return "--logs-dir" in done.stdout


def certbot_dane_cmd(config: Path, *args: str) -> list[str]:
    """``certbot-dane --config-dir CONFIG ... ARGS``, logging beside CONFIG."""
    argv = [certbot_dane_path(), "--config-dir", str(config)]
    if _cli_takes_logs_dir():
        argv += ["--logs-dir", str(config.parent / "logs")]
    return [*argv, *args]


# A counting forwarder -----------------------------------------------------------


class CountingForwarder:
    """A DNS forwarder on 127.0.0.1 (UDP and TCP, same port) in front of one
    server. It counts the messages clients send through it, so a benchmark can
    point ``--dane-nameservers``/``--dane-resolver``/the store's credentials at
    it and count every DNS message the plugin sends. ``delay`` (seconds) is
    added before each answer, to stand in for a network round trip."""

    def __init__(self, upstream: tuple[str, int], delay: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.queries = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._udp, self._tcp = _bind_pair()
        self.port = self._udp.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> CountingForwarder:
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._udp.close()
        self._tcp.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def take(self) -> int:
        """The count so far, and reset it."""
        with self._lock:
            count, self.queries = self.queries, 0
        return count

    def _counted(self) -> None:
        with self._lock:
            self.queries += 1

    def _serve_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                return
            self._counted()
            threading.Thread(target=self._relay_udp, args=(data, peer), daemon=True).start()

    def _relay_udp(self, data: bytes, peer: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(5)
            try:
                up.sendto(data, self.upstream)
                answer, _ = up.recvfrom(65535)
            except OSError:
                return
        if self.delay:
            time.sleep(self.delay)
        try:
            self._udp.sendto(answer, peer)
        except OSError:
            pass

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._relay_tcp, args=(conn,), daemon=True).start()

    def _relay_tcp(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream, timeout=10) as up:
            conn.settimeout(10)
            while True:
                message = _read_framed(conn)
                if message is None:
                    return
                self._counted()
                up.sendall(struct.pack("!H", len(message)) + message)
                answer = _read_framed(up)
                if answer is None:
                    return
                if self.delay:
                    time.sleep(self.delay)
                conn.sendall(struct.pack("!H", len(answer)) + answer)


class ForwarderProcess:
    """Counting forwarders run in a child process, so that relaying never
    competes for the interpreter lock with the engine being measured."""

    def __init__(self, upstreams: Sequence[tuple[str, int]], delay: float = 0.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_forwarders_main, args=(child, list(upstreams), delay), daemon=True
        )
        self._process.start()
        self.ports: list[int] = self._pipe.recv()

    def addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{port}" for port in self.ports]

    def take(self) -> list[int]:
        """Messages each forwarder relayed since the last take."""
        self._pipe.send("take")
        counts: list[int] = self._pipe.recv()
        return counts

    def __enter__(self) -> ForwarderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipe.send("stop")
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()


def _forwarders_main(pipe: Any, upstreams: list[tuple[str, int]], delay: float) -> None:
    forwarders = [CountingForwarder(tuple(u), delay).__enter__() for u in upstreams]
    pipe.send([f.port for f in forwarders])
    while True:
        command = pipe.recv()
        if command == "take":
            pipe.send([f.take() for f in forwarders])
        else:
            break
    for forwarder in forwarders:
        forwarder.__exit__(None, None, None)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((LOOPBACK, 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((LOOPBACK, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(128)
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def _read_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _read_framed(conn: socket.socket) -> bytes | None:
    head = _read_exact(conn, 2)
    if head is None:
        return None
    return _read_exact(conn, struct.unpack("!H", head)[0])


# Lineages cloned from one issued certificate ----------------------------------


def clone_lineage(
    source: Path,
    source_name: str,
    config: Path,
    name: str,
    *,
    live: int,
    dane: dict[str, str] | None,
) -> Path:
    """Make lineage ``name`` in ``config`` from ``source_name`` in ``source``.

    archive/ is copied (every version), live/ links point at version ``live``,
    and renewal/NAME.conf is the source's with names and paths adjusted. With
    ``dane`` (the ``dane_*`` keys), the conf says ``installer = dane``;
    without, it names no installer. certbot cannot tell the clone from a
    lineage it issued; it is not due (Pebble's certificates last 5 years).
    """
    archive = config / "archive" / name
    shutil.copytree(source / "archive" / source_name, archive)
    live_dir = config / "live" / name
    live_dir.mkdir(parents=True)
    for kind in danedir.KINDS:
        os.symlink(f"../../archive/{name}/{kind}{live}.pem", live_dir / f"{kind}.pem")
    conf = configobj.ConfigObj(
        str(source / "renewal" / f"{source_name}.conf"), encoding="utf-8"
    )
    conf.filename = str(config / "renewal" / f"{name}.conf")
    conf["archive_dir"] = str(archive)
    for kind in danedir.KINDS:
        conf[kind] = str(live_dir / f"{kind}.pem")
    params = conf["renewalparams"]
    params["config_dir"] = str(config)
    params["work_dir"] = str(config.parent / "work")
    params["logs_dir"] = str(config.parent / "logs")
    for key in list(params):
        if key == "installer" or key.startswith("dane_"):
            del params[key]
    if dane is not None:
        params["installer"] = "dane"
        params.update(dane)
    conf.pop("acme_renewal_info", None)
    (config / "renewal").mkdir(exist_ok=True)
    conf.write()
    return archive


def dane_settings_for(config: Path, dane: dict[str, str], credentials: Path) -> Settings:
    """The Settings the installer derives from these ``dane_*`` renewal keys."""
    options = {
        "tlsa": dane.get("dane_tlsa"),
        "directory": None,
        "dns": None,
        "credentials": None,
        "resolver": dane.get("dane_resolver"),
        "nameservers": dane.get("dane_nameservers"),
        "reload": None,
        "record_ttl": int(dane["dane_record_ttl"]) if "dane_record_ttl" in dane else None,
        "hold_margin": int(dane["dane_hold_margin"]) if "dane_hold_margin" in dane else None,
        "exec": None,
        "exec_timeout": None,
        "api_url": None,
    }
    namespace = SimpleNamespace(
        config_dir=str(config),
        authenticator="dns-rfc2136",
        dns_rfc2136_credentials=str(credentials),
    )
    return dane_settings.from_options(options, namespace, None)


def manage_clone(
    config: Path,
    name: str,
    settings: Settings,
    served: int,
    now: float | None = None,
    audited: float | None = None,
) -> frozenset[tlsa.Record]:
    """Plugin state for a clone whose version ``served`` is settled: staged,
    linked, its records owned, published and proven live, each owner name its
    own place (no alias), as a rollover leaves them. ``audited``: when the
    records were last audited (default ``now``). Returns those records (the
    caller puts them in DNS).
    """
    now = now if now is not None else time.time()
    files = version_files(config / "archive" / name, served)
    records = version_records(files, tlsa.parse_specs(settings.targets))
    danedir.stage(settings.directory, name, served, files)
    danedir.switch(settings.directory, name, served)
    owners = sorted({r.owner.lower() for r in records})
    data = LineageFile(
        lineage=name,
        settings=settings,
        rollover=State(
            served=Version(served, records),
            owned=records,
            published=records,
            live=records,
            aliases=tuple((owner, owner) for owner in owners),
            audited_at=audited if audited is not None else now,
        ),
    )
    data.note("installed", f"targets {settings.targets} (benchmark clone)", now)
    data.last_check = now
    state.save(config, data)
    return records


def set_audited(config: Path, names: Iterable[str], when: float) -> None:
    """Date the last audit of these lineages (state files rewritten, outside a measurement)."""
    for name in names:
        data = state.load(config, name)
        assert data is not None
        data.rollover = replace(data.rollover, audited_at=when)
        state.save(config, data)


def publish_records(lab: Lab, records: Iterable[tlsa.Record], ttl: int, chunk: int = 100) -> None:
    """Put records into the lab's zone with a few large RFC 2136 updates."""
    import dns.name
    import dns.rcode

    items = sorted(records)
    for start in range(0, len(items), chunk):
        update: dns.update.UpdateMessage = lab.update()
        for record in items[start : start + chunk]:
            update.add(dns.name.from_text(record.owner), ttl, record.rdata())
        rcode = lab.send_update(update, timeout=30)
        if rcode != dns.rcode.NOERROR:
            raise RuntimeError(f"update failed: {dns.rcode.to_text(rcode)}")
        # One update at a time: BIND 9.18's inline signing can drop a large
        # update that arrives while it still applies the previous one.
        lab.wait_signed(items[min(start + chunk, len(items)) - 1].owner, "TLSA", timeout=30)
