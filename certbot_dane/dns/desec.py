"""deSEC (desec.io) through its REST API, reading certbot-dns-desec's INI.

deSEC's API manages RRsets, not records: a write names the whole TLSA RRset
of an owner name. So that hosts sharing an owner name never remove each
other's records, every change is a compare-and-swap done by the store: read
the RRset, merge this host's records in (or out), write the RRset back, read
it again, and repeat while what is read is not what was wanted, a bounded
number of times. Only the records of the call are added or removed; the
rest of the RRset is written back as it was read.

What the API guarantees, and what it does not: a bulk write is atomic (all
RRsets of the request or none), but there is no conditional write (no
version, ETag or If-Match), so a write cannot be refused because the RRset
changed after it was read. Another writer whose write lands between our read
and our write is overwritten, or overwrites us. The read after each write
catches the second case and writes again, so a writer that also checks (a
second host running certbot-dane) sees the first case and does the same.
A stale write that lands after the checking read can still remove a record;
such a record is then missing on the authoritative servers, which the
rollover checks before it moves a service, and the next list shows it gone.

The domain is the longest name in the account's domain list (GET
``/domains/``, read once per store) that contains the owner name, so nested
domains need no configuration. Its ``minimum_ttl`` is deSEC's floor for
every RRset of the domain: a lower TTL is refused here, before any request,
with a message naming ``--dane-record-ttl``. Many owner names in one domain
(a check of many lineages) are read with one listing and written with one
bulk PATCH, which counts once against deSEC's per-domain write limits.
A 429 is waited out briefly (its Retry-After, bounded); beyond that the
operation fails softly, and the next check tries again.
"""
from __future__ import annotations

import builtins
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import dns.exception
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
    RRsetView,
    SoftStoreError,
    StoreConfigError,
    StoreError,
    plugin_credentials,
)
from .webapi import MAX_RETRIES, MAX_RETRY_WAIT, network_cause, one_line, retry_after

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://desec.io/api/v1"
#: writes of one RRset before giving up on a name that keeps changing
SWAP_ATTEMPTS = 5
#: RRsets per bulk PATCH: deSEC documents no limit; this keeps requests small
BULK_RRSETS = 500
#: deSEC's largest TTL
MAXIMUM_TTL = 86400
#: a runaway pagination (a server that always links a next page) stops here
MAX_PAGES = 1000


