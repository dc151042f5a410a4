"""PowerDNS Authoritative's HTTP API, reading certbot-dns-powerdns's INI.

The API changes whole RRsets: a PATCH with ``changetype: REPLACE`` sets the
records of one name and type to exactly the list it carries. It cannot add
or remove one record, and it has no conditional write (no version, no
If-Match). So that hosts sharing an owner name do not remove each other's
records, every change is a read, merge and write of the one RRset, checked
afterwards:

#. read the TLSA RRset at the owner (from the whole zone: PowerDNS 4.7
   leaves disabled records out of an answer filtered by name and type);
#. merge: add our records to the list, or take ours out, keeping every other
   record exactly as it was (disabled ones included);
#. write the merged list back (REPLACE), unless it did not change;
#. read it again; if our change is not there (another writer replaced the
   RRset from an older read after we wrote), start again, a bounded number
   of times.

What this cannot guarantee: a change another writer makes between our
read and our write (one request's time) is overwritten by ours, and the
read-back cannot tell, because what it finds is exactly what we wrote. A
second certbot-dane that wrote in that moment notices at its own read-back
and writes again, unless its read-back came first. Hosts that often change
the same owner name at the same time should use the ``rfc2136`` store
against PowerDNS instead, whose single-record updates are atomic.

The changes of many owner names in one zone (a check of many lineages) go in
one PATCH, which PowerDNS applies in one transaction, all or nothing. When
PowerDNS rejects such a PATCH (422), each owner is written again on its own,
so one bad item fails alone.

The zone is the longest zone name in the server's zone list that contains the
owner, never a guess from the name's last labels. ``dns_powerdns_api_url`` is
the server's webserver URL (``http://127.0.0.1:8081``), with or without
``/api/v1``, as certbot-dns-powerdns takes it; the server id is
``localhost``, the only one PowerDNS Authoritative has. Nothing is contacted
until the first operation, and the API key only ever travels in the
``X-API-Key`` header.
"""
from __future__ import annotations

import dataclasses
import http.client
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import requests

from ..tlsa import Record
from .base import (
    BatchStore,
    Change,
    Outcomes,
    OwnerEdit,
    RRsetView,
    StoreConfigError,
    StoreError,
    Views,
    owner_edits,
    per_item,
    plugin_credentials,
)

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)

#: read, merge, write and read-back rounds per change before giving up on a busy RRset
SWAP_ATTEMPTS = 5
#: PowerDNS Authoritative has one server, and certbot-dns-powerdns knows no other
SERVER_ID = "localhost"
#: zone kinds whose records change elsewhere (on the primary, or in the catalog)
READ_ONLY_KINDS = ("slave", "secondary", "consumer")
#: how many zone names an error message lists
SHOWN_ZONES = 5
#: the INI keys, also in the ``certbot_dns_powerdns:`` prefixed form of certbot < 2
KEY_URL = "dns_powerdns_api_url"
KEY_KEY = "dns_powerdns_api_key"
LEGACY_PREFIX = "certbot_dns_powerdns:"


class _ApiError(Exception):
    """One failed API call; ``reason`` is one line, free of secrets."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Rejected(StoreError):
    """PowerDNS refused a change as invalid (HTTP 422); nothing of it was applied."""


@dataclass(frozen=True)
class _Zone:
    """One zone of the server's zone list."""

    name: dns.name.Name
    id: str
    kind: str


@dataclass(frozen=True)
class _Entry:
    """One record of an RRset as PowerDNS holds it: kept verbatim when merging."""

    content: str
    disabled: bool
    record: Record


@dataclass(frozen=True)
class _RRset:
    """The TLSA RRset at one owner name, as read (no entries when there is none)."""

    ttl: int | None
    entries: tuple[_Entry, ...]

    @property
    def served(self) -> frozenset[Record]:
        """The records PowerDNS serves: disabled ones are stored, not served."""
        return frozenset(e.record for e in self.entries if not e.disabled)

    @property
    def stored(self) -> frozenset[Record]:
        return frozenset(e.record for e in self.entries)


_ABSENT = _RRset(None, ())


