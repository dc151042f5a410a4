"""Small scripted TLS servers on loopback, for the STARTTLS dialects and the probe.

A :class:`ScriptedServer` runs a plain-text dialogue written by the test (a
function of the connection), then, when the dialogue says so, a TLS
handshake with a leaf certificate signed by a throwaway CA. It records what
the client said and the name it asked for (SNI), so a test can check both
sides of the dialogue without a real IMAP, POP3 or XMPP server.
"""
from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from cryptography import x509

from tests.certs import TinyCA, key_pem, new_key, pem


class Peer:
    """The server's side of one connection: read lines or bytes, send text."""

    def __init__(self, conn: socket.socket, heard: list[str]) -> None:
        self.conn = conn
        self.reader = conn.makefile("rb", buffering=0)
        self.heard = heard

    def send(self, *lines: str) -> None:
        self.conn.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def send_raw(self, text: str) -> None:
        self.conn.sendall(text.encode())

    def line(self) -> str:
        text = self.reader.readline().decode("ascii", "replace").rstrip("\r\n")
        self.heard.append(text)
        return text

    def until(self, marker: bytes) -> str:
        """Bytes up to and including ``marker`` (XMPP has no lines)."""
        data = b""
        while marker not in data:
            chunk = self.conn.recv(1)
            if not chunk:
                break
            data += chunk
        text = data.decode("utf-8", "replace")
        self.heard.append(text)
        return text


#: A dialogue: True hands the connection to TLS, False closes it.
Script = Callable[[Peer], bool]


class Leaf:
    """A leaf certificate for ``names`` and its CA, as one PEM file (key,
    leaf, CA) that ``ssl`` can load."""

    def __init__(self, names: list[str], directory: Path) -> None:
        self.ca = TinyCA()
        key = new_key()
        self.cert = self.ca.issue(names, key)
        self.path = directory / f"{names[0]}.pem"
        self.path.write_bytes(key_pem(key) + pem(self.cert) + pem(self.ca.cert))


class ScriptedServer:
    """Serves ``script`` to each connection on 127.0.0.1, then TLS with ``leaf``."""

    def __init__(self, script: Script, leaf: Leaf | None = None) -> None:
        self.script = script
        self._scratch = tempfile.TemporaryDirectory(prefix="tls-script-")
        self.leaf = leaf or Leaf(["mail.example.com"], Path(self._scratch.name))
        self.heard: list[str] = []
        self.server_names: list[str | None] = []
        self.errors: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def cert(self) -> x509.Certificate:
        return self.leaf.cert

    def __enter__(self) -> ScriptedServer:
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
        self._scratch.cleanup()

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.leaf.path))

        def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.server_names.append(name)

        context.sni_callback = sni  # type: ignore[assignment]
        return context

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    if self.script(Peer(conn, self.heard)):
                        with self._context().wrap_socket(conn, server_side=True) as tls:
                            tls.recv(1)  # until the client closes
                except (OSError, ssl.SSLError) as err:
                    self.errors.append(str(err))
