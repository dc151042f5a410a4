"""A TLS service that reads its certificate anew for every connection.

It stands in for a mail server such as Postfix's smtpd, which loads
``fullchain.pem``/``privkey.pem`` per session: the moment a certificate file
(or the symlink to it) changes, the very next client sees the new certificate.
That is the strictest test of "switch only when the TLSA records are live".

With ``per_connection=False`` it is the other kind of service: one that
loads its certificate when it starts and keeps presenting it until it is
restarted (:meth:`DaneService.restart`), whatever the links say meanwhile.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType

GREETING = b"220 dane-lab ESMTP ready\r\n"


class DaneService:
    """TLS on 127.0.0.1:``port`` (0: a free one, see ``.port`` after start)
    serving ``directory``/fullchain.pem with ``directory``/privkey.pem
    (symlinks followed) as they are at each connection, or as they were at
    the start or the last :meth:`restart` when ``per_connection`` is False."""

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        *,
        handshake_timeout: float = 10.0,
        per_connection: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.handshake_timeout = handshake_timeout
        self.per_connection = per_connection
        self.restarts = 0
        self._loaded: ssl.SSLContext | None = None
        self.connections = 0
        self.handshakes = 0
        self.load_errors = 0
        self.handshake_errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._scratch_dir: tempfile.TemporaryDirectory[str] | None = None
        self._scratch = ""

    def __enter__(self) -> DaneService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def fullchain(self) -> Path:
        return self.directory / "fullchain.pem"

    @property
    def privkey(self) -> Path:
        return self.directory / "privkey.pem"

    def start(self) -> None:
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="dane-service-")
        self._scratch = self._scratch_dir.name
        if not self.per_connection:
            self._loaded = self._load()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        # Accept with a timeout so stop() is noticed promptly.
        sock.settimeout(0.2)
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"dane-service-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._scratch_dir is not None:
            self._scratch_dir.cleanup()
            self._scratch_dir = None

    def restart(self) -> None:
        """Load the certificate anew, as a restart of the service would; the
        listening socket stays open, so no client is refused meanwhile."""
        context = self._load()
        with self._lock:
            self._loaded = context
            self.restarts += 1

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _context(self) -> ssl.SSLContext:
        if self.per_connection:
            return self._load()
        with self._lock:
            assert self._loaded is not None
            return self._loaded

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        combined = self.directory / "combined.pem"
        if combined.exists():
            # One file holding key and chain, read in one open, as Postfix
            # reads smtpd_tls_chain_files: a switch cannot split it. Python's
            # ssl opens a path twice (the chain, then the key), so it is given
            # a private copy of what the one read returned.
            data = combined.read_bytes()
            with tempfile.NamedTemporaryFile(dir=self._scratch, suffix=".pem") as snapshot:
                snapshot.write(data)
                snapshot.flush()
                context.load_cert_chain(snapshot.name)
        else:
            context.load_cert_chain(str(self.fullchain), str(self.privkey))
        return context

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(self.handshake_timeout)
        try:
            try:
                context = self._context()
            except (OSError, ssl.SSLError, ValueError) as exc:
                # Like a mail server that cannot read its key pair: the
                # client gets no TLS at all.
                self._record(f"load: {exc}", load=True)
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    with self._lock:
                        self.handshakes += 1
                    tls.sendall(GREETING)
                    try:
                        tls.unwrap()
                    except (OSError, ssl.SSLError):
                        pass  # clients often just close
            except (OSError, ssl.SSLError) as exc:
                # Includes clients that abort because DANE did not match.
                self._record(f"handshake: {exc}", load=False)
        finally:
            conn.close()

    def _record(self, message: str, *, load: bool) -> None:
        with self._lock:
            if load:
                self.load_errors += 1
            else:
                self.handshake_errors += 1
            self.last_error = message