class PowerDnsApi:
    """The few endpoints of the PowerDNS HTTP API the store needs.

    Every failure becomes :class:`_ApiError` with a one-line reason in the
    operator's terms: what failed, and the key of the credentials file (or
    setting of pdns.conf) to check.
    """

    def __init__(self, api_url: str, api_key: str, timeout: float, ini: str) -> None:
        base = api_url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        self.server = f"{base}/servers/{SERVER_ID}"
        self.shown = _without_userinfo(api_url.rstrip("/"))
        self.timeout = timeout
        self.ini = ini
        self._key = api_key
        self.session = requests.Session()
        self.session.headers.update(
            {"X-API-Key": api_key, "Accept": "application/json", "User-Agent": "certbot-dane"}
        )

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = self._request("GET", path, params=params)
        try:
            return response.json()
        except ValueError:
            raise self.malformed("not JSON") from None

    def patch(self, path: str, body: dict[str, Any]) -> None:
        self._request("PATCH", path, body=body)

    def malformed(self, detail: str) -> _ApiError:
        return _ApiError(
            f"malformed answer from {self.shown} ({detail}); check that {KEY_URL} in "
            f"{self.ini} is the PowerDNS webserver's URL"
        )

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> requests.Response:
        try:
            response = self.session.request(
                method, self.server + path, params=params, json=body, timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise _ApiError(
                f"no answer from the PowerDNS API at {self.shown} within {self.timeout:g} s; "
                f"check {KEY_URL} in {self.ini}"
            ) from None
        except requests.RequestException as err:
            raise _ApiError(
                f"cannot connect to the PowerDNS API at {self.shown} ({_os_reason(err)}); "
                f"check {KEY_URL} in {self.ini}, and api=yes, webserver=yes and "
                "webserver-allow-from in pdns.conf"
            ) from None
        logger.debug("powerdns: %s %s -> HTTP %s", method, path, response.status_code)
        if response.status_code >= 300:
            raise _ApiError(self._redact(self._reason(response, path)), response.status_code)
        return response

    def _reason(self, response: requests.Response, path: str) -> str:
        status = response.status_code
        error = _error_text(response)
        if status in (401, 403):
            return (
                f"PowerDNS refused the API key (HTTP {status}); set {KEY_KEY} in {self.ini} "
                "to the api-key of the server's pdns.conf"
            )
        if status == 404 and path == "/zones":
            return (
                f"{self.shown} has no PowerDNS API (HTTP 404 for the zone list); set {KEY_URL} "
                f"in {self.ini} to the webserver's URL, e.g. http://127.0.0.1:8081"
            )
        if status == 422:
            hint = ""
            if "Conflicts with pre-existing RRset" in error:
                hint = "; another record at that name (a CNAME) excludes TLSA: remove it"
            return f"PowerDNS rejected the change: {error or 'no reason given'} (HTTP 422){hint}"
        if 300 <= status < 400:
            where = response.headers.get("Location", "elsewhere")
            return (
                f"{self.shown} redirects to {_without_userinfo(where)} (HTTP {status}); set "
                f"{KEY_URL} in {self.ini} to the URL it redirects to"
            )
        detail = f": {error}" if error else ""
        if status >= 500:
            return f"the PowerDNS API failed (HTTP {status}{detail}); see the server's log"
        return f"the PowerDNS API answered HTTP {status}{detail}"

    def _redact(self, text: str) -> str:
        """One line, with the API key replaced (a proxy could echo it)."""
        text = " ".join(text.split())
        return text.replace(self._key, "***") if self._key else text


class PowerDnsStore(BatchStore):
    """TLSA records in PowerDNS zones, changed by read, merge, write and read-back."""

    name = "powerdns"

    def __init__(
        self,
        api_url: str,
        api_key: str,
        timeout: float = 10.0,
        *,
        credentials: str | None = None,
        swap_attempts: int = SWAP_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Remember how to reach the API; nothing is contacted yet.

        ``credentials`` is the INI's path, named in messages about its keys.
        """
        if not api_url.startswith(("http://", "https://")):
            raise StoreConfigError(
                f"powerdns store: {KEY_URL} in {credentials or 'the credentials file'} is not "
                "an http(s) URL; give the webserver's URL, e.g. http://127.0.0.1:8081"
            )
        self.api = PowerDnsApi(api_url, api_key, timeout, credentials or "the credentials file")
        self.swap_attempts = max(1, swap_attempts)
        self._sleep = sleep
        self._zones: list[_Zone] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> PowerDnsStore:
        """The store for a lineage: certbot-dns-powerdns's INI; ``--dane-api-url``
        replaces its URL."""
        path = settings.credentials
        if not path:
            raise StoreConfigError(
                "powerdns store: no credentials file; pass --dane-credentials PATH (the INI "
                "used by certbot-dns-powerdns) or use -a dns-powerdns with its credentials"
            )
        values = read_credentials(path)
        missing = [k for k in (KEY_URL, KEY_KEY) if not values.get(k)]
        if KEY_URL in missing and settings.api_url:
            missing.remove(KEY_URL)
        if missing:
            raise StoreConfigError(
                f"powerdns store: {path} has no {' and no '.join(missing)}; add "
                f"{KEY_URL} = http://127.0.0.1:8081 (the PowerDNS webserver) and "
                f"{KEY_KEY} = the api-key of its pdns.conf"
            )
        url = settings.api_url or values[KEY_URL]
        return cls(url, values[KEY_KEY], timeout=timeout, credentials=path)

    def _fail(self, what: str, where: str, err: _ApiError) -> StoreError:
        message = f"powerdns store: cannot {what} at {where}: {err.reason}"
        return _Rejected(message) if err.status == 422 else StoreError(message)

    # Zones ----------------------------------------------------------------

    def zones(self, what: str, owner: str) -> list[_Zone]:
        """The server's zones, listed once per store."""
        if self._zones is not None:
            return self._zones
        try:
            listed = self.api.get("/zones")
            if not isinstance(listed, list):
                raise self.api.malformed("the zone list is not a list")
            zones = []
            for item in listed:
                try:
                    zone = _Zone(
                        dns.name.from_text(item["name"]), str(item["id"]), str(item["kind"])
                    )
                except (KeyError, TypeError, dns.exception.DNSException):
                    raise self.api.malformed("a zone without name, id or kind") from None
                zones.append(zone)
        except _ApiError as err:
            raise self._fail(what, owner, err) from None
        self._zones = zones
        return zones

    def zone_of(self, owner: str, what: str) -> _Zone:
        """The longest zone of the server that contains ``owner``."""
        try:
            name = dns.name.from_text(owner)
        except dns.exception.DNSException:
            raise StoreError(f"powerdns store: cannot {what} at {owner}: not a DNS name") from None
        zones = self.zones(what, owner)
        matches = [z for z in zones if name.is_subdomain(z.name)]
        if not matches:
            shown = ", ".join(sorted(z.name.to_text() for z in zones)[:SHOWN_ZONES])
            more = "" if len(zones) <= SHOWN_ZONES else f" and {len(zones) - SHOWN_ZONES} more"
            has = f"it has {shown}{more}" if zones else "it has no zones"
            raise StoreError(
                f"powerdns store: cannot {what} at {owner}: no zone on the PowerDNS server at "
                f"{self.api.shown} contains the name ({has}); create the zone there, or set "
                f"{KEY_URL} in {self.api.ini} to the server that has it"
            )
        zone = max(matches, key=lambda z: len(z.name))
        if zone.kind.lower() in READ_ONLY_KINDS:
            raise StoreError(
                f"powerdns store: cannot {what} at {owner}: the zone {zone.name} is a "
                f"{zone.kind} zone on {self.api.shown}; set {KEY_URL} in {self.api.ini} to "
                "the API of its primary"
            )
        return zone

    def _zone_path(self, zone: _Zone) -> str:
        return "/zones/" + urllib.parse.quote(zone.id, safe="=")

    # Reading --------------------------------------------------------------

    def _read(
        self, zone: _Zone, owners: Collection[str], what: str, where: str
    ) -> dict[str, _RRset]:
        """The TLSA RRsets at ``owners`` as PowerDNS holds them, in one request.

        The whole zone is read: PowerDNS 4.7 answers the name and type filter
        (``rrset_name``, ``rrset_type``) without the disabled records, which a
        REPLACE built from it would delete.
        """
        try:
            body = self.api.get(self._zone_path(zone))
            if not isinstance(body, dict) or not isinstance(body.get("rrsets"), list):
                raise self.api.malformed("a zone without an RRset list")
            return _rrsets(owners, body["rrsets"], self.api)
        except _ApiError as err:
            if err.status == 404:
                err = _gone(zone)
            raise self._fail(what, where, err) from None

    def list(self, owner: str) -> RRsetView:
        (view,) = self.list_many([owner])
        if isinstance(view, StoreError):
            raise view
        return view

    def list_many(self, owners: Sequence[str]) -> Views:
        """One read per zone, however many owners are in it."""
        what = "list TLSA records"
        found: dict[str, RRsetView | StoreError] = {}
        zones: dict[str, tuple[_Zone, list[str]]] = {}
        for owner in sorted({o.lower() for o in owners}):
            try:
                zone = self.zone_of(owner, what)
            except StoreError as err:
                found[owner] = err
                continue
            zones.setdefault(zone.id, (zone, []))[1].append(owner)
        for zone, names in zones.values():
            where = names[0] if len(names) == 1 else f"{len(names)} names in {zone.name}"
            try:
                rrsets = self._read(zone, names, what, where)
            except StoreError as err:
                found.update((o, err) for o in names)
                continue
            for owner in names:
                rrset = rrsets[owner]
                found[owner] = RRsetView(rrset.served, rrset.ttl if rrset.served else None)
        return [found[o.lower()] for o in owners]

    # Changing -------------------------------------------------------------

    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Every item's changes, one PATCH per zone and round; one result per item.

        The TTL belongs to the RRset: a TTL change is one REPLACE per owner,
        its records unchanged.
        """
        edits = owner_edits(verb, items, _Edit)
        failed: dict[str, StoreError] = {}
        zones: dict[str, tuple[_Zone, dict[str, _Edit]]] = {}
        for owner in sorted(edits):
            try:
                zone = self.zone_of(owner, edits[owner].what)
            except StoreError as err:
                failed[owner] = err
                continue
            zones.setdefault(zone.id, (zone, {}))[1][owner] = edits[owner]
        for zone, owned in zones.values():
            self._swap(zone, owned, failed)
        return per_item(items, failed)

    def _swap(self, zone: _Zone, edits: dict[str, _Edit], failed: dict[str, StoreError]) -> None:
        """Read, merge, write and read back the owners of one zone until each
        holds its change; failures go to ``failed``, by owner."""
        pending = dict(edits)
        for attempt in range(self.swap_attempts):
            what, where = _label(zone, pending)
            try:
                current = self._read(zone, pending, what, where)
            except StoreError as err:
                failed.update((o, err) for o in pending)
                return
            bodies = {o: b for o in pending if (b := pending[o].rrset(o, current[o])) is not None}
            if not bodies:
                return
            pending = {o: pending[o] for o in bodies}
            what, where = _label(zone, pending)
            try:
                self._write(zone, bodies, what, where)
                after = self._read(zone, pending, what, where)
            except _Rejected as err:
                if len(bodies) == 1:
                    failed.update((o, err) for o in bodies)
                    return
                # All or nothing failed: each owner again on its own, so only
                # the one PowerDNS objects to fails.
                logger.debug("powerdns: change of %d names rejected, one by one", len(bodies))
                for owner in bodies:
                    self._swap(zone, {owner: pending[owner]}, failed)
                return
            except StoreError as err:
                failed.update((o, err) for o in bodies)
                return
            pending = {o: edit for o, edit in pending.items() if not edit.holds(after[o])}
            if not pending:
                return
            logger.debug(
                "powerdns: %s changed by another writer meanwhile (attempt %d); again",
                ", ".join(sorted(pending)),
                attempt + 1,
            )
            # Two hosts retrying in lockstep would collide again.
            self._sleep(random.uniform(0.05, 0.3) * (attempt + 1))
        for owner, edit in pending.items():
            failed[owner] = StoreError(
                f"powerdns store: cannot {edit.what} at {owner}: another writer changed the "
                f"RRset each of {self.swap_attempts} times it was written; try again"
            )

    def _write(self, zone: _Zone, bodies: dict[str, dict[str, Any]], what: str, where: str) -> None:
        """One PATCH with every owner's RRset: applied whole or not at all."""
        try:
            self.api.patch(self._zone_path(zone), {"rrsets": list(bodies.values())})
        except _ApiError as err:
            if err.status == 404:
                err = _gone(zone)
            raise self._fail(what, where, err) from None


def _gone(zone: _Zone) -> _ApiError:
    """A 404 for a zone of the list: deleted since the list was read."""
    return _ApiError(
        f"the PowerDNS server no longer has the zone {zone.name} (deleted meanwhile); the "
        "next run looks the zone up again"
    )


def _label(zone: _Zone, edits: dict[str, _Edit]) -> tuple[str, str]:
    """(what, where) of a change, for messages: the owner, or how many in which zone."""
    first = next(iter(edits))
    if len(edits) == 1:
        return edits[first].what, first
    return f"{edits[first].verb} TLSA records", f"{len(edits)} names in {zone.name}"


class _Edit(OwnerEdit):
    """What one call wants at one owner name, and the RRset that writes it."""

    @property
    def what(self) -> str:
        if self.verb == "retime":
            return "change the TTL of TLSA records"
        return f"{self.verb} TLSA records"

    def rrset(self, owner: str, current: _RRset) -> dict[str, Any] | None:
        """The RRset to write, merged into ``current``; None if nothing changes.

        Other records stay verbatim, in their order and with their disabled
        flag; ours are appended, or enabled when they are there but disabled.
        """
        entries = [e for e in current.entries if e.record not in self.minus]
        for record in sorted(self.plus):
            held = [e for e in entries if e.record == record]
            if not held:
                entries.append(_Entry(_content(record), False, record))
            elif all(e.disabled for e in held):
                entries[entries.index(held[0])] = dataclasses.replace(held[0], disabled=False)
        changed = entries != list(current.entries)
        ttl = self.ttl if self.ttl is not None else current.ttl
        if self.verb == "retime" and self.plus <= current.served:
            changed = current.ttl != ttl
        if not changed:
            return None
        if not entries:
            return {"name": owner, "type": "TLSA", "changetype": "DELETE"}
        return {
            "name": owner,
            "type": "TLSA",
            "ttl": ttl,
            "changetype": "REPLACE",
            "records": [{"content": e.content, "disabled": e.disabled} for e in entries],
        }

    def holds(self, rrset: _RRset) -> bool:
        """Is this change there, whatever else changed meanwhile?"""
        if not self.plus <= rrset.served or self.minus & rrset.stored:
            return False
        return self.verb != "retime" or rrset.ttl == self.ttl


def read_credentials(path: str) -> dict[str, str]:
    """certbot-dns-powerdns's INI, read with certbot's own reader (same warnings).

    Keys written for certbot before 2.0 carry the plugin's prefix
    (``certbot_dns_powerdns:dns_powerdns_api_url``); both forms are read.
    """
    conf = plugin_credentials(path, "powerdns")
    values = {}
    for key in (KEY_URL, KEY_KEY):
        value = conf.conf(key) or conf.conf(LEGACY_PREFIX + key)
        if value:
            values[key] = str(value).strip()
    return values


def _rrsets(owners: Collection[str], rrsets: list[Any], api: PowerDnsApi) -> dict[str, _RRset]:
    """The TLSA RRset at each of ``owners`` among the zone's RRsets."""
    wanted = {dns.name.from_text(o): o for o in owners}
    ttls: dict[str, int] = {}
    entries: dict[str, list[_Entry]] = {}
    try:
        for item in rrsets:
            if item["type"] != "TLSA":
                continue
            owner = wanted.get(dns.name.from_text(item["name"]))
            if owner is None:
                continue
            ttls[owner] = int(item["ttl"])
            for rr in item["records"]:
                text = str(rr["content"])
                entry = _Entry(text, bool(rr.get("disabled")), _parse(owner, text))
                entries.setdefault(owner, []).append(entry)
    except (KeyError, TypeError, ValueError, AttributeError, dns.exception.DNSException):
        raise api.malformed("a TLSA RRset without usable records") from None
    return {
        o: _RRset(ttls[o], tuple(entries[o])) if entries.get(o) else _ABSENT for o in owners
    }


def _parse(owner: str, content: str) -> Record:
    """A record from PowerDNS's presentation text ("3 1 1 abcd...")."""
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, content)
    if not isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        raise ValueError(f"not TLSA data: {content!r}")
    return Record.from_rdata(owner, rdata)


def _content(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data}"


def _error_text(response: requests.Response) -> str:
    """PowerDNS's ``{"error": "..."}``, or its short plain-text body."""
    try:
        doc = response.json()
    except ValueError:
        text = response.text.strip()
        return text if len(text) <= 200 and "<" not in text else ""
    if isinstance(doc, dict) and doc.get("error"):
        return str(doc["error"])
    return ""


def _without_userinfo(url: str) -> str:
    """The URL without ``user:password@`` (a proxy's basic auth), for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _os_reason(err: requests.RequestException) -> str:
    """The innermost OS-level reason ("Connection refused"), not urllib3's essay."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (http.client.RemoteDisconnected, ConnectionResetError)):
            # What PowerDNS does to a client outside webserver-allow-from.
            return "the server closed the connection without answering"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return type(err).__name__
