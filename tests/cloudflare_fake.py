"""A loopback stand-in for the parts of Cloudflare's v4 API that the store uses.

It serves ``GET /zones?name=``, list, create and delete of
``/zones/{id}/dns_records``, and its ``/batch`` of deletes and posts
(applied together or not at all), with Cloudflare's envelope (``success``,
``errors: [{code, message}]``, ``result``, ``result_info``), checks the
``Authorization: Bearer`` or ``X-Auth-Email`` + ``X-Auth-Key`` headers, and
validates TLSA ``data`` as Cloudflare does. Credentials are refused with
Cloudflare's documented codes: 6003 with 6111, 6102 or 6103 in its
``error_chain`` for a header of the wrong form, 9109 for an unknown token,
9103 for an unknown email or Global API Key. A token may be limited to some
zones (``token_zones``: the zone listing shows no other, their records answer
403 with code 10000) and to less than Zone:DNS:Edit (``token_dns="read"``:
writes answer 403 with code 10000; ``None``: reads do too, as for a token
with Zone:Zone:Read only). ``max_per_page`` caps page sizes
(small in tests, so that pagination is exercised), ``fail()`` makes the next
requests answer 429, 500, 401 or 403 (code 10000) or a body that is not JSON, and ``requests`` keeps
every request for assertions. It binds to 127.0.0.1 only.
"""
from __future__ import annotations

import json
import math
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from certbot_dane.tlsa import Record
from tests.httpfake import HttpFake

BASE_PATH = "/client/v4"
_HEX = re.compile(r"^[0-9a-fA-F]*$")
#: What Cloudflare accepts as the form of a token and of a Global API Key.
_TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]+")
_GLOBAL_KEY_FORM = re.compile(r"[0-9a-f]{37}")


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
    kind: str  # "429", "500", "401", "403" or "badjson"
    remaining: int | None  # None: forever
    retry_after: str | None = None


