"""Cloudflare's v4 REST API, reading certbot-dns-cloudflare's INI.

The Cloudflare SDKs differ between the versions that certbot ships with
(python-cloudflare 2.x on Debian, ``cloudflare>=4`` in the snap), so this
store talks to the few endpoints it needs through a small adapter over
``requests``, which certbot already depends on.

The zone is the longest name, walking up from the owner's parent, that the
API lists under ``GET /zones?name=``: nested zones and public suffixes such as
``co.uk`` need no configuration, and nothing is guessed from the last two
labels. Records are created and deleted by id, never by name, so records that
other hosts keep at the same owner name are never touched. For many items at
once (a check of many lineages), a zone's TLSA records are listed once and
the changes go in batch requests, each applied whole or not at all; a failed
batch is done again one record at a time.
"""
from __future__ import annotations

import builtins
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from ..tlsa import Record
from .base import (
    Outcomes,
    RecordStore,
    RRsetView,
    SoftStoreError,
    StoreConfigError,
    StoreError,
    by_owner,
    outcome,
    plugin_credentials,
)
from .webapi import MAX_RETRIES, MAX_RETRY_WAIT, network_cause, retry_after

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"

#: Cloudflare's ttl 1 means "automatic", which Cloudflare serves as 300 s. The
#: rollover needs a number of seconds to wait out caches, so 1 is reported as 300.
AUTOMATIC_TTL = 1
AUTOMATIC_TTL_SECONDS = 300

#: Cloudflare answers a create of an existing identical record with this code;
#: another host (or an earlier, interrupted run) made it, which is what we wanted.
IDENTICAL_RECORD_EXISTS = 81058

#: A runaway pagination (a server that always claims one more page) stops here.
MAX_PAGES = 1000

#: Cloudflare's codes for credentials it cannot use: 1000 invalid API token,
#: 6003 invalid request headers (6102, 6103, 6111: the email, key or token
#: header), 9103 unknown email or key, 9106 missing headers, 9109 invalid
#: access token (also said, on a zone, for a token not allowed there).
_REFUSED_CREDENTIALS = frozenset({1000, 6003, 6102, 6103, 6111, 9103, 9106, 9109})
_MALFORMED_HEADER = frozenset({6003, 6102, 6103, 6111})
#: The form of a Global API Key; anything else in dns_cloudflare_api_key is a mistake.
_GLOBAL_KEY = re.compile(r"[0-9a-f]{37}")


class _ApiError(Exception):
    """One failed API call; ``reason`` is one line, free of secrets.

    ``codes`` are Cloudflare's error codes, the first error's and those of
    its ``error_chain``, and ``said`` the status, codes and messages in one
    parenthesis's words ("HTTP 403, code 9109: Invalid access token");
    ``write`` says whether the call changes records.
    """

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        codes: tuple[int, ...] = (),
        said: str = "",
        write: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.codes = codes
        self.said = said or reason
        self.write = write

    @property
    def code(self) -> int | None:
        return self.codes[0] if self.codes else None


@dataclass(frozen=True)
class _Entry:
    """One TLSA record as Cloudflare holds it: its id matters for deletion."""

    id: str
    record: Record
    ttl: int


