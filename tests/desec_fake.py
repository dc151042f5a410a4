"""A loopback stand-in for the parts of deSEC's REST API that the store uses.

Built from deSEC's documentation (desec.readthedocs.io: domains, RRsets,
tokens, rate limits) and the answers its API gives:

* ``Authorization: Token SECRET`` (or ``Bearer``); 401 ``{"detail": "Invalid
  token."}`` otherwise;
* ``GET /api/v1/domains/`` (with ``owns_qname``), ``GET .../domains/{name}/``;
  RRsets under ``/api/v1/domains/{name}/rrsets/``: list (``type``, ``subname``
  filters), bulk ``POST``/``PATCH``/``PUT`` of an array applied atomically,
  and ``GET``/``PATCH``/``PUT``/``DELETE`` of ``{subname}/{type}/`` (``@`` or
  ``...`` for the apex); an RRset written with ``records: []`` is deleted;
* cursor pagination: up to ``page_size`` items; a longer list without
  ``cursor`` is a 400 with a ``Link: rel="first"``, with ``cursor=`` the pages
  link their ``next`` and ``prev``;
* validation as deSEC does it: TTL between the domain's ``minimum_ttl`` and
  86400, records parsed and stored in canonical presentation format
  (dnspython, unchunked, lower-case hex), one RRset per subname and type;
  refusals are 400 with ``{"field": ["message"]}``, for a bulk one object per
  RRset in order (``{}`` where there is no fault);
* token scoping policies (``policy()``): writes to an RRset its policy does
  not allow are 403 ``{"detail": "Insufficient token permissions."}``;
* per-domain write limits (``write_limits``, deSEC's are 2/s, 15/min, 100/h,
  300/day), sliding windows answering 429 with ``Retry-After``.

``fail()`` makes the next requests answer 429, 500 or a body that is not
JSON; ``after_write`` runs after each applied RRset write (another writer
at work); ``requests`` keeps every request. It binds to 127.0.0.1 only.
"""
from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from certbot_dane.tlsa import Record
from tests.httpfake import HttpFake

BASE_PATH = "/api/v1"
TOKEN = "desec-fake-token-4pnk7uNHvrEkFzrh"
MAXIMUM_TTL = 86400
#: deSEC's documented per-domain limits on RRset writes: (requests, seconds)
DESEC_WRITE_LIMITS = ((2, 1.0), (15, 60.0), (100, 3600.0), (300, 86400.0))


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
    retry_after: str | None = None


@dataclass
class _Policy:
    domain: str | None
    subname: str | None
    type: str | None
    perm_write: bool


