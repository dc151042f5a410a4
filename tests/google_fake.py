"""A loopback stand-in for Google Cloud DNS v1, Google's OAuth token endpoint
and a VM's metadata server, as far as the google store uses them.

Cloud DNS (under ``/dns/v1/projects/{project}``): ``GET managedZones`` and
``GET managedZones/{zone}/rrsets`` (``name``, ``type`` only with ``name``,
``maxResults`` capped by :attr:`FakeGoogle.max_results`, ``pageToken``),
``POST managedZones/{zone}/changes`` and ``GET .../changes/{id}``. A change is
applied whole or not at all, with Cloud DNS's rules: a deletion must match
the record set it names exactly (TTL and rrdatas) or the change is refused
with 412 ``conditionNotMet``; a deletion of a record set that is not there is
404 ``notFound``; an addition of one that is there (and not deleted by the
same change) is 409 ``alreadyExists``. Errors have Google's shape
(``{"error": {"code", "message", "errors": [{"reason"}], "status"}}``). A
new change is ``pending`` for :attr:`FakeGoogle.pending_polls` reads, then
``done``.

The token endpoint (``POST /token``, a service-account file's ``token_uri``)
checks the RS256 signature of the JWT assertion against the account's
public key, its audience (Google's token endpoint), scope and lifetime, and
answers an access token or Google's ``invalid_grant``. The metadata server (``/`` and
``/computeMetadata/v1/...``, answering only with ``Metadata-Flavor: Google``)
serves a VM's project id and its default service account's tokens.

Every API request needs a token the fake issued; a permission can be
revoked (403), the API disabled, faults injected (429, 500, 503, a body that
is not JSON), and a hook run just before the next change is applied (another
host changing a record set between our read and our change). It binds to
127.0.0.1 only.
"""
from __future__ import annotations

import base64
import copy
import functools
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from certbot_dane.tlsa import Record
from tests.httpfake import HttpFake

API_PATH = "/dns/v1/projects/"
METADATA_PATH = "/computeMetadata/v1/"
SCOPES = (
    "https://www.googleapis.com/auth/ndev.clouddns.readwrite",
    "https://www.googleapis.com/auth/cloud-platform",
)
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: the audience Google requires in a service account's assertion, whatever its token_uri
AUDIENCE = "https://oauth2.googleapis.com/token"
#: every permission of roles/dns.admin that the store can ask for
ALL_PERMISSIONS = frozenset({
    "dns.managedZones.list",
    "dns.resourceRecordSets.list",
    "dns.changes.create",
    "dns.changes.get",
})
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION",
           413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE"}


@functools.cache
def private_key(index: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key per index, made once per test session (making one takes a while)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    #: the HTTP status the fake answered
    status: int = 0

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case the client wrote its name in."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class _Fault:
    kind: str  # "429", "500", "503" or "badjson"
    remaining: int | None  # None: forever


@dataclass
class _Zone:
    name: str
    dns_name: str
    visibility: str
    id: str
    rrsets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)


