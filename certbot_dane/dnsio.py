"""Many DNS questions at once, from one thread.

A check of hundreds of pending lineages asks hundreds of questions; asked one
after another (or on a handful of threads) they cost one round trip each.
:func:`exchange` sends them all over UDP, each from its own socket (so each
keeps its own random source port and ID), and collects the answers as they
arrive, with at most ``limit`` in flight. An answer that does not match its
question (wrong source, wrong ID or question) is ignored, as ``dns.query``
does; a truncated one is asked again over TCP. A signed question whose answer
fails TSIG (the server did not take the key, or the answer does not verify)
gets that error as its answer, as ``dns.query.udp`` raises it: waiting on
would only turn a wrong key into a timeout.

Messages are built and parsed by dnspython; nothing here writes wire data.
"""
from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Sequence

import dns.exception
import dns.inet
import dns.message
import dns.query
import dns.tsig

Address = tuple[str, int]
Answer = dns.message.Message | Exception

#: What dnspython raises when a signed answer's TSIG says no.
TSIG_ERRORS = (
    dns.tsig.PeerError,
    dns.tsig.BadSignature,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
    dns.tsig.BadTime,
)

#: Sockets open at once, whatever the descriptor limit allows.
MAX_IN_FLIGHT = 256


def in_flight_limit() -> int:
    """Sockets open at once (see :func:`descriptor_share`)."""
    return descriptor_share(MAX_IN_FLIGHT)


def descriptor_share(most: int) -> int:
    """A quarter of the descriptors this process may open, between 1 and ``most``.

    A check of many lineages holds a lock file per lineage and a socket per
    question in flight: each takes at most a quarter, leaving the rest.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return most
    return max(1, min(most, soft // 4))


def exchange(
    questions: Sequence[tuple[dns.message.Message, Address]],
    timeout: float,
    limit: int | None = None,
) -> list[Answer]:
    """The answer to each question, in order; an exception where there is none.

    ``timeout`` bounds each question from the moment it is sent. Failures are
    returned, never raised: one server down must not hide the other answers.
    """
    answers: list[Answer | None] = [None] * len(questions)
    truncated: list[int] = []
    waiting = list(range(len(questions) - 1, -1, -1))
    limit = limit or in_flight_limit()
    with selectors.DefaultSelector() as selector:
        flying: dict[int, tuple[socket.socket, float]] = {}
        try:
            while waiting or flying:
                while waiting and len(flying) < limit:
                    index = waiting.pop()
                    sock = _send(questions[index], answers, index)
                    if sock is not None:
                        flying[index] = (sock, time.monotonic() + timeout)
                        selector.register(sock, selectors.EVENT_READ, index)
                if not flying:
                    continue
                soonest = min(deadline for _, deadline in flying.values())
                for key, _ in selector.select(max(0.0, soonest - time.monotonic())):
                    index = key.data
                    if _receive(questions[index], flying[index][0], answers, index):
                        if answers[index] is None:
                            truncated.append(index)
                        _close(selector, flying.pop(index)[0])
                now = time.monotonic()
                for index in [i for i, (_, deadline) in flying.items() if deadline <= now]:
                    answers[index] = dns.exception.Timeout(timeout=timeout)
                    _close(selector, flying.pop(index)[0])
        finally:
            for sock, _ in flying.values():
                _close(selector, sock)
    for index in truncated:
        query, (host, port) = questions[index]
        try:
            answers[index] = dns.query.tcp(query, host, timeout=timeout, port=port)
        except (dns.exception.DNSException, OSError) as err:
            answers[index] = err
    return [a if a is not None else dns.exception.Timeout() for a in answers]


def _send(
    question: tuple[dns.message.Message, Address], answers: list[Answer | None], index: int
) -> socket.socket | None:
    query, (host, port) = question
    try:
        family = dns.inet.af_for_address(host)
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except (OSError, ValueError) as err:
        answers[index] = err
        return None
    try:
        sock.setblocking(False)
        sock.sendto(query.to_wire(), (host, port))
    except OSError as err:
        sock.close()
        answers[index] = err
        return None
    return sock


def _receive(
    question: tuple[dns.message.Message, Address],
    sock: socket.socket,
    answers: list[Answer | None],
    index: int,
) -> bool:
    """Read one datagram; True when the question is done (answered or truncated)."""
    query, (host, port) = question
    try:
        wire, source = sock.recvfrom(65535)
    except BlockingIOError:
        return False
    except OSError as err:  # e.g. ICMP port unreachable
        answers[index] = err
        return True
    if not _same_address(source, host, port):
        return False
    try:
        response = dns.message.from_wire(
            wire, keyring=query.keyring, request_mac=query.mac, raise_on_truncation=True
        )
    except dns.message.Truncated:
        return True  # answers[index] stays None: asked again over TCP
    except TSIG_ERRORS as err:
        answers[index] = err
        return True
    except dns.exception.DNSException:
        return False
    if not query.is_response(response):
        return False
    answers[index] = response
    return True


def _same_address(source: tuple, host: str, port: int) -> bool:
    return source[1] == port and _packed(source[0]) == _packed(host)


def _packed(address: str) -> bytes | None:
    """The address as bytes, so that ``::1`` and ``0::1`` compare equal."""
    address = address.split("%", 1)[0]  # an IPv6 scope (fe80::1%eth0)
    try:
        return dns.inet.inet_pton(dns.inet.af_for_address(address), address)
    except (ValueError, OSError):
        return None


def _close(selector: selectors.BaseSelector, sock: socket.socket) -> None:
    selector.unregister(sock)
    sock.close()
