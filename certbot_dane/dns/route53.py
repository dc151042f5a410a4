"""Amazon Route 53, with boto3's default credentials (as certbot-dns-route53 uses).

Route 53 cannot add or delete a single record: a change replaces a whole
RRset. So that hosts sharing an owner name never remove each other's records,
every change is a compare-and-swap: one change batch that DELETEs exactly the
RRset just read and CREATEs the merged one. Route 53 applies a batch
atomically and rejects it (InvalidChangeBatch) when the DELETE no longer
matches what it holds, i.e. when another host changed the RRset in between;
the store then reads again and retries, a bounded number of times. The
swaps of many names in one hosted zone (a check of many lineages) share one
change batch, read again and retried whole when any of them was raced.

The hosted zone is the one whose name is the longest suffix of the owner
name, as listed by the account, never a guess from the name's last labels.
Credentials come from boto3's default chain (environment, the running user's
``~/.aws``, an instance or container role). Nothing is contacted, and no
credential is looked up, until the first operation.
"""
from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import boto3.session
import botocore.config
import botocore.exceptions
import botocore.parsers
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA

from ..tlsa import Record
from .base import (
    BatchStore,
    Change,
    Outcomes,
    OwnerEdit,
    RRsetView,
    SoftStoreError,
    StoreError,
    owner_edits,
    per_item,
)

if TYPE_CHECKING:
    from ..state import Settings

logger = logging.getLogger(__name__)

#: change batches tried per operation before giving up on a busy RRset
SWAP_ATTEMPTS = 5
#: HTTP attempts per API call, the first included (botocore's standard retry
#: mode, which also backs off on Throttling and PriorRequestNotComplete)
HTTP_ATTEMPTS = 3
#: The IAM actions the store calls, in the order a change needs them.
IAM_ACTIONS = (
    "ListHostedZones",
    "ListResourceRecordSets",
    "ChangeResourceRecordSets",
    "GetChange",
)
#: how long to wait for a change to be INSYNC; not reaching it is no error,
#: since whether records are live is decided by the observer, not the store
SYNC_TIMEOUT = 120.0
#: the region requests to Route 53 are signed for (its partition's global region)
GLOBAL_REGION = "us-east-1"
#: TTL of an RRset created without one (never happens: only deletions pass none)
DEFAULT_TTL = 300
#: a sanity bound on ListHostedZones pages (100 zones each)
MAX_ZONE_PAGES = 500

# Strings shaped like AWS access key ids or secret keys, removed from any
# server-provided text before it reaches a message.
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA|A3T[A-Z0-9])[A-Z0-9]{12,}\b")
_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])")


class _Rejected(StoreError):
    """Route 53 refused a change batch as invalid (InvalidChangeBatch).

    Usually the RRset changed since it was read; the caller reads again.
    """


@dataclass(frozen=True)
class _Zone:
    """One hosted zone of the account."""

    name: dns.name.Name
    id: str
    private: bool


@dataclass(frozen=True)
class _RRset:
    """A TLSA RRset exactly as Route 53 returned it.

    ``values`` keep Route 53's text and order: the DELETE half of a swap must
    repeat the RRset verbatim to match.
    """

    name: str
    ttl: int
    values: tuple[str, ...]
    records: frozenset[Record]


