"""OVHcloud DNS through the OVH API, with the official ``ovh`` client library,
reading certbot-dns-ovh's INI.

OVH's DNS API manages single records, each with an id: a TLSA record is
created with ``POST /domain/zone/{zone}/record`` and deleted with ``DELETE
.../record/{id}``, so records that other hosts keep at the same name are
never touched; a TTL is changed in place (``PUT .../record/{id}``), so the
record is never absent. OVH serves a change only after the zone is refreshed
(``POST .../refresh``): the store refreshes each zone it changed once, after
all the changes of a call, so a check of many lineages costs one refresh
per zone. When a refresh fails, the store undoes that zone's changes (they
were never served), so the API again shows what the name servers serve and
the next check makes them again; otherwise a record created but never
served would look published forever.

The zone is the longest name in the account's zone list (``GET
/domain/zone``) that contains the owner name. A consumer key granted only
``/domain/zone/ZONE/*`` may not list zones; the store then asks each
candidate's ``/status`` instead, longest first.

The library signs every request with the application key and secret and the
consumer key against the server's clock (``/auth/time``); the endpoint key
(``ovh-eu``, ``ovh-ca``, ...) picks the API. A 429 is waited out briefly (its
Retry-After, bounded), then the operation fails softly for the next check. A
record of TTL 0 is served with the zone's default TTL, which the store reads
from the zone's SOA settings and reports, since the rollover must wait out
what caches hold.
"""
from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import ovh
import ovh.exceptions
import requests

from ..tlsa import Record
from .base import (
    BatchStore,
    Change,
    Outcomes,
    RRsetView,
    SoftStoreError,
    StoreConfigError,
    StoreError,
    by_owner,
    plugin_credentials,
)
from .webapi import MAX_RETRIES, MAX_RETRY_WAIT, network_cause, one_line, retry_after

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "ovh-eu"
#: the rights a consumer key needs, as OVH's token page asks for them
RIGHTS = "GET, POST, PUT and DELETE on /domain/zone/*"
TOKEN_PAGE = "https://eu.api.ovh.com/createToken/ (ca.api.ovh.com for ovh-ca)"
#: the library's refusal of its own settings (ovh 1.1 and later; 1.0 has no OAuth2)
_CONFIGURATION_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(ovh.exceptions, n) for n in ("InvalidConfiguration",) if hasattr(ovh.exceptions, n)
)
#: what a request with ``absent_ok`` returns for a 404 (the object is not there)
ABSENT = object()


class _ApiError(Exception):
    """One failed API call; ``reason`` is one line, free of secrets."""

    def __init__(self, reason: str, status: int | None = None, code: str = "",
                 kind: str = "http") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        #: OVH's ``errorCode`` (NOT_GRANTED_CALL, INVALID_CREDENTIAL, ...)
        self.code = code
        #: "http" (an answer), "connect", "timeout" or "malformed"
        self.kind = kind


@dataclass(frozen=True)
class _Entry:
    """One TLSA record as OVH holds it."""

    id: int
    subdomain: str
    record: Record
    #: as stored: 0 means the zone's default TTL
    ttl: int


@dataclass(frozen=True)
class _Undo:
    """How to take back one change that was made but not yet refreshed."""

    kind: str  # "delete" (of a created record), "create" (a deleted one), "ttl"
    entry: _Entry


