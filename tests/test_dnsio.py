"""dnsio.exchange against loopback servers that answer late, wrongly or never."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import dns.exception
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from certbot_dane import dnsio

Reply = Callable[[dns.message.Message], list[tuple[float, dns.message.Message]]]


class Server:
    """A UDP server on 127.0.0.1: ``reply(query)`` gives (delay, response) pairs.

    Counts the most questions it held unanswered at once.
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


@pytest.fixture
def server() -> Iterator[Callable[[Reply], Server]]:
    started: list[Server] = []

    def start(reply: Reply) -> Server:
        started.append(Server(reply))
        return started[-1]

    yield start
    for s in started:
        s.close()


def answer(query: dns.message.Message, text: str) -> dns.message.Message:
    response = dns.message.make_response(query)
    name = query.question[0].name
    response.answer.append(dns.rrset.from_text(name, 30, "IN", "TXT", f'"{text}"'))
    return response


def txt(response: object) -> str:
    assert isinstance(response, dns.message.Message)
    return response.answer[0][0].strings[0].decode()


def questions(server: Server, count: int) -> list[tuple[dns.message.Message, dnsio.Address]]:
    return [
        (dns.message.make_query(f"q{i}.example.", dns.rdatatype.TXT), server.address)
        for i in range(count)
    ]


def test_answers_arriving_out_of_order_are_matched_to_their_questions(
    server: Callable[[Reply], Server],
) -> None:
    def late_first(query: dns.message.Message) -> list[tuple[float, dns.message.Message]]:
        index = int(query.question[0].name.labels[0][1:])
        return [(0.2 - index * 0.04, answer(query, f"a{index}"))]

    s = server(late_first)
    answers = dnsio.exchange(questions(s, 5), timeout=2)
    assert [txt(a) for a in answers] == [f"a{i}" for i in range(5)]


def test_an_answer_to_another_question_is_ignored(server: Callable[[Reply], Server]) -> None:
    def decoy_first(query: dns.message.Message) -> list[tuple[float, dns.message.Message]]:
        decoy = dns.message.make_query("other.example.", dns.rdatatype.TXT)
        decoy.id = query.id  # right ID, wrong question
        wrong_id = answer(query, "wrong id")
        wrong_id.id = (query.id + 1) % 65536
        return [(0.0, answer(decoy, "decoy")), (0.01, wrong_id), (0.05, answer(query, "right"))]

    s = server(decoy_first)
    assert [txt(a) for a in dnsio.exchange(questions(s, 3), timeout=2)] == ["right"] * 3


def test_a_silent_server_times_out_without_hiding_other_answers(
    server: Callable[[Reply], Server],
) -> None:
    s = server(lambda query: [(0.0, answer(query, "ok"))])
    silent = server(lambda query: [])
    asked = questions(s, 2) + [(q, silent.address) for q, _ in questions(silent, 2)]
    answers = dnsio.exchange(asked, timeout=0.3)
    assert [txt(a) for a in answers[:2]] == ["ok", "ok"]
    assert all(isinstance(a, dns.exception.Timeout) for a in answers[2:])
    assert silent.questions == 2


def test_no_more_than_the_limit_are_in_flight(server: Callable[[Reply], Server]) -> None:
    s = server(lambda query: [(0.05, answer(query, "ok"))])
    answers = dnsio.exchange(questions(s, 9), timeout=2, limit=3)
    assert [txt(a) for a in answers] == ["ok"] * 9
    assert 1 <= s.most_open <= 3


def test_an_unreachable_address_is_an_error_in_its_slot(server: Callable[[Reply], Server]) -> None:
    s = server(lambda query: [(0.0, answer(query, "ok"))])
    query = dns.message.make_query("x.example.", dns.rdatatype.TXT)
    answers = dnsio.exchange([(query, ("not-an-address", 53)), *questions(s, 1)], timeout=1)
    assert isinstance(answers[0], Exception)
    assert txt(answers[1]) == "ok"


def test_the_in_flight_limit_leaves_descriptors_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsio.resource, "getrlimit", lambda _which: (1024, 4096))
    assert dnsio.in_flight_limit() == 256
    monkeypatch.setattr(dnsio.resource, "getrlimit", lambda _which: (100, 4096))
    assert dnsio.in_flight_limit() == 25