class _Reply(Exception):
    """Raised by a route to answer at once."""

    def __init__(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc
        self.headers = headers or {}


def _detail(status: int, text: str, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, {"detail": text}, headers)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeDesec(HttpFake):
    """The fake API's state and its HTTP server; use as a context manager."""

    domains: tuple[str, ...] = ("dane.test",)
    token: str = TOKEN
    minimum_ttl: int = 3600
    page_size: int = 500
    #: sliding windows (requests, seconds) on RRset writes per domain; () for none
    write_limits: tuple[tuple[int, float], ...] = ()
    #: called as after_write(fake, domain, subname) after each RRset write is applied
    after_write: Callable[[FakeDesec, str, str], None] | None = None
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self.zones: dict[str, dict[str, Any]] = {}
        self.policies: list[_Policy] = []
        self._faults: list[_Fault] = []
        self._writes: dict[str, list[float]] = {}
        self._serial = 0
        for name in self.domains:
            self.add_domain(name)

    # Lifecycle ------------------------------------------------------------


    @property
    def url(self) -> str:
        return f"http://{self.address}{BASE_PATH}"

    # Set-up and inspection -----------------------------------------------

    def add_domain(self, name: str, minimum_ttl: int | None = None) -> None:
        with self._lock:
            self._serial += 1
            self.zones[name.rstrip(".").lower()] = {
                "created": _now(), "serial": self._serial, "rrsets": {},
                "minimum_ttl": self.minimum_ttl if minimum_ttl is None else minimum_ttl,
            }

    def policy(self, domain: str | None, subname: str | None, type_: str | None,
               perm_write: bool) -> None:
        """A token scoping policy; the first one must be the default (all None)."""
        assert self.policies or (domain, subname, type_) == (None, None, None)
        self.policies.append(_Policy(domain, subname, type_, perm_write))

    def fail(self, kind: str, count: int | None = 1, retry_after: str | None = "1") -> None:
        """The next ``count`` requests (None: all) answer 429, 500 or invalid JSON."""
        assert kind in ("429", "500", "badjson"), kind
        with self._lock:
            self._faults.append(_Fault(kind, count, retry_after))

    def tlsa(self, owner: str) -> set[Record]:
        """The TLSA records at ``owner``, read from the fake's state."""
        found = self._find(owner)
        if found is None:
            return set()
        zone, subname = found
        rrset = self.zones[zone]["rrsets"].get((subname, "TLSA"))
        return {_record(owner, text) for text in rrset["records"]} if rrset else set()

    def ttl(self, owner: str) -> int | None:
        found = self._find(owner)
        if found is None:
            return None
        rrset = self.zones[found[0]]["rrsets"].get((found[1], "TLSA"))
        return rrset["ttl"] if rrset else None

    def put(self, owner: str, records: set[Record], ttl: int | None = None) -> None:
        """Write the TLSA RRset at ``owner`` whole, as another tool or writer would."""
        found = self._find(owner)
        assert found is not None, owner
        zone, subname = found
        texts = sorted(f"{r.usage} {r.selector} {r.mtype} {r.data}" for r in records)
        with self._lock:
            rrsets = self.zones[zone]["rrsets"]
            old = rrsets.get((subname, "TLSA"))
            if not texts:
                rrsets.pop((subname, "TLSA"), None)
                return
            self._serial += 1
            rrsets[(subname, "TLSA")] = {
                "subname": subname, "type": "TLSA", "records": texts,
                "ttl": ttl or (old["ttl"] if old else self.zones[zone]["minimum_ttl"]),
                "created": old["created"] if old else _now(),
                "serial": old["serial"] if old else self._serial, "touched": _now(),
            }

    def seen(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [r for r in self.requests
                if (method is None or r.method == method) and path_part in r.path]

    def _find(self, owner: str) -> tuple[str, str] | None:
        name = owner.rstrip(".").lower()
        zones = [z for z in self.zones if name == z or name.endswith("." + z)]
        if not zones:
            return None
        zone = max(zones, key=len)
        return zone, ("" if name == zone else name[: -len(zone) - 1])

    # HTTP -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _Unparsable()
        seen = Seen(method, url.path, query, dict(handler.headers.items()), body)
        host = handler.headers.get("Host", "127.0.0.1")
        after: list[tuple[str, str]] = []
        with self._lock:
            self.requests.append(seen)
            fault = self._next_fault()
        if fault is not None:
            self._misbehave(handler, fault)
            return
        headers: dict[str, str] = {}
        try:
            with self._lock:
                self._authenticate(seen.headers)
                status, doc, headers = self._route(method, url.path, query, body, host, after)
        except _Reply as reply:
            status, doc, headers = reply.status, reply.doc, reply.headers
        if self.after_write is not None:
            for zone, subname in after:
                self.after_write(self, zone, subname)
        payload = b"" if status == 204 else json.dumps(doc).encode()
        self._send(handler, status, payload, headers)

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
            wait = fault.retry_after or "1"
            doc = {"detail": f"Request was throttled. Expected available in {wait} seconds."}
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._send(handler, 429, json.dumps(doc).encode(), headers)
        elif fault.kind == "500":
            self._send(handler, 500, b"<h1>Server Error (500)</h1>", content_type="text/html")
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
        if payload:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        if auth is None:
            raise _detail(401, "Authentication credentials were not provided.",
                          {"WWW-Authenticate": "Token"})
        scheme, _, secret = auth.partition(" ")
        if scheme not in ("Token", "Bearer") or secret != self.token:
            raise _detail(401, "Invalid token.", {"WWW-Authenticate": "Token"})

    # Routes ---------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, host: str,
        after: list[tuple[str, str]],
    ) -> tuple[int, Any, dict[str, str]]:
        if not path.startswith(BASE_PATH + "/") or not path.endswith("/"):
            raise _detail(404, "Not found.")
        parts = [unquote(p) for p in path[len(BASE_PATH) + 1 : -1].split("/")]
        if parts == ["domains"] and method == "GET":
            return self._list_domains(path, query, host)
        if len(parts) < 2 or parts[0] != "domains" or parts[1] not in self.zones:
            raise _detail(404, "Not found.")
        zone = parts[1]
        if len(parts) == 2 and method == "GET":
            return 200, self._domain_object(zone), {}
        if len(parts) == 3 and parts[2] == "rrsets":
            if method == "GET":
                return self._list_rrsets(zone, path, query, host)
            if method in ("POST", "PATCH", "PUT"):
                return self._bulk(zone, method, body, after)
        if len(parts) == 5 and parts[2] == "rrsets":
            subname = "" if parts[3] == "@" else parts[3].removesuffix("...")
            if parts[3].endswith("..."):
                subname = subname.rstrip(".")
            return self._one(zone, subname, parts[4], method, body, after)
        raise _detail(405, f'Method "{method}" not allowed.')

    def _domain_object(self, zone: str) -> dict[str, Any]:
        data = self.zones[zone]
        return {"created": data["created"], "minimum_ttl": data["minimum_ttl"], "name": zone,
                "published": data["created"], "touched": data["created"]}

    def _list_domains(
        self, path: str, query: dict[str, str], host: str
    ) -> tuple[int, Any, dict[str, str]]:
        zones = sorted(self.zones, key=lambda z: -self.zones[z]["serial"])
        qname = query.get("owns_qname")
        if qname is not None:
            found = self._find(qname)
            zones = [found[0]] if found else []
        return self._paged([self._domain_object(z) for z in zones], path, query, host)

    def _list_rrsets(
        self, zone: str, path: str, query: dict[str, str], host: str
    ) -> tuple[int, Any, dict[str, str]]:
        rrsets = sorted(self.zones[zone]["rrsets"].values(), key=lambda r: -r["serial"])
        if "type" in query:
            rrsets = [r for r in rrsets if r["type"] == query["type"]]
        if "subname" in query:
            rrsets = [r for r in rrsets if r["subname"] == query["subname"]]
        return self._paged([self._rrset_object(zone, r) for r in rrsets], path, query, host)

    def _paged(
        self, items: list[Any], path: str, query: dict[str, str], host: str
    ) -> tuple[int, Any, dict[str, str]]:
        """deSEC's cursor pagination, with its 400 when a cursor is needed but absent."""
        size = self.page_size

        def link(offset: int | None) -> str:
            cursor = "" if not offset else base64.b64encode(f"o={offset}".encode()).decode()
            params = urlencode({**query, "cursor": cursor})
            return f"http://{host}{path}?{params}"

        if "cursor" not in query:
            if len(items) <= size:
                return 200, items, {}
            doc = {"detail": f"Pagination required. You can query up to {size} items at a "
                   f"time ({len(items)} total). Please use the `first` page link (see Link "
                   "header)."}
            return 400, doc, {"Link": f'<{link(None)}>; rel="first"'}
        try:
            cursor = query["cursor"]
            offset = int(base64.b64decode(cursor).decode()[2:]) if cursor else 0
        except ValueError:
            raise _detail(404, "Invalid cursor") from None
        page = items[offset : offset + size]
        if len(items) <= size:
            return 200, page, {}
        links = [f'<{link(None)}>; rel="first"']
        if offset:
            links.append(f'<{link(max(0, offset - size))}>; rel="prev"')
        if offset + size < len(items):
            links.append(f'<{link(offset + size)}>; rel="next"')
        return 200, page, {"Link": ", ".join(links)}

    def _rrset_object(self, zone: str, rrset: dict[str, Any]) -> dict[str, Any]:
        subname = rrset["subname"]
        name = f"{subname}.{zone}." if subname else f"{zone}."
        return {"created": rrset["created"], "domain": zone, "subname": subname, "name": name,
                "type": rrset["type"], "records": list(rrset["records"]), "ttl": rrset["ttl"],
                "touched": rrset["touched"]}

    def _one(
        self, zone: str, subname: str, type_: str, method: str, body: Any,
        after: list[tuple[str, str]],
    ) -> tuple[int, Any, dict[str, str]]:
        rrsets = self.zones[zone]["rrsets"]
        key = (subname, type_)
        if method == "GET":
            if key not in rrsets:
                raise _detail(404, "Not found.")
            return 200, self._rrset_object(zone, rrsets[key]), {}
        if method == "DELETE":
            self._may_write(zone, subname, type_)
            if rrsets.pop(key, None) is not None:
                after.append((zone, subname))
            return 204, None, {}
        if method in ("PATCH", "PUT"):
            if key not in rrsets:
                raise _detail(404, "Not found.")
            if not isinstance(body, dict):
                raise _Reply(400, {"non_field_errors": ["Invalid data. Expected a dictionary, "
                                                        "but got list."]})
            item = {**body, "subname": subname, "type": type_}
            status, result, headers = self._bulk(zone, method, [item], after)
            if status != 200:
                return status, result[0] if isinstance(result, list) else result, headers
            return (200, result[0], headers) if result else (204, None, headers)
        raise _detail(405, f'Method "{method}" not allowed.')

    def _bulk(
        self, zone: str, method: str, body: Any, after: list[tuple[str, str]]
    ) -> tuple[int, Any, dict[str, str]]:
        """Validate every RRset of the request, then apply all of them or none."""
        if isinstance(body, _Unparsable):
            raise _detail(400, "JSON parse error - Expecting value: line 1 column 1 (char 0)")
        single = isinstance(body, dict)
        if single and method == "POST":
            body = [body]
        if not isinstance(body, list):
            raise _Reply(400, {"non_field_errors": ["Expected a list of items but got type "
                                                    f'"{type(body).__name__}".']})
        rrsets = self.zones[zone]["rrsets"]
        errors: list[dict[str, Any]] = []
        plan: list[tuple[tuple[str, str], dict[str, Any] | None]] = []
        seen: set[tuple[str, str]] = set()
        for item in body:
            error, change = self._check(zone, method, item, seen)
            errors.append(error)
            plan.append(change)
        if any(errors):
            return 400, errors[0] if single else errors, {}
        for key, _ in plan:
            self._may_write(zone, *key)
        self._throttle(zone)
        result = []
        for key, new in plan:
            old = rrsets.get(key)
            if new is None:
                rrsets.pop(key, None)
            else:
                self._serial += 1
                rrsets[key] = {
                    "subname": key[0], "type": key[1],
                    "records": new.get("records", old["records"] if old else []),
                    "ttl": new.get("ttl", old["ttl"] if old else None),
                    "created": old["created"] if old else _now(),
                    "serial": old["serial"] if old else self._serial, "touched": _now(),
                }
                result.append(self._rrset_object(zone, rrsets[key]))
            after.append((zone, key[0]))
        return (201 if method == "POST" else 200), result[0] if single and result else result, {}

    def _check(
        self, zone: str, method: str, item: Any, seen: set[tuple[str, str]]
    ) -> tuple[dict[str, Any], tuple[tuple[str, str], dict[str, Any] | None]]:
        """One RRset of a write: its errors ({} if none) and the change it makes."""
        nothing: tuple[tuple[str, str], None] = (("", ""), None)
        if not isinstance(item, dict):
            return {"non_field_errors": ["Invalid data. Expected a dictionary."]}, nothing
        errors: dict[str, list[str]] = {}
        subname, type_ = item.get("subname", ""), item.get("type")
        if not isinstance(type_, str) or not type_:
            errors["type"] = ["This field is required."]
        elif type_ != type_.upper():
            errors["type"] = ["Only uppercase record types are supported."]
        if not isinstance(subname, str) or subname != subname.lower():
            errors["subname"] = ["Subname can only use (lowercase) a-z, 0-9, ., -, and _."]
        if errors:
            return errors, nothing
        key = (subname, type_)
        if key in seen:
            return {"non_field_errors": ["Same subname and type as in position(s) earlier, "
                                         "but must be unique."]}, nothing
        seen.add(key)
        exists = key in self.zones[zone]["rrsets"]
        needed = ("ttl", "records") if method in ("POST", "PUT") or not exists else ()
        if method == "POST" and exists:
            return {"non_field_errors": ["Another RRset with the same subdomain and type "
                                         "exists for this domain. (Try modifying it.)"]}, nothing
        records = item.get("records")
        if records == [] and method != "POST":
            return {}, (key, None)
        for name in needed:
            if name not in item:
                errors[name] = ["This field is required."]
        change: dict[str, Any] = {}
        if "ttl" in item:
            ttl, floor = item["ttl"], self.zones[zone]["minimum_ttl"]
            if not isinstance(ttl, int) or isinstance(ttl, bool):
                errors["ttl"] = ["A valid integer is required."]
            elif ttl < floor:
                errors["ttl"] = [f"Ensure this value is greater than or equal to {floor}."]
            elif ttl > MAXIMUM_TTL:
                errors["ttl"] = [f"Ensure this value is less than or equal to {MAXIMUM_TTL}."]
            else:
                change["ttl"] = ttl
        if records is not None:
            texts, problems = _canonical(type_, records)
            if problems:
                errors["records"] = problems
            else:
                change["records"] = texts
        return errors, (key, change)

    def _may_write(self, zone: str, subname: str, type_: str) -> None:
        """deSEC's policy lookup: the most specific matching policy decides."""
        if not self.policies:
            return
        for want in ((zone, subname, type_), (zone, subname, None), (zone, None, type_),
                     (zone, None, None), (None, None, None)):
            for policy in self.policies:
                if (policy.domain, policy.subname, policy.type) == want:
                    if policy.perm_write:
                        return
                    raise _detail(403, "Insufficient token permissions.")
        raise _detail(403, "Insufficient token permissions.")

    def _throttle(self, zone: str) -> None:
        """deSEC's per-domain limits on RRset writes (a bulk request counts once)."""
        now = time.monotonic()
        stamps = self._writes.setdefault(zone, [])
        for count, window in self.write_limits:
            recent = [t for t in stamps if t > now - window]
            if len(recent) >= count:
                wait = max(1, math.ceil(recent[-count] + window - now))
                raise _detail(429, f"Request was throttled. Expected available in {wait} "
                              "seconds.", {"Retry-After": str(wait)})
        stamps.append(now)


class _Unparsable:
    """A request body that is not JSON."""


def _canonical(type_: str, records: Any) -> tuple[list[str], list[str]]:
    """Records in deSEC's canonical presentation format, or the reasons they are not."""
    if not isinstance(records, list) or not all(isinstance(r, str) for r in records):
        return [], ['Expected a list of items but got type "str".']
    try:
        rdtype = dns.rdatatype.from_text(type_)
    except dns.exception.DNSException:
        return [], [f"The {type_} type is not supported."]
    texts = []
    for text in records:
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        except (dns.exception.DNSException, ValueError) as err:
            return [], [f"Record content for type {type_} malformed: {err}"]
        texts.append(rdata.to_text(chunksize=0))
    if len(set(texts)) != len(texts):
        return [], ["Duplicate record content: this is identical to another record."]
    return sorted(texts), []


def _record(owner: str, text: str) -> Record:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
    return Record.from_rdata(owner.lower() if owner.endswith(".") else owner.lower() + ".",
                             rdata)  # type: ignore[arg-type]


__all__ = ["BASE_PATH", "DESEC_WRITE_LIMITS", "TOKEN", "FakeDesec", "Seen"]