class Route53Store(BatchStore):
    """TLSA records in Route 53 hosted zones, changed by compare-and-swap."""

    name = "route53"

    def __init__(
        self,
        endpoint_url: str | None = None,
        timeout: float = 10.0,
        *,
        session: boto3.session.Session | None = None,
        client: Any = None,
        http_attempts: int = HTTP_ATTEMPTS,
        swap_attempts: int = SWAP_ATTEMPTS,
        sync_timeout: float = SYNC_TIMEOUT,
    ) -> None:
        """Remember how to reach Route 53; connect and load credentials later.

        ``session`` (default: a fresh boto3 session, hence the default
        credential chain) or a ready ``client`` can be given instead, e.g. to
        use other credentials than the running user's.
        """
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self.http_attempts = max(1, http_attempts)
        self.swap_attempts = max(1, swap_attempts)
        self.sync_timeout = sync_timeout
        #: first and largest pause between GetChange polls, in seconds
        self.poll_interval = (1.0, 10.0)
        self._session = session
        self._client = client
        self._zones: list[_Zone] | None = None
        self._zone_of: dict[str, _Zone] = {}
        #: where the credentials came from, in the operator's words (see _source)
        self._source = _DEFAULT_SOURCE

    @classmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> Route53Store:
        """The store for a lineage: Route 53 itself, or ``--dane-api-url``."""
        return cls(settings.api_url or None, timeout=timeout)

    # API calls ------------------------------------------------------------

    def client(self) -> Any:
        """The boto3 client, created on first use so construction stays offline."""
        if self._client is None:
            session = self._session or boto3.session.Session()
            config = botocore.config.Config(
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                retries={"total_max_attempts": self.http_attempts, "mode": "standard"},
            )
            # Route 53 is global: without a configured region botocore picks
            # its global endpoint, but cannot sign for an explicit endpoint
            # (--dane-api-url) unless given the region Route 53 signs for.
            region = session.region_name or (GLOBAL_REGION if self.endpoint_url else None)
            self._client = session.client(
                "route53", endpoint_url=self.endpoint_url, region_name=region, config=config
            )
            # Creating the client loaded (and cached) the credentials.
            self._source = _source(session)
        return self._client

    def _where(self) -> str:
        return self.endpoint_url or "Route 53"

    def _call(self, what: str, owner: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """One API call; every failure becomes a one-line :class:`StoreError`."""
        try:
            answer = getattr(self.client(), method)(**kwargs)
        except botocore.exceptions.ClientError as err:
            raise self._refused(err, what, owner, kwargs.get("HostedZoneId")) from None
        except (
            botocore.exceptions.BotoCoreError,
            botocore.parsers.ResponseParserError,
            ValueError,
        ) as err:
            reason = _botocore_reason(err, self._where())
            raise StoreError(f"route53 store: cannot {what} at {owner}: {reason}") from None
        if not isinstance(answer, dict):
            raise self._malformed(what, owner)
        return answer

    def _refused(
        self,
        err: botocore.exceptions.ClientError,
        what: str,
        owner: str,
        zone_id: str | None,
    ) -> StoreError:
        """The error answer of one call as the operator's one line: what
        failed, why, and what to change. A soft error where Route 53 asked
        to slow down: botocore retried already, and the next check will."""
        refusal = _Refusal.of(err)
        zone = self._zone_label(zone_id)
        soft, reason = refusal.reason(zone, self._source)
        message = f"route53 store: cannot {what} at {owner}: {reason}"
        if refusal.code == "InvalidChangeBatch":
            return _Rejected(message)
        return SoftStoreError(message) if soft else StoreError(message)

    def _zone_label(self, zone_id: str | None) -> str:
        """``hosted zone example.com. (Z123)``, as the operator finds it in the console."""
        if not zone_id:
            return ""
        names = [z.name for z in self._zones or [] if z.id == zone_id]
        return f"hosted zone {names[0]} ({zone_id})" if names else f"hosted zone {zone_id}"

    def _malformed(self, what: str, owner: str, detail: str = "") -> StoreError:
        extra = f" ({detail})" if detail else ""
        return StoreError(
            f"route53 store: cannot {what} at {owner}: malformed answer from "
            f"{self._where()}{extra}"
        )

    # Zones ----------------------------------------------------------------

    def _hosted_zones(self, what: str, owner: str) -> list[_Zone]:
        """Every hosted zone of the account, listed once per store."""
        if self._zones is not None:
            return self._zones
        zones: list[_Zone] = []
        marker: str | None = None
        for _ in range(MAX_ZONE_PAGES):
            kwargs: dict[str, Any] = {"MaxItems": "100"}
            if marker:
                kwargs["Marker"] = marker
            answer = self._call(what, owner, "list_hosted_zones", **kwargs)
            try:
                for item in answer["HostedZones"]:
                    config = item.get("Config") or {}
                    zones.append(
                        _Zone(
                            dns.name.from_text(item["Name"]),
                            str(item["Id"]).rsplit("/", 1)[-1],
                            bool(config.get("PrivateZone", False)),
                        )
                    )
                marker = answer.get("NextMarker") if answer.get("IsTruncated") else None
            except (KeyError, TypeError, AttributeError, dns.exception.DNSException):
                raise self._malformed(what, owner, "hosted zone list") from None
            if not marker:
                break
        self._zones = zones
        return zones

    def zone_of(self, owner: str, what: str = "find the hosted zone") -> _Zone:
        """The hosted zone for ``owner``: the longest zone name that contains it.

        Public zones come first: DANE needs the records in the signed public
        zone, and a private zone of the same or a longer name (split horizon)
        is only used when no public zone contains the owner, as
        certbot-dns-route53 never uses private zones at all.
        """
        if owner in self._zone_of:
            return self._zone_of[owner]
        try:
            name = dns.name.from_text(owner)
        except dns.exception.DNSException:
            raise StoreError(f"route53 store: cannot {what} at {owner}: not a DNS name") from None
        zones = self._hosted_zones(what, owner)
        matches = [z for z in zones if name.is_subdomain(z.name)]
        pool = [z for z in matches if not z.private] or matches
        if not pool:
            raise StoreError(
                f"route53 store: cannot {what} at {owner}: no hosted zone contains the name "
                f"({len(zones)} listed with the credentials from {self._source}); create the "
                "zone in Route 53, or use the credentials of the AWS account that holds it"
            )
        depth = max(len(z.name) for z in pool)
        best = sorted((z for z in pool if len(z.name) == depth), key=lambda z: z.id)
        if len(best) > 1:
            raise StoreError(
                f"route53 store: cannot {what} at {owner}: {len(best)} hosted zones are named "
                f"{best[0].name} ({', '.join(z.id for z in best)}); delete the unused one"
            )
        self._zone_of[owner] = best[0]
        return best[0]

    # Reading --------------------------------------------------------------

    def _read(self, zone: _Zone, owner: str, what: str) -> _RRset | None:
        """The TLSA RRset at ``owner`` as Route 53 holds it, or None."""
        answer = self._call(
            what,
            owner,
            "list_resource_record_sets",
            HostedZoneId=zone.id,
            StartRecordName=owner,
            StartRecordType="TLSA",
            MaxItems="1",
        )
        wanted = dns.name.from_text(owner)
        try:
            for item in answer["ResourceRecordSets"][:1]:
                if item["Type"] != "TLSA" or dns.name.from_text(item["Name"]) != wanted:
                    return None
                if "SetIdentifier" in item or "AliasTarget" in item:
                    raise StoreError(
                        f"route53 store: cannot {what} at {owner}: the TLSA RRset there uses "
                        "a routing policy or an alias, which this store does not edit"
                    )
                values = tuple(str(rr["Value"]) for rr in item["ResourceRecords"])
                records = frozenset(_parse(owner, value) for value in values)
                return _RRset(str(item["Name"]), int(item["TTL"]), values, records)
        except (KeyError, TypeError, ValueError, AttributeError, dns.exception.DNSException):
            raise self._malformed(what, owner, "TLSA record set") from None
        return None

    def list(self, owner: str) -> RRsetView:
        what = "list TLSA records"
        rrset = self._read(self.zone_of(owner, what), owner, what)
        if rrset is None:
            return RRsetView(frozenset(), None)
        return RRsetView(rrset.records, rrset.ttl)

    # Changing -------------------------------------------------------------

    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Every item's changes in one change batch per hosted zone (and size).

        Each owner name is still a compare-and-swap of its own (the DELETE of
        the RRset as read, the CREATE of the merged one); Route 53 applies a
        batch all or nothing, so a batch rejected because one of its names
        changed is read again and retried whole. Fewer calls matter: the
        Route 53 API allows five requests a second per account. The TTL is
        the RRset's: a TTL change is one compare-and-swap per owner.
        """
        edits = owner_edits(verb, items, _Edit)
        failed: dict[str, StoreError] = {}
        zones: dict[str, tuple[_Zone, list[str]]] = {}
        for owner in sorted(edits):
            try:
                zone = self.zone_of(owner, edits[owner].what)
            except StoreError as err:
                failed[owner] = err
                continue
            zones.setdefault(zone.id, (zone, []))[1].append(owner)
        sent: list[_Sent] = []
        for zone, owners in zones.values():
            sent += self._swap_zone(zone, {o: edits[o] for o in owners}, failed)
        self._wait_insync(sent, failed)
        return per_item(items, failed)

    def _swap_zone(
        self, zone: _Zone, edits: dict[str, _Edit], failed: dict[str, StoreError]
    ) -> Sequence[_Sent]:
        """Swap the owners of one zone, a batch at a time; failures go to ``failed``."""
        current = self._read_all(zone, edits, failed)
        sent = []
        for owners in _batches({o: edits[o].changes(o, current[o]) for o in current}):
            one = len(owners) == 1
            where = owners[0] if one else f"{len(owners)} names in {zone.name}"
            what = edits[owners[0]].what if one else f"{edits[owners[0]].verb} TLSA records"
            try:
                answer = self._swap({o: edits[o] for o in owners}, zone, current, what, where)
            except StoreError as err:
                failed.update((o, err) for o in owners)
                continue
            if answer is not None:
                sent.append(_Sent(owners, where, what, answer))
        return sent

    def _read_all(
        self, zone: _Zone, edits: dict[str, _Edit], failed: dict[str, StoreError]
    ) -> dict[str, _RRset | None]:
        current: dict[str, _RRset | None] = {}
        for owner, edit in edits.items():
            try:
                current[owner] = self._read(zone, owner, edit.what)
            except StoreError as err:
                failed[owner] = err
        return current

    def _swap(
        self,
        edits: dict[str, _Edit],
        zone: _Zone,
        current: dict[str, _RRset | None],
        what: str,
        where: str,
    ) -> dict[str, Any] | None:
        """Replace each owner's RRset as read by the merged one, retrying on a race.

        Returns Route 53's answer, or None when the merge changed nothing:
        adding a present record or deleting an absent one sends no change.
        """
        last: _Rejected | None = None
        for attempt in range(self.swap_attempts):
            batch = [c for o, edit in edits.items() for c in edit.changes(o, current[o])]
            if not batch:
                return None
            try:
                return self._call(
                    what,
                    where,
                    "change_resource_record_sets",
                    HostedZoneId=zone.id,
                    ChangeBatch={"Comment": "certbot-dane", "Changes": batch},
                )
            except _Rejected as err:
                last = err
                logger.debug("route53: change at %s rejected (attempt %d): %s", where, attempt, err)
                # Both hosts retrying in lockstep would collide again.
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                for owner, edit in edits.items():
                    current[owner] = self._read(zone, owner, edit.what)
        raise StoreError(f"{last} (rejected {self.swap_attempts} times; try again)")

    def _wait_insync(self, changes: Sequence[_Sent], failed: dict[str, StoreError]) -> None:
        """Poll GetChange until Route 53 has the changes on all its servers.

        All changes are sent first and then waited for together, bounded by
        ``sync_timeout``; running out is logged, not raised. A GetChange that
        fails (a policy without route53:GetChange) fails the owners of that
        change: their records were written, and the next check finds them.
        """
        deadline = time.monotonic() + self.sync_timeout
        poll = _Poll(*self.poll_interval)
        for change in changes:
            try:
                if not self._wait_one(change, deadline, poll):
                    return
            except StoreError as err:
                failed.update((o, err) for o in change.owners)

    def _wait_one(self, change: _Sent, deadline: float, poll: _Poll) -> bool:
        """Wait for one change; False when the deadline passed first."""
        what, where = change.what, change.where
        try:
            info = change.answer["ChangeInfo"]
            change_id, status = str(info["Id"]), str(info["Status"])
        except (KeyError, TypeError):
            raise self._malformed(what, where, "change info") from None
        while status != "INSYNC":
            if time.monotonic() + poll.delay > deadline:
                logger.info(
                    "route53: change %s at %s still %s after %.0f s; whether the records "
                    "are live is checked at the name servers",
                    change_id,
                    where,
                    status,
                    self.sync_timeout,
                )
                return False
            poll.wait()
            reply = self._call(what, where, "get_change", Id=change_id)
            try:
                status = str(reply["ChangeInfo"]["Status"])
            except (KeyError, TypeError):
                raise self._malformed(what, where, "change status") from None
        return True


@dataclass(frozen=True)
class _Sent:
    """A change batch Route 53 accepted, for the owner names it holds."""

    owners: Sequence[str]
    where: str
    what: str
    answer: dict[str, Any]


@dataclass
class _Poll:
    """The pause between GetChange polls: doubling, up to ``longest``."""

    delay: float
    longest: float

    def wait(self) -> None:
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, self.longest)


class _Edit(OwnerEdit):
    """What one call wants at one owner name, and the compare-and-swap that writes it."""

    def changes(self, owner: str, current: _RRset | None) -> list[dict[str, Any]]:
        """The compare-and-swap pair for this owner, or nothing if nothing changes."""
        have = current.records if current else frozenset()
        want = (have | self.plus) - self.minus
        retimed = self.verb == "retime" and current is not None and current.ttl != self.ttl
        if want == have and not retimed:
            return []
        return _batch(owner, current, frozenset(want), self.ttl)


#: Route 53's limits per change batch are 1000 values and 32000 characters of
#: values; batches stay under these with room to spare.
BATCH_VALUES = 500
BATCH_CHARS = 16000


def _batches(changes: dict[str, list[dict[str, Any]]]) -> Iterator[list[str]]:
    """Owners grouped so that each group's changes fit in one change batch."""
    group: list[str] = []
    values = chars = 0
    for owner, owner_changes in changes.items():
        rrs = [
            rr["Value"] for c in owner_changes for rr in c["ResourceRecordSet"]["ResourceRecords"]
        ]
        size = sum(len(v) for v in rrs)
        if group and (values + len(rrs) > BATCH_VALUES or chars + size > BATCH_CHARS):
            yield group
            group, values, chars = [], 0, 0
        group.append(owner)
        values += len(rrs)
        chars += size
    if group:
        yield group


def _batch(
    owner: str, current: _RRset | None, want: frozenset[Record], ttl: int | None
) -> list[dict[str, Any]]:
    """The compare-and-swap batch turning ``current`` into ``want``."""
    changes: list[dict[str, Any]] = []
    if current is not None:
        changes.append(
            {
                "Action": "DELETE",
                "ResourceRecordSet": {
                    "Name": current.name,
                    "Type": "TLSA",
                    "TTL": current.ttl,
                    "ResourceRecords": [{"Value": v} for v in current.values],
                },
            }
        )
    if want:
        if ttl is None:
            # Only deletions pass no TTL, and they only shrink an existing RRset.
            ttl = current.ttl if current is not None else DEFAULT_TTL
        changes.append(
            {
                "Action": "CREATE",
                "ResourceRecordSet": {
                    "Name": owner,
                    "Type": "TLSA",
                    "TTL": ttl,
                    "ResourceRecords": [{"Value": _text(r)} for r in sorted(want)],
                },
            }
        )
    return changes


def _text(record: Record) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data}"


