"""A loopback stand-in for the parts of the OVH API that the store uses.

Built from OVH's API documentation (first steps with the API, the
``/domain/zone`` reference) and the official client library's behaviour:

* ``GET /1.0/auth/time`` without authentication: the server's clock, which
  ``skew`` puts off from this host's;
* signed requests: ``X-Ovh-Application`` (an unknown one is 403
  ``INVALID_KEY``), ``X-Ovh-Consumer`` (403 ``NOT_CREDENTIAL``, or
  ``INVALID_CREDENTIAL`` once ``expired``), ``X-Ovh-Timestamp`` within 180 s
  of the server's clock (400 ``Query out of time``) and ``X-Ovh-Signature``,
  ``"$1$" + sha1(secret+consumer+METHOD+URL+body+timestamp)`` (400
  ``INVALID_SIGNATURE``);
* the consumer key's access rules (``rules``: method and path, ``*`` at the
  end for everything below): a call outside them is 403 ``NOT_GRANTED_CALL``;
* ``GET /domain/zone``, ``.../{zone}``, ``/status``, ``/soa`` (the zone's
  default TTL); ``GET``/``POST .../record`` (ids, filtered by ``fieldType``
  and ``subDomain``), ``GET``/``PUT``/``DELETE .../record/{id}``; a record's
  TTL 0 means the zone's default;
* ``POST .../refresh``: changes are held by the API and served (``served()``)
  only after a refresh, as OVH does;
* errors as JSON ``{"class", "message"[, "httpCode", "errorCode"]}``.

``fail()`` makes the next requests (optionally only those whose path
contains a string) answer 429 with ``Retry-After``, 500 or a body that is
not JSON; OVH documents no shape for its 429, so its body here is an
assumption. ``requests`` keeps every request. It binds to 127.0.0.1 only.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from certbot_dane.tlsa import Record
from tests.httpfake import HttpFake

BASE_PATH = "/1.0"
APPLICATION_KEY = "fakeAppKey7Yh2"
APPLICATION_SECRET = "fakeAppSecret0123456789abcdefXYZ"
CONSUMER_KEY = "fakeConsumerKey9876543210fedcbaQRS"
EVERYTHING = (("GET", "/*"), ("POST", "/*"), ("PUT", "/*"), ("DELETE", "/*"))
#: how far a request's timestamp may be from the server's clock
TIME_WINDOW = 180
FIELD_TYPES = ("A", "AAAA", "CAA", "CNAME", "DKIM", "DMARC", "DNAME", "LOC", "MX", "NAPTR",
               "NS", "PTR", "SPF", "SRV", "SSHFP", "TLSA", "TXT")


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class _Fault:
    kind: str  # "429", "500" or "badjson"
    remaining: int | None  # None: forever
    retry_after: str | None
    path_part: str


class _Reply(Exception):
    def __init__(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc
        self.headers = headers or {}


_HTTP = {400: "400 Bad Request", 403: "403 Forbidden", 404: "404 Not Found"}


def _error(status: int, message: str, code: str | None = None) -> _Reply:
    kind = {400: "BadParametersError", 403: "Forbidden", 404: "NotFound"}.get(status, "Error")
    doc: dict[str, Any] = {"class": f"Client::{kind}", "message": message}
    if code:
        doc.update(httpCode=_HTTP.get(status, str(status)), errorCode=code)
    return _Reply(status, doc)


@dataclass
class FakeOvh(HttpFake):
    """The fake API's state and its HTTP server; use as a context manager."""

    zones: tuple[str, ...] = ("dane.test",)
    application_key: str = APPLICATION_KEY
    application_secret: str = APPLICATION_SECRET
    consumer_key: str = CONSUMER_KEY
    #: the consumer key's access rules: (method, path with an optional trailing *)
    rules: tuple[tuple[str, str], ...] = EVERYTHING
    #: seconds the server's clock is ahead of this host's
    skew: int = 0
    #: the consumer key was revoked or has expired
    expired: bool = False
    default_ttl: int = 3600
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        self.served_records: dict[str, dict[int, dict[str, Any]]] = {}
        self.refreshes: dict[str, int] = {}
        self._faults: list[_Fault] = []
        self._next_id = 5000000001
        for zone in self.zones:
            self.add_zone(zone)

    # Lifecycle ------------------------------------------------------------

    METHODS = ("GET", "POST", "PUT", "DELETE")

    @property
    def url(self) -> str:
        return f"http://{self.address}{BASE_PATH}"

    # Set-up and inspection -----------------------------------------------

    def add_zone(self, name: str) -> None:
        zone = name.rstrip(".").lower()
        self.records[zone] = {}
        self.served_records[zone] = {}
        self.refreshes[zone] = 0

    def fail(self, kind: str, count: int | None = 1, retry_after: str | None = "1",
             path_part: str = "") -> None:
        """The next ``count`` requests (None: all) whose path contains ``path_part``
        answer 429, 500 or invalid JSON."""
        assert kind in ("429", "500", "badjson"), kind
        with self._lock:
            self._faults.append(_Fault(kind, count, retry_after, path_part))

    def served(self, owner: str) -> set[Record]:
        """The TLSA records the name servers serve at ``owner`` (as of the last refresh)."""
        return {_record(owner, r) for r in self._at(owner, self.served_records)}

    def pending(self, owner: str) -> set[Record]:
        """The TLSA records the API holds at ``owner``, refreshed or not."""
        return {_record(owner, r) for r in self._at(owner, self.records)}

    def served_ttl(self, owner: str) -> int | None:
        ttls = [r["ttl"] or self.default_ttl for r in self._at(owner, self.served_records)]
        return min(ttls, default=None)

    def put(self, owner: str, record: Record, ttl: int = 300) -> int:
        """Create a record and serve it, as another tool or the control panel would."""
        zone, sub = self._split(owner)
        with self._lock:
            item = self._create(zone, {"fieldType": "TLSA", "subDomain": sub, "ttl": ttl,
                                       "target": _text(record)})
            self.served_records[zone][item["id"]] = dict(item)
        return int(item["id"])

    def seen(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [r for r in self.requests
                if (method is None or r.method == method) and path_part in r.path]

    def _split(self, owner: str) -> tuple[str, str]:
        name = owner.rstrip(".").lower()
        zone = max((z for z in self.records if name == z or name.endswith("." + z)), key=len)
        return zone, ("" if name == zone else name[: -len(zone) - 1])

    def _at(self, owner: str, table: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        zone, sub = self._split(owner)
        with self._lock:
            return [dict(r) for r in table[zone].values()
                    if r["fieldType"] == "TLSA" and r["subDomain"] == sub]

    # HTTP -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = Seen(method, url.path, query, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(seen)
            fault = self._next_fault(url.path)
        if fault is not None:
            self._misbehave(handler, fault)
            return
        try:
            with self._lock:
                path = url.path.removeprefix(BASE_PATH)
                if not url.path.startswith(BASE_PATH + "/"):
                    raise _error(404, "Got an invalid (or empty) URL")
                if path == "/auth/time" and method == "GET":
                    status, doc = 200, int(time.time()) + self.skew
                else:
                    full = f"http://{handler.headers.get('Host', '')}{handler.path}"
                    self._authenticate(method, full, raw, seen.headers)
                    self._grant(method, path)
                    status, doc = 200, self._route(method, path, query, body)
        except _Reply as reply:
            status, doc = reply.status, reply.doc
        self._send(handler, status, json.dumps(doc).encode())

    def _next_fault(self, path: str) -> _Fault | None:
        for fault in list(self._faults):
            if fault.path_part not in path:
                continue
            if fault.remaining is None:
                return fault
            if fault.remaining > 0:
                fault.remaining -= 1
                return fault
            self._faults.remove(fault)
        return None

    def _misbehave(self, handler: BaseHTTPRequestHandler, fault: _Fault) -> None:
        if fault.kind == "429":
            doc = {"class": "Client::TooManyRequests", "message": "Too many requests"}
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._send(handler, 429, json.dumps(doc).encode(), headers)
        elif fault.kind == "500":
            page = b"<html>Internal Server Error</html>"
            self._send(handler, 500, page, content_type="text/html")
        else:
            self._send(handler, 200, b"<html>not json</html>", content_type="text/html")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes,
              headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _authenticate(self, method: str, url: str, body: str, headers: dict[str, str]) -> None:
        """OVH's checks of a signed request, in the order of its answers."""
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("x-ovh-application") != self.application_key:
            raise _error(403, "Invalid application key", "INVALID_KEY")
        consumer = lower.get("x-ovh-consumer")
        if consumer != self.consumer_key:
            raise _error(403, "This credential does not exist", "NOT_CREDENTIAL")
        if self.expired:
            raise _error(403, "This credential is not valid", "INVALID_CREDENTIAL")
        try:
            stamp = int(lower.get("x-ovh-timestamp", ""))
        except ValueError:
            raise _error(400, "Invalid timestamp", "INVALID_SIGNATURE") from None
        if abs(stamp - (int(time.time()) + self.skew)) > TIME_WINDOW:
            raise _error(400, "Query out of time", "QUERY_TIME_OUT")
        signed = "+".join([self.application_secret, consumer, method, url, body, str(stamp)])
        if lower.get("x-ovh-signature") != "$1$" + hashlib.sha1(signed.encode()).hexdigest():
            raise _error(400, "Invalid signature", "INVALID_SIGNATURE")

    def _grant(self, method: str, path: str) -> None:
        for rule_method, rule in self.rules:
            if rule_method != method:
                continue
            if rule.endswith("/*"):
                prefix = rule[:-2]
                if path == prefix or path.startswith(prefix + "/"):
                    return
            elif path == rule.rstrip("/") or path == rule:
                return
        raise _error(403, "This call has not been granted", "NOT_GRANTED_CALL")

    # Routes ---------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["domain", "zone"] and method == "GET":
            return sorted(self.records)
        if len(parts) < 3 or parts[:2] != ["domain", "zone"] or parts[2] not in self.records:
            raise _error(404, "This service does not exist")
        zone, rest = parts[2], parts[3:]
        if not rest and method == "GET":
            return {"name": zone, "dnssecSupported": True, "hasDnsAnycast": False,
                    "nameServers": ["dns200.anycast.me", "ns200.anycast.me"]}
        if rest == ["status"] and method == "GET":
            return {"isDeployed": True, "errors": [], "warnings": [], "infos": [], "jobs": []}
        if rest == ["soa"] and method == "GET":
            return {"server": "dns200.anycast.me.", "email": "tech.ovh.net.", "serial": 1,
                    "refresh": 86400, "nxDomainTtl": 3600, "expire": 3600000,
                    "ttl": self.default_ttl}
        if rest == ["refresh"] and method == "POST":
            self.served_records[zone] = {i: dict(r) for i, r in self.records[zone].items()}
            self.refreshes[zone] += 1
            return None
        if rest == ["record"] and method == "GET":
            return [i for i, r in sorted(self.records[zone].items())
                    if r["fieldType"] == query.get("fieldType", r["fieldType"])
                    and r["subDomain"] == query.get("subDomain", r["subDomain"])]
        if rest == ["record"] and method == "POST":
            return self._create(zone, body)
        if len(rest) == 2 and rest[0] == "record":
            return self._one(zone, rest[1], method, body)
        raise _error(404, "Got an invalid (or empty) URL")

    def _one(self, zone: str, record_id: str, method: str, body: Any) -> Any:
        try:
            record = self.records[zone][int(record_id)]
        except (ValueError, KeyError):
            raise _error(404, f"The requested object (id = {record_id}) does not exist") from None
        if method == "GET":
            return dict(record)
        if method == "DELETE":
            del self.records[zone][record["id"]]
            return None
        if method == "PUT":
            if not isinstance(body, dict) or set(body) - {"subDomain", "target", "ttl"}:
                raise _error(400, "Invalid body")
            if "ttl" in body:
                record["ttl"] = _ttl(body["ttl"])
            if "target" in body:
                record["target"] = _target(record["fieldType"], body["target"])
            if "subDomain" in body:
                record["subDomain"] = str(body["subDomain"]).lower()
            return None
        raise _error(404, "Got an invalid (or empty) URL")

    def _create(self, zone: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _error(400, "Invalid body")
        kind = body.get("fieldType")
        if kind not in FIELD_TYPES:
            raise _error(400, f"Invalid value for fieldType: {kind!r}")
        sub = body.get("subDomain", "")
        if not isinstance(sub, str):
            raise _error(400, "Invalid value for subDomain")
        record = {"id": self._next_id, "zone": zone, "subDomain": sub.lower(),
                  "fieldType": kind, "target": _target(kind, body.get("target")),
                  "ttl": _ttl(body.get("ttl", 0))}
        self._next_id += 1
        self.records[zone][record["id"]] = record
        return dict(record)


def _ttl(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _error(400, f"Invalid value for ttl: {value!r}")
    return value


def _target(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _error(400, "Invalid value for target")
    if kind == "TLSA":
        try:
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, value)
        except (dns.exception.DNSException, ValueError):
            raise _error(400, f"Invalid TLSA target: {value!r}") from None
    return value


def _text(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data}"


def _record(owner: str, item: dict[str, Any]) -> Record:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, item["target"])
    name = owner.lower() if owner.endswith(".") else owner.lower() + "."
    return Record.from_rdata(name, rdata)  # type: ignore[arg-type]
