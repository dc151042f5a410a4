"""dnsio.exchange against loopback servers that answer late, wrongly or never."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import dns.exception
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from certbot_dane import dnsio
from tests.netfakes import Reply, ScriptedDns


@pytest.fixture
def server() -> Iterator[Callable[[Reply], ScriptedDns]]:
    started: list[ScriptedDns] = []

    def start(reply: Reply) -> ScriptedDns:
        started.append(ScriptedDns(reply))
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


def questions(server: ScriptedDns, count: int) -> list[tuple[dns.message.Message, dnsio.Address]]:
    return [
        (dns.message.make_query(f"q{i}.example.", dns.rdatatype.TXT), server.address)
        for i in range(count)
    ]


def test_answers_arriving_out_of_order_are_matched_to_their_questions(
    server: Callable[[Reply], ScriptedDns],
) -> None:
    def late_first(query: dns.message.Message) -> list[tuple[float, dns.message.Message]]:
        index = int(query.question[0].name.labels[0][1:])
        return [(0.2 - index * 0.04, answer(query, f"a{index}"))]

    s = server(late_first)
    answers = dnsio.exchange(questions(s, 5), timeout=2)
    assert [txt(a) for a in answers] == [f"a{i}" for i in range(5)]


def test_an_answer_to_another_question_is_ignored(server: Callable[[Reply], ScriptedDns]) -> None:
    def decoy_first(query: dns.message.Message) -> list[tuple[float, dns.message.Message]]:
        decoy = dns.message.make_query("other.example.", dns.rdatatype.TXT)
        decoy.id = query.id  # right ID, wrong question
        wrong_id = answer(query, "wrong id")
        wrong_id.id = (query.id + 1) % 65536
        return [(0.0, answer(decoy, "decoy")), (0.01, wrong_id), (0.05, answer(query, "right"))]

    s = server(decoy_first)
    assert [txt(a) for a in dnsio.exchange(questions(s, 3), timeout=2)] == ["right"] * 3


def test_a_silent_server_times_out_without_hiding_other_answers(
    server: Callable[[Reply], ScriptedDns],
) -> None:
    s = server(lambda query: [(0.0, answer(query, "ok"))])
    silent = server(lambda query: [])
    asked = questions(s, 2) + [(q, silent.address) for q, _ in questions(silent, 2)]
    answers = dnsio.exchange(asked, timeout=0.3)
    assert [txt(a) for a in answers[:2]] == ["ok", "ok"]
    assert all(isinstance(a, dns.exception.Timeout) for a in answers[2:])
    assert silent.questions == 2


def test_no_more_than_the_limit_are_in_flight(server: Callable[[Reply], ScriptedDns]) -> None:
    s = server(lambda query: [(0.05, answer(query, "ok"))])
    answers = dnsio.exchange(questions(s, 9), timeout=2, limit=3)
    assert [txt(a) for a in answers] == ["ok"] * 9
    assert 1 <= s.most_open <= 3


def test_an_unreachable_address_is_an_error_in_its_slot(
    server: Callable[[Reply], ScriptedDns],
) -> None:
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
