"""Google Cloud DNS, through its v1 REST API, with certbot-dns-google's credentials.

The store talks to four endpoints (managed zones, record sets, change create
and get) over ``requests``, which certbot already depends on, and uses
``google-auth`` only to turn credentials into access tokens. The official
``google-cloud-dns`` client would add google-cloud-core, google-api-core,
protobuf and googleapis-common-protos for the same four calls; google-auth
alone adds pyasn1-modules (cryptography is already there), and it is the
library that already knows every way Google hands out credentials.

Credentials are certbot-dns-google's: the service-account key file (JSON)
given as ``--dns-google-credentials`` (``dns_google_credentials`` in the
renewal conf) or ``--dane-credentials``; without one, the ambient
credentials (application default credentials: ``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's application-default login, the metadata server of a Google Cloud
VM). The project is ``--dane-google-project``, else ``--dns-google-project``
(``dns_google_project``), else the key file's ``project_id``, else the
ambient credentials' project. A key file is read and checked when the store
is built; nothing is contacted until the first operation.

Cloud DNS changes whole record sets: a change lists deletions and additions,
is applied atomically, and is refused when a deletion does not match the
record set it names exactly (TTL and every rrdata: HTTP 412), when it names
one that is gone (404), or when an addition finds one already there (409).
That is a native compare-and-swap. The store reads the TLSA record set,
deletes it as read and adds the merged one, so records that other hosts keep
at the same name survive; when another host changed the set in between, the
change is refused, and the store reads again and retries. The swaps of many
names in one managed zone (a check of many lineages) share one change,
split at Cloud DNS's limits. The store then waits, bounded, for the change to
be ``done``; whether the records are live is decided by the observer.
"""
from __future__ import annotations

import builtins
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
import requests

from ..tlsa import Record
from .base import (
    BatchStore,
    Change,
    Outcomes,
    OwnerEdit,
    RRsetView,
    SoftStoreError,
    StoreConfigError,
    StoreError,
    Views,
    owner_edits,
    per_item,
)

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://dns.googleapis.com/dns/v1"
#: the OAuth scope certbot-dns-google asks for: read and change Cloud DNS
SCOPE = "https://www.googleapis.com/auth/ndev.clouddns.readwrite"
#: the predefined role that holds every permission the store needs
ADMIN_ROLE = "roles/dns.admin"

#: changes tried per operation before giving up on a record set others keep changing
SWAP_ATTEMPTS = 5
#: retries of one call answered 429 or 5xx, each after a growing wait
MAX_RETRIES = 3
#: a Retry-After longer than this fails at once instead of holding the run
MAX_RETRY_WAIT = 30.0
#: how long to wait for a change to be done; running out is logged, not raised
SYNC_TIMEOUT = 120.0
#: a runaway pagination (a server that always sends one more page token) stops here
MAX_PAGES = 1000
#: Cloud DNS accepts 1000 additions, 1000 deletions and 100,000 bytes of rrdata
#: per change; changes stay well inside.
BATCH_RRSETS = 500
BATCH_BYTES = 50_000
#: from this many names of one zone on, one listing of the zone's record sets
#: costs fewer requests than one read per name
ZONE_LISTING_MIN = 10

