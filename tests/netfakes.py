"""Loopback servers that misbehave on purpose: silent, or answering garbage."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def misbehaving_server(garbage: bytes | None) -> Iterator[int]:
    """A UDP+TCP port on 127.0.0.1 that never answers (garbage=None) or
    answers every request with ``garbage``. Yields the port."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp.listen(16)
    tcp.settimeout(0.2)
    udp.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve_tcp() -> None:
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except OSError:
                continue
            held.append(conn)
            if garbage is not None:
                try:
                    conn.recv(65535)
                    conn.sendall(len(garbage).to_bytes(2, "big") + garbage)
                except OSError:
                    pass

    def serve_udp() -> None:
        while not stop.is_set():
            try:
                _, peer = udp.recvfrom(65535)
            except OSError:
                continue
            if garbage is not None:
                udp.sendto(garbage, peer)

    threads = [threading.Thread(target=f, daemon=True) for f in (serve_tcp, serve_udp)]
    for t in threads:
        t.start()
    try:
        yield port
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2)
        for s in (tcp, udp, *held):
            s.close()


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