class OvhStore(BatchStore):
    """TLSA records in OVH zones, created and deleted one by one by record id."""

    name = "ovh"

    def __init__(
        self,
        endpoint: str,
        application_key: str,
        application_secret: str,
        consumer_key: str,
        timeout: float = 10.0,
        *,
        api_url: str | None = None,
        credentials: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Build the client offline: no request is made until the first operation.

        ``api_url`` replaces the endpoint's URL (a test server, a gateway);
        ``credentials`` (the INI's path) only makes messages name the file.
        """
        self._file = credentials or "the credentials file"
        self._secrets = (application_secret, consumer_key, application_key)
        if endpoint not in ovh.client.ENDPOINTS:
            raise StoreConfigError(
                f"ovh store: dns_ovh_endpoint {endpoint!r} in {self._file} is not an OVH API; "
                f"use one of {', '.join(sorted(ovh.client.ENDPOINTS))}"
            )
        try:
            self.client = ovh.Client(
                endpoint=endpoint,
                application_key=application_key,
                application_secret=application_secret,
                consumer_key=consumer_key,
                timeout=timeout,
            )
        except _CONFIGURATION_ERRORS:
            # The library adds OAuth2 settings from OVH_CLIENT_ID/OVH_CLIENT_SECRET
            # or an ovh.conf to the keys given; both at once is refused.
            raise StoreConfigError(
                "ovh store: OAuth2 settings (OVH_CLIENT_ID/OVH_CLIENT_SECRET in the environment "
                f"or client_id in an ovh.conf) conflict with the application key of "
                f"{self._file}; remove them from certbot's environment"
            ) from None
        if api_url:
            # The library knows only its named endpoints; its base URL is this attribute.
            self.client._endpoint = api_url.rstrip("/")
        self.endpoint = endpoint
        self.base_url: str = self.client._endpoint
        self.timeout = timeout
        self._sleep = sleep
        self._via = "--dane-api-url" if api_url else f"dns_ovh_endpoint in {self._file}"
        self._zone_names: builtins.list[str] | None = None
        #: the consumer key may not list zones: candidates are asked one by one
        self._unlisted = False
        self._zone_of: dict[str, str] = {}
        self._default_ttls: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, config_dir: str, timeout: float = 10.0) -> OvhStore:
        path = settings.credentials
        if not path:
            raise StoreConfigError(
                "ovh store: no credentials file; pass --dane-credentials PATH (the INI used by "
                "certbot-dns-ovh) or use -a dns-ovh with its credentials"
            )
        values = read_credentials(path)
        keys = ("endpoint", "application_key", "application_secret", "consumer_key")
        missing = [f"dns_ovh_{k}" for k in keys if not values.get(k)]
        if missing:
            raise StoreConfigError(
                f"ovh store: {path} has no {' or '.join(missing)}; add the endpoint (ovh-eu, "
                f"ovh-ca, ...) and the keys from {TOKEN_PAGE}"
            )
        return cls(
            *(values[k] for k in keys),
            timeout=timeout,
            api_url=settings.api_url,
            credentials=path,
        )

    # API calls --------------------------------------------------------------

    def _request(
        self, method: str, path: str, data: dict[str, Any] | None = None,
        params: dict[str, str] | None = None, absent_ok: bool = False,
    ) -> Any:
        """One signed request; waits and retries on 429, raises :class:`_ApiError`.

        With ``absent_ok`` a 404 returns :data:`ABSENT` (a record already gone).

        The library signs and sends; the answer is read here, so that the
        status, OVH's ``errorCode`` and ``Retry-After`` are all at hand.
        """
        target = f"{path}?{urlencode(params)}" if params else path
        for attempt in range(MAX_RETRIES + 1):
            response = self._send(method, target, data)
            logger.debug("ovh: %s %s -> HTTP %s", method, path, response.status_code)
            if response.status_code != 429:
                return self._decode(response, absent_ok)
            wait = retry_after(response.headers.get("Retry-After"), attempt)
            if attempt == MAX_RETRIES or wait > MAX_RETRY_WAIT:
                raise _ApiError(f"rate limited by OVH (HTTP 429, retry after {wait:g} s)", 429)
            logger.info("ovh: rate limited, retrying in %g s", wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _send(self, method: str, target: str, data: dict[str, Any] | None) -> requests.Response:
        """The library's signed request, its failures as :class:`_ApiError`.

        The first signed request asks ``/auth/time`` (through the library's
        own ``call``), so its errors arrive as the library's exceptions.
        """
        try:
            return self.client.raw_call(method, target, data=data)
        except (requests.Timeout, ovh.exceptions.HTTPError) as err:
            cause = err.args[1] if isinstance(err, ovh.exceptions.HTTPError) and len(
                err.args) > 1 else err
            if isinstance(cause, requests.Timeout):
                raise _ApiError(f"no answer from {self.base_url} within {self.timeout:g} s",
                                kind="timeout") from None
            reason = network_cause(cause) if isinstance(cause, BaseException) else None
            raise _ApiError(f"cannot connect to {self.base_url}: {reason or 'no connection'}",
                            kind="connect") from None
        except requests.RequestException as err:
            reason = network_cause(err) or type(err).__name__
            raise _ApiError(f"cannot connect to {self.base_url}: {self._clean(reason)}",
                            kind="connect") from None
        except ovh.exceptions.InvalidResponse:
            raise _ApiError("malformed answer from the time endpoint (/auth/time)",
                            kind="malformed") from None
        except ovh.exceptions.APIError as err:
            response = err.response
            status = response.status_code if response is not None else None
            raise _ApiError(
                self._clean(f"{err.args[0] if err.args else 'refused'} (HTTP {status}) from the "
                            "time endpoint (/auth/time)"), status) from None
        except (TypeError, ValueError, AttributeError):
            raise _ApiError("malformed answer: the server time is not a number",
                            kind="malformed") from None

    def _decode(self, response: requests.Response, absent_ok: bool) -> Any:
        status = response.status_code
        if status == 404 and absent_ok:
            return ABSENT
        if status == 204 or (status < 300 and not response.content):
            return None
        try:
            doc = response.json()
        except ValueError:
            if status >= 400:
                raise _ApiError(f"HTTP {status} from OVH", status) from None
            raise _ApiError(f"malformed answer: HTTP {status} without JSON",
                            kind="malformed") from None
        if status >= 400:
            doc = doc if isinstance(doc, dict) else {}
            message = str(doc.get("message") or "refused without a reason")
            code = str(doc.get("errorCode") or "")
            detail = f"HTTP {status}, {code}" if code else f"HTTP {status}"
            raise _ApiError(self._clean(f"{message} ({detail})"), status, code)
        return doc

    def _clean(self, text: str) -> str:
        return one_line(text, self._secrets)

    # Messages ---------------------------------------------------------------

    def _fail(self, what: str, err: _ApiError) -> StoreError:
        """The operator's one line for a failed call: the cause and what to change."""
        kind = SoftStoreError if err.status == 429 else StoreError
        return kind(f"ovh store: cannot {what}: {err.reason}{self._fix(err)}")

    def _fix(self, err: _ApiError) -> str:
        file = self._file
        if err.code == "INVALID_KEY":
            return (f"; check dns_ovh_application_key in {file} (keys belong to one endpoint: "
                    "check dns_ovh_endpoint too)")
        if err.code in ("INVALID_CREDENTIAL", "NOT_CREDENTIAL"):
            return (f"; the consumer key in dns_ovh_consumer_key of {file} is unknown, expired "
                    f"or revoked: create a new one with {RIGHTS}")
        if err.code == "INVALID_SIGNATURE":
            return f"; check dns_ovh_application_secret in {file}"
        if err.code in ("NOT_GRANTED_CALL", "FORBIDDEN") or err.status == 403:
            return (f"; the consumer key in dns_ovh_consumer_key of {file} lacks this right: "
                    f"create one with {RIGHTS}")
        if err.code == "QUERY_TIME_OUT":
            return "; check this host's clock"
        if err.status == 429:
            return "; the next check tries again"
        if err.status == 404:
            return "; the zone is no longer in this OVH account"
        if err.status is not None and err.status >= 500:
            return "; OVH has a problem, try again later"
        if err.kind in ("connect", "timeout"):
            return f"; check the network and {self._via}"
        return ""

    # Zones ------------------------------------------------------------------

    def zone_of(self, owner: str, what: str) -> str:
        """The longest zone of the account that contains ``owner``, cached."""
        name = owner.rstrip(".").lower()
        if name in self._zone_of:
            return self._zone_of[name]
        labels = name.split(".")
        candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
        zones = self._listed_zones(what)
        if zones is not None:
            found = next((c for c in candidates if c in zones), None)
        else:
            found = next((c for c in candidates if self._is_zone(c, what)), None)
        if found is None:
            held = f" (the account has {', '.join(sorted(zones)[:5]) or 'none'})" if (
                zones is not None) else ""
            raise StoreError(
                f"ovh store: cannot {what}: no DNS zone of this OVH account contains it{held}; "
                f"use the keys of the account that holds the zone in {self._file}"
            )
        self._zone_of[name] = found
        return found

    def _listed_zones(self, what: str) -> set[str] | None:
        """The account's zone names, or None when the consumer key may not list them."""
        if self._unlisted:
            return None
        if self._zone_names is None:
            try:
                names = self._request("GET", "/domain/zone")
            except _ApiError as err:
                if err.code == "NOT_GRANTED_CALL":
                    logger.debug("ovh: may not list zones; asking each candidate instead")
                    self._unlisted = True
                    return None
                raise self._fail(what, err) from None
            if not isinstance(names, builtins.list) or not all(isinstance(n, str) for n in names):
                raise StoreError(f"ovh store: cannot {what}: malformed answer: the zone list "
                                 "is not a list of names")
            self._zone_names = [n.rstrip(".").lower() for n in names]
        return set(self._zone_names)

    def _is_zone(self, candidate: str, what: str) -> bool:
        try:
            self._request("GET", f"/domain/zone/{quote(candidate)}/status")
        except _ApiError as err:
            if err.status in (403, 404):
                return False
            raise self._fail(what, err) from None
        return True

    def _default_ttl(self, zone: str, what: str) -> int:
        """The TTL the zone serves records of TTL 0 with."""
        if zone not in self._default_ttls:
            try:
                soa = self._request("GET", f"/domain/zone/{quote(zone)}/soa")
            except _ApiError as err:
                raise self._fail(what, err) from None
            ttl = soa.get("ttl") if isinstance(soa, dict) else None
            if not isinstance(ttl, int) or ttl <= 0:
                raise StoreError(f"ovh store: cannot {what}: malformed answer: the zone's "
                                 "default TTL is not a number")
            self._default_ttls[zone] = ttl
        return self._default_ttls[zone]

    # Records ----------------------------------------------------------------

    def _entries(self, zone: str, owner: str, what: str) -> builtins.list[_Entry]:
        """Every TLSA record at ``owner``: the ids, then each record by id."""
        sub = _subdomain(owner, zone)
        base = f"/domain/zone/{quote(zone)}/record"
        try:
            ids = self._request("GET", base, params={"fieldType": "TLSA", "subDomain": sub})
            if not isinstance(ids, builtins.list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise _ApiError("malformed answer: the record list is not a list of ids",
                                kind="malformed")
            entries = []
            for record_id in ids:
                item = self._request("GET", f"{base}/{record_id}", absent_ok=True)
                if item is not ABSENT:  # else deleted since it was listed
                    entry = _entry(owner, item)
                    if entry.subdomain == sub:
                        entries.append(entry)
            return entries
        except _ApiError as err:
            raise self._fail(what, err) from None

    def list(self, owner: str) -> RRsetView:
        what = f"list TLSA records at {owner}"
        zone = self.zone_of(owner, what)
        entries = self._entries(zone, owner, what)
        if not entries:
            return RRsetView(frozenset(), None)
        ttls = [e.ttl or self._default_ttl(zone, what) for e in entries]
        return RRsetView(frozenset(e.record for e in entries), min(ttls))

    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Every item's changes, then one refresh per zone that changed.

        Each record is created on its own; a TTL change is made in place (PUT),
        so the record is never absent.
        """
        results: Outcomes = [None] * len(items)
        made: dict[str, builtins.list[tuple[int, _Undo]]] = {}
        for index, (records, ttl) in enumerate(items):
            for owner, group in by_owner(records).items():
                what = _what(verb, owner, group)
                undos: builtins.list[_Undo] = []
                try:
                    zone = self.zone_of(owner, what)
                    try:
                        self._apply(verb, zone, owner, set(group), ttl, what, undos)
                    finally:
                        made.setdefault(zone, []).extend((index, u) for u in undos)
                except StoreError as err:
                    results[index] = err
                    break
        for zone, changes in made.items():
            self._refresh(zone, changes, results)
        return results

    def _apply(
        self, verb: str, zone: str, owner: str, records: set[Record], ttl: int | None,
        what: str, undos: builtins.list[_Undo],
    ) -> None:
        """One owner's changes, each appended to ``undos`` as soon as it is made."""
        base = f"/domain/zone/{quote(zone)}/record"
        present = self._entries(zone, owner, what)
        try:
            if verb == "add":
                there = {e.record for e in present}
                for record in sorted(records - there):
                    sub = _subdomain(owner, zone)
                    item = self._request("POST", base, data={
                        "fieldType": "TLSA", "subDomain": sub, "target": _target(record),
                        "ttl": ttl})
                    undos.append(_Undo("delete", _entry(owner, item)))
            elif verb == "delete":
                for entry in (e for e in present if e.record in records):
                    if self._request("DELETE", f"{base}/{entry.id}", absent_ok=True) is not ABSENT:
                        undos.append(_Undo("create", entry))
            else:
                for entry in (e for e in present if e.record in records and e.ttl != ttl):
                    self._request("PUT", f"{base}/{entry.id}", data={"ttl": ttl})
                    undos.append(_Undo("ttl", entry))
        except _ApiError as err:
            raise self._fail(what, err) from None

    def _refresh(
        self, zone: str, changes: builtins.list[tuple[int, _Undo]], results: Outcomes
    ) -> None:
        """Publish the zone's changes; if that fails, take them back.

        Changes that were not refreshed are not served, yet the API lists
        them: left in place, a check would find a record "present" that no
        name server ever serves. Undone, the next check makes them again.
        """
        if not changes:
            return
        try:
            self._request("POST", f"/domain/zone/{quote(zone)}/refresh")
            return
        except _ApiError as err:
            error = self._fail(f"publish the changes in zone {zone} (refresh)", err)
        stuck = 0
        for _, undo in reversed(changes):
            try:
                self._undo(zone, undo)
            except _ApiError as err:
                stuck += 1
                logger.warning("ovh: cannot undo a change at %s: %s", undo.entry.record.owner,
                               err.reason)
        note = (f"; {stuck} change(s) could not be undone and wait for the zone's next refresh"
                if stuck else "; the changes were undone")
        error = type(error)(f"{error}{note}")
        for index in sorted({i for i, _ in changes}):
            if results[index] is None:
                results[index] = error

    def _undo(self, zone: str, undo: _Undo) -> None:
        base = f"/domain/zone/{quote(zone)}/record"
        entry = undo.entry
        if undo.kind == "delete":
            self._request("DELETE", f"{base}/{entry.id}", absent_ok=True)
        elif undo.kind == "create":
            self._request("POST", base, data={
                "fieldType": "TLSA", "subDomain": entry.subdomain,
                "target": _target(entry.record), "ttl": entry.ttl})
        else:
            self._request("PUT", f"{base}/{entry.id}", data={"ttl": entry.ttl})


def read_credentials(path: str) -> dict[str, str]:
    """Read certbot-dns-ovh's INI with certbot's own reader (same warnings)."""
    conf = plugin_credentials(path, "ovh", "dns_ovh_")
    keys = ("endpoint", "application_key", "application_secret", "consumer_key")
    return {k: str(v).strip() for k in keys if (v := conf.conf(k))}


def _subdomain(owner: str, zone: str) -> str:
    """The owner relative to its zone ("_25._tcp.mail"); "" at the apex."""
    name = owner.rstrip(".").lower()
    return "" if name == zone else name[: -len(zone) - 1]


def _target(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data.lower()}"


def _entry(owner: str, item: Any) -> _Entry:
    """An OVH record object as an :class:`_Entry`."""
    try:
        record_id, sub, ttl = item["id"], item["subDomain"], item.get("ttl") or 0
        if item["fieldType"] != "TLSA" or not isinstance(record_id, int) or not isinstance(
                sub, str) or not isinstance(ttl, int):
            raise TypeError
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, str(item["target"]))
        if not isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
            raise TypeError
    except (KeyError, TypeError, ValueError, AttributeError, dns.exception.DNSException):
        raise _ApiError("malformed answer: a TLSA record without usable id, subDomain, "
                        "target and TTL", kind="malformed") from None
    return _Entry(record_id, sub.lower(), Record.from_rdata(owner.lower(), rdata), ttl)


def _what(verb: str, owner: str, records: Sequence[Record]) -> str:
    if verb == "retime":
        return f"change the TTL of {len(records)} TLSA record(s) at {owner}"
    return f"{verb} {len(records)} TLSA record(s) at {owner}"