#: statuses worth another try after a pause (rate limit, a passing server fault)
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_BEARER = re.compile(r"(?:ya29\.|Bearer\s+)[\w.~+/-]+=*", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN[^-]*-----.*?(?:-----END[^-]*-----|$)", re.DOTALL)
_KEY_FIELDS = ("client_email", "private_key", "token_uri")


class _ApiError(Exception):
    """One failed call; ``reason`` is one line in the operator's terms, free of secrets."""

    def __init__(self, reason: str, status: int | None = None, soft: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.soft = soft


class _Conflict(_ApiError):
    """Cloud DNS refused a change because a record set is not as it was read."""


@dataclass(frozen=True)
class _Zone:
    """One managed zone of the project; ``name`` is its id in API paths."""

    name: str
    dns_name: dns.name.Name
    private: bool


@dataclass(frozen=True)
class _RRset:
    """A TLSA record set exactly as Cloud DNS returned it: a deletion repeats it verbatim."""

    name: str
    ttl: int
    rrdatas: tuple[str, ...]
    records: frozenset[Record]

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "type": "TLSA", "ttl": self.ttl, "rrdatas": list(self.rrdatas)}


# Credentials ------------------------------------------------------------------


class _TimedRequest(google.auth.transport.requests.Request):  # type: ignore[misc]
    """google-auth's transport with our timeout: its own default is two minutes."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None,
                 headers: Any = None, timeout: float | None = None, **kwargs: Any) -> Any:
        return super().__call__(url, method=method, body=body, headers=headers,
                                timeout=timeout or self._timeout, **kwargs)


class _Auth:
    """The credentials, where they came from (for messages), and the project they imply."""

    def __init__(self, path: str | None, timeout: float) -> None:
        self.path = path
        self.request = _TimedRequest(timeout)
        self.credentials: Any = None
        self.project: str | None = None
        self.email: str | None = None
        self.token_uri: str | None = None
        if path:
            self.credentials, self.project, self.email, self.token_uri = load_key_file(path)

    @property
    def who(self) -> str:
        """Whom a permission must be granted to, as the operator knows it."""
        if self.email:
            return f"the service account {self.email}"
        email = getattr(self.credentials, "service_account_email", None)
        if isinstance(email, str) and "@" in email:
            return f"the service account {email}"
        if self.path:
            return f"the account logged in to {self.path}"
        return "the account of the ambient credentials"

    def load(self) -> None:
        """Find the ambient credentials on first use (it may ask the metadata server)."""
        if self.credentials is not None:
            return
        try:
            self.credentials, self.project = google.auth.default(
                scopes=[SCOPE], request=self.request
            )
        except google.auth.exceptions.GoogleAuthError as err:
            raise _ApiError(
                f"no usable Google credentials ({_first_sentence(err)}); pass the "
                "service-account key file with --dns-google-credentials or "
                "--dane-credentials, or set GOOGLE_APPLICATION_CREDENTIALS for the user "
                "running certbot"
            ) from None

    def apply(self, method: str, url: str, headers: dict[str, str], fresh: bool) -> None:
        """Put a valid access token in ``headers``; a new one when ``fresh``."""
        self.load()
        try:
            if fresh:
                self.credentials.refresh(self.request)
            self.credentials.before_request(self.request, method, url, headers)
        except google.auth.exceptions.RefreshError as err:
            raise _ApiError(self._refused(err)) from None
        except google.auth.exceptions.TransportError as err:
            where = f"the token endpoint {self.token_uri}" if self.token_uri else (
                "the token endpoint or metadata server")
            raise _ApiError(f"cannot reach {where} ({_connection_reason(err)}); try again "
                            "later") from None
        except (google.auth.exceptions.GoogleAuthError, ValueError) as err:
            raise _ApiError(f"cannot get an access token: {_clean(str(err))}") from None

    def _refused(self, err: Exception) -> str:
        detail = _clean(str(err.args[0]) if err.args else type(err).__name__)
        if self.path and not self.email:
            return (
                f"Google refused the gcloud login in {self.path} ({detail}); run 'gcloud auth "
                "application-default login' again, or give a service-account key file (JSON)"
            )
        if self.path:
            return (
                f"Google refused the key of {self.email} in {self.path} ({detail}); the key "
                "may be deleted or disabled: create a new JSON key for the service account "
                "and save it there"
            )
        return (
            f"Google refused the ambient credentials ({detail}); check them as the user "
            "running certbot (gcloud auth application-default print-access-token), or pass "
            "a service-account key with --dns-google-credentials"
        )


def load_key_file(path: str) -> tuple[Any, str | None, str | None, str | None]:
    """(credentials, project, email, token URI) from a key file, offline.

    A service-account key (what certbot-dns-google documents) is checked
    field by field so that the message can say what is wrong. gcloud's
    ``authorized_user`` login is accepted too, as certbot-dns-google does.
    """
    info = _read_json(path)
    kind = info.get("type")
    if kind == "authorized_user":
        return _user_file(path, info)
    if kind != "service_account":
        # Other kinds (workload identity federation) may run programs named in
        # the file: not something to accept from a credentials option.
        raise StoreConfigError(
            f"google store: {path} is not a service-account key file (its \"type\" is "
            f"{kind!r}, not \"service_account\"); create a JSON key for the service account "
            "and give that file"
        )
    missing = [k for k in _KEY_FIELDS if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        raise StoreConfigError(
            f"google store: the service-account key file {path} has no {', '.join(missing)}; "
            "download a new JSON key for the service account and save it there"
        )
    try:
        credentials = google.oauth2.service_account.Credentials.from_service_account_info(
            info, scopes=[SCOPE]
        )
    except (ValueError, TypeError, IndexError, google.auth.exceptions.GoogleAuthError):
        raise StoreConfigError(
            f"google store: the private_key in {path} is not a usable key; download a new "
            f"JSON key for {info['client_email']} and save it there"
        ) from None
    project = info.get("project_id")
    return (credentials, project if isinstance(project, str) and project else None,
            info["client_email"], info["token_uri"])


def _read_json(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise StoreConfigError(
            f"google store: cannot read the credentials file {path} "
            f"({err.strerror or type(err).__name__}); give the path of the service-account "
            "key file (JSON), readable by the user running certbot"
        ) from None
    except UnicodeDecodeError:
        text = ""
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise StoreConfigError(
            f"google store: the credentials file {path} is not JSON; give the service-account "
            "key file (JSON) downloaded from the Google Cloud console (IAM > Service accounts "
            "> Keys), not an INI file"
        )
    return info


def _user_file(path: str, info: dict[str, Any]) -> tuple[Any, None, None, None]:
    """A gcloud application-default login (``authorized_user``), which
    certbot-dns-google accepts too; its project must be given."""
    try:
        credentials = google.oauth2.credentials.Credentials.from_authorized_user_info(
            info, scopes=[SCOPE]
        )
    except (ValueError, TypeError, google.auth.exceptions.GoogleAuthError) as err:
        raise StoreConfigError(
            f"google store: the login in {path} is incomplete ({_first_sentence(err)}); run "
            "'gcloud auth application-default login' again, or give a service-account key "
            "file (JSON)"
        ) from None
    return credentials, None, None, None


# The API ----------------------------------------------------------------------


class CloudDnsApi:
    """Authenticated calls to Cloud DNS v1 with timeouts, retries and one-line errors."""

    def __init__(
        self,
        auth: _Auth,
        base_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.auth = auth
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "certbot-dane"
        #: the project a permission error talks about
        self.project = ""

    def call(
        self,
        method: str,
        path: str,
        permission: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One API call: a fresh token after a 401, pauses and retries after 429 and 5xx."""
        url = self.base_url + path
        fresh = False
        for attempt in range(MAX_RETRIES + 1):
            headers: dict[str, str] = {}
            self.auth.apply(method, url, headers, fresh)
            response = self._send(method, url, headers, params, body)
            status = response.status_code
            logger.debug("google: %s %s -> HTTP %s", method, path, status)
            if status == 401 and not fresh:
                fresh = True  # the token may have been revoked early: one new one
                continue
            if status in _RETRYABLE and attempt < MAX_RETRIES:
                wait = _retry_after(response.headers.get("Retry-After"), attempt)
                if wait <= MAX_RETRY_WAIT:
                    logger.info("google: HTTP %s, retrying in %g s", status, wait)
                    self._sleep(wait)
                    continue
            return self._decode(response, permission, attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def pages(
        self, path: str, params: dict[str, Any], key: str, permission: str
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list, following ``nextPageToken`` to the end.

        A page may hold fewer items than asked for, even none, and still not
        be the last: only the token says whether more follow.
        """
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = dict(params, pageToken=token) if token else params
            doc = self.call("GET", path, permission, params=page)
            items = doc.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise _ApiError(f"malformed answer from Cloud DNS ({key} is not a list of "
                                "objects); try again later")
            yield from items
            token = doc.get("nextPageToken")
            if not token:
                return
            if not isinstance(token, str):
                raise _ApiError("malformed answer from Cloud DNS (a page token is not a string)")
        raise _ApiError(f"malformed answer from Cloud DNS (more than {MAX_PAGES} pages)")

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: dict[str, Any] | None,
        body: dict[str, Any] | None,
    ) -> requests.Response:
        try:
            return self.session.request(
                method, url, params=params, json=body, headers=headers, timeout=self.timeout
            )
        except requests.Timeout:
            raise _ApiError(f"no answer from Cloud DNS at {self.base_url} within "
                            f"{self.timeout:g} s; try again later") from None
        except requests.RequestException as err:
            raise _ApiError(f"cannot connect to Cloud DNS at {self.base_url} "
                            f"({_connection_reason(err)}); check the network, or "
                            "--dane-api-url") from None

    def _decode(self, response: requests.Response, permission: str, tries: int) -> dict[str, Any]:
        status = response.status_code
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if 200 <= status < 300:
            if not isinstance(doc, dict):
                raise _ApiError(f"malformed answer from Cloud DNS (HTTP {status}, not a JSON "
                                "object); try again later, or check --dane-api-url")
            return doc
        error = doc.get("error") if isinstance(doc, dict) else None
        error = error if isinstance(error, dict) else {}
        details = error.get("errors")
        first = details[0] if isinstance(details, list) and details else {}
        reason = str(first.get("reason", "")) if isinstance(first, dict) else ""
        message = _clean(str(error.get("message") or ""))
        raise self._error(status, reason, str(error.get("status") or ""), message, permission,
                          tries)

    def _error(
        self, status: int, reason: str, code: str, message: str, permission: str, tries: int
    ) -> _ApiError:
        """Cloud DNS's error, said in the operator's terms with the fix."""
        project, who = self.project, self.auth.who
        said = f" ({message})" if message else ""
        if status == 401:
            return _ApiError(f"Cloud DNS refused the access token of {who} (HTTP 401){said}; "
                             f"check {self._source()}", status)
        if status == 403 and (reason == "accessNotConfigured" or code == "SERVICE_DISABLED"
                              or "has not been used" in message):
            return _ApiError(
                f"the Cloud DNS API is not enabled in project {project}: enable it with "
                f"'gcloud services enable dns.googleapis.com --project {project}'", status)
        if status == 403 and "scope" in message.lower():
            return _ApiError(
                f"the credentials lack the Cloud DNS scope (HTTP 403){said}; give the VM the "
                "cloud-platform access scope, or pass a service-account key with "
                "--dns-google-credentials", status)
        if status == 403:
            return _ApiError(
                f"permission denied in project {project} (HTTP 403); grant {who} the role "
                f"{ADMIN_ROLE}, or a role with {permission}", status)
        if status == 404 and "entity.change" in message:
            return _Conflict(f"a record set changed meanwhile (HTTP 404){said}", status)
        if status == 404 and "parameters.project" in message:
            return _ApiError(
                f"project {project} does not exist or is hidden from {who} (HTTP 404); set "
                "--dns-google-project (or --dane-google-project) to the project of the zone",
                status)
        if status in (409, 412):
            return _Conflict(f"a record set changed meanwhile (HTTP {status}){said}", status)
        if status == 429:
            return _ApiError(
                f"Cloud DNS rate limit reached (HTTP 429) after {tries} tries; the next check "
                "tries again (if it persists, raise the project's Cloud DNS API quota)",
                status, soft=True)
        if status >= 500:
            return _ApiError(f"Cloud DNS failed with HTTP {status}{said} after {tries} tries; "
                             "try again later", status)
        label = f"HTTP {status}{f', {reason}' if reason else ''}"
        return _ApiError(f"Cloud DNS refused the request ({label}){said}", status)

    def _source(self) -> str:
        if self.auth.path:
            return f"the key file {self.auth.path}"
        return "the ambient credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the VM)"


# The store --------------------------------------------------------------------


class GoogleStore(BatchStore):
    """TLSA records in Cloud DNS managed zones, changed by compare-and-swap."""

    name = "google"

    def __init__(
        self,
        credentials_file: str | None = None,
        project: str | None = None,
        api_url: str | None = None,
        timeout: float = 10.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        swap_attempts: int = SWAP_ATTEMPTS,
        sync_timeout: float = SYNC_TIMEOUT,
    ) -> None:
        """Read and check the key file, if any; contact nothing yet."""
        if credentials_file:
            _warn_if_readable_by_others(credentials_file)
        self.auth = _Auth(credentials_file, timeout)
        self.api = CloudDnsApi(self.auth, api_url or DEFAULT_API_URL, timeout, sleep)
        self.explicit_project = project
        self.swap_attempts = max(1, swap_attempts)
        self.sync_timeout = sync_timeout
        #: first and longest pause between polls of a pending change, in seconds
        self.poll_interval = (0.5, 5.0)
        self._sleep = sleep
        self._zones: list[_Zone] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> GoogleStore:
        return cls(settings.credentials, settings.project, settings.api_url, timeout=timeout)

    # Project and zones ------------------------------------------------------

    def project(self) -> str:
        """The project: the explicit one, else the credentials'."""
        if self.explicit_project:
            project = self.explicit_project
        else:
            self.auth.load()
            project = self.auth.project or ""
        if not project:
            raise _ApiError(
                "cannot tell which Google Cloud project holds the zone; set "
                "--dns-google-project (or --dane-google-project) to its project id"
            )
        self.api.project = project
        return project

    def _path(self, *parts: str) -> str:
        return "/projects/" + "/".join(quote(p, safe="") for p in (self.project(), *parts))

    def _managed_zones(self) -> builtins.list[_Zone]:
        """Every managed zone of the project, listed once per store."""
        if self._zones is None:
            zones = []
            permission = "dns.managedZones.list"
            for item in self.api.pages(self._path("managedZones"), {}, "managedZones",
                                       permission):
                try:
                    zones.append(_Zone(str(item["name"]), dns.name.from_text(item["dnsName"]),
                                       item.get("visibility", "public") == "private"))
                except (KeyError, TypeError, AttributeError, dns.exception.DNSException):
                    raise _ApiError("malformed answer from Cloud DNS (a managed zone without "
                                    "a name or dnsName)") from None
            self._zones = zones
        return self._zones

    def zone_of(self, owner: str) -> _Zone:
        """The managed zone whose dnsName is the longest suffix of ``owner``.

        Public zones come first: DANE needs the records in the signed public
        zone, and a private zone of the same or a longer name (split horizon)
        is used only when no public zone holds the name.
        """
        name = dns.name.from_text(owner)
        matches = [z for z in self._managed_zones() if name.is_subdomain(z.dns_name)]
        pool = [z for z in matches if not z.private] or matches
        if not pool:
            raise _ApiError(
                f"no managed zone of project {self.project()} contains the name; create one, "
                "or set --dns-google-project (or --dane-google-project) to the project that "
                "holds it"
            )
        depth = max(len(z.dns_name) for z in pool)
        best = sorted((z for z in pool if len(z.dns_name) == depth), key=lambda z: z.name)
        if len(best) > 1:
            raise _ApiError(
                f"{len(best)} managed zones of project {self.project()} are named "
                f"{best[0].dns_name} ({', '.join(z.name for z in best)}); delete the one "
                "that is not delegated"
            )
        return best[0]

    # Reading ----------------------------------------------------------------

    def _read(self, zone: _Zone, owner: str) -> _RRset | None:
        """The TLSA record set at ``owner`` as Cloud DNS holds it, or None."""
        path = self._path("managedZones", zone.name, "rrsets")
        params = {"name": owner, "type": "TLSA"}
        found = None
        for item in self.api.pages(path, params, "rrsets", "dns.resourceRecordSets.list"):
            rrset = _rrset(item)
            if rrset is not None and rrset.name.lower() == owner:
                found = rrset
        return found

    def _read_zone(self, zone: _Zone) -> dict[str, _RRset]:
        """Every TLSA record set of the zone, by owner: one listing for many names."""
        path = self._path("managedZones", zone.name, "rrsets")
        found: dict[str, _RRset] = {}
        for item in self.api.pages(path, {}, "rrsets", "dns.resourceRecordSets.list"):
            rrset = _rrset(item)
            if rrset is not None:
                found[rrset.name.lower()] = rrset
        return found

    def _read_owners(
        self, zone: _Zone, owners: Sequence[str], failed: dict[str, StoreError],
        what: dict[str, str],
    ) -> dict[str, _RRset | None]:
        """The record sets of ``owners``: one read each, or one zone listing for many."""
        if len(owners) >= ZONE_LISTING_MIN:
            try:
                listed = self._read_zone(zone)
            except _ApiError as err:
                failed.update((o, _store_error(what[o], o, err)) for o in owners)
                return {}
            return {owner: listed.get(owner) for owner in owners}
        current: dict[str, _RRset | None] = {}
        for owner in owners:
            try:
                current[owner] = self._read(zone, owner)
            except _ApiError as err:
                failed[owner] = _store_error(what[owner], owner, err)
        return current

    def list(self, owner: str) -> RRsetView:
        (view,) = self.list_many([owner])
        if isinstance(view, StoreError):
            raise view
        return view

    def list_many(self, owners: Sequence[str]) -> Views:
        """One read per name, or one listing per zone when a zone has many names."""
        names = [_owner(o) for o in owners]
        failed: dict[str, StoreError] = {}
        what = {n: "list TLSA records" for n in names}
        current: dict[str, _RRset | None] = {}
        for zone, group in self._by_zone(names, what, failed).values():
            current.update(self._read_owners(zone, group, failed, what))
        views: Views = []
        for name in names:
            if name in failed:
                views.append(failed[name])
                continue
            rrset = current.get(name)
            views.append(RRsetView(rrset.records, rrset.ttl) if rrset else
                         RRsetView(frozenset(), None))
        return views

    def _by_zone(
        self, owners: Iterable[str], what: dict[str, str], failed: dict[str, StoreError]
    ) -> dict[str, tuple[_Zone, builtins.list[str]]]:
        """Owners grouped by managed zone; an owner without one fails alone."""
        zones: dict[str, tuple[_Zone, builtins.list[str]]] = {}
        for owner in sorted(set(owners)):
            try:
                zone = self.zone_of(owner)
            except _ApiError as err:
                failed[owner] = _store_error(what[owner], owner, err)
                continue
            except dns.exception.DNSException:
                failed[owner] = StoreError(f"google store: cannot {what[owner]} at {owner}: "
                                           "not a DNS name")
                continue
            zones.setdefault(zone.name, (zone, []))[1].append(owner)
        return zones

    # Changing ---------------------------------------------------------------

    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Every item's swaps in one change per managed zone (and size).

        Cloud DNS applies a change whole or not at all, so a change refused
        because one of its names changed meanwhile is read again and sent
        again whole; the other names of the change are swapped with it. A
        TTL change deletes the record set as read and adds it with the new TTL.
        """
        edits = owner_edits(verb, items, _Edit)
        what = {owner: edit.what for owner, edit in edits.items()}
        failed: dict[str, StoreError] = {}
        sent: list[tuple[_Zone, str, dict[str, Any]]] = []
        for zone, owners in self._by_zone(edits, what, failed).values():
            sent += self._swap_zone(zone, {o: edits[o] for o in owners}, failed)
        self._wait_done(sent)
        return per_item(items, failed)

    def _swap_zone(
        self, zone: _Zone, edits: dict[str, _Edit], failed: dict[str, StoreError]
    ) -> builtins.list[tuple[_Zone, str, dict[str, Any]]]:
        """Swap the names of one zone, one change per batch; failures go to ``failed``."""
        what = {owner: edit.what for owner, edit in edits.items()}
        current = self._read_owners(zone, builtins.list(edits), failed, what)
        sent = []
        for owners in _batches({o: edits[o].change(o, current[o]) for o in current}):
            where = owners[0] if len(owners) == 1 else f"{len(owners)} names in {zone.dns_name}"
            verb = what[owners[0]] if len(owners) == 1 else f"{edits[owners[0]].verb} TLSA records"
            try:
                change = self._swap(zone, {o: edits[o] for o in owners}, current)
            except _ApiError as err:
                failed.update((o, _store_error(verb, where, err)) for o in owners)
                continue
            if change is not None:
                sent.append((zone, where, change))
        return sent

    def _swap(
        self, zone: _Zone, edits: dict[str, _Edit], current: dict[str, _RRset | None]
    ) -> dict[str, Any] | None:
        """Send the change for ``edits``; on a conflict read again and retry.

        Returns Cloud DNS's change, or None when nothing needs changing
        (adding a present record, deleting an absent one).
        """
        path = self._path("managedZones", zone.name, "changes")
        permission = ("dns.changes.create (with dns.resourceRecordSets.create, .delete and "
                      ".update)")
        last: _Conflict | None = None
        for attempt in range(self.swap_attempts):
            deletions: list[dict[str, Any]] = []
            additions: list[dict[str, Any]] = []
            for owner, edit in edits.items():
                gone, new = edit.change(owner, current[owner])
                deletions += gone
                additions += new
            if not deletions and not additions:
                return None
            body = {"kind": "dns#change", "deletions": deletions, "additions": additions}
            try:
                return self.api.call("POST", path, permission, body=body)
            except _Conflict as err:
                last = err
                logger.debug("google: change in %s refused (attempt %d): %s", zone.name,
                             attempt + 1, err.reason)
                # Two hosts retrying in lockstep would collide again.
                self._sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                listed = self._read_zone(zone) if len(edits) >= ZONE_LISTING_MIN else None
                for owner in edits:
                    current[owner] = listed.get(owner) if listed is not None else self._read(
                        zone, owner)
        assert last is not None
        raise _ApiError(f"{last.reason}; refused {self.swap_attempts} times as other hosts "
                        "keep changing the records; the next check tries again", soft=True)

    def _wait_done(self, sent: Sequence[tuple[_Zone, str, dict[str, Any]]]) -> None:
        """Poll each change until Cloud DNS reports it done, within ``sync_timeout``.

        Running out of time, or a failed poll, is logged and not raised: the
        change was accepted, and whether the records are live is checked at
        the name servers.
        """
        deadline = time.monotonic() + self.sync_timeout
        delay, longest = self.poll_interval
        for zone, where, change in sent:
            status, change_id = change.get("status"), change.get("id")
            while status != "done":
                if not isinstance(change_id, str) or time.monotonic() + delay > deadline:
                    logger.info("google: change %s at %s still %s; whether the records are "
                                "live is checked at the name servers", change_id, where, status)
                    return
                self._sleep(delay)
                delay = min(delay * 2, longest)
                try:
                    change = self.api.call(
                        "GET", self._path("managedZones", zone.name, "changes", change_id),
                        "dns.changes.get",
                    )
                except _ApiError as err:
                    logger.warning("google store: cannot follow change %s at %s: %s",
                                   change_id, where, err.reason)
                    return
                status = change.get("status")


class _Edit(OwnerEdit):
    """What one call wants at one owner name, and the compare-and-swap that writes it."""

    def change(
        self, owner: str, current: _RRset | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(deletions, additions) turning ``current`` into the merged set; empty if equal."""
        have = current.records if current else frozenset()
        want = (have | self.plus) - self.minus
        retimed = self.verb == "retime" and current is not None and current.ttl != self.ttl
        if want == have and not retimed:
            return [], []
        deletions = [current.body()] if current is not None else []
        additions = []
        if want:
            ttl = self.ttl if self.ttl is not None else current.ttl if current else 300
            rrdatas = [_text(r) for r in sorted(want)]
            additions.append({"name": owner, "type": "TLSA", "ttl": ttl, "rrdatas": rrdatas})
        return deletions, additions


def _batches(
    changes: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
) -> Iterator[list[str]]:
    """Owners with something to change, grouped so that each group fits in one change."""
    group: list[str] = []
    rrsets = size = 0
    for owner, (deletions, additions) in changes.items():
        if not deletions and not additions:
            continue
        count = max(len(deletions), len(additions))
        data = sum(len(r) for s in [*deletions, *additions] for r in s["rrdatas"])
        if group and (rrsets + count > BATCH_RRSETS or size + data > BATCH_BYTES):
            yield group
            group, rrsets, size = [], 0, 0
        group.append(owner)
        rrsets += count
        size += data
    if group:
        yield group


def _rrset(item: dict[str, Any]) -> _RRset | None:
    """A listed record set as :class:`_RRset`, or None when it is not TLSA."""
    if item.get("type") != "TLSA":
        return None
    try:
        name = str(item["name"])
        ttl = int(item["ttl"])
        rrdatas = tuple(str(r) for r in item["rrdatas"])
        records = frozenset(_parse(name.lower(), r) for r in rrdatas)
    except (KeyError, TypeError, ValueError, dns.exception.DNSException):
        raise _ApiError("malformed answer from Cloud DNS (a TLSA record set without usable "
                        "data)") from None
    return _RRset(name, ttl, rrdatas, records)


def _parse(owner: str, text: str) -> Record:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
    if not isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        raise ValueError(f"not TLSA data: {text!r}")
    return Record.from_rdata(owner, rdata)


def _text(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data}"


def _owner(owner: str) -> str:
    """Cloud DNS names are absolute and compared without case."""
    return owner.lower() if owner.endswith(".") else f"{owner.lower()}."


def _store_error(what: str, where: str, err: _ApiError) -> StoreError:
    cls = SoftStoreError if err.soft else StoreError
    return cls(f"google store: cannot {what} at {where}: {err.reason}")


def _warn_if_readable_by_others(path: str) -> None:
    """certbot's own warning for a key file that others can read, as certbot-dns-google.

    A path that is no file is left to the reading, which says so in our words.
    """
    if Path(path).is_file():
        from certbot.plugins import dns_common

        dns_common.validate_file_permissions(path)


def _retry_after(value: str | None, attempt: int) -> float:
    """Seconds before another try: Retry-After when given, else 1, 2, 4 s."""
    try:
        return max(0.0, float(value)) if value is not None else float(2**attempt)
    except ValueError:
        return float(2**attempt)


def _clean(text: str) -> str:
    """Server or library text made safe for a message: one short line, no token or key."""
    text = _PEM.sub("<key>", text)
    text = _BEARER.sub("<token>", text)
    return " ".join(text.split())[:200]


def _first_sentence(err: Exception) -> str:
    text = _clean(str(err.args[0]) if err.args else type(err).__name__)
    head = text.split(". ")[0].rstrip(".")
    return head or type(err).__name__


def _connection_reason(err: BaseException) -> str:
    """The innermost OS-level reason ("Connection refused"), not urllib3's essay."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *current.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return type(err).__name__
