"""Loopback servers that misbehave on purpose: silent, or answering garbage."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig


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


class FakeDns:
    """A UDP+TCP DNS server on 127.0.0.1 for one zone, in memory.

    It answers SOA queries (the apex in the answer or authority section),
    TLSA queries from what updates stored, and applies RFC 2136 adds and
    single-record deletes. Every message it receives is kept in
    :attr:`received`, parsed with the ``keyring``, so a signed message whose
    MAC does not verify never gets here (the server then stays silent).

    Set :attr:`update_rcode` to answer updates with that rcode instead of
    applying them, :attr:`sign_answers` False to answer signed messages
    unsigned (as PowerDNS refuses a key), and :attr:`answer_secret` to sign
    answers with another secret than the question's (an answer that does not
    verify).
    """

    def __init__(self, zone: str = "example.test.", keyring: dict | None = None) -> None:
        self.zone = dns.name.from_text(zone)
        self.keyring = keyring
        self.update_rcode = dns.rcode.NOERROR
        self.sign_answers = True
        self.answer_secret: bytes | None = None
        self.received: list[dns.message.Message] = []
        self.records: dict[dns.name.Name, set[object]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(("127.0.0.1", 0))
        self.port = self._tcp.getsockname()[1]
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", self.port))
        self._tcp.listen(16)
        self._tcp.settimeout(0.1)
        self._udp.settimeout(0.1)
        self._threads = [
            threading.Thread(target=self._serve_tcp, daemon=True),
            threading.Thread(target=self._serve_udp, daemon=True),
        ]

    def __enter__(self) -> FakeDns:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._tcp.close()
        self._udp.close()

    def _answer(self, wire: bytes, max_size: int = 65535) -> bytes | None:
        try:
            query = dns.message.from_wire(wire, keyring=self.keyring)
        except dns.exception.DNSException:
            return None
        with self._lock:
            self.received.append(query)
            response = dns.message.make_response(query)
            if query.opcode() != dns.opcode.UPDATE:
                self._lookup(query, response)
            elif self.update_rcode == dns.rcode.NOERROR:
                self._apply(query)
            else:
                response.set_rcode(self.update_rcode)
            if not self.sign_answers:
                response.tsig = None
            elif self.answer_secret is not None and query.had_tsig:
                response.keyring = dns.tsig.Key(
                    query.keyname, self.answer_secret, query.keyalgorithm
                )
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            # What a server does when a UDP answer does not fit: an empty,
            # truncated answer that sends the client to TCP.
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            return truncated.to_wire()

    def _apply(self, update: dns.message.Message) -> None:
        for rrset in update.authority:  # the update section
            held = self.records.setdefault(rrset.name, set())
            for rdata in rrset:
                if rrset.deleting is None:
                    held.add(rdata)
                elif rrset.deleting == dns.rdataclass.NONE:
                    held.discard(rdata)

    def _lookup(self, query: dns.message.Message, response: dns.message.Message) -> None:
        question = query.question[0]
        response.flags |= dns.flags.AA
        if not question.name.is_subdomain(self.zone):
            response.set_rcode(dns.rcode.REFUSED)
            return
        soa = dns.rrset.from_text(
            self.zone, 60, "IN", "SOA", f"ns.{self.zone} host.{self.zone} 1 60 60 60 60"
        )
        if question.rdtype == dns.rdatatype.SOA and question.name == self.zone:
            response.answer.append(soa)
            return
        held = self.records.get(question.name)
        if question.rdtype == dns.rdatatype.TLSA and held:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.TLSA)
            for rdata in held:
                rrset.add(rdata, 60)
            response.answer.append(rrset)
        else:
            response.authority.append(soa)

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except OSError:
                continue
            answer = self._answer(wire, max_size=512)
            if answer is not None:
                self._udp.sendto(answer, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    while True:
                        size = _read(conn, 2)
                        if size is None:
                            break
                        wire = _read(conn, int.from_bytes(size, "big"))
                        answer = self._answer(wire or b"")
                        if answer is None:
                            break
                        conn.sendall(len(answer).to_bytes(2, "big") + answer)
                except OSError:
                    pass


def _read(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


Reply = Callable[[dns.message.Message], list[tuple[float, dns.message.Message]]]


class ScriptedDns:
    """A UDP name server on 127.0.0.1 that answers as ``reply(query)`` says:
    a list of (delay in seconds, response), possibly several, possibly none.

    Counts the questions, and the most it held unanswered at once.
    """

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.address = ("127.0.0.1", int(self.sock.getsockname()[1]))
        self.pending: list[tuple[float, bytes, tuple]] = []
        self.most_open = 0
        self.questions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(65535)
                self.questions += 1
                now = time.monotonic()
                for delay, response in self.reply(dns.message.from_wire(wire)):
                    self.pending.append((now + delay, response.to_wire(), peer))
            except TimeoutError:
                pass
            self.most_open = max(self.most_open, len({p for _, _, p in self.pending}))
            now = time.monotonic()
            for item in sorted(i for i in self.pending if i[0] <= now):
                self.sock.sendto(item[1], item[2])
                self.pending.remove(item)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class LaggingSecondary:
    """A secondary authoritative server whose zone transfers stopped.

    It relays every question to the primary (UDP, as asked) until
    :meth:`freeze`; from then on, TLSA questions at a frozen owner get the
    answer the primary gave at that moment, signatures included, whatever the
    primary serves now: the new records never arrive here.
    """

    def __init__(self, primary: tuple[str, int]) -> None:
        self.primary = primary
        self.frozen: dict[dns.name.Name, bytes] = {}
        self.server = ScriptedDns(self._reply)
        self.address = self.server.address

    def freeze(self, owner: str) -> None:
        query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=True)
        query.flags &= ~dns.flags.RD
        answer = dns.query.udp(query, self.primary[0], port=self.primary[1], timeout=3)
        self.frozen[dns.name.from_text(owner)] = answer.to_wire()

    def _reply(self, query: dns.message.Message) -> list[tuple[float, dns.message.Message]]:
        question = query.question[0]
        held = self.frozen.get(question.name)
        if held is not None and question.rdtype == dns.rdatatype.TLSA:
            answer = dns.message.from_wire(held)
            answer.id = query.id
            return [(0.0, answer)]
        try:
            relayed = dns.query.udp(query, self.primary[0], port=self.primary[1], timeout=3)
        except (dns.exception.DNSException, OSError):
            return []
        return [(0.0, relayed)]

    def close(self) -> None:
        self.server.close()