class _ApiError(Exception):
    """One failed API call; ``reason`` is one line, free of secrets."""

    def __init__(
        self, reason: str, status: int | None = None, kind: str = "http",
        fields: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        #: "http" (an answer), "connect", "timeout" or "malformed"
        self.kind = kind
        #: the RRset fields deSEC found fault with (a 400's body)
        self.fields = fields


@dataclass(frozen=True)
class _Answer:
    doc: Any
    next_cursor: str | None = None


class DesecApi:
    """The few endpoints the store needs, with token auth, timeouts and 429 waits."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._sleep = sleep
        self._token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "certbot-dane"

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        absent_ok: bool = False,
    ) -> _Answer:
        """One request; waits and retries on 429, raises :class:`_ApiError` otherwise.

        With ``absent_ok`` a 404 is an answer (an RRset that does not exist).
        """
        url = self.base_url + path
        for attempt in range(MAX_RETRIES + 1):
            try:
                response = self.session.request(
                    method, url, params=params, json=body, timeout=self.timeout
                )
            except requests.Timeout:
                raise _ApiError(
                    f"no answer from {self.base_url} within {self.timeout:g} s", kind="timeout"
                ) from None
            except requests.RequestException as err:
                cause = network_cause(err) or type(err).__name__
                raise _ApiError(
                    f"cannot connect to {self.base_url}: {self._clean(cause)}", kind="connect"
                ) from None
            logger.debug("desec: %s %s -> HTTP %s", method, path, response.status_code)
            if response.status_code != 429:
                return self._decode(response, absent_ok)
            wait = retry_after(response.headers.get("Retry-After"), attempt)
            if attempt == MAX_RETRIES or wait > MAX_RETRY_WAIT:
                raise _ApiError(
                    f"rate limited by deSEC (HTTP 429, retry after {wait:g} s)", status=429
                )
            logger.info("desec: rate limited, retrying in %g s", wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def pages(self, path: str, params: dict[str, str]) -> Iterator[Any]:
        """Every item of a list, following the cursor of each ``Link: rel="next"``.

        The empty ``cursor=`` asks for pagination from the start, so a list
        longer than one page never answers "400 pagination required". Only
        the cursor is taken from the link: the next request goes to our own
        base URL, so the token is never sent where the server points.
        """
        cursor = ""
        for _ in range(MAX_PAGES):
            answer = self.call("GET", path, {**params, "cursor": cursor})
            if not isinstance(answer.doc, list):
                raise _ApiError("malformed answer: a list is not a JSON array", kind="malformed")
            yield from answer.doc
            if answer.next_cursor is None:
                return
            cursor = answer.next_cursor
        raise _ApiError(f"malformed answer: more than {MAX_PAGES} pages", kind="malformed")

    def _decode(self, response: requests.Response, absent_ok: bool) -> _Answer:
        status = response.status_code
        if status == 204 or (status == 404 and absent_ok):
            return _Answer(None)
        try:
            doc = response.json()
        except ValueError:
            if status >= 400:
                raise _ApiError(f"HTTP {status} from deSEC", status=status) from None
            raise _ApiError(
                f"malformed answer: HTTP {status} without JSON", kind="malformed"
            ) from None
        if status >= 400:
            detail, fields = _problem(doc)
            raise _ApiError(
                self._clean(f"{detail} (HTTP {status})"), status=status, fields=fields
            )
        return _Answer(doc, _next_cursor(response))

    def _clean(self, text: str) -> str:
        return one_line(text, (self._token,))


@dataclass(frozen=True)
class _Domain:
    """One domain of the account: its name (no trailing dot) and its TTL floor."""

    name: str
    minimum_ttl: int


@dataclass(frozen=True)
class _RRset:
    records: frozenset[Record]
    ttl: int


@dataclass
class _Edit:
    """What one call wants at one owner name."""

    verb: str  # "add", "delete" or "retime"
    records: set[Record] = field(default_factory=set)
    ttl: int | None = None

    def what(self, owner: str) -> str:
        count = len(self.records)
        if self.verb == "retime":
            return f"change the TTL of {count} TLSA record(s) at {owner}"
        return f"{self.verb} {count} TLSA record(s) at {owner}"

    def done(self, current: _RRset | None) -> bool:
        """Does the RRset as read already say what this edit wants?"""
        have = current.records if current else frozenset()
        if self.verb == "add":
            return self.records <= have
        if self.verb == "delete":
            return not self.records & have
        return current is None or not self.records & have or current.ttl == self.ttl

    def change(self, subname: str, current: _RRset | None) -> dict[str, Any]:
        """The RRset to write: the one read with this edit merged in or out.

        A TTL change sends no records, so it cannot overwrite anyone's.
        """
        rrset: dict[str, Any] = {"subname": subname, "type": "TLSA"}
        have = current.records if current else frozenset()
        if self.verb == "add":
            rrset.update(ttl=self.ttl, records=_texts(have | self.records))
        elif self.verb == "delete":
            left = have - self.records
            rrset["records"] = _texts(left)
            if left and current is not None:
                rrset["ttl"] = current.ttl  # writes it whole even if it vanished meanwhile
        else:
            rrset["ttl"] = self.ttl
        return rrset


class DesecStore(BatchStore):
    """TLSA records at deSEC, each RRset changed by compare-and-swap."""

    name = "desec"

    def __init__(
        self,
        token: str,
        api_url: str | None = None,
        timeout: float = 10.0,
        *,
        credentials: str | None = None,
        endpoint_from: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        swap_attempts: int = SWAP_ATTEMPTS,
    ) -> None:
        """``credentials`` (the INI's path) and ``endpoint_from`` (where a
        non-default URL came from) only make messages name what to fix."""
        if not token:
            raise StoreConfigError("desec store: no deSEC token given")
        self.api = DesecApi(token, api_url or DEFAULT_API_URL, timeout=timeout, sleep=sleep)
        self.swap_attempts = max(1, swap_attempts)
        self._file = credentials or "the credentials file"
        self._endpoint_from = endpoint_from
        self._domains: builtins.list[_Domain] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> DesecStore:
        path = settings.credentials
        if not path:
            raise StoreConfigError(
                "desec store: no credentials file; pass --dane-credentials PATH (the INI used "
                "by certbot-dns-desec) or use -a dns-desec with its credentials"
            )
        values = read_credentials(path)
        token = values.get("token")
        if not token:
            raise StoreConfigError(
                f"desec store: {path} has no dns_desec_token; add the deSEC API token "
                "as dns_desec_token = TOKEN"
            )
        endpoint = values.get("endpoint")
        if endpoint and not endpoint.startswith(("https://", "http://")):
            raise StoreConfigError(
                f"desec store: dns_desec_endpoint in {path} is not an http(s) URL; remove it "
                f"to use {DEFAULT_API_URL}"
            )
        if settings.api_url:
            url, source = settings.api_url, "--dane-api-url"
        elif endpoint:
            url, source = endpoint, f"dns_desec_endpoint in {path}"
        else:
            url, source = DEFAULT_API_URL, None
        return cls(token, url, timeout, credentials=path, endpoint_from=source)

    # Messages ---------------------------------------------------------------

    def _fail(self, what: str, err: _ApiError, domain: _Domain | None = None,
              ttl: int | None = None) -> StoreError:
        """The operator's one line for a failed call: the cause and what to change."""
        if err.status == 400 and "ttl" in err.fields and domain is not None:
            # deSEC's own number wins: the minimum may have changed since the listing.
            found = re.search(r"greater than or equal to (\d+)", err.reason)
            floor = int(found.group(1)) if found else domain.minimum_ttl
            return self._ttl_refused(what, domain, ttl, floor, err.reason)
        kind = SoftStoreError if err.status == 429 else StoreError
        return kind(f"desec store: cannot {what}: {err.reason}{self._fix(err)}")

    def _fix(self, err: _ApiError) -> str:
        if err.status == 401:
            return f"; put a valid deSEC token in dns_desec_token of {self._file}"
        if err.status == 403:
            return (
                f"; the token in dns_desec_token of {self._file} needs write access to this "
                "domain's TLSA RRsets (its scoping policies) from this host's address"
            )
        if err.status == 429:
            return "; the next check tries again"
        if err.status == 404:
            return "; the domain is no longer in this deSEC account"
        if err.status is not None and err.status >= 500:
            return "; deSEC has a problem, try again later"
        if err.kind in ("connect", "timeout"):
            where = f", and {self._endpoint_from}" if self._endpoint_from else ""
            return f"; check the network{where}"
        return ""

    def _ttl_refused(
        self, what: str, domain: _Domain, ttl: int | None, floor: int, said: str = ""
    ) -> StoreError:
        if ttl is not None and ttl > MAXIMUM_TTL:
            return StoreError(
                f"desec store: cannot {what}: deSEC accepts TTLs up to {MAXIMUM_TTL} s, not "
                f"{ttl}; set --dane-record-ttl {MAXIMUM_TTL} or less"
            )
        asked = f" {ttl} s" if ttl is not None else ""
        server = f" ({said})" if said else ""
        return StoreError(
            f"desec store: cannot {what}: deSEC refuses the TTL{asked}{server}, below the "
            f"minimum of {floor} s for {domain.name}; set --dane-record-ttl {floor} or more "
            "(or ask deSEC support for a lower minimum)"
        )

    # Domains ----------------------------------------------------------------

    def _all_domains(self, what: str) -> builtins.list[_Domain]:
        """The account's domains, listed once per store."""
        if self._domains is not None:
            return self._domains
        domains = []
        try:
            for item in self.api.pages("/domains/", {}):
                name, floor = (item.get(k) if isinstance(item, dict) else None
                               for k in ("name", "minimum_ttl"))
                if not isinstance(name, str) or not isinstance(floor, int):
                    raise _ApiError("malformed answer: a domain without name or minimum_ttl",
                                    kind="malformed")
                domains.append(_Domain(name.rstrip(".").lower(), floor))
        except _ApiError as err:
            raise self._fail(what, err) from None
        self._domains = domains
        return domains

    def domain_of(self, owner: str, what: str) -> _Domain:
        """The longest domain of the account that contains ``owner``."""
        name = owner.rstrip(".").lower()
        domains = self._all_domains(what)
        matches = [d for d in domains if name == d.name or name.endswith("." + d.name)]
        if not matches:
            held = ", ".join(sorted(d.name for d in domains)[:5]) or "none"
            more = ", ..." if len(domains) > 5 else ""
            raise StoreError(
                f"desec store: cannot {what}: no domain of this deSEC account contains it "
                f"(the account has {held}{more}); add the domain at deSEC, or put a token of "
                f"the account that holds it in dns_desec_token of {self._file}"
            )
        return max(matches, key=lambda d: len(d.name))

    # Reading ----------------------------------------------------------------

    def _read(
        self, domain: _Domain, owners: Sequence[str], what: str
    ) -> dict[str, _RRset | None]:
        """The TLSA RRsets at ``owners``: one GET for one name, one listing for more."""
        try:
            if len(owners) == 1:
                (owner,) = owners
                path = f"{_rrsets(domain)}{quote(_subname(owner, domain) or '@', safe='@')}/TLSA/"
                return {owner: _rrset(owner, self.api.call("GET", path, absent_ok=True).doc)}
            found: dict[str, _RRset | None] = dict.fromkeys(owners)
            for item in self.api.pages(_rrsets(domain), {"type": "TLSA"}):
                owner = _owner(item, domain)
                if owner in found:
                    found[owner] = _rrset(owner, item)
            return found
        except _ApiError as err:
            raise self._fail(what, err, domain) from None

    def list(self, owner: str) -> RRsetView:
        what = f"list TLSA records at {owner}"
        domain = self.domain_of(owner, what)
        rrset = self._read(domain, [owner.lower()], what)[owner.lower()]
        if rrset is None:
            return RRsetView(frozenset(), None)
        return RRsetView(rrset.records, rrset.ttl)

    def list_many(self, owners: Sequence[str]) -> builtins.list[RRsetView | StoreError]:
        """One listing per domain for all its owner names."""
        views: dict[str, RRsetView | StoreError] = {}
        groups: dict[_Domain, builtins.list[str]] = {}
        for owner in owners:
            try:
                groups.setdefault(self.domain_of(owner, f"list TLSA records at {owner}"),
                                  []).append(owner.lower())
            except StoreError as err:
                views[owner.lower()] = err
        for domain, names in groups.items():
            what = f"list TLSA records at {names[0]}" if len(names) == 1 else (
                f"list the TLSA records of {len(names)} names in {domain.name}")
            try:
                read = self._read(domain, sorted(set(names)), what)
            except StoreError as err:
                views.update(dict.fromkeys(names, err))
                continue
            for name, rrset in read.items():
                views[name] = (RRsetView(rrset.records, rrset.ttl) if rrset
                               else RRsetView(frozenset(), None))
        return [views[owner.lower()] for owner in owners]

    # Changing ---------------------------------------------------------------

    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Every item's owner names, swapped domain by domain; one result per item.

        Additions are merged in, one bulk PATCH per domain, and the RRset
        takes the TTL given; a TTL change is a PATCH of the TTL alone, the
        records untouched.
        """
        edits: dict[str, _Edit] = {}
        for records, ttl in items:
            for record in records:
                edit = edits.setdefault(record.owner.lower(), _Edit(verb))
                edit.records.add(_normal(record))
                edit.ttl = ttl
        failed: dict[str, StoreError] = {}
        groups: dict[_Domain, dict[str, _Edit]] = {}
        for owner, edit in sorted(edits.items()):
            try:
                groups.setdefault(self.domain_of(owner, edit.what(owner)), {})[owner] = edit
            except StoreError as err:
                failed[owner] = err
        for domain, group in groups.items():
            failed.update(self._swap(domain, group))
        return [
            next((failed[r.owner.lower()] for r in records if r.owner.lower() in failed), None)
            for records, _ in items
        ]

    def _swap(self, domain: _Domain, edits: dict[str, _Edit]) -> dict[str, StoreError]:
        """Read, merge, write and read again until every edit is done (bounded).

        Returns the owner names that failed, with their errors.
        """
        failed: dict[str, StoreError] = {}
        pending = {}
        for owner, edit in edits.items():
            if edit.ttl is not None and not domain.minimum_ttl <= edit.ttl <= MAXIMUM_TTL:
                failed[owner] = self._ttl_refused(
                    edit.what(owner), domain, edit.ttl, domain.minimum_ttl
                )
            else:
                pending[owner] = edit
        for attempt in range(self.swap_attempts + 1):
            if not pending:
                break
            what = _what(pending, domain)
            try:
                current = self._read(domain, sorted(pending), what)
            except StoreError as err:
                failed.update(dict.fromkeys(pending, err))
                return failed
            pending = {o: e for o, e in pending.items() if not e.done(current[o])}
            if not pending or attempt == self.swap_attempts:
                break
            if attempt:
                logger.info("desec: %d TLSA RRset(s) in %s changed by another writer; "
                            "writing again", len(pending), domain.name)
            errors = self._write(domain, pending, current)
            failed.update(errors)
            pending = {o: e for o, e in pending.items() if o not in errors}
        for owner, edit in pending.items():
            failed[owner] = StoreError(
                f"desec store: cannot {edit.what(owner)}: the RRset changed again after each "
                f"of {self.swap_attempts} writes (another writer at work?); the next check "
                "tries again"
            )
        return failed

    def _write(
        self, domain: _Domain, edits: dict[str, _Edit], current: dict[str, _RRset | None]
    ) -> dict[str, StoreError]:
        """One bulk PATCH per :data:`BULK_RRSETS` names; failures by owner name.

        deSEC applies a bulk request whole or not at all, so one RRset it
        refuses (a token policy, a TTL) fails the request: the names of a
        refused bulk are then written one at a time, which settles each alone.
        """
        changes = {o: e.change(_subname(o, domain), current[o]) for o, e in edits.items()}
        failed: dict[str, StoreError] = {}
        owners = sorted(changes)
        for start in range(0, len(owners), BULK_RRSETS):
            chunk = owners[start : start + BULK_RRSETS]
            try:
                self.api.call("PATCH", _rrsets(domain), body=[changes[o] for o in chunk])
                continue
            except _ApiError as err:
                if len(chunk) == 1 or err.status not in (400, 403):
                    for owner in chunk:
                        failed[owner] = self._fail(edits[owner].what(owner), err, domain,
                                                   edits[owner].ttl)
                    continue
                logger.debug("desec: bulk write refused, one RRset at a time: %s", err.reason)
            for owner in chunk:
                try:
                    self.api.call("PATCH", _rrsets(domain), body=[changes[owner]])
                except _ApiError as err:
                    failed[owner] = self._fail(edits[owner].what(owner), err, domain,
                                               edits[owner].ttl)
        return failed


def read_credentials(path: str) -> dict[str, str]:
    """Read certbot-dns-desec's INI with certbot's own reader (same warnings)."""
    conf = plugin_credentials(path, "desec", "dns_desec_")
    return {k: str(v).strip() for k in ("token", "endpoint") if (v := conf.conf(k))}


def _rrsets(domain: _Domain) -> str:
    return f"/domains/{quote(domain.name)}/rrsets/"


def _subname(owner: str, domain: _Domain) -> str:
    """The owner relative to its domain ("_25._tcp.mail"); "" at the apex."""
    name = owner.rstrip(".").lower()
    return "" if name == domain.name else name[: -len(domain.name) - 1]


def _owner(item: Any, domain: _Domain) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("subname"), str):
        raise _ApiError("malformed answer: an RRset without a subname", kind="malformed")
    subname = item["subname"].lower()
    return f"{subname}.{domain.name}." if subname else f"{domain.name}."


def _rrset(owner: str, item: Any) -> _RRset | None:
    """An RRset object of the API as records and TTL; None for no RRset."""
    if item is None:
        return None
    try:
        ttl = item["ttl"]
        texts = item["records"]
        if not isinstance(ttl, int) or not isinstance(texts, builtins.list):
            raise TypeError
        records = frozenset(_parse(owner, text) for text in texts)
    except (KeyError, TypeError, ValueError, dns.exception.DNSException):
        raise _ApiError("malformed answer: a TLSA RRset without usable records and TTL",
                        kind="malformed") from None
    return _RRset(records, ttl) if records else None


def _parse(owner: str, text: Any) -> Record:
    if not isinstance(text, str):
        raise TypeError
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
    if not isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        raise ValueError(text)
    return Record.from_rdata(owner, rdata)


def _texts(records: Iterable[Record]) -> builtins.list[str]:
    """Records in presentation format, as deSEC stores them (lower-case hex)."""
    return sorted(f"{r.usage} {r.selector} {r.mtype} {r.data.lower()}" for r in records)


def _normal(record: Record) -> Record:
    """The record as reading it back produces it: lower-case owner and data."""
    return Record(record.owner.lower(), record.usage, record.selector, record.mtype,
                  record.data.lower())


def _what(edits: dict[str, _Edit], domain: _Domain) -> str:
    if len(edits) == 1:
        ((owner, edit),) = edits.items()
        return edit.what(owner)
    verb = next(iter(edits.values())).verb
    action = "change the TTL of" if verb == "retime" else verb
    return f"{action} TLSA records at {len(edits)} names in {domain.name}"


def _problem(doc: Any) -> tuple[str, frozenset[str]]:
    """deSEC's reason for a refusal, and the RRset fields it names.

    Errors come as ``{"detail": "..."}``, as ``{"field": ["..."]}`` for one
    RRset, or, for a bulk request, as one such object per RRset in order
    (``{}`` for those without fault).
    """
    parts = doc if isinstance(doc, builtins.list) else [doc]
    for part in parts:
        if not isinstance(part, dict) or not part:
            continue
        if "detail" in part:
            return str(part["detail"]), frozenset()
        key, value = next(iter(part.items()))
        text = value[0] if isinstance(value, builtins.list) and value else value
        return f"{key}: {text}", frozenset(str(k) for k in part)
    return "deSEC refused the request without a reason", frozenset()


def _next_cursor(response: requests.Response) -> str | None:
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    cursor = parse_qs(urlsplit(link).query, keep_blank_values=True).get("cursor")
    return cursor[-1] if cursor else None