class _Reply(Exception):
    """Raised by a route to answer at once."""

    def __init__(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.doc = doc
        self.headers = headers or {}


def _error(status: int, reason: str, message: str) -> _Reply:
    return _Reply(status, {"error": {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
        "status": _STATUS.get(status, "UNKNOWN"),
    }})


@dataclass
class FakeGoogle(HttpFake):
    """The fake's state and its HTTP server; use as a context manager."""

    project: str = "dane-project"
    #: (managed zone name, dnsName, visibility)
    zones: tuple[tuple[str, str, str], ...] = (("dane-test", "dane.test.", "public"),)
    max_results: int = 2
    pending_polls: int = 1
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self.state: dict[str, _Zone] = {}
        #: service account email -> its public key
        self.accounts: dict[str, rsa.RSAPublicKey] = {}
        #: access token -> the account it was issued to
        self.tokens: dict[str, str] = {}
        self.permissions: set[str] = set(ALL_PERMISSIONS)
        self.api_disabled = False
        #: the token endpoint refuses every assertion (a deleted or disabled key)
        self.refuse_tokens = False
        #: the VM the metadata server describes
        self.vm_account = f"vm@{self.project}.iam.gserviceaccount.com"
        self.vm_project = self.project
        self.before_change: list[Callable[[FakeGoogle], None]] = []
        self._faults: list[_Fault] = []
        self._changes = 0
        for index, (name, dns_name, visibility) in enumerate(self.zones):
            self.add_zone(name, dns_name, visibility, str(8_000_000_000_000 + index))

    # Lifecycle ------------------------------------------------------------

    METHODS = ("GET", "POST")

    @property
    def host(self) -> str:
        return self.address

    @property
    def url(self) -> str:
        """The API base URL (``--dane-api-url``)."""
        return f"http://{self.host}/dns/v1"

    @property
    def token_uri(self) -> str:
        return f"http://{self.host}/token"

    # Set-up and inspection -----------------------------------------------

    def add_zone(self, name: str, dns_name: str, visibility: str = "public",
                 zone_id: str | None = None) -> None:
        zone = _Zone(name, dns_name.lower(), visibility, zone_id or str(len(self.state) + 1))
        soa = "ns-cloud-a1.googledomains.com. cloud-dns-hostmaster.google.com. 1 21600 3600 " \
              "259200 300"
        zone.rrsets[(zone.dns_name, "SOA")] = _rrset(zone.dns_name, "SOA", 21600, [soa])
        zone.rrsets[(zone.dns_name, "NS")] = _rrset(
            zone.dns_name, "NS", 21600, [f"ns-cloud-a{i}.googledomains.com." for i in (1, 2)])
        self.state[name] = zone

    def service_account(self, email: str | None = None, key_index: int = 0,
                        register: bool = True) -> dict[str, Any]:
        """A service-account key file's content whose token_uri is this fake.

        ``register=False`` gives a key Google does not know (deleted).
        """
        email = email or f"dane@{self.project}.iam.gserviceaccount.com"
        key = private_key(key_index)
        if register:
            self.accounts[email] = key.public_key()
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": f"{key_index:040x}",
            "private_key": pem(key),
            "client_email": email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }

    def fail(self, kind: str, count: int | None = 1) -> None:
        """The next ``count`` API requests (None: all) answer 429, 500, 503 or not JSON."""
        assert kind in ("429", "500", "503", "badjson"), kind
        with self._lock:
            self._faults.append(_Fault(kind, count))

    def rrset(self, owner: str, rtype: str = "TLSA") -> dict[str, Any] | None:
        with self._lock:
            for zone in self.state.values():
                found = zone.rrsets.get((owner.lower(), rtype))
                if found is not None:
                    return copy.deepcopy(found)
        return None

    def tlsa(self, owner: str) -> set[Record]:
        """The TLSA records at ``owner`` in any zone, read from the fake's state."""
        found = self.rrset(owner)
        if found is None:
            return set()
        return {_record(owner.lower(), text) for text in found["rrdatas"]}

    def put(self, owner: str, records: set[Record], ttl: int = 300) -> None:
        """Replace the TLSA record set at ``owner``, as the console or another tool would."""
        name = owner.lower()
        with self._lock:
            zone = self._zone_for(name)
            texts = [f"{r.usage} {r.selector} {r.mtype} {r.data}" for r in sorted(records)]
            if texts:
                zone.rrsets[(name, "TLSA")] = _rrset(name, "TLSA", ttl, texts)
            else:
                zone.rrsets.pop((name, "TLSA"), None)

    def seen(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [r for r in self.requests
                if (method is None or r.method == method) and path_part in r.path]

    def _zone_for(self, name: str) -> _Zone:
        zones = [z for z in self.state.values()
                 if name == z.dns_name or name.endswith("." + z.dns_name)]
        return max(zones, key=lambda z: len(z.dns_name))

    # HTTP -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body: Any = raw
        if raw and "json" in (handler.headers.get("Content-Type") or ""):
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        seen = Seen(method, url.path, query, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(seen)
        try:
            with self._lock:
                status, doc, headers = 200, self._route(method, seen), {}
        except _Reply as reply:
            status, doc, headers = reply.status, reply.doc, reply.headers
        seen.status = status
        if isinstance(doc, bytes):
            payload, content_type = doc, headers.pop("Content-Type", "text/html")
        elif isinstance(doc, str):
            payload, content_type = doc.encode(), "application/text"
        else:
            payload, content_type = json.dumps(doc).encode(), "application/json; charset=UTF-8"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _route(self, method: str, seen: Seen) -> Any:
        if seen.path == "/token" and method == "POST":
            return self._token(seen.body)
        if seen.path == "/" or seen.path.startswith(METADATA_PATH):
            return self._metadata(seen)
        if not seen.path.startswith(API_PATH):
            raise _error(404, "notFound", "Not Found")
        self._fault()
        email = self._authenticate(seen.headers)
        parts = [unquote(p) for p in seen.path[len(API_PATH):].split("/")]
        project = parts[0]
        if self.api_disabled:
            raise _error(403, "accessNotConfigured", "Cloud DNS API has not been used in "
                         f"project {project} before or it is disabled. Enable it by visiting "
                         "the console, then retry.")
        if project != self.project:
            raise _error(404, "notFound",
                         f"The 'parameters.project' resource named '{project}' does not exist.")
        rest = parts[1:]
        if rest == ["managedZones"] and method == "GET":
            self._allow(email, "dns.managedZones.list")
            return self._list_zones(seen.query)
        if len(rest) >= 3 and rest[0] == "managedZones":
            zone = self._zone(rest[1])
            if rest[2:] == ["rrsets"] and method == "GET":
                self._allow(email, "dns.resourceRecordSets.list")
                return self._list_rrsets(zone, seen.query)
            if rest[2:] == ["changes"] and method == "POST":
                self._allow(email, "dns.changes.create")
                return self._create_change(zone, seen.body)
            if len(rest) == 4 and rest[2] == "changes" and method == "GET":
                self._allow(email, "dns.changes.get")
                return self._get_change(zone, rest[3])
        raise _error(404, "notFound", "Not Found")

    def _fault(self) -> None:
        while self._faults:
            fault = self._faults[0]
            if fault.remaining is not None:
                if fault.remaining <= 0:
                    self._faults.pop(0)
                    continue
                fault.remaining -= 1
            if fault.kind == "429":
                raise _error(429, "rateLimitExceeded", "Quota exceeded for quota metric "
                             "'Read requests' and limit 'Read requests per minute' of service "
                             "'dns.googleapis.com'.")
            if fault.kind in ("500", "503"):
                raise _error(int(fault.kind), "backendError", "Backend Error")
            raise _Reply(200, b"<html><body>Bad gateway</body></html>",
                         {"Content-Type": "text/html"})

    def _authenticate(self, headers: dict[str, str]) -> str:
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        email = self.tokens.get(token)
        if email is None:
            raise _error(401, "authError", "Request had invalid authentication credentials. "
                         "Expected OAuth 2 access token, login cookie or other valid "
                         "authentication credential.")
        return email

    def _allow(self, email: str, permission: str) -> None:
        if permission not in self.permissions:
            raise _error(403, "forbidden", "Forbidden")

    def _zone(self, name: str) -> _Zone:
        for zone in self.state.values():
            if name in (zone.name, zone.id):
                return zone
        raise _error(404, "notFound",
                     f"The 'parameters.managedZone' resource named '{name}' does not exist.")

    # Lists ------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], key: str,
              kind: str) -> dict[str, Any]:
        try:
            size = min(int(query.get("maxResults", self.max_results)), self.max_results)
            token = query.get("pageToken")
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            raise _error(400, "invalid", "Invalid value for 'parameters.pageToken'") from None
        doc: dict[str, Any] = {"kind": kind, key: items[start:start + size]}
        if start + size < len(items):
            doc["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return doc

    def _list_zones(self, query: dict[str, str]) -> dict[str, Any]:
        wanted = query.get("dnsName", "").lower()
        zones = [
            {"kind": "dns#managedZone", "name": z.name, "dnsName": z.dns_name, "id": z.id,
             "description": "", "visibility": z.visibility,
             "nameServers": [f"ns-cloud-a{i}.googledomains.com." for i in (1, 2, 3, 4)]}
            for z in self.state.values() if not wanted or z.dns_name == wanted
        ]
        return self._page(zones, query, "managedZones", "dns#managedZonesListResponse")

    def _list_rrsets(self, zone: _Zone, query: dict[str, str]) -> dict[str, Any]:
        name, rtype = query.get("name", "").lower(), query.get("type")
        if rtype and not name:
            raise _error(400, "invalid", "The 'parameters.name' field is required when "
                         "'parameters.type' is given.")
        found = [copy.deepcopy(r) for (n, t), r in sorted(zone.rrsets.items())
                 if (not name or n == name) and (not rtype or t == rtype)]
        return self._page(found, query, "rrsets", "dns#resourceRecordSetsListResponse")

    # Changes ----------------------------------------------------------------

    def _create_change(self, zone: _Zone, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not (body.get("additions") or body.get("deletions")):
            raise _error(400, "required",
                         "The 'entity.change' parameter is required but was missing.")
        additions, deletions = body.get("additions") or [], body.get("deletions") or []
        if len(additions) > 1000 or len(deletions) > 1000:
            raise _error(413, "quotaExceeded", "Quota exceeded: rrsetAdditionsPerChange or "
                         "rrsetDeletionsPerChange")
        hooks, self.before_change = self.before_change, []
        for hook in hooks:
            hook(self)
        rrsets = dict(zone.rrsets)
        for index, wanted in enumerate(deletions):
            where = f"entity.change.deletions[{index}]"
            name, rtype = _check_rrset(zone, wanted, where)
            have = rrsets.get((name, rtype))
            if have is None:
                raise _error(404, "notFound", f"The '{where}' resource named "
                             f"'{wanted['name']} ({rtype})' does not exist.")
            if have["ttl"] != wanted["ttl"] or sorted(have["rrdatas"]) != sorted(
                    wanted["rrdatas"]):
                raise _error(412, "conditionNotMet", f"Precondition not met for '{where}'")
            del rrsets[(name, rtype)]
        for index, wanted in enumerate(additions):
            where = f"entity.change.additions[{index}]"
            name, rtype = _check_rrset(zone, wanted, where)
            if (name, rtype) in rrsets:
                raise _error(409, "alreadyExists", f"The resource '{where}' named "
                             f"'{wanted['name']} ({rtype})' already exists")
            rrsets[(name, rtype)] = _rrset(name, rtype, wanted["ttl"], list(wanted["rrdatas"]))
        zone.rrsets = rrsets
        self._changes += 1
        change = {"kind": "dns#change", "id": str(self._changes), "status": "pending",
                  "startTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                  "additions": additions, "deletions": deletions}
        zone.changes[change["id"]] = change
        zone.polls[change["id"]] = self.pending_polls
        return dict(change)

    def _get_change(self, zone: _Zone, change_id: str) -> dict[str, Any]:
        change = zone.changes.get(change_id)
        if change is None:
            raise _error(404, "notFound", f"The 'parameters.changeId' resource named "
                         f"'{change_id}' does not exist.")
        if zone.polls[change_id] > 0:
            zone.polls[change_id] -= 1
        else:
            change["status"] = "done"
        return dict(change)

    # OAuth and metadata ---------------------------------------------------------

    def _token(self, body: Any) -> dict[str, Any]:
        form = {k: v[-1] for k, v in parse_qs(body.decode() if isinstance(body, bytes)
                                               else "").items()}
        if form.get("grant_type") != JWT_GRANT:
            raise _grant_error("unsupported_grant_type", "Invalid grant_type: ")
        try:
            header_b64, claims_b64, signature_b64 = form.get("assertion", "").split(".")
            header, claims = json.loads(_unb64(header_b64)), json.loads(_unb64(claims_b64))
            signature = _unb64(signature_b64)
        except ValueError:
            raise _grant_error("invalid_grant", "Invalid JWT: malformed assertion") from None
        public = self.accounts.get(str(claims.get("iss")))
        if public is None:
            raise _grant_error("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or self.refuse_tokens:
            raise _grant_error("invalid_grant", "Invalid JWT Signature.")
        try:
            public.verify(signature, f"{header_b64}.{claims_b64}".encode(),
                          padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _grant_error("invalid_grant", "Invalid JWT Signature.") from None
        now = time.time()
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not (iat - 60 <= now <= exp and exp - iat <= 3600):
            raise _grant_error("invalid_grant", "Invalid JWT: Token must be a short-lived "
                               "token (60 minutes) and in a reasonable timeframe.")
        # Current google-auth signs for Google's endpoint, older versions for the
        # file's token_uri: for a real key file the two are the same URL.
        if claims.get("aud") not in (AUDIENCE, self.token_uri):
            raise _grant_error("invalid_grant", f"Invalid JWT: audience is not {AUDIENCE}.")
        if not set(str(claims.get("scope", "")).split()) & set(SCOPES):
            raise _grant_error("invalid_scope", "Invalid OAuth scope or ID token audience "
                               "provided.")
        return self._issue(str(claims["iss"]))

    def _issue(self, email: str) -> dict[str, Any]:
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = email
        return {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _metadata(self, seen: Seen) -> Any:
        lower = {k.lower(): v for k, v in seen.headers.items()}
        if lower.get("metadata-flavor") != "Google":
            raise _Reply(403, b"Missing Metadata-Flavor:Google header.")
        flavor = {"Metadata-Flavor": "Google"}
        path = seen.path[len(METADATA_PATH):] if seen.path != "/" else ""
        account = "instance/service-accounts/default/"
        if seen.path == "/":
            raise _Reply(200, "computeMetadata/", flavor)
        if path == "project/project-id":
            raise _Reply(200, self.vm_project, flavor)
        if path == account:
            raise _Reply(200, {"aliases": ["default"], "email": self.vm_account,
                               "scopes": list(SCOPES)}, flavor)
        if path == account + "token":
            raise _Reply(200, self._issue(self.vm_account), flavor)
        if path == account + "email":
            raise _Reply(200, self.vm_account, flavor)
        raise _Reply(404, b"Not Found", {**flavor, "Content-Type": "text/html"})


def _grant_error(error: str, description: str) -> _Reply:
    return _Reply(400, {"error": error, "error_description": description})


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rrset(name: str, rtype: str, ttl: int, rrdatas: list[str]) -> dict[str, Any]:
    return {"kind": "dns#resourceRecordSet", "name": name, "type": rtype, "ttl": ttl,
            "rrdatas": rrdatas}


def _record(owner: str, text: str) -> Record:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
    return Record.from_rdata(owner, rdata)  # type: ignore[arg-type]


def _check_rrset(zone: _Zone, rrset: Any, where: str) -> tuple[str, str]:
    """Cloud DNS's checks of one record set of a change; (name, type) if it passes."""
    if not isinstance(rrset, dict):
        raise _error(400, "invalid", f"Invalid value for '{where}'")
    name, rtype = str(rrset.get("name", "")), str(rrset.get("type", ""))
    if not name.endswith("."):
        raise _error(400, "invalid", f"Invalid value for '{where}.name': '{name}'")
    lowered = name.lower()
    if lowered != zone.dns_name and not lowered.endswith("." + zone.dns_name):
        raise _error(400, "invalid", f"The resource record set '{where}' named '{name}' is "
                     f"not within the managed zone '{zone.dns_name}'.")
    ttl, rrdatas = rrset.get("ttl"), rrset.get("rrdatas")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 2**31 - 1:
        raise _error(400, "invalid", f"Invalid value for '{where}.ttl': '{ttl}'")
    if not isinstance(rrdatas, list) or not rrdatas:
        raise _error(400, "required", f"The '{where}.rrdata' parameter is required but was "
                     "missing.")
    if len(rrdatas) > 100:
        raise _error(400, "invalid", f"Too many rrdatas in '{where}' (100 at most).")
    if rtype == "TLSA":
        for i, text in enumerate(rrdatas):
            try:
                dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, str(text))
            except (dns.exception.DNSException, ValueError):
                raise _error(400, "invalid", f"Invalid value for '{where}.rrdata[{i}]': "
                             f"'{text}'") from None
    return lowered, rtype
