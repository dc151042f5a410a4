"""Fakes for the Route 53 store's tests.

* :func:`fake_route53`: a loopback HTTP server speaking just enough of the
  Route 53 REST/XML API to produce answers the emulator cannot (an IAM
  refusal with AWS's own error body, non-XML, bad TLSA text, routing policies).
* :class:`StrictRoute53`: wraps a boto3 client for moto and enforces the
  change-batch rules of the real Route 53 that moto does not check (a DELETE
  must match the current RRset exactly, a CREATE must not find one), so that
  the store's compare-and-swap is tested against the semantics it relies on.
  Checked batches are applied to moto as UPSERTs (see ``_apply``).
  It also counts calls and can run another host's change between a read and
  a write, or report a change as PENDING for a while.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import botocore.exceptions

NS = "https://route53.amazonaws.com/doc/2013-04-01/"

#: (method, path, query) -> (HTTP status, body)
Handler = Callable[[str, str, dict[str, str]], tuple[int, bytes]]


@dataclass
class FakeServer:
    """A running fake: its URL and the requests it received."""

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def fake_route53(handler: Handler) -> Iterator[FakeServer]:
    """Serve ``handler`` on 127.0.0.1 (a free port) until the block ends."""
    server_box: list[FakeServer] = []

    class Handle(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            server_box[0].requests.append((self.command, self.path))
            path, _, query = self.path.partition("?")
            status, body = handler(self.command, path, dict(parse_qsl(query)))
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            """Keep test output quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    httpd.daemon_threads = True
    server_box.append(FakeServer(f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_box[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def zones_xml(*zones: tuple[str, str, bool]) -> bytes:
    """A ListHostedZones answer for (id, name, private) triples."""
    items = "".join(
        f"<HostedZone><Id>/hostedzone/{zid}</Id><Name>{escape(name)}</Name>"
        f"<CallerReference>{zid}</CallerReference><Config><PrivateZone>"
        f"{str(private).lower()}</PrivateZone></Config>"
        "<ResourceRecordSetCount>2</ResourceRecordSetCount></HostedZone>"
        for zid, name, private in zones
    )
    return (
        f'<?xml version="1.0"?><ListHostedZonesResponse xmlns="{NS}"><HostedZones>{items}'
        "</HostedZones><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems>"
        "</ListHostedZonesResponse>"
    ).encode()


def rrsets_xml(name: str | None = None, values: tuple[str, ...] = (), extra: str = "") -> bytes:
    """A ListResourceRecordSets answer with one TLSA RRset (or none)."""
    body = ""
    if name is not None:
        records = "".join(
            f"<ResourceRecord><Value>{escape(v)}</Value></ResourceRecord>" for v in values
        )
        body = (
            f"<ResourceRecordSet><Name>{escape(name)}</Name><Type>TLSA</Type>{extra}"
            f"<TTL>300</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>"
        )
    return (
        f'<?xml version="1.0"?><ListResourceRecordSetsResponse xmlns="{NS}">'
        f"<ResourceRecordSets>{body}</ResourceRecordSets><IsTruncated>false</IsTruncated>"
        "<MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"
    ).encode()


def error_xml(code: str, message: str) -> bytes:
    """An error body as AWS sends it for Route 53."""
    return (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    ).encode()


def change_xml(status: str = "INSYNC") -> bytes:
    """A ChangeResourceRecordSets (or GetChange) answer."""
    return (
        f'<?xml version="1.0"?><ChangeResourceRecordSetsResponse xmlns="{NS}"><ChangeInfo>'
        f"<Id>/change/CFAKE</Id><Status>{status}</Status>"
        "<SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo>"
        "</ChangeResourceRecordSetsResponse>"
    ).encode()


def invalid_batch_xml(message: str) -> bytes:
    """Route 53's other form of InvalidChangeBatch (a list of messages)."""
    return (
        f'<?xml version="1.0"?><InvalidChangeBatch xmlns="{NS}"><Messages><Message>'
        f"{escape(message)}</Message></Messages><RequestId>0</RequestId></InvalidChangeBatch>"
    ).encode()


def zone_then(
    rrset_answer: tuple[int, bytes] | Callable[[str], tuple[int, bytes]],
    change_answer: tuple[int, bytes] | Callable[[], tuple[int, bytes]] | None = None,
) -> Handler:
    """A handler with one zone ``dane.test.`` (id ZFAKE), a fixed answer to
    ListResourceRecordSets (or a function of the name asked for), and a
    fixed answer to ChangeResourceRecordSets."""

    def handle(method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        if path.endswith("/hostedzone"):
            return 200, zones_xml(("ZFAKE", "dane.test.", False))
        if method == "GET" and path.endswith("/rrset"):
            if callable(rrset_answer):
                return rrset_answer(query.get("name", ""))
            return rrset_answer
        if callable(change_answer):
            return change_answer()
        if change_answer is not None:
            return change_answer
        return 500, error_xml("InternalFailure", "unexpected request")

    return handle


def _invalid_batch(message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": "InvalidChangeBatch", "Message": f"[{message}]"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "ChangeResourceRecordSets",
    )


class StrictRoute53:
    """A boto3 Route 53 client with the real service's change-batch checks.

    ``before_change`` callables run, one per change batch, just before the
    batch is checked: they play another host acting between the store's read
    and its write. The next ``pending`` change or GetChange answers say PENDING.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.before_change: list[Callable[[], None]] = []
        self.pending = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted

    def _current(self, zone_id: str, name: str, rtype: str) -> dict[str, Any] | None:
        answer = self.inner.list_resource_record_sets(
            HostedZoneId=zone_id, StartRecordName=name, StartRecordType=rtype, MaxItems="1"
        )
        for item in answer["ResourceRecordSets"]:
            if item["Name"].rstrip(".").lower() == name.rstrip(".").lower() and (
                item["Type"] == rtype
            ):
                return item
        return None

    def change_resource_record_sets(self, **kwargs: Any) -> Any:
        self.calls["change_resource_record_sets"] += 1
        if self.before_change:
            self.before_change.pop(0)()
        zone_id = kwargs["HostedZoneId"]
        deleted: set[tuple[str, str]] = set()
        for change in kwargs["ChangeBatch"]["Changes"]:
            rrset = change["ResourceRecordSet"]
            key = (rrset["Name"].rstrip(".").lower(), rrset["Type"])
            current = None if key in deleted else self._current(zone_id, *key)
            label = f"name='{rrset['Name']}', type='{rrset['Type']}'"
            if change["Action"] == "DELETE":
                same = current is not None and (
                    int(current["TTL"]) == int(rrset["TTL"])
                    and {r["Value"] for r in current["ResourceRecords"]}
                    == {r["Value"] for r in rrset["ResourceRecords"]}
                )
                if not same:
                    raise _invalid_batch(
                        f"Tried to delete resource record set [{label}] but the values "
                        "provided do not match the current values"
                    )
                deleted.add(key)
            elif change["Action"] == "CREATE" and current is not None:
                raise _invalid_batch(
                    f"Tried to create resource record set [{label}] but it already exists"
                )
        return self._maybe_pending(self._apply(zone_id, kwargs["ChangeBatch"]["Changes"]))

    def _apply(self, zone_id: str, changes: list[dict[str, Any]]) -> Any:
        """Apply a checked batch to moto, as UPSERTs where it creates.

        moto rejects a valid DELETE+CREATE replacement when an identical
        CREATE is in its change journal and any RRset sorts after the name;
        the batch was checked above, so an UPSERT has the same effect.
        """
        creates = [c for c in changes if c["Action"] == "CREATE"]
        replaced = {(c["ResourceRecordSet"]["Name"].rstrip(".").lower()) for c in creates}
        applied = [
            {**c, "Action": "UPSERT"} if c["Action"] == "CREATE" else c
            for c in changes
            if not (
                c["Action"] == "DELETE"
                and c["ResourceRecordSet"]["Name"].rstrip(".").lower() in replaced
            )
        ]
        return self.inner.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": applied}
        )

    def _maybe_pending(self, answer: Any) -> Any:
        if self.pending > 0:
            self.pending -= 1
            answer["ChangeInfo"]["Status"] = "PENDING"
        return answer

    def get_change(self, **kwargs: Any) -> Any:
        self.calls["get_change"] += 1
        return self._maybe_pending(self.inner.get_change(**kwargs))


def action_of(method: str, path: str) -> str:
    """The Route 53 API action (= IAM action) a request of the store is."""
    path = path.partition("?")[0].rstrip("/")
    if path.endswith("/hostedzone"):
        return "ListHostedZones"
    if path.endswith("/rrset"):
        return "ListResourceRecordSets" if method == "GET" else "ChangeResourceRecordSets"
    if "/change/" in path:
        return "GetChange"
    return "unknown"


Answer = tuple[int, bytes]


def one_zone(answers: dict[str, Answer | list[Answer]]) -> Handler:
    """A Route 53 with one zone ``dane.test.`` (id ZFAKE) and no TLSA records,
    where a change is PENDING until a GetChange says INSYNC. ``answers``
    replaces the answer to an action (see :func:`action_of`): one answer for
    every request, or a list used up one request at a time (its last answer
    then stays)."""
    normal: dict[str, Answer] = {
        "ListHostedZones": (200, zones_xml(("ZFAKE", "dane.test.", False))),
        "ListResourceRecordSets": (200, rrsets_xml()),
        "ChangeResourceRecordSets": (200, change_xml("PENDING")),
        "GetChange": (200, change_xml("INSYNC")),
    }

    def handle(method: str, path: str, query: dict[str, str]) -> Answer:
        action = action_of(method, path)
        answer = answers.get(action, normal.get(action))
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer or (500, error_xml("InternalFailure", "unexpected request"))

    return handle


def denied_xml(action: str, resource: str) -> bytes:
    """AccessDenied as AWS words it for an identity-based policy that lacks ``action``."""
    return error_xml(
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/certbot is not authorized to "
        f"perform: route53:{action} on resource: {resource} because no identity-based "
        f"policy allows the route53:{action} action",
    )