def _parse(owner: str, value: str) -> Record:
    """A record from Route 53's TLSA value text ("3 1 1 ABCD...")."""
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, value)
    if not isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        raise ValueError(f"not TLSA data: {value!r}")
    return Record.from_rdata(owner, rdata)


_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_UNKNOWN_KEY = frozenset({"InvalidClientTokenId", "UnrecognizedClientException"})
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException"})
_CLOCK = frozenset({"RequestExpired", "RequestTimeTooSkewed"})
_THROTTLED = frozenset({"Throttling", "ThrottlingException"})
#: Where credentials came from when boto3 does not say.
_DEFAULT_SOURCE = "the credential chain of the user running certbot"
#: The identity an AccessDenied message names ("User: arn:aws:iam::1234...:user/certbot").
_PRINCIPAL = re.compile(r"\barn:aws[a-z-]*:(?:iam|sts)::\d{12}:[\w+=,.@/-]+")


@dataclass(frozen=True)
class _Refusal:
    """An error answer of the Route 53 API, as botocore parsed it."""

    code: str
    #: Route 53's own text, one line with any key removed
    message: str
    #: the API action, which is also the IAM action after ``route53:``
    action: str
    status: int | None
    #: HTTP attempts made, botocore's retries included
    attempts: int

    @classmethod
    def of(cls, err: botocore.exceptions.ClientError) -> _Refusal:
        response: dict[str, Any] = getattr(err, "response", None) or {}
        error = response.get("Error") or {}
        if not error.get("Code"):
            # moto nests its authentication errors where botocore does not look
            error = (response.get("Errors") or {}).get("Error") or error
        code = str(error.get("Code") or "")
        if not code and "Messages" in response:
            # Route 53 may answer <InvalidChangeBatch><Messages>..., a body that
            # botocore parses into neither a code nor a message.
            code = "InvalidChangeBatch"
        meta = response.get("ResponseMetadata") or {}
        if code == str(meta.get("HTTPStatusCode")):
            code = ""  # botocore's stand-in for a body without an error code
        return cls(
            code,
            _clean(str(error.get("Message") or "")),
            getattr(err, "operation_name", "") or "",
            meta.get("HTTPStatusCode"),
            int(meta.get("RetryAttempts") or 0) + 1,
        )

    def reason(self, zone: str, source: str) -> tuple[bool, str]:
        """(soft, what failed, why and what to change), in the operator's terms.

        ``zone`` labels the hosted zone of the call, if it had one; ``source``
        says where the credentials came from.
        """
        code, tries = self.code, _attempts(self.attempts)
        if code in _DENIED:
            return False, self._denied(zone, source)
        if code in _THROTTLED:
            return True, (
                f"Route 53 throttled the requests ({code}) {tries}; the next check retries "
                "(Route 53 allows five requests a second per AWS account, shared by every "
                "tool that uses the account)"
            )
        if code == "PriorRequestNotComplete":
            return True, (
                f"Route 53 was still applying an earlier change to {zone or 'the hosted zone'} "
                f"(PriorRequestNotComplete) {tries}; the next check retries"
            )
        skewed = code == "SignatureDoesNotMatch" and "expired" in self.message.lower()
        if skewed or code in _CLOCK:
            return False, (
                f"AWS refused the request as signed at the wrong time ({code}): this host's "
                "clock is off; synchronise it (chrony, systemd-timesyncd)"
            )
        return False, self._credentials(source) or self._other(zone)

    def _denied(self, zone: str, source: str) -> str:
        found = _PRINCIPAL.search(self.message)
        who = found.group(0) if found else f"the credentials from {source}"
        resource = f" on {zone}" if zone else ""
        needed = ", ".join(f"route53:{a}" for a in IAM_ACTIONS)
        return (
            f"AWS denied route53:{self.action}{resource} to {who} ({self.code}); allow it in "
            f"the IAM policy of that user or role (the store needs {needed})"
        )

    def _credentials(self, source: str) -> str:
        """The reason for a refusal of the credentials themselves, or ''."""
        code = self.code
        if code in _UNKNOWN_KEY:
            return (
                f"AWS does not know the access key from {source} ({code}): it was deleted, "
                "deactivated or mistyped; put a current access key of the IAM user there"
            )
        if code == "SignatureDoesNotMatch":
            return (
                f"AWS rejected the request signature ({code}): the secret access key from "
                f"{source} does not belong to its access key id; copy both from the same "
                "IAM access key"
            )
        if code == "IncompleteSignature":
            return f"AWS rejected the request signature ({code}); check the keys in {source}"
        if code in _EXPIRED:
            return (
                f"the temporary AWS credentials from {source} have expired ({code}); renew "
                "them, or use an access key or an instance role, which renew themselves"
            )
        if not code and self.status in (401, 403):
            return (
                f"AWS refused the request (HTTP {self.status}); check the credentials from "
                f"{source} and the IAM policy of their user or role"
            )
        return ""

    def _other(self, zone: str) -> str:
        code, message = self.code, self.message
        if code == "NoSuchHostedZone":
            return (
                f"{zone or 'the hosted zone'} no longer exists ({code}); it was deleted while "
                "certbot-dane ran: check the account's hosted zones, then run again"
            )
        if code == "InvalidChangeBatch":
            if message:
                return f"Route 53 rejected the change: {message}"
            return "Route 53 rejected the change (InvalidChangeBatch)"
        if code:
            return f"{code}: {message}" if message else code
        return f"unexpected answer (HTTP {self.status})" if self.status else "unexpected answer"