#: What one item of a batched call wants, by owner: the records and the TTL.
_Wanted = dict[str, tuple[list[Record], int | None]]
#: The zone's TLSA records as listed, by API name.
_Present = dict[str, list[_Entry]]
#: One change of a batch request: ("posts", record) or ("deletes", {"id": ...}).
_Change = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class _Credentials:
    """Which credentials the store uses and where they came from, in a message's words.

    The words name the INI keys to change, never their values.
    """

    token: bool
    path: str | None = None
    #: whether dns_cloudflare_api_key has the form of a Global API Key
    global_key: bool = True

    def keys(self) -> str:
        if self.token:
            key = "dns_cloudflare_api_token"
            return f"{key} in {self.path}" if self.path else "the store's api_token"
        keys = "dns_cloudflare_email and dns_cloudflare_api_key"
        return f"{keys} in {self.path}" if self.path else "the store's email and api_key"

    def refused(self, err: _ApiError) -> str:
        """Cloudflare does not accept the credentials at all."""
        malformed = bool(set(err.codes) & _MALFORMED_HEADER)
        if self.token:
            cause = (
                "it is not a whole API token (cut short, or copied with spaces or quotes)"
                if malformed
                else "it is mistyped, revoked or expired"
            )
            return (
                f"Cloudflare refused the API token ({err.said}): {cause}; put a valid token "
                f"with the Zone:DNS:Edit permission in {self.keys()}"
            )
        if not self.global_key:
            return (
                f"Cloudflare refused the email and Global API Key ({err.said}): "
                "dns_cloudflare_api_key is not a Global API Key (37 hexadecimal digits); an "
                "API token belongs in dns_cloudflare_api_token, without dns_cloudflare_email "
                f"({self.keys()})"
            )
        return (
            f"Cloudflare refused the email and Global API Key ({err.said}): the email must be "
            "the Cloudflare account's login and the key its Global API Key; fix "
            f"{self.keys()}"
        )

    def forbidden(self, err: _ApiError, zone: str) -> str:
        """The credentials work, but not for these records of ``zone``."""
        verb = "change" if err.write else "read"
        if self.token:
            edit = ", not only Zone:DNS:Read" if err.write else ""
            return (
                f"the API token may not {verb} the DNS records of zone {zone} ({err.said}); "
                f"give it the Zone:DNS:Edit permission on {zone}{edit} ({self.keys()})"
            )
        return (
            f"the Cloudflare account of {self.keys()} may not {verb} the DNS records of zone "
            f"{zone} ({err.said}); use the credentials of an account that manages {zone}"
        )

    def no_zone(self, tried: str) -> str:
        """No zone containing the name is visible with these credentials."""
        if self.token:
            return (
                f"no Cloudflare zone for it is visible to the API token (tried {tried}); give "
                "the token Zone:DNS:Edit with the zone among its Zone Resources, or add the "
                f"zone to the token's account ({self.keys()})"
            )
        return (
            f"no Cloudflare zone for it is in the account of {self.keys()} (tried {tried}); "
            "add the zone to that account, or use the credentials of the account that has it"
        )


