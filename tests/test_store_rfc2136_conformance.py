"""The store conformance suite against BIND 9 (RFC 2136 with TSIG)."""
from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack

import dns.message
import dns.query
import dns.rdatatype
import pytest

from certbot_dane.dns.base import RecordStore
from certbot_dane.dns.rfc2136 import Rfc2136Store
from certbot_dane.tlsa import Record
from tests.conformance import *  # noqa: F403 - the shared suite
from tests.conformance import Harness
from tests.lab.lab import Lab
from tests.netfakes import closed_port, misbehaving_server

pytestmark = pytest.mark.lab

WRONG_SECRET = base64.b64encode(b"not the lab's key, 32 bytes long").decode()


class Rfc2136Harness(Harness):
    def __init__(self, lab: Lab, stack: ExitStack) -> None:
        self.lab = lab
        self.stack = stack
        self.zone = lab.zone
        self.secrets = (lab.tsig_secret, WRONG_SECRET)

    def _store(self, port: int, secret: str, timeout: float = 5.0) -> Rfc2136Store:
        return Rfc2136Store(
            "127.0.0.1", port, self.lab.tsig_name, secret, "HMAC-SHA256", timeout=timeout
        )

    def store(self) -> RecordStore:
        return self._store(self.lab.auth_port, self.lab.tsig_secret)

    def other_host(self) -> RecordStore:
        return self._store(self.lab.auth_port, self.lab.tsig_secret)

    def backend_records(self, owner: str) -> set[Record]:
        query = dns.message.make_query(owner, dns.rdatatype.TLSA)
        response = dns.query.tcp(query, "127.0.0.1", port=self.lab.auth_port, timeout=5)
        return {
            Record.from_rdata(owner, rd)
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TLSA
            for rd in rrset
        }

    def failing(self) -> Iterator[tuple[str, RecordStore, tuple[str, ...]]]:
        every = ("add", "delete", "list")
        yield "auth refused", self._store(self.lab.auth_port, WRONG_SECRET), ("add", "delete")
        yield "server down", self._store(closed_port(), self.lab.tsig_secret, timeout=1), every
        silent = self.stack.enter_context(misbehaving_server(None))
        yield "timeout", self._store(silent, self.lab.tsig_secret, timeout=0.5), every
        garbage = self.stack.enter_context(misbehaving_server(b"\x00\x01garbage"))
        yield "malformed answer", self._store(garbage, self.lab.tsig_secret, timeout=1), every


@pytest.fixture
def harness(lab: Lab) -> Iterator[Harness]:
    with ExitStack() as stack:
        yield Rfc2136Harness(lab, stack)