def _attempts(count: int) -> str:
    return f"after {count} attempt{'s' if count != 1 else ''}"


def _credentials_file() -> str:
    """The shared credentials file boto3 reads, as a path the operator can open."""
    return os.path.expanduser(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")


def _config_file() -> str:
    return os.path.expanduser(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config")


def _source(session: boto3.session.Session) -> str:
    """Where boto3 found the credentials, so that a message can say where to fix them.

    Loads the credentials (boto3 caches them for the client made next);
    never returns any part of a key.
    """
    try:
        credentials = session.get_credentials()
        profile = session.profile_name
    except botocore.exceptions.BotoCoreError:
        credentials, profile = None, "default"
    method = str(getattr(credentials, "method", "") or "")
    named = {
        "env": "the environment (AWS_ACCESS_KEY_ID)",
        "shared-credentials-file": f"{_credentials_file()} (profile {profile})",
        "config-file": f"{_config_file()} (profile {profile})",
        "iam-role": "the EC2 instance role",
        "container-role": "the container role",
        "assume-role": f"the role that profile {profile} assumes",
        "assume-role-with-web-identity": "the web identity role (AWS_ROLE_ARN)",
        "sso": f"the SSO login of profile {profile}",
        "explicit": "the keys given to the store",
    }
    return named.get(method, _DEFAULT_SOURCE)


def _botocore_reason(err: Exception, where: str) -> str:
    """A short reason for a client-side failure (network, credentials, parsing)."""
    exc = botocore.exceptions
    if isinstance(err, exc.NoCredentialsError):
        return (
            "no AWS credentials found: boto3 looked in the environment (AWS_ACCESS_KEY_ID), "
            f"{_credentials_file()}, {_config_file()} and for an instance or container role; "
            f"put an access key in {_credentials_file()} or give the host a role"
        )
    if isinstance(err, exc.PartialCredentialsError):
        return (
            f"incomplete AWS credentials ({_clean(str(err))}); give both the access key id "
            "and the secret access key"
        )
    if isinstance(err, exc.ProfileNotFound | exc.ConfigNotFound | exc.ConfigParseError):
        return f"AWS configuration: {_clean(str(err))}"
    if isinstance(err, exc.CredentialRetrievalError):
        return "cannot load the AWS credentials; check the credential source"
    if isinstance(err, exc.ConnectTimeoutError):
        return f"timed out connecting to {where}"
    if isinstance(err, exc.ReadTimeoutError):
        return f"timed out waiting for {where} to answer"
    if isinstance(err, exc.SSLError):
        return f"TLS failure talking to {where}"
    if isinstance(err, exc.ProxyConnectionError):
        return f"cannot connect to {where} through the proxy"
    if isinstance(err, exc.EndpointConnectionError):
        return f"cannot connect to {where}"
    if isinstance(err, exc.ConnectionClosedError):
        return f"{where} closed the connection without an answer"
    if isinstance(err, botocore.parsers.ResponseParserError):
        return f"malformed answer from {where}"
    if isinstance(err, exc.HTTPClientError):
        return f"no valid HTTP answer from {where}"
    if isinstance(err, ValueError):
        return f"bad endpoint or parameter: {_clean(str(err))}"
    return type(err).__name__


def _clean(text: str) -> str:
    """Server or library text made safe for a message: one short line, no keys."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = _KEY_ID.sub("<key id>", line)
    line = _SECRET.sub("<redacted>", line)
    return line[:200]