class CloudflareApi:
    """The handful of v4 endpoints the store needs, with auth, timeouts and 429 retries.

    Every failure becomes :class:`_ApiError` with a one-line reason taken from
    Cloudflare's ``errors[0].message`` or the HTTP status; the credentials
    only ever travel in request headers and are redacted from any reason.
    """

    def __init__(
        self,
        headers: dict[str, str],
        base_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._sleep = sleep
        self._secrets = tuple(s for s in secrets if s)
        #: why the API was given up for this run after a 429, if it was
        self._limited: str | None = None
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "certbot-dane"

    def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.call("GET", path, params=params)

    def pages(self, path: str, params: dict[str, Any], per_page: int) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following ``result_info`` to the last page.

        The server may cap ``per_page`` below what was asked, so the number of
        pages comes from its ``result_info``, not from our request.
        """
        page = 1
        while True:
            body = self.get(path, {**params, "page": page, "per_page": per_page})
            items = body.get("result")
            if not isinstance(items, list):
                raise _ApiError("malformed answer: the result of a list is not a list")
            yield from items
            info = body.get("result_info")
            info = info if isinstance(info, dict) else {}
            total_pages = info.get("total_pages")
            if isinstance(total_pages, int):
                more = page < total_pages
            else:
                served = info.get("per_page", per_page)
                more = bool(items) and isinstance(served, int) and len(items) >= served
            if not more or not items:
                return
            page += 1
            if page > MAX_PAGES:
                raise _ApiError(f"malformed answer: more than {MAX_PAGES} pages")

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One API call; waits and retries on 429, raises :class:`_ApiError` otherwise.

        Once a 429 outlasted the retries, every later call of this run fails
        at once: the limit is the account's, and more requests only extend it.
        """
        if self._limited:
            raise _ApiError(self._limited, status=429)
        url = self.base_url + path
        for attempt in range(MAX_RETRIES + 1):
            try:
                response = self.session.request(
                    method, url, params=params, json=body, timeout=self.timeout
                )
            except requests.Timeout:
                raise _ApiError(f"no answer from the API within {self.timeout:g} s") from None
            except requests.RequestException as err:
                raise _ApiError(self._redact(_connection_reason(err))) from None
            logger.debug("cloudflare: %s %s -> HTTP %s", method, path, response.status_code)
            if response.status_code == 429:
                wait = retry_after(response.headers.get("Retry-After"), attempt)
                if attempt == MAX_RETRIES or wait > MAX_RETRY_WAIT:
                    self._limited = _rate_limited(attempt, wait)
                    raise _ApiError(self._limited, status=429)
                logger.info("cloudflare: rate limited, retrying in %g s", wait)
                self._sleep(wait)
                continue
            return self._decode(response, write=method != "GET")
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _decode(self, response: requests.Response, write: bool) -> dict[str, Any]:
        status = response.status_code
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if status >= 400:
                raise _ApiError(f"HTTP {status}", status=status, write=write)
            raise _ApiError(f"malformed answer: HTTP {status} without a JSON object")
        if status >= 400 or doc.get("success") is not True:
            errors = _errors(doc)
            code, message = errors[0]
            reason = self._redact(f"{message} (HTTP {status}{f', code {code}' if code else ''})")
            said = "; ".join(f"{c}: {m}" if c else m for c, m in errors)
            said = self._redact(f"HTTP {status}, {'code ' if code else ''}{said}")
            codes = tuple(c for c, _ in errors if c)
            raise _ApiError(reason, status=status, codes=codes, said=said, write=write)
        return doc

    def _redact(self, text: str) -> str:
        """One line, with any credential replaced (an echoing proxy must not leak it)."""
        text = " ".join(text.split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class CloudflareStore(RecordStore):
    """TLSA records at Cloudflare, created and deleted one by one by record id."""

    name = "cloudflare"

    def __init__(
        self,
        api_token: str | None = None,
        email: str | None = None,
        api_key: str | None = None,
        api_url: str | None = None,
        timeout: float = 10.0,
        per_page: int = 100,
        sleep: Callable[[float], None] = time.sleep,
        credentials_file: str | None = None,
    ) -> None:
        """``credentials_file`` is the INI the credentials came from, named in messages."""
        if api_token and not (email or api_key):
            headers = {"Authorization": f"Bearer {api_token}"}
            self.credentials = _Credentials(True, credentials_file)
        elif email and api_key and not api_token:
            headers = {"X-Auth-Email": email, "X-Auth-Key": api_key}
            global_key = bool(_GLOBAL_KEY.fullmatch(api_key))
            self.credentials = _Credentials(False, credentials_file, global_key)
        else:
            raise StoreConfigError(
                "cloudflare store: give either an API token or an email and global API key"
            )
        self.per_page = per_page
        self.api = CloudflareApi(
            headers,
            api_url or DEFAULT_API_URL,
            timeout=timeout,
            sleep=sleep,
            secrets=tuple(s for s in (api_token, api_key) if s),
        )
        # Zone lookups, by candidate name: the zone id, or None for "not a zone".
        self._zone_ids: dict[str, str | None] = {}
        self._zone_names: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> CloudflareStore:
        path = settings.credentials
        if not path:
            raise StoreConfigError(
                "cloudflare store: no credentials file; pass --dane-credentials PATH (the INI "
                "used by certbot-dns-cloudflare) or use -a dns-cloudflare with its credentials"
            )
        values = read_credentials(path)
        token = values.get("api_token")
        email, key = values.get("email"), values.get("api_key")
        if token and (email or key):
            raise StoreConfigError(
                f"cloudflare store: {path} sets both dns_cloudflare_api_token and "
                "dns_cloudflare_email/dns_cloudflare_api_key; keep only the API token "
                "(recommended) or only the email and global API key"
            )
        if not token and not (email and key):
            raise StoreConfigError(
                f"cloudflare store: {path} has neither dns_cloudflare_api_token nor both "
                "dns_cloudflare_email and dns_cloudflare_api_key; add an API token with "
                "Zone:DNS:Edit permission as dns_cloudflare_api_token"
            )
        return cls(
            token, email, key, api_url=settings.api_url, timeout=timeout, credentials_file=path
        )

    # Zones ----------------------------------------------------------------

    def zone_id(self, owner: str, what: str) -> str:
        """The id of the longest Cloudflare zone that contains ``owner``.

        Candidates run from the owner's parent up to the top-level label; the
        first one the API knows is the zone (a child zone beats its parent).
        Answers are cached, so the owners of one certificate cost one walk.
        """
        labels = _api_name(owner).split(".")
        candidates = [".".join(labels[i:]) for i in range(1, len(labels))]
        for candidate in candidates:
            if candidate not in self._zone_ids:
                self._zone_ids[candidate] = self._lookup_zone(candidate, what)
            found = self._zone_ids[candidate]
            if found:
                return found
        tried = ", ".join(candidates) or "nothing"
        raise StoreError(f"cloudflare store: cannot {what}: {self.credentials.no_zone(tried)}")

    def _lookup_zone(self, candidate: str, what: str) -> str | None:
        try:
            body = self.api.get("/zones", {"name": candidate})
        except _ApiError as err:
            raise self._failure(what, err) from None
        zones = body.get("result")
        if not isinstance(zones, list):
            raise StoreError(f"cloudflare store: cannot {what}: malformed answer to a zone lookup")
        matching = [
            z for z in zones
            if isinstance(z, dict) and str(z.get("name", "")).lower() == candidate
            and isinstance(z.get("id"), str)
        ]
        # The same name may exist as an old pending copy; the active one is served.
        matching.sort(key=lambda z: z.get("status") != "active")
        if not matching:
            return None
        self._zone_names[matching[0]["id"]] = candidate
        return str(matching[0]["id"])

    def _failure(self, what: str, err: _ApiError, zone_id: str | None = None) -> StoreError:
        """A failed call as the operator's one line: what failed, why, what to change.

        A refusal of the credentials names the INI file and its keys; a refusal
        on a zone names the zone and the permission. A rate limit beyond the
        retry budget is a soft error: the next check retries it.
        """
        prefix = f"cloudflare store: cannot {what}: "
        if err.status == 429:
            return SoftStoreError(prefix + err.reason)
        zone = self._zone_names.get(zone_id or "")
        codes = set(err.codes)
        scoped = zone is not None and "unauthorized to access" in err.said.lower()
        if (codes & _REFUSED_CREDENTIALS and not scoped) or err.status == 401:
            return StoreError(prefix + self.credentials.refused(err))
        if err.status == 403:
            if zone is None:
                return StoreError(prefix + self.credentials.refused(err))
            return StoreError(prefix + self.credentials.forbidden(err, zone))
        return StoreError(prefix + err.reason)

    # Records --------------------------------------------------------------

    def list(self, owner: str) -> RRsetView:
        entries = self._entries(owner, f"list TLSA records at {owner}")
        if not entries:
            return RRsetView(frozenset(), None)
        return RRsetView(frozenset(e.record for e in entries), min(e.ttl for e in entries))

    def add(self, records: Iterable[Record], ttl: int) -> None:
        for owner, group in by_owner(records).items():
            what = f"add TLSA records at {owner}"
            present = {e.record for e in self._entries(owner, what)}
            zone = self.zone_id(owner, what)
            for record in group:
                if record in present:
                    continue
                try:
                    body = _body(owner, record, ttl)
                    self.api.call("POST", f"/zones/{zone}/dns_records", body=body)
                except _ApiError as err:
                    if err.code == IDENTICAL_RECORD_EXISTS:
                        continue
                    raise self._failure(what, err, zone) from None

    def delete(self, records: Iterable[Record], keep: Iterable[Record] = ()) -> None:
        for owner, group in by_owner(records).items():
            what = f"delete TLSA records at {owner}"
            wanted = set(group)
            doomed = [e for e in self._entries(owner, what) if e.record in wanted]
            if not doomed:
                continue
            zone = self.zone_id(owner, what)
            for entry in doomed:
                try:
                    self.api.call("DELETE", f"/zones/{zone}/dns_records/{entry.id}")
                except _ApiError as err:
                    if err.status == 404:
                        continue  # gone already: deleting an absent record is a no-op
                    raise self._failure(what, err, zone) from None

    def retime(self, records: Iterable[Record], ttl: int) -> None:
        """Each record's TTL changed in place (PATCH): the record is never absent."""
        for owner, group in by_owner(records).items():
            what = f"change the TTL of TLSA records at {owner}"
            wanted = set(group)
            stale = [e for e in self._entries(owner, what) if e.record in wanted and e.ttl != ttl]
            zone = self.zone_id(owner, what) if stale else ""
            for entry in stale:
                try:
                    path = f"/zones/{zone}/dns_records/{entry.id}"
                    self.api.call("PATCH", path, body={"ttl": ttl})
                except _ApiError as err:
                    raise self._failure(what, err, zone) from None

    # Many lineages at once ----------------------------------------------

    def add_many(self, items: Sequence[tuple[Iterable[Record], int]]) -> Outcomes:
        """One listing and one batch request per zone (and 200 changes).

        The batch endpoint applies its changes together or not at all; when a
        batch fails (a record another host just created, an API without the
        endpoint), its items are done again one record at a time, which
        settles each on its own.
        """
        wanted = [(by_owner(records), ttl) for records, ttl in items]
        return self._in_batches(
            [{o: (rs, ttl) for o, rs in owners.items()} for owners, ttl in wanted],
            self._posts,
            lambda index: self.add(*items[index]),
        )

    def delete_many(self, items: Sequence[tuple[Iterable[Record], Iterable[Record]]]) -> Outcomes:
        """:meth:`add_many` for deletions: the matching records' ids, in batches."""
        return self._in_batches(
            [{o: (rs, None) for o, rs in by_owner(records).items()} for records, _ in items],
            self._deletes,
            lambda index: self.delete(*items[index]),
        )

    def _in_batches(
        self,
        items: Sequence[_Wanted],
        changes_of: Callable[[_Present, _Wanted], Sequence[_Change]],
        one_by_one: Callable[[int], None],
    ) -> Outcomes:
        results: Outcomes = [None] * len(items)
        if len(items) <= 1:
            return [outcome(one_by_one, i) for i in range(len(items))]
        # zone -> item -> the item's owners in that zone
        zones: dict[str, dict[int, _Wanted]] = {}
        for index, owners in enumerate(items):
            try:
                for owner, wanted in owners.items():
                    zone = self.zone_id(owner, f"change TLSA records at {owner}")
                    zones.setdefault(zone, {}).setdefault(index, {})[owner] = wanted
            except StoreError as err:
                results[index] = err
        again: set[int] = set()
        for zone, parts in zones.items():
            parts = {i: part for i, part in parts.items() if results[i] is None}
            try:
                present = self._zone_entries(zone)
            except SoftStoreError as err:
                # Rate limited: one request per record would only make it worse.
                for index in parts:
                    results[index] = err
                continue
            except StoreError:
                again |= set(parts)
                continue
            planned = [
                (index, change)
                for index, part in sorted(parts.items())
                for change in changes_of(present, part)
            ]
            for chunk in _chunks(planned, BATCH_CHANGES):
                body: dict[str, Any] = {"deletes": [], "posts": []}
                for _, (kind, change) in chunk:
                    body[kind].append(change)
                try:
                    self.api.call("POST", f"/zones/{zone}/dns_records/batch", body=body)
                except _ApiError as err:
                    if err.status == 429:
                        what = f"change TLSA records in zone {self._zone_names.get(zone, zone)}"
                        for index, _ in chunk:
                            results[index] = self._failure(what, err, zone)
                        continue
                    logger.debug("cloudflare: batch failed, one by one instead: %s", err.reason)
                    again |= {index for index, _ in chunk}
        for index in sorted(again):
            if not isinstance(results[index], SoftStoreError):
                results[index] = outcome(one_by_one, index)
        return results

    @staticmethod
    def _posts(present: _Present, owners: _Wanted) -> Sequence[_Change]:
        posts: list[_Change] = []
        for owner, (records, ttl) in owners.items():
            there = {e.record for e in present.get(_api_name(owner), [])}
            body = [_body(owner, r, ttl or AUTOMATIC_TTL) for r in records if r not in there]
            posts += [("posts", b) for b in body]
        return posts

    @staticmethod
    def _deletes(present: _Present, owners: _Wanted) -> Sequence[_Change]:
        deletes: list[_Change] = []
        for owner, (records, _) in owners.items():
            doomed = set(records)
            deletes += [
                ("deletes", {"id": e.id})
                for e in present.get(_api_name(owner), [])
                if e.record in doomed
            ]
        return deletes

    def _zone_entries(self, zone: str) -> _Present:
        """Every TLSA record of the zone: one listing for all owners."""
        what = f"list the TLSA records of zone {self._zone_names.get(zone, zone)}"
        return self._listed(zone, what)

    def _entries(self, owner: str, what: str) -> builtins.list[_Entry]:
        """Every TLSA record at ``owner`` with its id and TTL, across all pages."""
        name = _api_name(owner)
        return self._listed(self.zone_id(owner, what), what, name).get(name, [])

    def _listed(self, zone: str, what: str, name: str | None = None) -> _Present:
        """The zone's TLSA records (only those at API name ``name`` if given), by name."""
        params = {"type": "TLSA"} if name is None else {"type": "TLSA", "name": name}
        found: _Present = {}
        try:
            for item in self.api.pages(f"/zones/{zone}/dns_records", params, self.per_page):
                if not isinstance(item, dict):
                    raise _ApiError("malformed answer: a record is not an object")
                listed = str(item.get("name", "")).lower()
                if item.get("type") != "TLSA" or name not in (None, listed):
                    continue
                found.setdefault(listed, []).append(_entry(f"{listed}.", item))
        except _ApiError as err:
            raise self._failure(what, err, zone) from None
        return found


def read_credentials(path: str) -> dict[str, str]:
    """Read certbot-dns-cloudflare's INI with certbot's own reader (same warnings)."""
    conf = plugin_credentials(path, "cloudflare", "dns_cloudflare_")
    keys = ("api_token", "email", "api_key")
    return {k: str(v).strip() for k in keys if (v := conf.conf(k))}


#: Changes per batch request: Cloudflare's limit on the Free plan (3500 on others).
BATCH_CHANGES = 200


def _body(owner: str, record: Record, ttl: int) -> dict[str, Any]:
    """A TLSA record as the API creates it, with structured ``data``."""
    return {
        "type": "TLSA",
        "name": _api_name(owner),
        "ttl": ttl,
        "data": {
            "usage": record.usage,
            "selector": record.selector,
            "matching_type": record.mtype,
            "certificate": record.data.lower(),
        },
    }


def _chunks(items: builtins.list[_T], size: int) -> Iterator[builtins.list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _api_name(owner: str) -> str:
    """Cloudflare names records without the trailing dot, in lower case."""
    return owner.rstrip(".").lower()


def _entry(owner: str, item: dict[str, Any]) -> _Entry:
    """A Cloudflare record object as an :class:`_Entry`; structured ``data`` first,
    the presentation ``content`` ("3 1 1 HEX") when ``data`` is missing."""
    data = item.get("data")
    fields: tuple[Any, ...]
    try:
        if isinstance(data, dict):
            fields = (data["usage"], data["selector"], data["matching_type"], data["certificate"])
        else:
            fields = tuple(str(item["content"]).split(None, 3))
        usage, selector, mtype = (int(f) for f in fields[:3])
        certificate = "".join(str(fields[3]).split()).lower()
        bytes.fromhex(certificate)
        ttl = int(item.get("ttl", AUTOMATIC_TTL))
        record_id = item["id"]
    except (KeyError, ValueError, TypeError, IndexError):
        raise _ApiError("malformed answer: a TLSA record without usable data") from None
    if not isinstance(record_id, str):
        raise _ApiError("malformed answer: a record id is not a string")
    record = Record(owner.lower(), usage, selector, mtype, certificate)
    return _Entry(record_id, record, AUTOMATIC_TTL_SECONDS if ttl == AUTOMATIC_TTL else ttl)


def _errors(doc: dict[str, Any]) -> list[tuple[int | None, str]]:
    """(code, message) of Cloudflare's first error, then of its ``error_chain``."""
    errors = doc.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, dict):
        return [(None, "the API reported failure without a reason")]
    chain = first.get("error_chain")
    found = []
    for item in [first, *(chain if isinstance(chain, list) else [])]:
        if isinstance(item, dict):
            code = item.get("code")
            message = " ".join(str(item.get("message") or "unknown error").split())
            found.append((code if isinstance(code, int) else None, message))
    return found


def _rate_limited(retries: int, wait: float) -> str:
    """Why a 429 is given up; the store makes it a soft error, retried next check."""
    if wait > MAX_RETRY_WAIT:
        why = f"asks to wait {wait:g} s, longer than the {MAX_RETRY_WAIT:g} s a run waits"
    else:
        why = f"still did after {retries} retr{'y' if retries == 1 else 'ies'}"
    return (
        f"Cloudflare answered 429 Too Many Requests and {why}; the next check retries "
        "(Cloudflare allows 1200 API requests per five minutes per user, shared by every "
        "tool using the account)"
    )


def _connection_reason(err: requests.RequestException) -> str:
    """The innermost OS-level reason (e.g. "Connection refused"), not urllib3's essay."""
    cause = network_cause(err)
    if cause:
        return f"cannot connect to the API: {cause}"
    return f"cannot connect to the API ({type(err).__name__})"