class _Reply(Exception):
    """Raised by a route to answer at once with ``status`` and ``doc``."""

    def __init__(self, status: int, doc: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc


def _error(status: int, code: int, message: str) -> _Reply:
    return _Reply(
        status, {"success": False, "errors": [{"code": code, "message": message}],
                 "messages": [], "result": None}
    )


@dataclass
class FakeCloudflare(HttpFake):
    """The fake API's state and its HTTP server; use as a context manager."""

    zones: tuple[str, ...] = ("dane.test",)
    token: str | None = "fake-token-0123456789abcdef"
    email: str | None = None
    api_key: str | None = None
    max_per_page: int = 2
    #: the zones the token has a permission on (None: all of the account's)
    token_zones: tuple[str, ...] | None = None
    #: the token's DNS permission on those zones: "edit", "read" or None
    token_dns: str | None = "edit"
    #: whether POST /zones/{id}/dns_records/batch exists, and its change limit
    batch: bool = True
    max_batch: int = 200
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.zone_ids: dict[str, str] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self._faults: list[_Fault] = []
        for zone in self.zones:
            self.add_zone(zone)

    # Lifecycle ------------------------------------------------------------

    METHODS = ("GET", "POST", "DELETE", "PATCH")

    @property
    def url(self) -> str:
        return f"http://{self.address}{BASE_PATH}"

    # Set-up and inspection -----------------------------------------------

    def add_zone(self, name: str) -> str:
        zone_id = uuid.uuid4().hex
        self.zone_ids[name.rstrip(".").lower()] = zone_id
        self.records[zone_id] = {}
        return zone_id

    def fail(self, kind: str, count: int | None = 1, retry_after: str | None = "1") -> None:
        """The next ``count`` requests (None: all) answer 429, 500, 401 or 403 or invalid JSON."""
        assert kind in ("429", "500", "401", "403", "badjson"), kind
        with self._lock:
            self._faults.append(_Fault(kind, count, retry_after))

    def tlsa(self, owner: str) -> set[Record]:
        """The TLSA records at ``owner`` in any zone, read from the fake's state."""
        name = owner.rstrip(".").lower()
        with self._lock:
            return {
                Record(f"{name}.", r["data"]["usage"], r["data"]["selector"],
                       r["data"]["matching_type"], r["data"]["certificate"].lower())
                for zone in self.records.values() for r in zone.values()
                if r["type"] == "TLSA" and r["name"] == name
            }

    def put(self, zone: str, owner: str, record: Record, ttl: int = 300) -> str:
        """Place a record directly, as another tool or the dashboard would."""
        zone_id = self.zone_ids[zone.rstrip(".").lower()]
        body = {"type": "TLSA", "name": owner.rstrip("."), "ttl": ttl,
                "data": {"usage": record.usage, "selector": record.selector,
                         "matching_type": record.mtype, "certificate": record.data}}
        with self._lock:
            return self._create(zone_id, body)["id"]

    def seen(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [r for r in self.requests
                if (method is None or r.method == method) and path_part in r.path]

    # HTTP -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = Seen(method, url.path, query, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(seen)
            fault = self._next_fault()
        if fault is not None:
            self._misbehave(handler, fault)
            return
        try:
            with self._lock:
                token = self._authenticate(seen.headers)
                status, doc = 200, self._route(method, url.path, query, body, token)
        except _Reply as reply:
            status, doc = reply.status, reply.doc
        self._send(handler, status, json.dumps(doc).encode())

    def _next_fault(self) -> _Fault | None:
        while self._faults:
            fault = self._faults[0]
            if fault.remaining is None:
                return fault
            if fault.remaining > 0:
                fault.remaining -= 1
                return fault
            self._faults.pop(0)
        return None

    def _misbehave(self, handler: BaseHTTPRequestHandler, fault: _Fault) -> None:
        if fault.kind == "429":
            doc = {"success": False, "errors": [{"code": 971, "message": "Please wait and "
                   "consider throttling your request speed"}], "messages": [], "result": None}
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._send(handler, 429, json.dumps(doc).encode(), headers)
        elif fault.kind in ("401", "403"):
            doc = {"success": False, "errors": [{"code": 10000, "message": "Authentication "
                   "error"}], "messages": [], "result": None}
            self._send(handler, int(fault.kind), json.dumps(doc).encode())
        elif fault.kind == "500":
            doc = {"success": False, "errors": [{"code": 10001, "message": "Internal error"}],
                   "messages": [], "result": None}
            self._send(handler, 500, json.dumps(doc).encode())
        else:
            self._send(handler, 200, b"<html>not json</html>", content_type="text/html")

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _authenticate(self, headers: dict[str, str]) -> bool:
        """Check the credentials as Cloudflare does; True for a token, False for a key."""
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme != "Bearer" or not _TOKEN_FORM.fullmatch(token):
                raise _bad_header(6111, "Invalid format for Authorization header")
            if self.token and token == self.token:
                return True
            raise _error(403, 9109, "Invalid access token")
        if "x-auth-email" in lower or "x-auth-key" in lower:
            if "@" not in lower.get("x-auth-email", ""):
                raise _bad_header(6102, "Invalid format for X-Auth-Email header")
            if not _GLOBAL_KEY_FORM.fullmatch(lower.get("x-auth-key", "")):
                raise _bad_header(6103, "Invalid format for X-Auth-Key header")
            if (self.email and self.api_key and lower.get("x-auth-email") == self.email
                    and lower.get("x-auth-key") == self.api_key):
                return False
            raise _error(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")
        raise _error(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")

    def _visible(self, zone_name: str, token: bool) -> bool:
        return not token or self.token_zones is None or zone_name in self.token_zones

    def _permit(self, zone_id: str, method: str, token: bool) -> None:
        """A token answers 403 for a zone it has no permission on, and for a write
        without Zone:DNS:Edit; Cloudflare words both as code 10000."""
        zone_name = next(n for n, i in self.zone_ids.items() if i == zone_id)
        needs = "read" if method == "GET" else "edit"
        allowed = {"edit": ("read", "edit"), "read": ("read",)}.get(self.token_dns or "", ())
        if token and (not self._visible(zone_name, token) or needs not in allowed):
            raise _error(403, 10000, "Authentication error")

    # Routes ---------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, token: bool
    ) -> dict[str, Any]:
        if not path.startswith(BASE_PATH + "/"):
            raise _error(404, 7000, "No route for that URI")
        parts = path[len(BASE_PATH) + 1:].split("/")
        if parts == ["zones"] and method == "GET":
            return self._list_zones(query, token)
        if len(parts) >= 3 and parts[0] == "zones" and parts[2] == "dns_records":
            zone_id = parts[1]
            if zone_id not in self.records:
                raise _error(404, 7003, f"Could not route to {path}, perhaps your object "
                             "identifier is invalid?")
            self._permit(zone_id, method, token)
            if len(parts) == 3 and method == "GET":
                return self._list_records(zone_id, query)
            if len(parts) == 3 and method == "POST":
                return _ok(self._create(zone_id, body))
            if parts[3:] == ["batch"] and method == "POST":
                if not self.batch:
                    raise _error(405, 10405, f"Method {method} not allowed for this route")
                return _ok(self._batch(zone_id, body))
            if len(parts) == 4 and method == "DELETE":
                return self._delete(zone_id, parts[3])
            if len(parts) == 4 and method == "PATCH":
                return _ok(self._patch(zone_id, parts[3], body))
        raise _error(405, 10405, f"Method {method} not allowed for this route")

    def _list_zones(self, query: dict[str, str], token: bool) -> dict[str, Any]:
        """The zones the credentials may see: a token scoped to some zones lists
        only those (an empty list, not an error, for any other name)."""
        name = query.get("name", "").lower()
        zones = [{"id": zid, "name": zname, "status": "active"}
                 for zname, zid in self.zone_ids.items()
                 if (not name or zname == name) and self._visible(zname, token)]
        return self._paged(zones, query)

    def _list_records(self, zone_id: str, query: dict[str, str]) -> dict[str, Any]:
        kind = query.get("type")
        name = (query.get("name") or query.get("name.exact") or "").rstrip(".").lower()
        found = [r for r in self.records[zone_id].values()
                 if (not kind or r["type"] == kind) and (not name or r["name"] == name)]
        return self._paged(found, query)

    def _paged(self, items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        try:
            page = max(1, int(query.get("page", 1)))
            per_page = max(1, min(int(query.get("per_page", self.max_per_page)),
                                  self.max_per_page))
        except ValueError:
            raise _error(400, 1001, "Invalid pagination parameters") from None
        chunk = items[(page - 1) * per_page: page * per_page]
        info = {"page": page, "per_page": per_page, "count": len(chunk),
                "total_count": len(items), "total_pages": max(1, math.ceil(len(items) / per_page))}
        return {**_ok([dict(r) for r in chunk]), "result_info": info}

    def _create(self, zone_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _error(400, 9207, "Request body is invalid.")
        zone_name = next(n for n, i in self.zone_ids.items() if i == zone_id)
        name = str(body.get("name", "")).rstrip(".").lower()
        if name != zone_name and not name.endswith("." + zone_name):
            raise _error(400, 9007, f"The record name {name} is not in the zone {zone_name}.")
        if body.get("type") != "TLSA":
            raise _error(400, 1004, "DNS Validation Error: only TLSA records are emulated")
        ttl = body.get("ttl", 1)
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise _error(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, "
                         "or 1 for Automatic.")
        if body.get("proxied"):
            raise _error(400, 9004, "This record type cannot be proxied.")
        data = _tlsa_data(body.get("data"))
        for existing in self.records[zone_id].values():
            if existing["name"] == name and existing["type"] == "TLSA" and _same(existing, data):
                raise _error(400, 81058, "An identical record already exists.")
        record_id = uuid.uuid4().hex
        record = {
            "id": record_id, "zone_id": zone_id, "zone_name": zone_name, "name": name,
            "type": "TLSA", "ttl": ttl, "proxied": False, "proxiable": False,
            "content": f"{data['usage']} {data['selector']} {data['matching_type']} "
                       f"{data['certificate']}",
            "data": data,
        }
        self.records[zone_id][record_id] = record
        return record

    def _patch(self, zone_id: str, record_id: str, body: Any) -> dict[str, Any]:
        """Update DNS Record (PATCH): only the TTL is emulated."""
        record = self.records[zone_id].get(record_id)
        if record is None:
            raise _error(404, 81044, "Record does not exist.")
        if not isinstance(body, dict) or set(body) - {"ttl"}:
            raise _error(400, 9207, "Request body is invalid.")
        ttl = body.get("ttl", record["ttl"])
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise _error(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, "
                         "or 1 for Automatic.")
        record["ttl"] = ttl
        return dict(record)

    def _batch(self, zone_id: str, body: Any) -> dict[str, Any]:
        """Deletes, then posts, in one transaction: all applied or none."""
        if not isinstance(body, dict) or body.get("patches") or body.get("puts"):
            raise _error(400, 9207, "Request body is invalid.")
        deletes, posts = body.get("deletes") or [], body.get("posts") or []
        if len(deletes) + len(posts) > self.max_batch:
            raise _error(400, 81062, f"Batch exceeds the limit of {self.max_batch} changes.")
        before = dict(self.records[zone_id])
        try:
            deleted = [self._delete(zone_id, str(d.get("id")))["result"] for d in deletes]
            created = [self._create(zone_id, post) for post in posts]
        except _Reply:
            self.records[zone_id] = before
            raise
        return {"deletes": deleted, "posts": created, "patches": [], "puts": []}

    def _delete(self, zone_id: str, record_id: str) -> dict[str, Any]:
        if self.records[zone_id].pop(record_id, None) is None:
            raise _error(404, 81044, "Record does not exist.")
        return _ok({"id": record_id})


def _bad_header(code: int, message: str) -> _Reply:
    """Cloudflare's answer to a credentials header of the wrong form."""
    return _Reply(400, {"success": False, "messages": [], "result": None, "errors": [
        {"code": 6003, "message": "Invalid request headers",
         "error_chain": [{"code": code, "message": message}]}]})


def _ok(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _same(existing: dict[str, Any], data: dict[str, Any]) -> bool:
    a = existing["data"]
    return (a["usage"], a["selector"], a["matching_type"], a["certificate"].lower()) == (
        data["usage"], data["selector"], data["matching_type"], data["certificate"].lower())


def _tlsa_data(data: Any) -> dict[str, Any]:
    """Cloudflare's checks of structured TLSA data, with its validation error code."""
    if not isinstance(data, dict):
        raise _error(400, 1004, "DNS Validation Error: TLSA records need structured data")
    try:
        usage, selector, mtype = (data[k] for k in ("usage", "selector", "matching_type"))
        certificate = data["certificate"]
    except KeyError as err:
        raise _error(400, 1004, f"DNS Validation Error: data.{err.args[0]} is required") from None
    for key, value, top in (("usage", usage, 3), ("selector", selector, 1),
                            ("matching_type", mtype, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise _error(400, 1004, f"DNS Validation Error: data.{key} must be 0 to {top}")
    if not isinstance(certificate, str) or not certificate or not _HEX.match(certificate) \
            or len(certificate) % 2:
        raise _error(400, 1004, "DNS Validation Error: data.certificate must be hex")
    if {1: 64, 2: 128}.get(mtype, len(certificate)) != len(certificate):
        raise _error(400, 1004, "DNS Validation Error: data.certificate has the wrong length "
                     "for its matching type")
    return {"usage": usage, "selector": selector, "matching_type": mtype,
            "certificate": certificate}
